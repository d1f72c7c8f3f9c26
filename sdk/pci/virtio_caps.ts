/**
 * Finding the virtio 1.x modern transport in config space (virtio 1.2
 * §4.1.4): vendor capabilities (ID 0x09) whose `cfg_type` says which
 * structure they locate and whose `bar`/`offset`/`length` say where. The
 * driver uses the first capability of each type it understands and ignores
 * those naming a reserved BAR; the MSI-X capability gives the vector count.
 *
 * @module
 */

import { PciCapabilityId, PciMsix, VirtioPciCap, VirtioPciCapType } from "../uapi/pci.ts";
import { listCapabilities } from "./capabilities.ts";
import type { PciConfigAccess } from "./config.ts";

/** Where one virtio structure lives: a BAR and a byte range in it. */
export interface VirtioStructureLocation {
  /** BAR index 0..5. */
  bar: number;
  /** Offset of the structure in the BAR. */
  offset: number;
  /** Length of the structure. */
  length: number;
  /** Offset of the capability in config space. */
  capOffset: number;
}

/** The modern transport's structures as found in config space. */
export interface VirtioPciLayout {
  /** `virtio_pci_common_cfg`. */
  common: VirtioStructureLocation;
  /** Notification (doorbell) area. */
  notify: VirtioStructureLocation;
  /** Bytes between consecutive `queue_notify_off` units (0: one doorbell for all). */
  notifyOffMultiplier: number;
  /** ISR status byte, if present. */
  isr: VirtioStructureLocation | null;
  /** Device-specific config, if present. */
  device: VirtioStructureLocation | null;
  /** MSI-X table size (0 when the function has no MSI-X capability). */
  msixVectors: number;
}

/** Config space does not describe a usable virtio modern device. */
export class VirtioPciLayoutError extends Error {
  /**
   * Make the error.
   *
   * @param message What is missing or malformed.
   */
  constructor(message: string) {
    super(message);
    this.name = "VirtioPciLayoutError";
  }
}

/**
 * Parse the virtio vendor capabilities and MSI-X of `cfg`.
 *
 * @throws VirtioPciLayoutError when the common or notify structure is
 *   missing (not a modern device), or a capability is truncated.
 * @throws PciCapabilityError when the capability list is corrupt.
 */
export function readVirtioPciLayout(cfg: PciConfigAccess): VirtioPciLayout {
  const found = new Map<number, VirtioStructureLocation>();
  let multiplier = 0;
  let msixVectors = 0;
  for (const cap of listCapabilities(cfg)) {
    if (cap.id === PciCapabilityId.MSIX && msixVectors === 0) {
      const control = cfg.read16(cap.offset + PciMsix.MESSAGE_CONTROL);
      msixVectors = (control & PciMsix.TABLE_SIZE_MASK) + 1;
      continue;
    }
    if (cap.id !== PciCapabilityId.VENDOR) continue;
    const at = cap.offset;
    const capLen = cfg.read8(at + VirtioPciCap.CAP_LEN);
    const type = cfg.read8(at + VirtioPciCap.CFG_TYPE);
    if (capLen < VirtioPciCap.SIZE || at + VirtioPciCap.SIZE > cfg.size) {
      throw new VirtioPciLayoutError(
        `virtio capability at 0x${
          at.toString(16)
        } has length ${capLen}, less than ${VirtioPciCap.SIZE}`,
      );
    }
    const bar = cfg.read8(at + VirtioPciCap.BAR);
    // Reserved BAR values (6 and up) mark capabilities to ignore.
    if (bar > 5 || found.has(type)) continue;
    if (type === VirtioPciCapType.NOTIFY) {
      if (capLen < VirtioPciCap.NOTIFY_SIZE || at + VirtioPciCap.NOTIFY_SIZE > cfg.size) {
        throw new VirtioPciLayoutError(
          `virtio notify capability at 0x${at.toString(16)} has length ${capLen}, ` +
            `less than ${VirtioPciCap.NOTIFY_SIZE}`,
        );
      }
      multiplier = cfg.read32(at + VirtioPciCap.NOTIFY_OFF_MULTIPLIER);
    }
    found.set(type, {
      bar,
      offset: cfg.read32(at + VirtioPciCap.OFFSET),
      length: cfg.read32(at + VirtioPciCap.LENGTH),
      capOffset: at,
    });
  }
  const common = found.get(VirtioPciCapType.COMMON);
  const notify = found.get(VirtioPciCapType.NOTIFY);
  if (!common || !notify) {
    throw new VirtioPciLayoutError(
      `no virtio ${common ? "notify" : "common cfg"} capability: ` +
        `this is not a virtio 1.x (modern) PCI device`,
    );
  }
  return {
    common,
    notify,
    notifyOffMultiplier: multiplier,
    isr: found.get(VirtioPciCapType.ISR) ?? null,
    device: found.get(VirtioPciCapType.DEVICE) ?? null,
    msixVectors,
  };
}
