/**
 * One run of a datapath Worker and what it holds: the piece every software
 * datapath shares (the kit's ring Workers, sim's queue-pair Workers). The
 * rules it keeps (see docs/security.md):
 *
 * - The Worker works on its own duplicates of the kick and call fds and a
 *   lease on the guest memory mappings; they are released only once the
 *   Worker has confirmed it stopped, so no fd number is reused and no
 *   mapping unmapped under a thread that may still touch them.
 * - A Worker that does not confirm in time is terminated, and what it held
 *   is kept for the life of the process (a leak, reported), never released.
 * - A Worker failing while it runs is reported to the core
 *   (`ctx.reportError`): the device needs a reset; never a silently dead ring.
 *
 * The protocol: the run's setup is posted to the Worker; it answers
 * `{type: "ready"}`, may post `{type: "fatal", message}` (before `ready`,
 * the start fails), and ends with `{type: "stopped"}` once the stop word
 * (Int32 0 of `control`) is set and the stop eventfd written. Other
 * messages go to `onMessage`.
 *
 * @module
 */

import type { DeviceContext } from "../ops.ts";
import type { MemoryLease } from "../memory/guest_memory.ts";
import { close, dup, eventfd, eventfdWrite } from "../sys/mod.ts";

/** Int32 word of a run's control buffer set to 1 to stop the Worker. */
export const RUN_STOP = 0;

/** What a run holds until its Worker confirmed it stopped. */
export class RunResources {
  /** Duplicates of the fds the Worker uses. */
  readonly fds: number[] = [];
  /** The eventfd written once to wake the Worker for stopping. */
  readonly stopFd: number;
  /** The guest memory the Worker views. */
  readonly lease: MemoryLease;
  readonly #others: (() => void)[] = [];
  #released = false;

  /**
   * Hold `lease` and make the stop eventfd.
   *
   * @param lease The Worker's view of guest memory (`ctx.memory.lease()`).
   */
  constructor(lease: MemoryLease) {
    this.lease = lease;
    try {
      this.stopFd = eventfd(0, { nonBlocking: true });
    } catch (e) {
      lease.release();
      throw e;
    }
  }

  /** A duplicate of `fd` for the Worker (-1 stays -1), released with the run. */
  hold(fd: number): number {
    if (fd < 0) return -1;
    const held = dup(fd);
    this.fds.push(held);
    return held;
  }

  /** Call `release` with the rest, once the Worker confirmed it stopped (another mapping it views). */
  keep(release: () => void): void {
    this.#others.push(release);
  }

