/**
 * The one interface a vendor implements: a {@linkcode Driver} whose
 * {@linkcode Driver.probe} returns a {@linkcode DeviceDescription} with its
 * {@linkcode DeviceOps}. This mirrors `struct vhost_mdev_device_ops` of the
 * Linux RFC "vhost: introduce mdev based hardware vhost backend" (`start`,
 * `stop`, `notify`, `getNotifyAddr`, `getVringState` for `get_vring_base`,
 * `featuresChanged`) and adds what hardware and the vDPA frameworks need:
 * per-ring start and stop, the full ring state, suspend and resume, the
 * status byte, doorbells the SDK rings off the main thread. The SDK speaks
 * vhost-user to QEMU or DPDK, keeps the per-ring state, and calls the driver
 * at the moments the kernel's `vhost_mdev.c` (and `vhost_vdpa.c`) would.
 *
 * Lifecycle, in the order the SDK calls things:
 *
 * 1. `probe(ctx, params)` once, when the device is created.
 * 2. `featuresChanged(features)` after the frontend's `SET_FEATURES` was
 *    accepted (it only ever holds bits the device offered), and
 *    `setStatus(status)` on each status change (it may refuse
 *    `FEATURES_OK`).
 * 3. `start()` when the frontend set `DRIVER_OK` (or enabled a ring) and
 *    every enabled ring has its size, addresses and kick fd; it starts the
 *    rings {@linkcode VringInfo.running} says, each from
 *    {@linkcode VringInfo.state}.
 * 4. While running: `notify(q)` (or the driver's `doorbell(q)` rung by the
 *    SDK) for each kick; `startRing(q)` / `stopRing(q)` as the frontend
 *    enables, disables or reconfigures one ring, the others running on;
 *    `suspend()` and `resume()` around a pause that keeps everything.
 * 5. `getVringState(q)` on `GET_VRING_BASE` and whenever a ring stops.
 * 6. `stop()` when the frontend resets, goes away, or the configuration no
 *    longer allows running.
 * 7. `close()` when the device is destroyed.
 *
 * Every op runs on the main thread, one at a time (the SDK serializes them),
 * and may return a Promise, which the SDK awaits; `notify` is the exception:
 * it is synchronous and not serialized with the others.
 *
 * @example A minimal driver
 * ```ts
 * import {
 *   bit,
 *   type Driver,
 *   type RingPosition,
 *   VirtioDeviceId,
 *   VirtioFeatureBit,
 * } from "@vhost-mdev/sdk";
 *
 * export const driver: Driver = {
 *   name: "null",
 *   description: "accepts a frontend, moves no packets",
 *   pciIds: [],
 *   probe(ctx) {
 *     // Where each ring got to: a null device takes nothing, so it stays
 *     // where the frontend put it.
 *     const saved = new Map<number, RingPosition>();
 *     return {
 *       deviceId: VirtioDeviceId.NET,
 *       features: bit(VirtioFeatureBit.VERSION_1),
 *       numQueues: 2,
 *       maxQueueSize: 256,
 *       ops: {
 *         start() {
 *           for (let q = 0; q < ctx.numQueues; q++) {
 *             if (ctx.vring(q).running) saved.set(q, ctx.vring(q).state);
 *           }
 *         },
 *         stop() {},
 *         getVringState: (q) => saved.get(q) ?? ctx.vring(q).state,
 *       },
 *     };
 *   },
 * };
 * ```
 *
 * @module
 */

