/**
 * The driver side of a packed virtqueue (virtio 1.2 §2.8), as a guest's
 * virtio driver runs it: the test kit's guests use it to drive devices over
 * packed rings, with the same methods as {@linkcode SplitQueueDriver}.
 *
 * The driver writes a chain's descriptors at its avail position with `AVAIL`
 * equal to its wrap counter and `USED` the opposite, the head's flags last
 * (§2.8.21.3): here at {@linkcode PackedQueueDriver.publish}, so what was
 * added becomes visible together. Buffer IDs come from a free list; a
 * chain's ID is in each of its descriptors. It reads used descriptors at its
 * used position and moves on by the number of descriptors each buffer took.
 *
 * @module
 */

import type { GuestMemory } from "../memory/guest_memory.ts";
import { TWO_32 } from "./chain_build.ts";
import { InOrderBuffers, writableBytes } from "./in_order.ts";
import {
  DESC_SIZE,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
} from "./layout.ts";
import {
  encodePackedIndex,
  EVENT_SUPPRESS_SIZE,
  isValidPackedQueueSize,
  MAX_PACKED_QUEUE_SIZE,
  type PackedQueueLayout,
  packedRingSize,
  packedRingViews,
  RING_EVENT_FLAGS_DESC,
  RING_EVENT_FLAGS_DISABLE,
  RING_EVENT_FLAGS_ENABLE,
  VIRTQ_DESC_F_AVAIL,
  VIRTQ_DESC_F_USED,
} from "./packed_layout.ts";
import type { UsedBuffer } from "./split_driver.ts";

/** A layout made by {@linkcode PackedQueueDriver.layout}, with room for indirect tables. */
export interface PackedQueueDriverLayout extends PackedQueueLayout {
  /** Bytes from the base to the end of the last area. */
  bytes: number;
  /** Guest-physical address of the indirect tables (one per buffer ID), or 0. */
  indirectAddr: number;
  /** Descriptors per indirect table (0: none). */
  indirectSegments: number;
}

/** Options of {@linkcode PackedQueueDriver}. */
export interface PackedQueueDriverOptions {
  /** `VIRTIO_F_EVENT_IDX` was negotiated. */
  eventIdx: boolean;
  /** `VIRTIO_F_INDIRECT_DESC` was negotiated: chains of 2+ segments go in a table. */
  indirect?: boolean;
  /**
   * Added to every guest-physical address the driver writes into a
   * descriptor (buffers and indirect tables; not {@linkcode PackedQueueDriver.writeDescriptor}'s):
   * the device is given I/O virtual addresses, as behind an IOMMU that maps
   * guest memory at that offset (default 0).
   */
  deviceAddressOffset?: number;
  /**
   * `VIRTIO_F_IN_ORDER` was negotiated: a used descriptor may stand for a
   * batch (every buffer made available before its ID is used too, in full),
   * as the device may write one per batch (default false).
   */
  inOrder?: boolean;
}

function align(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}

/**
 * The driver side of one packed virtqueue. Construction initialises the
 * ring (every descriptor neither available nor used for wrap counter 1).
 *
 * @example Hand a buffer to the device and take it back
 * ```ts
 * import { DescriptorChain, GuestMemory, PackedQueue, PackedQueueDriver } from "@vhost-mdev/sdk";
 *
 * const layout = PackedQueueDriver.layout(8, 0);
 * const memory = GuestMemory.fromBuffers([{ gpa: 0, bytes: new Uint8Array(0x10000) }]);
 * const driver = new PackedQueueDriver(memory, layout, { eventIdx: true });
 * const device = new PackedQueue(memory, layout, {
 *   position: { availIdx: 0, usedIdx: 0, availWrap: true, usedWrap: true },
 *   eventIdx: true,
 *   indirect: false,
 * });
 * driver.add([{ gpa: 0x8000, len: 64, write: true }], 7);
 * driver.publish();
 * const chain = new DescriptorChain();
 * device.pop(chain);
 * device.pushUsed(chain.head, device.writeChain(chain, new Uint8Array(64).fill(1)));
 * device.publishUsed();
 * driver.takeUsed(); // { token: 7, len: 64 }
 * ```
 */
