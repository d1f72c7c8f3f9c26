/**
 * PCI configuration space: the access interface (real config space through
 * VFIO, emulated or synthetic config space in tests), an in-memory
 * implementation, and readers for the identity fields of the header.
 *
 * @module
 */

import { PciConfig } from "../uapi/pci.ts";
import { checkAccess } from "./mmio.ts";

/**
 * Exact-width little-endian access to a function's configuration space
 * (256 bytes conventional, 4096 with PCI Express extended space).
 */
export interface PciConfigAccess {
  /** Size of the space in bytes. */
  readonly size: number;
  /** Read one byte. */
  read8(offset: number): number;
  /** Read an aligned 16-bit value. */
  read16(offset: number): number;
  /** Read an aligned 32-bit value. */
  read32(offset: number): number;
  /** Write one byte. */
  write8(offset: number, value: number): void;
  /** Write an aligned 16-bit value. */
  write16(offset: number, value: number): void;
  /** Write an aligned 32-bit value. */
  write32(offset: number, value: number): void;
}

/**
 * Config space held in memory: synthetic spaces in tests and the base of
 * emulated devices. Writes go to the bytes unless `onWrite` handles them
 * (returns `true`).
 *
 * @example
 * ```ts
 * import { PciConfigBuffer } from "@vhost-mdev/sdk/pci";
 * const cfg = new PciConfigBuffer();
 * cfg.write16(0, 0x1af4);
 * console.log(cfg.read16(0).toString(16)); // "1af4"
 * ```
 */
export class PciConfigBuffer implements PciConfigAccess {
  /** The raw bytes. */
  readonly bytes: Uint8Array;
  readonly size: number;
  /** Hook for writes with side effects; return `true` when handled. */
  onWrite?: (offset: number, width: 1 | 2 | 4, value: number) => boolean;
  #view: DataView;

  /** An all-zero space of `size` bytes (default 256), or a copy of `bytes`. */
  constructor(init: number | Uint8Array = PciConfig.SIZE) {
    this.bytes = typeof init === "number" ? new Uint8Array(init) : init.slice();
    this.size = this.bytes.length;
    this.#view = new DataView(this.bytes.buffer);
  }

  read8(offset: number): number {
    checkAccess(this.size, offset, 1, "config space");
    return this.#view.getUint8(offset);
  }

  read16(offset: number): number {
    checkAccess(this.size, offset, 2, "config space");
    return this.#view.getUint16(offset, true);
  }

  read32(offset: number): number {
    checkAccess(this.size, offset, 4, "config space");
    return this.#view.getUint32(offset, true);
  }

  write8(offset: number, value: number): void {
    checkAccess(this.size, offset, 1, "config space");
    if (this.onWrite?.(offset, 1, value & 0xff)) return;
    this.#view.setUint8(offset, value);
  }

  write16(offset: number, value: number): void {
    checkAccess(this.size, offset, 2, "config space");
    if (this.onWrite?.(offset, 2, value & 0xffff)) return;
    this.#view.setUint16(offset, value, true);
  }

  write32(offset: number, value: number): void {
    checkAccess(this.size, offset, 4, "config space");
    if (this.onWrite?.(offset, 4, value >>> 0)) return;
    this.#view.setUint32(offset, value, true);
  }
}

/** The identity fields of a config header. */
export interface PciIdentity {
  /** Vendor ID. */
  vendor: number;
  /** Device ID. */
  device: number;
  /** Subsystem vendor ID. */
  subsystemVendor: number;
  /** Subsystem (device) ID. */
  subsystemDevice: number;
  /** Revision ID. */
  revision: number;
  /** Class code, 24 bits (class, subclass, programming interface). */
  classCode: number;
}

/** Read vendor, device, subsystem, revision and class from a config header. */
export function readPciIdentity(cfg: PciConfigAccess): PciIdentity {
  return {
    vendor: cfg.read16(PciConfig.VENDOR_ID),
    device: cfg.read16(PciConfig.DEVICE_ID),
    subsystemVendor: cfg.read16(PciConfig.SUBSYSTEM_VENDOR_ID),
    subsystemDevice: cfg.read16(PciConfig.SUBSYSTEM_ID),
    revision: cfg.read8(PciConfig.REVISION_ID),
    classCode: cfg.read32(PciConfig.REVISION_ID) >>> 8,
  };
}

/** `1af4:1041 (subsystem 8086:001a)`: how IDs appear in messages. */
export function formatPciIdentity(id: PciIdentity): string {
  const h = (n: number) => n.toString(16).padStart(4, "0");
  return `${h(id.vendor)}:${h(id.device)} (subsystem ${h(id.subsystemVendor)}:${
    h(id.subsystemDevice)
  })`;
}
