/**
 * The sim device's operations: on `start` one Worker per queue pair takes
 * over the pair's rings (it polls the kick fds itself, so the device has no
 * `notify` and the SDK runs no kick relay for it); on `stop` the Workers
 * finish, report each ring's next available index and end.
 *
 * Guest memory: the Workers view the table through a lease, so the
 * mappings stay until every Worker has confirmed it stopped, even when the
 * SDK replaces or drops the table meanwhile. A Worker that does not confirm
 * in time is terminated and its lease is kept for the life of the process:
 * a leaked mapping, reported, rather than memory unmapped under a thread
 * that may still touch it. A Worker that fails while running is reported to
 * the SDK (`ctx.reportError`): the device then needs a reset.
 *
 * @module
 */

import {
  type DeviceContext,
  type DeviceOps,
  type DirtyLog,
  hasBit,
  type QueueStats,
  type RingPosition,
  type SharedDirtyLog,
  VirtioFeatureBit,
  VirtioNetFeatureBit,
} from "@vhost-mdev/sdk";
import { RunResources, WorkerRun } from "@vhost-mdev/sdk/soft";
import { currentDatapathPool, type PoolRun } from "./pool.ts";
import type { SimOptions } from "./options.ts";
import {
  CONTROL_BASES,
  type DatapathFeatures,
  type DatapathSetup,
  decodeBase,
  encodeBase,
  type RingSetup,
  STAT_BYTES,
  STAT_DROPS,
  STAT_ERRORS,
  STAT_FIELDS,
  STAT_PACKETS,
} from "./protocol.ts";

/** How long `start` waits for a Worker to map the rings, in ms. */
const READY_TIMEOUT_MS = 10000;
/** How long `stop` waits for a Worker to finish before terminating it, in ms. */
const STOP_TIMEOUT_MS = 2000;

/** One queue pair's running Worker (its own, or a pool's). */
interface RunningPair {
  run: WorkerRun | PoolRun;
  rings: number[];
  /** Stop flag and ring positions shared with the Worker. */
  control: Int32Array;
}

/**
 * The {@linkcode DeviceOps} of a sim device with `queuePairs` pairs: one
 * Worker per queue pair, so starting or stopping one ring restarts only its
 * pair's Worker and the other pairs run on. Counters live in a
 * SharedArrayBuffer the Workers add to, so {@linkcode SimDevice.stats} costs
 * no message; they count from the device's creation.
 *
 * @example
 * ```ts
 * import type { DeviceContext } from "@vhost-mdev/sdk";
 * import { parseSimOptions, SimDevice } from "@vhost-mdev/sim";
 *
 * declare const ctx: DeviceContext;
 * const ops = new SimDevice(ctx, parseSimOptions({ mode: "sink" }), 1);
 * await ops.start();
 * console.log(ops.stats());
 * await ops.stop();
 * ```
 */
export class SimDevice implements DeviceOps {
  readonly #ctx: DeviceContext;
  readonly #options: SimOptions;
  readonly #numQueues: number;
  readonly #stats: SharedArrayBuffer;
  /** Where each ring stopped, until the SDK took it. */
  readonly #saved: (RingPosition | null)[];
  /** Running Workers, by queue pair. */
  readonly #pairs = new Map<number, RunningPair>();
  /** Workers that stopped cleanly, kept to run their pair again without starting a Worker. */
  readonly #idle = new Map<number, Worker>();
  /** The dirty log the Workers mark (live migration), or null. */
  #log: SharedDirtyLog | null = null;
  /** RARP announcements made (`SEND_RARP`). */
  #announcements = 0;

  /**
   * Make the device's counters; no Worker runs until `start`.
   *
   * @param ctx The device context from `probe`.
   * @param options Validated options.
   * @param queuePairs Queue pairs (rings `2k` receive, `2k + 1` transmit).
   */
  constructor(ctx: DeviceContext, options: SimOptions, queuePairs: number) {
    this.#ctx = ctx;
    this.#options = options;
    this.#numQueues = 2 * queuePairs;
    this.#stats = new SharedArrayBuffer(8 * STAT_FIELDS * this.#numQueues);
    this.#saved = new Array<RingPosition | null>(this.#numQueues).fill(null);
  }

  /** Whether Workers are running. */
  get running(): boolean {
    return this.#pairs.size > 0;
  }

