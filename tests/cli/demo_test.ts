// `deno task demo` with the TypeScript frontend: every frame streamed through
// the simulated device in loopback comes back byte-identical, and the
// summary's counts agree with the device's.

import assert from "node:assert/strict";

const DEMO = new URL("../../cli/demo.ts", import.meta.url).pathname;

Deno.test("demo --frontend ts streams frames through drivers/sim and checks them", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", DEMO, "--frontend", "ts", "--seconds", "2", "--queues", "2"],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  assert.equal(out.code, 0, text + new TextDecoder().decode(out.stderr));
  const m = /(\d+)\/(\d+) frames came back, 0 differed: OK/.exec(text);
  assert.ok(m, text);
  assert.ok(Number(m[2]) > 0);
  assert.equal(m[1], m[2]);
  // Per pair: what the frontend sent equals what each of the device's rings moved.
  for (const pair of [0, 1]) {
    const sent = Number(new RegExp(`pair ${pair}: sent (\\d+)`).exec(text)![1]);
    const tx = Number(new RegExp(`device ring ${2 * pair + 1}: (\\d+) packets`).exec(text)![1]);
    const rx = Number(new RegExp(`device ring ${2 * pair}: (\\d+) packets`).exec(text)![1]);
    assert.equal(tx, sent);
    assert.equal(rx, sent);
  }
  assert.match(text, /1s {2}q0 [\d.]+ k?M?pps {2}q1/);
});

Deno.test("demo --help and a bad --frontend", async () => {
  const help = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", DEMO, "--help"],
    stdout: "piped",
  }).output();
  assert.equal(help.code, 0);
  assert.match(new TextDecoder().decode(help.stdout), /--frontend auto/);
  const bad = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", DEMO, "--frontend", "xen"],
    stderr: "piped",
  }).output();
  assert.equal(bad.code, 2);
  assert.match(new TextDecoder().decode(bad.stderr), /choose auto, qemu or ts/);
});
