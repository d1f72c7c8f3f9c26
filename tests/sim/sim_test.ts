// The sim device driven in-process under the real device core: a memfd as
// guest memory, rings driven by SplitQueueDriver, real eventfds, and the
// device's real datapath Workers.

import assert from "node:assert/strict";
import { bit, hasBit, VirtioFeatureBit, VirtioNetFeatureBit } from "@vhost-mdev/sdk";
import { eventfdWrite } from "@vhost-mdev/sdk/sys";
import { driver, parseSimOptions, simConfigSpace } from "@vhost-mdev/sim";
import {
  buildArpRequest,
  buildIcmpEcho,
  buildUdp,
  internetChecksum,
  parseArp,
  parseEthernet,
  parseIcmpEcho,
  until,
} from "@vhost-mdev/testing";
import { SimRig } from "./rig.ts";

const MAC = "52:54:00:12:34:56";
const GUEST_MAC = "52:54:00:aa:bb:cc";

/** A frame of `size` bytes with a recognisable pattern. */
function pattern(size: number, seed: number): Uint8Array {
  const f = new Uint8Array(size);
  for (let i = 0; i < size; i++) f[i] = (i * 7 + seed * 13) & 0xff;
  return f;
}

async function withRig(
  options: Parameters<typeof SimRig.create>[0],
  fn: (rig: SimRig) => Promise<void>,
): Promise<void> {
  const rig = await SimRig.create(options);
  try {
    await rig.harness.start();
    await fn(rig);
  } finally {
    await rig.harness.stop();
    await rig.close();
  }
}

function stats(rig: SimRig, q: number) {
  return rig.description.ops.stats!()[q];
}

Deno.test("probe: features, config space, queue count, option errors", async () => {
  const rig = await SimRig.create({
    queues: 3,
    options: { mtu: "9000", mac: "02:11:22:33:44:55" },
  });
  try {
    const d = rig.description;
    assert.equal(d.deviceId, 1);
    assert.equal(d.numQueues, 6);
    for (
      const b of [
        VirtioFeatureBit.VERSION_1,
        VirtioFeatureBit.EVENT_IDX,
        VirtioFeatureBit.INDIRECT_DESC,
        VirtioFeatureBit.IN_ORDER,
        VirtioNetFeatureBit.MRG_RXBUF,
        VirtioNetFeatureBit.MQ,
        VirtioNetFeatureBit.MAC,
        VirtioNetFeatureBit.STATUS,
        VirtioNetFeatureBit.MTU,
        VirtioNetFeatureBit.CSUM,
        VirtioNetFeatureBit.GUEST_CSUM,
      ]
    ) assert.ok(hasBit(d.features, b), `feature bit ${b} offered`);
    assert.equal(hasBit(d.features, VirtioNetFeatureBit.CTRL_VQ), false);
    assert.equal(hasBit(d.features, VirtioNetFeatureBit.HOST_TSO4), false);
    // mac, status LINK_UP, max_virtqueue_pairs 3, mtu 9000 (little-endian)
    assert.deepEqual([...d.config!], [0x02, 0x11, 0x22, 0x33, 0x44, 0x55, 1, 0, 3, 0, 0x28, 0x23]);
  } finally {
    await rig.close();
  }
  const off = parseSimOptions({ "mrg-rxbuf": "false", "event-idx": "false", indirect: "false" });
  assert.equal(off.mrgRxbuf || off.eventIdx || off.indirect, false);
  assert.deepEqual([...simConfigSpace(off, 1)].slice(6, 12), [1, 0, 1, 0, 0xdc, 0x05]);
  const probe = (options: Record<string, string>, queues = 1) =>
    driver.probe({} as never, { queues, options });
  assert.throws(() => probe({ mode: "mirror" }), /--mode mirror: choose one of loopback/);
  assert.throws(() => probe({ mac: "01:00:00:00:00:01" }), /multicast/);
  assert.throws(() => probe({ ip: "10.0.0.256" }), /--ip 10\.0\.0\.256/);
  assert.throws(
    () => probe({ "frame-size": "2000" }),
    /--frame-size 2000: expected an integer from 60 to 1514/,
  );
  assert.throws(() => probe({ colour: "blue" }), /unknown option --colour/);
  assert.throws(() => probe({}, 0), /0 queue pairs requested/);
});

