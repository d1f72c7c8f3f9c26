/**
 * The two things a PCI driver needs from the platform, as interfaces that
 * both the real VFIO classes (`sdk/vfio`) and the emulated devices
 * (`emulated.ts`) implement:
 *
 * - {@linkcode PciFunction}: one PCI function: config space, BAR regions
 *   and their mapping, interrupts wired to eventfds, reset;
 * - {@linkcode DmaSpace}: the IOMMU address space the function's DMA goes
 *   through: which IOVAs exist and which process memory they reach.
 *
 * @module
 */

import type { PciConfigAccess } from "./config.ts";
import type { MmioAccessor } from "./mmio.ts";
import { hex } from "../uapi/hex.ts";

/** One region of a function (a BAR, the ROM, config space). */
export interface PciRegion {
  /** Region index (BARs are 0..5). */
  index: number;
  /** Size in bytes; 0 when the region does not exist. */
  size: number;
  /** Offset of the region in the file {@linkcode PciFunction.fd}. */
  offset: number;
  /** The region can be read. */
  readable: boolean;
  /** The region can be written. */
  writable: boolean;
  /** The region can be mapped with `mmap(fd, size, offset)`. */
  mappable: boolean;
}

/** Interrupt index information (INTx, MSI, MSI-X). */
export interface PciIrqInfo {
  /** Interrupt index (`VfioPciIrq`). */
  index: number;
  /** Number of vectors of this index (MSI-X: the table size). */
  count: number;
  /** Vectors can signal eventfds. */
  eventfd: boolean;
}

/**
 * A PCI function a driver owns. Mappings made by {@linkcode PciFunction.mapBar}
 * belong to the function and are released by {@linkcode PciFunction.close}.
 */
export interface PciFunction {
  /** PCI address (`0000:03:00.0`), or a name for an emulated device. */
  readonly address: string;
  /** Configuration space. */
  readonly config: PciConfigAccess;
  /**
   * The file whose `mmap` at a region's offset maps that region (the VFIO
   * device fd), or -1 when the regions are not backed by a file.
   */
  readonly fd: number;
  /** Whether {@linkcode PciFunction.reset} is supported. */
  readonly canReset: boolean;
  /** Information about region `index`. */
  region(index: number): PciRegion;
  /**
   * Register access to BAR `bar` (mapped once, then cached).
   *
   * @throws Error when the BAR does not exist or cannot be mapped.
   */
  mapBar(bar: number): MmioAccessor;
  /** Information about interrupt index `index`. */
  irqInfo(index: number): PciIrqInfo;
  /**
   * Wire vectors `start .. start + fds.length - 1` of interrupt `index` to
   * eventfds: the device writes 1 to `fds[i]` when vector `start + i`
   * fires. A -1 entry leaves that vector unwired. For MSI-X the first call
   * enables MSI-X with `start + fds.length` vectors.
   */
  setIrqEventfds(index: number, start: number, fds: readonly number[]): void;
  /** Unwire every vector of `index` and disable it (for MSI-X: MSI-X off). */
  disableIrqs(index: number): void;
  /** Function-level reset. */
  reset(): void;
  /** Unmap the BARs, unwire interrupts, release the function. Idempotent. */
  close(): void;
}

/** An inclusive IOVA range the IOMMU can translate. */
export interface IovaRange {
  /** First IOVA. */
  start: number;
  /** Last IOVA (inclusive). */
  end: number;
}

/** One DMA mapping: device address `iova` reaches `size` bytes at process address `vaddr`. */
export interface DmaMapping {
  /** Device-visible address (the SDK uses GPA). */
  iova: number;
  /** Length in bytes, a multiple of {@linkcode DmaSpace.pageSize}. */
  size: number;
  /** Process virtual address of the memory (a mapping's address). */
  vaddr: number;
  /** The device may read (default true). */
  readable?: boolean;
  /** The device may write (default true). */
  writable?: boolean;
}

/**
 * An IOMMU address space (a VFIO type1 container): the memory a function's
 * DMA reaches. Mappings must be page aligned and inside
 * {@linkcode DmaSpace.iovaRanges}.
 */
export interface DmaSpace {
  /** IOVA ranges the IOMMU translates. */
  readonly iovaRanges: readonly IovaRange[];
  /** Smallest IOMMU page size; mappings are aligned to it. */
  readonly pageSize: number;
  /**
   * Make `[iova, iova + size)` reach `[vaddr, vaddr + size)`.
   *
   * @throws Error naming the range when it is misaligned, outside the IOVA
   *   ranges, overlaps a mapping, or the kernel refuses it.
   */
  map(mapping: DmaMapping): void;
  /** Remove the mapping that starts at `iova` with `size` bytes. */
  unmap(iova: number, size: number): void;
  /** Current mappings. */
  mappings(): readonly DmaMapping[];
}

/** Throws a RangeError unless `m` is page aligned and inside one of `ranges`. */
export function checkDmaMapping(
  m: DmaMapping,
  pageSize: number,
  ranges: readonly IovaRange[],
): void {
  for (const [k, v] of [["iova", m.iova], ["size", m.size], ["vaddr", m.vaddr]] as const) {
    if (!Number.isSafeInteger(v) || v < 0) {
      throw new RangeError(`DMA map: ${k} ${v} is not a valid address or size`);
    }
    if (v % pageSize !== 0) {
      throw new RangeError(
        `DMA map: ${k} ${hex(v)} is not aligned to the IOMMU page size ${pageSize}`,
      );
    }
  }
  if (m.size === 0) throw new RangeError("DMA map: size is 0");
  const last = m.iova + m.size - 1;
  if (!ranges.some((r) => m.iova >= r.start && last <= r.end)) {
    throw new RangeError(
      `DMA map: IOVA ${hex(m.iova)}..${hex(last)} is outside the IOMMU's IOVA ranges ` +
        ranges.map((r) => `${hex(r.start)}..${hex(r.end)}`).join(", ") +
        `; the guest-physical layout must fit them (IOVA = GPA)`,
    );
  }
}
