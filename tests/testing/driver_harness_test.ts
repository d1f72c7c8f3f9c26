// The driver harness: a driver under a real device core, unit-tested
// without a socket. The recording driver shows start/stop happen as a
// frontend makes them happen; the sim driver loops a frame through it.

import assert from "node:assert/strict";
import { bit, VirtioFeatureBit } from "@vhost-mdev/sdk";
import { DriverHarness } from "@vhost-mdev/testing";
import { driver as sim } from "@vhost-mdev/sim";
import { recordingDriver } from "../support/recording_driver.ts";

Deno.test("harness: start and stop reach the driver with the rings it laid out", async () => {
  const rec = recordingDriver();
  const h = await DriverHarness.create(rec.driver, { queues: 1, options: {} }, { ringSize: 64 });
  try {
    await h.start();
    assert.equal(rec.count("start"), 1);
    const start = rec.calls.find((c) => c.op === "start")!;
    assert.equal(start.ringsInMemory, true);
    assert.equal(start.rings![1].descAddr, h.ring(1).layout.descAddr);
    assert.equal(start.rings![1].num, 64);
    await h.stop();
    assert.equal(rec.count("stop"), 1);
  } finally {
    await h.close();
  }
});

Deno.test("harness: a frame sent on the sim's transmit ring comes back on its receive ring", async () => {
  const h = await DriverHarness.create(
    sim,
    { queues: 1, options: { mode: "loopback" } },
    { ringSize: 64, features: bit(VirtioFeatureBit.VERSION_1) },
  );
  try {
    await h.start();
    const rx = h.ring(0), tx = h.ring(1);
    const buf = h.alloc(2048);
    rx.driver.add([{ gpa: buf, len: 2048, write: true }], buf);
    rx.driver.publish();
    h.kick(0);
    const frame = new Uint8Array(12 + 60);
    for (let i = 12; i < frame.length; i++) frame[i] = i;
    const out = h.alloc(frame.length);
    h.memory.bytes(out, frame.length).set(frame);
    tx.driver.add([{ gpa: out, len: frame.length, write: false }], out);
    tx.driver.publish();
    h.kick(1);
    assert.ok(await h.waitCall(0) > 0, "the receive ring interrupted");
    assert.ok(rx.driver.nextUsed());
    assert.equal(rx.driver.usedToken, buf);
    assert.equal(rx.driver.usedLen, frame.length);
    assert.deepEqual(h.memory.bytes(buf + 12, 60), frame.subarray(12));
  } finally {
    await h.close();
  }
});