for (const mrg of [false, true]) {
  for (const queues of [1, 2]) {
    Deno.test(`loopback: frames come back byte-identical (mrg_rxbuf=${mrg}, ${queues} pair(s))`, async () => {
      const refuse = mrg ? 0n : bit(VirtioNetFeatureBit.MRG_RXBUF);
      await withRig({ queues, refuse }, async (rig) => {
        const sizes = [60, 64, 128, 333, 1000, 1514];
        for (let p = 0; p < queues; p++) {
          // With MRG_RXBUF the buffers are small, so big frames span several.
          rig.postRx(p, 64, mrg ? 512 : 12 + 1514);
        }
        const sent: Uint8Array[][] = [];
        for (let p = 0; p < queues; p++) {
          sent.push(sizes.map((s, i) => pattern(s, 10 * p + i)));
          sent[p].forEach((f, i) => rig.send(p, f, undefined, i % 2 === 1));
        }
        for (let p = 0; p < queues; p++) {
          const got = await rig.receive(p, sizes.length);
          got.forEach((r, i) => {
            assert.deepEqual(r.frame, sent[p][i], `pair ${p} frame ${i} (${sizes[i]} bytes)`);
            assert.deepEqual([...r.header.subarray(0, 10)], new Array(10).fill(0), "header");
            const expect = mrg ? Math.ceil((12 + sizes[i]) / 512) : 1;
            assert.equal(r.buffers, expect, `num_buffers of a ${sizes[i]}-byte frame`);
          });
          const tx = await rig.used(2 * p + 1, sizes.length);
          assert.deepEqual(tx.map((u) => u.len), new Array(sizes.length).fill(0));
          const bytes = sizes.reduce((a, b) => a + b, 0);
          const s = rig.description.ops.stats!();
          assert.deepEqual(
            { ...s[2 * p + 1], queue: 0 },
            { queue: 0, packets: sizes.length, bytes, drops: 0, errors: 0 },
          );
          assert.deepEqual(
            { ...s[2 * p], queue: 0 },
            { queue: 0, packets: sizes.length, bytes, drops: 0, errors: 0 },
          );
        }
        assert.ok(rig.calls > 0, "the device interrupted the guest");
        assert.deepEqual(rig.warnings, []);
      });
    });
  }
}

Deno.test("loopback: transmit waits for receive buffers, nothing is lost", async () => {
  await withRig({}, async (rig) => {
    const frames = Array.from({ length: 20 }, (_, i) => pattern(100 + i, i));
    frames.forEach((f) => rig.send(0, f));
    // No receive buffers yet: the transmit chains are held.
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(stats(rig, 0).packets, 0);
    rig.postRx(0, 5, 2048);
    const first = await rig.receive(0, 5);
    rig.postRx(0, 15, 2048);
    const rest = await rig.receive(0, 15);
    assert.deepEqual([...first, ...rest].map((r) => r.frame), frames);
    await rig.used(1, 20);
    assert.equal(stats(rig, 0).drops, 0);
  });
});

Deno.test("loopback without MRG_RXBUF: a frame too big for the buffer is dropped", async () => {
  await withRig({ refuse: bit(VirtioNetFeatureBit.MRG_RXBUF) }, async (rig) => {
    rig.postRx(0, 2, 200);
    rig.send(0, pattern(500, 1));
    rig.send(0, pattern(100, 2));
    const used = await rig.used(0, 2);
    assert.equal(used[0].len, 0, "the small buffer is returned empty");
    assert.equal(used[1].len, 112);
    assert.deepEqual(rig.memory.bytes(used[1].token + 12, 100), pattern(100, 2));
    assert.equal(stats(rig, 0).drops, 1);
    assert.equal(stats(rig, 0).packets, 1);
  });
});

