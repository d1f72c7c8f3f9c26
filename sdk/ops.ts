/**
 * The one interface a vendor implements: a {@linkcode Driver} whose
 * {@linkcode Driver.probe} returns a {@linkcode DeviceDescription} with its
 * {@linkcode DeviceOps}. This mirrors `struct vhost_mdev_device_ops` of the
 * Linux RFC "vhost: introduce mdev based hardware vhost backend": the SDK
 * speaks vhost-user to QEMU or DPDK, keeps the per-ring state, and calls the
 * driver at the moments the kernel's `vhost_mdev.c` would.
 *
 * Lifecycle, in the order the SDK calls things:
 *
 * 1. `probe(ctx, params)` once, when the device is created.
 * 2. `featuresChanged(features)` after the frontend's `SET_FEATURES` was
 *    accepted (it only ever holds bits the device offered).
 * 3. `start()` when the frontend set `DRIVER_OK` (or enabled a ring) and
 *    every ring that will run has its size, addresses, kick and call fds.
 * 4. `notify(q)` for each kick the SDK relays, while running.
 * 5. `getVringBase(q)` on `GET_VRING_BASE`, after `stop()`.
 * 6. `stop()` when the frontend disables rings, resets, or goes away.
 * 7. `close()` when the device is destroyed.
 *
 * `start` and `stop` are each called exactly once per transition, never
 * concurrently with each other.
 *
 * @example A minimal driver
 * ```ts
 * import { bit, type Driver, VirtioDeviceId, VirtioFeatureBit } from "@vhost-mdev/sdk";
 *
 * export const driver: Driver = {
 *   name: "null",
 *   description: "accepts a frontend, moves no packets",
 *   pciIds: [],
 *   probe(ctx) {
 *     return {
 *       deviceId: VirtioDeviceId.NET,
 *       features: bit(VirtioFeatureBit.VERSION_1),
 *       numQueues: 2,
 *       maxQueueSize: 256,
 *       ops: {
 *         start() {
 *           ctx.log.info(`start with ${ctx.vring(0).num} descriptors`);
 *         },
 *         stop() {},
 *         getVringBase: (q) => ctx.vring(q).base,
 *       },
 *     };
 *   },
 * };
 * ```
 *
 * @module
 */

import type { GuestMemory } from "./memory/guest_memory.ts";

/** A PCI vendor/device pair (and optional subsystem pair) a driver matches. */
export interface PciId {
  /** PCI vendor ID, e.g. `0x1af4`. */
  vendor: number;
  /** PCI device ID. */
  device: number;
  /** Subsystem vendor ID; absent matches any. */
  subsystemVendor?: number;
  /** Subsystem device ID; absent matches any. */
  subsystemDevice?: number;
  /** What this ID is, for listings ("N3000 net"). */
  name?: string;
}

/**
 * A doorbell the frontend may map to kick the device directly (a vhost-user
 * host notifier). `fd` must be mappable with `mmap(fd, size, offset)`; for a
 * VFIO device that is the device fd and the BAR region's offset.
 */
export interface NotifyArea {
  /** File descriptor that backs the doorbell page. The SDK does not close it. */
  fd: number;
  /** Byte offset of the doorbell page within `fd` (page aligned). */
  offset: number;
  /** Size of the mappable area, usually one page. */
  size: number;
}

/**
 * A ring's state as the frontend set it; addresses are guest-physical (IOVA).
 * Addresses are plain numbers: the SDK refuses any above 2^53.
 */
