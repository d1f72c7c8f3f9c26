/**
 * A device's side of the vhost-user IOTLB (`VIRTIO_F_ACCESS_PLATFORM`): the
 * {@linkcode Iotlb} its rings and Workers translate through, the updates
 * and invalidations the frontend sends, and the misses the device asks the
 * frontend for on the backend channel.
 *
 * Misses are bounded three ways, so that a guest that keeps faulting can
 * neither flood the frontend nor grow this process's memory:
 *
 * - Workers post misses into the IOTLB's fixed shared queue
 *   (`MISS_QUEUE_SLOTS` slots; more are dropped and counted);
 * - the same page and access is asked for at most once per
 *   {@linkcode MISS_REPEAT_MS}, and at most {@linkcode MAX_PENDING_MISSES}
 *   pages are awaited at a time;
 * - at most {@linkcode MISS_RATE} misses a second reach the frontend (a
 *   token bucket of {@linkcode MISS_BURST}).
 *
 * A dropped miss is not lost for good: the ring that wanted it asks again
 * when woken, and fails the chain as `unmapped` once
 * {@linkcode IOTLB_MISS_TIMEOUT_MS} have passed.
 *
 * @module
 */

import { Iotlb, type IotlbEntry, type IotlbMiss } from "../memory/iotlb.ts";
import { IOTLB_MISS_TIMEOUT_MS } from "../virtqueue/translation_wait.ts";

/** The same page and access is asked for at most once in this many ms. */
export const MISS_REPEAT_MS = 100;
/** Pages awaited from the frontend at one time, at most. */
export const MAX_PENDING_MISSES = 256;
/** Misses a second sent to the frontend, at most. */
export const MISS_RATE = 2000;
/** Misses sent back to back before the rate applies. */
export const MISS_BURST = 256;

const PAGE = 4096;

/** What a {@linkcode DeviceIotlb} needs from its device. */
export interface DeviceIotlbHooks {
  /** Send a miss to the frontend; false when there is no backend channel to send it on. */
  sendMiss(iova: number, perm: number): boolean;
  /** Wake the rings that may wait for a translation (kick them). */
  wake(): void;
}

/** What the device counted (see {@linkcode DeviceIotlb.stats}). */
export interface IotlbCounters {
  /** `IOTLB_MSG` updates received. */
  updates: number;
  /** `IOTLB_MSG` invalidations received. */
  invalidations: number;
  /** Misses sent to the frontend. */
  misses: number;
  /** Misses not sent: repeated within {@linkcode MISS_REPEAT_MS}, over a bound, or no channel. */
  missesSuppressed: number;
}

/** One device's IOTLB, its miss pump and counters. */
export class DeviceIotlb {
  /** The translation cache (shared with Workers through leases). */
  readonly table: Iotlb;
  /** What happened so far. */
  readonly counters: IotlbCounters = {
    updates: 0,
    invalidations: 0,
    misses: 0,
    missesSuppressed: 0,
  };
  readonly #hooks: DeviceIotlbHooks;
  readonly #pending = new Map<number, number>(); // page * 4 + perm -> when asked
  #tokens = MISS_BURST;
  #refilled = performance.now();
  #closed = false;
  #deadline: ReturnType<typeof setTimeout> | undefined;
  /** When the rings must be woken: the timeout after the latest ask. */
  #wakeAt = 0;

