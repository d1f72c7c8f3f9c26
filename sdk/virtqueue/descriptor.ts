/**
 * A descriptor chain as the device sees it after validation: a list of
 * guest buffers (segments), the device-readable ones first, then the
 * device-writable ones; and the error raised for a chain that breaks the
 * rules of virtio 1.2 §2.7.5.
 *
 * @module
 */

/**
 * What was wrong with a chain (or with the available ring):
 *
 * - `loop`: a descriptor's `next` leads back to a descriptor of the chain.
 * - `too-long`: more buffer descriptors than the queue allows (its size, or
 *   the `maxChainLength` it was built with).
 * - `out-of-bounds`: a buffer or an indirect table is not inside guest
 *   memory, or its address does not fit 2^53.
 * - `bad-indirect`: an indirect descriptor without `VIRTIO_F_INDIRECT_DESC`,
 *   with `NEXT` also set, or whose length is 0, not a multiple of 16, or more
 *   than queue-size descriptors.
 * - `nested-indirect`: an indirect descriptor inside an indirect table.
 * - `bad-index`: a head or `next` index not below the queue size (or the
 *   indirect table's length).
 * - `write-before-read`: a device-readable descriptor after a writable one.
 * - `bad-avail-idx`: `avail.idx` moved more than the queue size past the
 *   device's last available index; the ring as a whole is corrupt.
 * - `bad-wrap` (packed rings): a descriptor the chain continues into is not
 *   available: its `AVAIL`/`USED` flags do not match the driver's wrap
 *   counter (virtio 1.2 §2.8.1), so the driver published the head before
 *   the rest of its chain.
 * - `access-denied` (behind a vIOMMU): the IOTLB maps a buffer without the
 *   access the device needs: a device-writable buffer mapped read-only, a
 *   device-readable one mapped write-only.
 * - `unmapped` (behind a vIOMMU): no translation for a buffer came within
 *   `IOTLB_MISS_TIMEOUT_MS` of asking the frontend for it.
 */
export type DescriptorChainErrorKind =
  | "loop"
  | "too-long"
  | "out-of-bounds"
  | "bad-indirect"
  | "nested-indirect"
  | "bad-index"
  | "write-before-read"
  | "bad-avail-idx"
  | "bad-wrap"
  | "access-denied"
  | "unmapped";

/** Every {@linkcode DescriptorChainErrorKind}, e.g. to initialise counters. */
export const DESCRIPTOR_CHAIN_ERROR_KINDS: readonly DescriptorChainErrorKind[] = [
  "loop",
  "too-long",
  "out-of-bounds",
  "bad-indirect",
  "nested-indirect",
  "bad-index",
  "write-before-read",
  "bad-avail-idx",
  "bad-wrap",
  "access-denied",
  "unmapped",
];

/**
 * A guest broke the descriptor rules. The message names the queue's head,
 * the offending descriptor and its values.
 */
export class DescriptorChainError extends Error {
  /** What was wrong. */
  readonly kind: DescriptorChainErrorKind;
  /**
   * Head index of the chain, which was consumed from the available ring; -1
   * when there is no valid head (`bad-index` of the head, `bad-avail-idx`).
   */
  readonly head: number;
  /** Index of the offending descriptor, or -1. */
  readonly descriptor: number;
  /** Whether {@linkcode DescriptorChainError.descriptor} indexes an indirect table. */
  readonly inIndirectTable: boolean;

  /**
   * Make the error.
   *
   * @param kind What was wrong.
   * @param head Consumed head index, or -1.
   * @param descriptor Offending descriptor index, or -1.
   * @param inIndirectTable Whether `descriptor` indexes an indirect table.
   * @param message Details: indexes and values.
   */
  constructor(
    kind: DescriptorChainErrorKind,
    head: number,
    descriptor: number,
    inIndirectTable: boolean,
    message: string,
  ) {
    super(message);
    this.name = "DescriptorChainError";
    this.kind = kind;
    this.head = head;
    this.descriptor = descriptor;
    this.inIndirectTable = inIndirectTable;
  }
}

/**
 * A reusable container for one descriptor chain: pass the same object to
 * every `pop` so that the datapath does not allocate. Segment `i` is
 * `lengths[i]` bytes at guest-physical `addresses[i]`, which is byte
 * `offsets[i]` of memory region `regions[i]`. Segments `[0, readable)` are
 * device-readable, `[readable, count)` device-writable. Zero-length
 * descriptors produce no segment; a buffer spanning two regions that are
 * adjacent in guest-physical space produces one segment per region.
 *
 * The arrays grow (and are replaced) only when a chain needs more segments
 * than any before; read them after `pop`, not before.
 *
 * @example
 * ```ts
 * import { DescriptorChain } from "@vhost-mdev/sdk";
 * const chain = new DescriptorChain();
 * // while (queue.pop(chain)) { ... queue.pushUsed(chain.head, written); }
 * console.log(chain.count); // 0
 * ```
 */
