/**
 * The main-thread side of the software-device kit: {@linkcode softwareDriver}
 * turns a device's identity and its Worker module into a complete
 * {@linkcode Driver}, whose ops run one Worker per running ring.
 *
 * Hardening, as the SDK's own software devices do it:
 *
 * - each Worker holds its own duplicates of the ring's kick and call fds and
 *   a stop eventfd, closed only after it confirmed it stopped;
 * - it views guest memory through a `GuestMemory` lease, released only
 *   after it confirmed it stopped, so nothing is unmapped under it;
 * - a Worker that does not confirm within 2 s is terminated and its lease
 *   and fds are kept for the life of the process (a reported leak rather
 *   than memory unmapped under a thread that may still touch it), and the
 *   device is reported broken (`ctx.reportError`);
 * - a Worker that fails while serving is reported with `ctx.reportError`;
 * - malformed chains and failed requests are counted per ring and reported,
 *   rate-limited, with `ctx.ringError`.
 *
 * Memory changes while running (`mapMemory` / `unmapMemory`) switch the
 * Workers the simple way: each running ring's Worker stops, keeping its
 * position, and starts again on a lease of the new table. A ring pauses for
 * the length of one Worker restart; nothing is lost or served twice.
 *
 * @module
 */

import type {
  CounterSpec,
  DeviceContext,
  DeviceDescription,
  DeviceOps,
  Driver,
  DriverOption,
  MemoryRange,
  ProbeParams,
  QueueStats,
  RingPosition,
} from "../ops.ts";
import type { DirtyLog, SharedDirtyLog } from "../memory/dirty_log.ts";
import { RunResources, WorkerRun } from "./worker_run.ts";
import { isValidQueueSize } from "../virtqueue/layout.ts";
import { encodeRingIndex } from "../virtqueue/queue.ts";
import { bit, hasBit, VirtioFeatureBit } from "../uapi/virtio.ts";
import {
  CONTROL_AVAIL,
  CONTROL_USED,
  CONTROL_WORDS,
  decodePosition,
  type QueueSetup,
  STAT_BYTES,
  STAT_ERRORS,
  STAT_FIELDS,
  STAT_REQUESTS,
} from "./protocol.ts";

/** How long starting a ring waits for its Worker to answer, in ms. */
const READY_TIMEOUT_MS = 10000;
/** How long stopping a ring waits for its Worker to confirm, in ms. */
const STOP_TIMEOUT_MS = 2000;
/** Most rings a kit device may have. */
const MAX_QUEUES = 1024;

/**
 * Largest config space a kit device serves, in bytes: reads past the
 * device's struct and below this return zeros; reads beyond it are refused.
 */
export const CONFIG_SPACE_LIMIT = 256;

/** The per-ring counters a kit device reports (in the `QueueStats` shape). */
export const REQUEST_RING_COUNTERS: readonly CounterSpec[] = Object.freeze([
  { name: "requests", description: "requests completed (descriptor chains the handler served)" },
  { name: "bytes", description: "device-readable bytes of completed requests plus used lengths" },
  { name: "errors", description: "malformed descriptor chains and failed requests" },
]);

/** What a software device is: its identity, its rings, and the Worker that serves them. */
export interface SoftwareDeviceSpec {
  /** Short name used on the command line. */
  readonly name: string;
  /** One line describing the device. */
  readonly description: string;
  /** Virtio device ID (virtio 1.2 §5: 1 net, 2 block, 4 entropy, ...). */
  readonly deviceId: number;
  /**
   * Feature bits offered; `VIRTIO_F_VERSION_1` is required. The kit honours
   * `VIRTIO_F_EVENT_IDX` and `VIRTIO_F_INDIRECT_DESC` when offered, and adds
   * `VIRTIO_F_RING_PACKED` itself: every device runs split or packed rings,
   * as the frontend picks (inflight tracking covers split rings).
   */
  readonly features: bigint;
  /**
   * Number of virtqueues, fixed or from what the user asked for (the
   * options in `params` include the declared defaults).
   */
  readonly numQueues: number | ((params: ProbeParams) => number);
  /** Largest ring size accepted (a power of two, at most 32768). */
  readonly maxQueueSize: number;
  /**
   * The device's config space (virtio 1.2 §2.5), fixed or built from
   * the user's parameters (options with their defaults); at most
   * {@linkcode CONFIG_SPACE_LIMIT} bytes.
   */
  readonly config?: Uint8Array | ((params: ProbeParams) => Uint8Array);
  /**
   * vhost-user protocol features to offer beyond the SDK's, or to withhold
   * (as {@linkcode DeviceDescription.protocolFeatures}).
   */
  readonly protocolFeatures?: DeviceDescription["protocolFeatures"];
  /**
   * Track in-flight requests in the inflight region (vhost-user
   * `INFLIGHT_SHMFD`), fixed or from the user's parameters: the kit marks
   * every head it takes and clears it once completed, and a ring that
   * starts on a region a killed backend left resubmits the requests that
   * were in flight, oldest first, before taking new ones. For devices whose
   * requests can be done again (a block write of the same data); default
   * false.
   */
  readonly inflight?: boolean | ((params: ProbeParams) => boolean);
  /** Options the device takes (`--name value`); their defaults reach the Workers. */
  readonly options?: readonly DriverOption[];
  /**
   * The device's queue-handler module: it calls `serveQueue(handler)` at its
   * top level. One Worker runs it per running ring.
   */
  readonly worker: URL;
}

