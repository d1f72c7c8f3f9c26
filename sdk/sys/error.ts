/**
 * {@linkcode SysError}: the one error type of every failed system call, with
 * the call's name and errno as number and symbolic code.
 *
 * @module
 */

import { ERRNO_TABLE } from "./errno_table.ts";
import { lastErrno } from "./libc.ts";

/**
 * The symbolic name of an errno value, e.g. `errnoName(11) === "EAGAIN"`;
 * `"E<n>"` for a number Linux does not define.
 *
 * @example
 * ```ts
 * import { errnoName } from "@vhost-mdev/sdk/sys";
 * console.log(errnoName(2)); // "ENOENT"
 * ```
 */
export function errnoName(n: number): string {
  return ERRNO_TABLE[n]?.code ?? `E${n}`;
}

/** The C library's description of an errno value, e.g. `"No such file or directory"`. */
export function errnoDescription(n: number): string {
  return ERRNO_TABLE[n]?.description ?? `Unknown error ${n}`;
}

/**
 * A system call failed. `code` is the errno's symbolic name, the stable thing
 * to branch on.
 *
 * @example
 * ```ts
 * import { eventfd, eventfdRead, SysError } from "@vhost-mdev/sdk/sys";
 * const fd = eventfd(0, { nonBlocking: true });
 * try {
 *   eventfdRead(fd);
 * } catch (e) {
 *   if (!(e instanceof SysError && e.code === "EAGAIN")) throw e;
 * }
 * ```
 */
export class SysError extends Error {
  /** The failed call, e.g. `"recvmsg"`. */
  readonly syscall: string;
  /** The errno value, e.g. `11`. */
  readonly errno: number;
  /** The errno's symbolic name, e.g. `"EAGAIN"`. */
  readonly code: string;

  /**
   * An error for a call that failed with `errno`.
   *
   * @param syscall The failed call's name.
   * @param errno The errno value it reported.
   * @param detail What the call was applied to (a path, an fd), for the message.
   */
  constructor(syscall: string, errno: number, detail?: string) {
    const code = errnoName(errno);
    const what = detail === undefined ? syscall : `${syscall} ${detail}`;
    super(`${what}: ${code} (${errnoDescription(errno)})`);
    this.name = "SysError";
    this.syscall = syscall;
    this.errno = errno;
    this.code = code;
  }
}

/** A {@linkcode SysError} for `syscall` from this thread's current errno. */
export function errnoError(syscall: string, detail?: string): SysError {
  return new SysError(syscall, lastErrno(), detail);
}

/** Named errno values used by the SDK. */
export const Errno = {
  /** Operation not permitted. */
  EPERM: 1,
  /** No such file or directory. */
  ENOENT: 2,
  /** Interrupted system call. */
  EINTR: 4,
  /** Bad file descriptor. */
  EBADF: 9,
  /** Resource temporarily unavailable (would block). */
  EAGAIN: 11,
  /** Cannot allocate memory. */
  ENOMEM: 12,
  /** Permission denied. */
  EACCES: 13,
  /** Bad address. */
  EFAULT: 14,
  /** Device or resource busy. */
  EBUSY: 16,
  /** Invalid argument. */
  EINVAL: 22,
  /** Inappropriate ioctl for device. */
  ENOTTY: 25,
  /** Broken pipe. */
  EPIPE: 32,
  /** File name too long. */
  ENAMETOOLONG: 36,
  /** Connection reset by peer. */
  ECONNRESET: 104,
  /** Connection refused. */
  ECONNREFUSED: 111,
} as const;
