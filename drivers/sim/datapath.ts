/**
 * One queue pair of the sim device: receive ring `2k` and transmit ring
 * `2k + 1` (virtio 1.2 §5.1.2), processed in the device's mode. A Worker
 * runs it (see `datapath_worker.ts`); the class itself does no waiting, so
 * the same code can be stepped synchronously.
 *
 * Every frame travels behind a `virtio_net_hdr` (virtio 1.2 §5.1.6; its
 * layout and length rule are in `@vhost-mdev/sdk/net`). On receive the device sets
 * `num_buffers` (how many receive buffers the frame spans; always 1 without
 * `MRG_RXBUF`).
 *
 * Flow control: in loopback and responder modes a frame leaves the transmit
 * ring only when it can be delivered; while the receive ring has no buffers
 * the transmit chain is held (not returned), so nothing is lost and the
 * guest sees its transmit ring fill, as on a link with pause frames. A frame
 * that cannot fit a receive buffer without `MRG_RXBUF` is dropped and the
 * buffer returned with length 0 (guests count that as a length error).
 *
 * Chains are completed in the order they were made available (`IN_ORDER`).
 * A chain that breaks the descriptor rules is returned with length 0 and
 * counted as an error; the ring goes on. A corrupt `avail.idx` stops the
 * ring until its next kick.
 *
 * @module
 */

import {
  DescriptorChain,
  DescriptorChainError,
  DirtyLog,
  type GuestMemory,
  openVirtqueue,
  VIRTIO_NET_HDR_LEGACY_SIZE,
  VIRTIO_NET_HDR_SIZE,
  type Virtqueue,
} from "@vhost-mdev/sdk";
import {
  completeChecksum,
  MAX_REPLY_SIZE,
  netHeaderSizeFor,
  readCsumOffset,
  readCsumStart,
  ReceiveDelivery,
  ReceiveOverrunError,
  ReceiveResult,
  respond,
  VirtioNetHdr,
  VirtioNetHdrFlag,
  VirtioNetHdrGso,
  writeNumBuffers,
} from "@vhost-mdev/sdk/net";
import { eventfdSignal } from "@vhost-mdev/sdk/sys";
import { sourceFrame } from "./packets.ts";
import {
  CONTROL_BASES,
  type DatapathSetup,
  STAT_BYTES,
  STAT_DROPS,
  STAT_ERRORS,
  STAT_FIELDS,
  STAT_PACKETS,
} from "./protocol.ts";

/** Chains taken from one ring per {@linkcode QueuePairDatapath.run}, before used entries are published. */
const BATCH = 128;
const NEEDS_CSUM = VirtioNetHdrFlag.NEEDS_CSUM;
const RX_WAITING = ReceiveResult.WAITING;
/** Largest frame the device takes from the guest (no segmentation offload). */
const MAX_FRAME = 65535;
/** Copies up to this size go byte by byte (no subarray object). */
const SMALL_COPY = 64;

/** {@linkcode QueuePairDatapath.waitMask}: the receive ring. */
export const WAIT_RX = 1;
/** {@linkcode QueuePairDatapath.waitMask}: the transmit ring. */
export const WAIT_TX = 2;

const MODE_LOOPBACK = 0;
const MODE_SINK = 1;
const MODE_SOURCE = 2;
const MODE_RESPONDER = 3;

// Local counters, flushed into the shared stats once per run.
const RX = 0;
const TX = STAT_FIELDS;

/** Receives a chain error or a malformed frame, per ring. */
export type DatapathReport = (ring: number, message: string) => void;

/**
 * The guest broke ring `ring` beyond what the device can work around (a
 * receive buffer posted again while the device still holds it, more
 * buffers in one frame than the ring has): the ring stops and the device
 * needs a reset.
 */
export class RingFailure extends Error {
  /**
   * Make the error.
   *
   * @param ring The ring that failed.
   * @param message What the guest did.
   */
  constructor(readonly ring: number, message: string) {
    super(`ring ${ring}: ${message}`);
    this.name = "RingFailure";
  }
}

