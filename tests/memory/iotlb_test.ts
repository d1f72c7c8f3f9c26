// The device IOTLB: translations with their permissions, overlapping
// updates, every shape of invalidation, a bounded table, a bounded miss
// queue, a reference model under random operations, and lock-free readers
// on another thread that never see a torn translation.

import assert from "node:assert/strict";
import fc from "fast-check";
import { Iotlb, type IotlbEntry, IotlbView, MISS_QUEUE_SLOTS } from "../../sdk/memory/iotlb.ts";
import { IotlbAccess } from "../../sdk/uapi/vhost.ts";
import type { ReaderResult, ReaderSetup } from "./iotlb_reader_worker.ts";

const R = IotlbAccess.READ, W = IotlbAccess.WRITE, RW = IotlbAccess.READ_WRITE;
const PAGE = 0x1000;
const U = 0x7f00_0000_0000;

function entry(iova: number, size: number, uaddr: number, perm: number): IotlbEntry {
  return { iova, size, uaddr, perm };
}

/** A table holding `entries`, each added in turn (none may overlap or be evicted). */
function table(entries: IotlbEntry[], capacity = 64): Iotlb {
  const t = new Iotlb({ capacity });
  for (const e of entries) assert.deepEqual(t.update(e), [], "setup entries are disjoint");
  return t;
}

// ---------------------------------------------------------------------------
// Translation

Deno.test("translate: an address inside an entry is its uaddr plus the offset; span runs to the entry's end", () => {
  const t = table([entry(0x1000, 0x2000, U, RW)]);
  assert.equal(t.translate(0x1000, R), U);
  assert.equal(t.span, 0x2000, "from the first byte: the whole entry");
  assert.equal(t.translate(0x1800, W), U + 0x800);
  assert.equal(t.span, 0x1800);
  assert.equal(t.translate(0x2fff, RW), U + 0x1fff);
  assert.equal(t.span, 1, "the last byte");
});

Deno.test("translate: an address no entry holds is a miss (-1), span 0", () => {
  const empty = new Iotlb();
  assert.equal(empty.translate(0, R), -1, "an empty table");
  const t = table([entry(0x1000, 0x2000, U, RW)]);
  assert.equal(t.translate(0x1000, R), U);
  assert.equal(t.translate(0x3000, R), -1, "one past the end");
  assert.equal(t.span, 0, "a miss leaves no span behind");
  assert.equal(t.translate(0xfff, R), -1, "one before the start");
  assert.equal(t.translate(0, RW), -1);
  assert.equal(t.translate(2 ** 52, R), -1);
});

Deno.test("translate: an entry without the needed permission is -2; READ_WRITE satisfies both", () => {
  const t = table([
    entry(0x1000, PAGE, 0xa000, R),
    entry(0x3000, PAGE, 0xb000, W),
    entry(0x5000, PAGE, 0xc000, RW),
  ]);
  // Read-only.
  assert.equal(t.translate(0x1010, R), 0xa010);
  assert.equal(t.translate(0x1010, W), -2);
  assert.equal(t.span, 0, "a refused access has no span");
  assert.equal(t.translate(0x1010, RW), -2, "read and write needs both");
  // Write-only.
  assert.equal(t.translate(0x3020, W), 0xb020);
  assert.equal(t.translate(0x3020, R), -2);
  assert.equal(t.translate(0x3020, RW), -2);
  // Both.
  assert.equal(t.translate(0x5030, R), 0xc030);
  assert.equal(t.translate(0x5030, W), 0xc030);
  assert.equal(t.translate(0x5030, RW), 0xc030);
});

Deno.test("translateRange: crosses adjacent entries only when their uaddrs are contiguous; a hole is -1, a permission fault -2", () => {
  const t = table([
    entry(0x10000, PAGE, 0xa0000, RW), // a
    entry(0x11000, PAGE, 0xa1000, RW), // b: continues a in the frontend too
    entry(0x12000, PAGE, 0xc0000, RW), // c: adjacent to b in IOVA, not in uaddr
    // hole at 0x13000..0x14000
    entry(0x14000, PAGE, 0xd0000, RW), // d
    entry(0x15000, PAGE, 0xd1000, R), // e: continues d, read-only
  ]);
  assert.equal(t.translateRange(0x10800, 0x1000, R), 0xa0800, "a -> b, contiguous");
  assert.equal(t.translateRange(0x10000, 0x2000, RW), 0xa0000, "all of a and b");
  assert.equal(t.translateRange(0x10000, 0x1000, RW), 0xa0000, "within a");
  assert.equal(t.translateRange(0x11800, 0x1000, R), -1, "b -> c: not contiguous");
  assert.equal(t.translateRange(0x10000, 0x2001, R), -1, "one byte into c");
  assert.equal(t.translateRange(0x12800, 0x1000, R), -1, "c -> the hole");
  assert.equal(t.translateRange(0x13800, 0x100, R), -1, "starts in the hole");
  assert.equal(t.translateRange(0x14800, 0x1000, R), 0xd0800, "d -> e for reading");
  assert.equal(t.translateRange(0x14800, 0x1000, W), -2, "d -> e for writing: e is read-only");
  assert.equal(t.translateRange(0x14000, 0x1000, W), 0xd0000, "all of d for writing");
  assert.equal(t.translateRange(0x15000, 0x100, W), -2, "starts in the read-only entry");
  assert.equal(t.translateRange(0x15800, 0x1000, R), -1, "runs off the end of e");
});

