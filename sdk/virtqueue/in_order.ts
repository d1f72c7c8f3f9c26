/**
 * The driver's side of `VIRTIO_F_IN_ORDER` batching (virtio 1.2, "In-order
 * use of descriptors", split and packed): a device may return a batch of
 * buffers with one used entry, the batch's last buffer; the driver takes
 * every buffer it made available before that one as used too, in the order
 * it made them available. The test kit's queue drivers keep one of these.
 *
 * @module
 */

/**
 * Buffers in flight in the order they were made available, and the batch
 * being taken. Preallocated; no allocation per buffer.
 */
export class InOrderBuffers {
  readonly #order: Uint16Array;
  /** Device-writable bytes of each buffer: what a skipped buffer counts as written. */
  readonly #writable: Float64Array;
  #front = 0;
  #count = 0;
  /** The batch's last buffer while a batch is being taken, else -1. */
  #last = -1;
  #lastLen = 0;
  /** Bytes written into the buffer {@linkcode InOrderBuffers.take} returned last. */
  len = 0;

  /** Room for `num` buffers (the queue size). */
  constructor(num: number) {
    this.#order = new Uint16Array(num);
    this.#writable = new Float64Array(num);
  }

  /** Whether a batch is being taken (its last buffer not yet returned). */
  get inBatch(): boolean {
    return this.#last >= 0;
  }

  /** Buffer `id` (with `writable` device-writable bytes) was made available. */
  added(id: number, writable: number): void {
    const n = this.#order.length;
    if (this.#count === n) throw new RangeError(`more than ${n} buffers in flight`);
    this.#order[(this.#front + this.#count++) % n] = id;
    this.#writable[id] = writable;
  }

  /**
   * The device's used entry names buffer `last`, with `len` bytes written:
   * a batch ends there.
   *
   * @throws Error when `last` is not in flight.
   */
  beginBatch(last: number, len: number): void {
    if (!this.#holds(last)) {
      throw new Error(`device ended an in-order batch with buffer ${last}, which is not in flight`);
    }
    this.#last = last;
    this.#lastLen = len;
  }

  /**
   * Take the oldest buffer of the batch; sets {@linkcode InOrderBuffers.len}
   * (the used entry's length for the last, all its writable bytes for the
   * others). Returns its ID.
   */
  take(): number {
    const n = this.#order.length;
    const id = this.#order[this.#front];
    this.#front = (this.#front + 1) % n;
    this.#count--;
    if (id === this.#last) {
      this.#last = -1;
      this.len = this.#lastLen;
    } else {
      this.len = this.#writable[id];
    }
    return id;
  }

  #holds(id: number): boolean {
    const n = this.#order.length;
    for (let i = 0; i < this.#count; i++) {
      if (this.#order[(this.#front + i) % n] === id) return true;
    }
    return false;
  }
}

/** Device-writable bytes of a chain's segments: what a skipped chain counts as written. */
export function writableBytes(segments: readonly { len: number; write: boolean }[]): number {
  let n = 0;
  for (const s of segments) if (s.write) n += s.len;
  return n;
}
