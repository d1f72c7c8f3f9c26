/**
 * UNIX stream sockets and fd passing.
 *
 * Every socket is made close-on-exec (`SOCK_CLOEXEC`, `accept4`,
 * `MSG_CMSG_CLOEXEC` on received fds), so no fd leaks into a spawned
 * process. `sendMsg` uses `MSG_NOSIGNAL`: writing to a closed peer fails
 * with EPIPE instead of killing the process with SIGPIPE.
 *
 * @module
 */

import { Errno, errnoError, SysError } from "./error.ts";
import { lastErrno, libc } from "./libc.ts";
import {
  CMSG_LEN_OFFSET,
  CMSG_LEVEL,
  CMSG_TYPE,
  cmsgAlign,
  CMSGHDR_SIZE,
  cmsgLen,
  cmsgSpaceForFds,
  IOV_BASE,
  IOV_LEN,
  IOVEC_SIZE,
  MSG_CONTROL,
  MSG_CONTROLLEN,
  MSG_FLAGS,
  MSG_IOV,
  MSG_IOVLEN,
  MSG_NAME,
  MSG_NAMELEN,
  MSGHDR_SIZE,
  SCM_MAX_FD,
  SCM_RIGHTS,
  SOL_SOCKET,
} from "./msghdr.ts";
import { getU64, setPointer, setU64, stablePointer } from "./pointer.ts";
import { AF_UNIX, sockaddrUn } from "./sockaddr.ts";

/** Socket type: reliable byte stream. */
export const SOCK_STREAM = 1;
/** `socket`/`accept4` flag: the new fd is non-blocking. */
export const SOCK_NONBLOCK = 0o4000;
/** `socket`/`accept4` flag: the new fd is closed on exec. */
export const SOCK_CLOEXEC = 0o2000000;

/** `shutdown`: no more receptions. */
export const SHUT_RD = 0;
/** `shutdown`: no more transmissions (the peer reads end of file). */
export const SHUT_WR = 1;
/** `shutdown`: neither. */
export const SHUT_RDWR = 2;

/** `msg_flags`: ancillary data was cut short; fds that did not fit were closed by the kernel. */
export const MSG_CTRUNC = 0x8;
/** `msg_flags`: a datagram was longer than the buffer. */
export const MSG_TRUNC = 0x20;
/** `sendmsg`/`recvmsg` flag: do not block for this call only. */
export const MSG_DONTWAIT = 0x40;
/** `sendmsg` flag: EPIPE instead of SIGPIPE on a closed peer. */
export const MSG_NOSIGNAL = 0x4000;
/** `recvmsg` flag: received fds are close-on-exec. */
export const MSG_CMSG_CLOEXEC = 0x40000000;

/** Default `maxFds` of {@linkcode recvMsg}. */
export const DEFAULT_MAX_FDS = 8;

/** Options of {@linkcode unixSocket} and {@linkcode accept}. */
export interface SocketOptions {
  /** Make the fd non-blocking (calls fail with EAGAIN instead of waiting). */
  nonBlocking?: boolean;
}

/** What {@linkcode recvMsg} got. */
export interface ReceivedMessage {
  /** Bytes placed in the buffer; 0 means the peer closed (for a non-empty buffer). */
  bytes: number;
  /** Every fd received, in order; the caller owns (and must close) them. */
  fds: number[];
  /** The kernel dropped fds that did not fit in `maxFds` (`MSG_CTRUNC`). */
  ctrunc: boolean;
}

/**
 * The header, iovec and control buffers of one `sendmsg`/`recvmsg`, made
 * once per thread: `msg_iov` and `msg_control` point into them for good.
 */
class MessageScratch {
  readonly header = new Uint8Array(MSGHDR_SIZE);
  readonly headerView = new DataView(this.header.buffer);
  readonly iovec = new Uint8Array(IOVEC_SIZE);
  readonly iovecView = new DataView(this.iovec.buffer);
  readonly control = new Uint8Array(cmsgSpaceForFds(SCM_MAX_FD));
  readonly controlView = new DataView(this.control.buffer);
  readonly controlFds = new Int32Array(this.control.buffer);

  constructor() {
    const h = this.headerView;
    setPointer(h, MSG_NAME, null);
    h.setUint32(MSG_NAMELEN, 0, true);
    setPointer(h, MSG_IOV, stablePointer(this.iovec));
    setU64(h, MSG_IOVLEN, 1);
    setPointer(h, MSG_CONTROL, stablePointer(this.control));
  }

  /** Point the single iovec at `buf`. */
  setBuffer(buf: Uint8Array): void {
    setPointer(this.iovecView, IOV_BASE, buf.length === 0 ? null : stablePointer(buf));
    setU64(this.iovecView, IOV_LEN, buf.length);
  }
}

