// Worker for affinity_test.ts: pins itself to the CPUs it is sent and
// answers with its thread's Cpus_allowed_list, or the error.

import { pinThread } from "../../sdk/sys/mod.ts";

const self = globalThis as unknown as {
  onmessage: (e: MessageEvent<number[]>) => void;
  postMessage(m: unknown): void;
};

self.onmessage = (e) => {
  try {
    pinThread(e.data);
    const status = Deno.readTextFileSync("/proc/thread-self/status");
    self.postMessage({ allowed: /Cpus_allowed_list:\s*(\S+)/.exec(status)?.[1] ?? "" });
  } catch (err) {
    self.postMessage({ error: err instanceof Error ? err.message : String(err) });
  }
};
