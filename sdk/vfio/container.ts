/**
 * A VFIO container (`/dev/vfio/vfio`): the IOMMU address space that the
 * groups attached to it share. With the type1 v2 IOMMU it maps process
 * memory at chosen IOVAs (`VFIO_IOMMU_MAP_DMA`); the SDK maps guest memory
 * with IOVA = GPA, so ring and buffer addresses from the frontend are what
 * the device is given.
 *
 * @module
 */

import { close, ioctl, SysError } from "../sys/mod.ts";
import { getU64, setU64 } from "../sys/pointer.ts";
import {
  VFIO_API_VERSION,
  VfioDmaMap,
  VfioDmaUnmap,
  VfioInfoCap,
  VfioIoctl,
  VfioIommuInfo,
  VfioIommuType,
} from "../uapi/vfio.ts";
import {
  checkDmaMapping,
  type DmaMapping,
  type DmaSpace,
  type IovaRange,
} from "../pci/function.ts";
import { VfioError } from "./errors.ts";

/** The whole 64-bit space as a safe-number range, when the kernel reports none. */
const FULL_RANGE: IovaRange = { start: 0, end: Number.MAX_SAFE_INTEGER };

/**
 * An open container. Created by {@linkcode openVfioPci}, or directly with
 * {@linkcode VfioContainer.fromFd} for an fd opened elsewhere.
 */
export class VfioContainer implements DmaSpace {
  /** The container fd. */
  readonly fd: number;
  #iovaRanges: IovaRange[] = [FULL_RANGE];
  #pageSize = 4096;
  #mappings: DmaMapping[] = [];
  #iommuSet = false;
  #closed = false;

  private constructor(fd: number) {
    this.fd = fd;
  }

  /**
   * Adopt an open container fd (owned from now on) and check it speaks the
   * VFIO API version the SDK knows and offers the type1 v2 IOMMU.
   *
   * @throws VfioError (`unsupported`) otherwise; the fd is closed then.
   */
  static fromFd(fd: number, path = "container"): VfioContainer {
    const c = new VfioContainer(fd);
    try {
      let version: number;
      try {
        version = ioctl(fd, VfioIoctl.GET_API_VERSION);
      } catch (e) {
        throw new VfioError(
          "unsupported",
          `${path} is not a VFIO container (VFIO_GET_API_VERSION failed: ${message(e)})`,
          { cause: e },
        );
      }
      if (version !== VFIO_API_VERSION) {
        throw new VfioError(
          "unsupported",
          `${path} reports VFIO API version ${version}; only ${VFIO_API_VERSION} is known`,
        );
      }
      if (ioctl(fd, VfioIoctl.CHECK_EXTENSION, VfioIommuType.TYPE1v2) <= 0) {
        throw new VfioError(
          "unsupported",
          `${path}: the kernel offers no type1 v2 IOMMU; load vfio_iommu_type1 (modprobe ` +
            `vfio_iommu_type1) on a machine with an IOMMU`,
        );
      }
    } catch (e) {
      close(fd);
      throw e;
    }
    return c;
  }

