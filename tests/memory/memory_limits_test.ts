// What a hostile frontend can do with its memory table, refused or contained:
// regions far into a sparse file map only their own pages; files the frontend
// could shrink (SIGBUS) are refused unless the operator opts in, and files that
// still accept seals are sealed; a lease keeps memory mapped for a Worker after
// its table is gone; tables and the process have byte limits.

import assert from "node:assert/strict";
import {
  GuestMemory,
  GuestMemoryError,
  mappedGuestBytes,
  PROCESS_MAPPED_BYTES_LIMIT,
} from "../../sdk/memory/mod.ts";
import {
  close,
  F_SEAL_SHRINK,
  ftruncate,
  getSeals,
  memfdCreate,
  O_CLOEXEC,
  O_RDONLY,
  open,
  SysError,
} from "../../sdk/sys/mod.ts";

const KiB = 1024;
const TiB = 2 ** 40;

/** This process's mapped address space, from /proc/self/status. */
function vmSizeBytes(): number {
  const line = Deno.readTextFileSync("/proc/self/status").split("\n").find((l) =>
    l.startsWith("VmSize:")
  )!;
  return Number(line.split(/\s+/)[1]) * 1024;
}

function memfd(name: string, size: number, allowSealing = true): number {
  const fd = memfdCreate(name, { allowSealing });
  ftruncate(fd, size);
  return fd;
}

function refused(fn: () => unknown, ...parts: (string | RegExp)[]): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof GuestMemoryError, `expected GuestMemoryError, got ${e}`);
    for (const p of parts) {
      if (typeof p === "string") assert.ok(e.message.includes(p), `"${e.message}" lacks "${p}"`);
      else assert.match(e.message, p);
    }
    return true;
  });
}

Deno.test("a 4 KiB region at offset 2^45 of a sparse memfd maps one page, not 32 TiB", () => {
  const offset = 2 ** 45 + 100; // not page aligned either
  const fd = memfd("sparse", offset + 2 * 4 * KiB);
  try {
    const before = vmSizeBytes();
    const m = GuestMemory.map([{
      gpa: 0x1000,
      size: 4 * KiB,
      uva: 0x1000,
      mmapOffset: offset,
      fd,
    }]);
    const grown = vmSizeBytes() - before;
    assert.ok(grown < 1 << 20, `VmSize grew by ${grown} bytes`);
    m.bytes(0x1000, 4).set([1, 2, 3, 4]);
    m.bytes(0x1000 + 4 * KiB - 1, 1)[0] = 9;
    m.close();
    assert.equal(vmSizeBytes() - before < 1 << 20, true);
  } finally {
    close(fd);
  }
});

Deno.test("the bytes at an unaligned offset are the file's bytes at that offset", () => {
  const fd = memfd("offset", 64 * KiB);
  try {
    const writer = GuestMemory.map([{ gpa: 0, size: 64 * KiB, uva: 0, mmapOffset: 0, fd }]);
    writer.bytes(5 * KiB + 3, 3).set([7, 8, 9]);
    const m = GuestMemory.map([{
      gpa: 0x10000,
      size: 8 * KiB,
      uva: 0x10000,
      mmapOffset: 5 * KiB + 3,
      fd,
    }]);
    assert.deepEqual([...m.bytes(0x10000, 3)], [7, 8, 9]);
    m.close();
    writer.close();
  } finally {
    close(fd);
  }
});

Deno.test("a memfd that accepts seals is sealed against shrinking when mapped", () => {
  const fd = memfd("sealable", 64 * KiB);
  try {
    assert.equal(getSeals(fd)! & F_SEAL_SHRINK, 0);
    const m = GuestMemory.map([{ gpa: 0, size: 64 * KiB, uva: 0, mmapOffset: 0, fd }]);
    assert.equal(getSeals(fd)! & F_SEAL_SHRINK, F_SEAL_SHRINK);
    // The frontend can no longer take the pages away under this process.
    assert.throws(
      () => ftruncate(fd, 0),
      (e: unknown) => e instanceof SysError && e.code === "EPERM",
    );
    m.bytes(60 * KiB, 1)[0] = 1;
    m.close();
  } finally {
    close(fd);
  }
});

