/**
 * The device side of a split virtqueue (virtio 1.2 §2.7), for software
 * devices: take descriptor chains the driver made available, copy to and
 * from their buffers, return them on the used ring, and decide when to
 * interrupt the driver.
 *
 * Memory ordering. The driver is another process (or thread) writing the
 * same memory. `avail.idx` is read with `Atomics.load` (sequentially
 * consistent: an acquire on every architecture), so the ring entries and
 * descriptors read after it are at least as new as the index, also on
 * weakly ordered CPUs; it is read once per batch, so the cost does not
 * show. `used.idx` is published with `Atomics.store` after the used
 * elements (a release). The SDK runs on x86-64 Linux only (its libc
 * layouts are x86-64's), where in addition loads are not reordered with
 * loads nor stores with stores. The one
 * reordering x86 allows, a later load passing an earlier store, matters when
 * the device stores an index and then reads the driver's suppression fields
 * (`used_event`, `avail.flags`, `avail.idx` after re-enabling
 * notifications): those stores use `Atomics.store`, which is a full barrier
 * (`xchg`) and also keeps the compiler from moving accesses across it.
 *
 * Hostile chains. {@linkcode SplitQueue.pop} validates every descriptor it
 * follows and throws a {@linkcode DescriptorChainError} for the first rule a
 * chain breaks, without reading outside the descriptor table, the indirect
 * table or guest memory. The error is counted in
 * {@linkcode SplitQueue.counters}. What the device should do next:
 *
 * - For a chain error with `head >= 0` the head was consumed. Either return
 *   the chain unused, `pushUsed(err.head, 0)`, and go on with the next chain
 *   (what the SDK's software devices do: the driver gets its buffer back and
 *   the device keeps running), or stop and set `NEEDS_RESET` in the device
 *   status. Both are allowed by virtio 1.2 §2.7.
 * - For `bad-index` of the head (`head === -1`) there is nothing to return:
 *   skip it (the slot was consumed) or set `NEEDS_RESET`.
 * - For `bad-avail-idx` nothing was consumed and the ring cannot be trusted:
 *   set `NEEDS_RESET`. Calling `pop` again re-reads `avail.idx` and
 *   continues if the driver has corrected it.
 *
 * @module
 */

import type { GuestMemory } from "../memory/guest_memory.ts";
import type { DirtyLog } from "../memory/dirty_log.ts";
import { IOTLB_MISS_TIMEOUT_MS, TranslationWait } from "./translation_wait.ts";
import { readChainInto, writeChainFrom } from "./chain_copy.ts";
import { appendBuffer, locateIndirectTable, MAX_HIGH_WORD, TWO_32 } from "./chain_build.ts";
import type { RingPosition } from "../ops.ts";
import {
  DESCRIPTOR_CHAIN_ERROR_KINDS,
  type DescriptorChain,
  DescriptorChainError,
  type DescriptorChainErrorKind,
  type WritableBuffers,
} from "./descriptor.ts";
import {
  availEventOffset,
  DESC_SIZE,
  ringViews,
  type SplitQueueLayout,
  USED_ELEM_SIZE,
  VIRTQ_AVAIL_F_NO_INTERRUPT,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  VIRTQ_USED_F_NO_NOTIFY,
  vringNeedEvent,
} from "./layout.ts";

export type { SplitQueueLayout } from "./layout.ts";

/** What a one-descriptor writable chain's flags are checked for: NEXT, INDIRECT, WRITE. */
const ONE_WRITABLE_MASK = VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_WRITE;

/** How a {@linkcode SplitQueue} starts and what was negotiated. */
export interface SplitQueueOptions {
  /** Next available index to process (`SET_VRING_BASE`). */
  lastAvailIdx: number;
  /**
   * Next used index to write. Default: the `used.idx` found in memory, as
   * a resumed device must continue from what the driver saw.
   */
  usedIdx?: number;
  /** `VIRTIO_F_EVENT_IDX` was negotiated. */
  eventIdx: boolean;
  /** `VIRTIO_F_INDIRECT_DESC` was negotiated. */
  indirect: boolean;
  /**
   * Most buffer descriptors one chain may have, direct and indirect together
   * (default and maximum: the queue size, as virtio 1.2 §2.7.5.3 requires
   * of drivers). An indirect table may hold at most queue-size descriptors;
   * a larger one is `bad-indirect` (guests build such tables only for block
   * devices whose segment limit exceeds the queue size).
   */
  maxChainLength?: number;
  /** Dirty log to mark written buffers and used-ring updates in (live migration). */
  log?: DirtyLog | null;
}

