/**
 * Frame delivery into a virtio-net receive queue (virtio 1.2 §5.1.6.4):
 * the frame, behind its `virtio_net_hdr`, is written into the receive
 * buffers the driver posted. With `VIRTIO_NET_F_MRG_RXBUF` a frame may span
 * several buffers and the header's `num_buffers` says how many; without it a
 * frame that does not fit one buffer is dropped and the buffer returned with
 * used length 0. Each buffer must hold at least the header (virtio 1.2
 * §5.1.6.3.1); one that does not is malformed and returned with length 0.
 *
 * Delivery is resumable: when the ring runs out of buffers in the middle of
 * a frame, the buffers taken so far are kept and delivery goes on where it
 * stopped once the driver posts more (on its next kick). Its bookkeeping
 * is preallocated (arrays the size of the ring); the only per-frame object
 * is the short-lived subarray view a copy of more than 64 bytes into a
 * descriptor needs, as in `SplitQueue.writeChain` (none when a whole packet
 * fits one descriptor).
 *
 * @module
 */

import { DescriptorChain, DescriptorChainError, WritableBuffers } from "../virtqueue/descriptor.ts";
import type { Virtqueue } from "../virtqueue/queue.ts";
import { VIRTIO_NET_HDR_LEGACY_SIZE, VIRTIO_NET_HDR_SIZE } from "../uapi/virtio.ts";
import { VirtioNetHdr } from "./header.ts";

/** Copies up to this many bytes go byte by byte (no subarray object). */
const SMALL_COPY = 64;
/**
 * {@linkcode ReceiveDelivery.deliverCopies} copies frames up to this many
 * bytes word by word, without a call. The receive copies are stores into
 * lines the driver read last, so they wait for those lines; the stores a
 * call makes (its frame, `TypedArray.prototype.set`'s own) queue behind
 * them, and the processor stalls sooner. Longer frames keep the call: its
 * copy moves wider words, and its cost is spread over more bytes.
 */
const WORD_COPY_MAX = 64;
/** Byte offsets below this have their word index in 32 bits (`offset >>> 2`). */
const WORD_INDEXED = 2 ** 32;
const NUM_BUFFERS = VirtioNetHdr.NUM_BUFFERS;
const EMPTY_PACKET = new Uint8Array(0);

const WAITING = 0, DELIVERED = 1, DROPPED = 2;
const TAKEN = 1, EMPTY = 0, RETURNED = -1, STOPPED = -2;

/** What {@linkcode ReceiveDelivery.resume} did with the frame in progress. */
export const ReceiveResult = {
  /** The ring ran out of buffers: the frame is kept; resume when the driver posts more. */
  WAITING,
  /** The frame is in the driver's buffers, pushed on the used ring. */
  DELIVERED,
  /** The frame did not fit one buffer without `MRG_RXBUF`: the buffer went back empty. */
  DROPPED,
} as const;

/** A {@linkcode ReceiveResult} value. */
export type ReceiveResult = typeof ReceiveResult[keyof typeof ReceiveResult];

/**
 * Where writes into guest memory are marked for live migration: the SDK's
 * `DirtyLog` is one.
 */
export interface WriteLog {
  /** `length` bytes at guest-physical `gpa` were written. */
  mark(gpa: number, length: number): unknown;
}

/** Counters a {@linkcode ReceiveDelivery} adds to. */
export interface ReceiveCounters {
  /** Frames delivered. */
  packets: number;
  /** Bytes of the delivered frames, without the header. */
  bytes: number;
  /** Frames dropped: too large for one buffer without `MRG_RXBUF`, or given up. */
  drops: number;
  /** Hostile chains (the queue's pop threw) and buffers too small for the header. */
  errors: number;
}

/** How a {@linkcode ReceiveDelivery} works. */
export interface ReceiveDeliveryOptions {
  /** Length of the `virtio_net_hdr` in front of every frame: 10 or 12 (see `netHeaderSize`). */
  headerSize: number;
  /** `VIRTIO_NET_F_MRG_RXBUF` was negotiated: a frame may span several buffers. */
  mergeable: boolean;
  /** Where the counts go (default: a new object, {@linkcode ReceiveDelivery.counters}). */
  counters?: ReceiveCounters;
  /**
   * Popping a chain threw `error` (usually a {@linkcode DescriptorChainError};
   * already counted in `errors`). Return true to go on with the next chain:
   * a consumed head (`error.head >= 0`) is then returned empty. Return false
   * to stop: the delivery waits, and the caller decides when to try again.
   * Default: stop for `bad-avail-idx`, go on for other chain errors, rethrow
   * anything else (virtio 1.2 §2.7 allows either for a chain error).
   */
  onChainError?: (error: unknown) => boolean;
  /**
   * Receive chain `head` has `writable` device-writable bytes, fewer than
   * the header (already counted in `errors`; it goes back with length 0).
   */
  onMalformed?: (head: number, writable: number) => void;
  /** Dirty log to mark written bytes in (live migration); see {@linkcode ReceiveDelivery.setLog}. */
  log?: WriteLog | null;
}