  /**
   * Start a Worker for every queue pair with a running ring and wait until
   * each has mapped its rings.
   *
   * @throws Error when a ring's layout is invalid for the memory table or a
   *   Worker fails to start; no Worker is left running then.
   */
  async start(): Promise<void> {
    await this.stop();
    this.#saved.fill(null);
    const pairs = new Set<number>();
    for (let q = 0; q < this.#numQueues; q++) if (this.#ctx.vring(q).running) pairs.add(q >> 1);
    try {
      await Promise.all([...pairs].map((pair) => this.#startPair(pair)));
    } catch (e) {
      await this.stop();
      throw e;
    }
    this.#ctx.log.debug(
      `sim ${this.#options.mode}: ${this.#pairs.size} datapath Worker(s) for rings ` +
        [...this.#pairs.values()].flatMap((p) => p.rings).join(","),
    );
  }

  /** Stop every Worker, keeping each ring's position. */
  async stop(): Promise<void> {
    const pairs = [...this.#pairs.keys()];
    await Promise.all(pairs.map((pair) => this.#stopPair(pair)));
  }

  /** Ring `queue` starts: its pair's Worker restarts with it (the other pairs run on). */
  async startRing(queue: number): Promise<void> {
    const pair = queue >> 1;
    await this.#stopPair(pair);
    this.#saved[queue] = null;
    await this.#startPair(pair);
  }

  /** Ring `queue` stops: its pair's Worker stops, and restarts for the pair's other ring. */
  async stopRing(queue: number): Promise<void> {
    const pair = queue >> 1;
    await this.#stopPair(pair);
    const other = queue ^ 1;
    if (other < this.#numQueues && this.#ctx.vring(other).running) await this.#startPair(pair);
  }

  /** Where ring `queue` got to: where its Worker stopped, or where the frontend put it. */
  getVringState(queue: number): RingPosition {
    return this.#saved[queue] ?? this.#ctx.vring(queue).state;
  }

  /** Counters of every ring since the device was created. */
  stats(): QueueStats[] {
    const s = new Float64Array(this.#stats);
    return Array.from({ length: this.#numQueues }, (_, q) => ({
      queue: q,
      packets: s[q * STAT_FIELDS + STAT_PACKETS],
      bytes: s[q * STAT_FIELDS + STAT_BYTES],
      drops: s[q * STAT_FIELDS + STAT_DROPS],
      errors: s[q * STAT_FIELDS + STAT_ERRORS],
    }));
  }

  /**
   * Zero every counter. The Workers add to the counters as they go, so a
   * frame counted during the reset may land on either side of it.
   */
  resetStats(): void {
    new Float64Array(this.#stats).fill(0);
    this.#announcements = 0;
  }

  /** Stop the Workers, if running, and end them. */
  async close(): Promise<void> {
    await this.stop();
    for (const w of this.#idle.values()) w.terminate();
    this.#idle.clear();
  }

  /**
   * Live migration's dirty log: each running pair's Worker moves to it (as
   * for a memory change: a pause of about a millisecond per pair). Once this
   * resolves no Worker touches the previous log.
   */
  async setLog(log: DirtyLog | null): Promise<void> {
    this.#log = log?.share() ?? null;
    await this.#remap();
  }

  /**
   * The guest moved here by migration: announce its MAC. The sim's network
   * is the device itself, so the announcement is counted
   * (`announcements` in {@linkcode SimDevice.deviceStats}) and logged.
   */
  announce(mac: Uint8Array): void {
    this.#announcements++;
    this.#ctx.log.info(
      `RARP announcement for ${[...mac].map((b) => b.toString(16).padStart(2, "0")).join(":")}`,
    );
  }

  /** Device-wide counters: RARP announcements made. */
  deviceStats(): Record<string, number> {
    return { announcements: this.#announcements };
  }

  /**
   * A region joined guest memory: each running pair's Worker moves to a
   * lease of the new table at its rings' positions (the Worker is reused:
   * a pause of about a millisecond, no device restart). The old lease is
   * let go only once the Worker confirmed it stopped.
   */
  async mapMemory(): Promise<void> {
    await this.#remap();
  }

  /** A region left guest memory: the Workers move to the new table (see `mapMemory`). */
  async unmapMemory(): Promise<void> {
    await this.#remap();
  }

  async #remap(): Promise<void> {
    for (const pair of [...this.#pairs.keys()]) {
      await this.#stopPair(pair);
      await this.#startPair(pair);
    }
  }

  /** Start pair `pair`'s Worker for its running rings (none running: nothing). */
  async #startPair(pair: number): Promise<void> {
    const ctx = this.#ctx;
    const acked = ctx.ackedFeatures;
    const features: DatapathFeatures = {
      eventIdx: hasBit(acked, VirtioFeatureBit.EVENT_IDX),
      indirect: hasBit(acked, VirtioFeatureBit.INDIRECT_DESC),
      mrgRxbuf: hasBit(acked, VirtioNetFeatureBit.MRG_RXBUF),
      version1: hasBit(acked, VirtioFeatureBit.VERSION_1),
      csum: hasBit(acked, VirtioNetFeatureBit.CSUM),
      guestCsum: hasBit(acked, VirtioNetFeatureBit.GUEST_CSUM),
      packed: hasBit(acked, VirtioFeatureBit.RING_PACKED),
      inOrder: this.#options.batchUsed && hasBit(acked, VirtioFeatureBit.IN_ORDER),
    };
    if (!ctx.vring(2 * pair).running && !ctx.vring(2 * pair + 1).running) return;
    const resources = new RunResources(ctx.memory.lease());
    let rx: RingSetup | null, tx: RingSetup | null;
    try {
      rx = this.#ring(2 * pair, resources);
      tx = this.#ring(2 * pair + 1, resources);
    } catch (e) {
      resources.release();
      throw e;
    }
    const control = new SharedArrayBuffer(4 * (CONTROL_BASES + this.#numQueues));
    const words = new Int32Array(control);
    for (const r of [rx, tx]) {
      if (r !== null) words[CONTROL_BASES + r.index] = encodeBase(r.position, features.packed);
    }
    const setup: DatapathSetup = {
      pair,
      mode: this.#options.mode,
      rx,
      tx,
      memory: resources.lease.regions,
      iotlb: resources.lease.iotlb,
      features,
      mac: this.#options.mac,
      ip: this.#options.ip,
      frameSize: this.#options.frameSize,
      stats: this.#stats,
      control,
      stopFd: resources.stopFd,
      log: this.#log,
      logBuffers: this.#options.logBuffers,
    };
    const rings = [rx, tx].filter((r) => r !== null).map((r) => r!.index);
    const pool = currentDatapathPool();
    if (pool !== null) {
      const run = await pool.run(setup, resources, ctx, (text) => ctx.log.warn(text));
      this.#pairs.set(pair, { run, rings, control: words });
      return;
    }
    const worker = this.#idle.get(pair) ??
      new Worker(new URL("./datapath_worker.ts", import.meta.url).href, { type: "module" });
    this.#idle.delete(pair);
    const run = await WorkerRun.start({
      worker,
      label: `queue pair ${pair}`,
      setup,
      resources,
      control: words,
      ctx,
      queue: 2 * pair,
      readyTimeoutMs: READY_TIMEOUT_MS,
      onMessage: (m) => {
        if (m.type === "warn") ctx.log.warn(String(m.message));
      },
    });
    this.#pairs.set(pair, { run, rings, control: words });
  }

  /**
   * Stop pair `pair`'s Worker, keeping its rings' positions. A Worker that
   * stopped cleanly is kept to run the pair again; one that did not confirm
   * is terminated and keeps what it held (see `WorkerRun.stop`).
   */
  async #stopPair(pair: number): Promise<void> {
    const p = this.#pairs.get(pair);
    if (!p) return;
    this.#pairs.delete(pair);
    const confirmed = await p.run.stop(STOP_TIMEOUT_MS);
    if (p.run instanceof WorkerRun) {
      if (confirmed && !p.run.dead) this.#idle.set(pair, p.run.worker);
      else p.run.worker.terminate();
    } else if (!confirmed) {
      this.#ctx.log.warn(
        `queue pair ${pair}: the pool Worker did not confirm the stop; its mappings are kept`,
      );
    }
    const packed = hasBit(this.#ctx.ackedFeatures, VirtioFeatureBit.RING_PACKED);
    for (const q of p.rings) {
      this.#saved[q] = decodeBase(Atomics.load(p.control, CONTROL_BASES + q), packed);
    }
  }

  /** Ring `q` as a Worker gets it, or null when it does not run; `resources` holds its fds. */
  #ring(q: number, resources: RunResources): RingSetup | null {
    const v = this.#ctx.vring(q);
    if (!v.running) return null;
    const hold = (fd: number) => resources.hold(fd);
    return {
      index: q,
      num: v.num,
      descAddr: v.descAddr,
      availAddr: v.availAddr,
      usedAddr: v.usedAddr,
      // A ring this device stopped and restarted on its own (its pair's
      // other ring started or stopped) goes on from where it stopped.
      position: this.#saved[q] ?? v.state,
      kickFd: hold(v.kickFd),
      callFd: hold(v.callFd),
    };
  }
}
