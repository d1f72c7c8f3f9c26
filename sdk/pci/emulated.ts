/**
 * An emulated PCI device behind the same interfaces as a real VFIO device:
 * {@linkcode EmulatedPciFunction} is a `PciFunction` (config space, BARs
 * whose registers are handled in TypeScript, MSI-X vectors delivered by
 * writing the eventfds the driver wired) and {@linkcode EmulatedDmaSpace} is
 * a `DmaSpace` (the driver's DMA mappings, through which the emulated device
 * reaches memory, like a device behind an IOMMU).
 *
 * Register handlers run synchronously inside the driver's load or store:
 * an emulated device does its work (a doorbell processing a ring) before
 * the store returns. A real device works concurrently; drivers must not
 * rely on either.
 *
 * @module
 */

import { GuestMemory } from "../memory/guest_memory.ts";
import { eventfdWrite } from "../sys/mod.ts";
import { checkDmaMapping, type DmaMapping, type DmaSpace, type IovaRange } from "./function.ts";
import type { PciFunction, PciIrqInfo, PciRegion } from "./function.ts";
import type { PciConfigBuffer } from "./config.ts";
import { checkAccess, type MmioAccessor } from "./mmio.ts";
import { VfioPciIrq, VfioPciRegion, vfioPciRegionOffset } from "../uapi/vfio.ts";

/** Register behaviour of one emulated BAR; offsets are aligned to `width`. */
export interface EmulatedRegisters {
  /** BAR size in bytes (a power of two, at least 16). */
  readonly size: number;
  /** A load of `width` bytes at `offset`. */
  read(offset: number, width: 1 | 2 | 4): number;
  /** A store of `width` bytes at `offset`. */
  write(offset: number, width: 1 | 2 | 4, value: number): void;
}

/**
 * An {@linkcode MmioAccessor} over emulated registers. A 64-bit access
 * reaches the registers as two 32-bit accesses, low half first (as QEMU's
 * virtio-pci, whose registers take at most 4 bytes, splits it).
 */
export class EmulatedMmio implements MmioAccessor {
  readonly size: number;
  #regs: EmulatedRegisters;

  /** Route accesses to `regs`. */
  constructor(regs: EmulatedRegisters) {
    this.#regs = regs;
    this.size = regs.size;
  }

  read8(offset: number): number {
    checkAccess(this.size, offset, 1);
    return this.#regs.read(offset, 1) & 0xff;
  }

  read16(offset: number): number {
    checkAccess(this.size, offset, 2);
    return this.#regs.read(offset, 2) & 0xffff;
  }

  read32(offset: number): number {
    checkAccess(this.size, offset, 4);
    return this.#regs.read(offset, 4) >>> 0;
  }

  read64(offset: number): bigint {
    checkAccess(this.size, offset, 8);
    const lo = this.#regs.read(offset, 4) >>> 0;
    const hi = this.#regs.read(offset + 4, 4) >>> 0;
    return (BigInt(hi) << 32n) | BigInt(lo);
  }

  write8(offset: number, value: number): void {
    checkAccess(this.size, offset, 1);
    this.#regs.write(offset, 1, value & 0xff);
  }

  write16(offset: number, value: number): void {
    checkAccess(this.size, offset, 2);
    this.#regs.write(offset, 2, value & 0xffff);
  }

  write32(offset: number, value: number): void {
    checkAccess(this.size, offset, 4);
    this.#regs.write(offset, 4, value >>> 0);
  }

  write64(offset: number, value: bigint): void {
    checkAccess(this.size, offset, 8);
    this.#regs.write(offset, 4, Number(value & 0xffff_ffffn));
    this.#regs.write(offset + 4, 4, Number((value >> 32n) & 0xffff_ffffn));
  }
}

/** Plain memory as registers (an MSI-X table, a scratch BAR). */
export class MemoryRegisters implements EmulatedRegisters {
  readonly size: number;
  /** The bytes. */
  readonly bytes: Uint8Array;
  #view: DataView;