Deno.test("loopback: partial checksums kept with GUEST_CSUM, completed without", async () => {
  const udp = buildUdp({
    srcMac: GUEST_MAC,
    dstMac: MAC,
    srcIp: "10.0.0.2",
    dstIp: "10.0.0.1",
    srcPort: 1000,
    dstPort: 2000,
    data: pattern(50, 3),
  });
  // Make the UDP checksum partial: pseudo-header sum in the field, as a guest stack does.
  const ipStart = 14, udpStart = 34;
  const len = udp.length - udpStart;
  const partial = udp.slice();
  let sum = 0;
  for (let i = ipStart + 12; i < ipStart + 20; i += 2) sum += (partial[i] << 8) | partial[i + 1];
  sum += 17 + len;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  partial[udpStart + 6] = sum >>> 8;
  partial[udpStart + 7] = sum & 0xff;
  const header = new Uint8Array(12);
  header[0] = 1; // NEEDS_CSUM
  header[6] = udpStart; // csum_start
  header[8] = 6; // csum_offset

  for (const guestCsum of [true, false]) {
    const refuse = guestCsum ? 0n : bit(VirtioNetFeatureBit.GUEST_CSUM);
    await withRig({ refuse }, async (rig) => {
      rig.postRx(0, 4, 2048);
      rig.send(0, partial, header);
      const [r] = await rig.receive(0, 1);
      if (guestCsum) {
        assert.deepEqual(r.frame, partial, "frame untouched");
        assert.deepEqual([...r.header.subarray(0, 10)], [1, 0, 0, 0, 0, 0, udpStart, 0, 6, 0]);
      } else {
        assert.deepEqual([...r.header.subarray(0, 10)], new Array(10).fill(0));
        // The completed checksum verifies over pseudo-header + UDP.
        const pseudo = new Uint8Array(12 + len);
        pseudo.set(r.frame.subarray(ipStart + 12, ipStart + 20), 0);
        pseudo[9] = 17;
        pseudo[10] = len >> 8;
        pseudo[11] = len & 0xff;
        pseudo.set(r.frame.subarray(udpStart), 12);
        assert.equal(internetChecksum(pseudo), 0, "UDP checksum valid");
        assert.deepEqual(r.frame.subarray(0, udpStart), partial.subarray(0, udpStart));
      }
    });
  }
});

for (const batch of ["false", "true"]) {
  // batch-used true: with IN_ORDER (which the rig acks) each run of chains
  // comes back with one used entry, which the rig's driver takes as a batch.
  Deno.test(`sink: consumes and counts every frame (batch-used ${batch})`, () => sinkCounts(batch));
}

async function sinkCounts(batch: string): Promise<void> {
  await withRig({ options: { mode: "sink", "batch-used": batch } }, async (rig) => {
    // The 256 used elements marked unwritten (the driver never writes them).
    const layout = rig.rings[1].layout as { usedAddr: number };
    rig.memory.bytes(layout.usedAddr + 4, 256 * 8).fill(0xff);
    const sizes = Array.from({ length: 200 }, (_, i) => 60 + (i % 50) * 29);
    for (let i = 0; i < sizes.length; i++) {
      rig.send(0, pattern(sizes[i], i));
      if (i % 100 === 99) await rig.used(1, 100);
    }
    assert.deepEqual(stats(rig, 1), {
      queue: 1,
      packets: 200,
      bytes: sizes.reduce((a, b) => a + b, 0),
      drops: 0,
      errors: 0,
    });
    assert.equal(stats(rig, 0).packets, 0);
    // One element per chain, or one per run of chains.
    const elements = new Uint32Array(rig.memory.bytes(layout.usedAddr + 4, 256 * 8).slice().buffer);
    let written = 0;
    for (let slot = 0; slot < 256; slot++) if (elements[slot * 2] !== 0xffffffff) written++;
    if (batch === "true") assert.ok(written < 100, `${written} used elements for 200 chains`);
    else assert.equal(written, 200);
  });
}

Deno.test("source: fills every posted receive buffer with a valid frame", async () => {
  for (const mrg of [true, false]) {
    const refuse = mrg ? 0n : bit(VirtioNetFeatureBit.MRG_RXBUF);
    await withRig({ options: { mode: "source", "frame-size": "128" }, refuse }, async (rig) => {
      rig.postRx(0, 32, 2048);
      let got = await rig.receive(0, 32);
      // Buffers smaller than a frame: merged (3 per frame) with MRG_RXBUF, dropped without.
      rig.postRx(0, 9, 64);
      if (mrg) got = got.concat(await rig.receive(0, 3));
      else {
        const used = await rig.used(0, 9);
        assert.ok(used.every((u) => u.len === 0));
      }
      for (const r of got) {
        assert.equal(r.frame.length, 128);
        const eth = parseEthernet(r.frame);
        assert.equal(eth.dst, MAC);
        assert.equal(eth.etherType, 0x0800);
        assert.equal(internetChecksum(r.frame.subarray(14, 34)), 0, "IPv4 header checksum");
        assert.equal((r.frame[16] << 8) | r.frame[17], 128 - 14, "IPv4 total length");
      }
      const s = stats(rig, 0);
      assert.equal(s.packets, got.length);
      assert.equal(s.bytes, 128 * got.length);
      assert.equal(s.drops, mrg ? 0 : 9);
    });
  }
});

