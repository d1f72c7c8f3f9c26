/**
 * The device IOTLB of a device behind a vIOMMU (`VIRTIO_F_ACCESS_PLATFORM`,
 * virtio 1.2 §6): ring and buffer addresses are I/O virtual addresses
 * (IOVAs) that only the frontend's IOMMU translates. The frontend tells the
 * backend its translations with vhost-user `IOTLB_MSG` updates (an IOVA
 * range, the frontend virtual address it maps to, read and/or write
 * permission) and takes them back with invalidations; a translation the
 * backend lacks it asks for with an IOTLB miss on the backend channel
 * (vhost-user spec, "IOMMU support").
 *
 * {@linkcode Iotlb} is the cache, kept by the device core on the main thread
 * in a `SharedArrayBuffer`: entries sorted by IOVA, disjoint, each with its
 * permissions, at most {@linkcode IotlbOptions.capacity} of them (the
 * oldest is evicted: a cache may forget, the frontend answers a miss
 * again). Workers read it through an {@linkcode IotlbView} without a lock:
 * the writer brackets each change with a sequence counter (odd while it
 * writes) and a reader retries a lookup that overlapped a change.
 *
 * A Worker that finds no translation posts a miss into a small shared
 * queue ({@linkcode MISS_QUEUE_SLOTS} slots; a full queue drops the miss and
 * counts it), which the core drains, deduplicates and rate-limits before it
 * asks the frontend: a guest that keeps faulting cannot flood the frontend
 * nor grow memory.
 *
 * Translations end in the frontend's virtual addresses (`uaddr`); the memory
 * table maps those to this process ({@linkcode GuestMemory}), so an IOTLB
 * can only ever point into memory the table keeps mapped.
 *
 * @example Update, translate, invalidate
 * ```ts
 * import { Iotlb, IotlbAccess } from "@vhost-mdev/sdk";
 *
 * const iotlb = new Iotlb();
 * iotlb.update({ iova: 0x1000, size: 0x2000, uaddr: 0x7f0000000000, perm: IotlbAccess.READ });
 * iotlb.translate(0x1800, IotlbAccess.READ); // 0x7f0000000800
 * iotlb.translate(0x1800, IotlbAccess.WRITE); // -2: read-only
 * iotlb.invalidate(0x2000, 0x1000); // keeps 0x1000-0x2000
 * iotlb.translate(0x2800, IotlbAccess.READ); // -1: a miss
 * ```
 *
 * @module
 */

import { hex } from "../uapi/hex.ts";
import { IotlbAccess } from "../uapi/vhost.ts";

/** One translation: `size` bytes from `iova` are the frontend's `uaddr`. */
export interface IotlbEntry {
  /** First I/O virtual address. */
  iova: number;
  /** Bytes. */
  size: number;
  /** The frontend's virtual address of the first byte. */
  uaddr: number;
  /** {@linkcode IotlbAccess} bits. */
  perm: number;
}

/** A miss a reader posted: the device needs `perm` at `iova`. */
export interface IotlbMiss {
  /** The address without a translation. */
  iova: number;
  /** The access it needs ({@linkcode IotlbAccess}). */
  perm: number;
}

/** Options of {@linkcode Iotlb}. */
export interface IotlbOptions {
  /** Most entries kept (default {@linkcode DEFAULT_IOTLB_CAPACITY}). */
  capacity?: number;
  /**
   * When full, evict the oldest entry to make room (default true: a cache
   * may forget, the frontend answers a miss again). False for a table that
   * mirrors hardware DMA mappings, which must not vanish under a running
   * device: an update past the capacity is refused instead.
   */
  evict?: boolean;
}

/** Default {@linkcode IotlbOptions.capacity}. */
export const DEFAULT_IOTLB_CAPACITY = 2048;
/** Misses the shared queue holds between two drains by the core. */
export const MISS_QUEUE_SLOTS = 64;

/** An {@linkcode Iotlb} as posted to a Worker (structured-cloneable). */
export interface SharedIotlb {
  /** The shared table. */
  buffer: SharedArrayBuffer;
  /** Its capacity in entries. */
  capacity: number;
}

