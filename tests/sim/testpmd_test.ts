// The sim device end to end over vhost-user: DPDK testpmd's virtio_user as
// the frontend (counts, with and without mrg_rxbuf and in_order, 1 and 2
// queue pairs, split and packed rings), and the SDK's own TypeScript
// virtio-net driver for byte identity (testpmd forwards what it receives but
// cannot compare bytes).

import assert from "node:assert/strict";
import { type QueueStats, VhostIoctl, VhostMdevDevice, VhostMdevState } from "@vhost-mdev/sdk";
import { VhostUserServer } from "@vhost-mdev/sdk/vhost-user";
import { driver } from "@vhost-mdev/sim";
import { Testpmd, until, VhostUserFrontend, VirtioNetDriver } from "@vhost-mdev/testing";
import { requirePeer } from "../support/peers.ts";

const testpmd = await requirePeer("dpdk-testpmd");

function sum(stats: QueueStats[], parity: 0 | 1, field: "packets" | "bytes"): number {
  return stats.filter((s) => s.queue % 2 === parity).reduce((n, s) => n + s[field], 0);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A sim device served on a fresh socket; `fn` gets it and the socket path. */
async function serve(
  queues: number,
  options: Record<string, string>,
  fn: (device: VhostMdevDevice, sock: string) => Promise<void>,
): Promise<void> {
  const dir = Deno.makeTempDirSync({ prefix: "vhost-sim-" });
  const sock = `${dir}/sim.sock`;
  const warnings: string[] = [];
  const device = await VhostMdevDevice.create(driver, { queues, options }, {
    // testpmd --no-huge shares memfds made without MFD_ALLOW_SEALING.
    allowUnsealedMemory: true,
    listener: (e) => {
      if (e.type === "warn" || e.type === "error") warnings.push(e.message);
    },
  });
  const server = VhostUserServer.listen(device, sock);
  try {
    await fn(device, sock);
    assert.deepEqual(warnings, [], "no warnings or errors from the device");
  } finally {
    await server.close();
    await device.close();
    Deno.removeSync(dir, { recursive: true });
  }
}

function start(sock: string, queues: number, mode: "io" | "txonly" | "rxonly", extra = "") {
  return Testpmd.start({
    binary: testpmd!,
    vdevs: `net_virtio_user0,path=${sock},queues=${queues}${extra}`,
    forwardMode: mode,
    txpkts: 64,
    rxq: queues,
    txq: queues,
    cpu: 1,
  });
}

for (const packed of [0, 1]) {
  for (const queues of [1, 2]) {
    for (const mrg of [0, 1]) {
      for (const inOrder of [0, 1]) {
        Deno.test({
          name:
            `testpmd loopback: every frame sent comes back (packed_vq=${packed} queues=${queues} mrg_rxbuf=${mrg} in_order=${inOrder})`,
          ignore: testpmd === null,
          async fn() {
            await serve(queues, { mode: "loopback" }, async (device, sock) => {
              const tp = await start(
                sock,
                queues,
                "io",
                `,mrg_rxbuf=${mrg},in_order=${inOrder},packed_vq=${packed}`,
              );
              try {
                await tp.waitForLinkUp(0, 15000);
                // One burst per queue goes out, then testpmd sends back all it receives:
                // the frames circle between testpmd and the device.
                await tp.startForwardingTxFirst();
                await sleep(700);
                await tp.stopForwarding();
                // Drain what is still on its way back.
                await tp.command("set fwd rxonly");
                await tp.startForwarding();
                await sleep(300);
                await tp.stopForwarding();
                const port = await tp.portStats(0);
                assert.ok(port.txPackets > 1000, `frames circled (${port.txPackets} sent)`);
                assert.equal(port.rxPackets, port.txPackets, "testpmd received all it sent");
                assert.equal(port.rxBytes, port.txBytes);
                assert.equal(port.rxErrors, 0);
                const s = device.stats();
                assert.equal(sum(s, 1, "packets"), port.txPackets, "device took every frame");
                assert.equal(sum(s, 0, "packets"), port.rxPackets, "device delivered every frame");
                assert.equal(sum(s, 1, "bytes"), port.txBytes);
                for (let p = 0; p < queues; p++) {
                  assert.equal(s[2 * p].packets, s[2 * p + 1].packets, `pair ${p} in = out`);
                  assert.ok(s[2 * p].packets > 0, `pair ${p} carried frames`);
                }
                assert.ok(s.every((q) => q.drops === 0 && q.errors === 0), JSON.stringify(s));
                assert.equal(
                  (device.context.ackedFeatures >> 34n) & 1n,
                  BigInt(packed),
                  "the ring layout testpmd asked for",
                );
              } finally {
                await tp.close();
              }
            });
          },
        });
      }
    }
  }
}

for (const packed of [0, 1]) {
  for (const [inOrder, batch] of [[0, false], [1, false], [1, true]] as const) {
    // With in_order=1 and batch-used the sink returns each run of chains with
    // one used entry; testpmd frees its transmit descriptors from those alone.
    Deno.test({
      name: `testpmd txonly into the sink: counts match (packed_vq=${packed} in_order=${inOrder}` +
        `${batch ? ", one used entry per run" : ""})`,
      ignore: testpmd === null,
      fn: () => sinkCounts(packed, inOrder, batch),
    });
  }
}

async function sinkCounts(packed: number, inOrder: number, batch: boolean): Promise<void> {
  await serve(1, { mode: "sink", "batch-used": String(batch) }, async (device, sock) => {
    const tp = await start(sock, 1, "txonly", `,packed_vq=${packed},in_order=${inOrder}`);
    try {
      await tp.waitForLinkUp(0, 15000);
      await tp.startForwarding();
      await sleep(700);
      await tp.stopForwarding();
      const port = await tp.portStats(0);
      // Far more than the ring holds: the returned descriptors were reused.
      assert.ok(port.txPackets > 100 * 256, `${port.txPackets} frames sent`);
      await until(
        "the device to take every frame",
        () => device.stats()[1].packets >= port.txPackets,
      );
      const s = device.stats();
      assert.deepEqual(s[1], {
        queue: 1,
        packets: port.txPackets,
        bytes: port.txBytes,
        drops: 0,
        errors: 0,
      });
      assert.equal(s[0].packets, 0);
    } finally {
      await tp.close();
    }
  });
}

for (const packed of [0, 1]) {
  Deno.test({
    name: `testpmd rxonly from the source: counts match (packed_vq=${packed})`,
    ignore: testpmd === null,
    async fn() {
      await serve(1, { mode: "source", "frame-size": "128" }, async (device, sock) => {
        const tp = await start(sock, 1, "rxonly", `,packed_vq=${packed}`);
        try {
          await tp.waitForLinkUp(0, 15000);
          await tp.startForwarding();
          await sleep(700);
          // Stop the device, so the count is final, then let testpmd take what is left.
          await device.ioctl(VhostIoctl.MDEV_SET_STATE, VhostMdevState.STOPPED);
          await sleep(200);
          await tp.stopForwarding();
          const port = await tp.portStats(0);
          const s = device.stats();
          assert.ok(port.rxPackets > 1000, `${port.rxPackets} frames received`);
          assert.equal(port.rxPackets, s[0].packets);
          assert.equal(port.rxBytes, s[0].bytes);
          assert.equal(s[0].bytes, 128 * s[0].packets);
          assert.equal(port.rxErrors, 0);
          assert.equal(s[0].drops + s[0].errors, 0);
        } finally {
          await tp.close();
        }
      });
    },
  });
}

for (const mrgRxbuf of [false, true]) {
  for (const queuePairs of [1, 2]) {
    Deno.test(
      `TypeScript frontend loopback: byte-identical frames (mrg_rxbuf=${mrgRxbuf}, ${queuePairs} pair(s))`,
      async () => {
        await serve(queuePairs, { mode: "loopback" }, async (device, sock) => {
          const fe = await VhostUserFrontend.connect(sock);
          try {
            // The driver's transmit and receive buffers have one size, so frames
            // never need merging here; merging is covered by sim_test.ts.
            const net = await VirtioNetDriver.start(fe, { queuePairs, mrgRxbuf, eventIdx: true });
            for (let p = 0; p < queuePairs; p++) {
              const frames = [60, 64, 200, 511, 1000, 1514, 2036].map((size, i) => {
                const f = new Uint8Array(size);
                for (let k = 0; k < size; k++) f[k] = (k * 31 + i * 7 + p) & 0xff;
                return f;
              });
              assert.equal(net.send(frames, p), frames.length);
              const got = await net.waitReceive(frames.length, p);
              assert.deepEqual(got, frames, `pair ${p}`);
            }
            const s = device.stats();
            for (let p = 0; p < queuePairs; p++) assert.equal(s[2 * p].packets, 7);
            await net.stop();
          } finally {
            fe.close();
          }
        });
      },
    );
  }
}
