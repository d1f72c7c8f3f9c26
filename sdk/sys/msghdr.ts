/**
 * Layouts of `struct msghdr`, `struct iovec` and `struct cmsghdr` on x86-64
 * (LP64), and the `CMSG_*` size macros, defined once here.
 *
 * @module
 */

/** `sizeof(struct iovec)`: `{ void *iov_base; size_t iov_len; }`. */
export const IOVEC_SIZE = 16;
/** Offset of `iov_base`. */
export const IOV_BASE = 0;
/** Offset of `iov_len`. */
export const IOV_LEN = 8;

/** `sizeof(struct msghdr)`. */
export const MSGHDR_SIZE = 56;
/** Offset of `msg_name` (pointer). */
export const MSG_NAME = 0;
/** Offset of `msg_namelen` (u32, then 4 bytes of padding). */
export const MSG_NAMELEN = 8;
/** Offset of `msg_iov` (pointer to iovec array). */
export const MSG_IOV = 16;
/** Offset of `msg_iovlen` (size_t). */
export const MSG_IOVLEN = 24;
/** Offset of `msg_control` (pointer to ancillary data). */
export const MSG_CONTROL = 32;
/** Offset of `msg_controllen` (size_t). */
export const MSG_CONTROLLEN = 40;
/** Offset of `msg_flags` (int): the kernel reports `MSG_CTRUNC` here. */
export const MSG_FLAGS = 48;

/** `sizeof(struct cmsghdr)`: the header before each ancillary payload. */
export const CMSGHDR_SIZE = 16;
/** Offset of `cmsg_len` (size_t): header plus payload, without trailing padding. */
export const CMSG_LEN_OFFSET = 0;
/** Offset of `cmsg_level` (int), e.g. `SOL_SOCKET`. */
export const CMSG_LEVEL = 8;
/** Offset of `cmsg_type` (int), e.g. `SCM_RIGHTS`. */
export const CMSG_TYPE = 12;

/** `SOL_SOCKET`: socket-level ancillary data. */
export const SOL_SOCKET = 1;
/** `SCM_RIGHTS`: the payload is an array of `int` fds. */
export const SCM_RIGHTS = 1;
/** Most fds the kernel accepts in one `SCM_RIGHTS` message (`SCM_MAX_FD`). */
export const SCM_MAX_FD = 253;

/** `CMSG_ALIGN(n)`: `n` rounded up to the 8-byte alignment of `size_t`. */
export function cmsgAlign(n: number): number {
  return (n + 7) & ~7;
}

/** `CMSG_LEN(bytes)`: value of `cmsg_len` for a payload of `bytes`. */
export function cmsgLen(bytes: number): number {
  return CMSGHDR_SIZE + bytes;
}

/** `CMSG_SPACE(bytes)`: control-buffer bytes one message with a `bytes` payload takes. */
export function cmsgSpace(bytes: number): number {
  return CMSGHDR_SIZE + cmsgAlign(bytes);
}

/**
 * Control-buffer bytes for one `SCM_RIGHTS` message carrying `fds` fds:
 * `CMSG_SPACE(fds * sizeof(int))`.
 *
 * @example
 * ```ts
 * import { cmsgSpaceForFds } from "@vhost-mdev/sdk/sys";
 * console.log(cmsgSpaceForFds(1)); // 24
 * ```
 */
export function cmsgSpaceForFds(fds: number): number {
  return cmsgSpace(fds * 4);
}
