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
  hasBit,
  type MemoryLease,
  type QueueStats,
  VirtioFeatureBit,
  VirtioNetFeatureBit,
} from "@vhost-mdev/sdk";
import { close, dup, eventfd, eventfdWrite } from "@vhost-mdev/sdk/sys";
import type { SimOptions } from "./options.ts";
import {
  CONTROL_BASES,
  CONTROL_STOP,
  type DatapathFeatures,
  type DatapathMessage,
  type DatapathSetup,
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

interface RunningPair {
  pair: number;
  worker: Worker;
  rings: number[];
  ready: Promise<void>;
  stopped: Promise<void>;
}

function withTimeout<T>(p: Promise<T>, ms: number, onTimeout: () => T): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    p,
    new Promise<T>((resolve) => timer = setTimeout(() => resolve(onTimeout()), ms)),
  ]).finally(() => clearTimeout(timer));
}

/**
 * The {@linkcode DeviceOps} of a sim device with `queuePairs` pairs. Counters
 * live in a SharedArrayBuffer the Workers add to, so {@linkcode SimDevice.stats}
 * costs no message; they count from the device's creation.
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
  readonly #control: SharedArrayBuffer;
  readonly #bases: (number | null)[];
  #running: RunningPair[] = [];
  #stopFd = -1;
  #lease: MemoryLease | null = null;
  /** The Workers' duplicates of kick and call fds, closed once they have stopped. */
  #fds: number[] = [];

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
    this.#control = new SharedArrayBuffer(4 * (CONTROL_BASES + this.#numQueues));
    this.#bases = new Array<number | null>(this.#numQueues).fill(null);
  }

  /** Whether Workers are running. */
  get running(): boolean {
    return this.#running.length > 0;
  }

  /**
   * Start a Worker for every queue pair with a running ring (enabled and
   * configured) and wait until each has mapped its rings.
   *
   * @throws Error when a ring's layout is invalid for the memory table or a
   *   Worker fails to start; no Worker is left running then.
   */
  async start(): Promise<void> {
    if (this.#running.length > 0) await this.stop();
    const ctx = this.#ctx;
    const acked = ctx.ackedFeatures;
    const features: DatapathFeatures = {
      eventIdx: hasBit(acked, VirtioFeatureBit.EVENT_IDX),
      indirect: hasBit(acked, VirtioFeatureBit.INDIRECT_DESC),
      mrgRxbuf: hasBit(acked, VirtioNetFeatureBit.MRG_RXBUF),
      version1: hasBit(acked, VirtioFeatureBit.VERSION_1),
      csum: hasBit(acked, VirtioNetFeatureBit.CSUM),
      guestCsum: hasBit(acked, VirtioNetFeatureBit.GUEST_CSUM),
    };
    this.#lease = ctx.memory.lease();
    const memory = this.#lease.regions;
    const control = new Int32Array(this.#control);
    Atomics.store(control, CONTROL_STOP, 0);
    this.#bases.fill(null);
    try {
      this.#stopFd = eventfd(0, { nonBlocking: true });
      for (let pair = 0; 2 * pair < this.#numQueues; pair++) {
        const rx = this.#ring(2 * pair), tx = this.#ring(2 * pair + 1);
        if (rx === null && tx === null) continue;
        for (const r of [rx, tx]) if (r !== null) control[CONTROL_BASES + r.index] = r.base;
        this.#running.push(this.#spawn({
          pair,
          mode: this.#options.mode,
          rx,
          tx,
          memory,
          features,
          mac: this.#options.mac,
          ip: this.#options.ip,
          frameSize: this.#options.frameSize,
          stats: this.#stats,
          control: this.#control,
          stopFd: this.#stopFd,
        }));
      }
      await Promise.all(this.#running.map((p) =>
        withTimeout(p.ready, READY_TIMEOUT_MS, () => {
          throw new Error(`queue pair ${p.pair}: the datapath Worker did not start in time`);
        })
      ));
    } catch (e) {
      await this.stop();
      throw e;
    }
    ctx.log.debug(
      `sim ${this.#options.mode}: ${this.#running.length} datapath Worker(s) for rings ` +
        this.#running.flatMap((p) => p.rings).join(","),
    );
  }

  /** Stop every Worker, keeping each ring's next available index. */
  async stop(): Promise<void> {
    const running = this.#running;
    this.#running = [];
    const late: number[] = [];
    if (running.length > 0) {
      const control = new Int32Array(this.#control);
      Atomics.store(control, CONTROL_STOP, 1);
      eventfdWrite(this.#stopFd, 1);
      await Promise.all(running.map((p) =>
        withTimeout(p.stopped, STOP_TIMEOUT_MS, () => {
          late.push(p.pair);
        })
      ));
      for (const p of running) {
        p.worker.terminate();
        for (const q of p.rings) {
          this.#bases[q] = Atomics.load(control, CONTROL_BASES + q) & 0xffff;
        }
      }
    }
    const lease = this.#lease, fds = this.#fds, stopFd = this.#stopFd;
    this.#lease = null;
    this.#fds = [];
    this.#stopFd = -1;
    if (late.length > 0) {
      // A Worker that did not confirm may still be using its memory and fds:
      // they are never released, so nothing is unmapped or reused under it.
      this.#ctx.reportError(
        `queue pair(s) ${late.join(", ")}: the datapath Worker did not stop within ` +
          `${STOP_TIMEOUT_MS} ms; it was terminated, its guest memory stays mapped and its ` +
          `fds open`,
      );
      return;
    }
    lease?.release();
    for (const fd of fds) close(fd);
    if (stopFd >= 0) close(stopFd);
  }

  /** Next available index of ring `queue`: where its Worker stopped, or the frontend's base. */
  getVringBase(queue: number): number {
    return this.#bases[queue] ?? this.#ctx.vring(queue).base;
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

  /** Stop the Workers, if running. */
  async close(): Promise<void> {
    await this.stop();
  }

  /** Ring `q` as a Worker gets it, or null when it does not run. */
  #ring(q: number): RingSetup | null {
    const v = this.#ctx.vring(q);
    if (!v.enabled || !v.ready) return null;
    return {
      index: q,
      num: v.num,
      descAddr: v.descAddr,
      availAddr: v.availAddr,
      usedAddr: v.usedAddr,
      base: v.base,
      kickFd: this.#hold(v.kickFd),
      callFd: this.#hold(v.callFd),
    };
  }

  /** A duplicate of `fd` for a Worker (-1 stays -1), closed by `stop`. */
  #hold(fd: number): number {
    if (fd < 0) return -1;
    const held = dup(fd);
    this.#fds.push(held);
    return held;
  }

  #spawn(setup: DatapathSetup): RunningPair {
    const worker = new Worker(new URL("./datapath_worker.ts", import.meta.url).href, {
      type: "module",
    });
    const ctx = this.#ctx;
    const log = ctx.log;
    let running = false;
    let ready!: () => void, failed!: (e: Error) => void, stopped!: () => void;
    const readyP = new Promise<void>((res, rej) => {
      ready = res;
      failed = rej;
    });
    // A failure before `ready` rejects it; keep the rejection handled until start awaits it.
    readyP.catch(() => {});
    const stoppedP = new Promise<void>((res) => stopped = res);
    worker.onmessage = (e: MessageEvent<DatapathMessage>) => {
      const m = e.data;
      switch (m.type) {
        case "ready":
          running = true;
          ready();
          break;
        case "warn":
          log.warn(m.message);
          break;
        case "fatal":
          // Before `ready` this fails `start`; after, the rings are dead: tell the core.
          if (running) ctx.reportError(m.message, m.ring);
          else log.warn(m.message);
          failed(new Error(m.message));
          break;
        case "stopped":
          failed(new Error(`queue pair ${m.pair}: the datapath Worker stopped while starting`));
          stopped();
          break;
      }
    };
    worker.onerror = (e) => {
      e.preventDefault();
      const text = `queue pair ${setup.pair}: datapath Worker failed: ${e.message}`;
      if (running) ctx.reportError(text, 2 * setup.pair);
      else log.warn(text);
      failed(new Error(text));
      stopped();
    };
    worker.postMessage(setup);
    const rings = [setup.rx, setup.tx].filter((r) => r !== null).map((r) => r!.index);
    return { pair: setup.pair, worker, rings, ready: readyP, stopped: stoppedP };
  }
}
