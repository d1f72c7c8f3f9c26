/**
 * VFIO for userspace drivers: open a PCI device bound to vfio-pci with a
 * type1 v2 IOMMU ({@linkcode openVfioPci}), map guest memory for its DMA
 * ({@linkcode VfioContainer}, a `DmaSpace`), and reach its config space,
 * BARs and MSI-X ({@linkcode VfioPciDevice}, a `PciFunction`). Setup errors
 * are {@linkcode VfioError}s whose messages give the commands that fix them.
 *
 * @example
 * ```ts
 * import { openVfioPci } from "@vhost-mdev/sdk/vfio";
 * import { VirtioPciTransport } from "@vhost-mdev/sdk/pci";
 * import { ftruncate, memfdCreate, mmap } from "@vhost-mdev/sdk/sys";
 *
 * const vfio = openVfioPci("0000:00:04.0");
 * const transport = VirtioPciTransport.open(vfio.device);
 * const memfd = memfdCreate("dma");
 * ftruncate(memfd, 1 << 20);
 * const mapping = mmap(memfd, 1 << 20);
 * vfio.container.map({ iova: 0, size: 1 << 20, vaddr: mapping.address });
 * ```
 *
 * @module
 */

export * from "./errors.ts";
export * from "./sysfs.ts";
export * from "./container.ts";
export * from "./group.ts";
export * from "./device.ts";
export * from "./open.ts";
export * from "../uapi/vfio.ts";
