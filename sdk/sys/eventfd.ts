/**
 * eventfd: a 64-bit counter in the kernel, the doorbell of vhost (kick and
 * call fds). Writing adds to it; reading returns it and resets it to zero
 * (or, in semaphore mode, returns 1 and decrements). Readable (POLLIN) while
 * non-zero.
 *
 * {@linkcode eventfdRead} and {@linkcode eventfdWrite} are datapath calls:
 * they reuse one 8-byte buffer per thread and make no BigInt.
 *
 * @module
 */

import { Errno, errnoError, SysError } from "./error.ts";
import { fstat, S_IFMT } from "./fd.ts";
import { lastErrno, libc } from "./libc.ts";

/** `eventfd` flag: reads return 1 and decrement instead of draining. */
export const EFD_SEMAPHORE = 1;
/** `eventfd` flag: non-blocking fd. */
export const EFD_NONBLOCK = 0o4000;
/** `eventfd` flag: close on exec (always set here). */
export const EFD_CLOEXEC = 0o2000000;

/** Largest value the counter holds (2^64 - 2), as far as a `number` can say it. */
const COUNTER_MAX = Number.MAX_SAFE_INTEGER;
const TWO_32 = 0x1_0000_0000;

const counterBytes = new Uint8Array(8);
const counterWords = new Uint32Array(counterBytes.buffer);

/** Options of {@linkcode eventfd}. */
export interface EventfdOptions {
  /** Reads fail with EAGAIN instead of waiting while the counter is zero. */
  nonBlocking?: boolean;
  /** Semaphore mode (`EFD_SEMAPHORE`). */
  semaphore?: boolean;
}

/**
 * A new eventfd (close-on-exec) with counter `initial` (default 0).
 *
 * @example
 * ```ts
 * import { close, eventfd, eventfdRead, eventfdWrite } from "@vhost-mdev/sdk/sys";
 * const fd = eventfd(0, { nonBlocking: true });
 * eventfdWrite(fd, 2);
 * eventfdWrite(fd);
 * console.log(eventfdRead(fd)); // 3
 * close(fd);
 * ```
 */
export function eventfd(initial = 0, options: EventfdOptions = {}): number {
  if (!Number.isInteger(initial) || initial < 0 || initial > 0xffffffff) {
    throw new SysError("eventfd", Errno.EINVAL, `(initial value ${initial})`);
  }
  const flags = EFD_CLOEXEC | (options.nonBlocking ? EFD_NONBLOCK : 0) |
    (options.semaphore ? EFD_SEMAPHORE : 0);
  const fd = libc().eventfd(initial, flags);
  if (fd < 0) throw errnoError("eventfd");
  return fd;
}

/**
 * Read and reset the counter; returns its value (exact up to 2^53).
 *
 * @throws SysError EAGAIN when the counter is zero on a non-blocking eventfd.
 */
export function eventfdRead(fd: number): number {
  const c = libc();
  for (;;) {
    const n = c.read(fd, counterBytes, 8n);
    if (n === 8) return counterWords[0] + counterWords[1] * TWO_32;
    if (n >= 0) {
      throw new SysError("read", Errno.EINVAL, `fd ${fd} (eventfd read returned ${n} bytes)`);
    }
    const errno = lastErrno();
    if (errno !== Errno.EINTR) throw new SysError("read", errno, `fd ${fd}`);
  }
}

/**
 * Add `value` (default 1) to the counter, waking readers.
 *
 * @throws SysError EINVAL when `value` is not a non-negative safe integer;
 *   EAGAIN when the counter would overflow on a non-blocking eventfd.
 */
export function eventfdWrite(fd: number, value = 1): void {
  if (!Number.isSafeInteger(value) || value < 0 || value > COUNTER_MAX) {
    throw new SysError("write", Errno.EINVAL, `fd ${fd} (eventfd value ${value})`);
  }
  if (!addToCounter(fd, value)) throw new SysError("write", Errno.EAGAIN, `fd ${fd}`);
}

/**
 * Signal an eventfd (add 1) from a datapath or the control plane. On a
 * non-blocking eventfd whose counter is saturated the kernel answers EAGAIN:
 * the reader has an event pending already, so that is not a failure and
 * this returns `false`; `true` when the counter was incremented.
 *
 * @throws SysError for any other failure (EBADF, EINVAL).
 */
export function eventfdSignal(fd: number): boolean {
  return addToCounter(fd, 1);
}

/** Add `value` to the counter; false when it would overflow (EAGAIN), retrying EINTR. */
function addToCounter(fd: number, value: number): boolean {
  counterWords[0] = value % TWO_32;
  counterWords[1] = Math.floor(value / TWO_32);
  const c = libc();
  for (;;) {
    const n = c.write(fd, counterBytes, 8n);
    if (n === 8) return true;
    if (n >= 0) {
      throw new SysError("write", Errno.EINVAL, `fd ${fd} (eventfd write took ${n} bytes)`);
    }
    const errno = lastErrno();
    if (errno === Errno.EAGAIN) return false;
    if (errno !== Errno.EINTR) throw new SysError("write", errno, `fd ${fd}`);
  }
}

/**
 * What `fd` refers to, as the kernel names it in `/proc/self/fd`:
 * `anon_inode:[eventfd]`, `socket:[1234]`, `pipe:[5678]`, `/memfd:x (deleted)`,
 * a path. For error messages and kind checks; needs read access to `/proc`.
 *
 * @throws SysError EBADF when `fd` is not open.
 */
export function describeFd(fd: number): string {
  if (!Number.isInteger(fd) || fd < 0) throw new SysError("readlink", Errno.EBADF, `fd ${fd}`);
  try {
    return Deno.readLinkSync(`/proc/self/fd/${fd}`);
  } catch {
    throw new SysError("readlink", Errno.EBADF, `fd ${fd}`);
  }
}

const zero = new Uint8Array(8);

/**
 * Whether `fd` is an eventfd (kick, call and error fds of vhost must be).
 * Decided without `/proc` (which may be absent, or another system's in a
 * chroot): the file must be an anonymous inode (no type bits in its mode,
 * as eventfd, timerfd, signalfd, epoll) that takes an 8-byte write of 0,
 * which only eventfd does. Adding 0 changes no counter and never blocks.
 */
export function isEventfd(fd: number): boolean {
  let mode: number;
  try {
    mode = fstat(fd).mode;
  } catch {
    return false;
  }
  if ((mode & S_IFMT) !== 0) return false;
  return libc().write(fd, zero, 8n) === 8;
}

/**
 * Whether eventfd `fd` is in semaphore mode (`EFD_SEMAPHORE`: each read
 * takes 1 from the counter), from `/proc/self/fdinfo`; `null` when the
 * kernel does not say (before Linux 6.3, or no `/proc`). A kick fd in that
 * mode with a large counter reads as endless kicks.
 */
export function eventfdIsSemaphore(fd: number): boolean | null {
  let info: string;
  try {
    info = Deno.readTextFileSync(`/proc/self/fdinfo/${fd}`);
  } catch {
    return null;
  }
  const m = /^eventfd-semaphore:\s*(\d+)/m.exec(info);
  return m ? m[1] !== "0" : null;
}
