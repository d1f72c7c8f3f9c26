/**
 * The blk device for the crash test, served as a plugin
 * (`serve --driver ./tests/vm/crash_blk_driver.ts`): the bundled blk
 * device's requests, features and config, with a Worker
 * (`crash_blk_worker.ts`) that can slow each write down (`--write-delay-ms`)
 * so that a kill lands while a write is in flight, and, for the negative
 * check, acknowledge resubmitted writes without doing them
 * (`--lose-resubmitted`), as a backend that forgot its in-flight requests
 * would.
 *
 * @module
 */

import { type Driver, VirtioDeviceId } from "@vhost-mdev/sdk";
import { blkConfig } from "@vhost-mdev/sdk/blk";
import { softwareDriver } from "@vhost-mdev/sdk/soft";
import { backingSize } from "@vhost-mdev/blk";
import { BLK_OPTIONS, parseBlkOptions } from "../../drivers/blk/options.ts";
import { blkConfigOptions, blkFeatures } from "../../drivers/blk/device.ts";
import { CAPACITY_OPTION } from "../../drivers/blk/limits.ts";

const OPTIONS = [
  ...BLK_OPTIONS,
  { name: "write-delay-ms", description: "sleep this long in each write", default: "0" },
  {
    name: "lose-resubmitted",
    description: "acknowledge resubmitted writes without doing them",
    values: ["false", "true"],
    default: "false",
  },
];

/** The crash test's blk device. */
export const driver: Driver = {
  name: "crash-blk",
  description: "virtio-blk with slow writes, for the crash test",
  pciIds: [],
  options: OPTIONS,
  async probe(ctx, params) {
    const options = parseBlkOptions(params.options);
    const config = blkConfigOptions(options, backingSize(options.file), params.queues);
    const kit = softwareDriver({
      name: "crash-blk",
      description: driver.description,
      deviceId: VirtioDeviceId.BLOCK,
      features: blkFeatures(options, config),
      numQueues: params.queues,
      maxQueueSize: 1024,
      config: blkConfig(config),
      options: OPTIONS,
      inflight: options.inflight,
      worker: new URL("./crash_blk_worker.ts", import.meta.url),
    });
    return await kit.probe(ctx, {
      ...params,
      options: { ...params.options, [CAPACITY_OPTION]: String(config.capacitySectors) },
    });
  },
};