import type { GuestMemory } from "./memory/guest_memory.ts";
import type { DirtyLog } from "./memory/dirty_log.ts";
import type { Doorbell } from "./core/doorbell.ts";
import type { SharedInflightQueue } from "./core/inflight.ts";

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
  /**
   * The addresses the device's DMA uses for the three areas: the
   * guest-physical ones above, or behind a vIOMMU
   * (`VIRTIO_F_ACCESS_PLATFORM`) the IOVAs the frontend sent. A hardware
   * driver programs these; software reads memory through the guest-physical
   * ones.
   */
  readonly dma: { readonly desc: number; readonly avail: number; readonly used: number };
  /** Used ring log address for dirty tracking (frontend's value, guest-physical). */
  readonly logAddr: number;
  /** Whether the frontend asked for used-ring logging on this ring. */
  readonly logging: boolean;
  /**
   * Where the ring starts or resumes (`SET_VRING_BASE`, or where it stopped
   * last): the next available and used indexes, with the wrap counters of a
   * packed ring. A driver starting the ring programs it from here.
   */
  readonly state: RingPosition;
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
  /**
   * Whether the ring runs: the driver's `start` or `startRing` took it and no
   * `stopRing` or `stop` since. In `start`, the rings to start.
   */
  readonly running: boolean;
}

/**
 * Where a ring's processing got to: the vhost ring state, as `struct
 * vdpa_vq_state` holds it. For a split ring (virtio 1.2 §2.7) `availIdx` is
 * the next available-ring index the device reads and `usedIdx` the next it
 * writes, both free-running 16-bit counters; the wrap counters are unused
 * and `true`. For a packed ring (§2.8) the indexes are descriptor ring
 * positions (0..32767) and the wrap counters those of §2.8.1.
 */
export interface RingPosition {
  /** Next available index (split) or descriptor position (packed). */
  readonly availIdx: number;
  /** Next used index (split) or descriptor position (packed). */
  readonly usedIdx: number;
  /** Packed: the driver ring wrap counter at `availIdx`. */
  readonly availWrap: boolean;
  /** Packed: the device ring wrap counter at `usedIdx`. */
  readonly usedWrap: boolean;
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
 * table). Keep it for the device's life: from the moment `probe` returns
 * every member works and reflects the frontend attached now. During `probe`
 * only `log` does; the rest throws, as there is no device yet.
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
   * device before the old mappings are removed. Behind a vIOMMU
   * (`VIRTIO_F_ACCESS_PLATFORM` acked) its {@linkcode GuestMemory.translate}
   * takes IOVAs through the device IOTLB, and its leases carry the IOTLB to
   * Workers.
   */
  readonly memory: GuestMemory;
  /**
   * What the device's DMA space should hold now, for a driver that maps it
   * at `start` (VFIO `MAP_DMA` of each range's `iova`): the memory table's
   * regions, or behind a vIOMMU the IOTLB's translations. Changes while
   * running reach `mapMemory`/`unmapMemory`.
   */
  dmaRanges(): MemoryRange[];
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
  /**
   * Report an error of ring `queue` that does not need a device reset: a
   * malformed chain the device skipped, say. The SDK writes the ring's error
   * fd (`SET_VRING_ERR`) when set, emits an `error` event and counts it; the
   * status is untouched.
   */
  ringError(queue: number, message: string): void;
  /**
   * Ring `q`'s part of the inflight region (`INFLIGHT_SHMFD`, for devices
   * whose description sets `inflight`), held mapped until `release`, or
   * null when the frontend gave no region or it does not track ring `q`.
   * The driver marks the heads it takes and completes in it
   * (`InflightQueue`), and resubmits the ones still marked when the ring
   * starts.
   */
  inflight(q: number): InflightHold | null;
  /** The device's log. */
  readonly log: DeviceLog;
}

/** A ring's queue region of the inflight region, held for a datapath ({@linkcode DeviceContext.inflight}). */
export interface InflightHold {
  /** Where the queue region is, to view with `InflightQueue.fromShared` (in a Worker too). */
  readonly queue: SharedInflightQueue;
  /** Let the region go; call it once nothing touches it any more. Idempotent. */
  release(): void;
}