export interface VringInfo {
  /** Ring index. */
  readonly index: number;
  /** Number of descriptors (`SET_VRING_NUM`); 0 until set. */
  readonly num: number;
  /** Descriptor table address, guest-physical (= IOVA for DMA). */
  readonly descAddr: number;
  /** Available (driver) ring address, guest-physical. */
  readonly availAddr: number;
  /** Used (device) ring address, guest-physical. */
  readonly usedAddr: number;
  /** Used ring log address for dirty tracking (frontend's value, guest-physical). */
  readonly logAddr: number;
  /** Whether the frontend asked for used-ring logging on this ring. */
  readonly logging: boolean;
  /**
   * Next available index the device should process (`SET_VRING_BASE`). For
   * packed rings bit 15 is the wrap counter.
   */
  readonly base: number;
  /** Kick eventfd the frontend writes, or -1 (polling mode / not set). */
  readonly kickFd: number;
  /** Call eventfd the device writes to interrupt the frontend, or -1. */
  readonly callFd: number;
  /** Error eventfd, or -1. */
  readonly errFd: number;
  /** Whether the ring is enabled (`SET_VRING_ENABLE`). */
  readonly enabled: boolean;
  /** Whether size, addresses and kick are set, so the ring may run. */
  readonly ready: boolean;
}

/** Where a driver writes what happened; the CLI turns it into lines or JSON. */
export interface DeviceLog {
  /** Something a user wants to see once. */
  info(message: string): void;
  /** Something went wrong but the device goes on. */
  warn(message: string): void;
  /** Details for `--log debug`. */
  debug(message: string): void;
}

/**
 * What the SDK gives a driver: the helpers the RFC's drivers reached through
 * `vhost_mdev` (acked features, ring state as IOVA, call fds, the memory
 * table). Valid for the whole life of the device; what it returns always
 * reflects the frontend attached now.
 */
export interface DeviceContext {
  /** Features the frontend acknowledged (only bits the device offered). */
  readonly ackedFeatures: bigint;
  /** Virtio device status last set by the frontend (`SET_STATUS`). */
  readonly status: number;
  /** Number of rings the device exposes. */
  readonly numQueues: number;
  /** State of ring `q`. Throws `RangeError` for an index out of range. */
  vring(q: number): VringInfo;
  /**
   * The frontend's memory table: guest-physical ranges, mapped into this
   * process. Empty until `SET_MEM_TABLE`. The object is replaced (never
   * mutated) when the frontend sends a new table, and the SDK stops the
   * device before the old mappings are removed.
   */
  readonly memory: GuestMemory;
  /**
   * Interrupt the frontend for ring `q` (add 1 to its call fd, if any). A
   * call fd whose counter is saturated already has an interrupt pending:
   * that is not an error. Safe from any thread that holds the fd number
   * (call fds are non-blocking: the SDK makes them so on receipt).
   */
  signal(q: number): void;
  /** Tell the frontend the config space changed (backend channel). */
  signalConfigChange(): void;
  /**
   * Report that the device failed and needs a reset: a datapath Worker died,
   * the hardware reported an error. The SDK sets `NEEDS_RESET` in the status
   * (the frontend reads it with `GET_STATUS`), writes ring `queue`'s error
   * fd when given and set, tells the frontend the config changed (virtio
   * 1.2 §2.1.2), emits an `error` event and counts it in
   * `VhostMdevDevice.errors`. Never let a ring die silently: call this.
   *
   * @example
   * ```ts
   * import type { DeviceContext } from "@vhost-mdev/sdk";
   * declare const ctx: DeviceContext;
   * const worker = new Worker(new URL("./datapath.ts", import.meta.url), { type: "module" });
   * worker.onerror = (e) => ctx.reportError(`queue pair 0: ${e.message}`, 0);
   * ```
   */
  reportError(message: string, queue?: number): void;
  /** The device's log. */
  readonly log: DeviceLog;
}

/**
 * The device operations, as in `struct vhost_mdev_device_ops`. Methods may be
 * synchronous or return a Promise. An exception from `start` fails the
 * frontend's request (status `NEEDS_RESET`); from `stop` it is logged and the
 * device is considered stopped anyway.
 */