/** What a queue has seen since it was made. */
export interface SplitQueueCounters {
  /** Chains popped successfully. */
  chains: number;
  /** Used elements pushed. */
  used: number;
  /** Hostile chains and corrupt `avail.idx` values seen (all kinds). */
  errors: number;
  /** Errors by kind. */
  byKind: Record<DescriptorChainErrorKind, number>;
  /** Times {@linkcode SplitQueue.needsNotify} said to interrupt. */
  notifications: number;
  /** Times it said the driver does not want an interrupt. */
  suppressed: number;
}

/**
 * The device side of one split virtqueue over a {@linkcode GuestMemory}.
 *
 * The memory must stay open while the queue is used (the SDK stops a device
 * before it replaces the memory table); make a new queue for a new table.
 *
 * @example A loopback device step
 * ```ts
 * import { type DeviceContext, DescriptorChain, SplitQueue } from "@vhost-mdev/sdk";
 *
 * declare const ctx: DeviceContext;
 * const queue = new SplitQueue(ctx.memory, ctx.vring(0), {
 *   lastAvailIdx: ctx.vring(0).state.availIdx, eventIdx: true, indirect: true,
 * });
 * const chain = new DescriptorChain();
 * const buffer = new Uint8Array(65536);
 * while (queue.pop(chain)) {
 *   const n = queue.readChain(chain, buffer);
 *   queue.pushUsed(chain.head, 0);
 * }
 * queue.publishUsed();
 * if (queue.needsNotify()) ctx.signal(0);
 * ```
 */
export class SplitQueue {
  /** The ring's size. */
  readonly num: number;
  /** Always false: the ring is split. */
  readonly packed = false;
  /** What the queue has seen. */
  readonly counters: SplitQueueCounters;
  readonly #memory: GuestMemory;
  readonly #regionBytes: Uint8Array[];
  readonly #regionViews: DataView[];
  readonly #regionGpa: Float64Array;
  readonly #wait: TranslationWait;
  /** Behind a vIOMMU: buffer addresses are IOVAs, and a pop may wait for a translation. */
  readonly #viaIotlb: boolean;
  #missDesc = 0;
  #missInTable = false;
  #missWhy = "";
  readonly #desc: Uint32Array;
  readonly #avail: Uint16Array;
  readonly #used: Uint16Array;
  readonly #usedElems: Uint32Array;
  readonly #mask: number;
  readonly #eventIdx: boolean;
  readonly #indirect: boolean;
  readonly #maxChain: number;
  readonly #usedAddr: number;
  readonly #availEventSlot: number;
  readonly #seen: Uint32Array;
  readonly #seenIndirect: Uint32Array;
  #stamp = 0;
  #lastAvail: number;
  #shadowAvail: number;
  #usedIdx: number;
  #publishedUsed: number;
  #signalledUsed = 0;
  #signalledValid = false;
  #usedFlags = 0;
  #log: DirtyLog | null;