// ---------------------------------------------------------------------------
// Updates

Deno.test("update: a new entry removes every entry it overlaps, whole, and returns them; the new one wins", () => {
  const a = entry(0x1000, 0x2000, 0xa000, R);
  const b = entry(0x4000, 0x1000, 0xb000, RW);
  const c = entry(0x6000, 0x1000, 0xc000, RW);
  const t = table([a, b, c]);
  const n = entry(0x2000, 0x2800, 0x90000, W); // 0x2000..0x4800: tail of a, head of b
  assert.deepEqual(t.update(n), [a, b]);
  assert.deepEqual(t.list(), [n, c]);
  assert.equal(t.translate(0x1000, R), -1, "a's head went too: removed whole, not cut");
  assert.equal(t.translate(0x2000, W), 0x90000);
  assert.equal(t.translate(0x3000, R), -2, "the new entry's permissions, not a's");
  assert.equal(t.translate(0x47ff, W), 0x927ff);
  assert.equal(t.translate(0x4800, RW), -1, "b's tail went too");
  assert.equal(t.translate(0x6000, R), 0xc000);

  const c2 = entry(0x6000, 0x1000, 0xcc000, R);
  assert.deepEqual(t.update(c2), [c], "the same range again replaces it");
  assert.equal(t.translate(0x6000, R), 0xcc000);
  assert.deepEqual(
    t.update(entry(0x7000, 0x1000, 0xd000, R)),
    [],
    "merely adjacent: nothing leaves",
  );
  assert.deepEqual(t.update(entry(0x1000, 0x1000, 0xe000, R)), [], "adjacent on the left");
  assert.deepEqual(t.list().map((e) => e.iova), [0x1000, 0x2000, 0x6000, 0x7000]);
});

Deno.test("update: entries stay sorted by IOVA whatever order they come in", () => {
  const t = table([
    entry(0x5000, PAGE, 0x5, R),
    entry(0x1000, PAGE, 0x1, R),
    entry(0x9000, PAGE, 0x9, R),
    entry(0x3000, PAGE, 0x3, R),
  ]);
  assert.deepEqual(t.list().map((e) => e.iova), [0x1000, 0x3000, 0x5000, 0x9000]);
  assert.equal(t.size, 4);
  for (const iova of [0x1000, 0x3000, 0x5000, 0x9000]) {
    assert.equal(t.translate(iova + 7, R), iova / 0x1000 + 7);
  }
});

// ---------------------------------------------------------------------------
// Invalidations

Deno.test("invalidate: exactly one entry's range removes it; again, nothing", () => {
  const e = entry(0x1000, 0x1000, U, RW);
  const t = table([e, entry(0x2000, 0x1000, U + 0x1000, RW)]);
  assert.deepEqual(t.invalidate(0x1000, 0x1000), [e]);
  assert.deepEqual(t.list(), [entry(0x2000, 0x1000, U + 0x1000, RW)], "the neighbour stays");
  assert.deepEqual(t.invalidate(0x1000, 0x1000), []);
  assert.equal(t.translate(0x1000, R), -1);
});

Deno.test("invalidate: the left end of an entry keeps its right part, with the uaddr moved along", () => {
  const e = entry(0x1000, 0x3000, U, W);
  const t = table([e]);
  assert.deepEqual(t.invalidateDetailed(0x1000, 0x1000), {
    removed: [e],
    kept: [entry(0x2000, 0x2000, U + 0x1000, W)],
  });
  assert.deepEqual(t.list(), [entry(0x2000, 0x2000, U + 0x1000, W)]);
  assert.equal(t.translate(0x1fff, W), -1);
  assert.equal(t.translate(0x2000, W), U + 0x1000);

  // Starting before the entry: the same cut.
  const t2 = table([e]);
  assert.deepEqual(t2.invalidate(0, 0x2000), [e], "returns the entry whole");
  assert.deepEqual(t2.list(), [entry(0x2000, 0x2000, U + 0x1000, W)]);
});

