/**
 * virtio-blk (virtio 1.2 §5.2) for block devices and their guests: the
 * config-space builder {@linkcode blkConfig} and the feature bits its fields
 * need, {@linkcode blkConfigFeatures}. The feature-bit numbers and config
 * offsets themselves are `VirtioBlkFeatureBit` and `VirtioBlkConfig` in
 * `@vhost-mdev/sdk`.
 *
 * @example
 * ```ts
 * import { blkConfig } from "@vhost-mdev/sdk/blk";
 * const config = blkConfig({ capacitySectors: 2048 }); // a 1 MiB disk
 * ```
 *
 * @module
 */

export {
  BLK_CONFIG_SIZE,
  blkConfig,
  blkConfigFeatures,
  type BlkConfigOptions,
  type BlkGeometry,
  type BlkTopology,
} from "./config.ts";
