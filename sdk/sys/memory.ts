/**
 * Shared memory: memfds, `mmap`, and {@linkcode Mapping}, an owned mapping
 * whose bytes are a plain `ArrayBuffer`.
 *
 * A mapping's memory is outside the JavaScript heap and outlives nothing by
 * itself: after {@linkcode Mapping.unmap} its `buffer` is detached, so views
 * made from it read as empty instead of touching unmapped memory. Views made
 * elsewhere with {@linkcode viewOf} (in a Worker, say) are not detached: the
 * owner must stop those users before unmapping.
 *
 * @module
 */

import { cString } from "./cstring.ts";
import { Errno, errnoError, SysError } from "./error.ts";
import { lastErrno, libc } from "./libc.ts";
import { addressOf, pointerAt, stablePointer } from "./pointer.ts";

/** Pages may not be accessed. */
export const PROT_NONE = 0;
/** Pages may be read. */
export const PROT_READ = 1;
/** Pages may be written. */
export const PROT_WRITE = 2;
/** Writes are shared with every other mapping of the same file. */
export const MAP_SHARED = 1;
/** Writes are private copies. */
export const MAP_PRIVATE = 2;
/** Place the mapping exactly at the given address. */
export const MAP_FIXED = 0x10;
/** Not backed by a file (fd -1). */
export const MAP_ANONYMOUS = 0x20;
/** Do not reserve swap for the mapping. */
export const MAP_NORESERVE = 0x4000;
/** Fault the pages in now. */
export const MAP_POPULATE = 0x8000;

/** `memfd_create` flag: close on exec (always set here). */
export const MFD_CLOEXEC = 1;
/** `memfd_create` flag: the memfd accepts seals (`F_ADD_SEALS`). */
export const MFD_ALLOW_SEALING = 2;

const SC_PAGESIZE = 30;
const MAP_FAILED = 0xffff_ffff_ffff_ffffn;

/** Options of {@linkcode memfdCreate}. */
export interface MemfdOptions {
  /** Allow seals to be added later (`MFD_ALLOW_SEALING`). */
  allowSealing?: boolean;
}

/** Options of {@linkcode mmap}. */
export interface MmapOptions {
  /** Offset into the file, a multiple of the page size (default 0). */
  offset?: number;
  /** Protection (default `PROT_READ | PROT_WRITE`). */
  prot?: number;
  /** Flags (default `MAP_SHARED`). */
  flags?: number;
}

let pageSizeCache = 0;

/** The system page size in bytes (4096 on x86-64). */
export function pageSize(): number {
  if (pageSizeCache === 0) pageSizeCache = Number(libc().sysconf(SC_PAGESIZE));
  return pageSizeCache;
}

/**
 * An anonymous memory file (close-on-exec), e.g. guest memory to share with
 * another process by passing the fd. It starts empty: size it with
 * {@linkcode ftruncate}.
 *
 * @param name Shown in `/proc/<pid>/fd` as `memfd:<name>` (at most 249 bytes).
 *
 * @example
 * ```ts
 * import { close, ftruncate, memfdCreate, mmap } from "@vhost-mdev/sdk/sys";
 * const fd = memfdCreate("guest-ram");
 * ftruncate(fd, 1 << 20);
 * const mapping = mmap(fd, 1 << 20);
 * new Uint8Array(mapping.buffer)[0] = 1;
 * mapping.unmap();
 * close(fd);
 * ```
 */
export function memfdCreate(name: string, options: MemfdOptions = {}): number {
  const flags = MFD_CLOEXEC | (options.allowSealing ? MFD_ALLOW_SEALING : 0);
  const fd = libc().memfd_create(cString(name, "memfd_create"), flags);
  if (fd < 0) throw errnoError("memfd_create", name);
  return fd;
}

/**
 * Set a file's size to `size` bytes (new bytes read as zero).
 *
 * @throws SysError EINVAL when `size` is not a non-negative safe integer.
 */
export function ftruncate(fd: number, size: number): void {
  if (!Number.isSafeInteger(size) || size < 0) {
    throw new SysError("ftruncate", Errno.EINVAL, `fd ${fd} (size ${size})`);
  }
  if (libc().ftruncate(fd, BigInt(size)) < 0) throw errnoError("ftruncate", `fd ${fd}`);
}

/**
 * A range of this process's address space from `mmap`, owned by this
 * object until {@linkcode Mapping.unmap}. Also `using`-disposable.
 */
export class Mapping {
  /** Start address (fits a `number`: user-space addresses are below 2^47). */
  readonly address: number;
  /** Length in bytes. */
  readonly length: number;
  #buffer: ArrayBuffer;
  #closed = false;