Deno.test("invalidate: the right end of an entry keeps its left part", () => {
  const e = entry(0x1000, 0x3000, U, R);
  const t = table([e]);
  assert.deepEqual(t.invalidateDetailed(0x3000, 0x1000), {
    removed: [e],
    kept: [entry(0x1000, 0x2000, U, R)],
  });
  assert.deepEqual(t.list(), [entry(0x1000, 0x2000, U, R)]);
  assert.equal(t.translate(0x2fff, R), U + 0x1fff);
  assert.equal(t.span, 1);
  assert.equal(t.translate(0x3000, R), -1);

  // Running past the entry: the same cut.
  const t2 = table([e]);
  assert.deepEqual(t2.invalidate(0x3000, 0x5000), [e]);
  assert.deepEqual(t2.list(), [entry(0x1000, 0x2000, U, R)]);
});

Deno.test("invalidate: the middle of an entry splits it into two kept parts with their own uaddrs", () => {
  const e = entry(0x1000, 0x4000, U, RW);
  const t = table([e]);
  const left = entry(0x1000, 0x1000, U, RW);
  const right = entry(0x3000, 0x2000, U + 0x2000, RW);
  assert.deepEqual(t.invalidateDetailed(0x2000, 0x1000), { removed: [e], kept: [left, right] });
  assert.deepEqual(t.list(), [left, right]);
  assert.equal(t.translate(0x1fff, R), U + 0xfff);
  assert.equal(t.span, 1, "the left part ends at the hole");
  assert.equal(t.translate(0x2000, R), -1);
  assert.equal(t.translate(0x2fff, R), -1);
  assert.equal(t.translate(0x3800, W), U + 0x2800);
  assert.equal(t.span, 0x1800);
  assert.equal(t.translateRange(0x1000, 0x4000, R), -1, "no longer one range");
});

Deno.test("invalidate: a range over several entries removes those inside and cuts those at its ends", () => {
  const a = entry(0x1000, 0x1000, 0xa000, R);
  const b = entry(0x3000, 0x1000, 0xb000, R);
  const c = entry(0x5000, 0x1000, 0xc000, R);
  const d = entry(0x7000, 0x1000, 0xd000, R);
  const t = table([a, b, c, d]);
  // 0x1800..0x7800: cuts a and d, removes b and c.
  assert.deepEqual(t.invalidateDetailed(0x1800, 0x6000), {
    removed: [a, b, c, d],
    kept: [entry(0x1000, 0x800, 0xa000, R), entry(0x7800, 0x800, 0xd800, R)],
  });
  assert.deepEqual(t.list(), [entry(0x1000, 0x800, 0xa000, R), entry(0x7800, 0x800, 0xd800, R)]);
  assert.equal(t.translate(0x3000, R), -1);
  assert.equal(t.translate(0x5000, R), -1);
  assert.equal(t.translate(0x7900, R), 0xd900);
});

Deno.test("invalidate: size 0 takes back everything from the address on", () => {
  const a = entry(0x1000, 0x1000, 0xa000, R);
  const b = entry(0x3000, 0x1000, 0xb000, RW);
  const far = entry(2 ** 52, 0x1000, 0xf000, W);
  const top = entry(Number.MAX_SAFE_INTEGER - 0x1000, 0x1000, 0xe000, R); // ends at the limit
  const t = table([a, b, far, top]);
  assert.deepEqual(t.invalidateDetailed(0x3800, 0), {
    removed: [b, far, top],
    kept: [entry(0x3000, 0x800, 0xb000, RW)],
  });
  assert.deepEqual(t.list(), [a, entry(0x3000, 0x800, 0xb000, RW)]);
});

Deno.test("invalidate: a range reaching past 2^53 takes back everything from the address on", () => {
  const a = entry(0x1000, 0x1000, 0xa000, R);
  const b = entry(0x3000, 0x1000, 0xb000, RW);
  const far = entry(2 ** 52, 0x1000, 0xf000, W);
  const top = entry(Number.MAX_SAFE_INTEGER - 0x1000, 0x1000, 0xe000, R);
  for (const size of [2 ** 60, 2 ** 64, Number.MAX_SAFE_INTEGER, 2 ** 53 - 0x3000]) {
    const t = table([a, b, far, top]);
    assert.deepEqual(t.invalidate(0x3800, size), [b, far, top], `size ${size}`);
    assert.deepEqual(t.list(), [a, entry(0x3000, 0x800, 0xb000, RW)], `size ${size}`);
  }
  const t = table([a, b, far, top]);
  assert.deepEqual(t.invalidate(0, 2 ** 64), [a, b, far, top], "from 0: everything");
  assert.equal(t.size, 0);
});