// Header words (Int32Array).
const SEQ = 0; // odd while the writer changes the table
const COUNT = 1; // entries
const GENERATION = 2; // bumped by every change
const MISS_NEXT = 3; // next miss slot a reader tries
const MISS_SIGNAL = 4; // bumped by each posted miss (the core waits on it)
const MISS_DROPPED = 5; // misses a full queue dropped
const HEADER_INTS = 8;
// Miss slot states.
const SLOT_EMPTY = 0, SLOT_WRITING = 1, SLOT_FULL = 2;
const ENTRY_WORDS = 4; // iova, size, uaddr, perm (Float64Array)
const LIMIT = Number.MAX_SAFE_INTEGER;

function layout(capacity: number) {
  const missStates = HEADER_INTS * 4;
  const missWords = missStates + MISS_QUEUE_SLOTS * 4; // then 8-aligned
  const missValues = Math.ceil(missWords / 8) * 8;
  const entries = missValues + MISS_QUEUE_SLOTS * 2 * 8;
  return { missStates, missValues, entries, bytes: entries + capacity * ENTRY_WORDS * 8 };
}

/**
 * Lock-free reads of a shared IOTLB, from any thread: what a Worker's
 * {@linkcode GuestMemory} uses to translate buffer addresses. Lookups
 * allocate nothing.
 */
export class IotlbView {
  /** The shared table this view reads. */
  readonly shared: SharedIotlb;
  /** After a successful {@linkcode IotlbView.translate}: bytes mapped from the address on (entry end). */
  span = 0;
  /**
   * After {@linkcode IotlbView.translateRange} returned -1: the first
   * address of the range without a translation (what to ask the frontend
   * for), or -1 when all of it is mapped but not contiguously.
   */
  missAt: number = -1;
  /** Header words: sequence counter, entry count, generation, miss queue state. */
  protected readonly header: Int32Array;
  /** The entries: iova, size, uaddr, perm per entry, in IOVA order. */
  protected readonly entries: Float64Array;
  /** The miss queue's slot states (empty, being written, full). */
  protected readonly missStates: Int32Array;
  /** The miss queue's slots: iova and perm per slot. */
  protected readonly missValues: Float64Array;
  /** Most entries the table holds. */
  protected readonly capacity: number;
  #last = 0;

  /**
   * View a shared table.
   *
   * @param shared What {@linkcode Iotlb.shared} returned (possibly on another thread).
   */
  constructor(shared: SharedIotlb) {
    const l = layout(shared.capacity);
    if (shared.buffer.byteLength !== l.bytes) {
      throw new RangeError(
        `a shared IOTLB of capacity ${shared.capacity} is ${l.bytes} bytes, not ${shared.buffer.byteLength}`,
      );
    }
    this.shared = shared;
    this.capacity = shared.capacity;
    this.header = new Int32Array(shared.buffer, 0, HEADER_INTS);
    this.missStates = new Int32Array(shared.buffer, l.missStates, MISS_QUEUE_SLOTS);
    this.missValues = new Float64Array(shared.buffer, l.missValues, MISS_QUEUE_SLOTS * 2);
    this.entries = new Float64Array(shared.buffer, l.entries, shared.capacity * ENTRY_WORDS);
  }

  /** Bumped by every change to the table: a reader waiting for a translation watches it. */
  get generation(): number {
    return Atomics.load(this.header, GENERATION);
  }

  /** Entries in the table now. */
  get size(): number {
    return Atomics.load(this.header, COUNT);
  }

  /**
   * The frontend address of `iova` if an entry holds it with all of `perm`:
   * then {@linkcode IotlbView.span} is how many bytes from `iova` that entry
   * maps. Otherwise -1 (no entry holds `iova`: a miss) or -2 (an entry holds
   * it without `perm`). Allocation-free; consistent even while the owner
   * changes the table.
   */
  translate(iova: number, perm: number): number {
    const header = this.header;
    for (;;) {
      const seq = Atomics.load(header, SEQ);
      if ((seq & 1) !== 0) continue; // the writer is mid-change: a few instructions
      const i = this.#find(iova, Atomics.load(header, COUNT));
      let result = -1, span = 0;
      if (i >= 0) {
        const e = this.entries, at = i * ENTRY_WORDS;
        const offset = iova - e[at];
        if (((e[at + 3] | 0) & perm) !== perm) {
          result = -2;
        } else {
          result = e[at + 2] + offset;
          span = e[at + 1] - offset;
        }
      }
      if (Atomics.load(header, SEQ) !== seq) continue;
      this.span = span;
      return result;
    }
  }

