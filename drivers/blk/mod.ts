/**
 * `blk`: a virtio-blk device (virtio 1.2 §5.2) backed by a regular file or
 * a raw block device, built on the SDK's software-device kit. Each running
 * request queue has its own Worker and its own fd on the backing store; it
 * reads and writes with `pread`/`pwrite` through a page-aligned bounce
 * buffer (so the `direct` option, `O_DIRECT`, works), flushes with
 * `fdatasync`, and discards or zeroes with `fallocate`.
 *
 * Requests: `IN`, `OUT`, `FLUSH`, `GET_ID`, `DISCARD`, `WRITE_ZEROES` (with
 * `UNMAP`). Features: `SEG_MAX`, `SIZE_MAX`, `BLK_SIZE`, `TOPOLOGY`,
 * `FLUSH`, `MQ`, `DISCARD`, `WRITE_ZEROES`, `RO` (the `readonly` option),
 * plus `EVENT_IDX` and `INDIRECT_DESC`; the config space is the whole
 * `struct virtio_blk_config` (§5.2.4). An I/O error, sectors outside the
 * device or a write to a read-only device answer `VIRTIO_BLK_S_IOERR`, an
 * unknown type or flag `VIRTIO_BLK_S_UNSUPP`; each such request is counted
 * in its ring's `errors` and reported, and the device goes on serving.
 *
 * Options: `file` (required), `readonly`, `direct`, `block-size`, `serial`;
 * the number of request queues is the device's `queues`.
 *
 * @example Serve a file as a disk with two request queues
 * ```ts
 * import { VhostMdevDevice } from "@vhost-mdev/sdk";
 * import { VhostUserServer } from "@vhost-mdev/sdk/vhost-user";
 * import { driver } from "@vhost-mdev/blk";
 *
 * const device = await VhostMdevDevice.create(driver, {
 *   queues: 2,
 *   options: { file: "/var/lib/disk.img", readonly: "false" },
 * });
 * device.addListener((e) => console.log(e.type, e.message));
 * const server = VhostUserServer.listen(device, "/tmp/vhost-blk0.sock");
 * ```
 *
 * @module
 */

export { backingSize, driver } from "./device.ts";
export { BLK_DEFAULTS, BLK_OPTIONS, type BlkOptions, parseBlkOptions } from "./options.ts";
export { BLK_LIMITS } from "./limits.ts";
