/**
 * The Worker side of the software-device kit: {@linkcode serveQueue} runs
 * one split virtqueue (virtio 1.2 §2.7) in the Worker that
 * {@linkcode softwareDriver} starts for it, and calls the device's handler
 * once per request (descriptor chain).
 *
 * The loop, per ring: drain what is available (the frontend may have kicked
 * before the device started), pop each chain, give it to the handler, put it
 * on the used ring with the length the handler returns, publish the used
 * index, and interrupt the driver when it asked for it (virtio 1.2 §2.7.7:
 * `used_event` with `VIRTIO_F_EVENT_IDX`, else `VIRTQ_AVAIL_F_NO_INTERRUPT`).
 * When the ring runs dry it polls it for a moment, then re-enables kicks
 * and looks once more (a buffer made available before the driver saw the
 * re-enabled notification gets no kick, §2.7.10), and blocks in a
 * synchronous `poll` on the kick eventfd and the stop eventfd.
 *
 * A chain that breaks the descriptor rules (§2.7.4, §2.7.5), or a request
 * the handler throws for, goes back with used length 0, is counted as an
 * error and reported (rate-limited) to the main thread, which turns it into
 * `ctx.ringError`; the ring keeps serving. A request the handler answers
 * with an error status of its own and marks with `request.countError` keeps
 * its used length and is counted and reported the same way. A corrupt `avail.idx` parks the
 * ring until its next kick.
 *
 * @module
 */

import { GuestMemory } from "../memory/guest_memory.ts";
import { DirtyLog } from "../memory/dirty_log.ts";
import { rateLimitedReports } from "./rate_limit.ts";
import { InflightQueue } from "../core/inflight.ts";
import { DescriptorChain, DescriptorChainError } from "../virtqueue/descriptor.ts";
import type { SplitQueue } from "../virtqueue/split_queue.ts";
import { openVirtqueue, type Virtqueue } from "../virtqueue/queue.ts";
import { eventfdRead, eventfdSignal } from "../sys/eventfd.ts";
import { POLLERR, POLLIN, POLLNVAL, PollSet } from "../sys/poll.ts";
import { hasBit, VirtioFeatureBit } from "../uapi/virtio.ts";
import {
  CONTROL_AVAIL,
  CONTROL_STOP,
  CONTROL_USED,
  type QueueMessage,
  type QueueSetup,
  STAT_BYTES,
  STAT_ERRORS,
  STAT_FIELDS,
  STAT_REQUESTS,
} from "./protocol.ts";

/** Chains handled per batch before the used index is published. */
const BATCH = 64;
/** How long an idle ring is polled before the Worker sleeps in `poll`, in ms. */
const SPIN_MS = 0.05;
/** Sleep between looks at a ring without a kick fd (frontend polling mode), in ms. */
const NO_KICK_POLL_MS = 1;
/** Default of {@linkcode ServeQueueOptions.maxReadable}. */
const DEFAULT_MAX_READABLE = 1 << 20;

/**
 * One request: a descriptor chain the driver made available, as the handler
 * sees it. The object is reused for every request of the ring; do not keep
 * it (or {@linkcode SoftRequest.readable}) past the handler's return.
 */
export interface SoftRequest {
  /** Ring index. */
  readonly queue: number;
  /** Features the frontend acknowledged. */
  readonly features: bigint;
  /** The device's options (`--name value` on the command line, with declared defaults). */
  readonly options: Readonly<Record<string, string>>;
  /** Total bytes of the chain's device-readable buffers. */
  readonly readableBytes: number;
  /**
   * The device-readable bytes, copied out of guest memory on first access
   * (a request that never reads them costs no copy).
   *
   * @throws RangeError when there are more than
   *   {@linkcode ServeQueueOptions.maxReadable} of them; use
   *   {@linkcode SoftRequest.read} to take them in parts.
   */
  readonly readable: Uint8Array;
  /** Total bytes of the chain's device-writable buffers: the most the device may write. */
  readonly writable: number;
  /**
   * Whether this request was in flight when a previous backend stopped
   * without completing it, and is resubmitted from the inflight region
   * (`INFLIGHT_SHMFD`): it may have been done in part or in whole already.
   */
  readonly resubmitted: boolean;
  /**
   * Copy device-readable bytes, from `offset` into them, to `dst`. Returns
   * the number copied (at most `dst.length`).
   */
  read(dst: Uint8Array, offset?: number): number;
  /**
   * Copy `bytes` into the device-writable buffers at `offset` (default 0).
   * Returns `bytes.length`.
   *
   * @throws RangeError when they do not fit in {@linkcode SoftRequest.writable}.
   */
  write(bytes: Uint8Array, offset?: number): number;
  /**
   * Count this request as failed and report `reason` (rate-limited), while
   * it still completes with the used length the handler returns: for a
   * device whose requests carry their own error status (virtio-blk's
   * `VIRTIO_BLK_S_IOERR`, virtio 1.2 §5.2.6), so a refused request is both
   * answered and counted. It is counted in the ring's `errors`, not in its
   * `requests` or `bytes`.
   */
  countError(reason: string): void;
}

