// VirtioGuest against the sim device served over vhost-user: what any guest
// driver needs before its device-specific part — features negotiated, rings
// laid out and programmed, buffer areas after them, and waiting on a ring's
// call eventfd for used entries, with a deadline.

import assert from "node:assert/strict";
import { VhostMdevDevice } from "../../sdk/core/device.ts";
import { VhostUserServer } from "../../sdk/vhost_user/server.ts";
import {
  bit,
  VIRTIO_NET_HDR_SIZE,
  VirtioFeatureBit,
  VirtioNetFeatureBit,
} from "../../sdk/uapi/virtio.ts";
import { driver as sim } from "../../drivers/sim/mod.ts";
import { VhostUserFrontend, VirtioGuest } from "@vhost-mdev/testing";

/**
 * The sim device (one queue pair) in loopback, offering EVENT_IDX but not
 * MRG_RXBUF, served on a fresh socket, and a frontend connected to it.
 */
async function withSim(body: (fe: VhostUserFrontend) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "virtio_guest_test" });
  const device = await VhostMdevDevice.create(sim, {
    queues: 1,
    options: { mode: "loopback", "event-idx": "true", "mrg-rxbuf": "false" },
  });
  const server = VhostUserServer.listen(device, `${dir}/vhost.sock`);
  const fe = await VhostUserFrontend.connect(`${dir}/vhost.sock`, { memoryMiB: 4 });
  try {
    await body(fe);
  } finally {
    fe.close();
    await server.close();
    await device.close();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("VirtioGuest: features are negotiated and every ring is set up", async () => {
  await withSim(async (fe) => {
    const guest = await VirtioGuest.setup(fe, {
      queues: 2,
      ringSize: 64,
      optional: bit(VirtioFeatureBit.EVENT_IDX) | bit(VirtioNetFeatureBit.MRG_RXBUF),
    });
    assert.equal(guest.features & bit(VirtioFeatureBit.VERSION_1), bit(VirtioFeatureBit.VERSION_1));
    assert.equal(guest.eventIdx, true, "an optional bit the device offers is acknowledged");
    assert.equal(guest.features & bit(VirtioNetFeatureBit.MRG_RXBUF), 0n, "one it lacks is not");
    assert.equal(guest.queueCount, 2);
    assert.equal(guest.ringSize, 64);
    for (const q of [0, 1]) {
      assert.equal(guest.queue(q).num, 64);
      assert.equal(guest.queue(q).freeCount(), 64);
      assert.ok(fe.callFd(q) >= 0 && fe.kickFd(q) >= 0, `ring ${q} has its eventfds`);
    }
    assert.throws(() => guest.queue(2), RangeError);

    const a = guest.allocate(100);
    const b = guest.allocate(4096);
    assert.equal(a % 4096, 0);
    assert.equal(b, a + 4096, "areas are page-aligned and do not overlap");
    assert.throws(() => guest.allocate(fe.memorySize), RangeError);

    await guest.activate();
    assert.deepEqual(await guest.stop(), [0, 0]);
    assert.deepEqual(await guest.stop(), [], "stop is idempotent");
  });
});

Deno.test("VirtioGuest: a required feature the device lacks fails setup, naming it", async () => {
  await withSim(async (fe) => {
    await assert.rejects(
      VirtioGuest.setup(fe, { queues: 2, required: bit(VirtioNetFeatureBit.MRG_RXBUF) }),
      /does not offer feature bits 0x8000 /,
    );
  });
});

Deno.test("VirtioGuest: bad queue counts and ring sizes are refused", async () => {
  await withSim(async (fe) => {
    await assert.rejects(VirtioGuest.setup(fe, { queues: 0 }), RangeError);
    await assert.rejects(VirtioGuest.setup(fe, { queues: 2, ringSize: 100 }), RangeError);
  });
});

Deno.test("VirtioGuest: waitUsed resolves with the ring the device returned a buffer on", async () => {
  await withSim(async (fe) => {
    const guest = await VirtioGuest.setup(fe, {
      queues: 2,
      ringSize: 8,
      optional: bit(VirtioFeatureBit.EVENT_IDX),
    });
    const rxBuf = guest.allocate(2048);
    const txBuf = guest.allocate(2048);
    guest.queue(0).addBuffer(rxBuf, 2048, true, 11);
    guest.queue(0).publish();
    await guest.activate();
    guest.kick(0);

    // A 60-byte frame behind a zero header goes out on ring 1 and, in
    // loopback, comes back on ring 0.
    fe.memory.bytes(txBuf, VIRTIO_NET_HDR_SIZE + 60).fill(0xab).fill(0, 0, VIRTIO_NET_HDR_SIZE);
    guest.queue(1).addBuffer(txBuf, VIRTIO_NET_HDR_SIZE + 60, false, 22);
    guest.publish(1);

    assert.equal(await guest.waitUsed(0, 5000), 0);
    assert.ok(guest.queue(0).nextUsed());
    assert.equal(guest.queue(0).usedToken, 11);
    assert.equal(guest.queue(0).usedLen, VIRTIO_NET_HDR_SIZE + 60);
    assert.ok(guest.calls(0) >= 1, "the device interrupted for the used entry");

    assert.equal(await guest.waitUsed([0, 1], 5000), 1, "the transmit ring has its buffer back");
    assert.ok(guest.queue(1).nextUsed());
    assert.equal(guest.queue(1).usedToken, 22);
    await guest.stop();
  });
});

Deno.test("VirtioGuest: waitUsed fails after its timeout when nothing comes back", async () => {
  await withSim(async (fe) => {
    const guest = await VirtioGuest.setup(fe, { queues: 2, ringSize: 8 });
    await guest.activate();
    const started = performance.now();
    await assert.rejects(
      guest.waitUsed([0, 1], 100),
      /no used entry on ring\(s\) 0, 1 within 100 ms/,
    );
    assert.ok(performance.now() - started >= 90, "it waited for the deadline");
    assert.throws(() => guest.queue(5), RangeError);
    await assert.rejects(guest.waitUsed(5, 10), RangeError);
    await guest.stop();
  });
});