let scratch: MessageScratch | undefined;

function messageScratch(): MessageScratch {
  return scratch ??= new MessageScratch();
}

/**
 * A new AF_UNIX stream socket (close-on-exec).
 *
 * @example
 * ```ts
 * import { close, connectUnix, unixSocket } from "@vhost-mdev/sdk/sys";
 * const fd = unixSocket();
 * try {
 *   connectUnix(fd, "/tmp/vhost-net0.sock");
 * } finally {
 *   close(fd);
 * }
 * ```
 */
export function unixSocket(options: SocketOptions = {}): number {
  const type = SOCK_STREAM | SOCK_CLOEXEC | (options.nonBlocking ? SOCK_NONBLOCK : 0);
  const fd = libc().socket(AF_UNIX, type, 0);
  if (fd < 0) throw errnoError("socket", "AF_UNIX SOCK_STREAM");
  return fd;
}

/**
 * Bind `fd` to a filesystem path (the file must not exist).
 *
 * @throws SysError ENAMETOOLONG when the path does not fit in `sun_path`
 *   (107 bytes plus NUL); EADDRINUSE when the path exists.
 */
export function bindUnix(fd: number, path: string): void {
  const addr = sockaddrUn(path, "bind");
  if (libc().bind(fd, addr, addr.length) < 0) throw errnoError("bind", path);
}

/** Mark a bound socket as accepting connections; `backlog` pending ones at most. */
export function listen(fd: number, backlog = 128): void {
  if (libc().listen(fd, backlog) < 0) throw errnoError("listen", `fd ${fd}`);
}

/**
 * Take one pending connection (`accept4`, close-on-exec); returns its fd.
 *
 * @throws SysError EAGAIN when none is pending on a non-blocking listener.
 */
export function accept(fd: number, options: SocketOptions = {}): number {
  const flags = SOCK_CLOEXEC | (options.nonBlocking ? SOCK_NONBLOCK : 0);
  const c = libc();
  for (;;) {
    const conn = c.accept4(fd, null, null, flags);
    if (conn >= 0) return conn;
    const errno = lastErrno();
    if (errno !== Errno.EINTR) throw new SysError("accept4", errno, `fd ${fd}`);
  }
}

/**
 * Connect `fd` to the socket at `path`.
 *
 * @throws SysError ENOENT when nothing is at `path`; ECONNREFUSED when no
 *   one listens there; ENAMETOOLONG when the path does not fit in `sun_path`.
 */
export function connectUnix(fd: number, path: string): void {
  const addr = sockaddrUn(path, "connect");
  if (libc().connect(fd, addr, addr.length) < 0) throw errnoError("connect", path);
}

/**
 * Two connected AF_UNIX stream sockets (both blocking, close-on-exec).
 *
 * @example
 * ```ts
 * import { close, recvMsg, sendMsg, socketPair } from "@vhost-mdev/sdk/sys";
 * const [a, b] = socketPair();
 * sendMsg(a, new Uint8Array([1, 2, 3]));
 * const got = recvMsg(b, new Uint8Array(16)); // { bytes: 3, fds: [], ctrunc: false }
 * close(a);
 * close(b);
 * ```
 */
export function socketPair(): [number, number] {
  const pair = new Int32Array(2);
  const bytes = new Uint8Array(pair.buffer);
  if (libc().socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, bytes) < 0) {
    throw errnoError("socketpair", "AF_UNIX SOCK_STREAM");
  }
  return [pair[0], pair[1]];
}

/** Shut down one or both directions of a connection (default both). */
export function shutdown(fd: number, how: number = SHUT_RDWR): void {
  if (libc().shutdown(fd, how) < 0) throw errnoError("shutdown", `fd ${fd}`);
}

/**
 * Send `data` with `fds` attached as one `SCM_RIGHTS` message
 * (`MSG_NOSIGNAL`). Returns the bytes sent, which on a stream socket may be
 * fewer than `data.length`; the fds travel with the first byte sent. The fds
 * stay open here: the receiver gets duplicates.
 *
 * @throws SysError EINVAL when fds are given with no data (a stream socket
 *   would drop them), when more than 253 fds are given, or when one is not
 *   a valid fd number; EAGAIN when a non-blocking socket is full; EPIPE
 *   when the peer is gone.
 */
