/**
 * A bounded pool of datapath Workers shared by every sim device of the
 * process, as DPDK's lcores and rust-vmm's `queues_per_thread` share
 * threads: each Worker (`pool_worker.ts`) serves the queue pairs of many
 * devices in turn, so a process serving many devices runs a fixed number of
 * V8 isolates instead of one per queue pair. A pair goes to the Worker
 * serving the fewest. Without a pool ({@linkcode useDatapathPool} not
 * called) each queue pair gets a Worker of its own.
 *
 * @module
 */

import type { DeviceContext } from "@vhost-mdev/sdk";
import { close, eventfd, eventfdWrite } from "@vhost-mdev/sdk/sys";
import type { RunResources } from "@vhost-mdev/sdk/soft";
import { CONTROL_STOP, type DatapathSetup } from "./protocol.ts";
import type { PoolCommand, PoolMessage } from "./pool_worker.ts";

/** Mailbox word 0 value that tells a pool Worker to end. */
const QUIT = 1;

/** How long a pair's first start may take (the Worker's first load type-checks), in ms. */
const READY_TIMEOUT_MS = 30_000;

/** Options of {@linkcode DatapathPool}. */
export interface DatapathPoolOptions {
  /** Workers (default: the machine's CPU count, `navigator.hardwareConcurrency`). */
  workers?: number;
  /**
   * CPUs to pin the Workers to, Worker `i` on `cpus[i % cpus.length]`
   * (default: not pinned).
   */
  cpus?: readonly number[];
}

interface PoolWorker {
  worker: Worker;
  wakeFd: number;
  /** Int32 words: [0] `QUIT` to end the Worker, [1] `add` messages posted. */
  mailbox: Int32Array;
  pairs: number;
}

/** Count a message posted to `slot`'s Worker and wake it from `poll` to read it. */
function wake(slot: PoolWorker): void {
  Atomics.add(slot.mailbox, 1, 1);
  eventfdWrite(slot.wakeFd, 1);
}

interface Pending {
  ready: () => void;
  failed: (e: Error) => void;
  stopped: (bases: { rxBase: number; txBase: number } | null) => void;
  serving: boolean;
  ctx: DeviceContext;
  queue: number;
  label: string;
  onWarn: (text: string) => void;
  /** The Worker serving the pair. */
  slot: PoolWorker;
}

/** One queue pair served by a pool Worker; stop it to take it back. */
export class PoolRun {
  readonly #pool: DatapathPool;
  readonly #slot: PoolWorker;
  readonly #control: Int32Array;
  readonly #resources: RunResources;
  readonly #stopped: Promise<{ rxBase: number; txBase: number } | null>;
  #done = false;

  /** Made by {@linkcode DatapathPool.run}. */
  constructor(
    pool: DatapathPool,
    slot: PoolWorker,
    control: Int32Array,
    resources: RunResources,
    stopped: Promise<{ rxBase: number; txBase: number } | null>,
  ) {
    this.#pool = pool;
    this.#slot = slot;
    this.#control = control;
    this.#resources = resources;
    this.#stopped = stopped;
  }

