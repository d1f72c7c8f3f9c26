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
 * bytes, at fixed guest-physical addresses after the rings.
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

import { pollAsync, POLLIN } from "@vhost-mdev/sdk/sys";
import { ProtocolFeatureBit } from "@vhost-mdev/sdk/vhost-user";
import {
  bit,
  hasBit,
  VIRTIO_NET_HDR_SIZE,
  VirtioFeatureBit,
  VirtioNetFeatureBit,
  VirtioStatus,
} from "@vhost-mdev/sdk";
import { readNumBuffers } from "@vhost-mdev/sdk/net";
import { isValidQueueSize } from "@vhost-mdev/sdk";
import { SplitQueueDriver } from "@vhost-mdev/sdk";
import type { VhostUserFrontend } from "./vhost_user_frontend.ts";

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

interface Pair {
  rx: SplitQueueDriver;
  tx: SplitQueueDriver;
  rxBufGpa: number;
  txBufGpa: number;
  txFree: number[];
  stats: VirtioNetQueueStats;
}

const PAGE = 4096;

function alignUp(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}

/** A virtio-net driver instance bound to one frontend connection. */
export class VirtioNetDriver {
  /** The frontend it drives. */
  readonly frontend: VhostUserFrontend;
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
  #pairs: Pair[];
  #stopped = false;

