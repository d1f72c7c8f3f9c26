// The sim device behind a vIOMMU over a real vhost-user socket, driven by the
// test kit's frontend the way QEMU drives a device with iommu_platform=on:
// VIRTIO_F_ACCESS_PLATFORM acked, BACKEND_REQ and REPLY_ACK negotiated, the
// backend channel open, ring and buffer addresses given as IOVAs (GPA +
// 0x80_0000_0000), and the device's IOTLB misses answered from a page table
// the test controls (a mapped page: an IOTLB_MSG update; an unmapped one:
// nothing, as QEMU does).
//
// What is shown: frames loop back byte-identical through the IOTLB (split and
// packed rings) with every miss answered; ring pages flushed under traffic are
// asked for again while the rings run on; a ring whose pages stay unmapped
// past IOTLB_MISS_TIMEOUT_MS stops, and runs again once they are mapped (the
// device asks again); a buffer nothing maps fails as `unmapped` after
// IOTLB_MISS_TIMEOUT_MS, one mapped read-only as `access-denied` (never
// written); a used ring mapped read-only keeps its ring from starting; a storm
// of misses stays bounded; refused IOTLB messages get a non-zero ack and the
// session goes on. Meanwhile another device served by the same process keeps
// looping frames.

import assert from "node:assert/strict";
import {
  bit,
  type DeviceEvent,
  IOTLB_MISS_TIMEOUT_MS,
  IotlbAccess,
  IotlbMessageType,
  usedRingSize,
  VirtioFeatureBit,
} from "@vhost-mdev/sdk";
import { BackendRequest } from "@vhost-mdev/sdk/vhost-user";
import {
  DEFAULT_IOVA_OFFSET,
  IOMMU_PAGE_SIZE,
  until,
  VhostUserFrontend,
  VhostUserFrontendError,
  VirtioGuest,
  VirtioNetDriver,
} from "@vhost-mdev/testing";
import { MISS_BURST, MISS_RATE, MISS_REPEAT_MS } from "../../sdk/core/device_iotlb.ts";
import { Bystander, frames, LoopGuest, type ServedSim, serveSim, SLOT } from "./iommu_rig.ts";

const PAGE = IOMMU_PAGE_SIZE;
const READ = IotlbAccess.READ;
const WRITE = IotlbAccess.WRITE;