/**
 * The device operations, as in `struct vhost_mdev_device_ops` plus what
 * Linux's `vdpa_config_ops` and DPDK's `rte_vdpa_dev_ops` add. Only `start`,
 * `stop` and `getVringState` are required; each optional op says what the
 * SDK does without it. An exception from `start` or `startRing` fails the
 * frontend's request (status `NEEDS_RESET`); from `stop`, `stopRing` or
 * `suspend` it is reported and the ring or device is considered stopped.
 */
export interface DeviceOps {
  /**
   * Begin processing: program the rings whose {@linkcode VringInfo.running}
   * is true, each from its {@linkcode VringInfo.state}, map memory for DMA,
   * wire call fds. Called when the device enters RUNNING.
   */
  start(): void | Promise<void>;
  /**
   * Stop processing every ring; afterwards `getVringState` reports where
   * each got to. Called when the device leaves RUNNING.
   */
  stop(): void | Promise<void>;
  /**
   * Start ring `queue` while the device runs (the frontend enabled or
   * reconfigured it): the `set_vq_ready(true)` of vDPA. Without `startRing`
   * and `stopRing` the SDK restarts the whole device instead, and logs that
   * it did.
   */
  startRing?(queue: number): void | Promise<void>;
  /**
   * Stop ring `queue` while the others run on (`set_vq_ready(false)`);
   * afterwards `getVringState(queue)` reports where it got to.
   */
  stopRing?(queue: number): void | Promise<void>;
  /**
   * Pause processing of every ring, keeping configuration and state: used
   * by `GET_VRING_BASE` on a driver without `stopRing`, and by migration.
   * `getVringState` works while suspended. Without it the SDK stops the
   * device (`stop`) instead, and starts it again where it would resume.
   */
  suspend?(): void | Promise<void>;
  /** Continue after `suspend`, each ring from where it paused. */
  resume?(): void | Promise<void>;
  /**
   * The frontend kicked ring `queue` (the RFC's `handle_vq_kick`). Called
   * synchronously on the main thread by the SDK's kick relay while the ring
   * runs; a returned Promise is not awaited (a rejection is reported). Omit
   * it when the device polls kick fds itself (a software datapath in its own
   * Workers) or gives a doorbell: then no kick reaches the main thread.
   */
  notify?(queue: number): void;
  /**
   * Ring `queue`'s doorbell as a location in this process (a register in a
   * mapped BAR: `Mapping.address` plus its offset), or `null`. The SDK's kick
   * relay Worker then stores the value there itself on each kick, with no
   * hop to the main thread: the fastest path short of a host notifier.
   * Asked each time the ring starts. The SDK stops the relay before calling
   * `stopRing`, `stop`, `suspend` or `close`, so the mapping may go away in
   * them. Rings without a doorbell get `notify`.
   *
   * @example A virtio-pci notify register (virtio 1.2 §4.1.4.4)
   * ```ts
   * import type { Doorbell } from "@vhost-mdev/sdk";
   * declare const bar: { address: number };
   * declare const notifyOffset: (q: number) => number;
   * const doorbell = (q: number): Doorbell => ({
   *   address: bar.address + notifyOffset(q),
   *   width: 2,
   *   value: q,
   * });
   * ```
   */
  doorbell?(queue: number): Doorbell | null;
  /**
   * Where ring `queue`'s doorbell can be mapped, or `null` when it cannot.
   * With `HOST_NOTIFIER` negotiated the SDK hands this area to the frontend so
   * kicks reach the device without passing through the SDK.
   */
  getNotifyAddr?(queue: number): NotifyArea | null;
  /**
   * Where ring `queue` got to (the RFC's `get_vring_base`, vDPA's
   * `get_vq_state`): called after `stopRing(queue)`, `stop()` or while
   * suspended, and for rings that never ran (return
   * {@linkcode VringInfo.state}, where the frontend put it).
   */
  getVringState(queue: number): RingPosition | Promise<RingPosition>;
  /**
   * A region joined guest memory while the device runs (`ADD_MEM_REG`, or a
   * new `SET_MEM_TABLE`): map it for DMA (VFIO `MAP_DMA` at `iova`, which
   * is `gpa`). Behind a vIOMMU the ranges are the IOTLB's translations
   * instead, as the frontend updates them (`IOTLB_MSG`), `iova` their IOVA.
   * `ctx.memory` already holds it. With `unmapMemory` this is vDPA's
   * `dma_map`: memory changes reach the driver as ranges and the rings run
   * on. Without both, the SDK stops the device around every memory change
   * and `start` maps the whole table again.
   */
  mapMemory?(range: MemoryRange): void | Promise<void>;
  /**
   * A region left guest memory while the device runs: stop DMA to it (VFIO
   * `UNMAP_DMA`). Rings using it were stopped first, and `ctx.memory` is
   * already the table without it; its mapping stays in this process until
   * every lease on it is released, so a Worker still reading it is safe:
   * move Workers to the new `ctx.memory`, then release their old leases.
   * Called before `mapMemory` of what joined in the same change.
   */
  unmapMemory?(range: MemoryRange): void | Promise<void>;
  /**
   * Live migration's dirty-page log. The SDK calls it with the log when the
   * frontend turns logging on (`VHOST_F_LOG_ALL` acked and a log given by
   * `SET_LOG_BASE`), with a new log when the frontend replaces it, and with
   * `null` when logging ends; running or not (a device started later logs
   * into the last log it was given). Once the returned promise resolves,
   * every byte the device writes into guest memory, from any thread, is
   * marked in `log` ({@linkcode DirtyLog.mark}; a Worker views it through
   * {@linkcode DirtyLog.share} and `DirtyLog.fromShared`), and the previous
   * log is no longer touched: the SDK unmaps it then. A software device's
   * `SplitQueue.setLog` marks used entries and the buffers written through
   * it.
   *
   * The SDK itself marks the whole used ring of every logging ring each
   * time the ring stops or the device suspends, so a device that logs only
   * its buffer writes (hardware that logs DMA to buffers) still hands over
   * a consistent ring.
   *
   * A driver without `setLog` is not offered `VHOST_F_LOG_ALL` nor
   * `LOG_SHMFD`: QEMU then refuses to migrate the guest rather than migrate
   * it wrong.
   */
  setLog?(log: DirtyLog | null): void | Promise<void>;
  /**
   * The guest moved here (`SEND_RARP`, after a live migration to a guest
   * without `VIRTIO_NET_F_GUEST_ANNOUNCE`): announce `mac` to the network,
   * as a RARP broadcast from it, so switches learn where the guest is now.
   * Offered (protocol feature `RARP`) only to a driver with this op.
   */
  announce?(mac: Uint8Array): void | Promise<void>;
  /** The frontend accepted `features` (`SET_FEATURES`). */
  featuresChanged?(features: bigint): void | Promise<void>;
  /**
   * The frontend set the status byte (`SET_STATUS`, virtio 1.2 §2.1). Return
   * `false` to refuse `FEATURES_OK`: the SDK clears the bit, and the
   * frontend reads the status back without it (§3.1.1). Other bits cannot be
   * refused; use `ctx.reportError` to raise `NEEDS_RESET` later.
   */
  setStatus?(status: number): void | boolean | Promise<void | boolean>;
  /**
   * Read `length` bytes of device config space at `offset`. Without it the
   * SDK serves {@linkcode DeviceDescription.config}.
   */
  getConfig?(offset: number, length: number): Uint8Array;
  /** The frontend wrote config space. Without it, writes are refused. */
  setConfig?(offset: number, data: Uint8Array): void;
  /**
   * Per-ring counters for `serve --stats`, JSON logs, the demo and the
   * benchmark, named as {@linkcode DeviceDescription.counters} declares.
   * Cheap to call about once a second.
   */
  stats?(): QueueStats[];
  /** Device-wide counters, named as {@linkcode DeviceDescription.counters} declares. */
  deviceStats?(): Record<string, number>;
  /** Set every counter back to zero (`serve`'s stats reset, the benchmark between runs). */
  resetStats?(): void;
  /** Release everything (VFIO fds, mappings, Workers). Called once. */
  close?(): void | Promise<void>;
}