  private constructor(
    frontend: VhostUserFrontend,
    features: bigint,
    options: Required<Omit<VirtioNetDriverOptions, "extraFeatures">>,
    pairs: Pair[],
  ) {
    this.frontend = frontend;
    this.features = features;
    this.queuePairs = options.queuePairs;
    this.ringSize = options.ringSize;
    this.bufferSize = options.bufferSize;
    this.mrgRxbuf = options.mrgRxbuf;
    this.#pairs = pairs;
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
      eventIdx: options.eventIdx ?? false,
      bufferSize: options.bufferSize ?? 2048,
    };
    if (!Number.isInteger(opts.queuePairs) || opts.queuePairs < 1 || opts.queuePairs > 127) {
      throw new RangeError(`queuePairs ${opts.queuePairs} is not within 1..127`);
    }
    if (!isValidQueueSize(opts.ringSize)) {
      throw new RangeError(`ringSize ${opts.ringSize} is not a power of two within 1..32768`);
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

    const offered = await frontend.handshake();
    const required = bit(VirtioFeatureBit.VERSION_1) |
      (opts.mrgRxbuf ? bit(VirtioNetFeatureBit.MRG_RXBUF) : 0n) |
      (opts.eventIdx ? bit(VirtioFeatureBit.EVENT_IDX) : 0n) |
      (opts.queuePairs > 1 ? bit(VirtioNetFeatureBit.MQ) : 0n);
    const missing = required & ~offered;
    if (missing !== 0n) {
      throw new Error(
        `virtio-net: the backend does not offer feature bits 0x${missing.toString(16)} ` +
          `(offer 0x${offered.toString(16)})`,
      );
    }
    const features = required | (offered & bit(VirtioFeatureBit.PROTOCOL_FEATURES)) |
      (offered & (options.extraFeatures ?? 0n));
    const status = hasBit(frontend.protocolFeatures, ProtocolFeatureBit.STATUS);
    if (opts.queuePairs > 1 && frontend.queueNum > 0 && frontend.queueNum < opts.queuePairs) {
      throw new Error(
        `virtio-net: the backend supports ${frontend.queueNum} queues, asked for ${opts.queuePairs} pairs`,
      );
    }

    await frontend.setFeatures(features);
    if (status) {
      await frontend.setStatus(
        VirtioStatus.ACKNOWLEDGE | VirtioStatus.DRIVER | VirtioStatus.FEATURES_OK,
      );
    }
    await frontend.setMemTable();

    // Guest memory: page 0 left unused, then per pair the two rings and the
    // two buffer areas.
    const eventIdx = hasBit(features, VirtioFeatureBit.EVENT_IDX);
    const n = opts.ringSize;
    let next = frontend.memoryGpa + PAGE;
    const take = (bytes: number) => {
      const at = next;
      next = alignUp(next + bytes, PAGE);
      if (next > frontend.memoryGpa + frontend.memorySize) {
        throw new RangeError(
          `virtio-net: ${opts.queuePairs} pairs of ${n}-entry rings with ${opts.bufferSize}-byte ` +
            `buffers do not fit in ${frontend.memorySize / 1048576} MiB of guest memory`,
        );
      }
      return at;
    };
    const pairs: Pair[] = [];
    for (let p = 0; p < opts.queuePairs; p++) {
      const ringBytes = SplitQueueDriver.layout(n, 0).bytes;
      const rxLayout = SplitQueueDriver.layout(n, take(ringBytes));
      const txLayout = SplitQueueDriver.layout(n, take(ringBytes));
      const rxBufGpa = take(n * opts.bufferSize);
      const txBufGpa = take(n * opts.bufferSize);
      pairs.push({
        rx: new SplitQueueDriver(frontend.memory, rxLayout, { eventIdx }),
        tx: new SplitQueueDriver(frontend.memory, txLayout, { eventIdx }),
        rxBufGpa,
        txBufGpa,
        txFree: Array.from({ length: n }, (_, i) => n - 1 - i),
        stats: {
          pair: p,
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
        },
      });
      await frontend.setupRing(2 * p, rxLayout);
      await frontend.setupRing(2 * p + 1, txLayout);
    }

    const driver = new VirtioNetDriver(frontend, features, opts, pairs);
    for (const pair of pairs) {
      for (let slot = 0; slot < n; slot++) driver.#postRx(pair, slot);
      pair.rx.publish();
    }
    if (hasBit(features, VirtioFeatureBit.PROTOCOL_FEATURES)) {
      for (let q = 0; q < 2 * opts.queuePairs; q++) await frontend.setVringEnable(q, true);
    }
    if (status) {
      await frontend.setStatus(
        VirtioStatus.ACKNOWLEDGE | VirtioStatus.DRIVER | VirtioStatus.FEATURES_OK |
          VirtioStatus.DRIVER_OK,
      );
    }
    for (let p = 0; p < opts.queuePairs; p++) {
      frontend.kick(2 * p);
      pairs[p].stats.rxKicks++;
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
    while (pair.tx.nextUsed()) {
      pair.txFree.push(pair.tx.usedToken);
      pair.stats.txCompleted++;
    }
  }

  /**
   * Queue `frames` on pair `pair`'s transmit ring (each behind a zero
   * header), kick when the device wants it, and return how many were
   * queued; the rest did not fit (all buffers in flight).
   *
   * @throws RangeError for a frame larger than a buffer minus the header.
   */
  send(frames: readonly Uint8Array[], pair = 0): number {
    const p = this.#pair(pair);
    this.#reclaimTx(p);
    const mem = this.frontend.memory;
    let sent = 0;
    for (const frame of frames) {
      const len = VIRTIO_NET_HDR_SIZE + frame.length;
      if (len > this.bufferSize) {
        throw new RangeError(
          `frame of ${frame.length} bytes does not fit a ${this.bufferSize}-byte buffer with its header`,
        );
      }
      const slot = p.txFree.pop();
      if (slot === undefined) {
        p.stats.txFull += frames.length - sent;
        break;
      }
      const gpa = p.txBufGpa + slot * this.bufferSize;
      const buf = mem.bytes(gpa, len);
      buf.fill(0, 0, VIRTIO_NET_HDR_SIZE);
      buf.set(frame, VIRTIO_NET_HDR_SIZE);
      if (!p.tx.addBuffer(gpa, len, false, slot)) {
        p.txFree.push(slot);
        p.stats.txFull += frames.length - sent;
        break;
      }
      sent++;
      p.stats.txPackets++;
      p.stats.txBytes += frame.length;
    }
    if (sent > 0) {
      p.tx.publish();
      if (p.tx.kickNeeded()) {
        this.frontend.kick(2 * pair + 1);
        p.stats.txKicks++;
      }
    }
    return sent;
  }

  /**
   * Take the frames the device delivered on pair `pair` (at most `max`),
   * headers stripped and `num_buffers` buffers merged, and repost their
   * buffers. Returns copies; an empty array when nothing arrived.
   */
  receive(pair = 0, max = Infinity): Uint8Array[] {
    const p = this.#pair(pair);
    const out: Uint8Array[] = [];
    let reposted = 0;
    while (out.length < max && p.rx.nextUsed()) {
      const slot = p.rx.usedToken;
      const first = this.#rxBytes(p, slot, p.rx.usedLen);
      this.#postRx(p, slot);
      reposted++;
      if (!first || first.length < VIRTIO_NET_HDR_SIZE) {
        p.stats.rxErrors++;
        continue;
      }
      const numBuffers = this.mrgRxbuf ? readNumBuffers(first, 0) : 1;
      const parts = [first.subarray(VIRTIO_NET_HDR_SIZE)];
      let ok = numBuffers >= 1;
      for (let i = 1; ok && i < numBuffers; i++) {
        if (!p.rx.nextUsed()) {
          ok = false;
          break;
        }
        const more = p.rx.usedToken;
        const bytes = this.#rxBytes(p, more, p.rx.usedLen);
        this.#postRx(p, more);
        reposted++;
        if (!bytes) ok = false;
        else parts.push(bytes);
      }
      if (!ok) {
        p.stats.rxErrors++;
        continue;
      }
      let total = 0;
      for (const part of parts) total += part.length;
      const frame = new Uint8Array(total);
      let off = 0;
      for (const part of parts) {
        frame.set(part, off);
        off += part.length;
      }
      if (parts.length > 1) p.stats.rxMerged++;
      p.stats.rxPackets++;
      p.stats.rxBytes += total;
      out.push(frame);
    }
    if (reposted > 0) {
      p.rx.publish();
      if (p.rx.kickNeeded()) {
        this.frontend.kick(2 * pair);
        p.stats.rxKicks++;
      }
    }
    return out;
  }

  /** The bytes the device wrote into receive buffer `slot`, or null for a bad id/length. */
  #rxBytes(p: Pair, slot: number, len: number): Uint8Array | null {
    if (!Number.isInteger(slot) || slot < 0 || slot >= this.ringSize || len > this.bufferSize) {
      return null;
    }
    return this.frontend.memory.bytes(p.rxBufGpa + slot * this.bufferSize, len);
  }

