/**
 * A QEMU guest with `virtio-net-pci,...,packed=on` on the sim device in
 * responder mode: QEMU negotiates packed rings with the backend, the guest
 * pings the device with no loss, and both sides' counters agree (guest
 * tx_packets == device TX-ring packets, rx_packets == RX-ring packets).
 */

import assert from "node:assert/strict";
import { hasBit, VhostMdevDevice, VirtioFeatureBit } from "@vhost-mdev/sdk";
import { driver } from "@vhost-mdev/sim";
import { pingVmSummary, runPingVm } from "@vhost-mdev/testing/guest";
import { skipGuestTest } from "./example_process.ts";

const COUNT = 20;

Deno.test({
  name: "packed vm: a guest with packed=on pings the sim responder, counters agree",
  ignore: await skipGuestTest("packed vm"),
  async fn() {
    const device = await VhostMdevDevice.create(driver, {
      queues: 1,
      options: { mode: "responder", ip: "10.0.0.1" },
    });
    let acked = 0n;
    device.addListener((e) => {
      if (e.type === "features") acked = BigInt(String(e.fields?.features));
    });
    try {
      const result = await runPingVm({
        device,
        ip: "10.0.0.1",
        count: COUNT,
        interval: 0.1,
        packed: true,
        log: (l) => console.log(`  packed| ${l}`),
      });
      for (const l of pingVmSummary(result)) console.log(`  packed| ${l}`);
      assert.ok(
        hasBit(acked, VirtioFeatureBit.RING_PACKED),
        `features acked 0x${acked.toString(16)}`,
      );
      assert.deepEqual(result.reasons, []);
      assert.equal(result.guest.transmitted, COUNT);
      assert.equal(result.guest.received, COUNT);
      assert.ok(result.guest.counters.rx_packets >= COUNT + 1);
      assert.equal(result.guest.counters.tx_packets, result.device.txRingPackets);
      assert.equal(result.guest.counters.rx_packets, result.device.rxRingPackets);
      assert.ok(result.device.rings.every((r) => r.errors === 0 && r.drops === 0));
      assert.equal(result.pass, true);
    } finally {
      await device.close();
    }
  },
});