/**
 * Build a complete {@linkcode Driver} for a software device from its spec:
 * the vendor writes the request handler (in the `worker` module, with
 * `serveQueue`) and nothing of the ring lifecycle.
 *
 * @example A virtio-rng device (virtio 1.2 §5.4)
 * ```ts
 * import { bit, VirtioDeviceId, VirtioFeatureBit } from "@vhost-mdev/sdk";
 * import { softwareDriver } from "@vhost-mdev/sdk/soft";
 *
 * export const driver = softwareDriver({
 *   name: "rng",
 *   description: "virtio-rng: random bytes from crypto.getRandomValues",
 *   deviceId: VirtioDeviceId.ENTROPY,
 *   features: bit(VirtioFeatureBit.VERSION_1) | bit(VirtioFeatureBit.EVENT_IDX),
 *   numQueues: 1,
 *   maxQueueSize: 1024,
 *   worker: new URL("./rng_worker.ts", import.meta.url),
 * });
 * ```
 *
 * @throws TypeError for a spec without `VIRTIO_F_VERSION_1`, with
 *   `VIRTIO_F_RING_PACKED`, or with a bad device ID, queue size or name.
 */
export function softwareDriver(spec: SoftwareDeviceSpec): Driver {
  if (typeof spec.name !== "string" || spec.name === "") {
    throw new TypeError("a software device needs a name");
  }
  if (!Number.isInteger(spec.deviceId) || spec.deviceId < 1 || spec.deviceId > 0xffff) {
    throw new TypeError(`${spec.name}: device ID ${spec.deviceId} is not in 1..65535`);
  }
  if (!hasBit(spec.features, VirtioFeatureBit.VERSION_1)) {
    throw new TypeError(`${spec.name}: features must include VIRTIO_F_VERSION_1 (bit 32)`);
  }
  if (!isValidQueueSize(spec.maxQueueSize)) {
    throw new TypeError(
      `${spec.name}: maxQueueSize ${spec.maxQueueSize} is not a power of two up to 32768`,
    );
  }
  if (!(spec.worker instanceof URL)) {
    throw new TypeError(`${spec.name}: worker must be a URL (new URL("./x.ts", import.meta.url))`);
  }
  return {
    name: spec.name,
    description: spec.description,
    pciIds: [],
    options: spec.options,
    probe(ctx, given) {
      // The builders and the Workers see the declared defaults of options not given.
      const options: Record<string, string> = {};
      for (const o of spec.options ?? []) if (o.default !== undefined) options[o.name] = o.default;
      Object.assign(options, given.options);
      const params: ProbeParams = { ...given, options };
      const numQueues = typeof spec.numQueues === "function"
        ? spec.numQueues(params)
        : spec.numQueues;
      if (!Number.isInteger(numQueues) || numQueues < 1 || numQueues > MAX_QUEUES) {
        throw new RangeError(`${spec.name}: ${numQueues} queues is not in 1..${MAX_QUEUES}`);
      }
      const config = typeof spec.config === "function"
        ? spec.config(params)
        : (spec.config ?? new Uint8Array(0));
      if (config.length > CONFIG_SPACE_LIMIT) {
        throw new RangeError(
          `${spec.name}: config space of ${config.length} bytes is larger than the ` +
            `${CONFIG_SPACE_LIMIT}-byte limit`,
        );
      }
      const inflight = typeof spec.inflight === "function"
        ? spec.inflight(params)
        : (spec.inflight ?? false);
      const ops = new SoftwareDevice(ctx, spec.worker, numQueues, config.slice(), options);
      return {
        deviceId: spec.deviceId,
        // Packed rings and a vIOMMU come with the kit: its Workers translate
        // IOVAs through the device IOTLB.
        features: spec.features | bit(VirtioFeatureBit.RING_PACKED) |
          bit(VirtioFeatureBit.ACCESS_PLATFORM),
        numQueues,
        maxQueueSize: spec.maxQueueSize,
        config: config.slice(),
        counters: { ring: REQUEST_RING_COUNTERS },
        protocolFeatures: spec.protocolFeatures,
        inflight,
        ops,
      };
    },
  };
}

