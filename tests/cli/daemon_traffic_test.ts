// The daemon at scale with DPDK: 16 sim devices created over the control
// socket of a daemon process whose datapath Workers are a pool of two;
// testpmd's virtio_user attached to three of them with frames circling; one
// of the three deleted while the others carry traffic, which lose nothing.

import assert from "node:assert/strict";
import type { QueueStats } from "@vhost-mdev/sdk";
import { callDaemon } from "@vhost-mdev/cli/control-client";
import { Testpmd } from "@vhost-mdev/testing";
import { requirePeer } from "../support/peers.ts";
import { DaemonProcess } from "./daemon_rig.ts";

const testpmd = await requirePeer("dpdk-testpmd");
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function rings(control: string, name: string): Promise<QueueStats[]> {
  return ((await callDaemon(control, "device_stats", { name })) as { rings: QueueStats[] }).rings;
}

Deno.test({
  name:
    "daemon: 16 devices on a pool of two Workers; testpmd on three; one deleted, the others lose nothing",
  ignore: testpmd === null,
  async fn() {
    const d = await DaemonProcess.start(["--datapath-workers", "2"]);
    let tp: Testpmd | null = null;
    try {
      const sockets: string[] = [];
      for (let i = 0; i < 16; i++) {
        const socket = `${d.dir}/net${i}.sock`;
        await callDaemon(d.control, "device_create", {
          name: `net${i}`,
          driver: "sim",
          socket,
          options: { mode: "loopback" },
          // testpmd --no-huge shares memfds made without MFD_ALLOW_SEALING.
          allowUnsealedMemory: true,
        });
        sockets.push(socket);
      }
      const list = await callDaemon(d.control, "device_list") as unknown[];
      assert.equal(list.length, 16);
      tp = await Testpmd.start({
        binary: testpmd!,
        vdevs: [0, 1, 2].map((i) => `net_virtio_user${i},path=${sockets[i]},queues=1`),
        forwardMode: "io",
        txpkts: 64,
        cpu: 1,
      });
      for (const p of [0, 1, 2]) await tp.waitForLinkUp(p, 15000);
      // io forwarding pairs ports 0<->1; port 2 forwards to itself.
      await tp.startForwardingTxFirst();
      await sleep(500);
      // Delete net0 (port 0) while the others carry frames.
      await callDaemon(d.control, "device_delete", { name: "net0" });
      await sleep(500);
      await tp.stopForwarding();
      await tp.command("set fwd rxonly");
      await tp.startForwarding();
      await sleep(300);
      await tp.stopForwarding();
      const port2 = await tp.portStats(2);
      assert.ok(port2.txPackets > 1000, `port 2 carried frames (${port2.txPackets} sent)`);
      assert.equal(port2.rxPackets, port2.txPackets, "port 2: every frame came back");
      const net2 = await rings(d.control, "net2");
      assert.equal(net2[1].packets, port2.txPackets, "net2 took every frame port 2 sent");
      assert.equal(net2[0].packets, port2.rxPackets, "net2 delivered every frame");
      assert.equal(net2[0].drops + net2[0].errors + net2[1].drops + net2[1].errors, 0);
      const net1 = await rings(d.control, "net1");
      assert.ok(net1[1].packets > 0 && net1[0].packets > 0, "net1 carried frames");
      assert.equal(net1[0].drops + net1[0].errors, 0);
      assert.equal((await callDaemon(d.control, "device_list") as unknown[]).length, 15);
    } finally {
      await tp?.close();
      await d.stop();
    }
  },
});
