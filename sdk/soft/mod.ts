/**
 * The software-device kit: a vendor writes only the device logic. On the
 * main thread {@linkcode softwareDriver} builds a complete `Driver` from the
 * device's identity (ID, features, queue count, config space, options) and
 * the URL of its queue-handler module; that module calls
 * {@linkcode serveQueue} with a handler that serves one request (one
 * descriptor chain, virtio 1.2 §2.7) and returns its used length. The kit
 * does the rest: one Worker per running ring blocking in `poll` on the kick
 * eventfd, split-ring processing with `EVENT_IDX` and indirect descriptors,
 * interrupts, start/stop/suspend/resume with ring positions kept, memory
 * table switches, per-ring counters, malformed chains returned with length
 * 0 and reported, and config reads past the device's struct as zeros. A
 * device that declares `inflight` also gets crash-safe reconnects: the kit
 * marks each request in the frontend's inflight region (`INFLIGHT_SHMFD`)
 * while it is in flight, and a ring that starts on a region a killed
 * backend left resubmits those requests first (`request.resubmitted`).
 *
 * @example A virtio-rng device (virtio 1.2 §5.4) in two modules
 * ```ts
 * // rng.ts: the driver
 * import { bit, VirtioDeviceId, VirtioFeatureBit } from "@vhost-mdev/sdk";
 * import { softwareDriver } from "@vhost-mdev/sdk/soft";
 *
 * export const driver = softwareDriver({
 *   name: "rng",
 *   description: "virtio-rng",
 *   deviceId: VirtioDeviceId.ENTROPY,
 *   features: bit(VirtioFeatureBit.VERSION_1),
 *   numQueues: 1,
 *   maxQueueSize: 256,
 *   worker: new URL("./rng_worker.ts", import.meta.url),
 * });
 * ```
 * ```ts
 * // rng_worker.ts: the device logic
 * import { serveQueue } from "@vhost-mdev/sdk/soft";
 *
 * const random = new Uint8Array(65536);
 * serveQueue((request) => {
 *   for (let at = 0; at < request.writable; at += random.length) {
 *     const n = Math.min(random.length, request.writable - at);
 *     request.write(crypto.getRandomValues(random.subarray(0, n)), at);
 *   }
 *   return request.writable;
 * });
 * ```
 *
 * @module
 */

export {
  CONFIG_SPACE_LIMIT,
  REQUEST_RING_COUNTERS,
  type SoftwareDeviceSpec,
  softwareDriver,
} from "./driver.ts";
export {
  type QueueHandler,
  type QueueInfo,
  serveQueue,
  type ServeQueueOptions,
  type SoftRequest,
} from "./worker.ts";
export { rateLimitedReports, REPORT_BURST, REPORTS_PER_SECOND } from "./rate_limit.ts";
export {
  RUN_STOP,
  RunResources,
  withTimeout,
  WorkerRun,
  type WorkerRunOptions,
} from "./worker_run.ts";