  /**
   * The frontend address of `[iova, iova + length)` when it is mapped with
   * `perm` and contiguous in the frontend's address space (across adjacent
   * entries too), else -1 (part of it is not mapped) or -2 (mapped without
   * `perm`). For ring areas, which must be one host range.
   */
  translateRange(iova: number, length: number, perm: number): number {
    const first = this.translate(iova, perm);
    this.missAt = first === -1 ? iova : -1;
    if (first < 0) return first;
    let at = iova + this.span, expect = first + this.span;
    while (at < iova + length) {
      const next = this.translate(at, perm);
      if (next === -1) this.missAt = at;
      if (next < 0) return next;
      if (next !== expect) return -1;
      at += this.span;
      expect += this.span;
    }
    return first;
  }

  /**
   * Ask the core to fetch a translation for `iova` (a miss). Returns false
   * when the shared queue was full and the miss was dropped (counted).
   */
  requestMiss(iova: number, perm: number): boolean {
    const slot = (Atomics.add(this.header, MISS_NEXT, 1) >>> 0) % MISS_QUEUE_SLOTS;
    if (
      Atomics.compareExchange(this.missStates, slot, SLOT_EMPTY, SLOT_WRITING) !== SLOT_EMPTY
    ) {
      Atomics.add(this.header, MISS_DROPPED, 1);
      return false;
    }
    this.missValues[slot * 2] = iova;
    this.missValues[slot * 2 + 1] = perm;
    Atomics.store(this.missStates, slot, SLOT_FULL);
    Atomics.add(this.header, MISS_SIGNAL, 1);
    Atomics.notify(this.header, MISS_SIGNAL);
    return true;
  }

  /**
   * The entry holding `iova`, or null (a copy, read without the sequence
   * check: for the table's owner, the only writer).
   */
  entryAt(iova: number): IotlbEntry | null {
    const i = this.#find(iova, this.size);
    if (i < 0) return null;
    const e = this.entries, at = i * ENTRY_WORDS;
    return { iova: e[at], size: e[at + 1], uaddr: e[at + 2], perm: e[at + 3] };
  }

  /** Index of the entry holding `iova`, or -1 (binary search from the last hit). */
  #find(iova: number, count: number): number {
    const e = this.entries;
    const last = this.#last;
    if (last < count) {
      const at = last * ENTRY_WORDS;
      if (iova >= e[at] && iova - e[at] < e[at + 1]) return last;
    }
    let lo = 0, hi = count - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1, at = mid * ENTRY_WORDS;
      const start = e[at];
      if (iova < start) hi = mid - 1;
      else if (iova - start >= e[at + 1]) lo = mid + 1;
      else {
        this.#last = mid;
        return mid;
      }
    }
    return -1;
  }
}

/**
 * The IOTLB a device core keeps: the only writer of its shared table. See
 * the module documentation.
 */
export class Iotlb extends IotlbView {
  /** Entries evicted to make room since the table was made. */
  evictions = 0;
  #order: number[] = []; // iova of entries, oldest first (eviction order)
  readonly #evict: boolean;

  /**
   * Make an empty table.
   *
   * @throws RangeError for a capacity that is not an integer from 1 to 2^20.
   */
  constructor(options: IotlbOptions = {}) {
    const capacity = options.capacity ?? DEFAULT_IOTLB_CAPACITY;
    if (!Number.isInteger(capacity) || capacity < 1 || capacity > 1 << 20) {
      throw new RangeError(`IOTLB capacity ${capacity} is not an integer from 1 to 2^20`);
    }
    super({ buffer: new SharedArrayBuffer(layout(capacity).bytes), capacity });
    this.#evict = options.evict ?? true;
  }

  /** The entries, in IOVA order (a copy). */
  list(): IotlbEntry[] {
    const out: IotlbEntry[] = [];
    const e = this.entries;
    for (let i = 0, n = this.size; i < n; i++) {
      const at = i * ENTRY_WORDS;
      out.push({ iova: e[at], size: e[at + 1], uaddr: e[at + 2], perm: e[at + 3] });
    }
    return out;
  }