  /** `size` zero bytes. */
  constructor(size: number) {
    this.size = size;
    this.bytes = new Uint8Array(size);
    this.#view = new DataView(this.bytes.buffer);
  }

  read(offset: number, width: 1 | 2 | 4): number {
    if (width === 1) return this.#view.getUint8(offset);
    if (width === 2) return this.#view.getUint16(offset, true);
    return this.#view.getUint32(offset, true);
  }

  write(offset: number, width: 1 | 2 | 4, value: number): void {
    if (width === 1) this.#view.setUint8(offset, value);
    else if (width === 2) this.#view.setUint16(offset, value, true);
    else this.#view.setUint32(offset, value, true);
  }
}

/**
 * The IOMMU of an emulated device: it keeps the driver's mappings and gives
 * the device a {@linkcode GuestMemory} whose "guest-physical" addresses are
 * IOVAs, so the device reaches exactly the memory the driver mapped, and an
 * address outside every mapping is an error, as an IOMMU fault would be.
 * The read/write permissions of a mapping are recorded, not enforced.
 */
export class EmulatedDmaSpace implements DmaSpace {
  readonly iovaRanges: readonly IovaRange[];
  readonly pageSize: number;
  #mappings: DmaMapping[] = [];
  #memory: GuestMemory | null = null;
  #generation = 0;

  /**
   * An empty address space.
   *
   * @param options.iovaRanges What the IOMMU translates (default 0..2^48-1).
   * @param options.pageSize Mapping granularity (default 4096).
   */
  constructor(options: { iovaRanges?: readonly IovaRange[]; pageSize?: number } = {}) {
    this.iovaRanges = options.iovaRanges ?? [{ start: 0, end: 2 ** 48 - 1 }];
    this.pageSize = options.pageSize ?? 4096;
  }

  /** Increases whenever the mappings change. */
  get generation(): number {
    return this.#generation;
  }

  mappings(): readonly DmaMapping[] {
    return this.#mappings;
  }

  map(m: DmaMapping): void {
    checkDmaMapping(m, this.pageSize, this.iovaRanges);
    const overlap = this.#mappings.find((o) =>
      m.iova < o.iova + o.size && o.iova < m.iova + m.size
    );
    if (overlap) {
      throw new RangeError(
        `DMA map: IOVA 0x${m.iova.toString(16)}+0x${m.size.toString(16)} overlaps the mapping at ` +
          `0x${overlap.iova.toString(16)}`,
      );
    }
    this.#mappings.push({ ...m });
    this.#changed();
  }

  unmap(iova: number, size: number): void {
    const i = this.#mappings.findIndex((m) => m.iova === iova && m.size === size);
    if (i < 0) {
      throw new RangeError(
        `DMA unmap: no mapping at IOVA 0x${iova.toString(16)} of 0x${size.toString(16)} bytes`,
      );
    }
    this.#mappings.splice(i, 1);
    this.#changed();
  }

  /**
   * What the device reaches: the mapped memory, addressed by IOVA. Valid
   * until the mappings change (see {@linkcode EmulatedDmaSpace.generation}).
   */
  memory(): GuestMemory {
    if (!this.#memory) {
      this.#memory = GuestMemory.fromShared(
        this.#mappings.map((m) => ({ gpa: m.iova, size: m.size, uva: m.iova, address: m.vaddr })),
      );
    }
    return this.#memory;
  }

  #changed(): void {
    this.#memory?.close();
    this.#memory = null;
    this.#generation++;
  }
}

/** What an emulated function is made of. */
export interface EmulatedFunctionSpec {
  /** Name shown as the function's address. */
  address: string;
  /** Config space (its capability list must match the BARs). */
  config: PciConfigBuffer;
  /** Registers of BAR 0..5 (null: the BAR is absent). */
  bars: readonly (EmulatedRegisters | null)[];
  /** MSI-X table size (0: no MSI-X). */
  msixVectors: number;
  /** Called on function-level reset. */
  onReset?: () => void;
}

