// The TypeScript frontend and virtio-net driver against a real peer: DPDK's
// own vhost-user backend (net_vhost in dpdk-testpmd, server mode). Our
// frontend connects as a client, brings the device up and moves frames;
// testpmd's counters and the frames' contents are the proof.

import assert from "node:assert/strict";
import { requirePeer } from "../support/peers.ts";
import {
  buildUdp,
  parseUdp,
  Testpmd,
  type TestpmdOptions,
  VhostUserFrontend,
  VirtioNetDriver,
  type VirtioNetDriverOptions,
} from "@vhost-mdev/testing";
import { bit, VirtioFeatureBit, VirtioNetFeatureBit } from "../../sdk/uapi/virtio.ts";

// Skips (printing why) when DPDK is missing; with CI=true that is a failure.
const TESTPMD = await requirePeer("dpdk-testpmd");

const ME = "02:00:00:00:00:01";
const PEER = "02:00:00:00:00:02";

/** testpmd with DPDK's vhost backend on `dir/vhost.sock`, our driver connected to it. */
async function withPeer(
  testpmd: Omit<TestpmdOptions, "vdevs">,
  queuePairs: number,
  driverOptions: VirtioNetDriverOptions,
  body: (tp: Testpmd, net: VirtioNetDriver) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "virtio_net_driver_test" });
  const sock = `${dir}/vhost.sock`;
  let tp: Testpmd | null = null;
  let fe: VhostUserFrontend | null = null;
  try {
    tp = await Testpmd.start({
      binary: TESTPMD!,
      vdevs: `net_vhost0,iface=${sock},queues=${queuePairs}`,
      rxq: queuePairs,
      txq: queuePairs,
      cpu: 0,
      ...testpmd,
    });
    fe = await VhostUserFrontend.connect(sock, { memoryMiB: 32 });
    const net = await VirtioNetDriver.start(fe, { queuePairs, ...driverOptions });
    await tp.waitForLinkUp(0);
    await body(tp, net);
    const bases = await net.stop();
    assert.equal(bases.length, 2 * queuePairs);
  } catch (e) {
    if (tp) (e as Error).message += `\n--- testpmd ---\n${tp.outputTail()}`;
    throw e;
  } finally {
    fe?.close();
    await tp?.close();
    await Deno.remove(dir, { recursive: true });
  }
}

/** Send every frame on `pair`, waiting for the device whenever the ring is full. */
async function sendAll(net: VirtioNetDriver, frames: Uint8Array[], pair = 0): Promise<void> {
  let done = 0;
  while (done < frames.length) {
    const n = net.send(frames.slice(done, done + 64), pair);
    done += n;
    if (n === 0) await net.flushTx(pair);
  }
  await net.flushTx(pair);
}

function udpFrames(count: number, size: number, tag: number): Uint8Array[] {
  return Array.from({ length: count }, (_, i) =>
    buildUdp({
      srcMac: ME,
      dstMac: PEER,
      srcIp: "10.0.0.1",
      dstIp: "10.0.0.2",
      srcPort: 1000 + tag,
      dstPort: i,
      data: new Uint8Array(size - 42).fill(tag),
    }));
}

async function waitRx(tp: Testpmd, want: number): Promise<number> {
  let got = (await tp.portStats(0)).rxPackets;
  for (let i = 0; i < 100 && got < want; i++) {
    await new Promise((r) => setTimeout(r, 50));
    got = (await tp.portStats(0)).rxPackets;
  }
  return got;
}