/** A guest memory region as the driver maps it for DMA. */
export interface MemoryRange {
  /** Guest-physical address of the first byte. */
  readonly gpa: number;
  /**
   * The address the device's DMA uses for the first byte (VFIO `MAP_DMA`'s
   * `iova`): the guest-physical address, or behind a vIOMMU
   * (`VIRTIO_F_ACCESS_PLATFORM`) the I/O virtual address the frontend's
   * IOTLB maps.
   */
  readonly iova: number;
  /**
   * What the device may do there (`IotlbAccess` bits): read and
   * write for guest memory, the frontend's permission for an IOTLB
   * translation (map it with no more: VFIO's `READ`/`WRITE` flags).
   */
  readonly access: number;
  /** Bytes. */
  readonly size: number;
  /** Where the region is mapped in this process (VFIO `vaddr`). */
  readonly address: number;
}

/** A counter a driver reports, for listings and `--help`. */
export interface CounterSpec {
  /** Key in the stats records (`packets`, `bytes`, `requests`, `rx_crc_errors`). */
  readonly name: string;
  /** What it counts, one line. */
  readonly description: string;
}

/** The counters a network device reports per ring when it declares none. */
export const NET_RING_COUNTERS: readonly CounterSpec[] = Object.freeze([
  { name: "packets", description: "frames completed" },
  { name: "bytes", description: "frame bytes completed (virtio-net header excluded)" },
  { name: "drops", description: "frames dropped for lack of buffers" },
  { name: "errors", description: "malformed descriptor chains and other guest errors" },
]);

