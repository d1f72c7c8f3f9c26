/**
 * A minimal virtio-net guest driver over a {@linkcode VhostUserFrontend}:
 * what a Linux guest's virtio_net does to a vhost-user backend, small enough
 * to read. It negotiates features, lays out N queue pairs in the frontend's
 * guest memory (ring `2i` receives, ring `2i + 1` transmits, virtio 1.2
 * §5.1.2), posts receive buffers, and moves Ethernet frames.
 *
 * Every frame travels behind the 12-byte `virtio_net_hdr` (virtio 1.2
 * §5.1.6; `VERSION_1` makes it 12 bytes with or without `MRG_RXBUF`). This
 * driver offloads nothing: transmit headers are zero, and with `MRG_RXBUF`
 * a received frame may span `num_buffers` receive buffers.
 *
 * Receive and transmit buffers are one descriptor each, of `bufferSize`
 * bytes, at fixed guest-physical addresses after the rings. The rings,
 * features and interrupts are a {@linkcode VirtioGuest}'s: split or packed
 * (`packed`), and behind the frontend's IOMMU when asked (`iommu`: the
 * device is given IOVAs, which it must translate through its IOTLB).
 *
 * Two ways to move frames: {@linkcode VirtioNetDriver.send} and
 * {@linkcode VirtioNetDriver.receive} take and return arrays of copies, easy
 * to test with; {@linkcode VirtioNetDriver.sendWith} and
 * {@linkcode VirtioNetDriver.receiveWith} let the caller write and read
 * frames in guest memory in place, a batch per call, with no allocation per
 * frame (what a load generator wants).
 *
 * @example
 * ```ts
 * import { VhostUserFrontend, VirtioNetDriver } from "@vhost-mdev/testing";
 *
 * declare const frame: Uint8Array;
 * const fe = await VhostUserFrontend.connect("/tmp/vhost.sock");
 * const net = await VirtioNetDriver.start(fe, { queuePairs: 1, ringSize: 256 });
 * net.send([frame]);
 * const frames = await net.waitReceive(1);
 * await net.stop();
 * fe.close();
 * ```
 *
 * @module
 */

import { bit, VIRTIO_NET_HDR_SIZE, VirtioFeatureBit, VirtioNetFeatureBit } from "@vhost-mdev/sdk";
import { readNumBuffers } from "@vhost-mdev/sdk/net";
import type { VirtqueueDriver } from "@vhost-mdev/sdk";
import type { VhostUserFrontend } from "./vhost_user_frontend.ts";
import { VirtioGuest, type VirtioGuestIommuOptions } from "./virtio_guest.ts";

/** Options of {@linkcode VirtioNetDriver.start}. */
export interface VirtioNetDriverOptions {
  /** Queue pairs (default 1); more than one needs `VIRTIO_NET_F_MQ`. */
  queuePairs?: number;
  /** Descriptors per ring, a power of two (default 256). */
  ringSize?: number;
  /** Negotiate `VIRTIO_NET_F_MRG_RXBUF` (default false); required when true. */
  mrgRxbuf?: boolean;
  /** Negotiate `VIRTIO_F_EVENT_IDX` (default false); required when true. */
  eventIdx?: boolean;
  /**
   * Bytes of each receive and transmit buffer, header included (default
   * 2048). Without `MRG_RXBUF` a receive buffer must hold a whole frame.
   */
  bufferSize?: number;
  /** More feature bits to acknowledge when the backend offers them. */
  extraFeatures?: bigint;
  /** Drive packed rings (`VIRTIO_F_RING_PACKED`, then required); default split. */
  packed?: boolean;
  /**
   * Run behind the frontend's IOMMU (a frontend made with `iommu`): see
   * {@linkcode VirtioGuestOptions.iommu}.
   */
  iommu?: boolean | VirtioGuestIommuOptions;
}

