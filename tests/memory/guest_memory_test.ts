// The guest memory table: every translation edge, refused tables, real memfd
// mappings seen through a second mapping, and reference-counted ownership
// across with/without with no mapping or fd left behind.

import assert from "node:assert/strict";
import { GuestMemory, GuestMemoryError, Iotlb, TranslationFault } from "../../sdk/memory/mod.ts";
import { IotlbAccess } from "../../sdk/uapi/vhost.ts";
import { close, ftruncate, memfdCreate, mmap, openFdCount } from "../../sdk/sys/mod.ts";

const KiB = 1024;

/** Two adjacent regions (0x10000..0x12000, 0x12000..0x13000) and one apart (0x20000..0x21000). */
function threeRegions(): GuestMemory {
  return GuestMemory.fromBuffers([
    { gpa: 0x10000, uva: 0x7000_0000_0000, bytes: new Uint8Array(8 * KiB) },
    { gpa: 0x12000, uva: 0x7000_0000_2000, bytes: new Uint8Array(4 * KiB) },
    { gpa: 0x20000, uva: 0x7100_0000_0000, bytes: new Uint8Array(4 * KiB) },
  ]);
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

/** Lines of /proc/self/maps that map the memfd called `name`. */
function mapsOf(name: string): number {
  return Deno.readTextFileSync("/proc/self/maps").split("\n").filter((l) =>
    l.includes(`/memfd:${name} `)
  )
    .length;
}

function memfd(name: string, size: number): number {
  const fd = memfdCreate(name, { allowSealing: true });
  ftruncate(fd, size);
  return fd;
}

Deno.test("find: first byte, last byte, one past the end, crossing, outside", () => {
  const m = threeRegions();
  assert.equal(m.find(0x10000, 1), 0);
  assert.equal(m.find(0x11fff, 1), 0);
  assert.equal(m.find(0x10000, 8 * KiB), 0);
  assert.equal(m.find(0x10000, 8 * KiB + 1), -1, "one byte too long");
  assert.equal(m.find(0x12000, 1), 1, "first byte of the adjacent region");
  assert.equal(m.find(0x11fff, 2), -1, "crossing two adjacent regions");
  assert.equal(m.find(0x12fff, 1), 1);
  assert.equal(m.find(0x13000, 1), -1, "one past the end of region 1");
  assert.equal(m.find(0xffff, 1), -1, "one before the first region");
  assert.equal(m.find(0x20800, 0), 2, "empty range inside a region");
  assert.equal(m.find(0x21000, 0), -1, "empty range one past the end");
  assert.equal(m.find(0x30000, 4), -1);
  assert.equal(m.find(2 ** 60, 1), -1);
  assert.equal(m.find(0x10000, -1), -1);
  assert.equal(m.find(NaN, 1), -1);
});

Deno.test("bytes: views the right bytes, and refuses with gpa, length and reason", () => {
  const m = threeRegions();
  m.bytes(0x10000, 1)[0] = 0xaa;
  m.bytes(0x11fff, 1)[0] = 0xbb;
  m.bytes(0x12000, 1)[0] = 0xcc;
  assert.equal(m.regions[0].bytes[0], 0xaa);
  assert.equal(m.regions[0].bytes[8 * KiB - 1], 0xbb);
  assert.equal(m.regions[1].bytes[0], 0xcc);
  assert.equal(m.bytes(0x12000, 4 * KiB).length, 4 * KiB);
  refused(() => m.bytes(0x13000, 1), "gpa 0x13000", "length 1", "not inside any region");
  refused(
    () => m.bytes(0x12fff, 2),
    "gpa 0x12fff",
    "length 2",
    "1 byte(s) past the end of region 1",
  );
  refused(() => m.bytes(0x11ff0, 0x20), "gpa 0x11ff0", "length 32", "crossing into region 1");
  refused(() => m.bytes(0x40000, 16), "gpa 0x40000", "not inside any region");
  refused(() => m.bytes(-1, 1), "not a non-negative safe integer");
  refused(() => m.bytes(0x10000, 1.5), "length is not");
  refused(() => m.hostAddress(0x21000, 1), "gpa 0x21000", "not inside any region");
});

Deno.test("uvaToGpa: translation and its edges", () => {
  const m = threeRegions();
  assert.equal(m.uvaToGpa(0x7000_0000_0000, 16), 0x10000);
  assert.equal(m.uvaToGpa(0x7000_0000_1fff, 1), 0x11fff);
  assert.equal(m.uvaToGpa(0x7000_0000_2000, 4 * KiB), 0x12000);
  assert.equal(m.uvaToGpa(0x7100_0000_0ff0, 16), 0x20ff0);
  refused(
    () => m.uvaToGpa(0x7100_0000_1000, 1),
    "uva 0x710000001000",
    "length 1",
    "not inside any region",
  );
  refused(
    () => m.uvaToGpa(0x7000_0000_1ff8, 16),
    "uva 0x700000001ff8",
    "length 16",
    "crossing into region 1",
  );
  refused(() => m.uvaToGpa(0x7100_0000_0ff8, 16), "8 byte(s) past the end of region 2");
});

Deno.test("tables refused: overlaps in either space, zero size, ends past 2^53", () => {
  const b = (n: number) => new Uint8Array(n);
  refused(
    () =>
      GuestMemory.fromBuffers([{ gpa: 0, bytes: b(4096) }, {
        gpa: 4095,
        uva: 1 << 20,
        bytes: b(16),
      }]),
    "overlaps",
    "guest-physical",
  );
  refused(
    () =>
      GuestMemory.fromBuffers([{ gpa: 0, uva: 0x1000, bytes: b(4096) }, {
        gpa: 0x8000,
        uva: 0x1800,
        bytes: b(16),
      }]),
    "overlaps",
    "frontend address space",
  );
  refused(() => GuestMemory.fromBuffers([{ gpa: 0, bytes: b(0) }]), "size is 0");
  refused(
    () => GuestMemory.fromBuffers([{ gpa: Number.MAX_SAFE_INTEGER - 10, bytes: b(16) }]),
    "beyond 2^53",
  );
  refused(() => GuestMemory.map([{ gpa: 0, size: 4096, uva: -5, mmapOffset: 0, fd: 0 }]), "uva -5");
  // Adjacent (touching) regions are fine.
  GuestMemory.fromBuffers([{ gpa: 0, bytes: b(4096) }, { gpa: 4096, uva: 4096, bytes: b(4096) }])
    .close();
});

Deno.test("map: a memfd at an unaligned offset, seen through another mapping", () => {
  const name = "gm-map-test";
  const fd = memfd(name, 64 * KiB);
  const other = mmap(fd, 64 * KiB);
  const offset = 0x1234;
  const m = GuestMemory.map([{
    gpa: 0x100000,
    size: 32 * KiB,
    uva: 0x5555_0000_0000,
    mmapOffset: offset,
    fd,
  }]);
  try {
    const raw = new Uint8Array(other.buffer);
    raw[offset] = 0x11;
    raw[offset + 32 * KiB - 1] = 0x22;
    assert.equal(
      m.bytes(0x100000, 1)[0],
      0x11,
      "first byte of the region is the file's byte at mmapOffset",
    );
    assert.equal(m.bytes(0x100000 + 32 * KiB - 1, 1)[0], 0x22, "last byte");
    m.bytes(0x100010, 4).set([1, 2, 3, 4]);
    assert.deepEqual([...raw.subarray(offset + 0x10, offset + 0x14)], [1, 2, 3, 4]);
    assert.equal(m.hostAddress(0x100000, 1), m.regions[0].address);
    assert.equal(m.hostAddress(0x100010, 4) - m.regions[0].address, 0x10);
    assert.equal(m.uvaToGpa(0x5555_0000_0010, 4), 0x100010);
    refused(() => m.bytes(0x100000 + 32 * KiB, 1), "not inside any region");
  } finally {
    m.close();
    other.unmap();
    close(fd);
  }
  assert.equal(mapsOf(name), 0);
});

Deno.test("map: a file shorter than the region is refused (no SIGBUS later)", () => {
  const name = "gm-short";
  const fd = memfd(name, 4096);
  try {
    refused(
      () => GuestMemory.map([{ gpa: 0, size: 8192, uva: 0, mmapOffset: 0, fd }]),
      "fd " + fd,
      "only 4096 bytes long",
    );
    refused(
      () => GuestMemory.map([{ gpa: 0, size: 4096, uva: 0, mmapOffset: 1, fd }]),
      "needs 4097",
    );
    assert.equal(mapsOf(name), 0);
  } finally {
    close(fd);
  }
});

Deno.test("map: a failure part way unmaps what was mapped", () => {
  const name = "gm-partial";
  const good = memfd(name, 8192);
  const fdsBefore = openFdCount();
  try {
    assert.throws(() =>
      GuestMemory.map([
        { gpa: 0, size: 8192, uva: 0, mmapOffset: 0, fd: good },
        { gpa: 0x10000, size: 4096, uva: 0x10000, mmapOffset: 0, fd: 1_000_000 },
      ])
    );
    assert.equal(mapsOf(name), 0, "the first region's mapping was undone");
    assert.equal(openFdCount(), fdsBefore);
  } finally {
    close(good);
  }
});

Deno.test("with/without: reference-counted mappings, nothing leaked after close", () => {
  const fdsBefore = openFdCount();
  const a = memfd("gm-own-a", 8192), b = memfd("gm-own-b", 4096);
  const m1 = GuestMemory.map([{ gpa: 0, size: 8192, uva: 0x1000_0000, mmapOffset: 0, fd: a }]);
  m1.bytes(0, 1)[0] = 7;
  refused(
    () => m1.with({ gpa: 0x1000, size: 4096, uva: 0x2000_0000, mmapOffset: 0, fd: b }),
    "overlaps",
  );
  assert.equal(mapsOf("gm-own-b"), 0, "a refused region is not mapped");
  const m2 = m1.with({ gpa: 0x10000, size: 4096, uva: 0x2000_0000, mmapOffset: 0, fd: b });
  assert.equal(m2.regions.length, 2);
  m1.close();
  m1.close(); // idempotent
  assert.equal(mapsOf("gm-own-a"), 1, "region a is still held by the new table");
  assert.equal(m2.bytes(0, 1)[0], 7);
  refused(() => m1.bytes(0, 1), "closed");
  assert.equal(m1.find(0, 1), -1);

  refused(() => m2.without(0, 4096), "no region at gpa 0x0 with size 0x1000");
  const m3 = m2.without(0, 8192);
  assert.equal(m3.regions.length, 1);
  assert.equal(m3.find(0, 1), -1);
  assert.equal(m3.find(0x10000, 1), 0);
  assert.equal(mapsOf("gm-own-a"), 1, "removed region stays mapped until the old table closes");
  m2.close();
  assert.equal(mapsOf("gm-own-a"), 0);
  assert.equal(mapsOf("gm-own-b"), 1);
  m3.close();
  assert.equal(mapsOf("gm-own-b"), 0);
  close(a);
  close(b);
  assert.equal(openFdCount(), fdsBefore, "the table never keeps or closes fds");
});

Deno.test("map/close cycles leave /proc/self/fd and /proc/self/maps as they were", () => {
  const fd = memfd("gm-cycle", 1 << 20);
  const fdsBefore = openFdCount();
  try {
    for (let i = 0; i < 50; i++) {
      const m = GuestMemory.map([
        { gpa: 0, size: 1 << 19, uva: 0, mmapOffset: 0, fd },
        { gpa: 1 << 20, size: 1 << 19, uva: 1 << 20, mmapOffset: 1 << 19, fd },
      ]);
      m.bytes((1 << 20) + 5, 1)[0] = i;
      m.close();
    }
    assert.equal(mapsOf("gm-cycle"), 0);
    assert.equal(openFdCount(), fdsBefore);
  } finally {
    close(fd);
  }
});

Deno.test("share/fromShared: a second view of the same bytes that owns nothing", () => {
  const fd = memfd("gm-share", 8192);
  const m = GuestMemory.map([{ gpa: 0x4000, size: 8192, uva: 0x9000, mmapOffset: 0, fd }]);
  try {
    const shared = m.share();
    assert.deepEqual(shared, [{
      gpa: 0x4000,
      size: 8192,
      uva: 0x9000,
      address: m.regions[0].address,
    }]);
    const view = GuestMemory.fromShared(shared);
    m.bytes(0x5000, 1)[0] = 99;
    assert.equal(view.bytes(0x5000, 1)[0], 99);
    view.close();
    assert.equal(mapsOf("gm-share"), 1, "closing the view unmaps nothing");
    assert.equal(m.bytes(0x5000, 1)[0], 99);
  } finally {
    m.close();
    close(fd);
  }
  assert.equal(mapsOf("gm-share"), 0);
  const buffers = GuestMemory.fromBuffers([{ gpa: 0, bytes: new Uint8Array(16) }]);
  refused(() => buffers.share(), "JavaScript buffer");
  refused(() => GuestMemory.empty().bytes(0, 1), "the table is empty");
});

Deno.test("translateWhole: a range over two IOTLB entries contiguous in host memory is one range; moved, missing or not permitted it is not", () => {
  const memory = GuestMemory.fromBuffers([
    { gpa: 0, uva: 0x10000, bytes: new Uint8Array(0x10000) },
  ]);
  const iotlb = new Iotlb();
  memory.useIotlb(iotlb);
  iotlb.update({ iova: 0x100000, size: 0x1000, uaddr: 0x12000, perm: IotlbAccess.READ });
  iotlb.update({ iova: 0x101000, size: 0x1000, uaddr: 0x13000, perm: IotlbAccess.READ });
  // translate stops at the entry's end; translateWhole goes on into the next.
  assert.equal(memory.translate(0x100ff0, 32, IotlbAccess.READ), 0);
  assert.equal(memory.span, 16);
  assert.equal(memory.translateWhole(0x100ff0, 32, IotlbAccess.READ), 0);
  assert.equal(memory.offset, 0x2ff0);
  assert.equal(memory.span, 32);
  // The second page moved elsewhere in host memory: not one range.
  iotlb.update({ iova: 0x101000, size: 0x1000, uaddr: 0x15000, perm: IotlbAccess.READ });
  assert.equal(memory.translateWhole(0x100ff0, 32, IotlbAccess.READ), -1);
  assert.equal(memory.fault, TranslationFault.OUTSIDE);
  // Taken back: a miss, at the first byte without a translation.
  iotlb.invalidate(0x101000, 0x1000);
  assert.equal(memory.translateWhole(0x100ff0, 32, IotlbAccess.READ), -1);
  assert.equal(memory.fault, TranslationFault.MISS);
  assert.equal(memory.missAddress, 0x101000);
  // Read-only: no write.
  assert.equal(memory.translateWhole(0x100ff0, 16, IotlbAccess.WRITE), -1);
  assert.equal(memory.fault, TranslationFault.DENIED);
  memory.close();
});
