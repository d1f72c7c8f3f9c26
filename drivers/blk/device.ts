/**
 * The blk driver: a virtio-blk device (virtio 1.2 §5.2) on the SDK's
 * software-device kit. At probe time it measures the backing file or block
 * device, and builds the features and the full `struct virtio_blk_config`
 * (§5.2.4) from it and the options; the requests are served in
 * `blk_worker.ts`, one Worker per ring.
 *
 * @module
 */

import {
  bit,
  type DeviceDescription,
  type Driver,
  type ProbeParams,
  VirtioBlkFeatureBit,
  VirtioDeviceId,
  VirtioFeatureBit,
} from "@vhost-mdev/sdk";
import { blkConfig, blkConfigFeatures, type BlkConfigOptions } from "@vhost-mdev/sdk/blk";
import { softwareDriver } from "@vhost-mdev/sdk/soft";
import { BLK_LIMITS, CAPACITY_OPTION } from "./limits.ts";
import { BLK_OPTIONS, type BlkOptions, parseBlkOptions } from "./options.ts";

/** Largest ring the device accepts. */
const MAX_QUEUE_SIZE = 1024;
/** Bytes of a sector. */
const SECTOR = 512;

/**
 * Size in bytes of a regular file or block device.
 *
 * @throws Error for a path that is neither.
 */
export function backingSize(path: string): number {
  const info = Deno.statSync(path);
  if (info.isFile) return info.size;
  if (info.isBlockDevice) {
    using f = Deno.openSync(path, { read: true });
    return f.seekSync(0, Deno.SeekMode.End);
  }
  throw new Error(`blk: ${path} is neither a regular file nor a block device`);
}

/** The config fields of a device on a backing store of `bytes` bytes with `options`. */
export function blkConfigOptions(
  options: BlkOptions,
  bytes: number,
  queues: number,
): BlkConfigOptions {
  const capacitySectors = Math.floor(bytes / options.blockSize) * (options.blockSize / SECTOR);
  const blockSectors = options.blockSize / SECTOR;
  const config: BlkConfigOptions = {
    capacitySectors,
    sizeMax: BLK_LIMITS.sizeMax,
    segMax: BLK_LIMITS.segMax,
    blkSize: options.blockSize,
    topology: { physicalBlockExp: 0, alignmentOffset: 0, minIoSize: 1, optIoSize: 0 },
    numQueues: queues,
  };
  if (options.readonly) return config;
  return {
    ...config,
    maxDiscardSectors: BLK_LIMITS.maxDiscardSectors,
    maxDiscardSeg: BLK_LIMITS.maxDiscardSeg,
    discardSectorAlignment: blockSectors,
    maxWriteZeroesSectors: BLK_LIMITS.maxWriteZeroesSectors,
    maxWriteZeroesSeg: BLK_LIMITS.maxWriteZeroesSeg,
    writeZeroesMayUnmap: true,
  };
}

/**
 * The features offered (virtio 1.2 §5.2.3): `VERSION_1`, `EVENT_IDX`,
 * `INDIRECT_DESC`, `FLUSH`, `MQ`, the ones the config fields need
 * (`SEG_MAX`, `SIZE_MAX`, `BLK_SIZE`, `TOPOLOGY`, and `DISCARD` and
 * `WRITE_ZEROES` when writable), and `RO` for a read-only device.
 */
export function blkFeatures(options: BlkOptions, config: BlkConfigOptions): bigint {
  const F = VirtioBlkFeatureBit;
  return bit(VirtioFeatureBit.VERSION_1) | bit(VirtioFeatureBit.EVENT_IDX) |
    bit(VirtioFeatureBit.INDIRECT_DESC) | bit(F.FLUSH) | bit(F.MQ) |
    blkConfigFeatures(config) | (options.readonly ? bit(F.RO) : 0n);
}

/** The blk driver. */
export const driver: Driver = {
  name: "blk",
  description: "virtio-blk on a regular file or raw block device",
  pciIds: [],
  options: BLK_OPTIONS,
  async probe(ctx, params: ProbeParams): Promise<DeviceDescription> {
    const options = parseBlkOptions(params.options);
    const bytes = backingSize(options.file);
    const config = blkConfigOptions(options, bytes, params.queues);
    const kit = softwareDriver({
      name: "blk",
      description: driver.description,
      deviceId: VirtioDeviceId.BLOCK,
      features: blkFeatures(options, config),
      numQueues: params.queues,
      maxQueueSize: MAX_QUEUE_SIZE,
      config: blkConfig(config),
      options: BLK_OPTIONS,
      inflight: options.inflight,
      worker: new URL("./blk_worker.ts", import.meta.url),
    });
    return await kit.probe(ctx, {
      ...params,
      options: { ...params.options, [CAPACITY_OPTION]: String(config.capacitySectors) },
    });
  },
};