function pageFloor(n: number): number {
  return Math.floor(n / PAGE) * PAGE;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Run `body` with a fresh directory for sockets, removed afterwards. */
async function withDir(body: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "vhost-iommu-" });
  try {
    await body(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/**
 * A sim served at `<dir>/a.sock` and a frontend with an IOMMU connected to
 * it; both closed after `body`.
 */
async function withIommuSim(
  dir: string,
  body: (sim: ServedSim, fe: VhostUserFrontend) => Promise<void>,
  pairs = 1,
  memoryMiB = 8,
): Promise<void> {
  const sim = await serveSim(`${dir}/a.sock`, pairs);
  let fe: VhostUserFrontend | null = null;
  try {
    fe = await VhostUserFrontend.connect(sim.sock, { iommu: true, memoryMiB });
    await body(sim, fe);
  } finally {
    await fe?.shutdown();
    await sim.close();
  }
}

/** The device's `iotlb_*` counters. */
function iotlb(sim: ServedSim): Record<string, number> {
  return sim.device.iotlbStats() ?? {};
}

for (const packed of [false, true]) {
  const kind = packed ? "packed" : "split";
  Deno.test(`vIOMMU (${kind} rings): 240 frames loop back byte-identical through the IOTLB`, async () => {
    await withDir((dir) =>
      withIommuSim(dir, async (sim, fe) => {
        const net = await VirtioNetDriver.start(fe, { iommu: true, packed, ringSize: 128 });
        const guest = net.guest;
        const iommu = fe.iommu!;
        assert.equal(guest.iovaOffset, DEFAULT_IOVA_OFFSET);
        assert.ok(fe.iovaRings, "ring addresses go out as IOVAs");
        assert.ok(fe.backendChannelOpen, "the backend channel is open");
        const acked = sim.device.ackedFeatures;
        assert.equal(
          acked & bit(VirtioFeatureBit.ACCESS_PLATFORM),
          bit(VirtioFeatureBit.ACCESS_PLATFORM),
        );
        assert.equal((acked & bit(VirtioFeatureBit.RING_PACKED)) !== 0n, packed);
        // The device was given IOVAs and translated them to the guest's GPAs.
        for (const q of [0, 1]) {
          const l = guest.ringLayout(q), v = sim.device.vring(q);
          assert.equal(v.dma.desc, l.descAddr + DEFAULT_IOVA_OFFSET);
          assert.equal(v.dma.used, l.usedAddr + DEFAULT_IOVA_OFFSET);
          assert.equal(v.descAddr, l.descAddr);
          assert.equal(v.usedAddr, l.usedAddr);
        }

        for (let round = 0; round < 4; round++) {
          const sent = frames(60, round);
          assert.equal(net.send(sent), sent.length);
          assert.deepEqual(await net.waitReceive(sent.length), sent, `round ${round}`);
        }
        await net.flushTx();

        const s = iotlb(sim);
        assert.ok(s.iotlb_misses > 0, `iotlb_misses ${s.iotlb_misses}`);
        assert.ok(s.iotlb_updates > 0, `iotlb_updates ${s.iotlb_updates}`);
        await iommu.settled();
        const c = iommu.counters;
        // Every miss the device sent was received and answered; every answer taken.
        assert.equal(c.missesReceived, s.iotlb_misses);
        assert.equal(c.missesAnswered, c.missesReceived);
        assert.equal(c.missesUnanswered, 0);
        assert.equal(c.failures, 0, iommu.lastError);
        assert.equal(iotlb(sim).iotlb_updates, c.updatesSent);
        assert.equal(iotlb(sim).iotlb_entries, c.updatesSent, "one entry per page answered");
        // Each miss was for a page of the IOVA window of guest memory.
        const low = fe.memoryGpa + DEFAULT_IOVA_OFFSET, high = low + fe.memorySize;
        for (const m of iommu.missLog) {
          assert.ok(m.iova >= low && m.iova < high, `miss at 0x${m.iova.toString(16)}`);
          assert.ok(m.answered);
        }
        assert.equal(fe.backendRequests(BackendRequest.IOTLB_MSG), c.missesReceived);
        // The datapath saw every frame once and nothing wrong.
        const st = sim.device.stats();
        assert.equal(st[1].packets, 240);
        assert.equal(st[0].packets, 240);
        assert.equal(st[0].errors + st[1].errors, 0);
        assert.deepEqual(sim.messages("error"), []);
        await net.stop();
      })
    );
  });
}

/** Ring `q`'s pages as the device sees them: the IOVA of the first and the bytes. */
function ringPages(guest: VirtioGuest, q: number): { iova: number; gpa: number; size: number } {
  const l = guest.ringLayout(q);
  const start = pageFloor(l.descAddr);
  const end = Math.ceil((l.usedAddr + usedRingSize(l.num)) / PAGE) * PAGE;
  return { iova: guest.deviceAddress(start), gpa: start, size: end - start };
}

/** Stop and start events (whole device or one ring) among `events`. */
function stopsAndStarts(events: readonly DeviceEvent[]): string[] {
  return events.filter((e) => ["stop", "start", "ring-stop", "ring-start"].includes(e.type))
    .map((e) => `${e.type}: ${e.message}`);
}

Deno.test("vIOMMU: ring pages flushed under traffic are asked for again; the rings run on, no frame lost", async () => {
  await withDir((dir) =>
    withIommuSim(dir, async (sim, fe) => {
      const net = await VirtioNetDriver.start(fe, { iommu: true, ringSize: 128 });
      const iommu = fe.iommu!;
      const first = frames(64, 1);
      assert.equal(net.send(first), first.length);
      assert.deepEqual(await net.waitReceive(first.length), first);
      await net.flushTx();
      await iommu.settled();

      const pages = [0, 1].map((q) => ringPages(net.guest, q));
      const inRing = (iova: number) => pages.some((p) => iova >= p.iova && iova < p.iova + p.size);
      const missesBefore = iommu.missLog.length;
      const eventsBefore = sim.events.length;
      const invalidationsBefore = iotlb(sim).iotlb_invalidations;

      // Frames in flight while both rings' translations are flushed (the
      // page table still maps them: the device's misses are answered).
      const second = frames(100, 2);
      assert.equal(net.send(second), second.length);
      for (const p of pages) await iommu.invalidate(p.iova, p.size);
      assert.deepEqual(await net.waitReceive(second.length), second, "frames sent across it");
      await iommu.settled();

      assert.equal(iotlb(sim).iotlb_invalidations, invalidationsBefore + 2);
      // The device asked for both rings' pages again, and got them.
      const asked = iommu.missLog.slice(missesBefore).filter((m) => inRing(m.iova));
      for (const p of pages) {
        assert.ok(
          asked.some((m) => pageFloor(m.iova) === p.iova && m.answered),
          `no answered miss for ring page 0x${p.iova.toString(16)}`,
        );
      }
      // The same memory came back: nothing stopped.
      assert.deepEqual(stopsAndStarts(sim.events.slice(eventsBefore)), []);
      assert.ok([0, 1].every((q) => sim.device.vring(q).running));

      const third = frames(64, 3);
      assert.equal(net.send(third), third.length);
      assert.deepEqual(await net.waitReceive(third.length), third);
      await net.flushTx();
      const st = sim.device.stats();
      assert.equal(st[1].packets, 228);
      assert.equal(st[0].packets, 228);
      assert.equal(st[0].errors + st[1].errors, 0);
      assert.deepEqual(sim.messages("error"), []);
      await net.stop();
    })
  );
});

Deno.test("vIOMMU: a ring unmapped past the miss timeout stops; mapped again, it is asked for and runs, no frame lost", async () => {
  await withDir((dir) =>
    withIommuSim(dir, async (sim, fe) => {
      const net = await VirtioNetDriver.start(fe, { iommu: true, ringSize: 128 });
      const iommu = fe.iommu!;
      const first = frames(32, 7);
      assert.equal(net.send(first), first.length);
      assert.deepEqual(await net.waitReceive(first.length), first);
      await net.flushTx();
      await iommu.settled();

      // The guest takes the transmit ring's pages away (INVALIDATE; misses
      // for them now go unanswered).
      const tx = ringPages(net.guest, 1);
      const missesBefore = iommu.missLog.length;
      const eventsBefore = sim.events.length;
      const t0 = performance.now();
      await iommu.unmap(tx.iova, tx.size);
      const ringStop = () =>
        sim.events.slice(eventsBefore).find((e) =>
          (e.type === "ring-stop" || e.type === "stop") && /IOTLB/.test(e.message)
        );
      await until("the transmit ring to stop", () => ringStop() !== undefined, 4000);
      const stoppedAfter = performance.now() - t0;
      assert.ok(
        stoppedAfter >= IOTLB_MISS_TIMEOUT_MS - 50,
        `stopped after ${stoppedAfter.toFixed(0)} ms`,
      );
      assert.match(ringStop()!.message, /ring 1 stopped: IOTLB translation .* did not come back/);
      assert.equal(sim.device.vring(1).running, false);
      const unanswered = iommu.missLog.slice(missesBefore).filter((m) =>
        pageFloor(m.iova) === tx.iova
      );
      assert.ok(unanswered.length >= 1 && unanswered.every((m) => !m.answered));

      // Frames queued while it is stopped stay on the ring.
      const second = frames(32, 8);
      assert.equal(net.send(second), second.length);
      await sleep(100);
      assert.deepEqual(net.receive(), [], "nothing moves while the ring is stopped");

      // Mapped again: the device must ask again to run the ring.
      const missesMapped = iommu.missLog.length;
      await iommu.map(tx.iova, tx.gpa, tx.size);
      net.guest.kick(1);
      assert.deepEqual(await net.waitReceive(second.length, 0, 3000), second);
      const askedAgain = iommu.missLog.slice(missesMapped).filter((m) =>
        pageFloor(m.iova) === tx.iova
      );
      assert.ok(askedAgain.some((m) => m.answered), "the device asked for the ring again");
      assert.ok(sim.device.vring(1).running);

      const third = frames(32, 9);
      assert.equal(net.send(third), third.length);
      assert.deepEqual(await net.waitReceive(third.length), third);
      await net.flushTx();
      const st = sim.device.stats();
      assert.equal(st[1].packets, 96);
      assert.equal(st[0].packets, 96);
      assert.equal(st[0].errors + st[1].errors, 0);
      await net.stop();
    })
  );
});

Deno.test("vIOMMU: a transmit buffer at an unmapped IOVA fails as `unmapped` after the miss timeout", async () => {
  await withDir((dir) =>
    withIommuSim(dir, async (sim, fe) => {
      const g = await LoopGuest.start(fe);
      const iommu = fe.iommu!;
      const before = frames(3, 4);
      for (const f of before) g.send(f);
      assert.deepEqual((await g.receive(3)).map((r) => r.frame), before);
      const errors0 = sim.device.stats()[1].errors;
      // The frames before took misses (their buffers' pages); the bad chain
      // comes a moment later, as it would in a guest with other DMA going
      // on: its wait starts while the device still times the earlier misses.
      await sleep(300);

      // A GPA past guest memory: its IOVA is in no page of the page table.
      const badGpa = fe.memoryGpa + fe.memorySize + 0x10_0000;
      const badIova = g.guest.deviceAddress(badGpa);
      assert.equal(iommu.lookup(badIova), null);
      const t0 = performance.now();
      const bad = g.send(new Uint8Array(100).fill(0xee), badGpa);
      const afterwards = frames(3, 5);
      for (const f of afterwards) g.send(f);

      const used = await g.waitTx(bad, 3 * IOTLB_MISS_TIMEOUT_MS);
      const waited = performance.now() - t0;
      assert.equal(used.len, 0, "returned with nothing written");
      assert.ok(
        waited >= IOTLB_MISS_TIMEOUT_MS - 50 && waited < IOTLB_MISS_TIMEOUT_MS + 1500,
        `the chain failed after ${waited.toFixed(0)} ms`,
      );
      assert.deepEqual((await g.receive(3)).map((r) => r.frame), afterwards);

      const st = sim.device.stats();
      assert.equal(st[1].errors, errors0 + 1, "exactly one transmit error");
      assert.equal(st[0].errors, 0);
      assert.equal(st[1].packets, 6);
      const warned = sim.messages("warn").filter((m) => /unmapped/.test(m));
      assert.equal(warned.length, 1, sim.messages("warn").join(" | "));
      assert.match(warned[0], new RegExp(`ring 1: unmapped: .*0x${badIova.toString(16)}`));
      const asked = iommu.missLog.filter((m) => pageFloor(m.iova) === pageFloor(badIova));
      assert.ok(asked.length >= 1 && asked.every((m) => !m.answered && m.perm === READ));
      assert.equal(iommu.counters.missesUnanswered, asked.length);
    })
  );
});

Deno.test("vIOMMU: a receive buffer mapped read-only is never written and fails as `access-denied`", async () => {
  await withDir((dir) =>
    withIommuSim(dir, async (sim, fe) => {
      const g = await LoopGuest.start(fe);
      const iommu = fe.iommu!;
      // Receive slot 0 is the first the device takes: make it read-only.
      const slot0 = g.rxGpa;
      g.bytes(slot0, SLOT).fill(0x5a);
      await iommu.map(g.guest.deviceAddress(slot0), slot0, SLOT, READ);
      assert.deepEqual(iommu.lookup(g.guest.deviceAddress(slot0)), { gpa: slot0, perm: READ });

      const sent = frames(2, 6);
      for (const f of sent) g.send(f);
      const got = await g.receive(3);
      assert.deepEqual(got[0], { slot: 0, len: 0, frame: new Uint8Array(0) }, "slot 0 empty");
      assert.deepEqual(got.slice(1).map((r) => r.frame), sent, "the frames in the next buffers");
      assert.ok(g.bytes(slot0, SLOT).every((b) => b === 0x5a), "slot 0 was never written");

      const st = sim.device.stats();
      assert.equal(st[0].errors, 1, "one receive error");
      assert.equal(st[1].errors, 0);
      assert.equal(st[0].packets, 2);
      const warned = sim.messages("warn").filter((m) => /access-denied/.test(m));
      assert.equal(warned.length, 1, sim.messages("warn").join(" | "));
      assert.match(warned[0], /^.*ring 0: access-denied: .*read-only/);
      // The device asked to write the page; the IOMMU answered with what it has: read.
      const asked = iommu.missLog.filter((m) => pageFloor(m.iova) === g.guest.deviceAddress(slot0));
      assert.deepEqual(asked.map((m) => [m.perm, m.answered]), [[WRITE, true]]);
    })
  );
});

Deno.test("vIOMMU: a used ring mapped read-only does not start; another device loops on", async () => {
  await withDir(async (dir) => {
    const other = await Bystander.start(`${dir}/b.sock`);
    try {
      other.run();
      await withIommuSim(dir, async (sim, fe) => {
        const guest = await VirtioGuest.setup(fe, { queues: 2, ringSize: 64, iommu: true });
        await until("both rings translated", () => [0, 1].every((q) => sim.device.vring(q).ready));
        const roundsBefore = other.rounds;
        // Ring 1's areas share one page: read-only is enough for the
        // descriptors and the driver area, not for the device area.
        const l = guest.ringLayout(1);
        const page = pageFloor(l.usedAddr);
        assert.equal(pageFloor(l.descAddr), page);
        await fe.iommu!.map(guest.deviceAddress(page), page, PAGE, READ);
        const usedIova = guest.deviceAddress(l.usedAddr);
        const named = () =>
          sim.events.filter((e) =>
            e.type === "error" && e.fields?.queue === 1 && /device area/.test(e.message)
          );
        await until("the device to report ring 1's device area", () => named().length > 0);
        assert.match(
          named()[0].message,
          new RegExp(`^ring 1 device area at iova 0x${usedIova.toString(16)}: .*write access`),
        );
        await guest.activate();
        guest.kick(0);
        guest.kick(1);
        await sleep(300);
        assert.equal(sim.device.vring(1).ready, false);
        assert.equal(sim.device.vring(1).running, false, "ring 1 did not start");
        assert.ok(
          !sim.events.some((e) =>
            (e.type === "ring-start" && /^ring 1 /.test(e.message)) ||
            (e.type === "start" && / 1:/.test(e.message))
          ),
          "no start took ring 1",
        );
        await until("the other device to loop more rounds", () => other.rounds >= roundsBefore + 5);
        await guest.stop();
      });
      assert.equal(other.failure, "");
      assert.ok(other.slowestMs < 1000, `slowest round ${other.slowestMs.toFixed(0)} ms`);
    } finally {
      await other.close();
    }
  });
});

Deno.test("vIOMMU: a miss storm the IOMMU never answers stays bounded; another device loops on", async () => {
  await withDir(async (dir) => {
    const other = await Bystander.start(`${dir}/b.sock`);
    try {
      other.run();
      const pairs = 4, ringSize = 1024;
      await withIommuSim(
        dir,
        async (sim, fe) => {
          const iommu = fe.iommu!;
          const guest = await VirtioGuest.setup(fe, { queues: 2 * pairs, ringSize, iommu: true });
          // Every transmit chain points at a page of its own past guest memory:
          // thousands of distinct IOVAs nothing maps.
          const beyond = fe.memoryGpa + fe.memorySize;
          let distinct = 0;
          for (let p = 0; p < pairs; p++) {
            const tx = guest.ring(2 * p + 1);
            for (let i = 0; i < ringSize; i++) {
              assert.ok(tx.addBuffer(beyond + (p * ringSize + i) * PAGE, 64, false, i));
              distinct++;
            }
            tx.publish();
          }
          assert.equal(distinct, 4096);
          const spare = guest.allocate(PAGE);
          await until("every ring translated", () => {
            for (let q = 0; q < 2 * pairs; q++) if (!sim.device.vring(q).ready) return false;
            return true;
          });
          await iommu.settled();
          const log0 = iommu.missLog.length, received0 = iommu.counters.missesReceived;
          const answered0 = iommu.counters.missesAnswered;
          const suppressed0 = iotlb(sim).iotlb_misses_suppressed;
          assert.equal(received0, iotlb(sim).iotlb_misses);

          await guest.activate();
          const t0 = performance.now();
          for (let p = 0; p < pairs; p++) guest.kick(2 * p + 1);
          // The guest keeps remapping a page of its own meanwhile, switching it
          // between read-write and read-only: each update changes the IOTLB
          // (a repeated one would not), and every waiting ring looks (and
          // misses) again.
          let updates = 0;
          while (performance.now() - t0 < 2500) {
            await fe.iotlbUpdate({
              iova: guest.deviceAddress(spare),
              size: PAGE,
              uaddr: fe.frontendAddress(spare),
              perm: updates % 2 === 0 ? IotlbAccess.READ_WRITE : IotlbAccess.READ,
            });
            updates++;
            if (updates % 20 === 0) await sleep(1);
          }
          const seconds = (performance.now() - t0) / 1000;
          await until(
            "the frontend to have read every miss sent",
            () => iommu.counters.missesReceived === iotlb(sim).iotlb_misses,
          );
          const s = iotlb(sim);
          const c = iommu.counters;
          const storm = iommu.missLog.slice(log0);
          const received = c.missesReceived - received0;
          assert.equal(storm.length, received);
          // Only the storm's pages were asked for, and none was answered.
          assert.ok(storm.every((m) => !m.answered && m.perm === READ));
          assert.ok(storm.every((m) => m.iova >= guest.deviceAddress(beyond)));
          assert.equal(c.missesAnswered, answered0);
          assert.ok(updates > 100, `only ${updates} updates`);
          // Bounded: by the rate limit, and far below it by the dedupe (a ring
          // waits on one page at a time, asked again at most every
          // MISS_REPEAT_MS, and moves to the next page once per timeout).
          const windows = Math.ceil(seconds * 1000 / MISS_REPEAT_MS) + 1;
          const pagesPerRing = Math.ceil(seconds * 1000 / IOTLB_MISS_TIMEOUT_MS) + 1;
          const bound = pairs * windows * pagesPerRing;
          assert.ok(received <= MISS_BURST + MISS_RATE * seconds);
          assert.ok(
            received <= bound,
            `${received} misses in ${seconds.toFixed(1)} s, bound ${bound}`,
          );
          assert.ok(received >= pairs, `${received} misses`);
          const pages = new Set(storm.map((m) => pageFloor(m.iova)));
          assert.ok(pages.size <= pairs * pagesPerRing, `${pages.size} distinct pages asked`);
          assert.ok(
            s.iotlb_misses_suppressed - suppressed0 > received,
            `suppressed ${s.iotlb_misses_suppressed - suppressed0}, sent ${received}`,
          );
          // The storm chains fail as `unmapped`, at most one per ring per timeout.
          const st = sim.device.stats();
          let failed = 0;
          for (let p = 0; p < pairs; p++) {
            const e = st[2 * p + 1].errors;
            assert.ok(e >= 1 && e <= pagesPerRing, `ring ${2 * p + 1}: ${e} errors`);
            failed += e;
          }
          const warned = sim.messages("warn").filter((m) => /: unmapped: /.test(m));
          assert.ok(warned.length >= 1 && warned.length <= failed, `${warned.length} warnings`);
          assert.equal(st.reduce((n, r) => n + r.packets, 0), 0);
        },
        pairs,
        16,
      );
      assert.equal(other.failure, "");
      assert.ok(other.rounds >= 10, `the other device looped ${other.rounds} rounds`);
      assert.ok(other.slowestMs < 1000, `slowest round ${other.slowestMs.toFixed(0)} ms`);
    } finally {
      await other.close();
    }
  });
});

Deno.test("vIOMMU: IOTLB messages the device refuses get a non-zero ack; the session goes on", async () => {
  await withDir((dir) =>
    withIommuSim(dir, async (sim, fe) => {
      await fe.handshake();
      assert.ok(fe.backendChannelOpen);
      const entry = { iova: 0x1000, size: PAGE, uaddr: fe.address, perm: IotlbAccess.READ_WRITE };
      // Before VIRTIO_F_ACCESS_PLATFORM was acked, the device has no IOTLB.
      await assert.rejects(
        fe.iotlbUpdate(entry),
        (e: unknown) =>
          e instanceof VhostUserFrontendError && e.request === "IOTLB_MSG" &&
          /refused the request \(ack [1-9]/.test(e.message),
      );
      await fe.setFeatures(
        bit(VirtioFeatureBit.VERSION_1) | bit(VirtioFeatureBit.PROTOCOL_FEATURES) |
          bit(VirtioFeatureBit.ACCESS_PLATFORM),
      );
      await fe.setMemTable();
      // ACCESS_FAIL (4) is no message a frontend sends.
      await assert.rejects(
        fe.iotlbMessage({
          iova: 0x1000n,
          size: 0x1000n,
          uaddr: 0n,
          perm: 1,
          type: IotlbMessageType.ACCESS_FAIL,
        }),
        /IOTLB_MSG: backend refused the request \(ack [1-9]/,
      );
      // An update whose frontend address is outside the memory table.
      await assert.rejects(
        fe.iotlbUpdate({ ...entry, uaddr: fe.address + fe.memorySize }),
        /IOTLB_MSG: backend refused the request \(ack [1-9]/,
      );
      await assert.rejects(
        fe.iotlbUpdate({ ...entry, uaddr: fe.address + fe.memorySize - PAGE / 2 }),
        /refused the request/,
        "one that runs past the table's end",
      );
      const warned = sim.messages("warn").filter((m) => /IOTLB_MSG refused/.test(m));
      assert.equal(warned.length, 4, warned.join(" | "));
      assert.match(warned[0], /ACCESS_PLATFORM was not negotiated/);
      assert.match(warned[1], /type 4/);
      assert.match(warned[2], /not inside one region of the memory table/);
      // The session goes on: a good update and an invalidation are taken.
      assert.equal(fe.closed, false);
      await fe.iotlbUpdate(entry);
      assert.deepEqual(
        [iotlb(sim).iotlb_updates, iotlb(sim).iotlb_entries],
        [1, 1],
      );
      await fe.iotlbInvalidate(0, 0x10000);
      assert.deepEqual(
        [iotlb(sim).iotlb_invalidations, iotlb(sim).iotlb_entries],
        [1, 0],
      );
      assert.equal(await fe.getQueueNum(), 1);
      assert.deepEqual(sim.messages("error"), []);
    })
  );
});