Deno.test("invalidate: an address that is not a safe integer takes back nothing", () => {
  const a = entry(0x1000, 0x1000, 0xa000, R);
  const t = table([a]);
  const g = t.generation;
  assert.deepEqual(t.invalidateDetailed(2 ** 64, 0x1000), { removed: [], kept: [] });
  assert.deepEqual(t.invalidate(-1, 0x2000), []);
  assert.deepEqual(t.invalidate(NaN, 0), []);
  assert.deepEqual(t.invalidate(0x4000, 0), [], "nothing from there on");
  assert.deepEqual(t.list(), [a]);
  assert.equal(t.generation, g);
});

Deno.test("invalidate: a negative size takes back nothing", () => {
  const a = entry(0x1000, 0x4000, 0xa000, R);
  const t = table([a]);
  const g = t.generation;
  assert.deepEqual(t.invalidateDetailed(0x3000, -0x1000), { removed: [], kept: [] });
  assert.deepEqual(t.list(), [a]);
  assert.equal(t.generation, g);
});

Deno.test("invalidate: a split in a full table reports the entry evicted to make room as removed", () => {
  const old = entry(0x10000, 0x1000, 0xb000, R);
  const a = entry(0x1000, 0x4000, 0xa000, RW);
  const t = table([old, a], 2); // full
  const left = entry(0x1000, 0x1000, 0xa000, RW), right = entry(0x3000, 0x2000, 0xc000, RW);
  // Two kept parts for one removed entry: one more than the table holds.
  assert.deepEqual(t.invalidateDetailed(0x2000, 0x1000), {
    removed: [a, old],
    kept: [left, right],
  });
  assert.deepEqual(t.list(), [left, right], "exactly the kept parts are left");
  assert.equal(t.evictions, 1);

  // A table of one: the second part evicts the first, which is then not kept.
  const one = table([a], 1);
  assert.deepEqual(one.invalidateDetailed(0x2000, 0x1000), { removed: [a], kept: [right] });
  assert.deepEqual(one.list(), [right]);
});

Deno.test("clear: removes and returns every entry", () => {
  const a = entry(0x1000, 0x1000, 0xa000, R), b = entry(0x3000, 0x1000, 0xb000, W);
  const t = table([a, b]);
  assert.deepEqual(t.clear(), [a, b]);
  assert.equal(t.size, 0);
  assert.equal(t.translate(0x1000, R), -1);
  assert.deepEqual(t.clear(), []);
});

// ---------------------------------------------------------------------------
// Capacity and refused updates

Deno.test("capacity: a full table evicts its oldest entry for a new one and never grows past it", () => {
  const t = new Iotlb({ capacity: 4 });
  const e = (i: number, perm: number = R) => entry(i * 0x10000, PAGE, 0x100000 + i * PAGE, perm);
  for (let i = 0; i < 4; i++) assert.deepEqual(t.update(e(i)), []);
  assert.equal(t.evictions, 0);
  assert.deepEqual(t.update(e(4)), [e(0)], "the fifth evicts the first");
  assert.equal(t.evictions, 1);
  assert.equal(t.size, 4);
  assert.deepEqual(t.list(), [e(1), e(2), e(3), e(4)]);
  assert.equal(t.translate(0, R), -1, "the evicted entry is a miss now");

  // A replacement frees its own room (no eviction) and counts as new.
  const e2 = e(2, RW);
  assert.deepEqual(t.update(e2), [e(2)]);
  assert.equal(t.evictions, 1);
  assert.deepEqual(t.update(e(5)), [e(1)], "oldest is now e1");
  assert.deepEqual(t.update(e(6)), [e(3)], "then e3: e2 was replaced after it");
  assert.deepEqual(t.update(e(7)), [e(4)]);
  assert.deepEqual(t.update(e(8)), [e2]);
  assert.equal(t.evictions, 5);
  assert.equal(t.size, 4);
  assert.deepEqual(t.list(), [e(5), e(6), e(7), e(8)]);

  for (let i = 9; i < 100; i++) {
    t.update(e(i));
    assert.ok(t.size <= 4, `size ${t.size} after update ${i}`);
  }
  assert.equal(t.size, 4);
  assert.equal(t.evictions, 96);
});

Deno.test("capacity: must be an integer from 1 to 2^20", () => {
  for (const capacity of [0, -1, 1.5, 2 ** 20 + 1, NaN]) {
    assert.throws(() => new Iotlb({ capacity }), RangeError, `capacity ${capacity}`);
  }
  assert.equal(new Iotlb().shared.capacity, 2048);
  assert.equal(new Iotlb({ capacity: 7 }).shared.capacity, 7);
});

