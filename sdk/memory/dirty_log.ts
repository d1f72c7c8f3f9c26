/**
 * The dirty-page log of live migration (vhost-user `SET_LOG_BASE` with
 * `LOG_SHMFD`): a bitmap shared with the frontend, one bit per 4 KiB page of
 * guest-physical memory, bit `p % 8` of byte `p / 8` for page `p`. While
 * `VHOST_F_LOG_ALL` is acked, the backend sets the bit of every page it
 * writes (buffers and the used ring), and the frontend copies those pages
 * again.
 *
 * The frontend clears bits concurrently (it fetches and clears whole words),
 * so bits are set with `Atomics.or`, a locked read-modify-write on x86 that
 * also works on the non-shared buffer of a mapping.
 *
 * @module
 */

import { MAP_SHARED, type Mapping, mmap, PROT_READ, PROT_WRITE, viewOf } from "../sys/mod.ts";
import { checkMemoryFile, GuestMemoryError } from "./guest_memory.ts";

/** Bytes of guest memory one bit of the log stands for. */
export const DIRTY_LOG_PAGE_SIZE = 4096;

/**
 * Largest log {@linkcode DirtyLog.map} takes by default, in bytes: 128 MiB,
 * the log of 4 TiB of guest memory (the largest table the SDK maps).
 */
export const MAX_DIRTY_LOG_BYTES = 128 * 1024 * 1024;

/** How {@linkcode DirtyLog.map} checks the frontend's log file. */
export interface DirtyLogMapOptions {
  /** Take a file that could shrink (see `MapOptions.allowUnsealed`). */
  allowUnsealed?: boolean;
  /** Largest log in bytes (default {@linkcode MAX_DIRTY_LOG_BYTES}). */
  maxBytes?: number;
}

/** Where a log lives in this process, to view it from a Worker. */
export interface SharedDirtyLog {
  /** Host address of the bitmap's first byte. */
  address: number;
  /** Bitmap size in bytes. */
  size: number;
}

/**
 * A dirty-page bitmap. Marks past the bitmap's end (a frontend that sized
 * the log for less memory than it shared) set nothing and are counted in
 * {@linkcode DirtyLog.outOfRange}.
 *
 * @example
 * ```ts
 * import { DirtyLog } from "@vhost-mdev/sdk";
 * const log = DirtyLog.fromBytes(new Uint8Array(16)); // covers 128 pages
 * log.mark(0x1ff0, 0x20); // touches pages 1 and 2
 * log.isDirty(0x1000); // true
 * ```
 */
export class DirtyLog {
  /** The bitmap. */
  readonly bytes: Uint8Array;
  /** Number of `mark` calls that reached past the end of the bitmap. */
  outOfRange: number = 0;
  readonly #pages: number;
  readonly #mapping: Mapping | null;

  private constructor(bytes: Uint8Array, mapping: Mapping | null) {
    this.bytes = bytes;
    this.#pages = bytes.length * 8;
    this.#mapping = mapping;
  }

  /** A log over `bytes` (tests, or memory the caller owns). */
  static fromBytes(bytes: Uint8Array): DirtyLog {
    return new DirtyLog(bytes, null);
  }

  /**
   * Map the log the frontend sent with `SET_LOG_BASE`: `size` bytes at
   * `offset` of `fd` (the offset need not be page aligned). The file must
   * hold them and be unable to shrink, as guest memory must (a log that
   * shrank under the device would kill the process with SIGBUS). The fd is
   * not closed; {@linkcode DirtyLog.close} unmaps.
   *
   * @throws GuestMemoryError for a zero, unsafe or too large size or offset,
   *   or a file that is too short or could shrink; SysError when `mmap` fails.
   */
  static map(fd: number, size: number, offset = 0, options: DirtyLogMapOptions = {}): DirtyLog {
    const max = options.maxBytes ?? MAX_DIRTY_LOG_BYTES;
    if (!Number.isSafeInteger(size) || size <= 0) {
      throw new GuestMemoryError(`dirty log: size ${size} is not a positive integer`);
    }
    if (size > max) {
      throw new GuestMemoryError(
        `dirty log: size ${size} is more than the ${max} bytes that log the largest guest memory`,
      );
    }
    if (!Number.isSafeInteger(offset) || offset < 0 || offset > max) {
      throw new GuestMemoryError(`dirty log: offset ${offset} is invalid`);
    }
    checkMemoryFile(fd, offset + size, "dirty log", options.allowUnsealed ?? false);
    const mapping = mmap(fd, size + offset, { prot: PROT_READ | PROT_WRITE, flags: MAP_SHARED });
    return new DirtyLog(new Uint8Array(mapping.buffer, offset, size), mapping);
  }

  /** View a log mapped elsewhere in this process (owns nothing). */
  static fromShared(shared: SharedDirtyLog): DirtyLog {
    return new DirtyLog(new Uint8Array(viewOf(shared.address, shared.size)), null);
  }

  /** Describe a mapped log for {@linkcode DirtyLog.fromShared} in a Worker. */
  share(): SharedDirtyLog {
    if (this.#mapping === null || this.#mapping.closed) {
      throw new GuestMemoryError("dirty log: only an open mapped log can be shared");
    }
    return { address: this.#mapping.address + this.bytes.byteOffset, size: this.bytes.length };
  }

  /** Pages the bitmap covers. */
  get pages(): number {
    return this.#pages;
  }

  /** Guest-physical bytes the bitmap covers, from address 0. */
  get coverage(): number {
    return this.#pages * DIRTY_LOG_PAGE_SIZE;
  }

  /**
   * Mark every page touched by `[gpa, gpa + length)`. Datapath call: no
   * allocation. Returns false (and counts) when some page is past the log.
   */
  mark(gpa: number, length: number): boolean {
    if (length <= 0) return true;
    const first = Math.floor(gpa / DIRTY_LOG_PAGE_SIZE);
    const last = Math.floor((gpa + length - 1) / DIRTY_LOG_PAGE_SIZE);
    if (!(first >= 0)) {
      this.outOfRange++;
      return false;
    }
    const bytes = this.bytes;
    const end = last < this.#pages ? last : this.#pages - 1;
    for (let page = first; page <= end; page++) {
      Atomics.or(bytes, Math.floor(page / 8), 1 << (page % 8));
    }
    if (last >= this.#pages) {
      this.outOfRange++;
      return false;
    }
    return true;
  }

  /** Whether the page holding `gpa` is marked. */
  isDirty(gpa: number): boolean {
    const page = Math.floor(gpa / DIRTY_LOG_PAGE_SIZE);
    if (!(page >= 0 && page < this.#pages)) return false;
    return (this.bytes[Math.floor(page / 8)] & (1 << (page % 8))) !== 0;
  }

  /** Unmap a log made by {@linkcode DirtyLog.map}; otherwise nothing. Idempotent. */
  close(): void {
    this.#mapping?.unmap();
  }
}
