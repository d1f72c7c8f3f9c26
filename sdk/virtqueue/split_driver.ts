/**
 * The driver side of a split virtqueue (virtio 1.2 §2.7), as a guest's
 * virtio driver runs it: the SDK's TypeScript test frontend uses it to hand
 * buffers to a device and take them back.
 *
 * Memory ordering mirrors the device side (see `split_queue.ts`): ring
 * entries and descriptors are written before `avail.idx` is stored with
 * `Atomics.store` (a full barrier on x86), after which the device's
 * suppression fields are read; the used index is read once per batch before
 * the used elements.
 *
 * @module
 */

import type { GuestMemory } from "../memory/guest_memory.ts";
import { InOrderBuffers, writableBytes } from "./in_order.ts";
import {
  AVAIL_ALIGN,
  availRingSize,
  DESC_ALIGN,
  DESC_SIZE,
  descTableSize,
  isValidQueueSize,
  MAX_QUEUE_SIZE,
  ringViews,
  type SplitQueueLayout,
  USED_ALIGN,
  usedRingSize,
  VIRTQ_AVAIL_F_NO_INTERRUPT,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  VIRTQ_USED_F_NO_NOTIFY,
  vringNeedEvent,
} from "./layout.ts";

/** A layout made by {@linkcode SplitQueueDriver.layout}, with room for indirect tables. */
export interface SplitQueueDriverLayout extends SplitQueueLayout {
  /** Bytes from the base to the end of the last area. */
  bytes: number;
  /** Guest-physical address of the indirect tables (one per descriptor), or 0. */
  indirectAddr: number;
  /** Descriptors per indirect table (0: no indirect tables). */
  indirectSegments: number;
}

/** Options of {@linkcode SplitQueueDriver}. */
export interface SplitQueueDriverOptions {
  /** `VIRTIO_F_EVENT_IDX` was negotiated. */
  eventIdx: boolean;
  /**
   * `VIRTIO_F_INDIRECT_DESC` was negotiated: chains of 2 or more segments
   * (up to the layout's `indirectSegments`) go in an indirect table.
   */
  indirect?: boolean;
  /** Initial avail and used index (default 0); the device must start from the same. */
  startIdx?: number;
  /**
   * Descriptors at the top of the table kept out of the free list, for
   * {@linkcode SplitQueueDriver.writeDescriptor} (default 0).
   */
  reserved?: number;
  /**
   * Added to every guest-physical address the driver writes into a
   * descriptor (buffers and indirect tables; not {@linkcode SplitQueueDriver.writeDescriptor}'s):
   * the device is given I/O virtual addresses, as behind an IOMMU that maps
   * guest memory at that offset (default 0).
   */
  deviceAddressOffset?: number;
  /**
   * `VIRTIO_F_IN_ORDER` was negotiated: a used element may stand for a batch
   * (every chain made available before its head is used too, in full), as
   * the device may write one element per batch (default false).
   */
  inOrder?: boolean;
}

/** A chain the device returned. */
export interface UsedBuffer {
  /** The token given to `add`. */
  token: number;
  /** Bytes the device wrote. */
  len: number;
}

function align(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}

/**
 * The driver side of one split virtqueue. The driver owns the rings' memory:
 * construction initialises them.
 *
 * @example Hand a buffer to the device and take it back
 * ```ts
 * import { DescriptorChain, GuestMemory, SplitQueue, SplitQueueDriver } from "@vhost-mdev/sdk";
 *
 * const layout = SplitQueueDriver.layout(8, 0);
 * const memory = GuestMemory.fromBuffers([{ gpa: 0, bytes: new Uint8Array(0x10000) }]);
 * const driver = new SplitQueueDriver(memory, layout, { eventIdx: true });
 * const device = new SplitQueue(memory, layout, { lastAvailIdx: 0, eventIdx: true, indirect: false });
 *
 * driver.add([{ gpa: 0x8000, len: 64, write: true }], 7);
 * driver.publish();
 * const chain = new DescriptorChain();
 * device.pop(chain);
 * device.pushUsed(chain.head, device.writeChain(chain, new Uint8Array(64).fill(1)));
 * device.publishUsed();
 * driver.takeUsed(); // { token: 7, len: 64 }
 * ```
 */