/** One ring's running Worker. */
interface RunningRing {
  run: WorkerRun;
  /** Stop flag and where the ring got to, shared with the Worker. */
  control: Int32Array;
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/**
 * The ops of one kit device: a Worker per running ring. Every op runs in
 * the device's own order (the SDK serializes its calls; the deferred
 * restart after a memory change joins the same queue).
 */
class SoftwareDevice implements DeviceOps {
  readonly #ctx: DeviceContext;
  readonly #worker: URL;
  readonly #numQueues: number;
  readonly #config: Uint8Array;
  readonly #options: Record<string, string>;
  readonly #stats: SharedArrayBuffer;
  /** Where each ring's Worker stopped, until a Worker takes the ring again. */
  readonly #saved: (RingPosition | null)[];
  readonly #running = new Map<number, RunningRing>();
  /** Rings stopped by `unmapMemory`, to run again on the new table. */
  readonly #switching = new Set<number>();
  #suspended = false;
  #closed = false;
  #queue: Promise<unknown> = Promise.resolve();
  /** The migration dirty log the Workers mark, or null. */
  #log: SharedDirtyLog | null = null;

  constructor(
    ctx: DeviceContext,
    worker: URL,
    numQueues: number,
    config: Uint8Array,
    options: Record<string, string>,
  ) {
    this.#ctx = ctx;
    this.#worker = worker;
    this.#numQueues = numQueues;
    this.#config = config;
    this.#options = options;
    this.#stats = new SharedArrayBuffer(8 * STAT_FIELDS * numQueues);
    this.#saved = new Array<RingPosition | null>(numQueues).fill(null);
  }

  start(): Promise<void> {
    return this.#exclusive(async () => {
      await this.#stopAll();
      this.#saved.fill(null);
      this.#suspended = false;
      const rings = [];
      for (let q = 0; q < this.#numQueues; q++) if (this.#ctx.vring(q).running) rings.push(q);
      try {
        await Promise.all(rings.map((q) => this.#startRing(q)));
      } catch (e) {
        await this.#stopAll();
        throw e;
      }
    });
  }

  stop(): Promise<void> {
    return this.#exclusive(async () => {
      this.#suspended = false;
      this.#switching.clear();
      await this.#stopAll();
    });
  }