  /** Misses a full queue dropped since the table was made. */
  get droppedMisses(): number {
    return Atomics.load(this.header, MISS_DROPPED);
  }

  /** The miss signal word's value now (what {@linkcode Iotlb.waitForMiss} waits to change). */
  get missSignal(): number {
    return Atomics.load(this.header, MISS_SIGNAL);
  }

  /**
   * Resolves when a reader posts a miss after the signal was `seen`, or
   * after `timeoutMs`: without blocking the thread.
   */
  async waitForMiss(seen: number, timeoutMs: number): Promise<void> {
    const w = Atomics.waitAsync(this.header, MISS_SIGNAL, seen, timeoutMs);
    if (!w.async) return;
    // Deno's event loop does not wait for a pending `Atomics.waitAsync`
    // (denoland/deno#15358): with nothing else pending it would end and the
    // wait never resolve. A timer keeps it alive until the wait settles.
    const keepAlive = setInterval(
      () => {},
      timeoutMs > 0 && timeoutMs < 0x7fffffff ? timeoutMs : 0x7fffffff,
    );
    try {
      await w.value;
    } finally {
      clearInterval(keepAlive);
    }
  }

  /** End a pending {@linkcode Iotlb.waitForMiss} now (its owner is closing). */
  interruptWait(): void {
    Atomics.add(this.header, MISS_SIGNAL, 1);
    Atomics.notify(this.header, MISS_SIGNAL);
  }

  /** Take the posted misses out of the shared queue (at most {@linkcode MISS_QUEUE_SLOTS}). */
  takeMisses(): IotlbMiss[] {
    const out: IotlbMiss[] = [];
    for (let s = 0; s < MISS_QUEUE_SLOTS; s++) {
      if (Atomics.load(this.missStates, s) !== SLOT_FULL) continue;
      out.push({ iova: this.missValues[s * 2], perm: this.missValues[s * 2 + 1] });
      Atomics.store(this.missStates, s, SLOT_EMPTY);
    }
    return out;
  }