  /**
   * Ask the Worker to drop the pair and wait up to `timeoutMs` for it to
   * confirm. Returns whether it confirmed; only then are the pair's
   * resources (its memory lease, its fd duplicates) released, otherwise
   * kept for the life of the process, as for a Worker of its own.
   */
  async stop(timeoutMs: number): Promise<boolean> {
    if (this.#done) return true;
    this.#done = true;
    Atomics.store(this.#control, CONTROL_STOP, 1);
    eventfdWrite(this.#slot.wakeFd, 1);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<"timeout">((r) =>
      timer = setTimeout(() => r("timeout"), timeoutMs)
    );
    const got = await Promise.race([this.#stopped, timeout]);
    clearTimeout(timer);
    this.#slot.pairs--;
    if (got === "timeout") return false;
    this.#resources.release();
    return true;
  }

  /** The pool serving the pair. */
  get pool(): DatapathPool {
    return this.#pool;
  }
}

/**
 * The pool: its Workers start when it is made (a fixed set, as DPDK's
 * lcores, so memory and fds do not change as devices come and go) and run
 * until {@linkcode DatapathPool.close}.
 *
 * @example Serve every sim device of the process on two Workers
 * ```ts
 * import { DatapathPool, useDatapathPool } from "@vhost-mdev/sim";
 * const pool = new DatapathPool({ workers: 2 });
 * useDatapathPool(pool);
 * // ... create and serve sim devices ...
 * useDatapathPool(null);
 * pool.close();
 * ```
 */
export class DatapathPool {
  /** How many Workers the pool runs at most. */
  readonly size: number;
  readonly #cpus: readonly number[];
  readonly #workers: PoolWorker[] = [];
  readonly #pending = new Map<number, Pending>();
  #nextId = 1;
  #closed = false;

  /** A pool of `options.workers` Workers, started now. */
  constructor(options: DatapathPoolOptions = {}) {
    const n = options.workers ?? navigator.hardwareConcurrency ?? 2;
    if (!Number.isInteger(n) || n < 1 || n > 256) {
      throw new RangeError(`a datapath pool of ${n} Workers: choose 1 to 256`);
    }
    this.size = n;
    this.#cpus = options.cpus ?? [];
    for (const c of this.#cpus) {
      if (!Number.isInteger(c) || c < 0 || c > 1023) {
        throw new RangeError(`CPU ${c} is not in 0..1023`);
      }
    }
    for (let i = 0; i < n; i++) this.#start();
  }

  /** Workers running. */
  get workers(): number {
    return this.#workers.length;
  }

  /** Queue pairs each started Worker serves now. */
  load(): number[] {
    return this.#workers.map((w) => w.pairs);
  }

  /**
   * Serve the pair `setup` describes on the least loaded Worker (starting
   * one while fewer than `size` run) and wait until it took it.
   *
   * @throws Error when the pair cannot start (its message says why); its
   *   resources are released then.
   */
  async run(
    setup: DatapathSetup,
    resources: RunResources,
    ctx: DeviceContext,
    onWarn: (text: string) => void,
  ): Promise<PoolRun> {
    if (this.#closed) throw new Error("the datapath pool is closed");
    const slot = this.#pick();
    const id = this.#nextId++;
    let ready!: () => void, failed!: (e: Error) => void;
    let stopped!: (b: { rxBase: number; txBase: number } | null) => void;
    const readyP = new Promise<void>((res, rej) => {
      ready = res;
      failed = rej;
    });
    readyP.catch(() => {});
    const stoppedP = new Promise<{ rxBase: number; txBase: number } | null>((r) => stopped = r);
    const label = `queue pair ${setup.pair}`;
    this.#pending.set(id, {
      ready,
      failed,
      stopped,
      serving: false,
      ctx,
      queue: 2 * setup.pair,
      label,
      onWarn,
      slot,
    });
    slot.pairs++;
    const control = new Int32Array(setup.control);
    const run = new PoolRun(this, slot, control, resources, stoppedP);
    slot.worker.postMessage({ type: "add", id, setup } satisfies PoolCommand);
    wake(slot);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, rej) => {
      timer = setTimeout(
        () => rej(new Error(`${label}: the pool Worker did not take it in ${READY_TIMEOUT_MS} ms`)),
        READY_TIMEOUT_MS,
      );
    });
    try {
      await Promise.race([readyP, timeout]);
    } catch (e) {
      await run.stop(2000);
      throw e;
    } finally {
      clearTimeout(timer);
    }
    return run;
  }

  /**
   * End every Worker. Pairs still served are dropped with them. A Worker
   * asleep in `poll` is woken first (its mailbox says quit): a thread inside
   * a system call cannot be terminated until it returns.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    const fds: number[] = [];
    for (const w of this.#workers) {
      Atomics.store(w.mailbox, 0, QUIT);
      eventfdWrite(w.wakeFd, 1);
      w.worker.terminate();
      fds.push(w.wakeFd);
    }
    this.#workers.length = 0;
    // The wake fds go once the threads have left `poll`.
    setTimeout(() => fds.forEach((fd) => close(fd)), 200);
  }

  #pick(): PoolWorker {
    return this.#workers.reduce((a, b) => (b.pairs < a.pairs ? b : a));
  }

  #start(): PoolWorker {
    const worker = new Worker(new URL("./pool_worker.ts", import.meta.url).href, {
      type: "module",
    });
    const wakeFd = eventfd(0, { nonBlocking: true });
    const mailbox = new SharedArrayBuffer(8);
    const slot: PoolWorker = { worker, wakeFd, mailbox: new Int32Array(mailbox), pairs: 0 };
    worker.onmessage = (e: MessageEvent<PoolMessage>) => this.#message(e.data);
    worker.onerror = (e) => {
      e.preventDefault();
      // A pool Worker that dies takes its pairs with it: each is reported,
      // and a new Worker takes its place for the pairs to come.
      for (const [id, p] of this.#pending) {
        if (p.slot !== slot) continue;
        p.ctx.reportError(`${p.label}: the pool Worker failed: ${e.message}`, p.queue);
        p.failed(new Error(e.message));
        p.stopped(null);
        this.#pending.delete(id);
      }
      const at = this.#workers.indexOf(slot);
      if (at >= 0) this.#workers.splice(at, 1);
      setTimeout(() => close(slot.wakeFd), 200);
      if (!this.#closed) this.#start();
    };
    const cpu = this.#cpus.length > 0 ? this.#cpus[this.#workers.length % this.#cpus.length] : null;
    worker.postMessage({ type: "init", wakeFd, mailbox, cpu } satisfies PoolCommand);
    this.#workers.push(slot);
    return slot;
  }

  #message(m: PoolMessage): void {
    const p = this.#pending.get(m.id);
    if (!p) return;
    switch (m.type) {
      case "ready":
        p.serving = true;
        p.ready();
        break;
      case "warn":
        p.onWarn(m.message);
        break;
      case "fatal":
        if (p.serving) p.ctx.reportError(m.message, m.ring ?? p.queue);
        else p.ctx.log.warn(m.message);
        p.failed(new Error(m.message));
        break;
      case "stopped":
        this.#pending.delete(m.id);
        p.failed(new Error(`${p.label}: stopped while starting`));
        p.stopped({ rxBase: m.rxBase, txBase: m.txBase });
        break;
    }
  }
}

let current: DatapathPool | null = null;

/**
 * Serve the queue pairs of sim devices started from now on with `pool`
 * (null: a Worker per queue pair again). Pairs already running keep their
 * Workers until they restart.
 */
export function useDatapathPool(pool: DatapathPool | null): void {
  current = pool;
}

/** The pool new sim queue pairs go to, or null. */
export function currentDatapathPool(): DatapathPool | null {
  return current;
}