Deno.test({
  name: "driver -> DPDK vhost backend (rxonly): testpmd counts exactly the 1000 frames sent",
  ignore: !TESTPMD,
  async fn() {
    await withPeer({ forwardMode: "rxonly" }, 1, {}, async (tp, net) => {
      assert.equal(net.features & bit(VirtioFeatureBit.VERSION_1), bit(VirtioFeatureBit.VERSION_1));
      await tp.startForwarding();
      const frames = udpFrames(1000, 64, 1);
      await sendAll(net, frames);
      const got = await waitRx(tp, 1000);
      const stats = await tp.portStats(0);
      const fwd = await tp.stopForwarding();
      assert.equal(got, 1000);
      assert.equal(stats.rxBytes, 64 * 1000);
      assert.equal(stats.rxErrors, 0);
      assert.equal(fwd.total.rxPackets, 1000);
      const s = net.stats(0);
      assert.equal(s.txPackets, 1000);
      assert.equal(s.txCompleted, 1000);
      assert.equal(s.txBytes, 64000);
      // DPDK's PMD polls and sets VRING_USED_F_NO_NOTIFY, so transmit kicks
      // may be suppressed entirely; the receive ring got its start-up kick.
      assert.ok(s.rxKicks >= 1);
    });
  },
});

Deno.test({
  name: "DPDK vhost backend (txonly) -> driver: frames carry testpmd's UDP pattern",
  ignore: !TESTPMD,
  async fn() {
    await withPeer({ forwardMode: "txonly", txpkts: 64 }, 1, {}, async (tp, net) => {
      await tp.startForwarding();
      const frames = await net.waitReceive(600, 0, 10000);
      const fwd = await tp.stopForwarding();
      assert.equal(frames.length, 600);
      for (const f of frames) {
        assert.equal(f.length, 64);
        const u = parseUdp(f);
        assert.equal(u.srcIp, "198.18.0.1");
        assert.equal(u.dstIp, "198.18.0.2");
        assert.equal(u.srcPort, 9);
        assert.equal(u.dstPort, 9);
      }
      // Everything testpmd managed to enqueue is ours to take.
      const rest = net.receive(0);
      const s = net.stats(0);
      assert.equal(s.rxPackets, 600 + rest.length);
      assert.equal(s.rxPackets, fwd.total.txPackets);
      assert.equal(s.rxErrors, 0);
      assert.equal(s.rxMerged, 0);
    });
  },
});

Deno.test({
  name: "DPDK vhost backend -> driver with MRG_RXBUF and EVENT_IDX: 1500-byte frames span buffers",
  ignore: !TESTPMD,
  async fn() {
    await withPeer(
      { forwardMode: "txonly", txpkts: 1500, burst: 8 },
      1,
      { mrgRxbuf: true, eventIdx: true, bufferSize: 512, ringSize: 512 },
      async (tp, net) => {
        assert.ok(net.features & bit(VirtioNetFeatureBit.MRG_RXBUF));
        assert.ok(net.features & bit(VirtioFeatureBit.EVENT_IDX));
        await tp.startForwarding();
        const frames = await net.waitReceive(200, 0, 10000);
        await tp.stopForwarding();
        for (const f of frames) {
          assert.equal(f.length, 1500);
          assert.equal(parseUdp(f).srcIp, "198.18.0.1");
        }
        const s = net.stats(0);
        assert.ok(s.rxMerged >= 200, `rxMerged ${s.rxMerged}`);
        assert.equal(s.rxErrors, 0);
        assert.ok(s.rxCalls >= 1, "no interrupt was ever seen");
      },
    );
  },
});

Deno.test({
  name: "driver with 2 queue pairs -> DPDK vhost backend: both pairs deliver",
  ignore: !TESTPMD,
  async fn() {
    await withPeer({ forwardMode: "rxonly" }, 2, {}, async (tp, net) => {
      assert.ok(net.features & bit(VirtioNetFeatureBit.MQ));
      await tp.startForwarding();
      await sendAll(net, udpFrames(300, 128, 1), 0);
      await sendAll(net, udpFrames(200, 128, 2), 1);
      const got = await waitRx(tp, 500);
      await tp.stopForwarding();
      assert.equal(got, 500);
      assert.equal(net.stats(0).txCompleted, 300);
      assert.equal(net.stats(1).txCompleted, 200);
    });
  },
});
