// A device written with the software-device kit gets packed rings without a
// line of its own: the virtio-rng example under the real device core with
// `VIRTIO_F_RING_PACKED` acked, driven by the kit's packed guest side, fills
// buffers through several turns of a small ring, and a ring stopped by
// GET_VRING_BASE resumes at the position and wrap counters it returned.

import assert from "node:assert/strict";
import { hasBit, VirtioFeatureBit } from "@vhost-mdev/sdk";
import { DriverHarness } from "@vhost-mdev/testing";
import { driver } from "../../examples/rng.ts";

/** Take `count` used buffers from ring 0, waiting on its call fd. */
async function take(h: DriverHarness, count: number): Promise<Map<number, number>> {
  const q = h.ring(0).queue;
  const got = new Map<number, number>();
  const deadline = Date.now() + 10_000;
  while (got.size < count) {
    for (let u = q.takeUsed(); u; u = q.takeUsed()) got.set(u.token, u.len);
    if (got.size >= count) break;
    if (q.enableInterrupts()) continue;
    assert.ok(Date.now() < deadline, `${got.size} of ${count} buffers came back`);
    await h.waitCall(0, 200);
  }
  return got;
}

Deno.test("kit over packed rings: rng fills every buffer through many turns of the ring", async () => {
  const h = await DriverHarness.create(driver, { queues: 1, options: {} }, {
    ringSize: 8,
    packed: true,
  });
  try {
    assert.ok(hasBit(h.features, VirtioFeatureBit.RING_PACKED), "the kit offers packed rings");
    await h.start();
    const q = h.ring(0).queue;
    let token = 0;
    for (let round = 0; round < 6; round++) {
      const gpas = new Map<number, number>();
      for (let i = 0; i < 5; i++, token++) {
        const gpa = h.alloc(256);
        gpas.set(token, gpa);
        assert.ok(q.addBuffer(gpa, 256, true, token));
      }
      q.publish();
      h.kick(0);
      const used = await take(h, 5);
      for (const [t, gpa] of gpas) {
        assert.equal(used.get(t), 256, `buffer ${t} filled`);
        assert.ok(h.memory.bytes(gpa, 256).some((b) => b !== 0), `buffer ${t} random`);
      }
    }
    assert.deepEqual(h.device.stats()[0], {
      queue: 0,
      requests: 30,
      bytes: 30 * 256,
      errors: 0,
    });
    // 30 one-descriptor buffers through a ring of 8 (30 = 3 x 8 + 6): position 6,
    // and the wrap counters, starting at 1, flipped three times to 0 (bits 15, 31 clear).
    const base = (await h.device.getVringBase(0)).num;
    assert.equal(base, (6 | (6 << 16)) >>> 0, `base 0x${base.toString(16)}`);
  } finally {
    await h.close();
  }
});
