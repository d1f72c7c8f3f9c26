/**
 * The backing store of a blk device as one ring's Worker uses it: a regular
 * file or raw block device opened on its own fd, read and written at byte
 * offsets through a page-aligned bounce buffer (so `O_DIRECT` works), made
 * durable with `fdatasync`, and deallocated or zeroed with `fallocate`.
 * Every failure is a `SysError` naming the call and its errno.
 *
 * @module
 */

import {
  close,
  FALLOC_FL_KEEP_SIZE,
  FALLOC_FL_PUNCH_HOLE,
  FALLOC_FL_ZERO_RANGE,
  fallocate,
  fdatasync,
  type Mapping,
  mmapAnonymous,
  O_CLOEXEC,
  O_DIRECT,
  O_RDONLY,
  O_RDWR,
  open,
  pread,
  pwrite,
  SysError,
} from "@vhost-mdev/sdk/sys";

/** errno EIO: the file ended before the range did. */
const EIO = 5;

/** Bytes of the bounce buffer: the most one `pread` / `pwrite` moves. */
export const BOUNCE_BYTES = 1 << 20;

/** How {@linkcode BlockFile.open} opens the backing store. */
export interface BlockFileOptions {
  /** Open read-only (`O_RDONLY`). */
  readonly: boolean;
  /** Open with `O_DIRECT`. */
  direct: boolean;
}

/** A backing file or block device, opened for one Worker. */
export class BlockFile {
  /** The open fd. */
  readonly fd: number;
  /** The page-aligned bounce buffer, {@linkcode BOUNCE_BYTES} long. */
  readonly bounce: Uint8Array;
  readonly #mapping: Mapping;
  #closed = false;

  private constructor(fd: number, mapping: Mapping) {
    this.fd = fd;
    this.#mapping = mapping;
    this.bounce = new Uint8Array(mapping.buffer);
  }

  /**
   * Open `path` and map the bounce buffer.
   *
   * @throws SysError from `open` (ENOENT, EACCES, EINVAL for `O_DIRECT` on a
   *   file system without it) or `mmap`.
   */
  static open(path: string, options: BlockFileOptions): BlockFile {
    const flags = (options.readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC |
      (options.direct ? O_DIRECT : 0);
    const fd = open(path, flags);
    try {
      return new BlockFile(fd, mmapAnonymous(BOUNCE_BYTES));
    } catch (e) {
      close(fd);
      throw e;
    }
  }

  /**
   * Fill `bounce[0, length)` from byte `offset` of the file, retrying short
   * reads.
   *
   * @throws SysError for a failed read, or EIO when the file ends first (it
   *   shrank under the device).
   */
  readInto(offset: number, length: number): Uint8Array {
    const buf = this.bounce.subarray(0, length);
    let done = 0;
    while (done < length) {
      const n = pread(this.fd, buf.subarray(done), offset + done);
      if (n === 0) {
        throw new SysError("pread", EIO, `fd ${this.fd}: end of file at ${offset + done}`);
      }
      done += n;
    }
    return buf;
  }

  /**
   * Write `bounce[0, length)` at byte `offset` of the file, retrying short
   * writes.
   *
   * @throws SysError for a failed write (ENOSPC, EIO, EFBIG, ...).
   */
  writeFrom(offset: number, length: number): void {
    const buf = this.bounce.subarray(0, length);
    let done = 0;
    while (done < length) done += pwrite(this.fd, buf.subarray(done), offset + done);
  }

  /** `fdatasync` the file (virtio 1.2 §5.2.6: `VIRTIO_BLK_T_FLUSH`). */
  flush(): void {
    fdatasync(this.fd);
  }

  /**
   * Deallocate `[offset, offset + length)` (`FALLOC_FL_PUNCH_HOLE`); it
   * reads as zeros afterwards. Returns false when the file system cannot
   * punch holes (a discard is only a hint, virtio 1.2 §5.2.6).
   */
  discard(offset: number, length: number): boolean {
    try {
      fallocate(this.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length);
      return true;
    } catch (e) {
      if (notSupported(e)) return false;
      throw e;
    }
  }

  /**
   * Make `[offset, offset + length)` read as zeros: deallocated when
   * `unmap` allows it, else `FALLOC_FL_ZERO_RANGE`, else by writing zeros.
   */
  writeZeroes(offset: number, length: number, unmap: boolean): void {
    if (unmap && this.discard(offset, length)) return;
    try {
      fallocate(this.fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, offset, length);
      return;
    } catch (e) {
      if (!notSupported(e)) throw e;
    }
    this.bounce.fill(0, 0, Math.min(BOUNCE_BYTES, length));
    for (let at = 0; at < length; at += BOUNCE_BYTES) {
      this.writeFrom(offset + at, Math.min(BOUNCE_BYTES, length - at));
    }
  }

  /** Close the fd and unmap the bounce buffer. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#mapping.unmap();
    close(this.fd);
  }
}

/** Whether `e` says the file system does not support the `fallocate` mode. */
function notSupported(e: unknown): boolean {
  return e instanceof SysError && (e.code === "EOPNOTSUPP" || e.code === "ENOTSUP");
}
