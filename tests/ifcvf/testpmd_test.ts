// End to end with a real peer: DPDK testpmd's virtio_user -> the SDK's
// vhost-user server -> the ifcvf driver -> the emulated IFC VF's loopback
// wire -> back to testpmd. testpmd forwards in io mode after one burst
// (`start tx_first`), so the same frames circle through the device; its
// counters must agree with the device's. Then the port is stopped and
// started: the rings resume at the indexes saved in the live-migration BAR.

import assert from "node:assert/strict";
import { type DeviceEvent, VhostMdevDevice } from "@vhost-mdev/sdk";
import { VhostUserServer } from "@vhost-mdev/sdk/vhost-user";
import { EmulatedIfcvf } from "@vhost-mdev/ifcvf/emulated";
import { Testpmd, until } from "@vhost-mdev/testing";
import { makeIfcvfDriver } from "@vhost-mdev/ifcvf";
import { requirePeer } from "../support/peers.ts";

const testpmd = await requirePeer("dpdk-testpmd");
const FRAME = 64;
const BURST = 32;

Deno.test({
  name: "testpmd virtio_user -> SDK -> ifcvf -> emulated IFC VF -> testpmd",
  ignore: testpmd === null,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "ifcvf-testpmd-" });
    const sock = `${dir}/ifcvf.sock`;
    let emu: EmulatedIfcvf | null = null;
    const driver = makeIfcvfDriver((params) => {
      emu = new EmulatedIfcvf({ queuePairs: params.queues, maxQueueSize: 1024 });
      const e = emu;
      return {
        fn: e.function,
        dma: e.dma,
        description: "the emulated IFC VF",
        stats: () => e.stats(),
        close: () => e.function.close(),
      };
    });
    const events: DeviceEvent[] = [];
    const device = await VhostMdevDevice.create(
      driver,
      { queues: 1, pci: "emulated", options: {} },
      {
        // testpmd --no-huge shares memfds made without MFD_ALLOW_SEALING.
        allowUnsealedMemory: true,
        listener: (e) => {
          events.push(e);
          if (Deno.env.get("IFCVF_TEST_DEBUG")) {
            console.log(e.type, e.message, JSON.stringify(e.fields ?? {}));
          }
        },
      },
    );
    const server = VhostUserServer.listen(device, sock);
    let tp: Testpmd | null = null;
    try {
      tp = await Testpmd.start({
        binary: testpmd!,
        vdevs: `net_virtio_user0,path=${sock},queues=1,queue_size=256`,
        forwardMode: "io",
        txpkts: FRAME,
        rxd: 256,
        txd: 256,
        cpu: 1,
      });
      await tp.waitForLinkUp(0, 15000);
      await until("the device to run", () => device.running, 10000);
      const dev = emu!;

      // One burst, then the frames circle: TX -> device -> RX -> io forward -> TX.
      await tp.startForwardingTxFirst();
      await until("frames to circle", () => dev.stats()[1].packets > 20 * BURST, 20000);
      await tp.stopForwarding();
      const port = await tp.portStats(0);
      // The device finishes what testpmd last kicked.
      await until("the device to drain TX", () => dev.stats()[1].packets === port.txPackets, 5000);
      const [rx, tx] = dev.stats();
      console.log(
        `testpmd tx ${port.txPackets} rx ${port.rxPackets}; device tx ${tx.packets} rx ${rx.packets} ` +
          `drops ${rx.drops}`,
      );
      assert.equal(tx.packets, port.txPackets, "every frame testpmd sent went through the device");
      assert.equal(tx.bytes, port.txBytes);
      assert.equal(rx.drops, 0);
      assert.equal(tx.errors + rx.errors, 0);
      // Frames delivered but not yet polled by testpmd when it stopped: at most one burst.
      assert.ok(rx.packets >= port.rxPackets && rx.packets - port.rxPackets <= BURST);
      assert.equal(port.rxBytes, port.rxPackets * FRAME, "frames come back at their length");
      assert.ok(port.txPackets - port.rxPackets <= BURST && port.txPackets >= port.rxPackets);
      assert.deepEqual(dev.badAccesses, []);
      assert.deepEqual(dev.errors, []);

      // testpmd quits: virtio_user disables the rings and asks GET_VRING_BASE;
      // the driver read the bases from the LM BAR before resetting the device.
      await tp.close();
      tp = null;
      await until("the device to stop and detach", () => !device.running && !device.owner, 10000);
      const stop = events.findLast((e) => e.type === "stop");
      const bases = stop?.fields?.bases as Record<string, number> | undefined;
      assert.ok(bases, "the stop event carries the ring bases");
      assert.deepEqual(
        [bases["0"], bases["1"]],
        [dev.ringState(0).lastAvail, dev.ringState(1).lastAvail],
        "GET_VRING_BASE reported the LM BAR's ring state",
      );
      assert.equal(bases["1"], dev.stats()[1].packets & 0xffff, "TX base: every frame consumed");
      assert.equal(bases["0"], dev.stats()[0].packets & 0xffff, "RX base: one buffer per frame");
      assert.deepEqual(dev.dma.mappings(), [], "guest memory unmapped from the device");

      // A new testpmd starts with fresh rings (base 0): the driver programs
      // that into the LM BAR and frames circle again.
      tp = await Testpmd.start({
        binary: testpmd!,
        vdevs: `net_virtio_user0,path=${sock},queues=1,queue_size=256`,
        forwardMode: "io",
        txpkts: FRAME,
        rxd: 256,
        txd: 256,
        cpu: 1,
      });
      await tp.waitForLinkUp(0, 15000);
      await until("the device to run again", () => device.running, 10000);
      const before = dev.stats()[1].packets;
      await tp.startForwardingTxFirst();
      await until(
        "frames after restart",
        () => dev.stats()[1].packets > before + 10 * BURST,
        20000,
      );
      await tp.stopForwarding();
      const again = await tp.portStats(0);
      assert.ok(again.rxPackets >= 10 * BURST, `testpmd received ${again.rxPackets} after restart`);
      assert.equal(again.rxBytes, again.rxPackets * FRAME);
      assert.deepEqual(dev.errors, []);
      assert.deepEqual(dev.badAccesses, []);
    } finally {
      await tp?.close();
      await server.close();
      await device.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
