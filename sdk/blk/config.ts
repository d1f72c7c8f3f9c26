/**
 * The virtio-blk config space (virtio 1.2 §5.2.4), `struct
 * virtio_blk_config`, built from named fields. Every field is written, so
 * a frontend that reads the whole struct (QEMU's vhost-user-blk reads at
 * least 57 bytes with `GET_CONFIG`) sees zeros where the device has nothing
 * to say; the feature bits that make the fields valid come from
 * {@linkcode blkConfigFeatures}.
 *
 * @module
 */

import { bit, VirtioBlkConfig, VirtioBlkFeatureBit } from "../uapi/virtio.ts";

/** `struct virtio_blk_geometry` (virtio 1.2 §5.2.4), valid with `VIRTIO_BLK_F_GEOMETRY`. */
export interface BlkGeometry {
  /** le16 `cylinders`. */
  cylinders: number;
  /** u8 `heads`. */
  heads: number;
  /** u8 `sectors` per track. */
  sectors: number;
}

/** `struct virtio_blk_topology` (virtio 1.2 §5.2.4), valid with `VIRTIO_BLK_F_TOPOLOGY`. */
export interface BlkTopology {
  /** u8: log2 of logical blocks per physical block. */
  physicalBlockExp: number;
  /** u8: offset of the first aligned logical block. */
  alignmentOffset: number;
  /** le16: suggested minimum I/O size, in blocks. */
  minIoSize: number;
  /** le32: optimal (suggested maximum) I/O size, in blocks. */
  optIoSize: number;
}

/** The fields of {@linkcode blkConfig}; all but `capacitySectors` default to 0 (absent). */
export interface BlkConfigOptions {
  /** Capacity in 512-byte sectors (le64 `capacity`). */
  capacitySectors: number | bigint;
  /** Largest segment in bytes (`size_max`, `VIRTIO_BLK_F_SIZE_MAX`). */
  sizeMax?: number;
  /** Most segments per request (`seg_max`, `VIRTIO_BLK_F_SEG_MAX`). */
  segMax?: number;
  /** Disk geometry (`VIRTIO_BLK_F_GEOMETRY`). */
  geometry?: BlkGeometry;
  /** Logical block size in bytes (`blk_size`, `VIRTIO_BLK_F_BLK_SIZE`), a power of two >= 512. */
  blkSize?: number;
  /** I/O topology (`VIRTIO_BLK_F_TOPOLOGY`). */
  topology?: BlkTopology;
  /** Cache mode: true writeback, false writethrough (`writeback`, `VIRTIO_BLK_F_CONFIG_WCE`). */
  writeback?: boolean;
  /** Request queues (`num_queues`, `VIRTIO_BLK_F_MQ`), 1..65535. */
  numQueues?: number;
  /** Most sectors one discard segment covers (`VIRTIO_BLK_F_DISCARD`). */
  maxDiscardSectors?: number;
  /** Most discard segments per request. */
  maxDiscardSeg?: number;
  /** Discard alignment, in sectors. */
  discardSectorAlignment?: number;
  /** Most sectors one write-zeroes segment covers (`VIRTIO_BLK_F_WRITE_ZEROES`). */
  maxWriteZeroesSectors?: number;
  /** Most write-zeroes segments per request. */
  maxWriteZeroesSeg?: number;
  /** Whether write-zeroes may deallocate (`write_zeroes_may_unmap`). */
  writeZeroesMayUnmap?: boolean;
}

/** Bytes of `struct virtio_blk_config` through its final padding. */
export const BLK_CONFIG_SIZE: number = VirtioBlkConfig.SIZE;

const MAX_U64 = (1n << 64n) - 1n;

function checkUint(name: string, v: number, max: number): number {
  if (!Number.isInteger(v) || v < 0 || v > max) {
    throw new RangeError(`virtio-blk config: ${name} ${v} is not an integer in 0..${max}`);
  }
  return v;
}

/**
 * The config space of a virtio-blk device: all 60 bytes of `struct
 * virtio_blk_config` (virtio 1.2 §5.2.4), little-endian.
 *
 * @example A 1 GiB disk with 4 KiB blocks and 2 request queues
 * ```ts
 * import { blkConfig, blkConfigFeatures } from "@vhost-mdev/sdk/blk";
 *
 * const options = { capacitySectors: 2097152, blkSize: 4096, numQueues: 2, segMax: 126 };
 * const config = blkConfig(options); // 60 bytes
 * const features = blkConfigFeatures(options); // BLK_SIZE | MQ | SEG_MAX
 * ```
 *
 * @throws RangeError for a field out of its range (or a `blkSize` that is not
 *   a power of two of at least 512).
 */
