// Sim devices on a datapath pool: one Worker serves the queue pairs of
// several devices, each device's frames come back byte-identical, a device
// that stops (or whose guest stalls it) leaves the others serving, and the
// pool gives every pair's resources back.

import assert from "node:assert/strict";
import { DatapathPool, useDatapathPool } from "@vhost-mdev/sim";
import { SimRig } from "./rig.ts";

function pattern(size: number, seed: number): Uint8Array {
  const f = new Uint8Array(size);
  for (let i = 0; i < size; i++) f[i] = (i * 13 + seed * 7) & 0xff;
  return f;
}

async function loop(rig: SimRig, n: number, seed: number): Promise<void> {
  rig.postRx(0, n, 2048);
  const sent = Array.from({ length: n }, (_, i) => pattern(60 + 37 * i, seed + i));
  for (const f of sent) rig.send(0, f);
  const got = await rig.receive(0, n);
  assert.deepEqual(got.map((r) => r.frame), sent, `device ${seed}`);
  await rig.used(1, n);
}

Deno.test("pool: one Worker serves three devices; a stalled and a stopped device leave the others serving", async () => {
  const pool = new DatapathPool({ workers: 1 });
  useDatapathPool(pool);
  const rigs: SimRig[] = [];
  try {
    for (let d = 0; d < 3; d++) {
      const rig = await SimRig.create({ options: { mode: "loopback" } });
      await rig.harness.start();
      rigs.push(rig);
    }
    assert.equal(pool.workers, 1, "one Worker for three devices");
    assert.deepEqual(pool.load(), [3]);
    for (let d = 0; d < 3; d++) await loop(rigs[d], 8, 100 * d);

    // Device 0's guest posts no receive buffers: its transmit frames wait,
    // and the others are served meanwhile.
    for (let i = 0; i < 4; i++) rigs[0].send(0, pattern(100, i));
    await loop(rigs[1], 16, 7);
    await loop(rigs[2], 16, 9);
    assert.equal(rigs[0].device.stats()[0].packets, 8, "the stalled device delivered nothing more");

    // Device 1 stops: its pair leaves the Worker; the others go on.
    await rigs[1].harness.stop();
    assert.deepEqual(pool.load(), [2]);
    await loop(rigs[2], 8, 11);
    // The stalled device resumes once its guest posts buffers.
    rigs[0].postRx(0, 4, 2048);
    assert.equal((await rigs[0].receive(0, 4)).length, 4);
  } finally {
    for (const rig of rigs) {
      await rig.harness.stop();
      await rig.close();
    }
    useDatapathPool(null);
    pool.close();
  }
});

Deno.test("pool: pairs go to the least loaded of its Workers", async () => {
  const pool = new DatapathPool({ workers: 2 });
  useDatapathPool(pool);
  const rigs: SimRig[] = [];
  try {
    for (let d = 0; d < 4; d++) {
      const rig = await SimRig.create({ options: { mode: "loopback" } });
      await rig.harness.start();
      rigs.push(rig);
    }
    assert.deepEqual(pool.load(), [2, 2]);
    await Promise.all(rigs.map((r, d) => loop(r, 8, d)));
  } finally {
    for (const rig of rigs) {
      await rig.harness.stop();
      await rig.close();
    }
    useDatapathPool(null);
    pool.close();
  }
});

Deno.test("pool: a guest that corrupts its ring breaks only its own device on a shared Worker", async () => {
  const pool = new DatapathPool({ workers: 1 });
  useDatapathPool(pool);
  const rigs: SimRig[] = [];
  try {
    for (let d = 0; d < 2; d++) {
      const rig = await SimRig.create({ options: { mode: "loopback" } });
      await rig.harness.start();
      rigs.push(rig);
    }
    await loop(rigs[0], 4, 1);
    // Device 0's guest moves its transmit avail.idx far past the ring (virtio 1.2 §2.7.6).
    const tx = rigs[0].rings[1];
    rigs[0].memory.bytes(tx.layout.availAddr + 2, 2).set([0xe8, 0x03]);
    rigs[0].harness.kick(1);
    await loop(rigs[1], 16, 3);
    const deadline = Date.now() + 5000;
    while (!rigs[0].warnings.some((w) => /bad-avail-idx/.test(w)) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.ok(rigs[0].warnings.some((w) => /bad-avail-idx/.test(w)), "device 0 reported it");
    assert.deepEqual(rigs[1].warnings, [], "device 1 saw nothing");
    await loop(rigs[1], 8, 5);
  } finally {
    for (const rig of rigs) {
      await rig.harness.stop();
      await rig.close();
    }
    useDatapathPool(null);
    pool.close();
  }
});
