// Live migration's dirty log on the sim device: while the frontend logs
// (VHOST_F_LOG_ALL with a SET_LOG_BASE log), every page the device writes is
// marked, by its Workers, and no page it only reads; turning logging on and
// replacing the log stop nothing; a stopped ring's used ring is marked whole;
// a log smaller than guest memory makes the writes past it device errors.

import assert from "node:assert/strict";
import {
  bit,
  type DeviceEvent,
  DIRTY_LOG_PAGE_SIZE,
  usedRingSize,
  VHOST_F_LOG_ALL,
  VirtioFeatureBit,
} from "@vhost-mdev/sdk";
import { close, ftruncate, type Mapping, memfdCreate, mmap } from "@vhost-mdev/sdk/sys";
import { SimRig } from "./rig.ts";

/** The rig's guest memory: 32 MiB, so a log of 1024 bytes covers it. */
const FULL_LOG_BYTES = (32 << 20) / DIRTY_LOG_PAGE_SIZE / 8;

/** A sealed memfd log as QEMU makes one, and the frontend's own view of it. */
class FrontendLog {
  readonly fd: number;
  readonly size: number;
  readonly #mapping: Mapping;

  constructor(size: number) {
    this.fd = memfdCreate("migration-log", { allowSealing: true });
    ftruncate(this.fd, size);
    this.size = size;
    this.#mapping = mmap(this.fd, size);
  }