  /**
   * Choose the type1 v2 IOMMU (after a group is attached) and read its page
   * sizes and IOVA ranges.
   */
  setIommu(): void {
    if (this.#iommuSet) return;
    ioctl(this.fd, VfioIoctl.SET_IOMMU, VfioIommuType.TYPE1v2);
    this.#iommuSet = true;
    this.#readInfo();
  }

  /** IOVA ranges the IOMMU translates (from `VFIO_IOMMU_GET_INFO`). */
  get iovaRanges(): readonly IovaRange[] {
    return this.#iovaRanges;
  }

  /** Smallest IOMMU page size. */
  get pageSize(): number {
    return this.#pageSize;
  }

  /** Current mappings. */
  mappings(): readonly DmaMapping[] {
    return this.#mappings;
  }

  /**
   * `VFIO_IOMMU_MAP_DMA`: the device reaches `[vaddr, vaddr+size)` at `iova`.
   * The kernel pins the pages (counted against `RLIMIT_MEMLOCK`).
   */
  map(m: DmaMapping): void {
    this.#open();
    checkDmaMapping(m, this.#pageSize, this.#iovaRanges);
    const overlap = this.#mappings.find((o) =>
      m.iova < o.iova + o.size && o.iova < m.iova + m.size
    );
    if (overlap) {
      throw new RangeError(
        `DMA map: IOVA 0x${m.iova.toString(16)}+0x${m.size.toString(16)} overlaps the mapping at ` +
          `0x${overlap.iova.toString(16)}+0x${overlap.size.toString(16)}`,
      );
    }
    const arg = new Uint8Array(VfioDmaMap.SIZE);
    const v = new DataView(arg.buffer);
    v.setUint32(VfioDmaMap.ARGSZ, VfioDmaMap.SIZE, true);
    const flags = (m.readable !== false ? VfioDmaMap.FLAG_READ : 0) |
      (m.writable !== false ? VfioDmaMap.FLAG_WRITE : 0);
    v.setUint32(VfioDmaMap.FLAGS, flags, true);
    setU64(v, VfioDmaMap.VADDR, m.vaddr);
    setU64(v, VfioDmaMap.IOVA, m.iova);
    setU64(v, VfioDmaMap.MAP_SIZE, m.size);
    try {
      ioctl(this.fd, VfioIoctl.IOMMU_MAP_DMA, arg);
    } catch (e) {
      const hint = e instanceof SysError && e.code === "ENOMEM"
        ? ": the locked-memory limit is too low for pinning guest memory; raise it (ulimit -l unlimited)"
        : "";
      throw new VfioError(
        "kernel",
        `VFIO_IOMMU_MAP_DMA iova 0x${m.iova.toString(16)} size 0x${m.size.toString(16)} ` +
          `failed: ${message(e)}${hint}`,
        { cause: e },
      );
    }
    this.#mappings.push({ ...m });
  }

  /** `VFIO_IOMMU_UNMAP_DMA` of the mapping at `iova` of `size` bytes. */
  unmap(iova: number, size: number): void {
    this.#open();
    const i = this.#mappings.findIndex((m) => m.iova === iova && m.size === size);
    if (i < 0) {
      throw new RangeError(
        `DMA unmap: no mapping at IOVA 0x${iova.toString(16)} of 0x${size.toString(16)} bytes`,
      );
    }
    const arg = new Uint8Array(VfioDmaUnmap.SIZE);
    const v = new DataView(arg.buffer);
    v.setUint32(VfioDmaUnmap.ARGSZ, VfioDmaUnmap.SIZE, true);
    setU64(v, VfioDmaUnmap.IOVA, iova);
    setU64(v, VfioDmaUnmap.UNMAP_SIZE, size);
    ioctl(this.fd, VfioIoctl.IOMMU_UNMAP_DMA, arg);
    this.#mappings.splice(i, 1);
  }

  /** Close the container (the kernel drops every mapping). Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#mappings = [];
    close(this.fd);
  }

  #open(): void {
    if (this.#closed) throw new VfioError("kernel", "the VFIO container is closed");
    if (!this.#iommuSet) {
      throw new VfioError("kernel", "the VFIO container has no IOMMU yet: attach a group first");
    }
  }

  #readInfo(): void {
    // First call learns the full size (with capabilities), the second reads them.
    let size: number = VfioIommuInfo.SIZE;
    for (let attempt = 0; attempt < 2; attempt++) {
      const buf = new Uint8Array(size);
      const v = new DataView(buf.buffer);
      v.setUint32(VfioIommuInfo.ARGSZ, size, true);
      ioctl(this.fd, VfioIoctl.IOMMU_GET_INFO, buf);
      const argsz = v.getUint32(VfioIommuInfo.ARGSZ, true);
      const flags = v.getUint32(VfioIommuInfo.FLAGS, true);
      if (flags & VfioIommuInfo.FLAG_PGSIZES) {
        // Lowest set bit of the 64-bit bitmap = smallest page size.
        const lo = v.getUint32(VfioIommuInfo.IOVA_PGSIZES, true);
        const hi = v.getUint32(VfioIommuInfo.IOVA_PGSIZES + 4, true);
        if (lo !== 0) this.#pageSize = lowestBit(lo);
        else if (hi !== 0) this.#pageSize = lowestBit(hi) * 2 ** 32;
      }
      if (argsz > size && attempt === 0) {
        size = argsz;
        continue;
      }
      if (flags & VfioIommuInfo.FLAG_CAPS) this.#readRanges(v, argsz);
      return;
    }
  }

  #readRanges(v: DataView, argsz: number): void {
    let off = v.getUint32(VfioIommuInfo.CAP_OFFSET, true);
    const seen = new Set<number>();
    while (off !== 0 && off + VfioInfoCap.IOVA_RANGES <= argsz && !seen.has(off)) {
      seen.add(off);
      if (v.getUint16(off + VfioInfoCap.ID, true) === VfioIommuInfo.CAP_IOVA_RANGE) {
        const n = v.getUint32(off + VfioInfoCap.IOVA_NR, true);
        const ranges: IovaRange[] = [];
        for (let i = 0; i < n; i++) {
          const at = off + VfioInfoCap.IOVA_RANGES + i * VfioInfoCap.IOVA_RANGE_SIZE;
          if (at + VfioInfoCap.IOVA_RANGE_SIZE > argsz) break;
          const start = getU64(v, at);
          const end = Math.min(getU64(v, at + 8), Number.MAX_SAFE_INTEGER);
          if (start <= Number.MAX_SAFE_INTEGER) ranges.push({ start, end });
        }
        if (ranges.length) this.#iovaRanges = ranges;
      }
      off = v.getUint32(off + VfioInfoCap.NEXT, true);
    }
  }
}

function lowestBit(n: number): number {
  return (n & -n) >>> 0;
}

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