/** Counters of one queue pair. */
export interface VirtioNetQueueStats {
  /** Queue pair index. */
  pair: number;
  /** Frames handed to the device. */
  txPackets: number;
  /** Frame bytes handed to the device (headers excluded). */
  txBytes: number;
  /** Transmit buffers the device returned. */
  txCompleted: number;
  /** Frames refused because every transmit buffer was in flight. */
  txFull: number;
  /** Kicks of the transmit ring. */
  txKicks: number;
  /** Frames received. */
  rxPackets: number;
  /** Frame bytes received (headers excluded). */
  rxBytes: number;
  /** Frames that spanned more than one buffer (`MRG_RXBUF`). */
  rxMerged: number;
  /** Received buffers that made no valid frame (too short, bad `num_buffers`). */
  rxErrors: number;
  /** Kicks of the receive ring. */
  rxKicks: number;
  /** Interrupts (call eventfd counts) seen on the receive ring. */
  rxCalls: number;
  /** Interrupts seen on the transmit ring. */
  txCalls: number;
}

/**
 * Writes frame `index` of a batch into `bytes` at `offset` (guest memory,
 * after the header) and returns its length, at most `bufferSize - 12`.
 */
export type FrameWriter = (bytes: Uint8Array, offset: number, index: number) => number;

/**
 * Reads one received frame, `bytes[offset .. offset + length)`, header
 * stripped. The bytes are only valid during the call (the buffer is reposted
 * after it).
 */
export type FrameReader = (bytes: Uint8Array, offset: number, length: number) => void;

interface Pair {
  rx: VirtqueueDriver;
  tx: VirtqueueDriver;
  rxBufGpa: number;
  txBufGpa: number;
  txFree: Int32Array;
  txFreeCount: number;
  stats: VirtioNetQueueStats;
}

function newStats(pair: number): VirtioNetQueueStats {
  return {
    pair,
    txPackets: 0,
    txBytes: 0,
    txCompleted: 0,
    txFull: 0,
    txKicks: 0,
    rxPackets: 0,
    rxBytes: 0,
    rxMerged: 0,
    rxErrors: 0,
    rxKicks: 0,
    rxCalls: 0,
    txCalls: 0,
  };
}

/** A virtio-net driver instance bound to one frontend connection. */
export class VirtioNetDriver {
  /** The frontend it drives. */
  readonly frontend: VhostUserFrontend;
  /** The generic guest underneath: features, rings, interrupts. */
  readonly guest: VirtioGuest;
  /** Features acknowledged with `SET_FEATURES`. */
  readonly features: bigint;
  /** Queue pairs in use. */
  readonly queuePairs: number;
  /** Descriptors per ring. */
  readonly ringSize: number;
  /** Bytes per buffer. */
  readonly bufferSize: number;
  /** Whether `MRG_RXBUF` was negotiated. */
  readonly mrgRxbuf: boolean;
  readonly #pairs: Pair[];
  /** All of guest memory; byte `i` is GPA `memoryGpa + i`. */
  readonly #bytes: Uint8Array;
  readonly #memoryGpa: number;
  /** Where frames spanning several buffers are put together. */
  #scratch = new Uint8Array(0);