  /**
   * Validate the layout and make the views. Writes the device's
   * notification fields: `used.flags` = 0 and, with EVENT_IDX,
   * `avail_event` = `lastAvailIdx`, so the driver kicks for its next buffer.
   *
   * @throws RangeError for a queue size that is not a power of two up to
   *   32768, indexes out of 0..65535, a ring not inside one region or
   *   misaligned, or a `maxChainLength` out of 1..num.
   */
  constructor(memory: GuestMemory, layout: SplitQueueLayout, options: SplitQueueOptions) {
    const views = ringViews(memory.regions, layout);
    const num = layout.num;
    this.num = num;
    this.#memory = memory;
    this.#regionBytes = memory.regions.map((r) => r.bytes);
    this.#regionViews = memory.regions.map((r) => r.view);
    this.#regionGpa = new Float64Array(memory.regions.map((r) => r.gpa));
    this.#wait = new TranslationWait(memory);
    this.#viaIotlb = memory.iotlb !== null;
    this.#desc = views.desc;
    this.#avail = views.avail;
    this.#used = views.used;
    this.#usedElems = views.usedElems;
    this.#mask = num - 1;
    this.#eventIdx = options.eventIdx;
    this.#indirect = options.indirect;
    const maxChain = options.maxChainLength ?? num;
    if (!Number.isInteger(maxChain) || maxChain < 1 || maxChain > num) {
      throw new RangeError(`maxChainLength ${maxChain} is not in 1..${num}`);
    }
    this.#maxChain = maxChain;
    this.#usedAddr = layout.usedAddr;
    this.#availEventSlot = availEventOffset(num) / 2;
    this.#seen = new Uint32Array(num);
    this.#seenIndirect = new Uint32Array(num);
    const checkIdx = (name: string, v: number) => {
      if (!Number.isInteger(v) || v < 0 || v > 0xffff) {
        throw new RangeError(`${name} ${v} is not in 0..65535`);
      }
      return v;
    };
    this.#lastAvail = checkIdx("lastAvailIdx", options.lastAvailIdx);
    this.#shadowAvail = this.#lastAvail;
    this.#usedIdx = checkIdx("usedIdx", options.usedIdx ?? this.#used[1]);
    this.#publishedUsed = this.#usedIdx;
    this.#log = options.log ?? null;
    const kinds = {} as Record<DescriptorChainErrorKind, number>;
    for (const k of DESCRIPTOR_CHAIN_ERROR_KINDS) kinds[k] = 0;
    this.counters = {
      chains: 0,
      used: 0,
      errors: 0,
      byKind: kinds,
      notifications: 0,
      suppressed: 0,
    };
    this.#used[0] = 0;
    if (this.#eventIdx) Atomics.store(this.#used, this.#availEventSlot, this.#lastAvail);
  }

  /** The memory the queue reads. */
  get memory(): GuestMemory {
    return this.#memory;
  }

  /** Next available index to process: what `GET_VRING_BASE` reports. */
  get lastAvailIdx(): number {
    return this.#lastAvail;
  }

  /** Next used index to write (published or not). */
  get usedIdx(): number {
    return this.#usedIdx;
  }

  /** Where the queue is (split rings have no wrap counters: both true). */
  position(): RingPosition {
    return { availIdx: this.#lastAvail, usedIdx: this.#usedIdx, availWrap: true, usedWrap: true };
  }

  /** `lastAvailIdx` as it was `chains` chains ago (each took one available entry). */
  availBefore(chains: number): number {
    return (this.#lastAvail - chains) & 0xffff;
  }

  /** Available entries a chain takes: always 1 in a split ring. */
  descriptorsOf(_head: number): number {
    return 1;
  }

  /** Start or stop marking writes in a dirty log. */
  setLog(log: DirtyLog | null): void {
    this.#log = log;
  }

  /**
   * Chains the driver has made available and the device has not popped.
   * Reads `avail.idx` once; {@linkcode SplitQueue.pop} then works from that
   * value until it is used up.
   *
   * @throws DescriptorChainError `bad-avail-idx` when `avail.idx` is more than
   *   the queue size ahead of the device (counted).
   */
  available(): number {
    const idx = Atomics.load(this.#avail, 1);
    const n = (idx - this.#lastAvail) & 0xffff;
    if (n > this.num) {
      this.#count("bad-avail-idx");
      throw new DescriptorChainError(
        "bad-avail-idx",
        -1,
        -1,
        false,
        `avail.idx ${idx} is ${n} entries past the device's last available index ` +
          `${this.#lastAvail}, more than the queue size ${this.num}`,
      );
    }
    this.#shadowAvail = idx;
    return n;
  }

  /**
   * Take the next available chain into `chain`. Returns false (with `chain`
   * emptied) when there is none. No allocation (unless `chain` must grow).
   *
   * @throws DescriptorChainError for a hostile chain, counted, with the head
   *   consumed (see the module documentation for what to do with it).
   */
  pop(chain: DescriptorChain): boolean {
    chain.reset(-1);
    if (this.#viaIotlb && this.#wait.waiting()) return false;
    if (this.#lastAvail === this.#shadowAvail && this.available() === 0) return false;
    const before = this.#lastAvail;
    const head = this.#avail[2 + (before & this.#mask)];
    this.#lastAvail = (before + 1) & 0xffff;
    if (head >= this.num) {
      this.#fail(
        chain,
        "bad-index",
        head,
        false,
        `head index ${head} is not below the queue size ${this.num}`,
      );
    }
    const generation = this.#viaIotlb ? this.#wait.snapshot() : 0;
    if (!this.#walk(chain, head)) {
      if (!this.#wait.missed(this.#memory, generation)) this.#unmapped(chain);
      // Not the guest's fault: the entry goes back until the translation comes.
      this.#lastAvail = before;
      chain.reset(-1);
      return false;
    }
    if (this.#viaIotlb) this.#wait.done();
    return true;
  }

  /**
   * Take, into `out` from index `at`, up to `max` available chains that are
   * each one device-writable descriptor of at least `minLength` bytes inside
   * one region; returns how many. Works from the `avail.idx` last read (so
   * it never throws): when that is used up, {@linkcode SplitQueue.pop} reads
   * it again. Stops at the first chain that is anything else, which `pop`
   * then takes and checks. Takes nothing behind a vIOMMU.
   */
  popWritable(out: WritableBuffers, at: number, max: number, minLength: number): number {
    if (this.#viaIotlb) return 0;
    const desc = this.#desc, avail = this.#avail, num = this.num, mask = this.#mask;
    const memory = this.#memory, regionGpa = this.#regionGpa;
    let last = this.#lastAvail, n = 0;
    const ready = (this.#shadowAvail - last) & 0xffff;
    const limit = max < ready ? max : ready;
    for (; n < limit; n++) {
      const head = avail[2 + (last & mask)];
      if (head >= num) break;
      const w = head << 2;
      const flags = desc[w + 3] & 0xffff;
      if ((flags & ONE_WRITABLE_MASK) !== VIRTQ_DESC_F_WRITE) break;
      const len = desc[w + 2], hi = desc[w + 1];
      if (len < minLength || len === 0 || hi > MAX_HIGH_WORD) break;
      const address = desc[w] + hi * TWO_32;
      const r = memory.find(address, len);
      if (r < 0) break;
      out.set(at + n, head, r, address - regionGpa[r], len);
      last = (last + 1) & 0xffff;
    }
    this.#lastAvail = last;
    this.counters.chains += n;
    return n;
  }

  /**
   * Take chain `head` into `chain` again without consuming the available
   * ring: a head a previous backend took and did not complete (inflight
   * tracking, resubmitted after a reconnect). The chain is checked as
   * {@linkcode SplitQueue.pop} checks it.
   *
   * @throws DescriptorChainError for a head out of range or a hostile
   *   chain (counted).
   */
  popHead(head: number, chain: DescriptorChain): void {
    chain.reset(-1);
    if (!Number.isInteger(head) || head < 0 || head >= this.num) {
      this.#fail(
        chain,
        "bad-index",
        head,
        false,
        `head index ${head} is not below the queue size ${this.num}`,
      );
    }
    if (!this.#walk(chain, head)) {
      // A resubmitted chain is not waited for: it fails at once.
      this.#memory.iotlb?.requestMiss(this.#memory.missAddress, this.#memory.missPerm);
      this.#unmapped(chain);
    }
  }

  /** Walk chain `head` into `chain` (the head is known to be in range). */
  /** Walk chain `head` into `chain`: false when a translation is missing (see `#miss`). */
  #walk(chain: DescriptorChain, head: number): boolean {
    chain.head = head;
    const stamp = this.#nextStamp();
    const desc = this.#desc, seen = this.#seen;
    let i = head;
    let buffers = 0;
    for (;;) {
      if (seen[i] === stamp) {
        this.#fail(chain, "loop", i, false, `descriptor ${i} appears twice in the chain (a loop)`);
      }
      seen[i] = stamp;
      chain.descriptors++;
      const w = i << 2;
      const lo = desc[w], hi = desc[w + 1], len = desc[w + 2], fn = desc[w + 3];
      const flags = fn & 0xffff;
      if ((flags & VIRTQ_DESC_F_INDIRECT) !== 0) {
        if (!this.#indirectTable(chain, i, lo, hi, len, flags, buffers)) return false;
        break;
      }
      if (++buffers > this.#maxChain) {
        this.#fail(
          chain,
          "too-long",
          i,
          false,
          `chain is longer than ${this.#maxChain} descriptors`,
        );
      }
      if (!this.#buffer(chain, i, false, lo, hi, len, flags)) return false;
      if ((flags & VIRTQ_DESC_F_NEXT) === 0) break;
      const next = fn >>> 16;
      if (next >= this.num) {
        this.#fail(
          chain,
          "bad-index",
          i,
          false,
          `descriptor ${i} has next ${next}, not below the queue size ${this.num}`,
        );
      }
      i = next;
    }
    this.counters.chains++;
    return true;
  }

  /**
   * Copy the chain's readable bytes, starting `offset` bytes into them, to
   * `dst`. Returns the number of bytes copied (at most `dst.length`).
   * Segments up to 16 bytes are copied byte by byte; longer ones with
   * `Uint8Array.set` from a subarray of the region (a short-lived view: the
   * engine has no copy between two buffers without one).
   */
  readChain(chain: DescriptorChain, dst: Uint8Array, offset = 0): number {
    return readChainInto(this.#regionBytes, chain, dst, offset);
  }

  /**
   * Copy `src` into the chain's writable buffers, starting `offset` bytes
   * into them. Returns the number of bytes written (less than `src.length`
   * when the buffers are too small). Marks the dirty log when one is set.
   */
  writeChain(chain: DescriptorChain, src: Uint8Array, offset = 0): number {
    return writeChainFrom(this.#regionBytes, chain, src, offset, this.#log);
  }

  /**
   * Put chain `head` on the used ring with `len` bytes written. Not visible
   * to the driver until {@linkcode SplitQueue.publishUsed}.
   *
   * @throws RangeError when `head` is not a descriptor index.
   */
  pushUsed(head: number, len: number): void {
    this.#checkHead(head);
    this.#writeUsed(head, len, 1);
  }

  #checkHead(head: number): void {
    if (!((head >>> 0) < this.num) || head !== (head | 0)) {
      throw new RangeError(`used head ${head} is not below the queue size ${this.num}`);
    }
  }

  /** Write used element (`head`, `len`) at the used index, which moves by `count`. */
  #writeUsed(head: number, len: number, count: number): void {
    const slot = this.#usedIdx & this.#mask;
    this.#usedElems[slot * 2] = head;
    this.#usedElems[slot * 2 + 1] = len;
    this.#usedIdx = (this.#usedIdx + count) & 0xffff;
    this.counters.used += count;
    if (this.#log !== null) {
      this.#log.mark(this.#usedAddr + 4 + slot * USED_ELEM_SIZE, USED_ELEM_SIZE);
    }
  }

  /**
   * With `VIRTIO_F_IN_ORDER` negotiated: return `heads[0, count)` (the
   * chains taken first among those the device holds, in the order taken)
   * with one used element, the last head's, at the used position; `used.idx`
   * moves by `count` (virtio 1.2 §2.7.9: the driver takes the elements it
   * skips as used in full). One element written instead of `count`: the
   * driver reads one line of the used ring per batch. Not visible to the
   * driver until {@linkcode SplitQueue.publishUsed}.
   *
   * @throws RangeError when `count` is not in 1..num or a head is not a
   *   descriptor index; nothing is pushed then.
   */
  pushUsedInOrder(heads: ArrayLike<number>, count: number, len: number): void {
    if (!Number.isInteger(count) || count < 1 || count > this.num || count > heads.length) {
      throw new RangeError(`in-order batch of ${count} is not in 1..${this.num}`);
    }
    for (let i = 0; i < count; i++) this.#checkHead(heads[i]);
    this.#writeUsed(heads[count - 1], len, count);
  }

  /** Publish every pushed element: store `used.idx` (after the elements). */
  publishUsed(): void {
    if (this.#publishedUsed === this.#usedIdx) return;
    Atomics.store(this.#used, 1, this.#usedIdx);
    this.#publishedUsed = this.#usedIdx;
    if (this.#log !== null) this.#log.mark(this.#usedAddr + 2, 2);
  }

  /**
   * Whether to interrupt the driver now for what was published since the
   * last call. With EVENT_IDX: `used_event` passed (virtio 1.2 §2.7, notification suppression);
   * the first call after construction says yes, as the device cannot know
   * what was signalled before it. Otherwise: the driver did not set
   * `VIRTQ_AVAIL_F_NO_INTERRUPT`.
   */
  needsNotify(): boolean {
    let need: boolean;
    if (this.#eventIdx) {
      const now = this.#publishedUsed;
      const old = this.#signalledUsed;
      const valid = this.#signalledValid;
      this.#signalledUsed = now;
      this.#signalledValid = true;
      need = !valid || vringNeedEvent(this.#avail[2 + this.num], now, old);
    } else {
      need = (this.#avail[0] & VIRTQ_AVAIL_F_NO_INTERRUPT) === 0;
    }
    if (need) this.counters.notifications++;
    else this.counters.suppressed++;
    return need;
  }

  /**
   * Ask the driver not to kick while the device is busy polling. With
   * EVENT_IDX this writes nothing: the driver stops kicking by itself once it
   * passes the `avail_event` of the last {@linkcode SplitQueue.enableNotifications}.
   */
  disableNotifications(): void {
    if (!this.#eventIdx) {
      this.#usedFlags |= VIRTQ_USED_F_NO_NOTIFY;
      this.#used[0] = this.#usedFlags;
    }
  }

  /**
   * Ask the driver to kick for its next buffer (`avail_event` =
   * last available index, or clear `VIRTQ_USED_F_NO_NOTIFY`). Returns true
   * when buffers arrived that are not popped yet: the caller must process
   * them, since the driver may not kick for those.
   */
  enableNotifications(): boolean {
    if (this.#eventIdx) {
      Atomics.store(this.#used, this.#availEventSlot, this.#lastAvail);
    } else {
      this.#usedFlags &= ~VIRTQ_USED_F_NO_NOTIFY;
      Atomics.store(this.#used, 0, this.#usedFlags);
    }
    if (this.#log !== null) {
      const at = this.#eventIdx ? this.#availEventSlot * 2 : 0;
      this.#log.mark(this.#usedAddr + at, 2);
    }
    // Waiting for a translation: the core kicks the ring when it comes.
    if (this.#viaIotlb && this.#wait.waiting()) return false;
    return Atomics.load(this.#avail, 1) !== this.#lastAvail;
  }

  /** A fresh stamp for loop detection; clears the marks when the counter wraps. */
  #nextStamp(): number {
    if (this.#stamp === 0xffffffff) {
      this.#seen.fill(0);
      this.#seenIndirect.fill(0);
      this.#stamp = 0;
    }
    return ++this.#stamp;
  }

  #count(kind: DescriptorChainErrorKind): void {
    this.counters.errors++;
    this.counters.byKind[kind]++;
  }

  #fail(
    chain: DescriptorChain,
    kind: DescriptorChainErrorKind,
    desc: number,
    inTable: boolean,
    why: string,
  ): never {
    this.#count(kind);
    const head = chain.head;
    chain.count =
      chain.readable =
      chain.readableBytes =
      chain.writableBytes =
        0;
    const where = inTable ? `indirect descriptor ${desc}` : `descriptor ${desc}`;
    throw new DescriptorChainError(
      kind,
      head,
      desc,
      inTable,
      `chain with head ${head >= 0 ? head : "(invalid)"}: ${desc >= 0 ? where + ": " : ""}${why}`,
    );
  }

  /** Validate one buffer descriptor and add it to the chain. */
  #buffer(
    chain: DescriptorChain,
    i: number,
    inTable: boolean,
    lo: number,
    hi: number,
    len: number,
    flags: number,
  ): boolean {
    const f = appendBuffer(chain, this.#memory, this.#regionGpa, lo, hi, len, flags);
    if (f === null) return true;
    if (f.kind === "miss") return this.#miss(i, inTable, f.why);
    this.#fail(chain, f.kind, i, inTable, f.why);
  }

  /** Leave the walk for a missing translation (see {@linkcode TranslationWait}). */
  #miss(i: number, inTable: boolean, why: string): false {
    this.#missDesc = i;
    this.#missInTable = inTable;
    this.#missWhy = why;
    return false;
  }

  /** The chain waited its full time for a translation: it fails, consumed. */
  #unmapped(chain: DescriptorChain): never {
    this.#fail(
      chain,
      "unmapped",
      this.#missDesc,
      this.#missInTable,
      `${this.#missWhy}; none came in ${IOTLB_MISS_TIMEOUT_MS} ms`,
    );
  }

  /** Follow an indirect table (virtio 1.2 §2.7.5.3). */
  #indirectTable(
    chain: DescriptorChain,
    i: number,
    lo: number,
    hi: number,
    len: number,
    flags: number,
    buffers: number,
  ): boolean {
    if (!this.#indirect) {
      this.#fail(
        chain,
        "bad-indirect",
        i,
        false,
        "indirect descriptor but VIRTIO_F_INDIRECT_DESC was not negotiated",
      );
    }
    if ((flags & VIRTQ_DESC_F_NEXT) !== 0) {
      this.#fail(chain, "bad-indirect", i, false, "indirect descriptor also has the NEXT flag");
    }
    if (len === 0 || len % DESC_SIZE !== 0) {
      this.#fail(
        chain,
        "bad-indirect",
        i,
        false,
        `indirect table length ${len} is not a positive multiple of 16`,
      );
    }
    const entries = len / DESC_SIZE;
    if (entries > this.num) {
      this.#fail(
        chain,
        "bad-indirect",
        i,
        false,
        `indirect table of ${entries} descriptors is larger than the queue size ${this.num}`,
      );
    }
    const r = locateIndirectTable(this.#memory, lo, hi, len);
    if (typeof r !== "number") {
      if (r.kind === "miss") return this.#miss(i, false, r.why);
      this.#fail(chain, r.kind, i, false, r.why);
    }
    chain.indirect = true;
    const view = this.#regionViews[r];
    const base = this.#memory.offset;
    const seen = this.#seenIndirect;
    const stamp = this.#stamp;
    let j = 0;
    for (;;) {
      if (seen[j] === stamp) {
        this.#fail(
          chain,
          "loop",
          j,
          true,
          `descriptor ${j} appears twice in the indirect table (a loop)`,
        );
      }
      seen[j] = stamp;
      chain.descriptors++;
      const at = base + j * DESC_SIZE;
      const dlo = view.getUint32(at, true);
      const dhi = view.getUint32(at + 4, true);
      const dlen = view.getUint32(at + 8, true);
      const dflags = view.getUint16(at + 12, true);
      if ((dflags & VIRTQ_DESC_F_INDIRECT) !== 0) {
        this.#fail(
          chain,
          "nested-indirect",
          j,
          true,
          "indirect descriptor inside an indirect table",
        );
      }
      if (++buffers > this.#maxChain) {
        this.#fail(
          chain,
          "too-long",
          j,
          true,
          `chain is longer than ${this.#maxChain} descriptors`,
        );
      }
      if (!this.#buffer(chain, j, true, dlo, dhi, dlen, dflags)) return false;
      if ((dflags & VIRTQ_DESC_F_NEXT) === 0) return true;
      const next = view.getUint16(at + 14, true);
      if (next >= entries) {
        this.#fail(
          chain,
          "bad-index",
          j,
          true,
          `descriptor ${j} has next ${next}, not below the table's ${entries} entries`,
        );
      }
      j = next;
    }
  }
}