Deno.test("update: a size of 0 or below, an address beyond 2^53, bad permissions or a non-integer throw RangeError and change nothing", () => {
  const kept = entry(0x1000, 0x1000, 0xa000, RW);
  const t = table([kept], 1); // full: a bad update must not evict either
  const g = t.generation;
  const bad: IotlbEntry[] = [
    entry(0x2000, 0, 0xb000, R),
    entry(0x2000, -0x1000, 0xb000, R),
    entry(-0x1000, 0x1000, 0xb000, R),
    entry(0x2000, 0x1000, -1, R),
    entry(2 ** 53, 0x1000, 0xb000, R),
    entry(2 ** 60, 0x1000, 0xb000, R),
    entry(0x2000, 2 ** 53, 0xb000, R),
    entry(2 ** 53 - 0x1000, 0x2000, 0xb000, R),
    entry(0x2000, 0x1000, 2 ** 53 - 0x800, R),
    entry(0x2000, 0x1000, 0xb000, 0),
    entry(0x2000, 0x1000, 0xb000, 4),
    entry(0x2000, 0x1000, 0xb000, -1),
    entry(0x2000, 0x1000, 0xb000, 1.5),
    entry(0x2000 + 0.5, 0x1000, 0xb000, R),
    entry(0x2000, 0x1000 + 0.5, 0xb000, R),
    entry(0x2000, 0x1000, 0xb000 + 0.5, R),
    entry(NaN, 0x1000, 0xb000, R),
    entry(0x2000, Infinity, 0xb000, R),
    entry(0x2000, 0x1000, 0xb000, NaN),
    entry(0x1000, 0, 0xb000, R), // would overlap the kept entry if it were valid
  ];
  for (const e of bad) {
    assert.throws(() => t.update(e), RangeError, JSON.stringify(e));
    assert.deepEqual(t.list(), [kept], `unchanged after ${JSON.stringify(e)}`);
  }
  assert.equal(t.generation, g);
  assert.equal(t.evictions, 0);
  assert.equal(t.translate(0x1000, RW), 0xa000);
});

Deno.test("update: a range ending exactly at 2^53 - 1 is accepted", () => {
  const top = entry(Number.MAX_SAFE_INTEGER - 0x1000, 0x1000, 0xa000, R);
  const t = table([top, entry(0, 0x1000, Number.MAX_SAFE_INTEGER - 0x1000, W)]);
  assert.equal(t.translate(Number.MAX_SAFE_INTEGER - 1, R), 0xafff);
  assert.equal(t.translate(0xfff, W), Number.MAX_SAFE_INTEGER - 1);
  assert.equal(t.translate(Number.MAX_SAFE_INTEGER, R), -1);
});

// ---------------------------------------------------------------------------
// Generation

Deno.test("generation: every change bumps it, lookups and no-ops do not", () => {
  const t = new Iotlb({ capacity: 2 });
  const view = new IotlbView(t.shared);
  let g = t.generation;
  const changed = (what: string) => {
    assert.ok(t.generation > g, `${what} bumps the generation (${g} -> ${t.generation})`);
    assert.equal(view.generation, t.generation, "a view of the shared table sees the same");
    g = t.generation;
  };
  const unchanged = (what: string) => assert.equal(t.generation, g, `${what} leaves it alone`);

  t.update(entry(0x1000, 0x2000, 0xa000, RW));
  changed("an update");
  t.translate(0x1000, R);
  t.translate(0x9000, R);
  t.translate(0x1000, 0);
  view.translate(0x1800, W);
  t.translateRange(0x1000, 0x2000, R);
  t.list();
  unchanged("lookups");
  t.update(entry(0x1800, 0x1000, 0xb000, R));
  changed("an overlapping update");
  t.update(entry(0x5000, 0x1000, 0xc000, R));
  changed("a second entry");
  t.update(entry(0x7000, 0x1000, 0xd000, R));
  changed("an evicting update");
  t.invalidate(0x7800, 0x100);
  changed("a split");
  t.invalidate(0x20000, 0x1000);
  unchanged("invalidating nothing");
  assert.throws(() => t.update(entry(0, 0, 0, R)), RangeError);
  unchanged("a refused update");
  view.requestMiss(0x20000, R);
  t.takeMisses();
  unchanged("a miss");
  t.invalidate(0, 0);
  changed("invalidating everything");
  t.clear();
  unchanged("clearing an empty table");
  t.update(entry(0x1000, 0x1000, 0xa000, R));
  changed("an update");
  t.clear();
  changed("clear");
});

// ---------------------------------------------------------------------------
// The miss queue

