/**
 * PCI configuration-space numbers (type 0 header, capability IDs, MSI-X)
 * and the virtio 1.2 PCI modern transport layout (§4.1.4): the vendor
 * capability that points into a BAR, its `cfg_type`s, and the register map
 * of `virtio_pci_common_cfg`.
 *
 * @module
 */

/** Offsets in the type 0 configuration header. */
export const PciConfig = {
  VENDOR_ID: 0x00,
  DEVICE_ID: 0x02,
  COMMAND: 0x04,
  STATUS: 0x06,
  REVISION_ID: 0x08,
  /** Programming interface, subclass, class: bytes 0x09..0x0b. */
  CLASS_PROG: 0x09,
  HEADER_TYPE: 0x0e,
  /** BAR0; BARn is at `BAR0 + 4 * n`. */
  BAR0: 0x10,
  SUBSYSTEM_VENDOR_ID: 0x2c,
  SUBSYSTEM_ID: 0x2e,
  /** Offset of the first capability (low two bits reserved). */
  CAPABILITY_LIST: 0x34,
  INTERRUPT_LINE: 0x3c,
  INTERRUPT_PIN: 0x3d,
  /** Size of the standard header; capabilities live above it. */
  HEADER_SIZE: 0x40,
  /** Size of conventional config space (extended space goes to 4096). */
  SIZE: 0x100,
} as const;

/** Bits of the command register. */
export const PciCommand = {
  IO: 1 << 0,
  MEMORY: 1 << 1,
  /** The function may issue DMA (bus master). */
  BUS_MASTER: 1 << 2,
  INTX_DISABLE: 1 << 10,
} as const;

/** Bits of the status register. */
export const PciStatus = {
  /** The capability list at 0x34 is valid. */
  CAP_LIST: 1 << 4,
} as const;

/** Capability IDs (byte 0 of each capability). */
export const PciCapabilityId = {
  POWER_MANAGEMENT: 0x01,
  MSI: 0x05,
  VENDOR: 0x09,
  PCI_EXPRESS: 0x10,
  MSIX: 0x11,
} as const;

/** The MSI-X capability: message control and the table/PBA locations. */
export const PciMsix = {
  /** u16: bits 0-10 table size minus one, bit 14 function mask, bit 15 enable. */
  MESSAGE_CONTROL: 2,
  /** u32: bits 0-2 BAR indicator, the rest the table's offset in that BAR. */
  TABLE: 4,
  /** u32: same encoding for the pending-bit array. */
  PBA: 8,
  TABLE_SIZE_MASK: 0x7ff,
  ENABLE: 1 << 15,
  FUNCTION_MASK: 1 << 14,
  /** Bytes per table entry (address lo/hi, data, vector control). */
  ENTRY_SIZE: 16,
  /** Size of the capability structure. */
  SIZE: 12,
} as const;

/** PCI vendor ID of virtio devices (Red Hat / Qumranet). */
export const VIRTIO_PCI_VENDOR_ID = 0x1af4;
/** Modern (virtio 1.x) device IDs are `0x1040 + virtio device ID`. */
export const VIRTIO_PCI_MODERN_DEVICE_BASE = 0x1040;
/** Transitional device IDs: 0x1000 net, 0x1001 block, ... up to 0x103f. */
export const VIRTIO_PCI_TRANSITIONAL_NET = 0x1000;
/** Transitional block device ID. */
export const VIRTIO_PCI_TRANSITIONAL_BLOCK = 0x1001;

/** `cfg_type` of a virtio vendor capability (virtio 1.2 §4.1.4). */
export const VirtioPciCapType = {
  /** `virtio_pci_common_cfg`. */
  COMMON: 1,
  /** Queue doorbells; the capability carries `notify_off_multiplier`. */
  NOTIFY: 2,
  /** The ISR status byte (read to acknowledge INTx). */
  ISR: 3,
  /** Device-specific config (virtio-net: MAC, status, queue pairs...). */
  DEVICE: 4,
  /** Config-space window into the BARs, for when BARs are not mapped. */
  PCI_CFG: 5,
  SHARED_MEMORY: 8,
  VENDOR: 9,
} as const;

/**
 * `struct virtio_pci_cap` inside config space: cap_vndr, cap_next, cap_len,
 * cfg_type, bar, id, 2 padding bytes, u32 offset, u32 length; the notify
 * capability appends u32 `notify_off_multiplier`.
 */
export const VirtioPciCap = {
  CAP_LEN: 2,
  CFG_TYPE: 3,
  BAR: 4,
  ID: 5,
  OFFSET: 8,
  LENGTH: 12,
  NOTIFY_OFF_MULTIPLIER: 16,
  /** Size of the generic capability. */
  SIZE: 16,
  /** Size of the notify capability. */
  NOTIFY_SIZE: 20,
} as const;

/**
 * Register offsets in `virtio_pci_common_cfg` with their widths: the driver
 * must access each with exactly its width.
 */
export const VirtioCommonCfg = {
  /** u32 RW: which 32-bit word of device features `DEVICE_FEATURE` shows. */
  DEVICE_FEATURE_SELECT: 0x00,
  /** u32 RO. */
  DEVICE_FEATURE: 0x04,
  /** u32 RW. */
  DRIVER_FEATURE_SELECT: 0x08,
  /** u32 RW. */
  DRIVER_FEATURE: 0x0c,
  /** u16 RW: MSI-X vector for config changes. */
  CONFIG_MSIX_VECTOR: 0x10,
  /** u16 RO: number of virtqueues. */
  NUM_QUEUES: 0x12,
  /** u8 RW: device status; writing 0 resets the device. */
  DEVICE_STATUS: 0x14,
  /** u8 RO: changes whenever device config changes. */
  CONFIG_GENERATION: 0x15,
  /** u16 RW: the queue the QUEUE_* registers refer to. */
  QUEUE_SELECT: 0x16,
  /** u16 RW: reads the maximum, the driver may write a smaller size. */
  QUEUE_SIZE: 0x18,
  /** u16 RW: MSI-X vector of the selected queue; reads NO_VECTOR when refused. */
  QUEUE_MSIX_VECTOR: 0x1a,
  /** u16 RW: write 1 to enable the selected queue. */
  QUEUE_ENABLE: 0x1c,
  /** u16 RO: doorbell offset of the selected queue, in multiplier units. */
  QUEUE_NOTIFY_OFF: 0x1e,
  /** u64 RW: descriptor table address (two 32-bit halves). */
  QUEUE_DESC: 0x20,
  /** u64 RW: driver (available) ring address. */
  QUEUE_DRIVER: 0x28,
  /** u64 RW: device (used) ring address. */
  QUEUE_DEVICE: 0x30,
  /** u16 RO (virtio 1.2): notification data for this queue. */
  QUEUE_NOTIFY_DATA: 0x38,
  /** u16 RW (virtio 1.2): queue reset. */
  QUEUE_RESET: 0x3a,
  /** Size of the structure in virtio 1.0 (through QUEUE_DEVICE). */
  SIZE: 0x38,
} as const;

/** "No MSI-X vector" in `CONFIG_MSIX_VECTOR` / `QUEUE_MSIX_VECTOR`. */
export const VIRTIO_MSI_NO_VECTOR = 0xffff;