export function blkConfig(options: BlkConfigOptions): Uint8Array {
  const bytes = new Uint8Array(BLK_CONFIG_SIZE);
  const v = new DataView(bytes.buffer);
  const O = VirtioBlkConfig;
  const u8 = 0xff, u16 = 0xffff, u32 = 0xffffffff;
  const capacity = BigInt(
    typeof options.capacitySectors === "bigint"
      ? options.capacitySectors
      : checkUint("capacitySectors", options.capacitySectors, Number.MAX_SAFE_INTEGER),
  );
  if (capacity < 0n || capacity > MAX_U64) {
    throw new RangeError(`virtio-blk config: capacitySectors ${capacity} is not a u64`);
  }
  v.setBigUint64(O.CAPACITY, capacity, true);
  v.setUint32(O.SIZE_MAX, checkUint("sizeMax", options.sizeMax ?? 0, u32), true);
  v.setUint32(O.SEG_MAX, checkUint("segMax", options.segMax ?? 0, u32), true);
  const g = options.geometry;
  if (g) {
    v.setUint16(O.GEOMETRY_CYLINDERS, checkUint("geometry.cylinders", g.cylinders, u16), true);
    v.setUint8(O.GEOMETRY_HEADS, checkUint("geometry.heads", g.heads, u8));
    v.setUint8(O.GEOMETRY_SECTORS, checkUint("geometry.sectors", g.sectors, u8));
  }
  const blkSize = checkUint("blkSize", options.blkSize ?? 0, u32);
  if (blkSize !== 0 && (blkSize < 512 || (blkSize & (blkSize - 1)) !== 0)) {
    throw new RangeError(`virtio-blk config: blkSize ${blkSize} is not a power of two >= 512`);
  }
  v.setUint32(O.BLK_SIZE, blkSize, true);
  const t = options.topology;
  if (t) {
    v.setUint8(
      O.PHYSICAL_BLOCK_EXP,
      checkUint("topology.physicalBlockExp", t.physicalBlockExp, u8),
    );
    v.setUint8(O.ALIGNMENT_OFFSET, checkUint("topology.alignmentOffset", t.alignmentOffset, u8));
    v.setUint16(O.MIN_IO_SIZE, checkUint("topology.minIoSize", t.minIoSize, u16), true);
    v.setUint32(O.OPT_IO_SIZE, checkUint("topology.optIoSize", t.optIoSize, u32), true);
  }
  v.setUint8(O.WRITEBACK, options.writeback ? 1 : 0);
  const queues = options.numQueues ?? 0;
  if (queues !== 0) checkUint("numQueues", queues, u16);
  v.setUint16(O.NUM_QUEUES, queues, true);
  v.setUint32(
    O.MAX_DISCARD_SECTORS,
    checkUint("maxDiscardSectors", options.maxDiscardSectors ?? 0, u32),
    true,
  );
  v.setUint32(O.MAX_DISCARD_SEG, checkUint("maxDiscardSeg", options.maxDiscardSeg ?? 0, u32), true);
  v.setUint32(
    O.DISCARD_SECTOR_ALIGNMENT,
    checkUint("discardSectorAlignment", options.discardSectorAlignment ?? 0, u32),
    true,
  );
  v.setUint32(
    O.MAX_WRITE_ZEROES_SECTORS,
    checkUint("maxWriteZeroesSectors", options.maxWriteZeroesSectors ?? 0, u32),
    true,
  );
  v.setUint32(
    O.MAX_WRITE_ZEROES_SEG,
    checkUint("maxWriteZeroesSeg", options.maxWriteZeroesSeg ?? 0, u32),
    true,
  );
  v.setUint8(O.WRITE_ZEROES_MAY_UNMAP, options.writeZeroesMayUnmap ? 1 : 0);
  return bytes;
}

/**
 * The virtio-blk feature bits (virtio 1.2 §5.2.3) that make the fields set
 * in `options` valid: `SIZE_MAX`, `SEG_MAX`, `GEOMETRY`, `BLK_SIZE`,
 * `TOPOLOGY`, `CONFIG_WCE` (when `writeback` is given), `MQ` (more than one
 * queue), `DISCARD` and `WRITE_ZEROES` (when their limits are set).
 *
 * @example
 * ```ts
 * import { blkConfigFeatures } from "@vhost-mdev/sdk/blk";
 * import { bit, VirtioBlkFeatureBit } from "@vhost-mdev/sdk";
 *
 * const f = blkConfigFeatures({ capacitySectors: 8, blkSize: 4096 });
 * console.log(f === bit(VirtioBlkFeatureBit.BLK_SIZE)); // true
 * ```
 */
export function blkConfigFeatures(options: BlkConfigOptions): bigint {
  const F = VirtioBlkFeatureBit;
  let f = 0n;
  if (options.sizeMax) f |= bit(F.SIZE_MAX);
  if (options.segMax) f |= bit(F.SEG_MAX);
  if (options.geometry) f |= bit(F.GEOMETRY);
  if (options.blkSize) f |= bit(F.BLK_SIZE);
  if (options.topology) f |= bit(F.TOPOLOGY);
  if (options.writeback !== undefined) f |= bit(F.CONFIG_WCE);
  if ((options.numQueues ?? 0) > 1) f |= bit(F.MQ);
  if (options.maxDiscardSectors || options.maxDiscardSeg) f |= bit(F.DISCARD);
  if (options.maxWriteZeroesSectors || options.maxWriteZeroesSeg) f |= bit(F.WRITE_ZEROES);
  return f;
}