Deno.test("responder: answers ARP and ICMP echo for its IP, drops the rest", async () => {
  await withRig({ options: { mode: "responder", ip: "10.0.0.1" } }, async (rig) => {
    rig.postRx(0, 16, 2048);
    rig.send(0, buildArpRequest({ srcMac: GUEST_MAC, srcIp: "10.0.0.2", targetIp: "10.0.0.1" }));
    rig.send(0, buildArpRequest({ srcMac: GUEST_MAC, srcIp: "10.0.0.2", targetIp: "10.0.0.9" }));
    const data = pattern(56, 9);
    rig.send(
      0,
      buildIcmpEcho({
        type: "request",
        id: 0x1234,
        seq: 7,
        data,
        srcMac: GUEST_MAC,
        dstMac: MAC,
        srcIp: "10.0.0.2",
        dstIp: "10.0.0.1",
      }),
    );
    rig.send(
      0,
      buildIcmpEcho({
        type: "request",
        id: 1,
        seq: 1,
        data,
        srcMac: GUEST_MAC,
        dstMac: MAC,
        srcIp: "10.0.0.2",
        dstIp: "10.0.0.77",
      }),
    );
    const [arp, echo] = await rig.receive(0, 2);

    const eth = parseEthernet(arp.frame);
    assert.equal(eth.dst, GUEST_MAC);
    assert.equal(eth.src, MAC);
    assert.equal(eth.etherType, 0x0806);
    const a = parseArp(eth.payload);
    assert.equal(a.op, 2);
    assert.equal(a.senderMac, MAC);
    assert.equal(a.senderIp, "10.0.0.1");
    assert.equal(a.targetMac, GUEST_MAC);
    assert.equal(a.targetIp, "10.0.0.2");
    assert.equal(arp.frame.length, 42);

    const e = parseIcmpEcho(echo.frame); // verifies IPv4 and ICMP checksums
    assert.deepEqual(
      {
        type: e.type,
        id: e.id,
        seq: e.seq,
        src: e.srcIp,
        dst: e.dstIp,
        smac: e.srcMac,
        dmac: e.dstMac,
      },
      {
        type: "reply",
        id: 0x1234,
        seq: 7,
        src: "10.0.0.1",
        dst: "10.0.0.2",
        smac: MAC,
        dmac: GUEST_MAC,
      },
    );
    assert.deepEqual(e.data, data);
    assert.equal(internetChecksum(echo.frame.subarray(14, 34)), 0);

    await rig.used(1, 4);
    const tx = stats(rig, 1);
    assert.equal(tx.packets, 4);
    assert.equal(tx.drops, 2, "the unanswered ARP and ping");
    assert.equal(stats(rig, 0).packets, 2);
  });
});

/** Write a descriptor table entry into guest memory (for indirect tables). */
function putDescriptor(
  rig: SimRig,
  gpa: number,
  addr: number,
  len: number,
  flags: number,
  next: number,
) {
  const v = new DataView(rig.memory.bytes(gpa, 16).slice().buffer);
  v.setUint32(0, addr % 2 ** 32, true);
  v.setUint32(4, Math.floor(addr / 2 ** 32), true);
  v.setUint32(8, len, true);
  v.setUint16(12, flags, true);
  v.setUint16(14, next, true);
  rig.memory.bytes(gpa, 16).set(new Uint8Array(v.buffer));
}

const NEXT = 1, WRITE = 2, INDIRECT = 4;

