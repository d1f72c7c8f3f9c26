/**
 * What sysfs says about a PCI device: whether it exists, which driver has
 * it, its IOMMU group and the group's other members. The root is a
 * parameter so tests can point it at a fake tree.
 *
 * @module
 */

import { VfioError } from "./errors.ts";

/** Default sysfs mount point. */
export const DEFAULT_SYSFS_ROOT = "/sys";

const ADDRESS = /^([0-9a-f]{4}):([0-9a-f]{2}):([0-9a-f]{2})\.([0-7])$/;
const SHORT_ADDRESS = /^([0-9a-f]{2}):([0-9a-f]{2})\.([0-7])$/;

/**
 * The canonical `DDDD:BB:DD.F` form of a PCI address (`03:00.0` gets domain
 * 0000; letters become lower case).
 *
 * @throws VfioError (`bad-address`) for anything else.
 */
export function normalizePciAddress(address: string): string {
  const a = address.trim().toLowerCase();
  if (ADDRESS.test(a)) return a;
  if (SHORT_ADDRESS.test(a)) return `0000:${a}`;
  throw new VfioError(
    "bad-address",
    `"${address}" is not a PCI address: expected DDDD:BB:DD.F such as 0000:03:00.0 ` +
      `(lspci -D lists them)`,
  );
}

/** The PCI devices of a sysfs tree. */
export class PciSysfs {
  /** The sysfs mount point this reads. */
  readonly root: string;

  /** Read sysfs under `root` (default `/sys`). */
  constructor(root: string = DEFAULT_SYSFS_ROOT) {
    this.root = root;
  }

  /** Directory of device `address`. */
  devicePath(address: string): string {
    return `${this.root}/bus/pci/devices/${address}`;
  }

  /** Whether the device exists. */
  exists(address: string): boolean {
    try {
      Deno.statSync(this.devicePath(address));
      return true;
    } catch {
      return false;
    }
  }

  /** Name of the driver bound to the device, or null. */
  driver(address: string): string | null {
    return linkName(`${this.devicePath(address)}/driver`);
  }

  /** The device's IOMMU group number, or null when it has none. */
  iommuGroup(address: string): number | null {
    const name = linkName(`${this.devicePath(address)}/iommu_group`);
    if (name === null || !/^\d+$/.test(name)) return null;
    return Number(name);
  }

  /** Addresses of the devices in IOMMU group `group`, sorted. */
  groupDevices(group: number): string[] {
    const out: string[] = [];
    try {
      for (const e of Deno.readDirSync(`${this.root}/kernel/iommu_groups/${group}/devices`)) {
        out.push(e.name);
      }
    } catch {
      return [];
    }
    return out.sort();
  }

  /** A hexadecimal attribute such as `vendor` (`0x1af4`), or null. */
  hexAttribute(address: string, name: string): number | null {
    try {
      const text = Deno.readTextFileSync(`${this.devicePath(address)}/${name}`).trim();
      const n = Number.parseInt(text, 16);
      return Number.isFinite(n) ? n : null;
    } catch {
      return null;
    }
  }
}

function linkName(path: string): string | null {
  try {
    const target = Deno.readLinkSync(path);
    return target.split("/").filter((s) => s !== "").pop() ?? null;
  } catch {
    return null;
  }
}
