/**
 * PCI for drivers: config space and capability walking, exact-width MMIO
 * access to BARs, the virtio 1.2 PCI modern transport, and the
 * {@linkcode PciFunction} / {@linkcode DmaSpace} interfaces that real VFIO
 * devices (`@vhost-mdev/sdk/vfio`) and emulated ones (`EmulatedPciFunction`,
 * for developing and testing a driver without hardware) both implement.
 *
 * @example Bring up a virtio device's first queue
 * ```ts
 * import { type PciFunction, VirtioPciTransport } from "@vhost-mdev/sdk/pci";
 * import { VirtioStatus } from "@vhost-mdev/sdk";
 *
 * declare const fn: PciFunction; // e.g. a VFIO device
 * const t = VirtioPciTransport.open(fn);
 * t.reset();
 * t.addStatus(VirtioStatus.ACKNOWLEDGE | VirtioStatus.DRIVER);
 * t.negotiate(t.deviceFeatures() & (1n << 32n));
 * t.setupQueue(0, { size: 256, desc: 0x10000, driver: 0x11000, device: 0x12000, msixVector: 0 });
 * t.enableQueue(0);
 * t.addStatus(VirtioStatus.DRIVER_OK);
 * ```
 *
 * @module
 */

export * from "./mmio.ts";
export * from "./config.ts";
export * from "./capabilities.ts";
export * from "./function.ts";
export * from "./virtio_caps.ts";
export * from "./virtio_pci.ts";
export * from "./emulated.ts";
export * from "../uapi/pci.ts";