Deno.test("hostile transmit chains are returned, counted and reported; frames still loop back", async () => {
  await withRig({ reserved: 8 }, async (rig) => {
    rig.postRx(0, 8, 2048);
    const tx = rig.rings[1].driver;
    const top = rig.rings[1].layout.num - 1;
    // A loop: top -> top-1 -> top.
    tx.writeDescriptor(top, 0x500000, 12, NEXT, top - 1);
    tx.writeDescriptor(top - 1, 0x500100, 64, NEXT, top);
    tx.addRaw(top, 1);
    // A buffer outside guest memory.
    tx.writeDescriptor(top - 2, 0x7_0000_0000, 100, 0, 0);
    tx.addRaw(top - 2, 2);
    // An indirect table whose length is not a multiple of 16.
    tx.writeDescriptor(top - 3, 0x500200, 17, INDIRECT, 0);
    tx.addRaw(top - 3, 3);
    // An indirect descriptor inside an indirect table.
    putDescriptor(rig, 0x500300, 0x500400, 16, INDIRECT, 0);
    tx.writeDescriptor(top - 4, 0x500300, 16, INDIRECT, 0);
    tx.addRaw(top - 4, 4);
    // A chain longer than the queue: one direct buffer, then a full-size indirect table.
    const num = rig.rings[1].layout.num;
    for (let j = 0; j < num; j++) {
      putDescriptor(rig, 0x600000 + 16 * j, 0x500000, 1, j < num - 1 ? NEXT : 0, j + 1);
    }
    tx.writeDescriptor(top - 5, 0x500000, 12, NEXT, top - 6);
    tx.writeDescriptor(top - 6, 0x600000, 16 * num, INDIRECT, 0);
    tx.addRaw(top - 5, 5);
    tx.publish();
    rig.kickIfNeeded(1);
    const good = pattern(90, 5);
    rig.send(0, good);
    const [r] = await rig.receive(0, 1);
    assert.deepEqual(r.frame, good);
    const used = await rig.used(1, 6);
    assert.deepEqual(used.map((u) => [u.token, u.len]).slice(0, 5), [
      [1, 0],
      [2, 0],
      [3, 0],
      [4, 0],
      [5, 0],
    ]);
    const s = stats(rig, 1);
    assert.equal(s.errors, 5);
    assert.equal(s.packets, 1);
    // Each error reached the device log, naming what was wrong.
    await until("5 reports", () => rig.warnings.length >= 5);
    const kinds = ["loop", "out-of-bounds", "bad-indirect", "nested-indirect", "too-long"];
    kinds.forEach((k, i) => assert.match(rig.warnings[i], new RegExp(`^ring 1: ${k}: `)));
  });
});

Deno.test("bad heads, misordered chains, bad receive buffers and a corrupt avail.idx", async () => {
  await withRig({ reserved: 4 }, async (rig) => {
    const tx = rig.rings[1].driver, rx = rig.rings[0].driver;
    const top = rig.rings[1].layout.num - 1;
    // Receive ring: a buffer outside memory, then good ones. The frame lands in a good one.
    rx.writeDescriptor(top, 0x9_0000_0000, 2048, WRITE, 0);
    rx.addRaw(top, 0x77);
    rx.publish();
    rig.postRx(0, 4, 2048);
    // Transmit ring: a head beyond the queue, then a readable buffer after a writable one.
    tx.addRaw(9999, 1);
    tx.writeDescriptor(top, 0x500000, 12, WRITE | NEXT, top - 1);
    tx.writeDescriptor(top - 1, 0x500100, 64, 0, 0);
    tx.addRaw(top, 2);
    tx.publish();
    rig.kickIfNeeded(1);
    rig.send(0, pattern(70, 1));
    const [bad] = await rig.used(0, 1);
    assert.deepEqual(
      bad,
      { token: 0x77, len: 0 },
      "the bad receive buffer comes back empty, first",
    );
    const [first] = await rig.receive(0, 1);
    assert.deepEqual(first.frame, pattern(70, 1));
    assert.equal(stats(rig, 0).errors, 1, "the bad receive buffer");
    assert.equal(stats(rig, 1).errors, 2, "the bad head and the misordered chain");

    // Corrupt avail.idx: far ahead of the device. The ring stops and reports.
    const availIdx = rig.memory.bytes(rig.rings[1].layout.availAddr + 2, 2);
    const saved = availIdx.slice();
    availIdx.set([(saved[0] + 0x10) & 0xff, (saved[1] + 0x10) & 0xff]);
    eventfdWrite(rig.rings[1].kick, 1);
    // Counted once, or twice when the kick arrives while the device is still polling.
    await until("the corrupt index to be counted", () => stats(rig, 1).errors >= 3);
    // The guest repairs it and sends again: the ring serves again after its kick.
    availIdx.set(saved);
    rig.send(0, pattern(80, 2));
    const [second] = await rig.receive(0, 1);
    assert.deepEqual(second.frame, pattern(80, 2));
    await until("reports", () => rig.warnings.length >= 4);
    assert.match(rig.warnings.join("\n"), /ring 0: out-of-bounds: /);
    assert.match(rig.warnings.join("\n"), /ring 1: bad-index: /);
    assert.match(rig.warnings.join("\n"), /ring 1: write-before-read: /);
    assert.match(rig.warnings.join("\n"), /ring 1: bad-avail-idx: /);
  });
});

