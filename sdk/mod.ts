/**
 * vhost-mdev: write a userspace backend driver for a vhost accelerator in
 * TypeScript. A driver implements {@linkcode Driver} (see `ops.ts`); the SDK
 * speaks vhost-user to QEMU and DPDK, keeps ring state and the guest memory
 * table, relays kicks, and calls the driver's ops at the right moments.
 *
 * @example Serve a driver on a socket
 * ```ts
 * import { VhostMdevDevice } from "@vhost-mdev/sdk";
 * import { VhostUserServer } from "@vhost-mdev/sdk/vhost-user";
 * import { driver } from "@vhost-mdev/sim";
 *
 * const device = await VhostMdevDevice.create(driver, { queues: 1, options: { mode: "loopback" } });
 * device.addListener((e) => console.log(e.type, e.message));
 * const server = VhostUserServer.listen(device, "/tmp/vhost-net0.sock");
 * ```
 *
 * @module
 */

export type * from "./ops.ts";
export { NET_RING_COUNTERS } from "./ops.ts";
export {
  type DeviceOptions,
  type DeviceOwner,
  VhostMdevDevice,
  type VringAddr,
  type VringFile,
  type VringState,
} from "./core/device.ts";
export type { IoctlArgs, IoctlResults } from "./core/ioctl.ts";
export * from "./core/errors.ts";
export { checkDoorbell, type Doorbell } from "./core/doorbell.ts";
export * from "./core/events.ts";
export * from "./core/inflight.ts";
export * from "./memory/mod.ts";
export * from "./virtqueue/mod.ts";
export * from "./uapi/virtio.ts";
export * from "./uapi/vhost.ts";