  /**
   * Adopt an existing mapping: {@linkcode Mapping.unmap} will `munmap` it.
   * Normally made by {@linkcode mmap} or {@linkcode mmapAnonymous}.
   */
  constructor(address: number, length: number) {
    if (!Number.isSafeInteger(address) || address <= 0) {
      throw new RangeError(`mapping address ${address} is not a valid address`);
    }
    if (!Number.isSafeInteger(length) || length <= 0) {
      throw new RangeError(`mapping length ${length} is not a positive integer`);
    }
    this.address = address;
    this.length = length;
    this.#buffer = Deno.UnsafePointerView.getArrayBuffer(pointerAt(address)!, length);
  }

  /**
   * The whole mapping as a plain `ArrayBuffer` (no copy). Detached after
   * {@linkcode Mapping.unmap}.
   */
  get buffer(): ArrayBuffer {
    return this.#buffer;
  }

  /** Whether {@linkcode Mapping.unmap} has run. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Unmap; detaches {@linkcode Mapping.buffer}. Idempotent. */
  unmap(): void {
    if (this.#closed) return;
    if (libc().munmap(pointerAt(this.address), BigInt(this.length)) < 0) {
      throw errnoError("munmap", `0x${this.address.toString(16)}+${this.length}`);
    }
    this.#closed = true;
    // Moving the contents out detaches the old buffer and every view on it;
    // the moved-out buffer is dropped (its release does not touch memory).
    this.#buffer.transfer();
  }

  /** Same as {@linkcode Mapping.unmap}. */
  [Symbol.dispose](): void {
    this.unmap();
  }
}

/**
 * Map `length` bytes of `fd` (shared, read-write unless told otherwise).
 *
 * @throws SysError EINVAL for a zero, unsafe or misaligned length/offset;
 *   ENODEV when `fd` cannot be mapped; ENOMEM when out of address space.
 */
export function mmap(fd: number, length: number, options: MmapOptions = {}): Mapping {
  const offset = options.offset ?? 0;
  const prot = options.prot ?? (PROT_READ | PROT_WRITE);
  const flags = options.flags ?? MAP_SHARED;
  return mapRange(fd, length, offset, prot, flags);
}

/** A private, zero-filled, read-write anonymous mapping of `length` bytes. */
export function mmapAnonymous(length: number): Mapping {
  return mapRange(-1, length, 0, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
}

function mapRange(
  fd: number,
  length: number,
  offset: number,
  prot: number,
  flags: number,
): Mapping {
  if (!Number.isSafeInteger(length) || length <= 0) {
    throw new SysError("mmap", Errno.EINVAL, `fd ${fd} (length ${length})`);
  }
  if (!Number.isSafeInteger(offset) || offset < 0) {
    throw new SysError("mmap", Errno.EINVAL, `fd ${fd} (offset ${offset})`);
  }
  const pointer = libc().mmap(null, BigInt(length), prot, flags, fd, BigInt(offset));
  const errno = lastErrno();
  if (pointer === null || Deno.UnsafePointer.value(pointer) === MAP_FAILED) {
    throw new SysError("mmap", errno, `fd ${fd} length ${length} offset ${offset}`);
  }
  return new Mapping(addressOf(pointer), length);
}

/**
 * An `ArrayBuffer` over `length` bytes at `address` of a mapping owned
 * elsewhere, e.g. rebuilt in a Worker from {@linkcode Mapping.address}. It
 * owns nothing and is not detached when the mapping goes away.
 *
 * @example
 * ```ts
 * import { viewOf } from "@vhost-mdev/sdk/sys";
 * // In a Worker that was sent { address, length } of a Mapping:
 * declare const address: number, length: number;
 * const bytes = new Uint8Array(viewOf(address, length));
 * ```
 */
export function viewOf(address: number, length: number): ArrayBuffer {
  if (!Number.isSafeInteger(length) || length < 0) {
    throw new RangeError(`view length ${length} is not a non-negative integer`);
  }
  if (length === 0) return new ArrayBuffer(0);
  if (!Number.isSafeInteger(address) || address <= 0) {
    throw new RangeError(`view address ${address} is not a valid address`);
  }
  return Deno.UnsafePointerView.getArrayBuffer(pointerAt(address)!, length);
}

/** The address of a buffer's first byte (0 for an empty buffer). */
export function pointerOf(buf: ArrayBufferView | ArrayBuffer): number {
  return addressOf(stablePointer(buf));
}