Deno.test("a memfd that can never be sealed is refused, naming the fix; allowUnsealed opts in", () => {
  const fd = memfd("unsealable", 64 * KiB, false);
  try {
    const spec = [{ gpa: 0, size: 64 * KiB, uva: 0, mmapOffset: 0, fd }];
    refused(() => GuestMemory.map(spec), "F_SEAL_SHRINK", "--allow-unsealed-memory", "SIGBUS");
    const m = GuestMemory.map(spec, { allowUnsealed: true });
    m.close();
  } finally {
    close(fd);
  }
});

Deno.test("files that are not memory files are refused", () => {
  const fd = open("/dev/zero", O_RDONLY | O_CLOEXEC);
  try {
    refused(
      () => GuestMemory.map([{ gpa: 0, size: 4 * KiB, uva: 0, mmapOffset: 0, fd }]),
      "not a memory file",
      "/dev/zero",
    );
    refused(
      () =>
        GuestMemory.map([{ gpa: 0, size: 4 * KiB, uva: 0, mmapOffset: 0, fd }], {
          allowUnsealed: true,
        }),
      "not a memory file",
    );
  } finally {
    close(fd);
  }
});

Deno.test("table and process byte limits", () => {
  const fd = memfd("limits", 2 * TiB);
  try {
    refused(
      () =>
        GuestMemory.map([{ gpa: 0, size: 2 * TiB, uva: 0, mmapOffset: 0, fd }], {
          maxBytes: TiB,
        }),
      "limit",
      "maxMemoryBytes",
    );
    // The process limit is far above what a test can map, but it is enforced
    // before mmap: a table that would pass it is refused with the numbers.
    assert.ok(PROCESS_MAPPED_BYTES_LIMIT <= 64 * TiB);
    const before = mappedGuestBytes();
    const m = GuestMemory.map([{ gpa: 0, size: 2 * TiB, uva: 0, mmapOffset: 0, fd }]);
    assert.equal(mappedGuestBytes() - before, 2 * TiB);
    m.close();
    assert.equal(mappedGuestBytes(), before);
  } finally {
    close(fd);
  }
});

Deno.test("with(): the same addresses over another file overlap; findIdentical knows the file", () => {
  const a = memfd("a", 64 * KiB), b = memfd("b", 64 * KiB);
  try {
    const spec = { gpa: 0x10000, size: 64 * KiB, uva: 0x7000_0000, mmapOffset: 0 };
    const m = GuestMemory.map([{ ...spec, fd: a }]);
    assert.equal(m.findIdentical({ ...spec, fd: a }), 0);
    assert.equal(m.findIdentical({ ...spec, fd: b }), -1, "another file");
    assert.equal(m.findIdentical({ ...spec, fd: a, mmapOffset: 4096 }), -1, "another offset");
    refused(() => m.with({ ...spec, fd: b }), "overlaps");
    m.close();
  } finally {
    close(a);
    close(b);
  }
});

Deno.test("a lease keeps the mappings after the table is closed, until released", () => {
  const fd = memfd("leased", 64 * KiB);
  const maps = () =>
    Deno.readTextFileSync("/proc/self/maps").split("\n").filter((l) => l.includes("/memfd:leased "))
      .length;
  try {
    const m = GuestMemory.map([{ gpa: 0, size: 64 * KiB, uva: 0, mmapOffset: 0, fd }]);
    const lease = m.lease();
    m.close();
    assert.equal(maps(), 1, "still mapped for the lease holder");
    const view = GuestMemory.fromShared(lease.regions);
    view.bytes(100, 1)[0] = 42;
    lease.release();
    lease.release(); // idempotent
    assert.equal(maps(), 0);
  } finally {
    close(fd);
  }
});