  private constructor(
    guest: VirtioGuest,
    options: Required<
      Omit<VirtioNetDriverOptions, "extraFeatures" | "eventIdx" | "packed" | "iommu">
    >,
  ) {
    this.frontend = guest.frontend;
    this.guest = guest;
    this.features = guest.features;
    this.queuePairs = options.queuePairs;
    this.ringSize = options.ringSize;
    this.bufferSize = options.bufferSize;
    this.mrgRxbuf = options.mrgRxbuf;
    this.#memoryGpa = guest.frontend.memoryGpa;
    this.#bytes = guest.frontend.memory.bytes(this.#memoryGpa, guest.frontend.memorySize);
    const n = options.ringSize;
    this.#pairs = [];
    for (let p = 0; p < options.queuePairs; p++) {
      const txFree = new Int32Array(n);
      for (let i = 0; i < n; i++) txFree[i] = n - 1 - i;
      this.#pairs.push({
        rx: guest.ring(2 * p),
        tx: guest.ring(2 * p + 1),
        rxBufGpa: guest.allocate(n * options.bufferSize),
        txBufGpa: guest.allocate(n * options.bufferSize),
        txFree,
        txFreeCount: n,
        stats: newStats(p),
      });
    }
  }

  /**
   * Bring the device up the way a guest driver does: handshake, feature
   * negotiation, `SET_STATUS` ACKNOWLEDGE|DRIVER|FEATURES_OK (with the
   * `STATUS` protocol feature), `SET_MEM_TABLE`, every ring, receive
   * buffers posted, rings enabled, then DRIVER_OK; receive rings are kicked.
   *
   * @throws Error naming the missing feature or the failed request.
   */
  static async start(
    frontend: VhostUserFrontend,
    options: VirtioNetDriverOptions = {},
  ): Promise<VirtioNetDriver> {
    const opts = {
      queuePairs: options.queuePairs ?? 1,
      ringSize: options.ringSize ?? 256,
      mrgRxbuf: options.mrgRxbuf ?? false,
      bufferSize: options.bufferSize ?? 2048,
    };
    const eventIdx = options.eventIdx ?? false;
    if (!Number.isInteger(opts.queuePairs) || opts.queuePairs < 1 || opts.queuePairs > 127) {
      throw new RangeError(`queuePairs ${opts.queuePairs} is not within 1..127`);
    }
    if (!Number.isInteger(opts.bufferSize) || opts.bufferSize <= VIRTIO_NET_HDR_SIZE) {
      throw new RangeError(`bufferSize ${opts.bufferSize} leaves no room after the header`);
    }
    if (!opts.mrgRxbuf && opts.bufferSize < VIRTIO_NET_HDR_SIZE + 1514) {
      throw new RangeError(
        `bufferSize ${opts.bufferSize} cannot hold a 1514-byte frame; use at least ` +
          `${VIRTIO_NET_HDR_SIZE + 1514} or MRG_RXBUF`,
      );
    }
    const required = (opts.mrgRxbuf ? bit(VirtioNetFeatureBit.MRG_RXBUF) : 0n) |
      (eventIdx ? bit(VirtioFeatureBit.EVENT_IDX) : 0n) |
      (opts.queuePairs > 1 ? bit(VirtioNetFeatureBit.MQ) : 0n);
    let guest: VirtioGuest;
    try {
      guest = await VirtioGuest.setup(frontend, {
        queues: 2 * opts.queuePairs,
        ringSize: opts.ringSize,
        required,
        optional: options.extraFeatures,
        packed: options.packed,
        iommu: options.iommu,
      });
    } catch (e) {
      if (e instanceof Error && e.message.startsWith("virtio: the device does not offer")) {
        e.message = e.message.replace("virtio: the device", "virtio-net: the backend");
      }
      throw e;
    }
    if (opts.queuePairs > 1 && frontend.queueNum > 0 && frontend.queueNum < opts.queuePairs) {
      throw new Error(
        `virtio-net: the backend supports ${frontend.queueNum} queues, asked for ${opts.queuePairs} pairs`,
      );
    }
    const driver = new VirtioNetDriver(guest, opts);
    for (const pair of driver.#pairs) {
      for (let slot = 0; slot < opts.ringSize; slot++) driver.#postRx(pair, slot);
      pair.rx.publish();
    }
    await guest.activate();
    for (let p = 0; p < opts.queuePairs; p++) {
      guest.kick(2 * p);
      driver.#pairs[p].stats.rxKicks++;
    }
    return driver;
  }

  #pair(p: number): Pair {
    const pair = this.#pairs[p];
    if (!pair) throw new RangeError(`queue pair ${p} is not within 0..${this.queuePairs - 1}`);
    return pair;
  }

  #postRx(pair: Pair, slot: number): void {
    const gpa = pair.rxBufGpa + slot * this.bufferSize;
    if (!pair.rx.addBuffer(gpa, this.bufferSize, true, slot)) {
      throw new Error(`virtio-net: receive ring full while reposting buffer ${slot}`);
    }
  }

  #reclaimTx(pair: Pair): void {
    const tx = pair.tx;
    while (tx.nextUsed()) {
      pair.txFree[pair.txFreeCount++] = tx.usedToken;
      pair.stats.txCompleted++;
    }
  }

  /** Transmit buffers of pair `pair` free now (completed ones reclaimed first). */
  txRoom(pair = 0): number {
    const p = this.#pair(pair);
    this.#reclaimTx(p);
    return p.txFreeCount;
  }

  /**
   * Queue `frames` on pair `pair`'s transmit ring (each behind a zero
   * header), kick when the device wants it, and return how many were
   * queued; the rest did not fit (all buffers in flight).
   *
   * @throws RangeError for a frame larger than a buffer minus the header.
   */
  send(frames: readonly Uint8Array[], pair = 0): number {
    const room = this.bufferSize - VIRTIO_NET_HDR_SIZE;
    return this.sendWith(frames.length, (bytes, offset, i) => {
      const frame = frames[i];
      if (frame.length > room) {
        throw new RangeError(
          `frame of ${frame.length} bytes does not fit a ${this.bufferSize}-byte buffer with its header`,
        );
      }
      bytes.set(frame, offset);
      return frame.length;
    }, pair);
  }

  /**
   * Queue up to `count` frames on pair `pair`'s transmit ring, each written
   * in place by `write` behind a zero header; publish once, kick when the
   * device wants it, and return how many were queued (fewer when transmit
   * buffers ran out). No allocation per frame.
   *
   * @throws RangeError when `write` returns a length that is negative or
   *   larger than a buffer minus the header (what was queued before is sent).
   */
  sendWith(count: number, write: FrameWriter, pair = 0): number {
    const p = this.#pair(pair);
    this.#reclaimTx(p);
    const bytes = this.#bytes;
    const room = this.bufferSize - VIRTIO_NET_HDR_SIZE;
    let sent = 0;
    try {
      while (sent < count) {
        if (p.txFreeCount === 0) {
          p.stats.txFull += count - sent;
          break;
        }
        const slot = p.txFree[p.txFreeCount - 1];
        const gpa = p.txBufGpa + slot * this.bufferSize;
        const at = gpa - this.#memoryGpa;
        bytes.fill(0, at, at + VIRTIO_NET_HDR_SIZE);
        const len = write(bytes, at + VIRTIO_NET_HDR_SIZE, sent);
        if (!(len >= 0 && len <= room)) {
          throw new RangeError(
            `frame of ${len} bytes does not fit a ${this.bufferSize}-byte buffer with its header`,
          );
        }
        p.tx.addBuffer(gpa, VIRTIO_NET_HDR_SIZE + len, false, slot);
        p.txFreeCount--;
        sent++;
        p.stats.txPackets++;
        p.stats.txBytes += len;
      }
    } finally {
      if (sent > 0 && this.guest.publish(2 * pair + 1)) p.stats.txKicks++;
    }
    return sent;
  }

  /**
   * Take the frames the device delivered on pair `pair` (at most `max`),
   * headers stripped and `num_buffers` buffers merged, and repost their
   * buffers. Returns copies; an empty array when nothing arrived.
   */
  receive(pair = 0, max = Infinity): Uint8Array[] {
    const out: Uint8Array[] = [];
    this.receiveWith(
      (bytes, offset, length) => {
        out.push(bytes.slice(offset, offset + length));
      },
      pair,
      max,
    );
    return out;
  }

  /**
   * Hand each frame the device delivered on pair `pair` (at most `max`) to
   * `read` in place, header stripped and `num_buffers` buffers merged;
   * repost the buffers, publish once, kick when the device wants it, and
   * return how many frames were read. No allocation per frame.
   */
  receiveWith(read: FrameReader, pair = 0, max = Infinity): number {
    const p = this.#pair(pair);
    const rx = p.rx;
    const bytes = this.#bytes;
    let frames = 0;
    let reposted = 0;
    try {
      while (frames < max && rx.nextUsed()) {
        const slot = rx.usedToken;
        const len = rx.usedLen;
        const at = this.#rxOffset(slot, len, p);
        this.#postRx(p, slot);
        reposted++;
        if (at < 0 || len < VIRTIO_NET_HDR_SIZE) {
          p.stats.rxErrors++;
          continue;
        }
        const numBuffers = this.mrgRxbuf ? readNumBuffers(bytes, at) : 1;
        if (numBuffers === 1) {
          p.stats.rxPackets++;
          p.stats.rxBytes += len - VIRTIO_NET_HDR_SIZE;
          frames++;
          read(bytes, at + VIRTIO_NET_HDR_SIZE, len - VIRTIO_NET_HDR_SIZE);
          continue;
        }
        // A frame over several buffers: put it together in the scratch area.
        let total = this.#gather(0, bytes, at + VIRTIO_NET_HDR_SIZE, len - VIRTIO_NET_HDR_SIZE);
        let ok = numBuffers > 1;
        for (let i = 1; ok && i < numBuffers; i++) {
          if (!rx.nextUsed()) {
            ok = false;
            break;
          }
          const more = rx.usedToken;
          const moreLen = rx.usedLen;
          const moreAt = this.#rxOffset(more, moreLen, p);
          this.#postRx(p, more);
          reposted++;
          if (moreAt < 0) ok = false;
          else total = this.#gather(total, bytes, moreAt, moreLen);
        }
        if (!ok) {
          p.stats.rxErrors++;
          continue;
        }
        p.stats.rxMerged++;
        p.stats.rxPackets++;
        p.stats.rxBytes += total;
        frames++;
        read(this.#scratch, 0, total);
      }
    } finally {
      if (reposted > 0 && this.guest.publish(2 * pair)) p.stats.rxKicks++;
    }
    return frames;
  }

  /** Offset in guest memory of receive buffer `slot`, or -1 for a bad id/length. */
  #rxOffset(slot: number, len: number, p: Pair): number {
    if (!(slot >= 0 && slot < this.ringSize) || slot !== (slot | 0) || len > this.bufferSize) {
      return -1;
    }
    return p.rxBufGpa + slot * this.bufferSize - this.#memoryGpa;
  }

  /** Append `bytes[at .. at + len)` to the scratch area at `end`; returns the new end. */
  #gather(end: number, bytes: Uint8Array, at: number, len: number): number {
    if (end + len > this.#scratch.length) {
      const bigger = new Uint8Array(Math.max(2 * this.#scratch.length, end + len, 65536));
      bigger.set(this.#scratch.subarray(0, end));
      this.#scratch = bigger;
    }
    this.#scratch.set(bytes.subarray(at, at + len), end);
    return end + len;
  }

  /**
   * Receive until `count` frames arrived on pair `pair`, sleeping on the
   * receive ring's call eventfd between looks.
   *
   * @throws Error after `timeoutMs` (default 5000) with how many arrived.
   */
  async waitReceive(count: number, pair = 0, timeoutMs = 5000): Promise<Uint8Array[]> {
    const deadline = performance.now() + timeoutMs;
    const frames: Uint8Array[] = [];
    for (;;) {
      frames.push(...this.receive(pair, count - frames.length));
      if (frames.length >= count) return frames;
      const left = deadline - performance.now();
      try {
        if (left <= 0) throw new Error("deadline passed");
        await this.guest.waitUsed(2 * pair, left);
      } catch {
        throw new Error(
          `virtio-net: ${frames.length} of ${count} frames arrived on pair ${pair} within ${timeoutMs} ms`,
        );
      }
    }
  }

  /**
   * Wait until the device has returned every transmit buffer of pair `pair`.
   *
   * @throws Error after `timeoutMs` (default 5000) with how many are in flight.
   */
  async flushTx(pair = 0, timeoutMs = 5000): Promise<void> {
    const p = this.#pair(pair);
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      this.#reclaimTx(p);
      if (p.txFreeCount === this.ringSize) return;
      const left = deadline - performance.now();
      try {
        if (left <= 0) throw new Error("deadline passed");
        await this.guest.waitUsed(2 * pair + 1, left);
      } catch {
        throw new Error(
          `virtio-net: ${this.ringSize - p.txFreeCount} transmit buffers of pair ${pair} ` +
            `still in flight after ${timeoutMs} ms`,
        );
      }
    }
  }

  /**
   * Resolve once pair `pair`'s receive ring, or any of `pairs`' receive
   * rings, has something to take, with that pair; sleeps on call eventfds.
   *
   * @throws Error after `timeoutMs` (default 5000).
   */
  async waitRx(pairs: number | readonly number[] = 0, timeoutMs = 5000): Promise<number> {
    const list = typeof pairs === "number" ? [pairs] : pairs;
    const ring = await this.guest.waitUsed(list.map((p) => 2 * p), timeoutMs);
    return ring / 2;
  }

  /** Counters of pair `pair` (a copy). */
  stats(pair = 0): VirtioNetQueueStats {
    const s = this.#pair(pair).stats;
    s.rxCalls = this.guest.calls(2 * pair);
    s.txCalls = this.guest.calls(2 * pair + 1);
    return { ...s };
  }

  /**
   * Stop the device like a guest driver unloading: disable every ring (with
   * `PROTOCOL_FEATURES`), then `GET_VRING_BASE` each. Returns the backend's
   * next available index per ring. Idempotent after the first call.
   */
  stop(): Promise<number[]> {
    return this.guest.stop();
  }
}