export function sendMsg(fd: number, data: Uint8Array, fds: readonly number[] = []): number {
  const s = messageScratch();
  const h = s.headerView;
  if (fds.length > 0) {
    if (data.length === 0) {
      throw new SysError("sendmsg", Errno.EINVAL, `fd ${fd} (fds need at least one data byte)`);
    }
    if (fds.length > SCM_MAX_FD) {
      throw new SysError(
        "sendmsg",
        Errno.EINVAL,
        `fd ${fd} (${fds.length} fds; at most ${SCM_MAX_FD})`,
      );
    }
    const cv = s.controlView;
    setU64(cv, CMSG_LEN_OFFSET, cmsgLen(fds.length * 4));
    cv.setInt32(CMSG_LEVEL, SOL_SOCKET, true);
    cv.setInt32(CMSG_TYPE, SCM_RIGHTS, true);
    const base = CMSGHDR_SIZE / 4;
    for (let i = 0; i < fds.length; i++) {
      const passed = fds[i];
      if (!Number.isInteger(passed) || passed < 0 || passed > 0x7fffffff) {
        throw new SysError(
          "sendmsg",
          Errno.EINVAL,
          `fd ${fd} (fds[${i}] = ${passed} is not an fd)`,
        );
      }
      s.controlFds[base + i] = passed;
    }
    // Zero the padding up to CMSG_SPACE.
    const used = cmsgLen(fds.length * 4);
    const space = cmsgSpaceForFds(fds.length);
    s.control.fill(0, used, space);
    setU64(h, MSG_CONTROLLEN, space);
  } else {
    setU64(h, MSG_CONTROLLEN, 0);
  }
  h.setInt32(MSG_FLAGS, 0, true);
  s.setBuffer(data);
  const c = libc();
  for (;;) {
    const n = c.sendmsg(fd, s.header, MSG_NOSIGNAL);
    if (n >= 0) return n;
    const errno = lastErrno();
    if (errno !== Errno.EINTR) throw new SysError("sendmsg", errno, `fd ${fd}`);
  }
}

/**
 * Receive into `buf` with up to `maxFds` fds (`MSG_CMSG_CLOEXEC`). Every
 * fd the kernel delivered is returned, from every control message, even
 * when the data is short; this function closes nothing. `ctrunc` is true
 * when the sender attached more fds than fit (the kernel closed those).
 *
 * @param maxFds Room for this many fds (0..253, default 8).
 * @throws SysError EAGAIN when a non-blocking socket has nothing queued.
 *
 * @example
 * ```ts
 * import { recvMsg } from "@vhost-mdev/sdk/sys";
 * declare const sock: number; // a connected AF_UNIX socket
 * const { bytes, fds, ctrunc } = recvMsg(sock, new Uint8Array(12), 8);
 * ```
 */
export function recvMsg(
  fd: number,
  buf: Uint8Array,
  maxFds: number = DEFAULT_MAX_FDS,
): ReceivedMessage {
  if (!Number.isInteger(maxFds) || maxFds < 0 || maxFds > SCM_MAX_FD) {
    throw new SysError("recvmsg", Errno.EINVAL, `fd ${fd} (maxFds ${maxFds}; 0..${SCM_MAX_FD})`);
  }
  const s = messageScratch();
  const h = s.headerView;
  const capacity = maxFds === 0 ? 0 : cmsgSpaceForFds(maxFds);
  s.setBuffer(buf);
  const c = libc();
  let n: number;
  for (;;) {
    // The kernel rewrites msg_controllen and msg_flags on every call.
    setU64(h, MSG_CONTROLLEN, capacity);
    h.setInt32(MSG_FLAGS, 0, true);
    n = c.recvmsg(fd, s.header, MSG_CMSG_CLOEXEC);
    if (n >= 0) break;
    const errno = lastErrno();
    if (errno !== Errno.EINTR) throw new SysError("recvmsg", errno, `fd ${fd}`);
  }
  const flags = h.getInt32(MSG_FLAGS, true);
  const controlLength = Math.min(getU64(h, MSG_CONTROLLEN), capacity);
  const fds: number[] = [];
  const cv = s.controlView;
  let off = 0;
  while (off + CMSGHDR_SIZE <= controlLength) {
    const len = getU64(cv, off + CMSG_LEN_OFFSET);
    if (len < CMSGHDR_SIZE || off + len > controlLength) break;
    if (
      cv.getInt32(off + CMSG_LEVEL, true) === SOL_SOCKET &&
      cv.getInt32(off + CMSG_TYPE, true) === SCM_RIGHTS
    ) {
      const count = Math.floor((len - CMSGHDR_SIZE) / 4);
      for (let i = 0; i < count; i++) fds.push(cv.getInt32(off + CMSGHDR_SIZE + 4 * i, true));
    }
    off += cmsgAlign(len);
  }
  return { bytes: n, fds, ctrunc: (flags & MSG_CTRUNC) !== 0 };
}
