// The dirty-page log: one bit per 4 KiB page, set for every page a write
// touches, shared with the frontend through a memfd.

import assert from "node:assert/strict";
import { DirtyLog } from "../../sdk/memory/mod.ts";
import { close, ftruncate, memfdCreate, mmap } from "../../sdk/sys/mod.ts";

Deno.test("mark: bits of every touched page, and only those", () => {
  const bytes = new Uint8Array(4); // 32 pages
  const log = DirtyLog.fromBytes(bytes);
  assert.equal(log.pages, 32);
  assert.equal(log.mark(0, 1), true);
  assert.deepEqual([...bytes], [0b1, 0, 0, 0]);
  log.mark(0x1fff, 2); // last byte of page 1, first byte of page 2
  assert.deepEqual([...bytes], [0b111, 0, 0, 0]);
  log.mark(0x7000, 0x2000); // pages 7 and 8
  assert.deepEqual([...bytes], [0b1000_0111, 0b1, 0, 0]);
  log.mark(0x1f000, 0x1000); // page 31 exactly
  assert.equal(bytes[3], 0x80);
  assert.equal(log.isDirty(0x1f123), true);
  assert.equal(log.isDirty(0x3000), false);
  assert.equal(log.mark(0x5000, 0), true, "an empty range marks nothing");
  assert.equal(log.isDirty(0x5000), false);
  assert.equal(log.outOfRange, 0);
});

Deno.test("mark: past the end of the log marks what fits and counts", () => {
  const bytes = new Uint8Array(1); // 8 pages
  const log = DirtyLog.fromBytes(bytes);
  assert.equal(log.mark(0x7000, 0x2000), false); // pages 7 and 8
  assert.equal(bytes[0], 0x80);
  assert.equal(log.mark(0x100000, 1), false);
  assert.equal(log.mark(-4096, 1), false);
  assert.equal(log.outOfRange, 3);
  assert.equal(bytes[0], 0x80);
});

Deno.test("map: the frontend sees marks through its own mapping of the log fd", () => {
  const fd = memfdCreate("dirty-log-test", { allowSealing: true });
  ftruncate(fd, 8192);
  const frontend = mmap(fd, 8192);
  const log = DirtyLog.map(fd, 64, 100); // unaligned offset
  try {
    log.mark(3 * 4096, 1);
    assert.equal(new Uint8Array(frontend.buffer)[100], 0b1000);
    assert.equal(log.share().size, 64);
    const view = DirtyLog.fromShared(log.share());
    view.mark(9 * 4096, 4096);
    assert.equal(new Uint8Array(frontend.buffer)[101], 0b10);
  } finally {
    log.close();
    log.close();
    frontend.unmap();
    close(fd);
  }
});

Deno.test("map: a log file that could shrink, is too short, or is too large is refused", () => {
  const unsealable = memfdCreate("dirty-log-unsealable");
  const short = memfdCreate("dirty-log-short", { allowSealing: true });
  try {
    ftruncate(unsealable, 4096);
    ftruncate(short, 4096);
    assert.throws(() => DirtyLog.map(unsealable, 64), /cannot be sealed.*SIGBUS/);
    // Allowed when the frontend is trusted, as for guest memory.
    DirtyLog.map(unsealable, 64, 0, { allowUnsealed: true }).close();
    assert.throws(() => DirtyLog.map(short, 4096, 1), /only 4096 bytes long.*needs 4097/);
    assert.throws(() => DirtyLog.map(short, 2 ** 40), /more than the \d+ bytes/);
    assert.throws(() => DirtyLog.map(short, 0), /not a positive integer/);
  } finally {
    close(unsealable);
    close(short);
  }
});

Deno.test("concurrent writers: four Workers marking while the frontend clears lose no bit", async () => {
  const pages = 8 * (1 << 19);
  const fd = memfdCreate("dirty-log-concurrent", { allowSealing: true });
  ftruncate(fd, pages / 8);
  const frontend = mmap(fd, pages / 8);
  const log = DirtyLog.map(fd, pages / 8);
  const workers: Worker[] = [];
  try {
    const sync = new SharedArrayBuffer(12); // ready, go, done
    const words = new Int32Array(sync);
    const stride = 4;
    for (let index = 0; index < stride; index++) {
      const w = new Worker(new URL("./dirty_log_marker.ts", import.meta.url).href, {
        type: "module",
      });
      workers.push(w);
      // Every byte of the log holds pages of all four Workers, and each page
      // is marked once: a plain read-modify-write would lose bits to a
      // neighbour or to the clearing, and a lost bit is never set again.
      w.postMessage({ log: log.share(), index, stride, sync });
    }
    const deadline = Date.now() + 20_000;
    while (Atomics.load(words, 0) < stride && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 1));
    }
    assert.equal(Atomics.load(words, 0), stride, "the Workers did not start");
    // The frontend fetches and clears whole words while they mark, as QEMU
    // does (it takes 64 bits at a time; 32 here, the same locked exchange).
    const frontWords = new Uint32Array(frontend.buffer);
    const seen = new Uint32Array(pages / 32);
    const collect = (): boolean => {
      let found = false;
      for (let i = 0; i < frontWords.length; i++) {
        const v = Atomics.exchange(frontWords, i, 0);
        if (v === 0) continue;
        found = true;
        seen[i] |= v;
      }
      return found;
    };
    Atomics.store(words, 1, 1);
    Atomics.notify(words, 1);
    let clearedWhileMarking = 0;
    while (Atomics.load(words, 2) < stride && Date.now() < deadline) {
      if (collect()) clearedWhileMarking++;
    }
    assert.equal(Atomics.load(words, 2), stride, "the Workers did not finish");
    collect();
    assert.ok(clearedWhileMarking > 1, "the frontend never cleared while the Workers marked");
    const missing = [];
    for (let p = 0; p < pages; p++) if ((seen[p >> 5] & (1 << (p & 31))) === 0) missing.push(p);
    assert.deepEqual(missing.slice(0, 10), [], `${missing.length} pages never seen marked`);
  } finally {
    for (const w of workers) w.terminate();
    log.close();
    frontend.unmap();
    close(fd);
  }
});