  /**
   * Add a translation. Entries it overlaps are removed first (the frontend's
   * newest word wins), and the oldest entry is evicted when the table is
   * full. Returns what left the table: the overlapped and evicted entries.
   *
   * @throws RangeError for a size of 0, an address or end beyond 2^53, or
   *   permissions outside 1..3; the table is unchanged then.
   */
  update(entry: IotlbEntry): IotlbEntry[] {
    const { iova, size, uaddr, perm } = entry;
    const what = `IOTLB update iova ${hex(iova)} size ${hex(size)} uaddr ${hex(uaddr)}`;
    for (const [k, v] of [["iova", iova], ["size", size], ["uaddr", uaddr]] as const) {
      if (!Number.isSafeInteger(v) || v < 0) {
        throw new RangeError(`${what}: ${k} is not an address below 2^53`);
      }
    }
    if (size === 0) throw new RangeError(`${what}: size is 0`);
    if (iova + size > LIMIT || uaddr + size > LIMIT) {
      throw new RangeError(`${what}: the range ends beyond 2^53`);
    }
    if (!Number.isInteger(perm) || perm < IotlbAccess.READ || perm > IotlbAccess.READ_WRITE) {
      throw new RangeError(`${what}: permission ${perm} is not read (1), write (2) or both (3)`);
    }
    if (!this.#evict && this.size === this.capacity && !this.#overlaps(iova, size)) {
      throw new RangeError(
        `${what}: the IOTLB is full (${this.capacity} entries) and may not forget any`,
      );
    }
    const gone = this.#remove(iova, size);
    if (this.size === this.capacity) gone.push(this.#evictOldest());
    this.#begin();
    const e = this.entries;
    const n = this.size;
    let i = n;
    while (i > 0 && e[(i - 1) * ENTRY_WORDS] > iova) i--;
    e.copyWithin((i + 1) * ENTRY_WORDS, i * ENTRY_WORDS, n * ENTRY_WORDS);
    const at = i * ENTRY_WORDS;
    e[at] = iova;
    e[at + 1] = size;
    e[at + 2] = uaddr;
    e[at + 3] = perm;
    Atomics.store(this.header, COUNT, n + 1);
    this.#end();
    this.#order.push(iova);
    return gone;
  }

  /**
   * Take back `[iova, iova + size)`: entries inside it leave, entries that
   * overlap it are cut to what lies outside it. `size` 0, or an end past
   * 2^53, takes back everything from `iova` on (a frontend's "up to the end
   * of the address space"). Returns the entries as they were before the cut,
   * each whole (a DMA mapping is undone whole, then its kept parts mapped
   * again: see {@linkcode Iotlb.invalidateDetailed}), and any entry a full
   * table evicted to make room for a kept part. A negative size takes back
   * nothing.
   */
  invalidate(iova: number, size: number): IotlbEntry[] {
    return this.invalidateDetailed(iova, size).removed;
  }

  /**
   * {@linkcode Iotlb.invalidate}, also returning the parts of cut entries
   * that stayed (now entries of their own).
   */
  invalidateDetailed(iova: number, size: number): { removed: IotlbEntry[]; kept: IotlbEntry[] } {
    if (!Number.isSafeInteger(iova) || iova < 0 || size < 0) return { removed: [], kept: [] };
    const end = size === 0 || !Number.isSafeInteger(size) || iova + size > LIMIT
      ? LIMIT
      : iova + size;
    const removed = this.#remove(iova, end - iova);
    const parts: IotlbEntry[] = [];
    for (const r of removed) {
      if (r.iova < iova) parts.push({ ...r, size: iova - r.iova });
      if (r.iova + r.size > end) {
        const cut = end - r.iova;
        parts.push({ iova: end, size: r.size - cut, uaddr: r.uaddr + cut, perm: r.perm });
      }
    }
    const kept: IotlbEntry[] = [];
    for (const p of parts) {
      // A table that may not evict, full again: the part is forgotten (it
      // was in `removed`, whole).
      if (!this.#evict && this.size === this.capacity) continue;
      // A part overlaps nothing: all `update` removes is what a full table
      // evicts, another entry (removed too) or an earlier part (not kept).
      for (const gone of this.update(p)) {
        const k = kept.findIndex((e) => e.iova === gone.iova);
        if (k >= 0) kept.splice(k, 1);
        else removed.push(gone);
      }
      kept.push(p);
    }
    return { removed, kept };
  }

  /** Remove every entry; returns them. */
  clear(): IotlbEntry[] {
    const all = this.list();
    if (all.length === 0) return all;
    this.#begin();
    Atomics.store(this.header, COUNT, 0);
    this.#end();
    this.#order = [];
    return all;
  }

  /** Whether an entry overlaps `[iova, iova + size)` (an update would replace it). */
  #overlaps(iova: number, size: number): boolean {
    const e = this.entries;
    for (let i = 0, n = this.size; i < n; i++) {
      const at = i * ENTRY_WORDS;
      if (e[at] < iova + size && iova < e[at] + e[at + 1]) return true;
    }
    return false;
  }

  /** Remove the entries overlapping `[iova, iova + size)`; returns them whole. */
  #remove(iova: number, size: number): IotlbEntry[] {
    const e = this.entries;
    const n = this.size;
    const gone: IotlbEntry[] = [];
    let w = 0;
    let changed = false;
    for (let r = 0; r < n; r++) {
      const at = r * ENTRY_WORDS;
      const start = e[at], len = e[at + 1];
      if (start < iova + size && iova < start + len) {
        if (!changed) {
          this.#begin();
          changed = true;
        }
        gone.push({ iova: start, size: len, uaddr: e[at + 2], perm: e[at + 3] });
        continue;
      }
      if (changed && w !== r) e.copyWithin(w * ENTRY_WORDS, at, at + ENTRY_WORDS);
      w++;
    }
    if (!changed) return gone;
    Atomics.store(this.header, COUNT, w);
    this.#end();
    const left = new Set(gone.map((g) => g.iova));
    this.#order = this.#order.filter((a) => !left.has(a));
    return gone;
  }

  #evictOldest(): IotlbEntry {
    const oldest = this.#order[0];
    const [gone] = this.#remove(oldest, 1);
    this.evictions++;
    return gone;
  }

  #begin(): void {
    Atomics.add(this.header, SEQ, 1);
  }

  #end(): void {
    Atomics.add(this.header, GENERATION, 1);
    Atomics.add(this.header, SEQ, 1);
  }
}
