/**
 * The whole type1 VFIO bring-up for one PCI device, with a message that
 * says what to do at each step a user can get wrong:
 *
 * 1. `/dev/vfio/vfio` exists (vfio-pci loaded);
 * 2. the device exists in sysfs, is bound to vfio-pci, has an IOMMU group,
 *    and the group's other devices are bound to vfio-pci or nothing;
 * 3. open the group and the container (permission, busy);
 * 4. check the API version and type1 v2, check the group is viable, attach
 *    it, set the IOMMU, read the IOVA ranges;
 * 5. get the device fd.
 *
 * @module
 */

import { O_CLOEXEC, O_RDWR, open, SysError } from "../sys/mod.ts";
import { VfioContainer } from "./container.ts";
import { VfioPciDevice } from "./device.ts";
import {
  groupNotViableError,
  notBoundError,
  noVfioError,
  permissionError,
  VfioError,
} from "./errors.ts";
import { VfioGroup } from "./group.ts";
import { DEFAULT_SYSFS_ROOT, normalizePciAddress, PciSysfs } from "./sysfs.ts";

/** Default VFIO device directory. */
export const DEFAULT_DEV_VFIO = "/dev/vfio";

/** Drivers a device may have without making its group unusable. */
const HARMLESS_DRIVERS = new Set(["vfio-pci", "pci-stub", "pcieport"]);

/** Where to look; both injectable so tests can use fake trees. */
export interface VfioOpenOptions {
  /** sysfs mount point (default `/sys`). */
  sysfsRoot?: string;
  /** VFIO device directory (default `/dev/vfio`). */
  devVfio?: string;
}

/** An opened device with the group and container it came through. */
export interface VfioPci {
  /** Canonical PCI address. */
  readonly address: string;
  /** The container (the device's DMA space). */
  readonly container: VfioContainer;
  /** The device's IOMMU group. */
  readonly group: VfioGroup;
  /** The device. */
  readonly device: VfioPciDevice;
  /** Close device, group and container, in that order. Idempotent. */
  close(): void;
}

/**
 * Open PCI device `address` through VFIO with a type1 v2 IOMMU.
 *
 * @throws VfioError whose message says how to fix the setup.
 *
 * @example
 * ```ts
 * import { openVfioPci } from "@vhost-mdev/sdk/vfio";
 * const vfio = openVfioPci("0000:00:04.0");
 * try {
 *   console.log(vfio.device.config.read16(0).toString(16)); // vendor ID
 * } finally {
 *   vfio.close();
 * }
 * ```
 */
export function openVfioPci(address: string, options: VfioOpenOptions = {}): VfioPci {
  const sysfsRoot = options.sysfsRoot ?? DEFAULT_SYSFS_ROOT;
  const devVfio = options.devVfio ?? DEFAULT_DEV_VFIO;
  const addr = normalizePciAddress(address);
  const sysfs = new PciSysfs(sysfsRoot);

  if (!exists(`${devVfio}/vfio`)) throw noVfioError(devVfio);
  if (!sysfs.exists(addr)) {
    throw new VfioError(
      "no-device",
      `there is no PCI device ${addr} (${sysfs.devicePath(addr)} is missing); lspci -D lists ` +
        `the devices of this machine`,
    );
  }
  const driver = sysfs.driver(addr);
  if (driver !== "vfio-pci") throw notBoundError(addr, driver, sysfsRoot);
  const groupNumber = sysfs.iommuGroup(addr);
  if (groupNumber === null) {
    throw new VfioError(
      "no-iommu-group",
      `PCI device ${addr} has no IOMMU group: enable the IOMMU (intel_iommu=on or amd_iommu=on ` +
        `on the kernel command line; in a QEMU guest add -device intel-iommu)`,
    );
  }
  const blockers = () =>
    sysfs.groupDevices(groupNumber)
      .filter((d) => d !== addr)
      .map((d) => ({ address: d, driver: sysfs.driver(d) }))
      .filter((d) => d.driver !== null && !HARMLESS_DRIVERS.has(d.driver));
  const early = blockers();
  if (early.length) throw groupNotViableError(groupNumber, addr, early, sysfsRoot);

  const groupPath = `${devVfio}/${groupNumber}`;
  const group = new VfioGroup(openNode(groupPath, addr), groupNumber);
  let container: VfioContainer | null = null;
  try {
    const containerPath = `${devVfio}/vfio`;
    container = VfioContainer.fromFd(openNode(containerPath, addr), containerPath);
    let status;
    try {
      status = group.status();
    } catch (e) {
      throw new VfioError(
        "unsupported",
        `${groupPath} is not a VFIO group (VFIO_GROUP_GET_STATUS failed: ${message(e)})`,
        { cause: e },
      );
    }
    if (!status.viable) {
      const all = sysfs.groupDevices(groupNumber).filter((d) => d !== addr)
        .map((d) => ({ address: d, driver: sysfs.driver(d) }));
      const bad = blockers();
      throw groupNotViableError(groupNumber, addr, bad.length ? bad : all, sysfsRoot);
    }
    group.setContainer(container);
    container.setIommu();
    const device = new VfioPciDevice(group.deviceFd(addr), addr);
    const c = container;
    let closed = false;
    return {
      address: addr,
      container: c,
      group,
      device,
      close() {
        if (closed) return;
        closed = true;
        device.close();
        group.close();
        c.close();
      },
    };
  } catch (e) {
    group.close();
    container?.close();
    throw e;
  }
}

function openNode(path: string, addr: string): number {
  try {
    return open(path, O_RDWR | O_CLOEXEC);
  } catch (e) {
    if (e instanceof SysError) {
      if (e.code === "EACCES" || e.code === "EPERM") throw permissionError(path, e.code);
      if (e.code === "EBUSY") {
        throw new VfioError(
          "busy",
          `${path} is busy: another process (a VM, DPDK) has the IOMMU group of ${addr} open`,
          { cause: e },
        );
      }
      if (e.code === "ENOENT") {
        throw new VfioError(
          "no-vfio",
          `${path} does not exist although ${addr} is bound to vfio-pci; check that ` +
            `/dev/vfio is populated (udev) and that the group number is right (ls /dev/vfio)`,
          { cause: e },
        );
      }
    }
    throw new VfioError("kernel", `cannot open ${path}: ${message(e)}`, { cause: e });
  }
}

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
