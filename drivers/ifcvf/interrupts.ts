/**
 * MSI-X vectors for the IFC VF. The best case is one vector per queue plus
 * one for config changes (as DPDK's ifcvf lays them out: vector 0 config,
 * vector q+1 queue q); then each queue's vector is wired straight to the
 * frontend's call eventfd and an interrupt reaches the frontend without
 * passing through this process. A device with fewer vectors gets shared
 * ones: all queues on one vector (and config on another, or on the same
 * one), wired to an eventfd of the driver that fans each interrupt out to
 * every running queue's call fd. A spurious interrupt is harmless: the
 * frontend finds nothing new in that used ring.
 *
 * @module
 */

import {
  close,
  eventfd,
  eventfdRead,
  eventfdWrite,
  pollAsync,
  POLLIN,
  SysError,
} from "@vhost-mdev/sdk/sys";

/** How vectors are assigned. */
export interface VectorPlan {
  /** `per-queue`: q -> q+1; `shared`: queues -> 1; `single`: everything -> 0. */
  mode: "per-queue" | "shared" | "single";
  /** Vectors to enable. */
  count: number;
  /** Vector of config-change interrupts. */
  config: number;
  /** Vector of queue `q`. */
  queue(q: number): number;
}

/**
 * Assign vectors for `numQueues` queues on a device with `tableSize` MSI-X
 * vectors.
 *
 * @throws Error when the device has no MSI-X.
 */
export function planVectors(numQueues: number, tableSize: number): VectorPlan {
  if (tableSize >= numQueues + 1) {
    return { mode: "per-queue", count: numQueues + 1, config: 0, queue: (q) => q + 1 };
  }
  if (tableSize >= 2) return { mode: "shared", count: 2, config: 0, queue: () => 1 };
  if (tableSize === 1) return { mode: "single", count: 1, config: 0, queue: () => 0 };
  throw new Error(
    "the device has no MSI-X vectors: the driver needs MSI-X to interrupt the frontend",
  );
}

/** One eventfd the fan-out watches and what to do when it fires. */
export interface FanoutSource {
  /** Non-blocking eventfd wired to a vector (owned by the fan-out). */
  fd: number;
  /** Called once per wake-up. */
  onFire(): void;
}

/**
 * Watches eventfds wired to shared vectors (and the config vector) and
 * calls their handlers. Runs on the event loop (`poll` on a pool thread):
 * shared vectors are the degraded path; per-queue vectors never pass here.
 */
export class InterruptFanout {
  readonly #sources: FanoutSource[];
  readonly #stopFd: number;
  readonly #done: Promise<void>;
  #stopped = false;

  /** Start watching `sources`; their fds are closed by {@linkcode InterruptFanout.stop}. */
  constructor(sources: FanoutSource[], onError: (e: unknown) => void) {
    this.#sources = sources;
    this.#stopFd = eventfd(0, { nonBlocking: true });
    this.#done = this.#run().catch(onError);
  }

  /** Make a non-blocking eventfd for a source. */
  static eventfd(): number {
    return eventfd(0, { nonBlocking: true });
  }

  async #run(): Promise<void> {
    const fds = [...this.#sources.map((s) => ({ fd: s.fd, events: POLLIN })), {
      fd: this.#stopFd,
      events: POLLIN,
    }];
    while (!this.#stopped) {
      const revents = await pollAsync(fds, -1);
      if (revents[fds.length - 1] & POLLIN) break;
      this.#sources.forEach((s, i) => {
        if (!(revents[i] & POLLIN)) return;
        try {
          eventfdRead(s.fd);
        } catch (e) {
          if (!(e instanceof SysError && e.code === "EAGAIN")) throw e;
          return;
        }
        s.onFire();
      });
    }
  }

  /** Stop watching, wait for the watcher to finish, close the fds. */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    eventfdWrite(this.#stopFd, 1);
    await this.#done;
    close(this.#stopFd);
    for (const s of this.#sources) close(s.fd);
  }
}
