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