  startRing(queue: number): Promise<void> {
    return this.#exclusive(async () => {
      this.#switching.delete(queue);
      await this.#stopRing(queue);
      this.#saved[queue] = null;
      await this.#startRing(queue);
    });
  }

  stopRing(queue: number): Promise<void> {
    return this.#exclusive(async () => {
      this.#switching.delete(queue);
      await this.#stopRing(queue);
    });
  }

  suspend(): Promise<void> {
    return this.#exclusive(async () => {
      this.#suspended = true;
      this.#switching.clear();
      await this.#stopAll();
    });
  }

  resume(): Promise<void> {
    return this.#exclusive(async () => {
      this.#suspended = false;
      await this.#startWanted();
    });
  }

  getVringState(queue: number): RingPosition {
    return this.#saved[queue] ?? this.#ctx.vring(queue).state;
  }

  /**
   * A region joined: every running ring's Worker starts again on a lease of
   * the new table, at its position (a short pause, no device restart).
   */
  mapMemory(_range: MemoryRange): Promise<void> {
    return this.#switchMemory();
  }

  /**
   * A region left: the Workers move to the new table the same way; their
   * old leases keep the region mapped until each has stopped.
   */
  unmapMemory(_range: MemoryRange): Promise<void> {
    return this.#switchMemory();
  }

  /**
   * Live migration's dirty log: the running rings' Workers start again
   * marking it (the same short pause as a memory change). Once this
   * resolves no Worker touches the previous log.
   */
  setLog(log: DirtyLog | null): Promise<void> {
    this.#log = log?.share() ?? null;
    return this.#switchMemory();
  }

  #switchMemory(): Promise<void> {
    return this.#exclusive(async () => {
      for (const q of this.#running.keys()) this.#switching.add(q);
      await this.#stopAll();
      await this.#startWanted();
    });
  }

  getConfig(offset: number, length: number): Uint8Array {
    if (
      !Number.isInteger(offset) || !Number.isInteger(length) || offset < 0 || length < 0 ||
      offset + length > CONFIG_SPACE_LIMIT
    ) {
      throw new RangeError(
        `config read of ${length} bytes at ${offset} is outside the ${CONFIG_SPACE_LIMIT}-byte ` +
          `config space limit`,
      );
    }
    // Past the device's struct the space reads as zeros.
    const out = new Uint8Array(length);
    if (offset < this.#config.length) out.set(this.#config.subarray(offset, offset + length));
    return out;
  }

  stats(): QueueStats[] {
    const s = new Float64Array(this.#stats);
    return Array.from({ length: this.#numQueues }, (_, q) => ({
      queue: q,
      requests: s[q * STAT_FIELDS + STAT_REQUESTS],
      bytes: s[q * STAT_FIELDS + STAT_BYTES],
      errors: s[q * STAT_FIELDS + STAT_ERRORS],
    }));
  }

  resetStats(): void {
    new Float64Array(this.#stats).fill(0);
  }

  close(): Promise<void> {
    return this.#exclusive(async () => {
      this.#closed = true;
      this.#switching.clear();
      await this.#stopAll();
    });
  }

  /** Run `body` after every op queued before it. */
  #exclusive<T>(body: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(body);
    this.#queue = run.catch(() => {});
    return run;
  }

  /** Start the rings a memory switch stopped, or all running ones after `resume`. */
  async #startWanted(): Promise<void> {
    if (this.#closed || this.#suspended) return;
    const rings = [];
    for (let q = 0; q < this.#numQueues; q++) {
      if (this.#ctx.vring(q).running && !this.#running.has(q)) rings.push(q);
    }
    this.#switching.clear();
    await Promise.all(rings.map((q) => this.#startRing(q)));
  }

  async #stopAll(): Promise<void> {
    await Promise.all([...this.#running.keys()].map((q) => this.#stopRing(q)));
  }

  /** Start ring `q`'s Worker from where it stopped (or the frontend put it). */
  async #startRing(q: number): Promise<void> {
    const ctx = this.#ctx;
    const v = ctx.vring(q);
    const position = this.#saved[q] ?? v.state;
    const resources = new RunResources(ctx.memory.lease());
    let kickFd: number, callFd: number;
    let inflight = null;
    try {
      kickFd = resources.hold(v.kickFd);
      callFd = resources.hold(v.callFd);
      const hold = ctx.inflight(q);
      if (hold !== null) {
        resources.keep(hold.release);
        inflight = hold.queue;
      }
    } catch (e) {
      resources.release();
      throw e;
    }
    const control = new SharedArrayBuffer(4 * CONTROL_WORDS);
    const words = new Int32Array(control);
    const packed = hasBit(ctx.ackedFeatures, VirtioFeatureBit.RING_PACKED);
    words[CONTROL_AVAIL] = encodeRingIndex(position.availIdx, position.availWrap, packed);
    words[CONTROL_USED] = encodeRingIndex(position.usedIdx, position.usedWrap, packed);
    const setup: QueueSetup = {
      queue: q,
      num: v.num,
      descAddr: v.descAddr,
      availAddr: v.availAddr,
      usedAddr: v.usedAddr,
      availIdx: position.availIdx,
      position,
      kickFd,
      callFd,
      stopFd: resources.stopFd,
      memory: resources.lease.regions,
      iotlb: resources.lease.iotlb,
      features: ctx.ackedFeatures,
      options: this.#options,
      stats: this.#stats,
      control,
      log: this.#log,
      inflight,
    };
    const ringError = (text: string) => {
      try {
        ctx.ringError(q, `ring ${q}: ${text}`);
      } catch (e) {
        ctx.log.warn(`ring ${q}: ${text} (not reported: ${errorText(e)})`);
      }
    };
    const run = await WorkerRun.start({
      worker: new Worker(this.#worker.href, { type: "module" }),
      label: `ring ${q}`,
      setup,
      resources,
      control: words,
      ctx,
      queue: q,
      readyTimeoutMs: READY_TIMEOUT_MS,
      readyHint: `does ${this.#worker.href} call serveQueue() at its top level?`,
      onMessage: (m) => {
        if (m.type === "ring-error") ringError(String(m.message));
        else if (m.type === "info") ctx.log.info(`ring ${q}: ${m.message}`);
      },
    });
    this.#running.set(q, { run, control: words });
    this.#saved[q] = null;
  }

  /**
   * Stop ring `q`'s Worker, keeping its position. A Worker that does not
   * confirm in time keeps what it held for good (see `WorkerRun.stop`).
   */
  async #stopRing(q: number): Promise<void> {
    const r = this.#running.get(q);
    if (!r) return;
    this.#running.delete(q);
    await r.run.stop(STOP_TIMEOUT_MS);
    r.run.worker.terminate();
    this.#saved[q] = decodePosition(
      Atomics.load(r.control, CONTROL_AVAIL),
      Atomics.load(r.control, CONTROL_USED),
      hasBit(this.#ctx.ackedFeatures, VirtioFeatureBit.RING_PACKED),
    );
  }
}
