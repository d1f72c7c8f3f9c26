/**
 * VFIO numbers and struct layouts from Linux `include/uapi/linux/vfio.h`
 * (type1 IOMMU, vfio-pci). All VFIO ioctls are `_IO(';', 100 + n)`: they
 * carry no size in the request number, the structs carry their own `argsz`.
 * Struct layouts are given as byte offsets (x86-64, little endian).
 *
 * @module
 */

/** The VFIO API version the kernel must report (`VFIO_API_VERSION`). */
export const VFIO_API_VERSION = 0;

/** IOMMU models (`VFIO_CHECK_EXTENSION` / `VFIO_SET_IOMMU` argument). */
export const VfioIommuType = {
  /** The original x86 type1 IOMMU. */
  TYPE1: 1,
  /** Type1 with v2 semantics (unmap granularity, no partial unmaps): what the SDK uses. */
  TYPE1v2: 3,
} as const;

/** VFIO ioctl request numbers: `_IO(';', 100 + n)`, i.e. `0x3b64 + n`. */
export const VfioIoctl = {
  /** Container: returns `VFIO_API_VERSION`. */
  GET_API_VERSION: 0x3b64,
  /** Container: returns > 0 when the extension (an IOMMU type) is supported. */
  CHECK_EXTENSION: 0x3b65,
  /** Container: choose the IOMMU model (integer argument). */
  SET_IOMMU: 0x3b66,
  /** Group: fills `vfio_group_status`. */
  GROUP_GET_STATUS: 0x3b67,
  /** Group: attach to a container (argument: pointer to the container fd, an s32). */
  GROUP_SET_CONTAINER: 0x3b68,
  /** Group: detach from its container. */
  GROUP_UNSET_CONTAINER: 0x3b69,
  /** Group: returns a device fd (argument: the device name, a C string). */
  GROUP_GET_DEVICE_FD: 0x3b6a,
  /** Device: fills `vfio_device_info`. */
  DEVICE_GET_INFO: 0x3b6b,
  /** Device: fills `vfio_region_info` for `index`. */
  DEVICE_GET_REGION_INFO: 0x3b6c,
  /** Device: fills `vfio_irq_info` for `index`. */
  DEVICE_GET_IRQ_INFO: 0x3b6d,
  /** Device: `vfio_irq_set` (wire interrupts to eventfds, or unwire). */
  DEVICE_SET_IRQS: 0x3b6e,
  /** Device: function-level reset. */
  DEVICE_RESET: 0x3b6f,
  /** Container (type1): fills `vfio_iommu_type1_info`. */
  IOMMU_GET_INFO: 0x3b70,
  /** Container (type1): `vfio_iommu_type1_dma_map`. */
  IOMMU_MAP_DMA: 0x3b71,
  /** Container (type1): `vfio_iommu_type1_dma_unmap`. */
  IOMMU_UNMAP_DMA: 0x3b72,
} as const;

/** `vfio_group_status`: `{ u32 argsz; u32 flags; }`. */
export const VfioGroupStatus = {
  SIZE: 8,
  ARGSZ: 0,
  FLAGS: 4,
  /** Every device of the group is bound to a VFIO driver (or none). */
  FLAG_VIABLE: 1 << 0,
  /** The group is attached to a container. */
  FLAG_CONTAINER_SET: 1 << 1,
} as const;

/** `vfio_device_info`: argsz, flags, num_regions, num_irqs, cap_offset, pad. */
export const VfioDeviceInfo = {
  SIZE: 24,
  ARGSZ: 0,
  FLAGS: 4,
  NUM_REGIONS: 8,
  NUM_IRQS: 12,
  /** The device supports `VFIO_DEVICE_RESET`. */
  FLAG_RESET: 1 << 0,
  /** A vfio-pci device. */
  FLAG_PCI: 1 << 1,
} as const;

/** `vfio_region_info`: argsz, flags, index, cap_offset, u64 size, u64 offset. */
export const VfioRegionInfo = {
  SIZE: 32,
  ARGSZ: 0,
  FLAGS: 4,
  INDEX: 8,
  CAP_OFFSET: 12,
  REGION_SIZE: 16,
  REGION_OFFSET: 24,
  /** The region can be read with `pread`. */
  FLAG_READ: 1 << 0,
  /** The region can be written with `pwrite`. */
  FLAG_WRITE: 1 << 1,
  /** The region can be mapped with `mmap` of the device fd at `offset`. */
  FLAG_MMAP: 1 << 2,
  /** The info has capabilities chained from `cap_offset`. */
  FLAG_CAPS: 1 << 3,
} as const;

