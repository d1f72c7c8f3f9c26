/**
 * File descriptors: open, close, read, write, stat and flags.
 *
 * `read` and `write` do not allocate and retry on EINTR; `close` is never
 * retried (on Linux the fd is released even when close reports an error).
 *
 * @module
 */

import { cString } from "./cstring.ts";
import { Errno, errnoError, SysError } from "./error.ts";
import { lastErrno, libc } from "./libc.ts";
import { getU64 } from "./pointer.ts";

/** `open` flag: read only. */
export const O_RDONLY = 0;
/** `open` flag: write only. */
export const O_WRONLY = 1;
/** `open` flag: read and write. */
export const O_RDWR = 2;
/** `open` flag: create the file if missing (give a `mode`). */
export const O_CREAT = 0o100;
/** `open` flag: truncate to zero length. */
export const O_TRUNC = 0o1000;
/** `open` and `fcntl` flag: calls on the fd fail with EAGAIN instead of blocking. */
export const O_NONBLOCK = 0o4000;
/** `open` flag: close the fd in programs started with exec. */
export const O_CLOEXEC = 0o2000000;
/**
 * `open` flag (x86-64): transfer straight between the buffer and the device,
 * bypassing the page cache; buffers, offsets and lengths must be aligned to
 * the device's logical block size.
 */
export const O_DIRECT = 0o40000;

/** `fallocate` mode: keep the file size even when the range extends past it. */
export const FALLOC_FL_KEEP_SIZE = 0x01;
/** `fallocate` mode: deallocate the range (it reads as zeros); needs `FALLOC_FL_KEEP_SIZE`. */
export const FALLOC_FL_PUNCH_HOLE = 0x02;
/** `fallocate` mode: make the range read as zeros, keeping it allocated. */
export const FALLOC_FL_ZERO_RANGE = 0x10;

/** `fcntl` command: read the fd flags (`FD_CLOEXEC`). */
export const F_GETFD = 1;
/** `fcntl` command: set the fd flags. */
export const F_SETFD = 2;
/** `fcntl` command: read the file status flags (`O_NONBLOCK`, access mode). */
export const F_GETFL = 3;
/** `fcntl` command: set the file status flags. */
export const F_SETFL = 4;
/** fd flag: close on exec. */
export const FD_CLOEXEC = 1;
/** `open` flag: a handle to the path only, usable for nothing but fd-level calls. */
export const O_PATH = 0o10000000;
/** `fcntl` command: duplicate onto the lowest free fd with close-on-exec set. */
export const F_DUPFD_CLOEXEC = 1030;
/** `fcntl` command: add seals to a memfd (`F_SEAL_*`). */
export const F_ADD_SEALS = 1033;
/** `fcntl` command: read a memfd's seals. */
export const F_GET_SEALS = 1034;
/** Seal: no more seals may be added. */
export const F_SEAL_SEAL = 0x1;
/** Seal: the file cannot shrink (so a mapping of it never loses pages: no SIGBUS). */
export const F_SEAL_SHRINK = 0x2;
/** Seal: the file cannot grow. */
export const F_SEAL_GROW = 0x4;
/** Seal: the contents cannot be written. */
export const F_SEAL_WRITE = 0x8;

/** Mode bits of {@linkcode FileStatus.mode}: the file type mask. */
export const S_IFMT = 0o170000;
/** File type: socket. */
export const S_IFSOCK = 0o140000;
/** File type: regular file (also a memfd). */
export const S_IFREG = 0o100000;
/** File type: character device (e.g. a VFIO group). */
export const S_IFCHR = 0o020000;

/** What `fstat` reports about an open file. */
export interface FileStatus {
  /** Size in bytes (a memfd's length after `ftruncate`). */
  size: number;
  /** Type and permission bits (`mode & S_IFMT` is the type). */
  mode: number;
  /** Device of the file system holding the file. */
  dev: number;
  /** Inode number: with `dev`, identifies the file. */
  ino: number;
  /** For a device node, the device it stands for. */
  rdev: number;
}

// struct stat on x86-64: st_dev@0 st_ino@8 st_nlink@16 st_mode@24 ...
// st_rdev@40 st_size@48, 144 bytes in all.
const STAT_SIZE = 144;
const statBuffer = new Uint8Array(STAT_SIZE);
const statView = new DataView(statBuffer.buffer);

