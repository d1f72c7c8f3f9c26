/**
 * The vhost-user transport (QEMU's docs/interop/vhost-user.rst): serve a
 * device to a frontend on a UNIX socket, as a server or a reconnecting
 * client; the sessions, the one wire codec both ends use, and the
 * protocol's numbers. A driver needs none of it; whoever serves a device
 * needs {@linkcode VhostUserServer} or {@linkcode VhostUserClient}.
 *
 * @example Serve a device
 * ```ts
 * import { VhostMdevDevice } from "@vhost-mdev/sdk";
 * import { VhostUserServer } from "@vhost-mdev/sdk/vhost-user";
 * import { driver } from "@vhost-mdev/sim";
 *
 * const device = await VhostMdevDevice.create(driver, { queues: 1, options: {} });
 * const server = VhostUserServer.listen(device, "/tmp/vhost-net0.sock");
 * ```
 *
 * @module
 */

export * from "./server.ts";
export * from "./client.ts";
export { OFFERED_PROTOCOL_FEATURES, offeredProtocolFeatures, VhostUserSession } from "./session.ts";
export * from "./message.ts";
export { MAX_UNSENT_BYTES, MessageSocket } from "./connection.ts";
export * from "../uapi/vhost_user.ts";