Deno.test("reports are rate limited, errors are all counted", async () => {
  await withRig({ reserved: 64 }, async (rig) => {
    const tx = rig.rings[1].driver;
    const num = rig.rings[1].layout.num;
    for (let i = 0; i < 64; i++) tx.writeDescriptor(num - 1 - i, 0x7_0000_0000, 100, 0, 0);
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < 64; i++) tx.addRaw(num - 1 - i, i);
      tx.publish();
      rig.kickIfNeeded(1);
      await rig.used(1, 64);
    }
    assert.equal(stats(rig, 1).errors, 192);
    assert.ok(
      rig.warnings.length >= 5 && rig.warnings.length < 20,
      `${rig.warnings.length} reports`,
    );
  });
});

Deno.test("stop reports ring bases and a restart resumes from them", async () => {
  const rig = await SimRig.create({});
  const base = async (q: number) => (await rig.device.getVringBase(q)).num;
  try {
    assert.equal(await base(0), 0, "never ran: the frontend's base");
    await rig.harness.start();
    rig.postRx(0, 10, 2048);
    for (let i = 0; i < 6; i++) rig.send(0, pattern(70, i));
    await rig.receive(0, 6);
    await rig.used(1, 6);
    await rig.harness.stop();
    assert.equal(await base(0), 6);
    assert.equal(await base(1), 6);
    // The frontend sets the bases back (as the SDK does) and starts again.
    await rig.harness.start(undefined, { bases: [6, 6] });
    for (let i = 0; i < 3; i++) rig.send(0, pattern(80, i));
    const again = await rig.receive(0, 3);
    assert.deepEqual(again.map((r) => r.frame), [0, 1, 2].map((i) => pattern(80, i)));
    await rig.used(1, 3);
    await rig.harness.stop();
    assert.equal(await base(0), 9);
    assert.equal(await base(1), 9);
    assert.equal(stats(rig, 0).packets, 9);
  } finally {
    await rig.harness.stop();
    await rig.close();
  }
});

Deno.test("a held frame is given back at stop: the base excludes it", async () => {
  await withRig({}, async (rig) => {
    for (let i = 0; i < 3; i++) rig.send(0, pattern(70, i));
    await new Promise((r) => setTimeout(r, 50));
    await rig.harness.stop();
    // The first transmit chain was taken but could not be delivered: not consumed.
    assert.equal((await rig.device.getVringBase(1)).num, 0);
    assert.equal((await rig.device.getVringBase(0)).num, 0);
  });
});

Deno.test("a guest that posts a receive buffer again while the device holds it fails the ring, reported", async () => {
  await withRig({ ringSize: 16 }, async (rig) => {
    // One real 20-byte buffer (header and 8 bytes), then the same head made
    // available again and again, as a hostile guest can.
    rig.postRx(0, 1, 20);
    const rx = rig.rings[0];
    const avail = rig.memory.bytes(rx.layout.availAddr, 4 + 2 * 16);
    const view = new DataView(avail.buffer, avail.byteOffset, avail.byteLength);
    const head = view.getUint16(4, true);
    for (let i = 1; i < 16; i++) view.setUint16(4 + 2 * i, head, true);
    view.setUint16(2, 16, true);
    eventfdWrite(rx.kick, 1);
    // A 1500-byte frame needs far more than the ring's 16 buffers of 8 bytes.
    rig.send(0, pattern(1500, 3));
    await until("the ring failure report", () => rig.reported.length > 0);
    assert.equal(rig.reported[0].queue, 0);
    assert.match(rig.reported[0].message, /ring 0: .*took all 16 receive buffers/);
  });
});