/**
 * The ring-size cap of one frame: a frame has taken every buffer the ring
 * can hold and wants more. Only a driver that posts buffers the device still
 * holds can cause it, so the ring cannot go on (virtio 1.2 §2.7.13: the
 * device may set `DEVICE_NEEDS_RESET`).
 */
export class ReceiveOverrunError extends Error {
  /**
   * Make the error.
   *
   * @param length Bytes of the frame, header included.
   * @param buffers The ring's size: the buffers the frame already holds.
   */
  constructor(readonly length: number, readonly buffers: number) {
    super(
      `a ${length}-byte frame took all ${buffers} receive buffers and wants more: the ` +
        `guest posts buffers the device still holds`,
    );
    this.name = "ReceiveOverrunError";
  }
}

function defaultChainError(error: unknown): boolean {
  if (!(error instanceof DescriptorChainError)) throw error;
  return error.kind !== "bad-avail-idx";
}

/**
 * Delivers frames, one at a time, into the buffers of one virtio-net
 * receive queue (virtio 1.2 §5.1.6.4). A frame is the `virtio_net_hdr`
 * followed by the Ethernet frame, in one caller buffer; the caller fills the
 * header except `num_buffers`, which the delivery sets.
 *
 * Used-ring order: a frame's buffers are pushed together, in the order they
 * were taken, once the frame is complete; hostile or malformed chains met
 * in the middle of a frame are pushed (length 0) right after them.
 * Publishing the used ring and interrupting the driver stay with the caller.
 *
 * @example Deliver a frame, waiting for buffers when the ring is empty
 * ```ts
 * import type { SplitQueue } from "@vhost-mdev/sdk";
 * import { ReceiveDelivery, ReceiveResult } from "@vhost-mdev/sdk/net";
 *
 * declare const rx: SplitQueue;
 * const delivery = new ReceiveDelivery(rx, { headerSize: 12, mergeable: true });
 * const frame = new Uint8Array(12 + 60); // zero header (no offloads), then the Ethernet frame
 * delivery.begin(frame, frame.length);
 * if (delivery.resume() === ReceiveResult.WAITING) {
 *   // Later, after the driver's kick: delivery.resume() again.
 * }
 * rx.publishUsed();
 * console.log(delivery.counters.packets);
 * ```
 */
export class ReceiveDelivery {
  /** What was delivered, dropped and refused. */
  readonly counters: ReceiveCounters;
  readonly #queue: Virtqueue;
  readonly #first: DescriptorChain = new DescriptorChain();
  readonly #next: DescriptorChain = new DescriptorChain();
  readonly #hdr: number;
  readonly #mergeable: boolean;
  readonly #onChainError: (error: unknown) => boolean;
  readonly #onMalformed: ((head: number, writable: number) => void) | null;
  readonly #regions: Uint8Array[];
  /** Each region as 32-bit words (null when its bytes do not start on a word). */
  readonly #regionWords: (Int32Array | null)[];
  readonly #heads: Uint32Array;
  readonly #lens: Uint32Array;
  readonly #deferred: Uint32Array;
  #log: WriteLog | null;
  // The frame in progress: `#out[0, #length)`, `#pos` bytes of it written.
  #out: Uint8Array | null = null;
  #length = 0;
  #pos = 0;
  #bufs = 0;
  #deferredCount = 0;
  /** The first chain was taken by {@linkcode ReceiveDelivery.deliverCopies}' short path. */
  #firstTaken = false;
  /** Buffers deliverCopies took and has yet to fill with `#copyPacket`: the first `#queued`. */
  readonly #taken: WritableBuffers;
  #queued = 0;
  #copyPacket: Uint8Array = EMPTY_PACKET;
  /** The frame of `#copyPacket`: the bytes after the header. */
  #copyFrame: Uint8Array = EMPTY_PACKET;
  /** `#copyPacket`'s header as 32-bit words (the 12-byte one is three; see #holdsHeader). */
  readonly #headerWords = new Int32Array(3);
  readonly #headerWordBytes = new Uint8Array(this.#headerWords.buffer);
  /** `#copyPacket`'s frame (the bytes after the header) as 32-bit words, when short. */
  readonly #frameWords = new Int32Array(WORD_COPY_MAX / 4);
  readonly #frameWordBytes = new Uint8Array(this.#frameWords.buffer);
  /** Whether the frame is in `#frameWords`; else `#copyFrame` is a view of it. */
  #wordCopy = false;