/**
 * The rings of one queue pair and what the device does between them.
 *
 * @example Step a pair by hand (what the Worker does in a loop)
 * ```ts
 * import { GuestMemory } from "@vhost-mdev/sdk";
 * import { QueuePairDatapath } from "./datapath.ts";
 * import type { DatapathSetup } from "./protocol.ts";
 *
 * declare const setup: DatapathSetup;
 * const dp = new QueuePairDatapath(GuestMemory.fromShared(setup.memory), setup, console.warn);
 * while (dp.run() > 0) {}
 * ```
 */
export class QueuePairDatapath {
  /** The receive ring, or null when it does not run. */
  readonly rx: Virtqueue | null;
  /** The transmit ring, or null when it does not run. */
  readonly tx: Virtqueue | null;
  readonly #setup: DatapathSetup;
  readonly #report: DatapathReport;
  readonly #mode: number;
  readonly #hdrLen: number;
  readonly #mrg: boolean;
  readonly #csum: boolean;
  readonly #guestCsum: boolean;
  readonly #regions: Uint8Array[];
  readonly #stats: Float64Array;
  readonly #control: Int32Array;
  readonly #local = new Float64Array(2 * STAT_FIELDS);
  readonly #rxCall: number;
  readonly #txCall: number;
  readonly #txChain = new DescriptorChain();
  /** Frames into the receive ring (virtio 1.2 §5.1.6.4), or null when it does not run. */
  readonly #rxd: ReceiveDelivery | null;
  /** Transmitted frame (header + frame) in loopback and responder modes. */
  readonly #frame: Uint8Array;
  /** The responder's reply, behind a header. */
  readonly #reply: Uint8Array;
  /** Source mode's frame, behind a header with `num_buffers` = 1. */
  readonly #packet: Uint8Array;
  /** The dirty log every write into guest memory is marked in, or null. */
  readonly #log: DirtyLog | null;
  /** Marks that fell past the log's end, as last reported. */
  #logMisses = 0;
  /** Head of the transmit chain whose frame is being delivered, or -1. */
  #txPending = -1;
  #txPendingBytes = 0;
  #rxBroken = false;
  #txBroken = false;
  /** The receive ring's used index when it was last published. */
  #rxUsed = 0;
  #txPushed = 0;
  /**
   * With `IN_ORDER`, the sink's transmit chains taken and not yet returned,
   * in the order taken: returned with one used entry (see #flushTx).
   */
  readonly #txInOrder: Uint16Array | null;
  #txHeld = 0;

