/**
 * The device side of a packed virtqueue (virtio 1.2 §2.8), with the same
 * methods as {@linkcode SplitQueue}, so a software device runs either ring
 * layout through the {@linkcode Virtqueue} interface.
 *
 * The device walks the descriptor ring from its `next` position: a
 * descriptor is available when its `AVAIL` flag equals the device's copy of
 * the driver's wrap counter and its `USED` flag does not (§2.8.1). A chain
 * is a run of consecutive descriptors linked by `NEXT`, its buffer ID in the
 * last one (§2.8.6); it may wrap around the ring's end. The device returns a
 * buffer by writing a used descriptor (ID, length, and both flags set to its
 * own wrap counter) at its used position, which then moves on by the number
 * of descriptors the chain took (§2.8.7).
 *
 * Memory ordering. The descriptor's flags are read before its other fields
 * (the driver writes the flags last, §2.8.21.3): with a plain load on
 * x86-64, which keeps loads in order, with `Atomics.load` elsewhere. A used
 * descriptor's flags are stored after its ID and length. Used descriptors
 * pushed together are published together: every flag but the first is
 * stored at push, the first one at publish with `Atomics.store` (so the
 * driver, which reads in ring order, sees all of them or none).
 *
 * Hostile rings are handled as for split rings: a chain that breaks the
 * rules throws a {@linkcode DescriptorChainError}, counted, after the device
 * has consumed the chain (up to its last `NEXT`, at most the ring's size):
 * `head` is its buffer ID when one was read and is valid, so the device can
 * return it with length 0 and go on.
 *
 * @module
 */

import type { GuestMemory } from "../memory/guest_memory.ts";
import { IOTLB_MISS_TIMEOUT_MS, TranslationWait } from "./translation_wait.ts";
import type { DirtyLog } from "../memory/dirty_log.ts";
import { readChainInto, writeChainFrom } from "./chain_copy.ts";
import { appendBuffer, locateIndirectTable, MAX_HIGH_WORD, TWO_32 } from "./chain_build.ts";
import {
  DESCRIPTOR_CHAIN_ERROR_KINDS,
  type DescriptorChain,
  DescriptorChainError,
  type DescriptorChainErrorKind,
  type WritableBuffers,
} from "./descriptor.ts";
import {
  DESC_SIZE,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
} from "./layout.ts";
import {
  encodePackedIndex,
  type PackedQueueLayout,
  packedRingViews,
  RING_EVENT_FLAGS_DESC,
  RING_EVENT_FLAGS_DISABLE,
  RING_EVENT_FLAGS_ENABLE,
  VIRTQ_DESC_F_AVAIL,
  VIRTQ_DESC_F_USED,
} from "./packed_layout.ts";
import type { SplitQueueCounters } from "./split_queue.ts";
import type { RingPosition } from "../ops.ts";

export type { PackedQueueLayout } from "./packed_layout.ts";

/** How a {@linkcode PackedQueue} starts and what was negotiated. */
export interface PackedQueueOptions {
  /** Where the device goes on from: next available and used positions and wrap counters. */
  position: RingPosition;
  /** `VIRTIO_F_EVENT_IDX` was negotiated (event suppression by descriptor). */
  eventIdx: boolean;
  /** `VIRTIO_F_INDIRECT_DESC` was negotiated. */
  indirect: boolean;
  /** Most buffer descriptors one chain may have (default and maximum: the queue size). */
  maxChainLength?: number;
  /** Dirty log to mark written buffers and used descriptors in (live migration). */
  log?: DirtyLog | null;
}

const BOTH = VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED;
// The flags as they sit in a descriptor's last 32-bit word, above the buffer ID.
const AVAIL_BIT = VIRTQ_DESC_F_AVAIL << 16;
const USED_BIT = VIRTQ_DESC_F_USED << 16;
const ONE_BUFFER_MASK = (VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_INDIRECT) << 16;
const WRITE_BIT = VIRTQ_DESC_F_WRITE << 16;
/** What a one-descriptor writable chain's flags are checked for: the wrap bits, NEXT, INDIRECT, WRITE. */
const ONE_WRITABLE_MASK = AVAIL_BIT | USED_BIT | ONE_BUFFER_MASK | WRITE_BIT;
/**
 * Whether a plain load may stand for an acquire load: a descriptor's flags
 * must be read before its other fields (§2.8.21.3). x86-64 never reorders a
 * load with an earlier load, and the engine keeps typed-array loads in
 * program order, so there the flags' plain load is enough; `Atomics.load`
 * is a builtin call, not an instruction. `deno task bench`'s b2f-64-packed
 * went from 10.6 to 13.0 Mpps, f2b-64-packed from 29 to 35 (docs/benchmarks.md).
 * Other processors get `Atomics.load`.
 */