  get bytes(): Uint8Array {
    return new Uint8Array(this.#mapping.buffer);
  }

  /** Pages marked, and clear them (as QEMU's sync does). */
  take(): Set<number> {
    const pages = new Set<number>();
    const b = this.bytes;
    for (let i = 0; i < b.length; i++) {
      const v = Atomics.exchange(b, i, 0);
      for (let k = 0; k < 8; k++) if (v & (1 << k)) pages.add(i * 8 + k);
    }
    return pages;
  }

  close(): void {
    this.#mapping.unmap();
    close(this.fd);
  }
}

function pagesOf(gpa: number, length: number): number[] {
  const out = [];
  const first = Math.floor(gpa / DIRTY_LOG_PAGE_SIZE);
  const last = Math.floor((gpa + length - 1) / DIRTY_LOG_PAGE_SIZE);
  for (let p = first; p <= last; p++) out.push(p);
  return out;
}

/** Frames of distinct sizes and contents (the loopback device looks at none of it). */
function frames(n: number, seed: number): Uint8Array[] {
  return Array.from({ length: n }, (_, i) => {
    const f = new Uint8Array(200 + 37 * i);
    for (let k = 0; k < f.length; k++) f[k] = (k * 7 + (seed + i) * 13) & 0xff;
    return f;
  });
}

/** Start events and stop events of the device, counted. */
function lifecycleCounter(rig: SimRig): { starts: number; stops: number; ringStops: number } {
  const c = { starts: 0, stops: 0, ringStops: 0 };
  rig.device.addListener((e: DeviceEvent) => {
    if (e.type === "start" || e.type === "ring-start") c.starts++;
    if (e.type === "stop") c.stops++;
    if (e.type === "ring-stop") c.ringStops++;
  });
  return c;
}

Deno.test("sim under a migration: the pages it writes are logged, the pages it reads are not, and nothing stops", async () => {
  const rig = await SimRig.create({ options: { mode: "loopback" } });
  const log = new FrontendLog(FULL_LOG_BYTES);
  try {
    assert.ok(rig.device.canLog);
    assert.ok((rig.device.getFeatures() & bit(VHOST_F_LOG_ALL)) !== 0n, "LOG_ALL offered");
    await rig.harness.start();
    const counts = lifecycleCounter(rig);

    // As QEMU starts a migration: the log, then LOG_ALL, then each ring's log flag.
    await rig.device.setLogBase(log.fd, log.size, 0);
    await rig.device.setFeatures(rig.features | bit(VHOST_F_LOG_ALL));
    for (const q of [0, 1]) await rig.harness.logRing(q, true);
    assert.deepEqual(counts, { starts: 0, stops: 0, ringStops: 0 }, "logging stopped nothing");
    assert.equal(rig.device.vring(0).logging, true);
    log.take(); // whatever came before this point

    rig.postRx(0, 8, 2048);
    const rxFirst = rig.alloc(0);
    rig.alloc(2 * DIRTY_LOG_PAGE_SIZE); // keep the frames sent off the receive buffers' pages
    const sent = frames(8, 1);
    const txFirst = rig.alloc(0);
    for (const f of sent) rig.send(0, f);
    const txEnd = rig.alloc(0);
    const got = await rig.receive(0, 8);
    assert.deepEqual(got.map((r) => r.frame), sent, "frames looped back byte-identical");
    await rig.used(1, 8);

    const marked = log.take();
    const written = new Set(
      [...Array(8).keys()].flatMap((i) => pagesOf(rxFirst - 8 * 2048 + i * 2048, 2048)),
    );
    const eventIdx = (rig.features & bit(VirtioFeatureBit.EVENT_IDX)) !== 0n;
    const usedPages = new Set(
      [0, 1].flatMap((q) =>
        pagesOf(rig.rings[q].layout.usedAddr, usedRingSize(rig.rings[q].layout.num, eventIdx))
      ),
    );
    for (const p of written) assert.ok(marked.has(p), `receive buffer page ${p} not logged`);
    for (const p of pagesOf(txFirst, txEnd - txFirst)) {
      if (!usedPages.has(p)) assert.ok(!marked.has(p), `page ${p}, only read, was logged`);
    }
    const extra = [...marked].filter((p) => !written.has(p) && !usedPages.has(p));
    assert.deepEqual(extra, [], "pages logged that the device did not write");
    assert.ok([...usedPages].some((p) => marked.has(p)), "used ring updates logged");

    // Logging off: the device writes on and marks nothing.
    assert.equal(rig.features & bit(VHOST_F_LOG_ALL), 0n, "LOG_ALL acked only for the migration");
    await rig.device.setFeatures(rig.features);
    log.take(); // marks made before the Workers let go of the log (event index updates)
    rig.postRx(0, 2, 2048);
    for (const f of frames(2, 50)) rig.send(0, f);
    await rig.receive(0, 2);
    const after = log.take();
    assert.deepEqual([...after], [], "nothing logged with LOG_ALL off");
    assert.deepEqual(counts, { starts: 0, stops: 0, ringStops: 0 }, "logging off stopped nothing");
  } finally {
    await rig.close();
    log.close();
  }
});

Deno.test("a log replaced during traffic: the new one gets the marks, the old one none", async () => {
  const rig = await SimRig.create({ options: { mode: "loopback" } });
  const first = new FrontendLog(FULL_LOG_BYTES);
  const second = new FrontendLog(FULL_LOG_BYTES + 4096); // a resize, as QEMU makes after hotplug
  try {
    await rig.harness.start();
    await rig.device.setLogBase(first.fd, first.size, 0);
    await rig.device.setFeatures(rig.features | bit(VHOST_F_LOG_ALL));
    rig.postRx(0, 64, 2048);
    // Frames in flight while the log is replaced.
    const sent = frames(32, 7);
    for (const f of sent.slice(0, 16)) rig.send(0, f);
    await rig.device.setLogBase(second.fd, second.size, 0);
    first.take();
    for (const f of sent.slice(16)) rig.send(0, f);
    const got = await rig.receive(0, 32);
    assert.deepEqual(got.map((r) => r.frame), sent);
    assert.equal(first.take().size, 0, "the old log was written after it was replaced");
    assert.ok(second.take().size > 0, "the new log got no marks");
  } finally {
    await rig.close();
    first.close();
    second.close();
  }
});

Deno.test("a ring stopped while logging gets its whole used ring logged", async () => {
  const rig = await SimRig.create({ options: { mode: "loopback" } });
  const log = new FrontendLog(FULL_LOG_BYTES);
  try {
    await rig.harness.start();
    await rig.device.setLogBase(log.fd, log.size, 0);
    await rig.device.setFeatures(rig.features | bit(VHOST_F_LOG_ALL));
    for (const q of [0, 1]) await rig.harness.logRing(q, true);
    log.take();
    const state = await rig.device.getVringBase(1);
    assert.equal(state.index, 1);
    const eventIdx = (rig.features & bit(VirtioFeatureBit.EVENT_IDX)) !== 0n;
    const layout = rig.rings[1].layout;
    const want = pagesOf(layout.usedAddr, usedRingSize(layout.num, eventIdx));
    const marked = log.take();
    for (const p of want) assert.ok(marked.has(p), `used ring page ${p} of ring 1 not logged`);
  } finally {
    await rig.close();
    log.close();
  }
});

Deno.test("a log smaller than guest memory: writes past it are counted and reported, frames still flow", async () => {
  const rig = await SimRig.create({ options: { mode: "loopback" } });
  const log = new FrontendLog(16); // 128 pages: 512 KiB, below every receive buffer
  try {
    await rig.harness.start();
    await rig.device.setLogBase(log.fd, log.size, 0);
    assert.ok(
      rig.warnings.some((w) => /dirty log covers 0x80000 bytes .* writes past the log/.test(w)),
      `no coverage warning in ${JSON.stringify(rig.warnings)}`,
    );
    await rig.device.setFeatures(rig.features | bit(VHOST_F_LOG_ALL));
    rig.postRx(0, 4, 2048);
    const sent = frames(4, 90);
    for (const f of sent) rig.send(0, f);
    const got = await rig.receive(0, 4);
    assert.deepEqual(got.map((r) => r.frame), sent);
    const deadline = Date.now() + 5000;
    while (rig.device.stats()[0].errors === 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 10));
    }
    assert.ok(rig.device.stats()[0].errors >= 1, "writes past the log not counted as errors");
    const until = Date.now() + 5000;
    while (!rig.warnings.some((w) => /past the dirty log/.test(w)) && Date.now() < until) {
      await new Promise((r) => setTimeout(r, 10));
    }
    assert.ok(rig.warnings.some((w) => /write\(s\) past the dirty log's 524288 bytes/.test(w)));
  } finally {
    await rig.close();
    log.close();
  }
});

Deno.test("the deliberately broken sim (log-buffers false) logs used rings but not the frames it delivers", async () => {
  const rig = await SimRig.create({ options: { mode: "loopback", "log-buffers": "false" } });
  const log = new FrontendLog(FULL_LOG_BYTES);
  try {
    await rig.harness.start();
    await rig.device.setLogBase(log.fd, log.size, 0);
    await rig.device.setFeatures(rig.features | bit(VHOST_F_LOG_ALL));
    log.take();
    rig.postRx(0, 4, 4096);
    const rxFirst = rig.alloc(0) - 4 * 4096;
    for (const f of frames(4, 3)) rig.send(0, f);
    await rig.receive(0, 4);
    const marked = log.take();
    for (let i = 0; i < 4; i++) {
      assert.ok(!marked.has(pagesOf(rxFirst + i * 4096, 1)[0]), "broken sim logged a buffer");
    }
    assert.ok(marked.size > 0, "used ring updates still logged");
  } finally {
    await rig.close();
    log.close();
  }
});