export class PackedQueueDriver {
  /** The ring's size. */
  readonly num: number;
  /** Always true. */
  readonly packed = true;
  readonly #memory: GuestMemory;
  readonly #offset: number;
  readonly #desc: Uint32Array;
  readonly #desc16: Uint16Array;
  readonly #driverEvent: Uint16Array;
  readonly #deviceEvent: Uint16Array;
  readonly #eventIdx: boolean;
  readonly #indirectAddr: number;
  readonly #indirectSegments: number;
  /** Free buffer IDs, a stack. */
  readonly #freeIds: Uint16Array;
  #freeIdCount = 0;
  /** Per buffer ID: descriptors it took (0: not in flight), and its token. */
  readonly #count: Uint16Array;
  readonly #tokens: Float64Array;
  /** Heads added but not published: slot, flags. */
  readonly #pendingSlot: Int32Array;
  readonly #pendingFlags: Uint16Array;
  #pending = 0;
  #numFree: number;
  #avail = 0;
  #availWrap = true;
  #used = 0;
  #usedWrap = true;
  #kickOld = 0;
  #kickOldWrap = true;
  #usedToken = 0;
  /** With `IN_ORDER`: the buffers in flight in the order made available. */
  readonly #inOrder: InOrderBuffers | null;
  #usedLen = 0;

  /**
   * A layout from guest-physical `base`: the descriptor ring, the driver and
   * device event areas, then `indirectSegments`-descriptor tables, one per
   * buffer ID, when asked for.
   */
  static layout(
    num: number,
    base: number,
    options: { indirectSegments?: number } = {},
  ): PackedQueueDriverLayout {
    if (!isValidPackedQueueSize(num)) {
      throw new RangeError(`packed queue size ${num} is not in 1..${MAX_PACKED_QUEUE_SIZE}`);
    }
    const segments = options.indirectSegments ?? 0;
    if (!Number.isInteger(segments) || segments < 0 || segments > num) {
      throw new RangeError(`indirectSegments ${segments} is not in 0..${num}`);
    }
    const descAddr = align(base, 16);
    const availAddr = align(descAddr + packedRingSize(num), 4);
    const usedAddr = availAddr + EVENT_SUPPRESS_SIZE;
    let end = usedAddr + EVENT_SUPPRESS_SIZE;
    let indirectAddr = 0;
    if (segments > 0) {
      indirectAddr = align(end, 16);
      end = indirectAddr + num * segments * DESC_SIZE;
    }
    return {
      num,
      descAddr,
      availAddr,
      usedAddr,
      indirectAddr,
      indirectSegments: segments,
      bytes: end - base,
    };
  }

  /**
   * Make the views and initialise the ring and both event areas.
   *
   * @throws RangeError for an invalid layout or an indirect request without
   *   tables in the layout.
   */
  constructor(
    memory: GuestMemory,
    layout:
      & PackedQueueLayout
      & Partial<Pick<PackedQueueDriverLayout, "indirectAddr" | "indirectSegments">>,
    options: PackedQueueDriverOptions,
  ) {
    const views = packedRingViews(memory.regions, layout);
    const num = layout.num;
    this.num = num;
    this.#memory = memory;
    this.#offset = options.deviceAddressOffset ?? 0;
    this.#desc = views.desc;
    this.#desc16 = views.desc16;
    this.#driverEvent = views.driverEvent;
    this.#deviceEvent = views.deviceEvent;
    this.#eventIdx = options.eventIdx;
    if (options.indirect) {
      const segments = layout.indirectSegments ?? 0;
      const addr = layout.indirectAddr ?? 0;
      if (segments < 2 || memory.find(addr, num * segments * DESC_SIZE) < 0) {
        throw new RangeError("indirect descriptors need a layout with indirect tables");
      }
      this.#indirectAddr = addr;
      this.#indirectSegments = segments;
    } else {
      this.#indirectAddr = 0;
      this.#indirectSegments = 0;
    }
    this.#inOrder = options.inOrder ? new InOrderBuffers(num) : null;
    this.#freeIds = new Uint16Array(num);
    for (let id = num - 1; id >= 0; id--) this.#freeIds[this.#freeIdCount++] = id;
    this.#count = new Uint16Array(num);
    this.#tokens = new Float64Array(num);
    this.#pendingSlot = new Int32Array(num);
    this.#pendingFlags = new Uint16Array(num);
    this.#numFree = num;
    this.#desc.fill(0);
    this.#driverEvent.fill(0);
    this.#deviceEvent.fill(0);
  }

  /** Ring descriptors free for {@linkcode PackedQueueDriver.add}. */
  freeCount(): number {
    return this.#numFree;
  }