  /** Let everything go. Idempotent; only once the Worker confirmed it stopped. */
  release(): void {
    if (this.#released) return;
    this.#released = true;
    this.lease.release();
    for (const release of this.#others) release();
    for (const fd of this.fds) close(fd);
    close(this.stopFd);
  }
}

/** How to start a {@linkcode WorkerRun}. */
export interface WorkerRunOptions {
  /** The Worker: a new one, or one whose last run stopped cleanly. */
  worker: Worker;
  /** What the run is, for messages ("ring 3", "queue pair 0"). */
  label: string;
  /** Posted to the Worker to start the run. */
  setup: unknown;
  /** What the run holds. */
  resources: RunResources;
  /** The run's control words; Int32 {@linkcode RUN_STOP} is the stop flag. */
  control: Int32Array;
  /** The device context failures are reported to. */
  ctx: DeviceContext;
  /** The ring a failure is reported for (its error fd is written). */
  queue?: number;
  /** Messages other than ready, fatal and stopped. */
  onMessage?: (message: { type: string; [k: string]: unknown }) => void;
  /** How long the Worker may take to answer `ready`, in ms (default 10000). */
  readyTimeoutMs?: number;
  /** Added to the error when the Worker does not answer in time. */
  readyHint?: string;
}

/**
 * A running Worker and what it holds.
 *
 * @example
 * ```ts
 * import { RunResources, WorkerRun } from "@vhost-mdev/sdk/soft";
 * import type { DeviceContext } from "@vhost-mdev/sdk";
 * declare const ctx: DeviceContext;
 * const resources = new RunResources(ctx.memory.lease());
 * const control = new Int32Array(new SharedArrayBuffer(8));
 * const run = await WorkerRun.start({
 *   worker: new Worker(new URL("./my_worker.ts", import.meta.url), { type: "module" }),
 *   label: "ring 0",
 *   setup: { kickFd: resources.hold(ctx.vring(0).kickFd), stopFd: resources.stopFd },
 *   resources,
 *   control,
 *   ctx,
 *   queue: 0,
 * });
 * if (!await run.stop()) console.log("leaked, reported");
 * ```
 */
export class WorkerRun {
  /** The Worker. */
  readonly worker: Worker;
  readonly #resources: RunResources;
  readonly #control: Int32Array;
  readonly #stopped: Promise<void>;
  readonly #label: string;
  readonly #ctx: DeviceContext;
  readonly #queue: number | undefined;
  #dead = false;

  private constructor(o: WorkerRunOptions, stopped: Promise<void>) {
    this.worker = o.worker;
    this.#resources = o.resources;
    this.#control = o.control;
    this.#stopped = stopped;
    this.#label = o.label;
    this.#ctx = o.ctx;
    this.#queue = o.queue;
  }

  /**
   * Post the setup and wait for `ready`.
   *
   * @throws Error when the Worker fails or does not answer in time; the run
   *   is stopped then (its resources released, or kept if it does not stop).
   */
  static async start(o: WorkerRunOptions): Promise<WorkerRun> {
    let serving = false;
    let ready!: () => void, failed!: (e: Error) => void, stopped!: () => void;
    const readyP = new Promise<void>((res, rej) => {
      ready = res;
      failed = rej;
    });
    // A failure before `ready` rejects it; keep the rejection handled until awaited.
    readyP.catch(() => {});
    const stoppedP = new Promise<void>((res) => stopped = res);
    const run = new WorkerRun(o, stoppedP);
    const { ctx, label } = o;
    o.worker.onmessage = (e: MessageEvent<{ type: string; message?: string }>) => {
      const m = e.data;
      switch (m.type) {
        case "ready":
          serving = true;
          ready();
          break;
        case "fatal":
          // Before `ready` this fails the start; after, the ring is dead: tell the core.
          if (serving) ctx.reportError(String(m.message), o.queue);
          else ctx.log.warn(String(m.message));
          failed(new Error(String(m.message)));
          break;
        case "stopped":
          failed(new Error(`${label}: the Worker stopped while starting`));
          stopped();
          break;
        default:
          o.onMessage?.(m as { type: string });
      }
    };
    o.worker.onerror = (e) => {
      e.preventDefault();
      const text = `${label}: the Worker failed: ${e.message}`;
      if (serving) ctx.reportError(text, o.queue);
      else ctx.log.warn(text);
      run.#dead = true;
      failed(new Error(text));
      stopped();
    };
    o.worker.postMessage(o.setup);
    const ms = o.readyTimeoutMs ?? 10000;
    try {
      await withTimeout(readyP, ms, () => {
        throw new Error(
          `${label}: the Worker did not answer within ${ms} ms` +
            (o.readyHint ? ` (${o.readyHint})` : ""),
        );
      });
    } catch (e) {
      await run.stop();
      throw e;
    }
    return run;
  }

  /** Whether the Worker failed (an uncaught error): it cannot run again. */
  get dead(): boolean {
    return this.#dead;
  }

  /**
   * Stop the run: set the stop word, wake the Worker, wait for `stopped`.
   * Confirmed: the resources are released and `true` returned. Not within
   * `timeoutMs`: the Worker is terminated, its resources kept for good, the
   * core told, and `false` returned.
   */
  async stop(timeoutMs = 2000): Promise<boolean> {
    Atomics.store(this.#control, RUN_STOP, 1);
    try {
      eventfdWrite(this.#resources.stopFd, 1);
    } catch {
      // A saturated stop eventfd has already woken the Worker.
    }
    let late = false;
    await withTimeout(this.#stopped, timeoutMs, () => {
      late = true;
    });
    if (late) {
      this.#dead = true;
      this.worker.terminate();
      this.#ctx.reportError(
        `${this.#label}: the Worker did not stop within ${timeoutMs} ms; it was terminated, ` +
          `its guest memory stays mapped and its fds open`,
        this.#queue,
      );
      return false;
    }
    this.#resources.release();
    return true;
  }
}

/** `p`, or what `onTimeout` gives (or throws) after `ms`. */
export function withTimeout<T>(p: Promise<T>, ms: number, onTimeout: () => T): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    p,
    new Promise<T>((resolve, reject) =>
      timer = setTimeout(() => {
        try {
          resolve(onTimeout());
        } catch (e) {
          reject(e);
        }
      }, ms)
    ),
  ]).finally(() => clearTimeout(timer));
}