Deno.test("misses: a view posts them, takeMisses drains them once", () => {
  const t = new Iotlb();
  const view = new IotlbView(t.shared);
  const signal = t.missSignal;
  assert.deepEqual(t.takeMisses(), []);
  assert.equal(view.requestMiss(0x1000, R), true);
  assert.equal(view.requestMiss(0x2000, W), true);
  assert.equal(view.requestMiss(2 ** 52, RW), true);
  assert.equal(t.missSignal, signal + 3);
  assert.deepEqual(t.takeMisses(), [
    { iova: 0x1000, perm: R },
    { iova: 0x2000, perm: W },
    { iova: 2 ** 52, perm: RW },
  ]);
  assert.deepEqual(t.takeMisses(), [], "taken once");
  assert.equal(t.droppedMisses, 0);
});

Deno.test("misses: a storm without a drain is bounded: the extras are dropped and counted", () => {
  const t = new Iotlb();
  const views = [new IotlbView(t.shared), new IotlbView(t.shared)];
  const extra = 1000;
  let posted = 0, refused = 0;
  for (let i = 0; i < MISS_QUEUE_SLOTS + extra; i++) {
    if (views[i % 2].requestMiss(i * PAGE, R)) posted++;
    else refused++;
  }
  assert.equal(posted, MISS_QUEUE_SLOTS);
  assert.equal(refused, extra);
  assert.equal(t.droppedMisses, extra);
  const taken = t.takeMisses();
  assert.equal(taken.length, MISS_QUEUE_SLOTS);
  assert.deepEqual(
    taken.map((m) => m.iova).sort((a, b) => a - b),
    Array.from({ length: MISS_QUEUE_SLOTS }, (_, i) => i * PAGE),
    "the first ones posted are kept",
  );

  // Drained: the queue takes misses again; a second storm is bounded the same way.
  assert.equal(views[0].requestMiss(0xdead000, W), true);
  assert.deepEqual(t.takeMisses(), [{ iova: 0xdead000, perm: W }]);
  for (let i = 0; i < 5 * MISS_QUEUE_SLOTS; i++) views[1].requestMiss(i, R);
  assert.equal(t.takeMisses().length, MISS_QUEUE_SLOTS);
  assert.equal(t.droppedMisses, extra + 4 * MISS_QUEUE_SLOTS);
  assert.deepEqual(t.takeMisses(), []);
});

Deno.test("misses: waitForMiss resolves soon after a miss is posted, and on its timeout otherwise", async () => {
  const t = new Iotlb();
  const view = new IotlbView(t.shared);

  let seen = t.missSignal;
  let start = performance.now();
  const timer = setTimeout(() => view.requestMiss(0x5000, W), 20);
  try {
    await t.waitForMiss(seen, 5000);
  } finally {
    clearTimeout(timer);
  }
  const woke = performance.now() - start;
  assert.ok(woke >= 10 && woke < 1000, `woke after ${woke} ms`);
  assert.deepEqual(t.takeMisses(), [{ iova: 0x5000, perm: W }]);

  seen = t.missSignal;
  start = performance.now();
  await t.waitForMiss(seen, 50);
  const timedOut = performance.now() - start;
  assert.ok(timedOut >= 40 && timedOut < 1000, `timed out after ${timedOut} ms`);
  assert.deepEqual(t.takeMisses(), []);

  // A miss posted before the wait (the signal moved past `seen`): no wait at all.
  view.requestMiss(0x6000, R);
  start = performance.now();
  await t.waitForMiss(seen, 5000);
  assert.ok(performance.now() - start < 100);
  assert.deepEqual(t.takeMisses(), [{ iova: 0x6000, perm: R }]);
});

Deno.test("IotlbView: refuses a buffer of the wrong size for its capacity", () => {
  const t = new Iotlb({ capacity: 4 });
  assert.throws(() => new IotlbView({ buffer: t.shared.buffer, capacity: 5 }), RangeError);
  assert.throws(
    () => new IotlbView({ buffer: new SharedArrayBuffer(64), capacity: 4 }),
    RangeError,
  );
  const view = new IotlbView(t.shared);
  t.update(entry(0x1000, 0x1000, 0xa000, R));
  assert.equal(view.size, 1);
  assert.equal(view.translate(0x1001, R), 0xa001);
});

// ---------------------------------------------------------------------------
// A reference model

/** The obvious implementation: a list of entries, searched linearly. */
class Model {
  entries: IotlbEntry[] = [];

  update(n: IotlbEntry): IotlbEntry[] {
    const gone = this.entries.filter((e) => overlaps(e, n.iova, n.iova + n.size));
    this.entries = this.entries.filter((e) => !gone.includes(e));
    this.entries.push({ ...n });
    return gone;
  }