/**
 * A device's request handler: do the request and return the used length,
 * the number of bytes written to the device-writable buffers from their
 * start (virtio 1.2 §2.7.8), an integer from 0 to `request.writable`. A
 * throw fails the request: it goes back with used length 0, counted as an
 * error and reported, and the ring goes on.
 */
export type QueueHandler = (request: SoftRequest) => number;

/** The ring a Worker serves, given to {@linkcode ServeQueueOptions.onStart}. */
export interface QueueInfo {
  /** Ring index. */
  readonly queue: number;
  /** Descriptors in the ring. */
  readonly size: number;
  /** Features the frontend acknowledged. */
  readonly features: bigint;
  /** The device's options, with the declared defaults. */
  readonly options: Readonly<Record<string, string>>;
}

/** Options of {@linkcode serveQueue}. */
export interface ServeQueueOptions {
  /**
   * Most device-readable bytes {@linkcode SoftRequest.readable} copies
   * (default 1 MiB); larger requests can still be read with
   * {@linkcode SoftRequest.read}.
   */
  maxReadable?: number;
  /** Called once in the Worker before the ring is served (open a file, size a buffer). */
  onStart?(info: QueueInfo): void;
  /** Called once when the ring stops (close what `onStart` opened). */
  onStop?(info: QueueInfo): void;
}

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** The request object handed to the handler, reused for each chain. */
class ChainRequest implements SoftRequest {
  readonly queue: number;
  readonly features: bigint;
  readonly options: Readonly<Record<string, string>>;
  readonly #ring: Virtqueue;
  readonly #chain: DescriptorChain;
  readonly #max: number;
  #scratch = new Uint8Array(256);
  #view: Uint8Array = new Uint8Array(0);
  #copied = false;
  /** Why the handler counted the current request as failed, or null. */
  failure: string | null = null;
  resubmitted = false;

  constructor(info: QueueInfo, ring: Virtqueue, chain: DescriptorChain, max: number) {
    this.queue = info.queue;
    this.features = info.features;
    this.options = info.options;
    this.#ring = ring;
    this.#chain = chain;
    this.#max = max;
  }

  /** A new chain was popped into the shared chain object. */
  next(resubmitted: boolean): void {
    this.#copied = false;
    this.failure = null;
    this.resubmitted = resubmitted;
  }

  countError(reason: string): void {
    this.failure = String(reason);
  }

  get readableBytes(): number {
    return this.#chain.readableBytes;
  }

  get writable(): number {
    return this.#chain.writableBytes;
  }