  /**
   * Make an empty IOTLB and start draining its misses.
   *
   * @param hooks How to reach the frontend and the rings.
   * @param options `evict`: whether a full table forgets its oldest entry
   *   (false when a driver mirrors it into hardware DMA mappings);
   *   `capacity`: entries kept at most (default {@linkcode Iotlb}'s).
   */
  constructor(hooks: DeviceIotlbHooks, options: { evict: boolean; capacity?: number }) {
    this.#hooks = hooks;
    this.table = new Iotlb(options);
    this.#pump().catch(() => {
      // The pump only ends when the device closes.
    });
  }

  /** Counters for `deviceStats` (`iotlb_*` keys). */
  stats(): Record<string, number> {
    const c = this.counters;
    return {
      iotlb_entries: this.table.size,
      iotlb_updates: c.updates,
      iotlb_invalidations: c.invalidations,
      iotlb_misses: c.misses,
      iotlb_misses_suppressed: c.missesSuppressed + this.table.droppedMisses,
      iotlb_evictions: this.table.evictions,
    };
  }

  /**
   * An `IOTLB_MSG` update. Returns what left the table to make room (the
   * entries it overlapped, an evicted one), or null when the table held
   * exactly this entry already (a repeated answer changes nothing).
   *
   * @throws RangeError for an entry the table refuses (see {@linkcode Iotlb.update}).
   */
  update(entry: IotlbEntry): IotlbEntry[] | null {
    const same = this.table.entryAt(entry.iova);
    const gone = same !== null && same.iova === entry.iova && same.size === entry.size &&
        same.uaddr === entry.uaddr && same.perm === entry.perm
      ? null
      : this.table.update(entry);
    this.counters.updates++;
    const first = Math.floor(entry.iova / PAGE),
      last = Math.floor((entry.iova + entry.size - 1) / PAGE);
    if (this.#pending.size > 0) {
      for (const key of this.#pending.keys()) {
        const page = Math.floor(key / 4);
        if (page >= first && page <= last) this.#pending.delete(key);
      }
    }
    this.#hooks.wake();
    return gone;
  }

  /** An `IOTLB_MSG` invalidation: what was removed (whole) and the parts kept. */
  invalidate(iova: number, size: number): { removed: IotlbEntry[]; kept: IotlbEntry[] } {
    this.counters.invalidations++;
    return this.table.invalidateDetailed(iova, size);
  }

  /**
   * Ask the frontend for a translation of `iova` (ring addresses the core
   * translates, and what Workers posted), within the bounds of the module
   * documentation.
   */
  ask(miss: IotlbMiss): void {
    if (this.#closed) return;
    const now = performance.now();
    // Whatever becomes of this miss (sent, or suppressed below), the ring
    // that wants it gives up after the timeout: wake the rings then, in
    // case no update comes.
    this.#wakeLater(now);
    const key = Math.floor(miss.iova / PAGE) * 4 + (miss.perm & 3);
    const asked = this.#pending.get(key);
    if (asked !== undefined && now - asked < MISS_REPEAT_MS) {
      this.counters.missesSuppressed++;
      return;
    }
    if (this.#pending.size >= MAX_PENDING_MISSES) this.#prune(now);
    this.#tokens = Math.min(MISS_BURST, this.#tokens + (now - this.#refilled) * MISS_RATE / 1000);
    this.#refilled = now;
    if (this.#pending.size >= MAX_PENDING_MISSES || this.#tokens < 1) {
      this.counters.missesSuppressed++;
      return;
    }
    if (!this.#hooks.sendMiss(miss.iova, miss.perm)) {
      this.counters.missesSuppressed++;
      return;
    }
    this.#tokens--;
    this.#pending.set(key, now);
    this.counters.misses++;
  }

  /**
   * Wake the rings {@linkcode IOTLB_MISS_TIMEOUT_MS} after `now` (one timer
   * for the device, moved on to the latest ask's deadline).
   */
  #wakeLater(now: number): void {
    this.#wakeAt = now + IOTLB_MISS_TIMEOUT_MS + 20;
    if (this.#deadline !== undefined) return;
    const fire = () => {
      this.#deadline = undefined;
      if (this.#closed) return;
      this.#hooks.wake();
      const left = this.#wakeAt - performance.now();
      if (left > 1) this.#deadline = setTimeout(fire, left);
    };
    this.#deadline = setTimeout(fire, this.#wakeAt - now);
  }

  /** Stop the pump and the timers. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#deadline);
    this.#deadline = undefined;
    // Wake the pump so it sees the device closed.
    this.table.interruptWait();
  }

  /** Forget asks older than {@linkcode MISS_REPEAT_MS}. */
  #prune(now: number): void {
    for (const [key, at] of this.#pending) {
      if (now - at >= MISS_REPEAT_MS) this.#pending.delete(key);
    }
  }

  /** Drain what Workers post, for as long as the device lives. */
  async #pump(): Promise<void> {
    let seen = this.table.missSignal;
    while (!this.#closed) {
      await this.table.waitForMiss(seen, 1000);
      seen = this.table.missSignal;
      const misses = this.table.takeMisses();
      if (this.#closed) return;
      for (const miss of misses) this.ask(miss);
    }
  }
}
