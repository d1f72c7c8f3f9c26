/**
 * The kick relay, the RFC's `handle_vq_kick`: a Worker blocks in `poll` on
 * the running rings' kick eventfds and reports each kick, which the device
 * turns into `ops.notify(q)`. Blocking in a Worker keeps the kick-to-notify
 * latency near that of C (see DESIGN.md: a Promise over `poll` costs tens of
 * microseconds more).
 *
 * Kicks are coalesced per ring: while one kick of a ring waits for the main
 * thread, further kicks of that ring only keep it pending, so a frontend
 * that kicks without pause costs the main thread at most one message per
 * ring per turn, and the queue between the threads is bounded by the
 * number of rings.
 *
 * A kick of a ring with a {@linkcode Doorbell} never reaches the main
 * thread: the Worker stores the doorbell's value itself as soon as `poll`
 * returns, then drains the kick (a hardware driver's virtio-pci notify
 * register, virtio 1.2 §4.1.4.4), so the kick costs one wake-up in place of
 * two. {@linkcode KickRelay.doorbellsRung} counts those stores.
 *
 * @module
 */

import { close, dup, eventfd, eventfdWrite } from "../sys/mod.ts";
import { checkDoorbell, type Doorbell } from "./doorbell.ts";

/** How long {@linkcode KickRelay.stop} waits for the Worker, in ms. */
const STOP_TIMEOUT_MS = 2000;

/** A kick fd to watch and the ring it belongs to. */
export interface WatchedKick {
  /** Ring index reported on a kick. */
  queue: number;
  /** The frontend's kick eventfd (not owned by the relay). */
  fd: number;
  /**
   * When set, a kick of this ring is relayed by the Worker storing this
   * doorbell (no message, no `onKick` call). The memory at its address must
   * stay mapped until {@linkcode KickRelay.stop} has resolved: the Worker
   * may store there until then (the device core stops the relay before the
   * driver's `stop` and `close`). Checked with `checkDoorbell`.
   */
  doorbell?: Doorbell;
}

/** Messages the relay Worker posts. */
export type KickRelayMessage =
  | { type: "kick"; slot: number; queue: number; time: number }
  | { type: "stopped" }
  | { type: "error"; message: string };

/** One Worker relaying kicks of a set of rings until stopped. */
export class KickRelay {
  #worker: Worker;
  #stopFd: number;
  #pending: Int32Array;
  /** Per watched ring: doorbell stores the Worker made (mod 2^32). */
  #rung: Int32Array;
  #queues: number[];
  /** The Worker's own duplicates of the kick fds: their numbers stay valid until it confirms it stopped. */
  #held: number[];
  #onError: (message: string) => void;
  #stopped: Promise<void>;
  #stopping: Promise<boolean> | null = null;
  #hasDoorbells: boolean;

  /**
   * Start relaying kicks on `kicks`: rings with a doorbell are rung by the
   * Worker, the others reported to `onKick`.
   *
   * @param onKick called on the main thread for a kick of a ring without a
   *   doorbell, with the time the Worker saw it
   *   (`performance.timeOrigin + performance.now()` there).
   * @param onError receives errors the Worker hits (a closed fd, say).
   * @throws RangeError when a doorbell is malformed (nothing is started).
   */
  constructor(
    kicks: readonly WatchedKick[],
    onKick: (queue: number, time: number) => void,
    onError: (message: string) => void = () => {},
  ) {
    for (const k of kicks) if (k.doorbell !== undefined) checkDoorbell(k.doorbell, k.queue);
    this.#onError = onError;
    this.#held = [];
    this.#queues = kicks.map((k) => k.queue);
    this.#hasDoorbells = kicks.some((k) => k.doorbell !== undefined);
    try {
      for (const k of kicks) this.#held.push(dup(k.fd));
      this.#stopFd = eventfd(0, { nonBlocking: true });
    } catch (e) {
      for (const fd of this.#held) close(fd);
      throw e;
    }
    const watched: WatchedKick[] = kicks.map((k, i) => ({
      queue: k.queue,
      fd: this.#held[i],
      ...(k.doorbell ? { doorbell: { ...k.doorbell } } : {}),
    }));
    // One flag per watched ring: 1 while a kick message is on its way.
    const pending = new Int32Array(new SharedArrayBuffer(4 * Math.max(1, kicks.length)));
    this.#pending = pending;
    this.#rung = new Int32Array(new SharedArrayBuffer(4 * Math.max(1, kicks.length)));
    this.#worker = new Worker(new URL("./kick_relay_worker.ts", import.meta.url).href, {
      type: "module",
    });
    let resolve!: () => void;
    this.#stopped = new Promise<void>((r) => resolve = r);
    this.#worker.onmessage = (e: MessageEvent<KickRelayMessage>) => {
      const m = e.data;
      if (m.type === "kick") {
        // Clear first: a kick arriving during onKick posts again.
        Atomics.store(pending, m.slot, 0);
        onKick(m.queue, m.time);
      } else if (m.type === "error") onError(m.message);
      else if (m.type === "stopped") resolve();
    };
    this.#worker.onerror = (e) => {
      e.preventDefault();
      onError(e.message);
      resolve();
    };
    this.#worker.postMessage({
      kicks: watched,
      stopFd: this.#stopFd,
      pending: pending.buffer,
      rung: this.#rung.buffer,
    });
  }

  /**
   * How many times the Worker has stored the doorbell of ring `queue`
   * (summed over the watched entries of that ring; counts wrap at 2^32). One
   * per kick, plus one when further kicks came in before the kick was
   * drained (see `kick_relay_worker.ts`). 0 for a ring without a doorbell or
   * not watched.
   */
  doorbellsRung(queue: number): number {
    let n = 0;
    for (let i = 0; i < this.#queues.length; i++) {
      if (this.#queues[i] === queue) n += Atomics.load(this.#rung, i) >>> 0;
    }
    return n;
  }

  /** Kick messages on their way to the main thread now (at most one per ring). */
  get pendingKicks(): number {
    let n = 0;
    for (let i = 0; i < this.#pending.length; i++) n += Atomics.load(this.#pending, i);
    return n;
  }

  /**
   * Stop the Worker and wait until it no longer touches the kick fds and
   * doorbells. A Worker that does not confirm in time is terminated and its
   * fds are left open (reported through `onError`), so their numbers are
   * never reused under a thread that may still poll them.
   *
   * Every call returns the same promise.
   *
   * @returns true when the Worker confirmed it stopped; false when it did
   *   not, in which case its thread may still store to the doorbells: their
   *   memory must then stay mapped.
   */
  stop(): Promise<boolean> {
    return this.#stopping ??= this.#stop();
  }

  async #stop(): Promise<boolean> {
    eventfdWrite(this.#stopFd, 1);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const confirmed = await Promise.race([
      this.#stopped.then(() => true),
      new Promise<boolean>((r) => timer = setTimeout(() => r(false), STOP_TIMEOUT_MS)),
    ]);
    clearTimeout(timer);
    this.#worker.terminate();
    if (!confirmed) {
      this.#onError(
        `the kick relay did not stop within ${STOP_TIMEOUT_MS} ms; its fds stay open` +
          (this.#hasDoorbells ? " and its doorbells must stay mapped" : ""),
      );
      return false;
    }
    close(this.#stopFd);
    for (const fd of this.#held) close(fd);
    return true;
  }
}