  invalidate(iova: number, size: number): { removed: IotlbEntry[]; kept: IotlbEntry[] } {
    const end = size === 0 ? Infinity : iova + size;
    const removed = this.entries.filter((e) => overlaps(e, iova, end));
    const kept: IotlbEntry[] = [];
    for (const e of removed) {
      if (e.iova < iova) kept.push({ ...e, size: iova - e.iova });
      if (e.iova + e.size > end) {
        kept.push({
          iova: end,
          size: e.iova + e.size - end,
          uaddr: e.uaddr + end - e.iova,
          perm: e.perm,
        });
      }
    }
    this.entries = this.entries.filter((e) => !removed.includes(e)).concat(kept);
    return { removed, kept };
  }

  /** Page number -> the frontend address of the page and its permissions. */
  pages(): Map<number, { uaddr: number; perm: number }> {
    const m = new Map<number, { uaddr: number; perm: number }>();
    for (const e of this.entries) {
      for (let p = e.iova; p < e.iova + e.size; p += PAGE) {
        m.set(p / PAGE, { uaddr: e.uaddr + p - e.iova, perm: e.perm });
      }
    }
    return m;
  }

  /** Bytes from `iova` to the end of its entry. */
  span(iova: number): number {
    const e = this.entries.find((e) => e.iova <= iova && iova < e.iova + e.size);
    return e ? e.iova + e.size - iova : 0;
  }
}

function overlaps(e: IotlbEntry, start: number, end: number): boolean {
  return e.iova < end && start < e.iova + e.size;
}

const byIova = (a: IotlbEntry, b: IotlbEntry) => a.iova - b.iova;

const SPACE_PAGES = 32;
type Op =
  | { kind: "update"; page: number; pages: number; upage: number; perm: number }
  | { kind: "invalidate"; page: number; pages: number };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({
    kind: fc.constant("update" as const),
    page: fc.integer({ min: 0, max: SPACE_PAGES - 1 }),
    pages: fc.integer({ min: 1, max: 8 }),
    upage: fc.integer({ min: 0, max: 1 << 20 }),
    perm: fc.constantFrom(R, W, RW),
  }),
  fc.record({
    kind: fc.constant("invalidate" as const),
    page: fc.integer({ min: 0, max: SPACE_PAGES }),
    pages: fc.integer({ min: 0, max: 10 }), // 0: to the end
  }),
);

Deno.test("model: random page-aligned updates and invalidations translate every page as a simple reference does", () => {
  fc.assert(
    fc.property(fc.array(opArb, { minLength: 1, maxLength: 40 }), (ops) => {
      const t = new Iotlb({ capacity: 4 * SPACE_PAGES }); // never evicts
      const model = new Model();
      for (const op of ops) {
        if (op.kind === "update") {
          const e = entry(
            op.page * PAGE,
            op.pages * PAGE,
            0x1_0000_0000 + op.upage * PAGE,
            op.perm,
          );
          assert.deepEqual(
            t.update(e).sort(byIova),
            model.update(e).sort(byIova),
            "update returns",
          );
        } else {
          const got = t.invalidateDetailed(op.page * PAGE, op.pages * PAGE);
          const want = model.invalidate(op.page * PAGE, op.pages * PAGE);
          assert.deepEqual(got.removed.sort(byIova), want.removed.sort(byIova), "removed");
          assert.deepEqual(got.kept.sort(byIova), want.kept.sort(byIova), "kept");
        }
        // Entries: sorted, disjoint, the model's.
        const list = t.list();
        for (let i = 1; i < list.length; i++) {
          assert.ok(list[i - 1].iova + list[i - 1].size <= list[i].iova, "sorted and disjoint");
        }
        assert.deepEqual(list, [...model.entries].sort(byIova));
        assert.equal(t.size, model.entries.length);
        // Every page, both ways, at its first and last byte.
        const pages = model.pages();
        for (let p = 0; p < SPACE_PAGES + 10; p++) {
          const want = pages.get(p);
          for (const perm of [R, W]) {
            for (const off of [0, PAGE - 1]) {
              const iova = p * PAGE + off;
              const expect = !want ? -1 : (want.perm & perm) !== perm ? -2 : want.uaddr + off;
              assert.equal(t.translate(iova, perm), expect, `page ${p} + ${off} perm ${perm}`);
              assert.equal(t.span, expect >= 0 ? model.span(iova) : 0, `span of ${iova}`);
            }
          }
        }
      }
      assert.equal(t.evictions, 0);
    }),
    { numRuns: 200, seed: 0x10715 },
  );
});