/**
 * A `PciFunction` whose registers are TypeScript. Interrupts it raises with
 * {@linkcode EmulatedPciFunction.interrupt} are delivered by writing the
 * eventfd wired to the vector.
 */
export class EmulatedPciFunction implements PciFunction {
  readonly address: string;
  readonly config: PciConfigBuffer;
  /** Not backed by a file: BARs cannot be mapped by another process. */
  readonly fd: number = -1;
  readonly canReset: boolean = true;
  /** Interrupts delivered, per MSI-X vector. */
  readonly delivered: number[];
  /** Interrupts raised with no eventfd wired (MSI-X off or vector unwired). */
  lostInterrupts = 0;
  #bars: (EmulatedMmio | null)[];
  #spec: EmulatedFunctionSpec;
  #msix: number[] = [];
  #closed = false;

  /** Build the function from `spec`. */
  constructor(spec: EmulatedFunctionSpec) {
    this.address = spec.address;
    this.config = spec.config;
    this.#spec = spec;
    this.#bars = Array.from({ length: 6 }, (_, i) => {
      const r = spec.bars[i];
      return r ? new EmulatedMmio(r) : null;
    });
    this.delivered = new Array(spec.msixVectors).fill(0);
  }

  region(index: number): PciRegion {
    const bar = index <= VfioPciRegion.BAR5 ? this.#bars[index] : null;
    const size = index === VfioPciRegion.CONFIG ? this.config.size : bar?.size ?? 0;
    return {
      index,
      size,
      offset: vfioPciRegionOffset(index),
      readable: size > 0,
      writable: size > 0,
      mappable: false,
    };
  }

  mapBar(bar: number): MmioAccessor {
    this.#check();
    const b = Number.isInteger(bar) && bar >= 0 && bar <= 5 ? this.#bars[bar] : null;
    if (!b) {
      throw new RangeError(
        `${this.address}: BAR ${bar} is absent (the device does not implement it)`,
      );
    }
    return b;
  }

  irqInfo(index: number): PciIrqInfo {
    const count = index === VfioPciIrq.MSIX ? this.#spec.msixVectors : 0;
    return { index, count, eventfd: count > 0 };
  }

  setIrqEventfds(index: number, start: number, fds: readonly number[]): void {
    this.#check();
    if (index !== VfioPciIrq.MSIX) {
      throw new RangeError(`${this.address}: only MSI-X (index ${VfioPciIrq.MSIX}) is emulated`);
    }
    if (start < 0 || start + fds.length > this.#spec.msixVectors) {
      throw new RangeError(
        `${this.address}: vectors ${start}..${start + fds.length - 1} exceed the ` +
          `${this.#spec.msixVectors}-entry MSI-X table`,
      );
    }
    fds.forEach((fd, i) => this.#msix[start + i] = fd);
  }

  disableIrqs(index: number): void {
    if (index === VfioPciIrq.MSIX) this.#msix = [];
  }

  /** The eventfd wired to MSI-X `vector`, or -1. */
  wiredEventfd(vector: number): number {
    return this.#msix[vector] ?? -1;
  }

  /** Raise MSI-X `vector`: write 1 to its eventfd. Returns whether it was delivered. */
  interrupt(vector: number): boolean {
    const fd = this.#msix[vector] ?? -1;
    if (fd < 0) {
      this.lostInterrupts++;
      return false;
    }
    eventfdWrite(fd, 1);
    this.delivered[vector]++;
    return true;
  }

  reset(): void {
    this.#check();
    this.#msix = [];
    this.#spec.onReset?.();
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#msix = [];
    this.#spec.onReset?.();
  }

  #check(): void {
    if (this.#closed) throw new Error(`emulated PCI function ${this.address} is closed`);
  }
}