  get readable(): Uint8Array {
    if (this.#copied) return this.#view;
    const n = this.#chain.readableBytes;
    if (n > this.#max) {
      throw new RangeError(
        `the request has ${n} device-readable bytes, more than the ${this.#max}-byte limit ` +
          `(ServeQueueOptions.maxReadable); read them in parts with request.read()`,
      );
    }
    if (n > this.#scratch.length) {
      let size = this.#scratch.length;
      while (size < n) size *= 2;
      this.#scratch = new Uint8Array(Math.min(size, this.#max));
    }
    if (this.#view.buffer !== this.#scratch.buffer || this.#view.length !== n) {
      this.#view = this.#scratch.subarray(0, n);
    }
    this.#ring.readChain(this.#chain, this.#view);
    this.#copied = true;
    return this.#view;
  }

  read(dst: Uint8Array, offset = 0): number {
    return this.#ring.readChain(this.#chain, dst, offset);
  }

  write(bytes: Uint8Array, offset = 0): number {
    const room = this.#chain.writableBytes;
    if (!Number.isInteger(offset) || offset < 0 || offset + bytes.length > room) {
      throw new RangeError(
        `write of ${bytes.length} bytes at offset ${offset} does not fit the request's ` +
          `${room} device-writable bytes`,
      );
    }
    return this.#ring.writeChain(this.#chain, bytes, offset);
  }
}

/** The Worker global this module talks through. */
interface WorkerScope {
  onmessage: ((e: MessageEvent<QueueSetup>) => void) | null;
  postMessage(m: QueueMessage): void;
}

/** Whether this code runs in a Worker (not on the main thread). */
function inWorker(): boolean {
  const scope = (globalThis as { WorkerGlobalScope?: abstract new () => unknown })
    .WorkerGlobalScope;
  return typeof scope === "function" && globalThis instanceof scope;
}

/** Read a kick eventfd to zero; already zero is no error. */
function drainKick(fd: number): void {
  try {
    eventfdRead(fd);
  } catch {
    // EAGAIN: nothing pending.
  }
}

/** One ring being served: the queue, the handler, the counters and the control words. */
class RingServer {
  readonly #setup: QueueSetup;
  #ring: Virtqueue;
  readonly #handler: QueueHandler;
  readonly #chain = new DescriptorChain();
  readonly #request: ChainRequest;
  readonly #report: (text: string) => void;
  readonly #stats: Float64Array;
  readonly #statAt: number;
  readonly #control: Int32Array;
  /** A corrupt `avail.idx` parked the ring until its next kick. */
  #parked = false;
  /** The migration dirty log the ring marks its writes in, or null. */
  readonly #log: DirtyLog | null;
  /** Marks that fell past the log's end, as last reported. */
  #logMisses = 0;
  /** The ring's queue region of the inflight region, or null. */
  readonly #inflight: InflightQueue | null = null;
  /** Heads to resubmit before new ones (in flight when a previous backend stopped). */
  #resubmit: number[] = [];
  #resubmitAt = 0;
  /** Chains taken per batch: the queue size, when smaller than BATCH. */
  readonly #batchMax: number;

  constructor(
    setup: QueueSetup,
    info: QueueInfo,
    handler: QueueHandler,
    maxReadable: number,
    post: (m: QueueMessage) => void,
  ) {
    this.#setup = setup;
    this.#log = setup.log === null ? null : DirtyLog.fromShared(setup.log);
    const memory = GuestMemory.fromShared(setup.memory, setup.iotlb);
    const packed = hasBit(setup.features, VirtioFeatureBit.RING_PACKED);
    const ringAt = (lastAvailIdx: number) =>
      openVirtqueue(memory, setup, {
        packed,
        position: { ...setup.position, availIdx: lastAvailIdx },
        eventIdx: hasBit(setup.features, VirtioFeatureBit.EVENT_IDX),
        indirect: hasBit(setup.features, VirtioFeatureBit.INDIRECT_DESC),
        log: this.#log,
      });
    this.#ring = ringAt(packed ? setup.position.availIdx : setup.availIdx);
    this.#batchMax = Math.min(BATCH, setup.num);
    if (setup.inflight !== null && packed) {
      post({
        type: "info",
        message: "inflight tracking covers split rings; this packed ring runs without it",
      });
    } else if (setup.inflight !== null) {
      if (setup.inflight.queueSize !== setup.num) {
        throw new RangeError(
          `the inflight region tracks rings of ${setup.inflight.queueSize} descriptors; ` +
            `this ring has ${setup.num}`,
        );
      }
      this.#inflight = InflightQueue.fromShared(setup.inflight);
      const found = this.#inflight.recover(this.#ring.usedIdx);
      if (found.lastAvailIdx !== null && found.lastAvailIdx !== setup.availIdx) {
        // The region knows better than the frontend's base (QEMU sets it to used.idx).
        this.#ring = ringAt(found.lastAvailIdx);
      }
      this.#resubmit = found.resubmit;
      if (found.resubmit.length > 0 || found.cleared > 0) {
        post({
          type: "info",
          message: `inflight region: resubmitting ${found.resubmit.length} request(s) a ` +
            `previous backend left in flight (heads ${found.resubmit.join(" ")}), ` +
            `${found.cleared} completed ones unmarked; next available index ` +
            `${this.#ring.lastAvailIdx}`,
        });
      }
      if (found.badLinks > 0 || found.oddFlags > 0) {
        post({
          type: "ring-error",
          message: `inflight region: ${found.badLinks} last-batch link(s) outside the ring ` +
            `ignored, ${found.oddFlags} entries with an inflight byte other than 0 or 1`,
        });
      }
    }
    this.#handler = handler;
    this.#request = new ChainRequest(info, this.#ring, this.#chain, maxReadable);
    this.#report = rateLimitedReports((message) => post({ type: "ring-error", message }));
    this.#stats = new Float64Array(setup.stats);
    this.#statAt = setup.queue * STAT_FIELDS;
    this.#control = new Int32Array(setup.control);
    this.#savePosition();
  }

