/**
 * Virtio numbers from the OASIS virtio 1.2 specification: device status
 * bits, feature bits shared by all devices, virtio-net feature bits and the
 * virtio-net header and config layout.
 *
 * @module
 */

/** Device status bits (virtio 1.2 §2.1). */
export const VirtioStatus = {
  /** The guest noticed the device. */
  ACKNOWLEDGE: 1,
  /** The guest knows how to drive it. */
  DRIVER: 2,
  /** The driver is set up and ready: the device may run. */
  DRIVER_OK: 4,
  /** Feature negotiation is complete. */
  FEATURES_OK: 8,
  /** The device hit an error it cannot recover from without a reset. */
  NEEDS_RESET: 64,
  /** The guest gave up on the device. */
  FAILED: 128,
} as const;

/** Virtio device IDs (virtio 1.2 §5). */
export const VirtioDeviceId = {
  /** Network card. */
  NET: 1,
  /** Block device. */
  BLOCK: 2,
  /** Entropy source (virtio-rng, virtio 1.2 §5.4). */
  ENTROPY: 4,
} as const;

/** Feature bit numbers that apply to every device type (virtio 1.2 §6). */
export const VirtioFeatureBit = {
  NOTIFY_ON_EMPTY: 24,
  ANY_LAYOUT: 27,
  INDIRECT_DESC: 28,
  EVENT_IDX: 29,
  /** vhost-user: the backend speaks protocol features (not a virtio bit). */
  PROTOCOL_FEATURES: 30,
  VERSION_1: 32,
  ACCESS_PLATFORM: 33,
  RING_PACKED: 34,
  IN_ORDER: 35,
  ORDER_PLATFORM: 36,
  SR_IOV: 37,
  NOTIFICATION_DATA: 38,
  RING_RESET: 40,
} as const;

/** vhost: log dirty pages of every write (used during live migration). */
export const VHOST_F_LOG_ALL = 26;

/** virtio-net feature bit numbers (virtio 1.2 §5.1.3). */
export const VirtioNetFeatureBit = {
  CSUM: 0,
  GUEST_CSUM: 1,
  CTRL_GUEST_OFFLOADS: 2,
  MTU: 3,
  MAC: 5,
  GUEST_TSO4: 7,
  GUEST_TSO6: 8,
  GUEST_ECN: 9,
  GUEST_UFO: 10,
  HOST_TSO4: 11,
  HOST_TSO6: 12,
  HOST_ECN: 13,
  HOST_UFO: 14,
  MRG_RXBUF: 15,
  STATUS: 16,
  CTRL_VQ: 17,
  CTRL_RX: 18,
  CTRL_VLAN: 19,
  GUEST_ANNOUNCE: 21,
  MQ: 22,
  CTRL_MAC_ADDR: 23,
} as const;

/** virtio-blk feature bit numbers (virtio 1.2 §5.2.3). */
export const VirtioBlkFeatureBit = {
  /** `size_max` in config is the largest segment. */
  SIZE_MAX: 1,
  /** `seg_max` in config is the most segments per request. */
  SEG_MAX: 2,
  /** `geometry` in config is valid. */
  GEOMETRY: 4,
  /** The device is read-only. */
  RO: 5,
  /** `blk_size` in config is valid. */
  BLK_SIZE: 6,
  /** Cache flush command. */
  FLUSH: 9,
  /** `topology` in config is valid. */
  TOPOLOGY: 10,
  /** The cache mode (`writeback`) is writable in config. */
  CONFIG_WCE: 11,
  /** `num_queues` in config is valid. */
  MQ: 12,
  /** Discard command. */
  DISCARD: 13,
  /** Write-zeroes command. */
  WRITE_ZEROES: 14,
} as const;

/** virtio-blk request types, the `type` of `struct virtio_blk_req` (virtio 1.2 §5.2.6). */
export const VirtioBlkRequestType = {
  /** Read sectors into the device-writable data buffers. */
  IN: 0,
  /** Write the device-readable data buffers to sectors. */
  OUT: 1,
  /** Flush the device's write cache (`VIRTIO_BLK_F_FLUSH`). */
  FLUSH: 4,
  /** Read the device ID string, up to {@linkcode VIRTIO_BLK_ID_BYTES} bytes. */
  GET_ID: 8,
  /** Read the device lifetime (`VIRTIO_BLK_F_LIFETIME`). */
  GET_LIFETIME: 10,
  /** Discard sector ranges (`VIRTIO_BLK_F_DISCARD`). */
  DISCARD: 11,
  /** Write zeroes to sector ranges (`VIRTIO_BLK_F_WRITE_ZEROES`). */
  WRITE_ZEROES: 13,
  /** Securely erase sector ranges (`VIRTIO_BLK_F_SECURE_ERASE`). */
  SECURE_ERASE: 14,
} as const;

/** virtio-blk request status, the last byte of a request (virtio 1.2 §5.2.6). */
export const VirtioBlkStatus = {
  /** Success. */
  OK: 0,
  /** The request failed (an I/O error, or sectors outside the device). */
  IOERR: 1,
  /** The request type or a flag is not supported. */
  UNSUPP: 2,
} as const;

