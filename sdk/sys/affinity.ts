/**
 * CPU pinning of the calling thread (`sched_setaffinity(2)` with pid 0),
 * for datapath Workers that should stay on given CPUs as DPDK's lcores do.
 *
 * @module
 */

import { SysError } from "./error.ts";
import { lastErrno, libc } from "./libc.ts";

/** Bytes of the CPU mask passed (1024 CPUs, glibc's `cpu_set_t`). */
const MASK_BYTES = 128;

/**
 * Run the calling thread (the main thread, or the Worker that calls it)
 * only on `cpus`.
 *
 * @throws RangeError for an empty list or a CPU outside 0..1023; SysError
 *   (EINVAL) when none of the CPUs is online or allowed.
 *
 * @example
 * ```ts
 * import { pinThread } from "@vhost-mdev/sdk/sys";
 * pinThread([0]);
 * ```
 */
export function pinThread(cpus: readonly number[]): void {
  if (cpus.length === 0) throw new RangeError("pinThread: no CPU given");
  const mask = new Uint8Array(MASK_BYTES);
  for (const c of cpus) {
    if (!Number.isInteger(c) || c < 0 || c >= MASK_BYTES * 8) {
      throw new RangeError(`pinThread: CPU ${c} is not in 0..${MASK_BYTES * 8 - 1}`);
    }
    mask[c >> 3] |= 1 << (c & 7);
  }
  if (libc().sched_setaffinity(0, BigInt(MASK_BYTES), mask) !== 0) {
    throw new SysError("sched_setaffinity", lastErrno(), `CPUs ${cpus.join(",")}`);
  }
}