// The bigint of the last length passed to read/write, so a loop with a
// steady buffer size makes none.
let readLength = -1;
let readLengthArg = 0n;
let writeLength = -1;
let writeLengthArg = 0n;

/**
 * Close `fd`.
 *
 * @throws SysError EBADF when `fd` is not open.
 */
export function close(fd: number): void {
  if (libc().close(fd) < 0) throw errnoError("close", `fd ${fd}`);
}

/**
 * Read up to `buf.length` bytes; returns the count (0 at end of file or
 * when the peer closed a socket). Does not allocate.
 *
 * @throws SysError EAGAIN when a non-blocking fd has nothing to read.
 */
export function read(fd: number, buf: Uint8Array): number {
  const c = libc();
  if (buf.length !== readLength) {
    readLength = buf.length;
    readLengthArg = BigInt(readLength);
  }
  for (;;) {
    const n = c.read(fd, buf, readLengthArg);
    if (n >= 0) return n;
    const errno = lastErrno();
    if (errno !== Errno.EINTR) throw new SysError("read", errno, `fd ${fd}`);
  }
}

/**
 * Write up to `buf.length` bytes; returns the count written. Does not allocate.
 *
 * @throws SysError EAGAIN when a non-blocking fd cannot take more now.
 */
export function write(fd: number, buf: Uint8Array): number {
  const c = libc();
  if (buf.length !== writeLength) {
    writeLength = buf.length;
    writeLengthArg = BigInt(writeLength);
  }
  for (;;) {
    const n = c.write(fd, buf, writeLengthArg);
    if (n >= 0) return n;
    const errno = lastErrno();
    if (errno !== Errno.EINTR) throw new SysError("write", errno, `fd ${fd}`);
  }
}

/**
 * Read up to `buf.length` bytes at file offset `offset` without moving the
 * file position (e.g. a VFIO device's config region); returns the count.
 * Retries on EINTR.
 */
export function pread(fd: number, buf: Uint8Array, offset: number): number {
  if (!Number.isSafeInteger(offset) || offset < 0) {
    throw new SysError("pread", Errno.EINVAL, `fd ${fd} (offset ${offset})`);
  }
  const c = libc();
  for (;;) {
    const n = c.pread(fd, buf, BigInt(buf.length), BigInt(offset));
    if (n >= 0) return n;
    const errno = lastErrno();
    if (errno !== Errno.EINTR) throw new SysError("pread", errno, `fd ${fd} offset ${offset}`);
  }
}

/**
 * Write up to `buf.length` bytes at file offset `offset` without moving the
 * file position; returns the count. Retries on EINTR.
 */
export function pwrite(fd: number, buf: Uint8Array, offset: number): number {
  if (!Number.isSafeInteger(offset) || offset < 0) {
    throw new SysError("pwrite", Errno.EINVAL, `fd ${fd} (offset ${offset})`);
  }
  const c = libc();
  for (;;) {
    const n = c.pwrite(fd, buf, BigInt(buf.length), BigInt(offset));
    if (n >= 0) return n;
    const errno = lastErrno();
    if (errno !== Errno.EINTR) throw new SysError("pwrite", errno, `fd ${fd} offset ${offset}`);
  }
}

/**
 * Write the file's data (and the metadata needed to read it back) to
 * stable storage. Retries on EINTR.
 *
 * @throws SysError EIO when writeback failed, ENOSPC, EROFS or EINVAL for a
 *   file that cannot be synced.
 */
export function fdatasync(fd: number): void {
  const c = libc();
  for (;;) {
    if (c.fdatasync(fd) === 0) return;
    const errno = lastErrno();
    if (errno !== Errno.EINTR) throw new SysError("fdatasync", errno, `fd ${fd}`);
  }
}

/**
 * `fallocate(fd, mode, offset, length)`: allocate, deallocate
 * ({@linkcode FALLOC_FL_PUNCH_HOLE}) or zero ({@linkcode FALLOC_FL_ZERO_RANGE})
 * a byte range of a file or block device. Retries on EINTR.
 *
 * @throws SysError EOPNOTSUPP when the file system does not support `mode`,
 *   ENOSPC, EINVAL for a bad range.
 */