/** Bytes of the virtio-blk request header: le32 `type`, le32 `reserved`, le64 `sector`. */
export const VIRTIO_BLK_REQ_HEADER_SIZE = 16;
/** Bytes of a sector: `sector` and `capacity` count in these, whatever `blk_size` is. */
export const VIRTIO_BLK_SECTOR_SIZE = 512;
/** Bytes of the ID string `VIRTIO_BLK_T_GET_ID` returns (NUL-padded when shorter). */
export const VIRTIO_BLK_ID_BYTES = 20;
/**
 * Bytes of one discard / write-zeroes segment, `struct
 * virtio_blk_discard_write_zeroes`: le64 `sector`, le32 `num_sectors`, le32 `flags`.
 */
export const VIRTIO_BLK_DISCARD_SEGMENT_SIZE = 16;
/** Segment flag of a write-zeroes request: the device may deallocate the sectors. */
export const VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP = 1;

/** Byte offsets in the virtio-blk config space (virtio 1.2 §5.2.4). */
export const VirtioBlkConfig = {
  /** le64 `capacity`, in 512-byte sectors. */
  CAPACITY: 0,
  /** le32 `size_max` (valid with `VIRTIO_BLK_F_SIZE_MAX`). */
  SIZE_MAX: 8,
  /** le32 `seg_max` (valid with `VIRTIO_BLK_F_SEG_MAX`). */
  SEG_MAX: 12,
  /** le16 `geometry.cylinders` (valid with `VIRTIO_BLK_F_GEOMETRY`). */
  GEOMETRY_CYLINDERS: 16,
  /** u8 `geometry.heads`. */
  GEOMETRY_HEADS: 18,
  /** u8 `geometry.sectors`. */
  GEOMETRY_SECTORS: 19,
  /** le32 `blk_size` (valid with `VIRTIO_BLK_F_BLK_SIZE`). */
  BLK_SIZE: 20,
  /** u8 `topology.physical_block_exp` (valid with `VIRTIO_BLK_F_TOPOLOGY`). */
  PHYSICAL_BLOCK_EXP: 24,
  /** u8 `topology.alignment_offset`. */
  ALIGNMENT_OFFSET: 25,
  /** le16 `topology.min_io_size`. */
  MIN_IO_SIZE: 26,
  /** le32 `topology.opt_io_size`. */
  OPT_IO_SIZE: 28,
  /** u8 `writeback` (with `VIRTIO_BLK_F_CONFIG_WCE`). */
  WRITEBACK: 32,
  /** le16 `num_queues` (valid with `VIRTIO_BLK_F_MQ`). */
  NUM_QUEUES: 34,
  /** le32 `max_discard_sectors` (valid with `VIRTIO_BLK_F_DISCARD`). */
  MAX_DISCARD_SECTORS: 36,
  /** le32 `max_discard_seg`. */
  MAX_DISCARD_SEG: 40,
  /** le32 `discard_sector_alignment`. */
  DISCARD_SECTOR_ALIGNMENT: 44,
  /** le32 `max_write_zeroes_sectors` (valid with `VIRTIO_BLK_F_WRITE_ZEROES`). */
  MAX_WRITE_ZEROES_SECTORS: 48,
  /** le32 `max_write_zeroes_seg`. */
  MAX_WRITE_ZEROES_SEG: 52,
  /** u8 `write_zeroes_may_unmap`. */
  WRITE_ZEROES_MAY_UNMAP: 56,
  /** Size of the fields through `write_zeroes_may_unmap` and its padding. */
  SIZE: 60,
} as const;

/**
 * The feature bit `bit` as a mask.
 *
 * @example
 * ```ts
 * import { bit, VirtioFeatureBit } from "@vhost-mdev/sdk";
 * const version1 = bit(VirtioFeatureBit.VERSION_1); // 1n << 32n
 * ```
 */
export function bit(n: number): bigint {
  return 1n << BigInt(n);
}

/** Whether `features` has bit `n` set. */
export function hasBit(features: bigint, n: number): boolean {
  return (features >> BigInt(n) & 1n) === 1n;
}

/** `virtio_net_hdr` size with `VERSION_1` or `MRG_RXBUF` (has `num_buffers`). */
export const VIRTIO_NET_HDR_SIZE = 12;
/** Legacy `virtio_net_hdr` size without `num_buffers`. */
export const VIRTIO_NET_HDR_LEGACY_SIZE = 10;
/** virtio-net config `status`: link is up. */
export const VIRTIO_NET_S_LINK_UP = 1;

/** Byte offsets in the virtio-net config space (virtio 1.2 §5.1.4). */
export const VirtioNetConfig = {
  MAC: 0,
  STATUS: 6,
  MAX_VIRTQUEUE_PAIRS: 8,
  MTU: 10,
  /** Size of the fields above. */
  SIZE: 12,
} as const;

/** Names of the status bits set in `status`, for logs ("ACKNOWLEDGE|DRIVER"). */
export function statusNames(status: number): string {
  const names = Object.entries(VirtioStatus).filter(([, v]) => (status & v) !== 0).map(([k]) => k);
  return names.length ? names.join("|") : "0";
}