const ORDERED_LOADS = Deno.build.arch === "x86_64";

/** The chain walk failed: what to throw once the chain is consumed. */
class ChainFault {
  constructor(
    readonly kind: DescriptorChainErrorKind | "miss",
    readonly descriptor: number,
    readonly inTable: boolean,
    readonly why: string,
  ) {}
}

/**
 * The device side of one packed virtqueue over a {@linkcode GuestMemory}.
 *
 * @example A loopback step over either ring layout
 * ```ts
 * import { type DeviceContext, DescriptorChain, PackedQueue } from "@vhost-mdev/sdk";
 *
 * declare const ctx: DeviceContext;
 * const queue = new PackedQueue(ctx.memory, ctx.vring(0), {
 *   position: ctx.vring(0).state, eventIdx: true, indirect: true,
 * });
 * const chain = new DescriptorChain();
 * while (queue.pop(chain)) queue.pushUsed(chain.head, 0);
 * queue.publishUsed();
 * if (queue.needsNotify()) ctx.signal(0);
 * ```
 */
export class PackedQueue {
  /** The ring's size. */
  readonly num: number;
  /** What the queue has seen. */
  readonly counters: SplitQueueCounters;
  /** Always true: the ring is packed. */
  readonly packed = true;
  readonly #memory: GuestMemory;
  readonly #regionBytes: Uint8Array[];
  readonly #regionViews: DataView[];
  readonly #regionGpa: Float64Array;
  readonly #wait: TranslationWait;
  /** Behind a vIOMMU: buffer addresses are IOVAs, and a pop may wait for a translation. */
  readonly #viaIotlb: boolean;
  readonly #desc: Uint32Array;
  readonly #desc16: Uint16Array;
  readonly #driverEvent: Uint16Array;
  readonly #deviceEvent: Uint16Array;
  readonly #eventIdx: boolean;
  readonly #indirect: boolean;
  readonly #maxChain: number;
  readonly #descAddr: number;
  readonly #deviceEventAddr: number;
  /** Descriptors each buffer ID in flight took in the ring (0: not in flight). */
  readonly #inFlight: Uint16Array;
  /** {@linkcode PackedQueue.pushUsedInOrder}'s scratch: the in-flight entries it took. */
  readonly #batchTaken: Uint16Array;
  /** The first used descriptor pushed and not yet published (-1: none), and its flags. */
  #pendingSlot = -1;
  #pendingFlags = 0;
  #next: number;
  #availWrap: boolean;
  #used: number;
  #usedWrap: boolean;
  #signalled = 0;
  #signalledValid = false;
  #log: DirtyLog | null;

