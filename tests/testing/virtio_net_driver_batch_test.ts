// VirtioNetDriver's in-place batch API against the sim device in loopback:
// sendWith has frames written straight into transmit buffers, receiveWith
// reads them where the device put them, and both count like send/receive.

import assert from "node:assert/strict";
import { VhostMdevDevice } from "../../sdk/core/device.ts";
import { VhostUserServer } from "../../sdk/vhost_user/server.ts";
import { driver as sim } from "../../drivers/sim/mod.ts";
import { VhostUserFrontend, VirtioNetDriver } from "@vhost-mdev/testing";

/** A driver with one queue pair on the sim device in loopback. */
async function withLoopback(body: (net: VirtioNetDriver) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "virtio_net_driver_batch_test" });
  const device = await VhostMdevDevice.create(sim, { queues: 1, options: { mode: "loopback" } });
  const server = VhostUserServer.listen(device, `${dir}/vhost.sock`);
  const fe = await VhostUserFrontend.connect(`${dir}/vhost.sock`, { memoryMiB: 8 });
  try {
    const net = await VirtioNetDriver.start(fe, { ringSize: 64, eventIdx: true });
    await body(net);
    await net.stop();
  } finally {
    fe.close();
    await server.close();
    await device.close();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("driver: sendWith writes frames in place, receiveWith reads them back in place", async () => {
  await withLoopback(async (net) => {
    const sent = net.sendWith(3, (bytes, at, i) => {
      bytes.fill(0x10 + i, at, at + 60 + i);
      return 60 + i;
    });
    assert.equal(sent, 3);

    const seen: number[][] = [];
    while (seen.length < 3) {
      await net.waitRx(0, 5000);
      net.receiveWith((bytes, at, length) => {
        seen.push([length, bytes[at], bytes[at + length - 1]]);
      });
    }
    assert.deepEqual(seen, [[60, 0x10, 0x10], [61, 0x11, 0x11], [62, 0x12, 0x12]]);
    await net.flushTx();
    const s = net.stats();
    assert.equal(s.txPackets, 3);
    assert.equal(s.rxPackets, 3);
    assert.equal(s.rxBytes, 60 + 61 + 62);
    assert.equal(net.txRoom(), 64, "every transmit buffer is back");
  });
});

Deno.test("driver: sendWith stops at a full ring and refuses an oversized frame", async () => {
  await withLoopback((net) => {
    const room = net.bufferSize - 12;
    assert.throws(() => net.sendWith(1, () => room + 1), /does not fit/);
    assert.equal(net.stats().txPackets, 0);
    // More frames than transmit buffers: the rest are counted as refused.
    const sent = net.sendWith(100, (bytes, at) => {
      bytes.fill(0, at, at + 60);
      return 60;
    });
    assert.ok(sent <= 64);
    assert.equal(net.stats().txFull, 100 - sent);
    return Promise.resolve();
  });
});