export function fallocate(fd: number, mode: number, offset: number, length: number): void {
  if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length)) {
    throw new SysError("fallocate", Errno.EINVAL, `fd ${fd} (offset ${offset} length ${length})`);
  }
  const c = libc();
  for (;;) {
    if (c.fallocate(fd, mode, BigInt(offset), BigInt(length)) === 0) return;
    const errno = lastErrno();
    if (errno !== Errno.EINTR) {
      throw new SysError(
        "fallocate",
        errno,
        `fd ${fd} mode 0x${mode.toString(16)} ` +
          `offset ${offset} length ${length}`,
      );
    }
  }
}

/**
 * Open a file; returns the fd.
 *
 * @param flags e.g. `O_RDWR | O_CLOEXEC`.
 * @param mode Permission bits for a file made by `O_CREAT`.
 *
 * @example
 * ```ts
 * import { close, O_CLOEXEC, O_RDONLY, open } from "@vhost-mdev/sdk/sys";
 * const fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
 * close(fd);
 * ```
 */
export function open(path: string, flags: number, mode = 0): number {
  const fd = libc().open(cString(path, "open"), flags, mode);
  if (fd < 0) throw errnoError("open", path);
  return fd;
}

/** Size, type and identity of an open file. */
export function fstat(fd: number): FileStatus {
  if (libc().fstat(fd, statBuffer) < 0) throw errnoError("fstat", `fd ${fd}`);
  return {
    dev: getU64(statView, 0),
    ino: getU64(statView, 8),
    mode: statView.getUint32(24, true),
    rdev: getU64(statView, 40),
    size: getU64(statView, 48),
  };
}

/**
 * `fcntl(fd, cmd, arg)` with an integer argument; returns the call's result.
 *
 * @example
 * ```ts
 * import { F_GETFD, FD_CLOEXEC, fcntl } from "@vhost-mdev/sdk/sys";
 * const closeOnExec = (fcntl(3, F_GETFD) & FD_CLOEXEC) !== 0;
 * ```
 */
export function fcntl(fd: number, cmd: number, arg = 0): number {
  const r = libc().fcntl(fd, cmd, BigInt(arg));
  if (r < 0) throw errnoError("fcntl", `fd ${fd} cmd ${cmd}`);
  return r;
}

/**
 * A new fd (close-on-exec) for the same open file as `fd`, for keeping a
 * file open past its owner's `close`.
 */
export function dup(fd: number): number {
  return fcntl(fd, F_DUPFD_CLOEXEC, 0);
}

/**
 * The seals of a memfd (`F_SEAL_*` bits), or `null` for a file that has no
 * seals at all (a file on a disk file system). A memfd made without
 * `MFD_ALLOW_SEALING` reports `F_SEAL_SEAL` alone: it can never be sealed.
 *
 * @throws SysError for another failure (EBADF).
 */
export function getSeals(fd: number): number | null {
  const r = libc().fcntl(fd, F_GET_SEALS, 0n);
  if (r >= 0) return r;
  const errno = lastErrno();
  if (errno === Errno.EINVAL) return null;
  throw new SysError("fcntl", errno, `fd ${fd} F_GET_SEALS`);
}

/**
 * Add `seals` (`F_SEAL_*` bits) to a memfd.
 *
 * @throws SysError EPERM when the memfd has `F_SEAL_SEAL`; EINVAL when the
 *   file cannot be sealed; EBUSY for `F_SEAL_WRITE` while writable mappings exist.
 */
export function addSeals(fd: number, seals: number): void {
  if (libc().fcntl(fd, F_ADD_SEALS, BigInt(seals)) < 0) {
    throw errnoError("fcntl", `fd ${fd} F_ADD_SEALS 0x${seals.toString(16)}`);
  }
}

/** Turn `O_NONBLOCK` on or off for `fd`. */
export function setNonBlocking(fd: number, on: boolean): void {
  const flags = fcntl(fd, F_GETFL);
  const next = on ? flags | O_NONBLOCK : flags & ~O_NONBLOCK;
  if (next !== flags) fcntl(fd, F_SETFL, next);
}

/**
 * How many fds this process has open (entries of `/proc/self/fd`, not
 * counting the one used to list them). For leak checks in tests; needs
 * read permission for `/proc/self/fd`.
 */
export function openFdCount(): number {
  let n = 0;
  for (const _ of Deno.readDirSync("/proc/self/fd")) n++;
  return n - 1;
}
