/**
 * The PCI IDs of the Intel IFC VF family, as the Linux (`drivers/vdpa/ifcvf`)
 * and DPDK (`drivers/vdpa/ifc`) drivers list them. All are virtio devices
 * (vendor 0x1af4) told apart by Intel's subsystem IDs; the N3000 VF is a
 * modern-only virtio-net device, the C5000X-PL functions use the
 * transitional device IDs.
 *
 * @module
 */

import type { PciId } from "@vhost-mdev/sdk";
import type { PciIdentity } from "@vhost-mdev/sdk/pci";

/** An ID table entry with the virtio device type it carries. */
export interface IfcvfId extends PciId {
  /** What the IFC VF is: a network or a block device. */
  kind: "net" | "blk";
}

/** The IFC VF family. */
export const IFCVF_PCI_IDS: readonly IfcvfId[] = [
  {
    vendor: 0x1af4,
    device: 0x1041,
    subsystemVendor: 0x8086,
    subsystemDevice: 0x001a,
    name: "IFC VF N3000 net",
    kind: "net",
  },
  {
    vendor: 0x1af4,
    device: 0x1000,
    subsystemVendor: 0x8086,
    subsystemDevice: 0x0001,
    name: "IFC VF C5000X-PL net",
    kind: "net",
  },
  {
    vendor: 0x1af4,
    device: 0x1001,
    subsystemVendor: 0x8086,
    subsystemDevice: 0x0002,
    name: "IFC VF C5000X-PL blk",
    kind: "blk",
  },
];

/** The table entry matching `id`, or null. */
export function matchIfcvf(id: PciIdentity): IfcvfId | null {
  return IFCVF_PCI_IDS.find((e) =>
    e.vendor === id.vendor && e.device === id.device &&
    (e.subsystemVendor === undefined || e.subsystemVendor === id.subsystemVendor) &&
    (e.subsystemDevice === undefined || e.subsystemDevice === id.subsystemDevice)
  ) ?? null;
}

/**
 * Whether `id` can be a virtio-net device with the modern transport: the
 * modern ID 0x1041, or the transitional 0x1000 (whose modern capabilities
 * the transport then checks).
 */
export function isVirtioNet(id: PciIdentity): boolean {
  return id.vendor === 0x1af4 && (id.device === 0x1041 || id.device === 0x1000);
}

/** The table as lines for error messages. */
export function describeIds(): string {
  const h = (n = 0) => n.toString(16).padStart(4, "0");
  return IFCVF_PCI_IDS.map((e) =>
    `${h(e.vendor)}:${h(e.device)} subsystem ${h(e.subsystemVendor)}:${
      h(e.subsystemDevice)
    } (${e.name})`
  ).join("; ");
}