  /** Serve until the stop flag is set and the stop eventfd written. */
  serve(): void {
    const setup = this.#setup, ring = this.#ring, control = this.#control;
    const kickFd = setup.kickFd;
    const set = new PollSet(2);
    ring.disableNotifications();
    // Requests a previous backend left in flight go first, all of them.
    while (this.#resubmitAt < this.#resubmit.length) this.#batch();
    let idleSince = -1;
    for (;;) {
      if (Atomics.load(control, CONTROL_STOP) !== 0) return;
      if (!this.#parked && this.#batch() > 0) {
        idleSince = -1;
        continue;
      }
      const now = performance.now();
      if (!this.#parked) {
        if (idleSince < 0) idleSince = now;
        if (now - idleSince < SPIN_MS) continue;
      }
      idleSince = -1;
      // Ask for a kick, then look again: buffers made available meanwhile get none.
      if (ring.enableNotifications() && !this.#parked) {
        ring.disableNotifications();
        continue;
      }
      set.clear();
      set.add(setup.stopFd, POLLIN);
      const at = kickFd >= 0 ? set.add(kickFd, POLLIN) : -1;
      set.wait(kickFd >= 0 ? -1 : NO_KICK_POLL_MS);
      if (set.revents(0) !== 0) return;
      if (at >= 0) {
        const revents = set.revents(at);
        if ((revents & (POLLNVAL | POLLERR)) !== 0) {
          throw new Error(`kick fd ${kickFd} of ring ${setup.queue} is no longer valid`);
        }
        if (revents !== 0) {
          drainKick(kickFd);
          this.#parked = false;
        }
      } else {
        this.#parked = false;
      }
      ring.disableNotifications();
    }
  }

  /** Where the ring got to, into the control words. */
  #savePosition(): void {
    Atomics.store(this.#control, CONTROL_AVAIL, this.#ring.lastAvailIdx);
    Atomics.store(this.#control, CONTROL_USED, this.#ring.usedIdx);
  }

  /** Handle up to a batch of chains; publish, count and interrupt. Returns chains taken. */
  #batch(): number {
    const ring = this.#ring, chain = this.#chain, request = this.#request;
    const inflight = this.#inflight, resubmit = this.#resubmit;
    let work = 0, used = 0, requests = 0, bytes = 0, errors = 0;
    while (work < this.#batchMax) {
      const again = this.#resubmitAt < resubmit.length;
      try {
        if (again) {
          // Only split rings resubmit (inflight tracking is split-only).
          (ring as SplitQueue).popHead(resubmit[this.#resubmitAt++], chain);
        } else {
          if (!ring.pop(chain)) break;
          inflight?.begin(chain.head);
        }
      } catch (e) {
        if (!(e instanceof DescriptorChainError)) throw e;
        errors++;
        this.#report(`${again ? "resubmitted chain: " : ""}${e.kind}: ${e.message}`);
        if (e.kind === "bad-avail-idx") {
          this.#parked = true;
          break;
        }
        work++;
        // The head was consumed: give the buffer back unused (virtio 1.2 §2.7).
        if (e.head >= 0) {
          if (!again) inflight?.begin(e.head);
          ring.pushUsed(e.head, 0);
          inflight?.complete(e.head);
          used++;
        }
        continue;
      }
      work++;
      request.next(again);
      let len: number;
      try {
        len = this.#handler(request);
        if (!Number.isInteger(len) || len < 0 || len > chain.writableBytes) {
          throw new RangeError(
            `the handler returned used length ${len}; the chain has ${chain.writableBytes} ` +
              `device-writable bytes`,
          );
        }
        if (request.failure === null) {
          requests++;
          bytes += chain.readableBytes + len;
        } else {
          errors++;
          this.#report(`request with head ${chain.head} failed: ${request.failure}`);
        }
      } catch (e) {
        len = 0;
        errors++;
        this.#report(`request with head ${chain.head} failed: ${message(e)}`);
      }
      ring.pushUsed(chain.head, len);
      inflight?.complete(chain.head);
      used++;
    }
    if (work === 0) return 0;
    // Counters and position first, so whoever sees the used entries also sees them counted.
    const stats = this.#stats, at = this.#statAt;
    if (requests !== 0) stats[at + STAT_REQUESTS] += requests;
    if (bytes !== 0) stats[at + STAT_BYTES] += bytes;
    const log = this.#log;
    if (log !== null && log.outOfRange !== this.#logMisses) {
      // A write the log cannot record would be lost by a migration: an error.
      stats[at + STAT_ERRORS] += log.outOfRange - this.#logMisses;
      this.#logMisses = log.outOfRange;
      this.#report(
        `${log.outOfRange} write(s) past the dirty log's ${log.coverage} bytes of coverage ` +
          `(a migration would lose them)`,
      );
    }
    if (errors !== 0) stats[at + STAT_ERRORS] += errors;
    this.#savePosition();
    if (used > 0) {
      ring.publishUsed();
      inflight?.published(ring.usedIdx);
      // A saturated call fd already has an interrupt pending: no failure.
      if (ring.needsNotify() && this.#setup.callFd >= 0) eventfdSignal(this.#setup.callFd);
    }
    return work;
  }

  /** Final position, once the loop ended. */
  finish(): void {
    this.#savePosition();
  }
}

/**
 * Serve the ring this Worker was started for with `handler`. Call it once,
 * at the top level of the device's Worker module (the `worker` URL given to
 * {@linkcode softwareDriver}); it returns at once, and the ring is served
 * when the setup message arrives. The handler runs synchronously, one
 * request at a time, in this Worker.
 *
 * @example A device that echoes each request's readable bytes back (`echo_worker.ts`)
 * ```ts
 * import { serveQueue } from "@vhost-mdev/sdk/soft";
 *
 * serveQueue((request) => {
 *   const data = request.readable;
 *   const n = Math.min(data.length, request.writable);
 *   request.write(data.subarray(0, n));
 *   return n; // the used length
 * });
 * ```
 *
 * @throws Error when called outside a Worker or more than once.
 */
export function serveQueue(handler: QueueHandler, options: ServeQueueOptions = {}): void {
  if (!inWorker()) {
    throw new Error(
      "serveQueue() runs in the Worker softwareDriver() starts: call it at the top level " +
        "of the module named by the spec's `worker` URL",
    );
  }
  const scope = globalThis as unknown as WorkerScope;
  if (scope.onmessage !== null) throw new Error("serveQueue() was called twice in one Worker");
  const maxReadable = options.maxReadable ?? DEFAULT_MAX_READABLE;
  if (!Number.isInteger(maxReadable) || maxReadable < 1) {
    throw new RangeError(`maxReadable ${maxReadable} is not a positive integer`);
  }
  const post = (m: QueueMessage) => scope.postMessage(m);
  scope.onmessage = (e: MessageEvent<QueueSetup>) => {
    scope.onmessage = () => {};
    const setup = e.data;
    const info: QueueInfo = Object.freeze({
      queue: setup.queue,
      size: setup.num,
      features: setup.features,
      options: Object.freeze({ ...setup.options }),
    });
    let server: RingServer;
    try {
      server = new RingServer(setup, info, handler, maxReadable, post);
      options.onStart?.(info);
    } catch (err) {
      post({ type: "fatal", message: `ring ${setup.queue}: ${message(err)}` });
      post({ type: "stopped" });
      return;
    }
    post({ type: "ready" });
    try {
      server.serve();
    } catch (err) {
      post({ type: "fatal", message: `ring ${setup.queue} stopped: ${message(err)}` });
    }
    server.finish();
    try {
      options.onStop?.(info);
    } catch (err) {
      post({ type: "ring-error", message: `onStop failed: ${message(err)}` });
    }
    post({ type: "stopped" });
  };
}