Deno.test("model: in a small table that evicts, what update and invalidate return mirrors the table exactly", () => {
  // What a driver mapping DMA relies on: unmap what left, map what came or stayed.
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 6 }),
      fc.array(opArb, { minLength: 1, maxLength: 40 }),
      (capacity, ops) => {
        const t = new Iotlb({ capacity });
        const mirror = new Map<number, IotlbEntry>();
        let evicted = 0;
        for (const op of ops) {
          if (op.kind === "update") {
            const e = entry(op.page * PAGE, op.pages * PAGE, op.upage * PAGE, op.perm);
            const before = t.evictions;
            const gone = t.update(e);
            evicted += t.evictions - before;
            for (const g of gone) assert.ok(mirror.delete(g.iova), `${g.iova} was in the table`);
            mirror.set(e.iova, e);
          } else {
            const { removed, kept } = t.invalidateDetailed(op.page * PAGE, op.pages * PAGE);
            for (const g of removed) assert.ok(mirror.delete(g.iova), `${g.iova} was in the table`);
            for (const k of kept) mirror.set(k.iova, k);
          }
          assert.ok(t.size <= capacity, `size ${t.size} of ${capacity}`);
          const list = t.list();
          assert.deepEqual(list, [...mirror.values()].sort(byIova));
          for (let i = 1; i < list.length; i++) {
            assert.ok(list[i - 1].iova + list[i - 1].size <= list[i].iova, "sorted and disjoint");
          }
          for (const e of list) {
            assert.equal(t.translate(e.iova + e.size - 1, e.perm), e.uaddr + e.size - 1);
          }
        }
        assert.ok(t.evictions >= evicted);
      },
    ),
    { numRuns: 300, seed: 0x5ca1e },
  );
});

// ---------------------------------------------------------------------------
// Readers on another thread

Deno.test("concurrency: a Worker reading without a lock never sees a wrong translation for an entry the writer keeps", async () => {
  const CHURN_PAGES = 32;
  const DELTA = 0x5_0000_0000;
  // Churned entries below the fixed one (they move it around the table as
  // they come and go) and above it (where invalidations "to the end" go).
  const LOW = 0x10_0000, HIGH = 0x40_0000;
  const fixed = entry(0x30_0000, 0x4000, 0x7e00_0000_0000, RW);
  const t = new Iotlb({ capacity: 4 * CHURN_PAGES }); // room for all: nothing evicts the fixed entry
  t.update(fixed);
  const control = new SharedArrayBuffer(8);
  const ctl = new Int32Array(control);

  const worker = new Worker(new URL("./iotlb_reader_worker.ts", import.meta.url).href, {
    type: "module",
  });
  try {
    const messages: (ReaderResult | "ready")[] = [];
    let wake = () => {};
    worker.onmessage = (e: MessageEvent<ReaderResult | "ready">) => {
      messages.push(e.data);
      wake();
    };
    const next = async () => {
      while (messages.length === 0) await new Promise<void>((r) => wake = r);
      return messages.shift()!;
    };
    const setup: ReaderSetup = {
      shared: t.shared,
      control,
      fixed,
      bases: [LOW, HIGH],
      pages: CHURN_PAGES,
      delta: DELTA,
    };
    worker.postMessage(setup);
    assert.equal(await next(), "ready");

    // Churn: updates of every size and permission, replacing each other,
    // and invalidations that split, trim and remove, all within the churned
    // spaces; the fixed entry is never touched.
    let x = 0x12345678;
    const rand = (n: number) => {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      return (x >>> 0) % n;
    };
    const start = performance.now();
    let ops = 0;
    while (ops < 20_000 || (Atomics.load(ctl, 1) < 10_000 && performance.now() - start < 3000)) {
      const high = rand(2) === 0;
      const page = rand(CHURN_PAGES);
      const pages = 1 + rand(Math.min(8, CHURN_PAGES - page));
      const iova = (high ? HIGH : LOW) + page * PAGE;
      if (rand(3) === 0) {
        t.invalidate(iova, high && rand(4) === 0 ? 0 : pages * PAGE);
      } else {
        t.update(entry(iova, pages * PAGE, iova + DELTA, 1 + rand(3)));
      }
      ops++;
    }
    const lookupsDuringChurn = Atomics.load(ctl, 1);
    Atomics.store(ctl, 0, 1);
    const result = await next();
    assert.notEqual(result, "ready");
    const r = result as ReaderResult;
    assert.equal(r.wrongFixed, 0, "wrong translations of the fixed entry");
    assert.equal(r.wrongOther, 0, "torn translations of churned entries");
    assert.ok(lookupsDuringChurn > 0, "the worker looked up while the table changed");
    assert.ok(r.lookups >= lookupsDuringChurn);
    assert.ok(r.hitsOther > 0, "the worker saw churned entries too");
    assert.ok(ops >= 20_000);
    assert.equal(t.evictions, 0);
    assert.deepEqual(t.list().find((e) => e.iova === fixed.iova), fixed);
  } finally {
    worker.terminate();
  }
});
