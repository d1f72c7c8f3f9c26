/**
 * Real Linux guests under QEMU (TCG, no KVM needed) in front of the SDK:
 *
 * - {@linkcode runPingVm}: a guest whose virtio-net NIC talks vhost-user to a
 *   device this process serves pings it; both sides' packet counters are
 *   compared. With a `during` hook the guest gets a QMP socket
 *   ({@linkcode QmpClient}), e.g. to pause and resume it while it pings.
 * - {@linkcode runChannelsVm}: a guest with a 2-queue-pair NIC on such a
 *   device changes its channel count with the ethtool ioctl while it pings,
 *   and the device's events during the changes are returned.
 * - {@linkcode runMigrationVm}: a guest served by one backend process per
 *   QEMU migrates from a source QEMU to a destination QEMU while it verifies
 *   the payloads of echo replies held across the switch-over.
 * - {@linkcode runVfioVm}: the ifcvf driver on real kernel VFIO inside a guest
 *   with an emulated Intel IOMMU, exchanging frames with this process through
 *   QEMU's virtio-net device.
 *
 * Both need `qemu-system-x86_64` and a static busybox
 * (`apt-get install qemu-system-x86 busybox-static`, or pass `setup: true`);
 * the guest kernel is a Debian package fetched once with `apt-get download`
 * and cached with the built images in
 * `${XDG_CACHE_HOME:-~/.cache}/vhost-mdev/guest`. The building blocks (host
 * tool checks, the QEMU process, its console and its QMP monitor, guest images, the UDP peer,
 * test frames) are exported for programs that boot guests of their own, and
 * so is the command-line side of such a program (flags, exit status).
 *
 * @example Ping a served device from a guest
 * ```ts
 * import { VhostMdevDevice } from "@vhost-mdev/sdk";
 * import { driver } from "@vhost-mdev/sim";
 * import { pingVmSummary, runPingVm } from "@vhost-mdev/testing/guest";
 *
 * const device = await VhostMdevDevice.create(driver, {
 *   queues: 1,
 *   options: { mode: "responder", ip: "10.0.0.1" },
 * });
 * const result = await runPingVm({ device, ip: "10.0.0.1", log: console.log });
 * console.log(pingVmSummary(result).join("\n"));
 * await device.close();
 * ```
 *
 * @module
 */

export * from "./ping_vm.ts";
export * from "./channels_vm.ts";
export * from "./blk_vm.ts";
export * from "./vfio_vm.ts";
export * from "./migration_vm.ts";
export * from "./migration_guest.ts";
export * from "./migration_backend.ts";
export * from "./static_helper.ts";
export * from "./host_tools.ts";
export * from "./qemu.ts";
export * from "./qmp.ts";
export * from "./ping_guest.ts";
export * from "./viommu.ts";
export * from "./channels_guest.ts";
export * from "./vfio_guest.ts";
export * from "./guest_image.ts";
export * from "./udp_peer.ts";
export * from "./frames.ts";
export * from "./termination.ts";
export * from "./guest_cli.ts";
