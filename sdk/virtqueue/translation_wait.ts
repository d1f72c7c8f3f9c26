/**
 * A queue waiting for an IOTLB translation (a device behind a vIOMMU). A
 * chain whose buffer has no translation yet is not the guest's fault: the
 * queue gives its available entry back, asks the frontend for the
 * translation (an IOTLB miss through the shared queue of
 * {@linkcode IotlbView.requestMiss}) and pops nothing until the IOTLB
 * changes; the device core kicks the ring when it does. A translation that
 * has not come after {@linkcode IOTLB_MISS_TIMEOUT_MS} fails the chain as
 * `unmapped` (counted and reported like any hostile chain), so a guest that
 * posts buffers at addresses it never maps stalls only its own ring, and
 * only for that long.
 *
 * @module
 */

import type { GuestMemory } from "../memory/guest_memory.ts";
import type { IotlbView } from "../memory/iotlb.ts";

/** How long a chain waits for a missing translation before it fails as `unmapped`. */
export const IOTLB_MISS_TIMEOUT_MS = 1000;

/** One queue's wait for a translation (for queue implementations). */
export class TranslationWait {
  /** Misses this queue asked for. */
  misses = 0;
  readonly #iotlb: IotlbView | null;
  #generation = -1;
  #since = -1;

  /**
   * Wait on `memory`'s IOTLB (none: never waits).
   *
   * @param memory The queue's memory.
   */
  constructor(memory: GuestMemory) {
    this.#iotlb = memory.iotlb;
  }

  /** The IOTLB's generation before a walk (0 without one). */
  snapshot(): number {
    return this.#iotlb === null ? 0 : this.#iotlb.generation;
  }

  /**
   * Whether the queue must not pop yet: it missed and neither did the IOTLB
   * change since nor the deadline pass.
   */
  waiting(): boolean {
    if (this.#generation < 0) return false;
    if (
      this.#iotlb!.generation !== this.#generation ||
      performance.now() - this.#since >= IOTLB_MISS_TIMEOUT_MS
    ) {
      this.#generation = -1;
      return false;
    }
    return true;
  }

  /**
   * A walk that began at IOTLB `generation` missed `memory.missAddress`:
   * true to give the entry back and wait (the miss is asked for), false when
   * this chain has waited its full time (fail it as `unmapped`).
   */
  missed(memory: GuestMemory, generation: number): boolean {
    const now = performance.now();
    if (this.#since < 0) {
      this.#since = now;
    } else if (now - this.#since >= IOTLB_MISS_TIMEOUT_MS) {
      this.#since = -1;
      return false;
    }
    this.#generation = generation;
    this.misses++;
    this.#iotlb!.requestMiss(memory.missAddress, memory.missPerm);
    return true;
  }

  /** A chain was popped whole: the next miss starts a new wait. */
  done(): void {
    this.#since = -1;
  }
}
