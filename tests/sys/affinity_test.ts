// pinThread: a Worker pinned to one CPU runs only there (its own thread,
// not the process), and a bad CPU list is refused with the reason.

import assert from "node:assert/strict";
import { pinThread } from "../../sdk/sys/mod.ts";

function pinInWorker(cpus: number[]): Promise<{ allowed?: string; error?: string }> {
  const w = new Worker(new URL("./affinity_worker.ts", import.meta.url).href, { type: "module" });
  return new Promise((resolve) => {
    w.onmessage = (e) => {
      w.terminate();
      resolve(e.data);
    };
    w.postMessage(cpus);
  });
}

Deno.test("pinThread: a Worker pins its own thread; the process keeps its CPUs", async () => {
  const before = /Cpus_allowed_list:\s*(\S+)/.exec(Deno.readTextFileSync("/proc/self/status"))?.[1];
  const got = await pinInWorker([0]);
  assert.equal(got.error, undefined);
  assert.equal(got.allowed, "0");
  const after = /Cpus_allowed_list:\s*(\S+)/.exec(Deno.readTextFileSync("/proc/self/status"))?.[1];
  assert.equal(after, before, "the main thread's CPUs are unchanged");
});

Deno.test("pinThread: an empty list, a CPU out of range, or an offline CPU is refused", async () => {
  assert.throws(() => pinThread([]), /no CPU given/);
  assert.throws(() => pinThread([4096]), /not in 0\.\.1023/);
  const offline = await pinInWorker([1000]);
  assert.match(offline.error ?? "", /sched_setaffinity/);
});
