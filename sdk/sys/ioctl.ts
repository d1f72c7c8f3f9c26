/**
 * `ioctl` with an integer or a pointer argument.
 *
 * @module
 */

import { errnoError } from "./error.ts";
import { libc } from "./libc.ts";

/** Bytes queued for reading on a socket, pipe or file (`int *` argument). */
export const FIONREAD = 0x541b;
/** Set/clear non-blocking mode (`int *` argument). */
export const FIONBIO = 0x5421;
/** Set close-on-exec on the fd (argument ignored). */
export const FIOCLEX = 0x5451;
/** Clear close-on-exec on the fd (argument ignored). */
export const FIONCLEX = 0x5450;

/**
 * `ioctl(fd, request, arg)`. A `number` argument is passed by value (an
 * integer, or an address from `pointerOf`); a `Uint8Array` is
 * passed as a pointer to its bytes, which the kernel may read and write.
 * Returns the call's non-negative result. `request` is taken as the
 * unsigned 32-bit number the `_IOC` macros build.
 *
 * @throws SysError with the kernel's errno, e.g. ENOTTY for a request the
 *   fd does not know.
 *
 * @example Bytes waiting on a socket
 * ```ts
 * import { FIONREAD, ioctl } from "@vhost-mdev/sdk/sys";
 * declare const sock: number;
 * const count = new Int32Array(1);
 * ioctl(sock, FIONREAD, new Uint8Array(count.buffer));
 * console.log(count[0]);
 * ```
 */
export function ioctl(fd: number, request: number, arg: number | Uint8Array = 0): number {
  const c = libc();
  const r = typeof arg === "number"
    ? c.ioctl(fd, BigInt(request >>> 0), BigInt(arg))
    : c.ioctl_buffer(fd, BigInt(request >>> 0), arg);
  if (r < 0) throw errnoError("ioctl", `fd ${fd} request 0x${request.toString(16)}`);
  return r;
}