/**
 * Counters of one ring since the device was created (or its counters were
 * reset): the ring index, then the counters the driver declares by name
 * ({@linkcode DeviceDescription.counters}; by default
 * {@linkcode NET_RING_COUNTERS}: `packets`, `bytes`, `drops`, `errors`).
 */
export interface QueueStats {
  /** Ring index. */
  queue: number;
  /** The declared counters. */
  [counter: string]: number;
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
  /**
   * The counters `ops.stats` (per ring) and `ops.deviceStats` report, by
   * name. Per ring it defaults to {@linkcode NET_RING_COUNTERS}.
   */
  counters?: { ring?: readonly CounterSpec[]; device?: readonly CounterSpec[] };
  /**
   * vhost-user protocol features (`ProtocolFeatureBit` numbers) to offer
   * beyond the SDK's, or to withhold from them: `{ remove: [HOST_NOTIFIER] }`
   * for a device whose doorbells cannot be mapped, `{ add: [LOG_SHMFD] }`
   * for one that logs dirty pages.
   */
  protocolFeatures?: { add?: readonly number[]; remove?: readonly number[] };
  /**
   * The driver tracks in-flight requests of its split rings in the inflight
   * region ({@linkcode DeviceContext.inflight}) and resubmits them when a
   * ring starts on a region a previous backend left: the SDK then offers
   * `INFLIGHT_SHMFD` and serves `GET_INFLIGHT_FD` / `SET_INFLIGHT_FD`.
   */
  inflight?: boolean;
  /**
   * The driver maps the device's DMA space itself (a VFIO device with
   * `mapMemory`/`unmapMemory`): behind a vIOMMU (`VIRTIO_F_ACCESS_PLATFORM`
   * offered and acked) it maps {@linkcode DeviceContext.dmaRanges} at
   * `start` and gets each IOTLB translation the frontend adds or takes back
   * as a range at its IOVA. A software device, which reads guest memory
   * through `ctx.memory` (that translates IOVAs itself), leaves it unset.
   */
  mapsIotlb?: boolean;
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
