/**
 * Walking the capability list of a PCI config space. The list is a chain of
 * byte pointers starting at 0x34; it comes from the device, so a broken
 * chain (a loop, a pointer into the header or past the end) is reported as
 * an error naming the bad link rather than followed.
 *
 * @module
 */

import { PciConfig, PciStatus } from "../uapi/pci.ts";
import type { PciConfigAccess } from "./config.ts";

/** A capability list that cannot be walked. */
export class PciCapabilityError extends Error {
  /**
   * Make the error.
   *
   * @param message Which pointer was bad and why.
   */
  constructor(message: string) {
    super(message);
    this.name = "PciCapabilityError";
  }
}

/** One capability: its ID and where it starts in config space. */
export interface PciCapability {
  /** Capability ID (`PciCapabilityId`). */
  id: number;
  /** Offset of the capability's first byte. */
  offset: number;
}

/** At most this many capabilities fit in the 192 bytes above the header. */
const MAX_CAPABILITIES = 48;

/**
 * The capabilities of conventional config space in list order. Returns an
 * empty list when the status register says there is no list.
 *
 * @throws PciCapabilityError for a pointer into the header, past the end,
 *   or back to a capability already visited.
 *
 * @example
 * ```ts
 * import { listCapabilities, PciCapabilityId, type PciFunction } from "@vhost-mdev/sdk/pci";
 * declare const fn: PciFunction;
 * const msix = listCapabilities(fn.config).find((c) => c.id === PciCapabilityId.MSIX);
 * ```
 */
export function listCapabilities(cfg: PciConfigAccess): PciCapability[] {
  if ((cfg.read16(PciConfig.STATUS) & PciStatus.CAP_LIST) === 0) return [];
  const limit = Math.min(cfg.size, PciConfig.SIZE);
  const caps: PciCapability[] = [];
  const seen = new Set<number>();
  let from = PciConfig.CAPABILITY_LIST;
  // The two low bits of every pointer are reserved and ignored.
  let ptr = cfg.read8(from) & 0xfc;
  while (ptr !== 0) {
    const where = `capability pointer 0x${ptr.toString(16)} (read at 0x${from.toString(16)})`;
    if (ptr < PciConfig.HEADER_SIZE || ptr + 2 > limit) {
      throw new PciCapabilityError(
        `${where} is outside 0x40..0x${(limit - 2).toString(16)}: the capability list is corrupt`,
      );
    }
    if (seen.has(ptr)) {
      throw new PciCapabilityError(`${where} loops back to an earlier capability`);
    }
    if (caps.length === MAX_CAPABILITIES) {
      throw new PciCapabilityError(
        `more than ${MAX_CAPABILITIES} capabilities: the list is corrupt`,
      );
    }
    seen.add(ptr);
    caps.push({ id: cfg.read8(ptr), offset: ptr });
    from = ptr + 1;
    ptr = cfg.read8(from) & 0xfc;
  }
  return caps;
}

/** Offset of the first capability with `id`, or -1. */
export function findCapability(cfg: PciConfigAccess, id: number): number {
  return listCapabilities(cfg).find((c) => c.id === id)?.offset ?? -1;
}