export class DescriptorChain {
  /** Head descriptor index (what `pushUsed` takes), -1 when empty. */
  head: number = -1;
  /** Descriptors walked, including an indirect table's own descriptor. */
  descriptors: number = 0;
  /** Number of segments. */
  count: number = 0;
  /** Number of device-readable segments (they come first). */
  readable: number = 0;
  /** Total bytes of the readable segments. */
  readableBytes: number = 0;
  /** Total bytes of the writable segments. */
  writableBytes: number = 0;
  /** Whether the chain came (at least partly) from an indirect table. */
  indirect: boolean = false;
  #addresses: Float64Array;
  #lengths: Uint32Array;
  #regions: Int32Array;
  #offsets: Float64Array;

  /**
   * Make an empty chain.
   *
   * @param capacity Segments to make room for up front (it grows on demand).
   */
  constructor(capacity = 64) {
    const n = Math.max(1, capacity | 0);
    this.#addresses = new Float64Array(n);
    this.#lengths = new Uint32Array(n);
    this.#regions = new Int32Array(n);
    this.#offsets = new Float64Array(n);
  }

  /** Guest-physical address of each segment. */
  get addresses(): Float64Array {
    return this.#addresses;
  }

  /** Length in bytes of each segment. */
  get lengths(): Uint32Array {
    return this.#lengths;
  }

  /** Index (into `GuestMemory.regions`) of the region holding each segment. */
  get regions(): Int32Array {
    return this.#regions;
  }

  /** Byte offset of each segment within its region. */
  get offsets(): Float64Array {
    return this.#offsets;
  }

  /** Number of device-writable segments. */
  get writable(): number {
    return this.count - this.readable;
  }

  /** Empty the chain and set its head (for queue implementations). */
  reset(head: number): void {
    this.head = head;
    this.descriptors = 0;
    this.count = 0;
    this.readable = 0;
    this.readableBytes = 0;
    this.writableBytes = 0;
    this.indirect = false;
  }

  /**
   * Append a segment (for queue implementations, which validate it first).
   * Readable segments must all be added before the first writable one.
   */
  addSegment(gpa: number, length: number, region: number, offset: number, writable: boolean): void {
    const i = this.count;
    if (i === this.#lengths.length) this.#grow();
    this.#addresses[i] = gpa;
    this.#lengths[i] = length;
    this.#regions[i] = region;
    this.#offsets[i] = offset;
    this.count = i + 1;
    if (writable) {
      this.writableBytes += length;
    } else {
      this.readable = i + 1;
      this.readableBytes += length;
    }
  }

  #grow(): void {
    const n = this.#lengths.length * 2;
    const a = new Float64Array(n),
      l = new Uint32Array(n),
      r = new Int32Array(n),
      o = new Float64Array(n);
    a.set(this.#addresses);
    l.set(this.#lengths);
    r.set(this.#regions);
    o.set(this.#offsets);
    this.#addresses = a;
    this.#lengths = l;
    this.#regions = r;
    this.#offsets = o;
  }
}

/**
 * Buffers taken by a queue's `popWritable`: at each index, the buffer ID
 * (what `pushUsed` takes), the region of guest memory holding the buffer,
 * the buffer's offset in that region, and its length.
 *
 * @example Fill every simple receive buffer with one frame
 * ```ts
 * import { type Virtqueue, WritableBuffers } from "@vhost-mdev/sdk";
 *
 * declare const queue: Virtqueue;
 * declare const frame: Uint8Array;
 * const buffers = new WritableBuffers(queue.num);
 * const n = queue.popWritable(buffers, 0, queue.num, frame.length);
 * const regions = queue.memory.regions;
 * for (let i = 0; i < n; i++) regions[buffers.regions[i]].bytes.set(frame, buffers.offsets[i]);
 * for (let i = 0; i < n; i++) queue.pushUsed(buffers.ids[i], frame.length);
 * queue.publishUsed();
 * ```
 */
export class WritableBuffers {
  /** Buffer ID (split: head descriptor index) of each buffer. */
  readonly ids: Uint32Array;
  /** Index (into `GuestMemory.regions`) of the region holding each buffer. */
  readonly regions: Int32Array;
  /** Byte offset of each buffer within its region. */
  readonly offsets: Float64Array;
  /** Length in bytes of each buffer. */
  readonly lengths: Uint32Array;

  /** Room for `capacity` buffers (a queue's size holds any one call). */
  constructor(capacity: number) {
    const n = Math.max(1, capacity | 0);
    this.ids = new Uint32Array(n);
    this.regions = new Int32Array(n);
    this.offsets = new Float64Array(n);
    this.lengths = new Uint32Array(n);
  }

  /** Store buffer `id` at index `k` (for queue implementations). */
  set(k: number, id: number, region: number, offset: number, length: number): void {
    this.ids[k] = id;
    this.regions[k] = region;
    this.offsets[k] = offset;
    this.lengths[k] = length;
  }
}