  /**
   * Make the delivery for `queue`; its arrays are sized by the queue size.
   *
   * @throws RangeError for a header size other than 10 or 12, or
   *   `mergeable` with the 10-byte header (which has no `num_buffers`).
   */
  constructor(queue: Virtqueue, options: ReceiveDeliveryOptions) {
    const h = options.headerSize;
    if (h !== VIRTIO_NET_HDR_SIZE && h !== VIRTIO_NET_HDR_LEGACY_SIZE) {
      throw new RangeError(`header size ${h} is not 10 or 12`);
    }
    if (options.mergeable && h !== VIRTIO_NET_HDR_SIZE) {
      throw new RangeError("MRG_RXBUF needs the 12-byte header");
    }
    this.#queue = queue;
    this.#hdr = h;
    this.#mergeable = options.mergeable;
    this.counters = options.counters ?? { packets: 0, bytes: 0, drops: 0, errors: 0 };
    this.#onChainError = options.onChainError ?? defaultChainError;
    this.#onMalformed = options.onMalformed ?? null;
    this.#log = options.log ?? null;
    this.#regions = queue.memory.regions.map((r) => r.bytes);
    this.#regionWords = this.#regions.map((b) =>
      b.byteOffset % 4 === 0 ? new Int32Array(b.buffer, b.byteOffset, b.length >>> 2) : null
    );
    const n = queue.num;
    this.#heads = new Uint32Array(n);
    this.#lens = new Uint32Array(n);
    this.#deferred = new Uint32Array(n);
    this.#taken = new WritableBuffers(n);
  }

  /** Whether a frame is in progress (begun, not yet delivered or dropped). */
  get active(): boolean {
    return this.#out !== null;
  }

  /**
   * Chains taken from the ring and not yet pushed on the used ring: what a
   * device stopping now gives back by reporting `lastAvailIdx - held` as
   * the ring's base (`GET_VRING_BASE`).
   */
  get held(): number {
    return this.#bufs + this.#deferredCount + (this.#firstTaken ? 1 : 0);
  }

  /**
   * Ring descriptors the held chains took (a packed ring's chain may take
   * several): give them back with `queue.availBefore(heldDescriptors())`.
   */
  heldDescriptors(): number {
    const q = this.#queue;
    let n = this.#firstTaken ? q.descriptorsOf(this.#first.head) : 0;
    for (let i = 0; i < this.#bufs; i++) n += q.descriptorsOf(this.#heads[i]);
    for (let i = 0; i < this.#deferredCount; i++) n += q.descriptorsOf(this.#deferred[i]);
    return n;
  }

  /** Start or stop marking written buffers in a dirty log. */
  setLog(log: WriteLog | null): void {
    this.#log = log;
  }

  /**
   * Start delivering `packet[0, length)`: the header, then the frame. The
   * delivery keeps `packet` until the frame is delivered or dropped and
   * may store `num_buffers` in its header. Nothing is taken from the ring
   * until {@linkcode ReceiveDelivery.resume}. A frame in progress is
   * forgotten (use {@linkcode ReceiveDelivery.drop} to give it up properly).
   */
  begin(packet: Uint8Array, length: number): void {
    this.#out = packet;
    this.#length = length;
    this.#pos = 0;
    this.#bufs = 0;
    this.#deferredCount = 0;
    this.#firstTaken = false;
  }

  /**
   * Go on delivering the frame in progress (virtio 1.2 §5.1.6.4): take
   * buffers until it is written, then push them with their lengths and
   * count the frame. Returns {@linkcode ReceiveResult.WAITING} (state kept)
   * when the ring has no buffer or the chain error hook stopped it.
   *
   * @throws ReceiveOverrunError when the frame holds as many buffers as the
   *   ring has and needs another: the driver is posting buffers the device
   *   holds. The frame stays in progress; the ring should stop.
   */
  resume(): ReceiveResult {
    const queue = this.#queue, out = this.#out!, length = this.#length, hdr = this.#hdr;
    while (this.#pos < length) {
      const first = this.#bufs === 0;
      const chain = first ? this.#first : this.#next;
      if (first && this.#firstTaken) {
        this.#firstTaken = false;
      } else {
        // A frame never holds more buffers than the ring has: a driver that
        // posts a buffer again while the device holds it would otherwise
        // feed this loop without end.
        if (this.#bufs + this.#deferredCount >= queue.num) {
          throw new ReceiveOverrunError(length, queue.num);
        }
        const got = this.#pop(chain);
        if (got !== TAKEN) {
          if (got === EMPTY || got === STOPPED) return WAITING;
          continue;
        }
      }
      const room = chain.writableBytes;
      if (room < hdr) {
        // Every buffer holds at least the header (virtio 1.2 §5.1.6.3.1).
        this.counters.errors++;
        if (this.#onMalformed !== null) this.#onMalformed(chain.head, room);
        this.#giveBack(chain.head);
        continue;
      }
      if (first) {
        if (room >= length) {
          // One buffer: num_buffers is 1 (virtio 1.2 §5.1.6.4).
          if (hdr === VIRTIO_NET_HDR_SIZE) {
            out[NUM_BUFFERS] = 1;
            out[NUM_BUFFERS + 1] = 0;
          }
          this.#write(chain, out, 0, length);
          queue.pushUsed(chain.head, length);
          this.counters.packets++;
          this.counters.bytes += length - hdr;
          this.#end();
          return DELIVERED;
        }
        if (!this.#mergeable) {
          // Without MRG_RXBUF a frame must fit one buffer: drop it, return the buffer.
          this.counters.drops++;
          queue.pushUsed(chain.head, 0);
          this.#end();
          return DROPPED;
        }
      }
      const n = this.#write(chain, out, this.#pos, length);
      this.#heads[this.#bufs] = chain.head;
      this.#lens[this.#bufs] = n;
      this.#bufs++;
      this.#pos += n;
    }
    const bufs = this.#bufs;
    // num_buffers (le16) in the first buffer's header, which may span descriptors.
    this.#putByte(this.#first, NUM_BUFFERS, bufs & 0xff);
    this.#putByte(this.#first, NUM_BUFFERS + 1, bufs >>> 8);
    const heads = this.#heads, lens = this.#lens, deferred = this.#deferred;
    for (let i = 0; i < bufs; i++) queue.pushUsed(heads[i], lens[i]);
    for (let i = 0, n = this.#deferredCount; i < n; i++) queue.pushUsed(deferred[i], 0);
    this.counters.packets++;
    this.counters.bytes += length - hdr;
    this.#end();
    return DELIVERED;
  }

  /** {@linkcode ReceiveDelivery.begin} and {@linkcode ReceiveDelivery.resume}. */
  deliver(packet: Uint8Array, length: number): ReceiveResult {
    this.begin(packet, length);
    return this.resume();
  }

  /**
   * Deliver `packet` (all of it: header and frame) again and again, as a
   * traffic source does, until `limit` chains were taken or the ring waits.
   * Returns the frames delivered or dropped. A frame the ring ran out of
   * buffers for stays in progress ({@linkcode ReceiveDelivery.active}):
   * resume it before delivering more. Each copy that fits the first
   * writable descriptor of its chain takes one copy, with no per-frame
   * bookkeeping; the others go through {@linkcode ReceiveDelivery.resume}.
   * Hostile chains count towards `limit`. Sets `num_buffers` in `packet` to
   * 1. A frame still in progress when this is called is forgotten.
   *
   * @throws ReceiveOverrunError as {@linkcode ReceiveDelivery.resume} does.
   */
  deliverCopies(packet: Uint8Array, limit: number): number {
    const length = packet.length, hdr = this.#hdr;
    const chain = this.#first, queue = this.#queue, taken = this.#taken;
    const room = taken.ids.length;
    // One buffer per frame: num_buffers is 1 (virtio 1.2 §5.1.6.4). A frame
    // spanning buffers gets its count in the first buffer, not in `packet`.
    if (hdr === VIRTIO_NET_HDR_SIZE && length >= hdr) {
      packet[NUM_BUFFERS] = 1;
      packet[NUM_BUFFERS + 1] = 0;
    }
    const short = length >= hdr && this.#log === null;
    if (this.#out !== null) this.#end();
    let frames = 0, copies = 0;
    this.#copyPacket = packet;
    if (short) this.#prepareCopies(packet);
    try {
      for (let n = 0; n < limit; n++) {
        if (short) {
          // Whole runs of one-buffer chains at once; the others one by one below.
          const q = this.#freeSlot();
          const most = limit - n < room - q ? limit - n : room - q;
          const got = queue.popWritable(taken, q, most, length);
          if (got > 0) {
            this.#queued = q + got;
            copies += got;
            n += got - 1;
            continue;
          }
        }
        const got = this.#pop(chain);
        if (got !== TAKEN) {
          if (got === EMPTY || got === STOPPED) break;
          continue;
        }
        const s = chain.readable;
        if (short && s < chain.count && chain.lengths[s] >= length) {
          // Copied later, with the others taken in this call (see #copyQueued).
          const q = this.#freeSlot();
          taken.set(q, chain.head, chain.regions[s], chain.offsets[s], chain.lengths[s]);
          this.#queued = q + 1;
          copies++;
          continue;
        }
        this.#copyQueued();
        this.begin(packet, length);
        this.#firstTaken = true;
        if (this.resume() === WAITING) break;
        frames++;
      }
    } finally {
      // Also when a hook threw: what was taken is filled and returned.
      this.#copyQueued();
      this.#copyPacket = this.#copyFrame = EMPTY_PACKET;
      this.#wordCopy = false;
    }
    this.counters.packets += copies;
    this.counters.bytes += copies * (length - hdr);
    return frames + copies;
  }

  /**
   * Set up {@linkcode ReceiveDelivery.#copyQueued} for `packet`: its header
   * as words, and its frame as words when short, else as a view. Copies
   * bytes (no object) unless the frame is long.
   */
  #prepareCopies(packet: Uint8Array): void {
    const hdr = this.#hdr, length = packet.length;
    const headerBytes = this.#headerWordBytes, frameBytes = this.#frameWordBytes;
    for (let i = 0; i < hdr; i++) headerBytes[i] = packet[i];
    this.#wordCopy = length - hdr <= WORD_COPY_MAX;
    if (this.#wordCopy) {
      for (let i = hdr; i < length; i++) frameBytes[i - hdr] = packet[i];
    } else {
      this.#copyFrame = packet.subarray(hdr);
    }
  }

  /** Where the next queued copy goes: the index after the queued ones, made room for. */
  #freeSlot(): number {
    if (this.#queued === this.#taken.ids.length) this.#copyQueued();
    return this.#queued;
  }

  /**
   * Copy the packet into every buffer {@linkcode ReceiveDelivery.deliverCopies}
   * queued, then push them all used, in the order they were taken. Taking a
   * run of chains first and copying after, in one tight loop, lets the
   * processor fetch the destination lines (last touched by the driver, on
   * another core) in parallel instead of one frame at a time: `deno task
   * bench`'s b2f-64 went up 1.24 times (docs/benchmarks.md, packed rings).
   */
  #copyQueued(): void {
    const n = this.#queued;
    if (n === 0) return;
    this.#queued = 0;
    const packet = this.#copyPacket, length = packet.length, regions = this.#regions;
    const frame = this.#copyFrame, hdr = this.#hdr;
    const taken = this.#taken, copyRegion = taken.regions, copyOffset = taken.offsets;
    // A short frame goes word by word (see WORD_COPY_MAX), its last
    // length % 4 bytes one by one; a long one in one call.
    const regionWords = this.#regionWords, source = this.#frameWords;
    const whole = this.#wordCopy ? (length - hdr) >>> 2 : -1, tail = hdr + whole * 4;
    for (let k = 0; k < n; k++) {
      const r = copyRegion[k], at = copyOffset[k], dst = regions[r];
      const words = regionWords[r], to = at + hdr;
      if (!this.#holdsHeader(dst, words, at, hdr)) {
        for (let i = 0; i < hdr; i++) dst[at + i] = packet[i];
      }
      if (whole < 0) {
        dst.set(frame, to);
      } else if (words !== null && (to & 3) === 0 && to < WORD_INDEXED) {
        const d = to >>> 2;
        for (let j = 0; j < whole; j++) words[d + j] = source[j];
        for (let i = tail; i < length; i++) dst[at + i] = packet[i];
      } else {
        for (let i = hdr; i < length; i++) dst[at + i] = packet[i];
      }
    }
    const queue = this.#queue, ids = taken.ids;
    for (let k = 0; k < n; k++) queue.pushUsed(ids[k], length);
  }

  /**
   * Whether a region (`dst`, and as `words`) at `at` already holds `#copyPacket`'s `hdr`-byte
   * header. The header is then not written, as DPDK's vhost leaves each
   * header field that already has its value: the driver reads the header,
   * and a line the device did not write stays in the driver's cache
   * instead of moving back to it. Buffers are recycled, so the header of a
   * frame like the last one usually is there already.
   */
  #holdsHeader(dst: Uint8Array, words: Int32Array | null, at: number, hdr: number): boolean {
    if (hdr === VIRTIO_NET_HDR_SIZE && words !== null && (at & 3) === 0 && at < WORD_INDEXED) {
      const w = this.#headerWords, i = at >>> 2;
      return words[i] === w[0] && words[i + 1] === w[1] && words[i + 2] === w[2];
    }
    const packet = this.#copyPacket;
    for (let i = 0; i < hdr; i++) if (dst[at + i] !== packet[i]) return false;
    return true;
  }

  /**
   * Give up the frame in progress (if any): the buffers it holds go back
   * empty (used length 0), and it counts as a drop.
   */
  drop(): void {
    if (this.#out === null) return;
    const queue = this.#queue;
    if (this.#firstTaken) queue.pushUsed(this.#first.head, 0);
    for (let i = 0; i < this.#bufs; i++) queue.pushUsed(this.#heads[i], 0);
    for (let i = 0; i < this.#deferredCount; i++) queue.pushUsed(this.#deferred[i], 0);
    this.counters.drops++;
    this.#end();
  }

  /**
   * Pop the next receive chain into `chain`: TAKEN, EMPTY, RETURNED or
   * STOPPED. A hostile chain (the queue's pop threw) is counted in `errors`
   * and handed to the chain error hook; when the ring goes on, its head is
   * returned with length 0: now, or after the buffers of the frame in
   * progress.
   */
  #pop(chain: DescriptorChain): number {
    try {
      return this.#queue.pop(chain) ? TAKEN : EMPTY;
    } catch (e) {
      this.counters.errors++;
      if (!this.#onChainError(e)) return STOPPED;
      if (e instanceof DescriptorChainError && e.head >= 0) this.#giveBack(e.head);
      return RETURNED;
    }
  }

  #end(): void {
    this.#out = null;
    this.#bufs = 0;
    this.#deferredCount = 0;
    this.#firstTaken = false;
  }

  /** Return a bad chain: now, or after the buffers of the frame being filled. */
  #giveBack(head: number): void {
    // After the copies taken before it, in ring order (IN_ORDER devices rely on it).
    this.#copyQueued();
    if (this.#bufs > 0) this.#deferred[this.#deferredCount++] = head;
    else this.#queue.pushUsed(head, 0);
  }

  /** Copy `src[from, end)` into the chain's writable buffers; returns bytes written. */
  #write(chain: DescriptorChain, src: Uint8Array, from: number, end: number): number {
    const lengths = chain.lengths, offsets = chain.offsets, regions = chain.regions;
    const log = this.#log;
    let pos = from;
    for (let s = chain.readable, n = chain.count; s < n && pos < end; s++) {
      const len = lengths[s];
      const take = len < end - pos ? len : end - pos;
      const to = offsets[s], dst = this.#regions[regions[s]];
      if (take <= SMALL_COPY) {
        for (let k = 0; k < take; k++) dst[to + k] = src[pos + k];
      } else {
        dst.set(src.subarray(pos, pos + take), to);
      }
      if (log !== null) log.mark(chain.addresses[s], take);
      pos += take;
    }
    return pos - from;
  }

  /** Store one byte at `offset` of the chain's writable bytes. */
  #putByte(chain: DescriptorChain, offset: number, value: number): void {
    const lengths = chain.lengths;
    let skip = offset;
    for (let s = chain.readable, n = chain.count; s < n; s++) {
      if (skip < lengths[s]) {
        this.#regions[chain.regions[s]][chain.offsets[s] + skip] = value;
        if (this.#log !== null) this.#log.mark(chain.addresses[s] + skip, 1);
        return;
      }
      skip -= lengths[s];
    }
  }
}
