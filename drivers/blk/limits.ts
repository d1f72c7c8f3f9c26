/**
 * The request limits the blk device advertises in its config space
 * (virtio 1.2 §5.2.4) and enforces on every request (§5.2.6).
 *
 * @module
 */

/** Limits of one blk device's requests. */
export const BLK_LIMITS = {
  /** Most data segments per request (`seg_max`). */
  segMax: 126,
  /** Largest data segment in bytes (`size_max`). */
  sizeMax: 1 << 20,
  /** Most sectors one discard segment covers (`max_discard_sectors`). */
  maxDiscardSectors: 1 << 22,
  /** Most segments per discard request (`max_discard_seg`). */
  maxDiscardSeg: 32,
  /** Most sectors one write-zeroes segment covers (`max_write_zeroes_sectors`). */
  maxWriteZeroesSectors: 1 << 22,
  /** Most segments per write-zeroes request (`max_write_zeroes_seg`). */
  maxWriteZeroesSeg: 32,
} as const;

/**
 * The device option, set by the driver at probe time and read by the
 * Workers, that carries the capacity in 512-byte sectors measured then.
 */
export const CAPACITY_OPTION = "capacity-sectors";