export interface DeviceOps {
  /**
   * Begin processing rings: program hardware rings from
   * {@linkcode DeviceContext.vring}, map memory for DMA, wire call fds.
   * Called once when the device enters RUNNING.
   */
  start(): void | Promise<void>;
  /**
   * Stop processing, and remember each ring's next available index so that
   * {@linkcode DeviceOps.getVringBase} can report it. Called once when the
   * device leaves RUNNING.
   */
  stop(): void | Promise<void>;
  /**
   * The frontend kicked ring `queue` (the RFC's `handle_vq_kick`). Called from
   * the SDK's kick relay while running. Omit it when the device polls kick
   * fds itself (a software datapath in its own Workers): the SDK then runs no
   * relay for this device.
   */
  notify?(queue: number): void;
  /**
   * Where ring `queue`'s doorbell can be mapped, or `null` when it cannot.
   * With `HOST_NOTIFIER` negotiated the SDK hands this area to the frontend so
   * kicks reach the device without passing through the SDK.
   */
  getNotifyAddr?(queue: number): NotifyArea | null;
  /**
   * The device's next available index of ring `queue` (`GET_VRING_BASE`).
   * Called after `stop()`, also for rings that never ran (return the base
   * the frontend set, `ctx.vring(q).base`).
   */
  getVringBase(queue: number): number | Promise<number>;
  /** The frontend accepted `features` (`SET_FEATURES`). */
  featuresChanged?(features: bigint): void | Promise<void>;
  /**
   * Read `length` bytes of device config space at `offset`. Without it the
   * SDK serves {@linkcode DeviceDescription.config}.
   */
  getConfig?(offset: number, length: number): Uint8Array;
  /** The frontend wrote config space. Without it, writes are refused. */
  setConfig?(offset: number, data: Uint8Array): void;
  /**
   * Per-ring counters for `serve --stats`, the demo and the benchmark. Cheap
   * to call about once a second.
   */
  stats?(): QueueStats[];
  /** Release everything (VFIO fds, mappings, Workers). Called once. */
  close?(): void | Promise<void>;
}

/** Counters of one ring since the device was created. */
export interface QueueStats {
  /** Ring index. */
  queue: number;
  /** Packets (or requests) completed. */
  packets: number;
  /** Payload bytes completed. */
  bytes: number;
  /** Packets dropped for lack of buffers. */
  drops: number;
  /** Malformed descriptor chains and other guest errors. */
  errors: number;
}

/** What `probe` returns: the device's identity and its ops. */
export interface DeviceDescription {
  /** Virtio device ID (1 = net, 2 = block). */
  deviceId: number;
  /** Virtio feature bits the device offers (include `VIRTIO_F_VERSION_1`). */
  features: bigint;
  /** Number of virtqueues (for net: 2 per queue pair, plus control if any). */
  numQueues: number;
  /** Largest ring size the device accepts (a power of two, at most 32768). */
  maxQueueSize: number;
  /** Device config space (`GET_CONFIG`), unless `ops.getConfig` is given. */
  config?: Uint8Array;
  /** The operations. */
  ops: DeviceOps;
}

/** What the user asked for when creating a device (from the CLI or code). */
export interface ProbeParams {
  /** Queue pairs (net) or queues requested; drivers may cap it. */
  queues: number;
  /** PCI address (`0000:03:00.0`) or `"emulated"`, for PCI drivers. */
  pci?: string;
  /** Driver-specific options (`--mode loopback` becomes `{ mode: "loopback" }`). */
  options: Readonly<Record<string, string>>;
}

/** Describes one driver option for `--help` and validation. */
export interface DriverOption {
  /** Option name without dashes (`mode`). */
  name: string;
  /** One-line description. */
  description: string;
  /** Allowed values, if the option is an enumeration. */
  values?: readonly string[];
  /** Default value. */
  default?: string;
}

/**
 * A backend driver: the plugin a vendor publishes. A module is a driver
 * plugin when it exports `driver` (or a default export) of this type.
 */
export interface Driver {
  /** Short name used on the command line (`ifcvf`, `sim`). */
  name: string;
  /** One line describing the device it drives. */
  description: string;
  /** PCI IDs it matches; empty for software devices. */
  pciIds: readonly PciId[];
  /** Driver-specific options. */
  options?: readonly DriverOption[];
  /**
   * Create a device. `ctx` stays valid for the device's life; keep it to reach
   * ring state and helpers from the ops. Throw an Error whose message says
   * what to do when the device cannot be created.
   */
  probe(ctx: DeviceContext, params: ProbeParams): DeviceDescription | Promise<DeviceDescription>;
}
