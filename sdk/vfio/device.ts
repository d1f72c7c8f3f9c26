/**
 * A vfio-pci device fd as a {@linkcode PciFunction}: config space through
 * `pread`/`pwrite` of the config region, BARs through `mmap` of their
 * regions, MSI-X vectors wired to eventfds with `VFIO_DEVICE_SET_IRQS`, and
 * `VFIO_DEVICE_RESET`.
 *
 * @module
 */

import { close, ioctl, type Mapping, mmap, pread, pwrite } from "../sys/mod.ts";
import { getU64 } from "../sys/pointer.ts";
import {
  VfioDeviceInfo,
  VfioIoctl,
  VfioIrqInfo,
  VfioIrqSet,
  VfioPciRegion,
  VfioRegionInfo,
} from "../uapi/vfio.ts";
import type { PciConfigAccess } from "../pci/config.ts";
import type { PciFunction, PciIrqInfo, PciRegion } from "../pci/function.ts";
import { checkAccess, MappedMmio, type MmioAccessor } from "../pci/mmio.ts";
import { VfioError } from "./errors.ts";

/** Config space of a VFIO device: exact-size `pread`/`pwrite` at the config region. */
class VfioConfigSpace implements PciConfigAccess {
  readonly size: number;
  #fd: number;
  #base: number;
  #buf = new Uint8Array(4);
  #view = new DataView(this.#buf.buffer);

  constructor(fd: number, region: PciRegion) {
    this.#fd = fd;
    this.#base = region.offset;
    this.size = region.size;
  }

  #read(offset: number, width: 1 | 2 | 4): DataView {
    checkAccess(this.size, offset, width, "config space");
    const n = pread(this.#fd, this.#buf.subarray(0, width), this.#base + offset);
    if (n !== width) {
      throw new VfioError("kernel", `config space read of ${width} bytes at ${offset} got ${n}`);
    }
    return this.#view;
  }

  #write(offset: number, width: 1 | 2 | 4): void {
    checkAccess(this.size, offset, width, "config space");
    const n = pwrite(this.#fd, this.#buf.subarray(0, width), this.#base + offset);
    if (n !== width) {
      throw new VfioError("kernel", `config space write of ${width} bytes at ${offset} took ${n}`);
    }
  }

  read8(offset: number): number {
    return this.#read(offset, 1).getUint8(0);
  }

  read16(offset: number): number {
    return this.#read(offset, 2).getUint16(0, true);
  }

  read32(offset: number): number {
    return this.#read(offset, 4).getUint32(0, true);
  }

  write8(offset: number, value: number): void {
    this.#view.setUint8(0, value);
    this.#write(offset, 1);
  }

  write16(offset: number, value: number): void {
    this.#view.setUint16(0, value, true);
    this.#write(offset, 2);
  }

  write32(offset: number, value: number): void {
    this.#view.setUint32(0, value, true);
    this.#write(offset, 4);
  }
}

/**
 * An open vfio-pci device. Made by {@linkcode openVfioPci}; owns its fd,
 * BAR mappings and interrupt wiring.
 */
export class VfioPciDevice implements PciFunction {
  readonly address: string;
  readonly fd: number;
  readonly config: PciConfigAccess;
  /** `VFIO_DEVICE_GET_INFO` flags. */
  readonly flags: number;
  /** Number of regions. */
  readonly numRegions: number;
  /** Number of interrupt indexes. */
  readonly numIrqs: number;
  #regions = new Map<number, PciRegion>();
  #bars = new Map<number, { mapping: Mapping; mmio: MmioAccessor }>();
  #wiredIrqs = new Set<number>();
  #closed = false;

  /** Adopt device fd `fd` (owned from now on) of the device at `address`. */
  constructor(fd: number, address: string) {
    this.fd = fd;
    this.address = address;
    const buf = new Uint8Array(VfioDeviceInfo.SIZE);
    const v = new DataView(buf.buffer);
    v.setUint32(VfioDeviceInfo.ARGSZ, VfioDeviceInfo.SIZE, true);
    ioctl(fd, VfioIoctl.DEVICE_GET_INFO, buf);
    this.flags = v.getUint32(VfioDeviceInfo.FLAGS, true);
    this.numRegions = v.getUint32(VfioDeviceInfo.NUM_REGIONS, true);
    this.numIrqs = v.getUint32(VfioDeviceInfo.NUM_IRQS, true);
    if ((this.flags & VfioDeviceInfo.FLAG_PCI) === 0) {
      throw new VfioError("unsupported", `VFIO device ${address} is not a vfio-pci device`);
    }
    this.config = new VfioConfigSpace(fd, this.region(VfioPciRegion.CONFIG));
  }

  get canReset(): boolean {
    return (this.flags & VfioDeviceInfo.FLAG_RESET) !== 0;
  }