  /**
   * Make the rings' views (validating their layout) over `memory`.
   *
   * @throws RangeError when a ring is not inside guest memory or misaligned.
   */
  constructor(memory: GuestMemory, setup: DatapathSetup, report: DatapathReport) {
    const f = setup.features;
    const log = setup.log === null ? null : DirtyLog.fromShared(setup.log);
    this.#log = log;
    const ring = (r: DatapathSetup["rx"]) =>
      r === null ? null : openVirtqueue(memory, r, {
        packed: f.packed,
        position: r.position,
        eventIdx: f.eventIdx,
        indirect: f.indirect,
        log,
      });
    this.rx = ring(setup.rx);
    this.tx = ring(setup.tx);
    this.#txInOrder = f.inOrder === true && setup.mode === "sink" && this.tx !== null
      ? new Uint16Array(this.tx.num)
      : null;
    this.#setup = setup;
    this.#report = report;
    this.#mode = ["loopback", "sink", "source", "responder"].indexOf(setup.mode);
    if (this.#mode < 0) throw new RangeError(`unknown mode ${setup.mode}`);
    this.#hdrLen = netHeaderSizeFor(f.version1, f.mrgRxbuf);
    this.#mrg = f.mrgRxbuf;
    this.#csum = f.csum;
    this.#guestCsum = f.guestCsum;
    this.#regions = memory.regions.map((r) => r.bytes);
    this.#stats = new Float64Array(setup.stats);
    this.#control = new Int32Array(setup.control);
    this.#rxCall = setup.rx?.callFd ?? -1;
    this.#txCall = setup.tx?.callFd ?? -1;
    const h = this.#hdrLen;
    const forwards = this.#mode === MODE_LOOPBACK || this.#mode === MODE_RESPONDER;
    this.#frame = new Uint8Array(forwards ? h + MAX_FRAME : 0);
    this.#reply = new Uint8Array(this.#mode === MODE_RESPONDER ? h + MAX_REPLY_SIZE : 0);
    if (this.#mode === MODE_SOURCE) {
      this.#packet = new Uint8Array(h + setup.frameSize);
      this.#packet.set(sourceFrame(setup.frameSize, setup.mac), h);
      if (h === VIRTIO_NET_HDR_SIZE) writeNumBuffers(this.#packet, 0, 1);
    } else {
      this.#packet = new Uint8Array(0);
    }
    this.#rxd = this.rx === null ? null : new ReceiveDelivery(this.rx, {
      headerSize: h,
      mergeable: f.mrgRxbuf,
      log: setup.logBuffers ? log : null,
      onChainError: (e) => this.#rxChainError(e),
      onMalformed: (head, room) =>
        this.#report(
          this.rxRing,
          `receive chain ${head} has ${room} writable bytes, less than the ${h}-byte header`,
        ),
    });
    this.#rxUsed = this.rx?.usedIdx ?? 0;
    this.#writeBases();
  }

  /** Ring index of the receive ring. */
  get rxRing(): number {
    return 2 * this.#setup.pair;
  }

  /** Ring index of the transmit ring. */
  get txRing(): number {
    return 2 * this.#setup.pair + 1;
  }

  /**
   * Process what the rings hold, up to a batch per ring; publish used
   * entries, interrupt the guest where it asked for it, and update the
   * counters. Returns the number of chains handled (0: nothing to do, or
   * waiting for receive buffers).
   */
  run(): number {
    let work: number;
    try {
      switch (this.#mode) {
        case MODE_SINK:
          work = this.#sink();
          break;
        case MODE_SOURCE:
          work = this.#source();
          break;
        default:
          work = this.#forward();
      }
    } catch (e) {
      // A frame wanting more receive buffers than the ring has.
      if (e instanceof ReceiveOverrunError) throw new RingFailure(this.rxRing, e.message);
      throw e;
    }
    this.#finish();
    return work;
  }

  /** Which rings' kicks the pair waits for when idle: {@linkcode WAIT_RX} | {@linkcode WAIT_TX}. */
  waitMask(): number {
    switch (this.#mode) {
      case MODE_SINK:
        return WAIT_TX;
      case MODE_SOURCE:
        return WAIT_RX;
      default:
        return this.#txPending >= 0 ? WAIT_RX : WAIT_TX;
    }
  }

  /**
   * Ask the guest to kick the rings in `mask` for new buffers. Returns true
   * when buffers arrived meanwhile: then run again instead of sleeping, as
   * the guest will not kick for those.
   */
  enableNotifications(mask: number): boolean {
    // A ring stopped for a corrupt avail.idx waits for a kick whatever its index says.
    let more = false;
    if ((mask & WAIT_RX) !== 0 && this.rx !== null) {
      if (this.rx.enableNotifications() && !this.#rxBroken) more = true;
    }
    if ((mask & WAIT_TX) !== 0 && this.tx !== null) {
      if (this.tx.enableNotifications() && !this.#txBroken) more = true;
    }
    return more;
  }

  /** Ask the guest not to kick the rings in `mask` (the device is polling them). */
  disableNotifications(mask: number): void {
    if ((mask & WAIT_RX) !== 0) this.rx?.disableNotifications();
    if ((mask & WAIT_TX) !== 0) this.tx?.disableNotifications();
  }

  /** The guest kicked ring `ring`: a ring stopped for a corrupt `avail.idx` is tried again. */
  kicked(ring: number): void {
    if (ring === this.rxRing) this.#rxBroken = false;
    else if (ring === this.txRing) this.#txBroken = false;
  }

  /**
   * Next available index of the receive and transmit rings, for
   * `GET_VRING_BASE`: chains taken but not completed (a frame waiting for
   * receive buffers) are given back, so a restarted device takes them again.
   */
  bases(): { rxBase: number; txBase: number } {
    return { rxBase: this.#rxBase(), txBase: this.#txBase() };
  }

  #rxBase(): number {
    if (this.rx === null) return 0;
    // A frame begun and not finished gives its buffers back.
    return this.rx.availBefore(this.#rxd!.heldDescriptors());
  }

  #txBase(): number {
    if (this.tx === null) return 0;
    // A held transmit frame is taken again by whoever runs the ring next.
    const tx = this.tx;
    return tx.availBefore(this.#txPending >= 0 ? tx.descriptorsOf(this.#txPending) : 0);
  }

  // ---- modes ----

  #sink(): number {
    const tx = this.tx;
    if (tx === null || this.#txBroken) return 0;
    const chain = this.#txChain, hdr = this.#hdrLen, local = this.#local;
    let work = 0, packets = 0, bytes = 0;
    while (work < BATCH) {
      const got = this.#pop(tx, chain);
      if (got === 0 || got === -2) break;
      work++;
      if (got < 0) continue;
      const len = chain.readableBytes - hdr;
      if (len < 0) {
        this.#malformed(
          TX,
          `transmit chain ${chain.head} has ${len + hdr} bytes, less than the header`,
        );
      } else {
        packets++;
        bytes += len;
      }
      const held = this.#txInOrder;
      if (held === null) {
        this.#pushTx(chain.head);
      } else {
        // A driver that posts more chains than its ring holds fills it: return them first.
        if (this.#txHeld === held.length) this.#flushTx();
        held[this.#txHeld++] = chain.head;
      }
    }
    this.#flushTx();
    local[TX + STAT_PACKETS] += packets;
    local[TX + STAT_BYTES] += bytes;
    return work;
  }

  #source(): number {
    const rxd = this.#rxd;
    if (rxd === null) return 0;
    let work = 0;
    if (rxd.active) {
      if (!this.#deliver()) return 0;
      work++;
    }
    if (this.#rxBroken) return work;
    return work + rxd.deliverCopies(this.#packet, BATCH - work);
  }

  /** Loopback and responder: transmit ring to receive ring. */
  #forward(): number {
    let work = 0;
    if (this.#txPending >= 0) {
      if (!this.#deliver()) return 0;
      this.#completeTx();
      work++;
    }
    const tx = this.tx;
    if (tx === null || this.#txBroken) return work;
    const chain = this.#txChain, hdr = this.#hdrLen, frame = this.#frame, local = this.#local;
    while (work < BATCH) {
      const got = this.#pop(tx, chain);
      if (got === 0 || got === -2) break;
      work++;
      if (got < 0) continue;
      const total = chain.readableBytes;
      if (total < hdr || total > frame.length) {
        this.#malformed(
          TX,
          `transmit chain ${chain.head} has ${total} bytes; a frame with its ${hdr}-byte header ` +
            `must have ${hdr} to ${frame.length}`,
        );
        this.#pushTx(chain.head);
        continue;
      }
      this.#read(chain, frame);
      // A frame is counted once its chain completes: one held for receive
      // buffers is given back if the ring stops first, and taken (and
      // counted) again after.
      let out: Uint8Array, outLen: number;
      if (this.#mode === MODE_LOOPBACK) {
        if (!this.#loopbackHeader(chain.head, total)) {
          this.#countTx(total - hdr);
          this.#pushTx(chain.head);
          continue;
        }
        out = frame;
        outLen = total;
      } else {
        const n = respond(
          frame,
          hdr,
          total - hdr,
          this.#reply,
          hdr,
          this.#setup.mac,
          this.#setup.ip,
        );
        if (n === 0) {
          this.#countTx(total - hdr);
          local[TX + STAT_DROPS]++;
          this.#pushTx(chain.head);
          continue;
        }
        out = this.#reply;
        out.fill(0, 0, hdr);
        outLen = hdr + n;
      }
      if (this.rx === null) {
        this.#countTx(total - hdr);
        local[TX + STAT_DROPS]++;
        this.#pushTx(chain.head);
        continue;
      }
      this.#txPending = chain.head;
      this.#txPendingBytes = total - hdr;
      this.#rxd!.begin(out, outLen);
      if (!this.#deliver()) break;
      this.#completeTx();
    }
    return work;
  }

  /**
   * Turn the transmitted header into the received one (in `#frame`): no
   * segmentation was offered, so `gso_type` must be NONE; a partial
   * checksum stays partial when the guest takes those (`GUEST_CSUM`), else
   * the device completes it. Returns false for a header it refuses.
   */
  #loopbackHeader(head: number, total: number): boolean {
    const f = this.#frame, hdr = this.#hdrLen;
    const flags = f[VirtioNetHdr.FLAGS], gso = f[VirtioNetHdr.GSO_TYPE];
    if (gso !== VirtioNetHdrGso.NONE) {
      this.#malformed(
        TX,
        `transmit chain ${head}: gso_type ${gso}, but no segmentation offload was offered`,
      );
      return false;
    }
    if ((flags & NEEDS_CSUM) !== 0) {
      const start = readCsumStart(f, 0), offset = readCsumOffset(f, 0);
      if (!this.#csum) {
        this.#malformed(TX, `transmit chain ${head}: NEEDS_CSUM without VIRTIO_NET_F_CSUM`);
        return false;
      }
      if (start + offset + 2 > total - hdr) {
        this.#malformed(
          TX,
          `transmit chain ${head}: checksum at ${start}+${offset} is outside the ${
            total - hdr
          }-byte frame`,
        );
        return false;
      }
      if (this.#guestCsum) {
        f[VirtioNetHdr.FLAGS] = NEEDS_CSUM;
        return true;
      }
      completeChecksum(f, hdr, total - hdr, start, offset);
    }
    // Everything but num_buffers, which delivery sets.
    for (let i = 0; i < VIRTIO_NET_HDR_LEGACY_SIZE; i++) f[i] = 0;
    return true;
  }

  // ---- delivery to the receive ring ----

  /**
   * Go on delivering the frame begun on the receive ring. Returns true when
   * it was delivered or dropped, false when the receive ring ran dry or is
   * stopped (state kept; call again when it has buffers).
   */
  #deliver(): boolean {
    return !this.#rxBroken && this.#rxd!.resume() !== RX_WAITING;
  }

  /**
   * Popping a receive chain threw (counted by the delivery): report it; a
   * corrupt `avail.idx` stops the ring until its next kick.
   */
  #rxChainError(e: unknown): boolean {
    if (!(e instanceof DescriptorChainError)) throw e;
    this.#report(this.rxRing, `${e.kind}: ${e.message}`);
    if (e.kind === "bad-avail-idx") {
      this.#rxBroken = true;
      return false;
    }
    return true;
  }

  #completeTx(): void {
    this.#countTx(this.#txPendingBytes);
    this.#pushTx(this.#txPending);
    this.#txPending = -1;
  }

  /** Count one transmitted frame of `bytes` (header excluded). */
  #countTx(bytes: number): void {
    this.#local[TX + STAT_PACKETS]++;
    this.#local[TX + STAT_BYTES] += bytes;
  }

  #pushTx(head: number): void {
    this.#flushTx();
    this.tx!.pushUsed(head, 0);
    this.#txPushed++;
  }

  /**
   * Return the transmit chains the sink holds with one used entry
   * (`IN_ORDER` batching): the driver reads one entry for the run instead
   * of one per frame.
   */
  #flushTx(): void {
    const n = this.#txHeld;
    if (n === 0) return;
    this.#txHeld = 0;
    this.tx!.pushUsedInOrder(this.#txInOrder!, n, 0);
    this.#txPushed += n;
  }

  // ---- ring access ----

  /**
   * Pop a transmit chain: 1 popped, 0 none, -1 a hostile chain was handled
   * (returned and counted), -2 the ring is corrupt (stopped until its next kick).
   */
  #pop(queue: Virtqueue, chain: DescriptorChain): number {
    try {
      return queue.pop(chain) ? 1 : 0;
    } catch (e) {
      if (!(e instanceof DescriptorChainError)) throw e;
      this.#local[TX + STAT_ERRORS]++;
      this.#report(this.txRing, `${e.kind}: ${e.message}`);
      if (e.kind === "bad-avail-idx") {
        this.#txBroken = true;
        return -2;
      }
      if (e.head >= 0) this.#pushTx(e.head);
      return -1;
    }
  }

  #malformed(side: number, message: string): void {
    this.#local[side + STAT_ERRORS]++;
    this.#report(side === RX ? this.rxRing : this.txRing, message);
  }

  /** Copy the chain's readable bytes to `dst` (which is large enough). */
  #read(chain: DescriptorChain, dst: Uint8Array): void {
    const lengths = chain.lengths, offsets = chain.offsets, regions = chain.regions;
    let pos = 0;
    for (let s = 0, n = chain.readable; s < n; s++) {
      const len = lengths[s], from = offsets[s], src = this.#regions[regions[s]];
      if (len <= SMALL_COPY) {
        for (let k = 0; k < len; k++) dst[pos + k] = src[from + k];
      } else {
        dst.set(src.subarray(from, from + len), pos);
      }
      pos += len;
    }
  }

  // ---- publishing ----

  #finish(): void {
    // Counters first, so that a guest which sees the used entries also sees them counted.
    const local = this.#local, stats = this.#stats, rxd = this.#rxd;
    if (rxd !== null) {
      const c = rxd.counters;
      local[RX + STAT_PACKETS] += c.packets;
      local[RX + STAT_BYTES] += c.bytes;
      local[RX + STAT_DROPS] += c.drops;
      local[RX + STAT_ERRORS] += c.errors;
      c.packets = 0;
      c.bytes = 0;
      c.drops = 0;
      c.errors = 0;
    }
    const rxAt = this.rxRing * STAT_FIELDS, txAt = this.txRing * STAT_FIELDS;
    for (let i = 0; i < STAT_FIELDS; i++) {
      if (local[RX + i] !== 0) {
        stats[rxAt + i] += local[RX + i];
        local[RX + i] = 0;
      }
      if (local[TX + i] !== 0) {
        stats[txAt + i] += local[TX + i];
        local[TX + i] = 0;
      }
    }
    this.#writeBases();
    const log = this.#log;
    if (log !== null && log.outOfRange !== this.#logMisses) {
      // A write the log cannot record would be lost by a migration: an error.
      stats[rxAt + STAT_ERRORS] += log.outOfRange - this.#logMisses;
      this.#logMisses = log.outOfRange;
      this.#report(
        this.rxRing,
        `${log.outOfRange} write(s) past the dirty log's ${log.coverage} bytes of coverage ` +
          `(a migration would lose them)`,
      );
    }
    const rx = this.rx, tx = this.tx;
    if (this.#txPushed > 0 && tx !== null) {
      this.#txPushed = 0;
      tx.publishUsed();
      // A saturated call fd already has an interrupt pending: no failure.
      if (tx.needsNotify() && this.#txCall >= 0) eventfdSignal(this.#txCall);
    }
    if (rx !== null && rx.usedIdx !== this.#rxUsed) {
      this.#rxUsed = rx.usedIdx;
      rx.publishUsed();
      if (rx.needsNotify() && this.#rxCall >= 0) eventfdSignal(this.#rxCall);
    }
  }

  #writeBases(): void {
    this.#control[CONTROL_BASES + this.rxRing] = this.#rxBase();
    this.#control[CONTROL_BASES + this.txRing] = this.#txBase();
  }
}
