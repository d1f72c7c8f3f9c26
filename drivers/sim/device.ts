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
  type RingPosition,
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

/** One queue pair's Worker and what it holds until it has confirmed it stopped. */
interface RunningPair {
  pair: number;
  worker: Worker;
  rings: number[];
  ready: Promise<void>;
  stopped: Promise<void>;
  /** Stop flag and ring positions shared with the Worker. */
  control: Int32Array;
  stopFd: number;
  lease: MemoryLease;
  /** The Worker's duplicates of kick and call fds. */
  fds: number[];
  /** The Worker failed (an uncaught error): it cannot run again. */
  dead: boolean;
}

function withTimeout<T>(p: Promise<T>, ms: number, onTimeout: () => T): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    p,
    new Promise<T>((resolve) => timer = setTimeout(() => resolve(onTimeout()), ms)),
  ]).finally(() => clearTimeout(timer));
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
  }

  /** Stop the Workers, if running, and end them. */
  async close(): Promise<void> {
    await this.stop();
    for (const w of this.#idle.values()) w.terminate();
    this.#idle.clear();
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
    };
    const fds: number[] = [];
    const rx = this.#ring(2 * pair, fds), tx = this.#ring(2 * pair + 1, fds);
    if (rx === null && tx === null) return;
    const control = new SharedArrayBuffer(4 * (CONTROL_BASES + this.#numQueues));
    const words = new Int32Array(control);
    for (const r of [rx, tx]) if (r !== null) words[CONTROL_BASES + r.index] = r.base;
    const lease = ctx.memory.lease();
    let stopFd = -1;
    try {
      stopFd = eventfd(0, { nonBlocking: true });
    } catch (e) {
      lease.release();
      for (const fd of fds) close(fd);
      throw e;
    }
    const running = this.#spawn({
      pair,
      mode: this.#options.mode,
      rx,
      tx,
      memory: lease.regions,
      features,
      mac: this.#options.mac,
      ip: this.#options.ip,
      frameSize: this.#options.frameSize,
      stats: this.#stats,
      control,
      stopFd,
    }, { control: words, stopFd, lease, fds });
    this.#pairs.set(pair, running);
    await withTimeout(running.ready, READY_TIMEOUT_MS, () => {
      throw new Error(`queue pair ${pair}: the datapath Worker did not start in time`);
    });
  }

  /**
   * Stop pair `pair`'s Worker, keeping its rings' positions. A Worker that
   * does not confirm in time may still use its memory and fds: they are
   * never released, so nothing is unmapped or reused under it.
   */
  async #stopPair(pair: number): Promise<void> {
    const p = this.#pairs.get(pair);
    if (!p) return;
    this.#pairs.delete(pair);
    Atomics.store(p.control, CONTROL_STOP, 1);
    eventfdWrite(p.stopFd, 1);
    let late = false;
    await withTimeout(p.stopped, STOP_TIMEOUT_MS, () => {
      late = true;
    });
    if (late || p.dead) p.worker.terminate();
    else this.#idle.set(pair, p.worker);
    for (const q of p.rings) {
      const idx = Atomics.load(p.control, CONTROL_BASES + q) & 0xffff;
      this.#saved[q] = { availIdx: idx, usedIdx: idx, availWrap: true, usedWrap: true };
    }
    if (late) {
      this.#ctx.reportError(
        `queue pair ${pair}: the datapath Worker did not stop within ${STOP_TIMEOUT_MS} ms; ` +
          `it was terminated, its guest memory stays mapped and its fds open`,
      );
      return;
    }
    p.lease.release();
    for (const fd of p.fds) close(fd);
    close(p.stopFd);
  }

  /** Ring `q` as a Worker gets it, or null when it does not run; its fds' duplicates go to `fds`. */
  #ring(q: number, fds: number[]): RingSetup | null {
    const v = this.#ctx.vring(q);
    if (!v.running) return null;
    const hold = (fd: number) => {
      if (fd < 0) return -1;
      const held = dup(fd);
      fds.push(held);
      return held;
    };
    return {
      index: q,
      num: v.num,
      descAddr: v.descAddr,
      availAddr: v.availAddr,
      usedAddr: v.usedAddr,
      // A ring this device stopped and restarted on its own (its pair's
      // other ring started or stopped) goes on from where it stopped.
      base: (this.#saved[q] ?? v.state).availIdx,
      kickFd: hold(v.kickFd),
      callFd: hold(v.callFd),
    };
  }

  #spawn(
    setup: DatapathSetup,
    held: Pick<RunningPair, "control" | "stopFd" | "lease" | "fds">,
  ): RunningPair {
    const worker = this.#idle.get(setup.pair) ??
      new Worker(new URL("./datapath_worker.ts", import.meta.url).href, { type: "module" });
    this.#idle.delete(setup.pair);
    const self: { dead: boolean } = { dead: false };
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
      self.dead = true;
      stopped();
    };
    worker.postMessage(setup);
    const rings = [setup.rx, setup.tx].filter((r) => r !== null).map((r) => r!.index);
    const handle: RunningPair = {
      pair: setup.pair,
      worker,
      rings,
      ready: readyP,
      stopped: stoppedP,
      ...held,
      get dead() {
        return self.dead;
      },
    };
    return handle;
  }
}