  /** Next avail position, encoded with the wrap counter in bit 15. */
  get availIdx(): number {
    return encodePackedIndex(this.#avail, this.#availWrap);
  }

  /** Next used position, encoded the same way. */
  get lastUsedIdx(): number {
    return encodePackedIndex(this.#used, this.#usedWrap);
  }

  /**
   * Add a chain (device-readable segments first) under `token`; false when
   * the ring has too few free descriptors or no free buffer ID. Visible to
   * the device at {@linkcode PackedQueueDriver.publish}.
   */
  add(segments: readonly { gpa: number; len: number; write: boolean }[], token: number): boolean {
    const k = segments.length;
    if (k === 0) throw new RangeError("a chain needs at least one buffer");
    const indirect = k > 1 && this.#indirectSegments >= k;
    const slots = indirect ? 1 : k;
    if (this.#numFree < slots || this.#freeIdCount === 0) return false;
    const id = this.#freeIds[--this.#freeIdCount];
    this.#inOrder?.added(id, writableBytes(segments));
    this.#count[id] = slots;
    this.#tokens[id] = token;
    this.#numFree -= slots;
    if (indirect) {
      const table = this.#indirectAddr + id * this.#indirectSegments * DESC_SIZE;
      const bytes = this.#memory.bytes(table, k * DESC_SIZE);
      const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      for (let j = 0; j < k; j++) {
        const s = segments[j], at = j * DESC_SIZE;
        const addr = s.gpa + this.#offset;
        dv.setUint32(at, addr % TWO_32, true);
        dv.setUint32(at + 4, Math.floor(addr / TWO_32), true);
        dv.setUint32(at + 8, s.len, true);
        dv.setUint16(at + 12, 0, true);
        dv.setUint16(at + 14, s.write ? VIRTQ_DESC_F_WRITE : 0, true);
      }
      this.#put(table + this.#offset, k * DESC_SIZE, id, VIRTQ_DESC_F_INDIRECT, true);
      return true;
    }
    for (let j = 0; j < k; j++) {
      const s = segments[j];
      this.#put(
        s.gpa + this.#offset,
        s.len,
        id,
        (s.write ? VIRTQ_DESC_F_WRITE : 0) | (j < k - 1 ? VIRTQ_DESC_F_NEXT : 0),
        j === 0,
      );
    }
    return true;
  }

  /** Add one buffer. Returns false when the ring is full. */
  addBuffer(gpa: number, len: number, write: boolean, token: number): boolean {
    return this.add([{ gpa, len, write }], token);
  }

  /**
   * Write the descriptor at ring position `slot` as given, flags and all,
   * unchecked: for exercising a device with malformed rings. It is visible
   * at once (its flags decide whether the device sees it available).
   */
  writeDescriptor(slot: number, addr: number, len: number, id: number, flags: number): void {
    if (!(slot >= 0 && slot < this.num)) {
      throw new RangeError(`descriptor ${slot} is not below ${this.num}`);
    }
    const w = slot << 2;
    this.#desc[w] = addr % TWO_32;
    this.#desc[w + 1] = Math.floor(addr / TWO_32);
    this.#desc[w + 2] = len;
    this.#desc16[slot * 8 + 6] = id;
    Atomics.store(this.#desc16, slot * 8 + 7, flags);
  }

  /** `AVAIL`/`USED` bits that make a descriptor available for the current wrap counter. */
  get availFlags(): number {
    return this.#availWrap ? VIRTQ_DESC_F_AVAIL : VIRTQ_DESC_F_USED;
  }

  /** Make the added chains visible: store each head's flags, in order. */
  publish(): void {
    for (let k = 0; k < this.#pending; k++) {
      Atomics.store(this.#desc16, this.#pendingSlot[k] * 8 + 7, this.#pendingFlags[k]);
    }
    this.#pending = 0;
  }

  /**
   * Whether the device wants a kick for what was published since the last
   * call (§2.8.10): its event flags, and with `EVENT_IDX` its offset.
   */
  kickNeeded(): boolean {
    const now = this.#avail, wrapNow = this.#availWrap;
    const old = this.#kickOld, oldWrap = this.#kickOldWrap;
    this.#kickOld = now;
    this.#kickOldWrap = wrapNow;
    if (now === old && wrapNow === oldWrap) return false;
    const flags = Atomics.load(this.#deviceEvent, 1) & 0x3;
    if (flags === RING_EVENT_FLAGS_DISABLE) return false;
    if (flags !== RING_EVENT_FLAGS_DESC || !this.#eventIdx) return true;
    const offWrap = this.#deviceEvent[0];
    let off = offWrap & 0x7fff;
    if ((offWrap >> 15 !== 0) !== wrapNow) off -= this.num;
    let before = old;
    if (now <= before) before -= this.num;
    return ((now - off - 1) & 0xffff) < ((now - before) & 0xffff);
  }

  /**
   * Take the next used buffer; then read {@linkcode PackedQueueDriver.usedToken}
   * and {@linkcode PackedQueueDriver.usedLen}. Returns false when there is none.
   *
   * @throws Error when the device returned a buffer ID that is not in flight.
   */
  nextUsed(): boolean {
    const slot = this.#used;
    const f = Atomics.load(this.#desc16, slot * 8 + 7);
    const avail = (f & VIRTQ_DESC_F_AVAIL) !== 0, used = (f & VIRTQ_DESC_F_USED) !== 0;
    const order = this.#inOrder;
    if (order === null || !order.inBatch) {
      if (avail !== this.#usedWrap || used !== this.#usedWrap) return false;
    }
    let id = this.#desc16[slot * 8 + 6];
    let len = this.#desc[(slot << 2) + 2];
    if (order !== null) {
      // A used descriptor ends a batch that starts at the oldest buffer in
      // flight; the descriptors the batch skips are not read.
      if (!order.inBatch) order.beginBatch(id, len);
      id = order.take();
      len = order.len;
    }
    if (!(id < this.num) || this.#count[id] === 0) {
      throw new Error(`device returned buffer ID ${id} at used slot ${slot}, not in flight`);
    }
    const k = this.#count[id];
    this.#count[id] = 0;
    this.#numFree += k;
    this.#freeIds[this.#freeIdCount++] = id;
    let next = slot + k;
    if (next >= this.num) {
      next -= this.num;
      this.#usedWrap = !this.#usedWrap;
    }
    this.#used = next;
    this.#usedToken = this.#tokens[id];
    this.#usedLen = len;
    return true;
  }

  /** Token of the buffer the last {@linkcode PackedQueueDriver.nextUsed} took. */
  get usedToken(): number {
    return this.#usedToken;
  }

  /** Bytes the device wrote into it. */
  get usedLen(): number {
    return this.#usedLen;
  }

  /** The next used buffer, or null. */
  takeUsed(): UsedBuffer | null {
    return this.nextUsed() ? { token: this.#usedToken, len: this.#usedLen } : null;
  }

  /**
   * Ask the device to interrupt for the next used buffer (with `EVENT_IDX`:
   * at the driver's used position). Returns true when used buffers wait.
   */
  enableInterrupts(): boolean {
    if (this.#eventIdx) {
      this.#driverEvent[0] = encodePackedIndex(this.#used, this.#usedWrap);
      Atomics.store(this.#driverEvent, 1, RING_EVENT_FLAGS_DESC);
    } else {
      Atomics.store(this.#driverEvent, 1, RING_EVENT_FLAGS_ENABLE);
    }
    const f = Atomics.load(this.#desc16, this.#used * 8 + 7);
    return ((f & VIRTQ_DESC_F_AVAIL) !== 0) === this.#usedWrap &&
      ((f & VIRTQ_DESC_F_USED) !== 0) === this.#usedWrap;
  }

  /** Ask the device not to interrupt (a hint). */
  disableInterrupts(): void {
    Atomics.store(this.#driverEvent, 1, RING_EVENT_FLAGS_DISABLE);
  }

  /** Write one descriptor at the avail position; a head's flags wait for `publish`. */
  #put(addr: number, len: number, id: number, flags: number, head: boolean): void {
    const slot = this.#avail;
    const w = slot << 2;
    this.#desc[w] = addr % TWO_32;
    this.#desc[w + 1] = Math.floor(addr / TWO_32);
    this.#desc[w + 2] = len;
    this.#desc16[slot * 8 + 6] = id;
    const all = flags | (this.#availWrap ? VIRTQ_DESC_F_AVAIL : VIRTQ_DESC_F_USED);
    if (head) {
      this.#pendingSlot[this.#pending] = slot;
      this.#pendingFlags[this.#pending] = all;
      this.#pending++;
    } else {
      Atomics.store(this.#desc16, slot * 8 + 7, all);
    }
    if (++this.#avail === this.num) {
      this.#avail = 0;
      this.#availWrap = !this.#availWrap;
    }
  }
}
