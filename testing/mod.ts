/**
 * What vendors test drivers with: a vhost-user frontend, a generic virtio
 * guest and minimal virtio-net and virtio-blk guest drivers on it in
 * TypeScript, frame builders, a typed runner for DPDK's testpmd, and
 * emulated PCI hardware behind the VFIO interfaces.
 *
 * @example Attach the TypeScript frontend to a served device
 * ```ts
 * import { VhostUserFrontend, VirtioNetDriver } from "@vhost-mdev/testing";
 *
 * const frontend = await VhostUserFrontend.connect("/tmp/vhost-net0.sock");
 * const net = await VirtioNetDriver.start(frontend, { queuePairs: 1, ringSize: 256 });
 * await net.stop();
 * frontend.close();
 * ```
 *
 * @module
 */

export * from "./testpmd.ts";
export * from "./until.ts";
export * from "./programs.ts";
export * from "./driver_harness.ts";
export * from "./frames.ts";
export * from "./vhost_user_frontend.ts";
export * from "./virtio_guest.ts";
export * from "./virtio_net_driver.ts";
export * from "./virtio_blk_driver.ts";