export class SplitQueueDriver {
  /** The ring's size. */
  readonly num: number;
  /** Always false: the ring is split. */
  readonly packed = false;
  readonly #memory: GuestMemory;
  readonly #offset: number;
  readonly #desc: Uint32Array;
  readonly #avail: Uint16Array;
  readonly #used: Uint16Array;
  readonly #usedElems: Uint32Array;
  readonly #mask: number;
  readonly #eventIdx: boolean;
  readonly #indirectAddr: number;
  readonly #indirectSegments: number;
  readonly #next: Int32Array;
  readonly #chainLen: Int32Array;
  readonly #inFlight: Uint8Array;
  readonly #tokens: Float64Array;
  readonly #availEventSlot: number;
  #freeHead = -1;
  #numFree = 0;
  #availIdx: number;
  #publishedAvail: number;
  #kickOld: number;
  #lastUsed: number;
  #shadowUsed: number;
  #availFlags = 0;
  #usedToken = 0;
  #usedLen = 0;
  /** With `IN_ORDER`: the chains in flight in the order made available. */
  readonly #inOrder: InOrderBuffers | null;

  /**
   * A packed layout of the three areas from guest-physical `base`, each
   * aligned as virtio requires, followed by `indirectSegments`-descriptor
   * indirect tables, one per descriptor, when asked for.
   */
  static layout(
    num: number,
    base: number,
    options: { indirectSegments?: number } = {},
  ): SplitQueueDriverLayout {
    if (!isValidQueueSize(num)) {
      throw new RangeError(`queue size ${num} is not a power of two from 1 to ${MAX_QUEUE_SIZE}`);
    }
    const segments = options.indirectSegments ?? 0;
    if (!Number.isInteger(segments) || segments < 0 || segments > num) {
      throw new RangeError(`indirectSegments ${segments} is not in 0..${num}`);
    }
    const descAddr = align(base, DESC_ALIGN);
    const availAddr = align(descAddr + descTableSize(num), AVAIL_ALIGN);
    const usedAddr = align(availAddr + availRingSize(num), USED_ALIGN);
    let end = usedAddr + usedRingSize(num);
    let indirectAddr = 0;
    if (segments > 0) {
      indirectAddr = align(end, DESC_ALIGN);
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
   * Make the views and initialise the rings: flags 0, `avail.idx` =
   * `used.idx` = `used_event` = `avail_event` = `startIdx`.
   *
   * @throws RangeError for an invalid layout (see `ringViews`), an indirect
   *   request without indirect tables in the layout, or bad options.
   */
  constructor(
    memory: GuestMemory,
    layout:
      & SplitQueueLayout
      & Partial<Pick<SplitQueueDriverLayout, "indirectAddr" | "indirectSegments">>,
    options: SplitQueueDriverOptions,
  ) {
    const views = ringViews(memory.regions, layout);
    const num = layout.num;
    this.num = num;
    this.#memory = memory;
    this.#desc = views.desc;
    this.#avail = views.avail;
    this.#used = views.used;
    this.#usedElems = views.usedElems;
    this.#mask = num - 1;
    this.#eventIdx = options.eventIdx;
    this.#offset = options.deviceAddressOffset ?? 0;
    this.#availEventSlot = 2 + 4 * num;
    if (options.indirect) {
      const segments = layout.indirectSegments ?? 0;
      const addr = layout.indirectAddr ?? 0;
      if (segments < 2 || memory.find(addr, num * segments * DESC_SIZE) < 0) {
        throw new RangeError(
          "indirect descriptors need a layout with indirect tables inside guest memory",
        );
      }
      this.#indirectAddr = addr;
      this.#indirectSegments = segments;
    } else {
      this.#indirectAddr = 0;
      this.#indirectSegments = 0;
    }
    const start = options.startIdx ?? 0;
    if (!Number.isInteger(start) || start < 0 || start > 0xffff) {
      throw new RangeError(`startIdx ${start} is not in 0..65535`);
    }
    const reserved = options.reserved ?? 0;
    if (!Number.isInteger(reserved) || reserved < 0 || reserved >= num) {
      throw new RangeError(`reserved ${reserved} is not in 0..${num - 1}`);
    }
    this.#inOrder = options.inOrder ? new InOrderBuffers(num) : null;
    this.#next = new Int32Array(num);
    this.#chainLen = new Int32Array(num);
    this.#inFlight = new Uint8Array(num);
    this.#tokens = new Float64Array(num);
    for (let i = num - reserved - 1; i >= 0; i--) {
      this.#next[i] = this.#freeHead;
      this.#freeHead = i;
      this.#numFree++;
    }
    this.#desc.fill(0);
    this.#avail.fill(0);
    this.#used.fill(0);
    this.#usedElems.fill(0);
    this.#avail[1] = start;
    this.#avail[2 + num] = start;
    this.#used[1] = start;
    this.#used[this.#availEventSlot] = start;
    this.#availIdx = this.#publishedAvail = this.#kickOld = start;
    this.#lastUsed = this.#shadowUsed = start;
  }

  /** Descriptors free for {@linkcode SplitQueueDriver.add}. */
  freeCount(): number {
    return this.#numFree;
  }

  /** Next avail index to write (published or not). */
  get availIdx(): number {
    return this.#availIdx;
  }

  /** Next used index to read. */
  get lastUsedIdx(): number {
    return this.#lastUsed;
  }

  /**
   * Add a chain of buffers (device-readable ones first) under `token`.
   * Returns false when there are not enough free descriptors. Not visible to
   * the device until {@linkcode SplitQueueDriver.publish}.
   */
  add(segments: readonly { gpa: number; len: number; write: boolean }[], token: number): boolean {
    const k = segments.length;
    if (k === 0) throw new RangeError("a chain needs at least one buffer");
    if (k > 1 && this.#indirectSegments >= k) {
      if (this.#numFree < 1) return false;
      const head = this.#alloc(1);
      const table = this.#indirectAddr + head * this.#indirectSegments * DESC_SIZE;
      const view = this.#memory.bytes(table, k * DESC_SIZE);
      const dv = new DataView(view.buffer, view.byteOffset, view.byteLength);
      for (let j = 0; j < k; j++) {
        const s = segments[j];
        const at = j * DESC_SIZE;
        const addr = s.gpa + this.#offset;
        dv.setUint32(at, addr % 4294967296, true);
        dv.setUint32(at + 4, Math.floor(addr / 4294967296), true);
        dv.setUint32(at + 8, s.len, true);
        dv.setUint16(
          at + 12,
          (s.write ? VIRTQ_DESC_F_WRITE : 0) | (j < k - 1 ? VIRTQ_DESC_F_NEXT : 0),
          true,
        );
        dv.setUint16(at + 14, j < k - 1 ? j + 1 : 0, true);
      }
      this.#setDesc(head, table + this.#offset, k * DESC_SIZE, VIRTQ_DESC_F_INDIRECT, 0);
      this.#queue(head, 1, token, writableBytes(segments));
      return true;
    }
    if (this.#numFree < k) return false;
    const head = this.#alloc(k);
    let i = head;
    for (let j = 0; j < k; j++) {
      const s = segments[j];
      const last = j === k - 1;
      const next = last ? 0 : this.#next[i];
      this.#setDesc(
        i,
        s.gpa + this.#offset,
        s.len,
        (s.write ? VIRTQ_DESC_F_WRITE : 0) | (last ? 0 : VIRTQ_DESC_F_NEXT),
        next,
      );
      i = next;
    }
    this.#queue(head, k, token, writableBytes(segments));
    return true;
  }

  /** Add one buffer (no allocation). Returns false when no descriptor is free. */
  addBuffer(gpa: number, len: number, write: boolean, token: number): boolean {
    if (this.#numFree < 1) return false;
    const head = this.#alloc(1);
    this.#setDesc(head, gpa + this.#offset, len, write ? VIRTQ_DESC_F_WRITE : 0, 0);
    this.#queue(head, 1, token, write ? len : 0);
    return true;
  }

  /**
   * Write descriptor `index` as given, unchecked: for exercising a device
   * with malformed chains. Use reserved descriptors (`options.reserved`).
   * `addr` may be any integer below 2^64 that a double holds exactly.
   */
  writeDescriptor(index: number, addr: number, len: number, flags: number, next: number): void {
    if (!(index >= 0 && index < this.num)) {
      throw new RangeError(`descriptor ${index} is not below ${this.num}`);
    }
    this.#setDesc(index, addr, len, flags, next);
  }

  /**
   * Put `head` on the available ring as is (any value 0..65535) under
   * `token`, for exercising a device with malformed chains. When the device
   * returns it, no descriptor goes back to the free list.
   */
  addRaw(head: number, token: number): void {
    const slot = this.#availIdx & this.#mask;
    this.#avail[2 + slot] = head;
    this.#availIdx = (this.#availIdx + 1) & 0xffff;
    if (head < this.num) {
      this.#inFlight[head] = 1;
      this.#chainLen[head] = 0;
      this.#tokens[head] = token;
      this.#inOrder?.added(head, 0);
    }
  }

  /** Make the added chains visible: store `avail.idx`. */
  publish(): void {
    Atomics.store(this.#avail, 1, this.#availIdx);
    this.#publishedAvail = this.#availIdx;
  }

  /**
   * Whether the device wants a kick for what was published since the last
   * call: `avail_event` passed (EVENT_IDX), or `VIRTQ_USED_F_NO_NOTIFY` clear.
   */
  kickNeeded(): boolean {
    const now = this.#publishedAvail;
    const old = this.#kickOld;
    this.#kickOld = now;
    if (now === old) return false;
    if (this.#eventIdx) return vringNeedEvent(this.#used[this.#availEventSlot], now, old);
    return (this.#used[0] & VIRTQ_USED_F_NO_NOTIFY) === 0;
  }

  /**
   * Take the next used chain; then read {@linkcode SplitQueueDriver.usedToken}
   * and {@linkcode SplitQueueDriver.usedLen}. Returns false when there is
   * none. No allocation.
   *
   * @throws Error when the device moved `used.idx` by more than the queue
   *   size or returned a head that is not in flight.
   */
  nextUsed(): boolean {
    if (this.#lastUsed === this.#shadowUsed) {
      const idx = this.#used[1];
      if (idx === this.#lastUsed) return false;
      if (((idx - this.#lastUsed) & 0xffff) > this.num) {
        throw new Error(
          `device moved used.idx to ${idx}, more than ${this.num} past ${this.#lastUsed}`,
        );
      }
      this.#shadowUsed = idx;
    }
    const slot = this.#lastUsed & this.#mask;
    let id = this.#usedElems[slot * 2];
    let len = this.#usedElems[slot * 2 + 1];
    const order = this.#inOrder;
    if (order !== null) {
      // A used element ends a batch that starts at the oldest chain in flight;
      // the elements the batch skips are not read.
      if (!order.inBatch) order.beginBatch(id, len);
      id = order.take();
      len = order.len;
    }
    this.#lastUsed = (this.#lastUsed + 1) & 0xffff;
    if (!(id < this.num) || this.#inFlight[id] === 0) {
      throw new Error(
        `device returned descriptor ${id} in used slot ${slot}, which is not in flight`,
      );
    }
    this.#inFlight[id] = 0;
    this.#release(id, this.#chainLen[id]);
    this.#usedToken = this.#tokens[id];
    this.#usedLen = len;
    return true;
  }

  /** Token of the chain the last {@linkcode SplitQueueDriver.nextUsed} took. */
  get usedToken(): number {
    return this.#usedToken;
  }

  /** Bytes the device wrote into that chain. */
  get usedLen(): number {
    return this.#usedLen;
  }

  /** The next used chain, or null (allocates; see {@linkcode SplitQueueDriver.nextUsed}). */
  takeUsed(): UsedBuffer | null {
    return this.nextUsed() ? { token: this.#usedToken, len: this.#usedLen } : null;
  }

  /**
   * Ask the device to interrupt for the next used chain (`used_event` =
   * next used index, or clear `VIRTQ_AVAIL_F_NO_INTERRUPT`). Returns true
   * when used chains are already waiting.
   */
  enableInterrupts(): boolean {
    if (this.#eventIdx) {
      Atomics.store(this.#avail, 2 + this.num, this.#lastUsed);
    } else {
      this.#availFlags &= ~VIRTQ_AVAIL_F_NO_INTERRUPT;
      Atomics.store(this.#avail, 0, this.#availFlags);
    }
    return this.#used[1] !== this.#lastUsed;
  }

  /**
   * Ask the device not to interrupt (a hint). With EVENT_IDX, `used_event`
   * is set just behind the next used index, which the device passes only
   * after a full turn of the 16-bit index.
   */
  disableInterrupts(): void {
    if (this.#eventIdx) {
      this.#avail[2 + this.num] = (this.#lastUsed - 1) & 0xffff;
    } else {
      this.#availFlags |= VIRTQ_AVAIL_F_NO_INTERRUPT;
      this.#avail[0] = this.#availFlags;
    }
  }

  #setDesc(i: number, addr: number, len: number, flags: number, next: number): void {
    const w = i << 2;
    this.#desc[w] = addr % 4294967296;
    this.#desc[w + 1] = Math.floor(addr / 4294967296);
    this.#desc[w + 2] = len;
    this.#desc[w + 3] = (flags & 0xffff) | ((next & 0xffff) << 16);
  }

  /** Take `k` descriptors off the free list (linked through `#next`); returns the first. */
  #alloc(k: number): number {
    const head = this.#freeHead;
    let i = head;
    for (let j = 1; j < k; j++) i = this.#next[i];
    this.#freeHead = this.#next[i];
    this.#numFree -= k;
    return head;
  }

  /** Return a chain of `k` descriptors starting at `head` (still linked through `#next`). */
  #release(head: number, k: number): void {
    if (k === 0) return;
    let i = head;
    for (let j = 1; j < k; j++) i = this.#next[i];
    this.#next[i] = this.#freeHead;
    this.#freeHead = head;
    this.#numFree += k;
  }

  #queue(head: number, k: number, token: number, writable: number): void {
    this.#inOrder?.added(head, writable);
    this.#inFlight[head] = 1;
    this.#chainLen[head] = k;
    this.#tokens[head] = token;
    this.#avail[2 + (this.#availIdx & this.#mask)] = head;
    this.#availIdx = (this.#availIdx + 1) & 0xffff;
  }
}
