// memfd, mmap and Mapping: shared bytes between two mappings, views by
// address, detaching on unmap, and the error paths.

import assert from "node:assert/strict";
import {
  close,
  eventfd,
  fstat,
  ftruncate,
  Mapping,
  memfdCreate,
  mmap,
  mmapAnonymous,
  pageSize,
  pointerOf,
  PROT_READ,
  S_IFMT,
  S_IFREG,
  SysError,
  viewOf,
} from "@vhost-mdev/sdk/sys";

const isSysError = (syscall: string, code: string) => (e: unknown) =>
  e instanceof SysError && e.syscall === syscall && e.code === code;

Deno.test("two mappings of one memfd share bytes; unmap detaches and is idempotent", () => {
  const fd = memfdCreate("shared", { allowSealing: true });
  try {
    ftruncate(fd, 3 * pageSize());
    const st = fstat(fd);
    assert.equal(st.size, 3 * pageSize());
    assert.equal(st.mode & S_IFMT, S_IFREG);
    const a = mmap(fd, 3 * pageSize());
    const b = mmap(fd, pageSize(), { offset: 2 * pageSize() });
    assert.notEqual(a.address, b.address);
    assert.equal(a.buffer.byteLength, 3 * pageSize());
    const aBytes = new Uint8Array(a.buffer);
    const bView = new DataView(b.buffer);
    aBytes.set([0xde, 0xad, 0xbe, 0xef], 2 * pageSize() + 8);
    assert.equal(bView.getUint32(8, false), 0xdeadbeef);
    bView.setUint16(pageSize() - 2, 0x1234, true);
    assert.deepEqual([...aBytes.subarray(3 * pageSize() - 2)], [0x34, 0x12]);

    // A view rebuilt from the address (as a Worker would) sees the same bytes.
    const again = new Uint8Array(viewOf(a.address + 2 * pageSize() + 8, 4));
    assert.deepEqual([...again], [0xde, 0xad, 0xbe, 0xef]);
    assert.equal(pointerOf(aBytes.subarray(100)), a.address + 100);

    a.unmap();
    assert.equal(a.closed, true);
    assert.equal(a.buffer.byteLength, 0);
    assert.equal(aBytes.length, 0); // old views read as empty, not unmapped memory
    a.unmap();
    b.unmap();
  } finally {
    close(fd);
  }
});

Deno.test("anonymous mappings are zeroed, private, and disposable", () => {
  let kept: Mapping | undefined;
  {
    using m = mmapAnonymous(1 << 20);
    kept = m;
    const words = new Uint32Array(m.buffer);
    assert.equal(words[words.length - 1], 0);
    words[words.length - 1] = 0xffffffff;
    assert.equal(new DataView(m.buffer).getUint32((1 << 20) - 4, true), 0xffffffff);
  }
  assert.equal(kept.closed, true);
});

Deno.test("mmap and ftruncate errors", () => {
  const fd = memfdCreate("errors");
  const efd = eventfd();
  try {
    ftruncate(fd, pageSize());
    assert.throws(() => mmap(fd, 0), isSysError("mmap", "EINVAL"));
    assert.throws(() => mmap(fd, pageSize(), { offset: 1 }), isSysError("mmap", "EINVAL"));
    assert.throws(() => mmap(1 << 20, pageSize()), isSysError("mmap", "EBADF"));
    assert.throws(() => mmap(efd, pageSize()), isSysError("mmap", "ENODEV"));
    assert.throws(() => ftruncate(fd, -1), isSysError("ftruncate", "EINVAL"));
    // Read-only mapping of a read-write fd is allowed.
    const ro = mmap(fd, pageSize(), { prot: PROT_READ });
    assert.equal(new Uint8Array(ro.buffer)[0], 0);
    ro.unmap();
  } finally {
    close(fd);
    close(efd);
  }
});