  region(index: number): PciRegion {
    const cached = this.#regions.get(index);
    if (cached) return cached;
    if (!Number.isInteger(index) || index < 0 || index >= this.numRegions) {
      throw new RangeError(`${this.address}: region ${index} does not exist (${this.numRegions})`);
    }
    const buf = new Uint8Array(VfioRegionInfo.SIZE);
    const v = new DataView(buf.buffer);
    v.setUint32(VfioRegionInfo.ARGSZ, VfioRegionInfo.SIZE, true);
    v.setUint32(VfioRegionInfo.INDEX, index, true);
    ioctl(this.fd, VfioIoctl.DEVICE_GET_REGION_INFO, buf);
    const flags = v.getUint32(VfioRegionInfo.FLAGS, true);
    const r: PciRegion = {
      index,
      size: getU64(v, VfioRegionInfo.REGION_SIZE),
      offset: getU64(v, VfioRegionInfo.REGION_OFFSET),
      readable: (flags & VfioRegionInfo.FLAG_READ) !== 0,
      writable: (flags & VfioRegionInfo.FLAG_WRITE) !== 0,
      mappable: (flags & VfioRegionInfo.FLAG_MMAP) !== 0,
    };
    this.#regions.set(index, r);
    return r;
  }

  mapBar(bar: number): MmioAccessor {
    this.#check();
    const cached = this.#bars.get(bar);
    if (cached) return cached.mmio;
    if (!Number.isInteger(bar) || bar < 0 || bar > VfioPciRegion.BAR5) {
      throw new RangeError(`BAR ${bar} does not exist: BARs are 0..5`);
    }
    const r = this.region(bar);
    if (r.size === 0) {
      throw new VfioError(
        "unsupported",
        `${this.address}: BAR ${bar} is absent (the device does not implement it)`,
      );
    }
    if (!r.mappable) {
      throw new VfioError(
        "unsupported",
        `${this.address}: BAR ${bar} cannot be mapped (an I/O port BAR, or vfio-pci refuses mmap ` +
          `of it); the driver needs its registers memory-mapped`,
      );
    }
    const mapping = mmap(this.fd, r.size, { offset: r.offset });
    const mmio = new MappedMmio(mapping.buffer, mapping.address);
    this.#bars.set(bar, { mapping, mmio });
    return mmio;
  }

  irqInfo(index: number): PciIrqInfo {
    const buf = new Uint8Array(VfioIrqInfo.SIZE);
    const v = new DataView(buf.buffer);
    v.setUint32(VfioIrqInfo.ARGSZ, VfioIrqInfo.SIZE, true);
    v.setUint32(VfioIrqInfo.INDEX, index, true);
    ioctl(this.fd, VfioIoctl.DEVICE_GET_IRQ_INFO, buf);
    return {
      index,
      count: v.getUint32(VfioIrqInfo.COUNT, true),
      eventfd: (v.getUint32(VfioIrqInfo.FLAGS, true) & VfioIrqInfo.FLAG_EVENTFD) !== 0,
    };
  }

  setIrqEventfds(index: number, start: number, fds: readonly number[]): void {
    this.#check();
    const size = VfioIrqSet.HEADER_SIZE + 4 * fds.length;
    const buf = new Uint8Array(size);
    const v = new DataView(buf.buffer);
    v.setUint32(VfioIrqSet.ARGSZ, size, true);
    v.setUint32(VfioIrqSet.FLAGS, VfioIrqSet.DATA_EVENTFD | VfioIrqSet.ACTION_TRIGGER, true);
    v.setUint32(VfioIrqSet.INDEX, index, true);
    v.setUint32(VfioIrqSet.START, start, true);
    v.setUint32(VfioIrqSet.COUNT, fds.length, true);
    fds.forEach((fd, i) => v.setInt32(VfioIrqSet.DATA + 4 * i, fd, true));
    ioctl(this.fd, VfioIoctl.DEVICE_SET_IRQS, buf);
    this.#wiredIrqs.add(index);
  }

  disableIrqs(index: number): void {
    this.#check();
    const buf = new Uint8Array(VfioIrqSet.HEADER_SIZE);
    const v = new DataView(buf.buffer);
    v.setUint32(VfioIrqSet.ARGSZ, VfioIrqSet.HEADER_SIZE, true);
    v.setUint32(VfioIrqSet.FLAGS, VfioIrqSet.DATA_NONE | VfioIrqSet.ACTION_TRIGGER, true);
    v.setUint32(VfioIrqSet.INDEX, index, true);
    ioctl(this.fd, VfioIoctl.DEVICE_SET_IRQS, buf);
    this.#wiredIrqs.delete(index);
  }

  reset(): void {
    this.#check();
    if (!this.canReset) {
      throw new VfioError("unsupported", `${this.address} does not support VFIO_DEVICE_RESET`);
    }
    ioctl(this.fd, VfioIoctl.DEVICE_RESET);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const index of this.#wiredIrqs) {
      try {
        this.#closed = false;
        this.disableIrqs(index);
      } catch {
        // Closing the device fd releases the vectors too.
      } finally {
        this.#closed = true;
      }
    }
    for (const { mapping } of this.#bars.values()) mapping.unmap();
    this.#bars.clear();
    close(this.fd);
  }

  #check(): void {
    if (this.#closed) throw new VfioError("kernel", `VFIO device ${this.address} is closed`);
  }
}