  /**
   * Receive until `count` frames arrived on pair `pair`, sleeping on the
   * receive ring's call eventfd between looks.
   *
   * @throws Error after `timeoutMs` (default 5000) with how many arrived.
   */
  async waitReceive(count: number, pair = 0, timeoutMs = 5000): Promise<Uint8Array[]> {
    const deadline = Date.now() + timeoutMs;
    const frames: Uint8Array[] = [];
    for (;;) {
      frames.push(...this.receive(pair, count - frames.length));
      this.#takeCalls(pair);
      if (frames.length >= count) return frames;
      // Ask for an interrupt; if buffers arrived meanwhile, look again at once.
      if (this.#pairs[pair].rx.enableInterrupts()) continue;
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(
          `virtio-net: ${frames.length} of ${count} frames arrived on pair ${pair} within ${timeoutMs} ms`,
        );
      }
      await pollAsync([{ fd: this.frontend.callFd(2 * pair), events: POLLIN }], Math.min(left, 20));
    }
  }

  /**
   * Wait until the device has returned every transmit buffer of pair `pair`.
   *
   * @throws Error after `timeoutMs` (default 5000) with how many are in flight.
   */
  async flushTx(pair = 0, timeoutMs = 5000): Promise<void> {
    const p = this.#pair(pair);
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      this.#reclaimTx(p);
      this.#takeCalls(pair);
      if (p.txFree.length === this.ringSize) return;
      if (p.tx.enableInterrupts()) continue;
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(
          `virtio-net: ${this.ringSize - p.txFree.length} transmit buffers of pair ${pair} ` +
            `still in flight after ${timeoutMs} ms`,
        );
      }
      await pollAsync(
        [{ fd: this.frontend.callFd(2 * pair + 1), events: POLLIN }],
        Math.min(left, 20),
      );
    }
  }

  #takeCalls(pair: number): void {
    const s = this.#pairs[pair].stats;
    s.rxCalls += this.frontend.takeCalls(2 * pair);
    s.txCalls += this.frontend.takeCalls(2 * pair + 1);
  }

  /** Counters of pair `pair` (a copy). */
  stats(pair = 0): VirtioNetQueueStats {
    this.#takeCalls(pair);
    return { ...this.#pair(pair).stats };
  }

  /**
   * Stop the device like a guest driver unloading: disable every ring (with
   * `PROTOCOL_FEATURES`), then `GET_VRING_BASE` each. Returns the backend's
   * next available index per ring. Idempotent after the first call.
   */
  async stop(): Promise<number[]> {
    if (this.#stopped) return [];
    this.#stopped = true;
    const rings = 2 * this.queuePairs;
    if (hasBit(this.features, VirtioFeatureBit.PROTOCOL_FEATURES)) {
      for (let q = 0; q < rings; q++) await this.frontend.setVringEnable(q, false);
    }
    const bases: number[] = [];
    for (let q = 0; q < rings; q++) bases.push(await this.frontend.getVringBase(q));
    return bases;
  }
}
