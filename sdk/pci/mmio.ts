/**
 * Register access to a device's memory-mapped BAR. Drivers touch registers
 * only through {@linkcode MmioAccessor}, so the same driver code runs on a
 * real BAR mapped from VFIO, on an emulated device, or on a recorder that
 * proves which accesses it makes.
 *
 * Exact widths matter: a device decodes each bus transaction, and QEMU's
 * virtio-pci ignores a byte-wise write to a 16- or 32-bit register (see
 * DESIGN.md). {@linkcode MappedMmio} therefore never goes through `DataView`
 * (V8 may assemble a DataView access from single bytes) and uses a typed
 * array of exactly the access width, indexed at an aligned element:
 *
 * - loads are `Atomics.load`: ECMAScript requires an atomic read of an
 *   N-byte element to be one indivisible N-byte access (on x86-64 a plain
 *   `mov` of that width, with no fence needed);
 * - stores are plain element stores (`u16[i] = v`), which V8 emits as one
 *   store of the element's width in every tier. `Atomics.store` is avoided
 *   on purpose: V8 compiles it to a locked `xchg`, which on uncached MMIO is
 *   a read followed by a write, and a register read can have side effects
 *   (the ISR byte clears on read).
 *
 * Ordering: x86-64 keeps stores in program order and uncached MMIO accesses
 * are not reordered with earlier stores, so a doorbell write cannot pass the
 * ring writes before it. The accessor is for x86-64 hosts; the widths it
 * emits on a real BAR are exercised by the QEMU vIOMMU test, where QEMU
 * ignores anything but exact-width accesses.
 *
 * @module
 */

/** Thrown for an access outside the region or not aligned to its width. */
export class MmioError extends RangeError {
  /**
   * Make the error.
   *
   * @param message What was accessed and why it is refused.
   */
  constructor(message: string) {
    super(message);
    this.name = "MmioError";
  }
}

/**
 * Exact-width little-endian register access to one region. Every access must
 * be aligned to its width and inside `[0, size)`.
 */
export interface MmioAccessor {
  /** Size of the region in bytes. */
  readonly size: number;
  /**
   * Where offset 0 is in this process's address space, when the registers
   * are mapped memory (a BAR mapped from a VFIO device fd); absent for
   * registers emulated in code. A doorbell a relay Worker rings needs it.
   */
  readonly address?: number;
  /** One 8-bit load. */
  read8(offset: number): number;
  /** One 16-bit load. */
  read16(offset: number): number;
  /** One 32-bit load. */
  read32(offset: number): number;
  /** One 64-bit load. */
  read64(offset: number): bigint;
  /** One 8-bit store. */
  write8(offset: number, value: number): void;
  /** One 16-bit store. */
  write16(offset: number, value: number): void;
  /** One 32-bit store. */
  write32(offset: number, value: number): void;
  /** One 64-bit store. */
  write64(offset: number, value: bigint): void;
}

/** Throws {@linkcode MmioError} unless `[offset, offset+width)` is aligned and inside `size`. */
export function checkAccess(size: number, offset: number, width: number, what = "MMIO"): void {
  if (!Number.isInteger(offset) || offset < 0 || offset + width > size) {
    throw new MmioError(
      `${what} ${width * 8}-bit access at offset ${offset} is outside the ${size}-byte region`,
    );
  }
  if ((offset & (width - 1)) !== 0) {
    throw new MmioError(`${what} ${width * 8}-bit access at offset ${offset} is not aligned`);
  }
}

/**
 * Registers in memory this process can address: a BAR mapped with `mmap`
 * from a VFIO device fd (or any `ArrayBuffer`, for tests). Accesses are
 * typed-array accesses of exactly the access width (see the module notes).
 *
 * @example
 * ```ts
 * import { MappedMmio } from "@vhost-mdev/sdk/pci";
 * import type { Mapping } from "@vhost-mdev/sdk/sys";
 * declare const mapping: Mapping; // a BAR mapped from the VFIO device fd
 * const bar = new MappedMmio(mapping.buffer);
 * bar.write16(0x16, 1); // one 16-bit store
 * ```
 */