  /**
   * Validate the layout and make the views; writes the device event area
   * (notifications on).
   *
   * @throws RangeError for a bad size or layout, or a position out of range.
   */
  constructor(memory: GuestMemory, layout: PackedQueueLayout, options: PackedQueueOptions) {
    const views = packedRingViews(memory.regions, layout);
    const num = layout.num;
    this.num = num;
    this.#memory = memory;
    this.#regionBytes = memory.regions.map((r) => r.bytes);
    this.#regionViews = memory.regions.map((r) => r.view);
    this.#regionGpa = new Float64Array(memory.regions.map((r) => r.gpa));
    this.#wait = new TranslationWait(memory);
    this.#viaIotlb = memory.iotlb !== null;
    this.#desc = views.desc;
    this.#desc16 = views.desc16;
    this.#driverEvent = views.driverEvent;
    this.#deviceEvent = views.deviceEvent;
    this.#eventIdx = options.eventIdx;
    this.#indirect = options.indirect;
    const maxChain = options.maxChainLength ?? num;
    if (!Number.isInteger(maxChain) || maxChain < 1 || maxChain > num) {
      throw new RangeError(`maxChainLength ${maxChain} is not in 1..${num}`);
    }
    this.#maxChain = maxChain;
    this.#descAddr = layout.descAddr;
    this.#deviceEventAddr = layout.usedAddr;
    const p = options.position;
    for (const [name, v] of [["availIdx", p.availIdx], ["usedIdx", p.usedIdx]] as const) {
      if (!Number.isInteger(v) || v < 0 || v >= num) {
        throw new RangeError(`${name} ${v} is not a position in a ring of ${num}`);
      }
    }
    this.#next = p.availIdx;
    this.#availWrap = p.availWrap;
    this.#used = p.usedIdx;
    this.#usedWrap = p.usedWrap;
    this.#inFlight = new Uint16Array(num);
    this.#batchTaken = new Uint16Array(num);
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
    Atomics.store(this.#deviceEvent, 1, RING_EVENT_FLAGS_ENABLE);
  }

  /** The memory the queue reads. */
  get memory(): GuestMemory {
    return this.#memory;
  }

  /** Next available position as `GET_VRING_BASE` carries it: index, wrap counter in bit 15. */
  get lastAvailIdx(): number {
    return encodePackedIndex(this.#next, this.#availWrap);
  }

  /** Next used position, encoded the same way. */
  get usedIdx(): number {
    return encodePackedIndex(this.#used, this.#usedWrap);
  }

  /** Where the queue is: positions and wrap counters. */
  position(): RingPosition {
    return {
      availIdx: this.#next,
      availWrap: this.#availWrap,
      usedIdx: this.#used,
      usedWrap: this.#usedWrap,
    };
  }

  /**
   * The available position `descriptors` back from the current one,
   * encoded as {@linkcode PackedQueue.lastAvailIdx}: where to resume when
   * chains taken but not completed are to be taken again.
   */
  availBefore(descriptors: number): number {
    let idx = this.#next - descriptors, wrap = this.#availWrap;
    while (idx < 0) {
      idx += this.num;
      wrap = !wrap;
    }
    return encodePackedIndex(idx, wrap);
  }

  /** Descriptors that buffer `id`, popped and not yet returned, took in the ring. */
  descriptorsOf(id: number): number {
    return this.#inFlight[id] ?? 0;
  }

  /** Start or stop marking writes in a dirty log. */
  setLog(log: DirtyLog | null): void {
    this.#log = log;
  }

  /** Whether a chain is available at the device's position (reads its flags once). */
  available(): number {
    return this.#isAvail(this.#next, this.#availWrap) ? 1 : 0;
  }

  #isAvail(i: number, wrap: boolean): boolean {
    const f = Atomics.load(this.#desc16, i * 8 + 7);
    const avail = (f & VIRTQ_DESC_F_AVAIL) !== 0, used = (f & VIRTQ_DESC_F_USED) !== 0;
    return avail === wrap && used !== wrap;
  }

  /**
   * Take the next available chain into `chain` (`chain.head` is its buffer
   * ID). Returns false (with `chain` emptied) when there is none.
   *
   * @throws DescriptorChainError for a hostile chain, counted, the chain
   *   consumed; `head` is its buffer ID when valid, else -1.
   */
  pop(chain: DescriptorChain): boolean {
    chain.reset(-1);
    if (this.#viaIotlb && this.#wait.waiting()) return false;
    const start = this.#next, startWrap = this.#availWrap;
    // Flags and buffer ID in one load, before the descriptor's other fields
    // (see ORDERED_LOADS).
    const w3 = (start << 2) + 3;
    const idFlags = ORDERED_LOADS ? this.#desc[w3] : Atomics.load(this.#desc, w3);
    const avail = (idFlags & AVAIL_BIT) !== 0, used = (idFlags & USED_BIT) !== 0;
    if (avail !== startWrap || used === startWrap) return false;
    if ((idFlags & ONE_BUFFER_MASK) === 0 && !this.#viaIotlb && this.#popOne(chain, idFlags)) {
      return true;
    }
    const generation = this.#viaIotlb ? this.#wait.snapshot() : 0;
    const num = this.num, desc = this.#desc;
    let i = start,
      wrap = startWrap,
      count = 0,
      buffers = 0,
      id = -1,
      fault: ChainFault | null = null;
    for (;;) {
      if (count > 0 && !this.#isAvail(i, wrap)) {
        fault ??= new ChainFault(
          "bad-wrap",
          i,
          false,
          `descriptor ${i} continues the chain but is not available (flags 0x${
            this.#desc16[i * 8 + 7].toString(16)
          }, driver wrap counter ${wrap ? 1 : 0})`,
        );
        break;
      }
      count++;
      const w = i << 2;
      const lo = desc[w], hi = desc[w + 1], len = desc[w + 2], idFlags = desc[w + 3];
      const flags = idFlags >>> 16;
      id = idFlags & 0xffff;
      chain.descriptors++;
      if (++i === num) {
        i = 0;
        wrap = !wrap;
      }
      if (fault === null) {
        if ((flags & VIRTQ_DESC_F_INDIRECT) !== 0) {
          fault = this.#indirectTable(chain, count - 1 + start, lo, hi, len, flags, buffers);
        } else if (++buffers > this.#maxChain) {
          fault = new ChainFault(
            "too-long",
            (start + count - 1) % num,
            false,
            `chain is longer than ${this.#maxChain} descriptors`,
          );
        } else {
          fault = this.#buffer(chain, (start + count - 1) % num, false, lo, hi, len, flags);
        }
      }
      if ((flags & VIRTQ_DESC_F_NEXT) === 0) break;
      if (count === num) {
        fault ??= new ChainFault(
          "too-long",
          (start + count - 1) % num,
          false,
          `chain runs around the whole ring of ${num} descriptors`,
        );
        break;
      }
    }
    if (fault !== null && fault.kind === "miss") {
      if (this.#wait.missed(this.#memory, generation)) {
        // Not the guest's fault: the chain stays available until the translation comes.
        chain.reset(-1);
        return false;
      }
      fault = new ChainFault(
        "unmapped",
        fault.descriptor,
        fault.inTable,
        `${fault.why}; none came in ${IOTLB_MISS_TIMEOUT_MS} ms`,
      );
    }
    this.#next = i;
    this.#availWrap = wrap;
    const inRange = id >= 0 && id < num;
    // An ID the device still holds cannot be taken again: its used
    // descriptor would return only one of the two chains (§2.8.6: the
    // driver makes an ID available again only after it was used).
    const held = inRange && this.#inFlight[id] !== 0;
    if (fault === null && !inRange) {
      fault = new ChainFault(
        "bad-index",
        (start + count - 1) % num,
        false,
        `buffer ID ${id} is not below the queue size ${num}`,
      );
    } else if (fault === null && held) {
      fault = new ChainFault(
        "bad-index",
        (start + count - 1) % num,
        false,
        `buffer ID ${id} is already in flight: the device has not returned it`,
      );
    }
    const valid = inRange && !held;
    if (valid) this.#inFlight[id] = count;
    if (fault !== null) this.#throw(chain, valid ? id : -1, fault);
    chain.head = id;
    this.counters.chains++;
    if (this.#viaIotlb) this.#wait.done();
    return true;
  }

  /**
   * The common chain, taken without the general walk: one descriptor, no
   * `NEXT` or `INDIRECT`, a buffer ID in range and not in flight, a non-empty buffer inside
   * one region of guest memory. False (nothing changed) for anything else,
   * which {@linkcode PackedQueue.pop}'s walk then takes, checks and reports.
   */
  #popOne(chain: DescriptorChain, idFlags: number): boolean {
    const start = this.#next, w = start << 2, desc = this.#desc;
    const id = idFlags & 0xffff, len = desc[w + 2], hi = desc[w + 1];
    if (id >= this.num || this.#inFlight[id] !== 0 || len === 0 || hi > MAX_HIGH_WORD) {
      return false;
    }
    const address = desc[w] + hi * TWO_32;
    const r = this.#memory.find(address, len);
    if (r < 0) return false;
    chain.addSegment(
      address,
      len,
      r,
      address - this.#regionGpa[r],
      (idFlags & WRITE_BIT) !== 0,
    );
    chain.descriptors = 1;
    chain.head = id;
    this.#inFlight[id] = 1;
    if (start + 1 === this.num) {
      this.#next = 0;
      this.#availWrap = !this.#availWrap;
    } else {
      this.#next = start + 1;
    }
    this.counters.chains++;
    return true;
  }

  /**
   * Take, into `out` from index `at`, up to `max` available chains that are
   * each one device-writable descriptor of at least `minLength` bytes inside
   * one region; returns how many. Stops at the first chain that is anything
   * else, which {@linkcode PackedQueue.pop} then takes and checks. Never
   * throws; takes nothing behind a vIOMMU. The receive path's batch: with
   * it `deno task bench`'s b2f-64-packed went from 11.7 to 13.2 Mpps.
   */
  popWritable(out: WritableBuffers, at: number, max: number, minLength: number): number {
    if (this.#viaIotlb) return 0;
    const desc = this.#desc, num = this.num, inFlight = this.#inFlight, memory = this.#memory;
    const regionGpa = this.#regionGpa;
    let next = this.#next, wrap = this.#availWrap, n = 0;
    // The flags of an available one-descriptor writable chain, under ONE_WRITABLE_MASK.
    let want = (wrap ? AVAIL_BIT : USED_BIT) | WRITE_BIT;
    for (; n < max; n++) {
      const w = next << 2;
      const idFlags = ORDERED_LOADS ? desc[w + 3] : Atomics.load(desc, w + 3);
      if ((idFlags & ONE_WRITABLE_MASK) !== want) break;
      const id = idFlags & 0xffff, len = desc[w + 2], hi = desc[w + 1];
      if (id >= num || inFlight[id] !== 0 || len < minLength || len === 0) break;
      if (hi > MAX_HIGH_WORD) break;
      const address = desc[w] + hi * TWO_32;
      const r = memory.find(address, len);
      if (r < 0) break;
      out.set(at + n, id, r, address - regionGpa[r], len);
      inFlight[id] = 1;
      if (++next === num) {
        next = 0;
        wrap = !wrap;
        want = (wrap ? AVAIL_BIT : USED_BIT) | WRITE_BIT;
      }
    }
    this.#next = next;
    this.#availWrap = wrap;
    this.counters.chains += n;
    return n;
  }

  /** Copy the chain's readable bytes, from `offset` into them, to `dst`; returns bytes copied. */
  readChain(chain: DescriptorChain, dst: Uint8Array, offset = 0): number {
    return readChainInto(this.#regionBytes, chain, dst, offset);
  }

  /** Copy `src` into the chain's writable buffers from `offset`; returns bytes written. */
  writeChain(chain: DescriptorChain, src: Uint8Array, offset = 0): number {
    return writeChainFrom(this.#regionBytes, chain, src, offset, this.#log);
  }

  /**
   * Return buffer `id` with `len` bytes written: a used descriptor at the
   * used position, visible to the driver at {@linkcode PackedQueue.publishUsed}.
   *
   * @throws RangeError when `id` is not a buffer the device holds.
   */
  pushUsed(id: number, len: number): void {
    if (!((id >>> 0) < this.num) || id !== (id | 0) || this.#inFlight[id] === 0) {
      throw new RangeError(`used buffer ID ${id} is not a buffer the device holds`);
    }
    const descriptors = this.#inFlight[id];
    this.#inFlight[id] = 0;
    this.#writeUsed(id, len, descriptors);
    this.counters.used++;
  }

  /**
   * Write a used descriptor (`id`, `len`) at the used position and move
   * the position past the `descriptors` ring slots it stands for.
   */
  #writeUsed(id: number, len: number, descriptors: number): void {
    const slot = this.#used;
    const w = slot << 2;
    this.#desc[w + 2] = len;
    this.#desc16[slot * 8 + 6] = id;
    const flags = (this.#usedWrap ? BOTH : 0) | (len > 0 ? VIRTQ_DESC_F_WRITE : 0);
    if (this.#pendingSlot < 0) {
      // The batch's first: its flags wait for publishUsed.
      this.#pendingSlot = slot;
      this.#pendingFlags = flags;
    } else {
      this.#desc16[slot * 8 + 7] = flags;
    }
    let next = slot + descriptors;
    if (next >= this.num) {
      // A hostile driver can have the device hold more descriptors than the
      // ring has (it reused slots the device had not returned); a batch of
      // them passes the ring's end more than once.
      const laps = Math.floor(next / this.num);
      next -= laps * this.num;
      if ((laps & 1) !== 0) this.#usedWrap = !this.#usedWrap;
    }
    this.#used = next;
    if (this.#log !== null) this.#log.mark(this.#descAddr + slot * DESC_SIZE, DESC_SIZE);
  }

  /**
   * With `VIRTIO_F_IN_ORDER` negotiated: return buffers `ids[0, count)` (the
   * ones taken first among those the device holds, in the order taken) with
   * one used descriptor, the last ID's, at the used position; the used
   * position then skips every descriptor the batch took (virtio 1.2,
   * "In-order use of descriptors": the driver takes the buffers it skips
   * as used in full). Not visible to the driver until
   * {@linkcode PackedQueue.publishUsed}.
   *
   * @throws RangeError when `count` is not in 1..num or an ID is not a
   *   buffer the device holds (or comes twice); nothing is pushed then.
   */
  pushUsedInOrder(ids: ArrayLike<number>, count: number, len: number): void {
    if (!Number.isInteger(count) || count < 1 || count > this.num || count > ids.length) {
      throw new RangeError(`in-order batch of ${count} is not in 1..${this.num}`);
    }
    // Each ID leaves the in-flight table as it is counted, so one given
    // twice is found not held; on any error the table is put back.
    const inFlight = this.#inFlight, taken = this.#batchTaken;
    let descriptors = 0;
    for (let i = 0; i < count; i++) {
      const id = ids[i];
      if (!((id >>> 0) < this.num) || id !== (id | 0) || inFlight[id] === 0) {
        for (let j = 0; j < i; j++) inFlight[ids[j]] = taken[j];
        throw new RangeError(`used buffer ID ${id} is not a buffer the device holds`);
      }
      taken[i] = inFlight[id];
      descriptors += taken[i];
      inFlight[id] = 0;
    }
    this.#writeUsed(ids[count - 1], len, descriptors);
    this.counters.used += count;
  }

  /**
   * Publish every pushed used descriptor. {@linkcode PackedQueue.pushUsed}
   * stored the flags of every descriptor but the batch's first with plain
   * stores; this stores the first one's with `Atomics.store`, a full barrier
   * after which everything before it is visible. The driver reads used
   * descriptors in ring order, so it sees the batch only once it sees the
   * first, and then all of it (x86-64 keeps stores in order). One barrier
   * per batch instead of one per descriptor: `deno task bench`'s
   * f2b-64-packed went from 12.3 to 21.8 Mpps.
   */
  publishUsed(): void {
    const slot = this.#pendingSlot;
    if (slot < 0) return;
    Atomics.store(this.#desc16, slot * 8 + 7, this.#pendingFlags);
    this.#pendingSlot = -1;
  }

  /**
   * Whether to interrupt the driver for what was published since the last
   * call (§2.8.10): the driver's event flags, and with `EVENT_IDX` its
   * `desc_event_off_wrap` against the used positions passed since.
   */
  needsNotify(): boolean {
    const now = this.#used, wrapNow = this.#usedWrap;
    const old = this.#signalled;
    const valid = this.#signalledValid;
    this.#signalled = now;
    this.#signalledValid = true;
    let need: boolean;
    const flags = Atomics.load(this.#driverEvent, 1) & 0x3;
    if (!valid) need = flags !== RING_EVENT_FLAGS_DISABLE;
    else if (flags === RING_EVENT_FLAGS_DISABLE) need = false;
    else if (flags !== RING_EVENT_FLAGS_DESC || !this.#eventIdx) need = true;
    else {
      // Positions as one number line: the used position before and now, and
      // the event's, each unwrapped against the current wrap counter.
      const offWrap = this.#driverEvent[0];
      let off = offWrap & 0x7fff;
      if ((offWrap >> 15 !== 0) !== wrapNow) off -= this.num;
      let before = old;
      if (now <= before) before -= this.num;
      need = ((now - off - 1) & 0xffff) < ((now - before) & 0xffff);
    }
    if (need) this.counters.notifications++;
    else this.counters.suppressed++;
    return need;
  }

  /** Ask the driver not to kick while the device polls. */
  disableNotifications(): void {
    Atomics.store(this.#deviceEvent, 1, RING_EVENT_FLAGS_DISABLE);
    if (this.#log !== null) this.#log.mark(this.#deviceEventAddr, 4);
  }

  /**
   * Ask the driver to kick for its next buffer. Returns true when a chain
   * is already available, which the caller must process.
   *
   * The device asks with `RING_EVENT_FLAGS_ENABLE` even with `EVENT_IDX`:
   * the offset form (`DESC`) is the device's option (§2.8.10). With it, a
   * Linux 6.1 guest under QEMU 7.2 sent its first ARP requests and then no
   * kick the device was waiting for (measured: 3 frames each way, then
   * silence); with the flags it runs. The driver's own `DESC` requests are
   * honoured in full by {@linkcode PackedQueue.needsNotify}.
   */
  enableNotifications(): boolean {
    Atomics.store(this.#deviceEvent, 1, RING_EVENT_FLAGS_ENABLE);
    if (this.#log !== null) this.#log.mark(this.#deviceEventAddr, 4);
    // Waiting for a translation: the core kicks the ring when it comes.
    if (this.#viaIotlb && this.#wait.waiting()) return false;
    return this.#isAvail(this.#next, this.#availWrap);
  }

  #throw(chain: DescriptorChain, head: number, f: ChainFault): never {
    // A miss never gets here: pop turns it into a wait or `unmapped`.
    const kind = f.kind as DescriptorChainErrorKind;
    this.counters.errors++;
    this.counters.byKind[kind]++;
    chain.count =
      chain.readable =
      chain.readableBytes =
      chain.writableBytes =
        0;
    chain.head = head;
    const where = f.inTable ? `indirect descriptor ${f.descriptor}` : `descriptor ${f.descriptor}`;
    throw new DescriptorChainError(
      kind,
      head,
      f.descriptor,
      f.inTable,
      `chain with buffer ID ${head >= 0 ? head : "(invalid)"}: ${where}: ${f.why}`,
    );
  }

  /** Validate one buffer descriptor and add it to the chain; a fault or null. */
  #buffer(
    chain: DescriptorChain,
    i: number,
    inTable: boolean,
    lo: number,
    hi: number,
    len: number,
    flags: number,
  ): ChainFault | null {
    const f = appendBuffer(chain, this.#memory, this.#regionGpa, lo, hi, len, flags);
    return f === null ? null : new ChainFault(f.kind, i, inTable, f.why);
  }

  /** Follow an indirect table (§2.8.19): its descriptors are used in order, no `NEXT`. */
  #indirectTable(
    chain: DescriptorChain,
    i: number,
    lo: number,
    hi: number,
    len: number,
    flags: number,
    buffers: number,
  ): ChainFault | null {
    i %= this.num;
    if (!this.#indirect) {
      return new ChainFault("bad-indirect", i, false, "indirect descriptor without INDIRECT_DESC");
    }
    if ((flags & VIRTQ_DESC_F_NEXT) !== 0) {
      return new ChainFault("bad-indirect", i, false, "indirect descriptor also has the NEXT flag");
    }
    if (buffers > 0) {
      return new ChainFault(
        "bad-indirect",
        i,
        false,
        "indirect descriptor after buffer descriptors",
      );
    }
    if (len === 0 || len % DESC_SIZE !== 0) {
      return new ChainFault(
        "bad-indirect",
        i,
        false,
        `indirect table length ${len} is not a positive multiple of 16`,
      );
    }
    const entries = len / DESC_SIZE;
    if (entries > this.#maxChain) {
      return new ChainFault(
        "bad-indirect",
        i,
        false,
        `indirect table of ${entries} descriptors is larger than ${this.#maxChain}`,
      );
    }
    const r = locateIndirectTable(this.#memory, lo, hi, len);
    if (typeof r !== "number") return new ChainFault(r.kind, i, false, r.why);
    chain.indirect = true;
    const view = this.#regionViews[r];
    const base = this.#memory.offset;
    for (let j = 0; j < entries; j++) {
      chain.descriptors++;
      const at = base + j * DESC_SIZE;
      const dflags = view.getUint16(at + 14, true);
      if ((dflags & VIRTQ_DESC_F_INDIRECT) !== 0) {
        return new ChainFault("nested-indirect", j, true, "indirect descriptor inside a table");
      }
      const fault = this.#buffer(
        chain,
        j,
        true,
        view.getUint32(at, true),
        view.getUint32(at + 4, true),
        view.getUint32(at + 8, true),
        dflags,
      );
      if (fault !== null) return fault;
    }
    return null;
  }
}