/** `vfio_irq_info`: argsz, flags, index, count. */
export const VfioIrqInfo = {
  SIZE: 16,
  ARGSZ: 0,
  FLAGS: 4,
  INDEX: 8,
  COUNT: 12,
  /** Interrupts of this index can signal eventfds. */
  FLAG_EVENTFD: 1 << 0,
  /** They can be masked. */
  FLAG_MASKABLE: 1 << 1,
  /** They are masked automatically when they fire (INTx). */
  FLAG_AUTOMASKED: 1 << 2,
  /** The number of vectors cannot change once enabled. */
  FLAG_NORESIZE: 1 << 3,
} as const;

/** `vfio_irq_set`: argsz, flags, index, start, count, then `count` data items. */
export const VfioIrqSet = {
  /** Size of the header before `data`. */
  HEADER_SIZE: 20,
  ARGSZ: 0,
  FLAGS: 4,
  INDEX: 8,
  START: 12,
  COUNT: 16,
  DATA: 20,
  /** No data: with TRIGGER and count 0, disables the index. */
  DATA_NONE: 1 << 0,
  /** Data is one u8 boolean per vector. */
  DATA_BOOL: 1 << 1,
  /** Data is one s32 eventfd per vector; -1 unwires that vector. */
  DATA_EVENTFD: 1 << 2,
  ACTION_MASK: 1 << 3,
  ACTION_UNMASK: 1 << 4,
  ACTION_TRIGGER: 1 << 5,
} as const;

/** `vfio_iommu_type1_info`: argsz, flags, u64 iova_pgsizes, cap_offset, pad. */
export const VfioIommuInfo = {
  SIZE: 24,
  ARGSZ: 0,
  FLAGS: 4,
  IOVA_PGSIZES: 8,
  CAP_OFFSET: 16,
  /** `iova_pgsizes` is valid. */
  FLAG_PGSIZES: 1 << 0,
  /** Capabilities follow at `cap_offset` (ask again with a larger argsz). */
  FLAG_CAPS: 1 << 1,
  /** Capability ID of `vfio_iommu_type1_info_cap_iova_range`. */
  CAP_IOVA_RANGE: 1,
} as const;

/**
 * `vfio_info_cap_header` (`u16 id; u16 version; u32 next;`), followed for the
 * IOVA range capability by `u32 nr_iovas; u32 reserved;` and
 * `{ u64 start; u64 end; }` pairs (end inclusive).
 */
export const VfioInfoCap = {
  ID: 0,
  VERSION: 2,
  NEXT: 4,
  IOVA_NR: 8,
  IOVA_RANGES: 16,
  IOVA_RANGE_SIZE: 16,
} as const;

/** `vfio_iommu_type1_dma_map`: argsz, flags, u64 vaddr, u64 iova, u64 size. */
export const VfioDmaMap = {
  SIZE: 32,
  ARGSZ: 0,
  FLAGS: 4,
  VADDR: 8,
  IOVA: 16,
  MAP_SIZE: 24,
  /** The device may read the range. */
  FLAG_READ: 1 << 0,
  /** The device may write the range. */
  FLAG_WRITE: 1 << 1,
} as const;

/** `vfio_iommu_type1_dma_unmap`: argsz, flags, u64 iova, u64 size. */
export const VfioDmaUnmap = {
  SIZE: 24,
  ARGSZ: 0,
  FLAGS: 4,
  IOVA: 8,
  UNMAP_SIZE: 16,
} as const;

/** vfio-pci region indexes. */
export const VfioPciRegion = {
  BAR0: 0,
  BAR5: 5,
  ROM: 6,
  CONFIG: 7,
  VGA: 8,
  /** Regions with a fixed meaning; higher ones are device specific. */
  COUNT: 9,
} as const;

/** vfio-pci interrupt indexes. */
export const VfioPciIrq = {
  INTX: 0,
  MSI: 1,
  MSIX: 2,
  ERR: 3,
  REQ: 4,
} as const;

/**
 * The file offset vfio-pci gives region `index` on the device fd
 * (`VFIO_PCI_INDEX_TO_OFFSET`: index << 40). Region info reports the same
 * value; this is for fakes and documentation.
 */
export function vfioPciRegionOffset(index: number): number {
  return index * 2 ** 40;
}