export class MappedMmio implements MmioAccessor {
  readonly size: number;
  readonly address?: number;
  #u8: Uint8Array;
  #u16: Uint16Array;
  #u32: Uint32Array;
  #u64: BigUint64Array;

  /**
   * Access the registers in `buffer`.
   *
   * @param buffer The mapped region; its length must be a multiple of 8
   *   (BAR sizes are powers of two of at least 16 bytes).
   * @param address Where `buffer` starts in this process (`Mapping.address`),
   *   when known.
   */
  constructor(buffer: ArrayBuffer, address?: number) {
    if (buffer.byteLength % 8 !== 0) {
      throw new MmioError(`an MMIO region of ${buffer.byteLength} bytes is not a multiple of 8`);
    }
    this.size = buffer.byteLength;
    this.address = address;
    this.#u8 = new Uint8Array(buffer);
    this.#u16 = new Uint16Array(buffer);
    this.#u32 = new Uint32Array(buffer);
    this.#u64 = new BigUint64Array(buffer);
  }

  read8(offset: number): number {
    checkAccess(this.size, offset, 1);
    return Atomics.load(this.#u8, offset);
  }

  read16(offset: number): number {
    checkAccess(this.size, offset, 2);
    return Atomics.load(this.#u16, offset >>> 1);
  }

  read32(offset: number): number {
    checkAccess(this.size, offset, 4);
    return Atomics.load(this.#u32, offset >>> 2);
  }

  read64(offset: number): bigint {
    checkAccess(this.size, offset, 8);
    return Atomics.load(this.#u64, offset / 8);
  }

  write8(offset: number, value: number): void {
    checkAccess(this.size, offset, 1);
    this.#u8[offset] = value;
  }

  write16(offset: number, value: number): void {
    checkAccess(this.size, offset, 2);
    this.#u16[offset >>> 1] = value;
  }

  write32(offset: number, value: number): void {
    checkAccess(this.size, offset, 4);
    this.#u32[offset >>> 2] = value;
  }

  write64(offset: number, value: bigint): void {
    checkAccess(this.size, offset, 8);
    this.#u64[offset / 8] = BigInt.asUintN(64, value);
  }
}

/**
 * A window `[base, base+length)` of another accessor, e.g. the common-cfg
 * structure inside a BAR. Offsets are relative to `base` and bounded by
 * `length`; widths pass through unchanged.
 */
export class MmioWindow implements MmioAccessor {
  readonly size: number;
  #inner: MmioAccessor;
  #base: number;
  #what: string;

  /**
   * A window of `inner` from `base`, `length` bytes long.
   *
   * @param what Name used in errors ("common cfg").
   * @throws MmioError when the window does not fit in `inner`.
   */
  constructor(inner: MmioAccessor, base: number, length: number, what = "MMIO window") {
    if (
      !Number.isInteger(base) || !Number.isInteger(length) || base < 0 || length < 0 ||
      base + length > inner.size
    ) {
      throw new MmioError(
        `${what} at offset ${base} length ${length} does not fit the ${inner.size}-byte region`,
      );
    }
    this.#inner = inner;
    this.#base = base;
    this.size = length;
    this.#what = what;
  }

  /** Offset of the window in the underlying region. */
  get base(): number {
    return this.#base;
  }

  /** Where the window starts in this process, when the underlying region is mapped memory. */
  get address(): number | undefined {
    const inner = this.#inner.address;
    return inner === undefined ? undefined : inner + this.#base;
  }

  read8(offset: number): number {
    checkAccess(this.size, offset, 1, this.#what);
    return this.#inner.read8(this.#base + offset);
  }

  read16(offset: number): number {
    checkAccess(this.size, offset, 2, this.#what);
    return this.#inner.read16(this.#base + offset);
  }

  read32(offset: number): number {
    checkAccess(this.size, offset, 4, this.#what);
    return this.#inner.read32(this.#base + offset);
  }

  read64(offset: number): bigint {
    checkAccess(this.size, offset, 8, this.#what);
    return this.#inner.read64(this.#base + offset);
  }

  write8(offset: number, value: number): void {
    checkAccess(this.size, offset, 1, this.#what);
    this.#inner.write8(this.#base + offset, value);
  }

  write16(offset: number, value: number): void {
    checkAccess(this.size, offset, 2, this.#what);
    this.#inner.write16(this.#base + offset, value);
  }

  write32(offset: number, value: number): void {
    checkAccess(this.size, offset, 4, this.#what);
    this.#inner.write32(this.#base + offset, value);
  }

  write64(offset: number, value: bigint): void {
    checkAccess(this.size, offset, 8, this.#what);
    this.#inner.write64(this.#base + offset, value);
  }
}

/** One access seen by {@linkcode RecordingMmio}. */
export interface MmioAccess {
  /** Load or store. */
  op: "read" | "write";
  /** Width in bits: 8, 16, 32 or 64. */
  width: 8 | 16 | 32 | 64;
  /** Offset in the recorded region. */
  offset: number;
  /** Value stored, or value the load returned. */
  value: bigint;
}

/**
 * Passes every access to an inner accessor and records it, so a test can
 * prove exactly which loads and stores a driver emits (e.g. that a 16-bit
 * register is written with one 16-bit store).
 *
 * @example
 * ```ts
 * import { MappedMmio, RecordingMmio } from "@vhost-mdev/sdk/pci";
 * const rec = new RecordingMmio(new MappedMmio(new ArrayBuffer(64)));
 * rec.write16(0x18, 256);
 * rec.read16(0x18);
 * console.log(rec.accesses);
 * // [{ op: "write", width: 16, offset: 0x18, value: 256n },
 * //  { op: "read", width: 16, offset: 0x18, value: 256n }]
 * ```
 */
export class RecordingMmio implements MmioAccessor {
  readonly size: number;
  /** Every access in order. */
  readonly accesses: MmioAccess[] = [];
  #inner: MmioAccessor;

  /** Record the accesses made through this object to `inner`. */
  constructor(inner: MmioAccessor) {
    this.#inner = inner;
    this.size = inner.size;
  }

  /** Forget what was recorded. */
  clear(): void {
    this.accesses.length = 0;
  }

  read8(offset: number): number {
    const v = this.#inner.read8(offset);
    this.accesses.push({ op: "read", width: 8, offset, value: BigInt(v) });
    return v;
  }

  read16(offset: number): number {
    const v = this.#inner.read16(offset);
    this.accesses.push({ op: "read", width: 16, offset, value: BigInt(v) });
    return v;
  }

  read32(offset: number): number {
    const v = this.#inner.read32(offset);
    this.accesses.push({ op: "read", width: 32, offset, value: BigInt(v) });
    return v;
  }

  read64(offset: number): bigint {
    const v = this.#inner.read64(offset);
    this.accesses.push({ op: "read", width: 64, offset, value: v });
    return v;
  }

  write8(offset: number, value: number): void {
    this.accesses.push({ op: "write", width: 8, offset, value: BigInt(value) });
    this.#inner.write8(offset, value);
  }

  write16(offset: number, value: number): void {
    this.accesses.push({ op: "write", width: 16, offset, value: BigInt(value) });
    this.#inner.write16(offset, value);
  }

  write32(offset: number, value: number): void {
    this.accesses.push({ op: "write", width: 32, offset, value: BigInt(value >>> 0) });
    this.#inner.write32(offset, value);
  }

  write64(offset: number, value: bigint): void {
    this.accesses.push({ op: "write", width: 64, offset, value });
    this.#inner.write64(offset, value);
  }
}
