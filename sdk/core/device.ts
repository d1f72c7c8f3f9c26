/**
 * The device core: one object per device, the userspace counterpart of the
 * RFC's `vhost_mdev.c`. It keeps the device and acked features, the
 * STOPPED/RUNNING state, per-ring state and the memory table, and calls the
 * driver's {@linkcode DeviceOps} at the right moments. Frontends reach it
 * through the vhost-user transport, embedders and tests through
 * {@linkcode VhostMdevDevice.ioctl}.
 *
 * When the device runs: memory is set, features were set, at least one ring
 * is enabled and every enabled ring has size, addresses and kick; and, when
 * the frontend drives status (`SET_STATUS`), `DRIVER_OK` is set. While it
 * runs, a ring the frontend disables, reconfigures or stops
 * (`GET_VRING_BASE`) stops alone (`stopRing`) and the others run on; a ring
 * that becomes ready starts alone (`startRing`). A driver without per-ring
 * ops gets a whole-device restart instead, logged; then a ring stopped by
 * `GET_VRING_BASE` stops the device until the frontend enables a ring or
 * sets status again, so a frontend tearing rings down one by one causes one
 * `stop`, not many.
 *
 * @module
 */

import type {
  CounterSpec,
  DeviceContext,
  DeviceDescription,
  DeviceLog,
  DeviceOps,
  Driver,
  MemoryRange,
  ProbeParams,
  QueueStats,
  VringInfo,
} from "../ops.ts";
import { NET_RING_COUNTERS } from "../ops.ts";
import type { GuestMemory, GuestRegion, MemoryRegionSpec } from "../memory/guest_memory.ts";
import { DirtyLog } from "../memory/dirty_log.ts";
import { usedRingSize } from "../virtqueue/layout.ts";
import { EVENT_SUPPRESS_SIZE, packedRingSize } from "../virtqueue/packed_layout.ts";
import { eventfdSignal } from "../sys/mod.ts";
import {
  bit,
  hasBit,
  statusNames,
  VHOST_F_LOG_ALL,
  VirtioFeatureBit,
  VirtioStatus,
} from "../uapi/virtio.ts";
import { IotlbAccess, VhostMdevState } from "../uapi/vhost.ts";
import { ProtocolError, RequestRefused } from "./errors.ts";
import { type IoctlArgs, type IoctlResults, vhostIoctl } from "./ioctl.ts";
import { DeviceEventHub, type DeviceEventListener } from "./events.ts";
import { hex } from "../uapi/hex.ts";
import {
  checkRingFd,
  closeQuietly,
  decodeRingBase,
  encodeRingBase,
  ringAreaSizes,
  RingState,
} from "./ring.ts";
import { DeviceLifecycle } from "./lifecycle.ts";
import { MemoryTable } from "./memory_table.ts";
import { InflightRegion, type InflightShape } from "./inflight.ts";
import { notReadyReason, shouldRun } from "./run_state.ts";
import { DeviceIotlb } from "./device_iotlb.ts";
import { IOTLB_MISS_TIMEOUT_MS } from "../virtqueue/translation_wait.ts";
import type { IotlbEntry } from "../memory/iotlb.ts";

/** Options of {@linkcode VhostMdevDevice.create}. */
export interface DeviceOptions {
  /** Name used in events; defaults to the driver's name. */
  name?: string;
  /** Listener attached before probe, so no event is missed. */
  listener?: DeviceEventListener;
  /**
   * Accept guest memory files the frontend could shrink (DPDK virtio_user's
   * memfds, hugetlbfs and disk files). A frontend that shrinks such a file
   * kills the whole process with SIGBUS, so opt in only for trusted
   * frontends (default false; see `MapOptions.allowUnsealed`).
   */
  allowUnsealedMemory?: boolean;
  /** Largest guest memory table in bytes (default `DEFAULT_TABLE_BYTES_LIMIT`, 4 TiB). */
  maxMemoryBytes?: number;
}

/** A session-like owner of the device (one frontend at a time). */
export interface DeviceOwner {
  /** How the owner is described in messages ("vhost-user client on /tmp/s"). */
  readonly description: string;
  /** Send a config-change notification to the frontend, if it can. */
  notifyConfigChange?(): void;
  /** Hand ring `q`'s doorbell to the frontend (host notifier), or take it back (`null`). */
  setHostNotifier?(q: number, area: { fd: number; offset: number; size: number } | null): void;
  /**
   * Ask the frontend for the translation of `iova` with access `perm` (an
   * IOTLB miss on the backend channel). Returns false when it cannot (no
   * backend channel).
   */
  sendIotlbMiss?(iova: number, perm: number): boolean;
}

/** Argument of `SET_VRING_ADDR`: frontend virtual addresses. */
export interface VringAddr {
  /** Ring index. */
  index: number;
  /** `VRING_F_LOG` (bit 0): log writes to the used ring. */
  flags: number;
  /** Descriptor table, frontend virtual address. */
  desc: number;
  /** Used ring, frontend virtual address. */
  used: number;
  /** Available ring, frontend virtual address. */
  avail: number;
  /** Used ring log address, guest-physical. */
  log: number;
}

/** Argument of `SET_VRING_NUM`, `SET_VRING_BASE`, and result of `GET_VRING_BASE`. */
export interface VringState {
  /** Ring index. */
  index: number;
  /** Ring size, or base index. */
  num: number;
}

/** Argument of `SET_VRING_KICK/CALL/ERR`: an fd (owned by the device afterwards) or -1. */
export interface VringFile {
  /** Ring index. */
  index: number;
  /** The eventfd, or -1 for none. */
  fd: number;
}

const MAX_RING_SIZE = 32768;

/**
 * How long a device whose driver stops whole devices stays parked after a
 * ring was disabled, before the rings still enabled run again, in ms.
 */
const UNPARK_MS = 50;

/** How often a ring waiting for the translation of its own addresses asks again, in ms. */
const RING_RETRY_MS = 250;

/**
 * One device created by a driver's `probe`, served to one frontend at a time.
 *
 * @example Drive a device in-process, the way the vhost-user transport does
 * ```ts
 * import { VhostMdevDevice, VhostMdevState } from "@vhost-mdev/sdk";
 * import { driver } from "@vhost-mdev/sim";
 *
 * const device = await VhostMdevDevice.create(driver, { queues: 1, options: {} });
 * await device.setFeatures(device.getFeatures());
 * // ... setMemTable, setVringNum/Addr/Base/Kick/Call ...
 * await device.setState(VhostMdevState.RUNNING);
 * await device.close();
 * ```
 */
export class VhostMdevDevice {
  /** The driver that created the device. */
  readonly driver: Driver;
  /** What the driver's probe returned. */
  readonly description: DeviceDescription;
  /** Events of this device. */
  readonly events: DeviceEventHub;
  /** The context handed to the driver. */
  readonly context: DeviceContext;

  #ops: DeviceOps;
  #rings: RingState[];
  #table: MemoryTable;
  #acked = 0n;
  #featuresSet = false;
  #status = 0;
  #statusDriven = false;
  #parked = false;
  #unparkTimer: ReturnType<typeof setTimeout> | undefined;
  #owner: DeviceOwner | null = null;
  #closed = false;
  readonly #life: DeviceLifecycle;
  #lock: Promise<unknown> = Promise.resolve();
  #log: DeviceLog;
  #errors = 0;
  /** The features offered: the driver's, with `VHOST_F_LOG_ALL` when it logs. */
  readonly #offered: bigint;
  readonly #allowUnsealed: boolean;
  /** The dirty log the frontend gave (`SET_LOG_BASE`), mapped, or null. */
  #dirtyLog: DirtyLog | null = null;
  /** The log the driver was given by `setLog` and may be writing, or null. */
  #driverLog: DirtyLog | null = null;
  /** The inflight region (`GET_INFLIGHT_FD` / `SET_INFLIGHT_FD`), or null. */
  #inflight: InflightRegion | null = null;
  /** The device IOTLB while `VIRTIO_F_ACCESS_PLATFORM` is acked, or null. */
  #iotlb: DeviceIotlb | null = null;
  /** Fires to translate again the rings that wait for their addresses' translation. */
  #ringCheckTimer: ReturnType<typeof setTimeout> | undefined;

  private constructor(
    driver: Driver,
    description: DeviceDescription,
    events: DeviceEventHub,
    context: DeviceContext,
    log: DeviceLog,
    options: DeviceOptions,
  ) {
    this.#table = new MemoryTable({
      allowUnsealed: options.allowUnsealedMemory ?? false,
      maxBytes: options.maxMemoryBytes,
    });
    this.driver = driver;
    this.description = description;
    this.events = events;
    this.context = context;
    this.#log = log;
    this.#ops = description.ops;
    this.#allowUnsealed = options.allowUnsealedMemory ?? false;
    this.#offered = description.features |
      (description.ops.setLog !== undefined ? bit(VHOST_F_LOG_ALL) : 0n);
    this.#rings = Array.from({ length: description.numQueues }, (_, i) => new RingState(i));
    this.#life = new DeviceLifecycle({
      ops: this.#ops,
      rings: this.#rings,
      events,
      owner: () => this.#owner,
      packed: () => this.#packed,
      reportError: (text, queue) => this.#reportError(text, queue),
      park: () => this.#setParked(true),
      halted: (r) => this.#logUsedRing(r),
    });
  }

  /**
   * Probe `driver` and create its device.
   *
   * @throws Error from the driver's probe (its message says what to do), or a
   *   RangeError when the description is invalid.
   */
  static async create(
    driver: Driver,
    params: ProbeParams,
    options: DeviceOptions = {},
  ): Promise<VhostMdevDevice> {
    const events = new DeviceEventHub(options.name ?? driver.name);
    if (options.listener) events.add(options.listener);
    const log: DeviceLog = {
      info: (m) => events.emit("info", m),
      warn: (m) => events.emit("warn", m),
      debug: (m) => events.emit("debug", m),
    };
    // The context reads through `holder` so it can exist before the device.
    const holder: { device?: VhostMdevDevice } = {};
    const need = (): VhostMdevDevice => {
      if (!holder.device) throw new Error("the device context is not usable during probe");
      return holder.device;
    };
    const context: DeviceContext = {
      get ackedFeatures() {
        return need().#acked;
      },
      get status() {
        return need().#status;
      },
      get numQueues() {
        return need().#rings.length;
      },
      vring: (q) => need().vring(q),
      get memory() {
        return need().#table.memory;
      },
      dmaRanges: () => need().#dmaRanges(),
      signal: (q) => need().#signal(q),
      signalConfigChange: () => need().#notifyConfigChange(),
      reportError: (message, queue) => need().#reportError(message, queue),
      ringError: (queue, message) => need().#ringError(queue, message),
      inflight: (q) => {
        const region = need().#inflight;
        const queue = region?.queue(q);
        return region && queue ? { queue, release: region.lease() } : null;
      },
      log,
    };
    const description = await driver.probe(context, params);
    validateDescription(driver.name, description);
    const device = new VhostMdevDevice(driver, description, events, context, log, options);
    holder.device = device;
    events.emit("info", `${driver.name}: device ready with ${description.numQueues} rings`, {
      features: hex(description.features),
      queues: description.numQueues,
      maxQueueSize: description.maxQueueSize,
    });
    return device;
  }

  /** Subscribe to lifecycle events; returns the unsubscribe function. */
  addListener(listener: DeviceEventListener): () => void {
    return this.events.add(listener);
  }

  /** Number of rings. */
  get numQueues(): number {
    return this.#rings.length;
  }

  /** Acked features. */
  get ackedFeatures(): bigint {
    return this.#acked;
  }

  /** Last status the frontend set. */
  get status(): number {
    return this.#status;
  }

  /** Device errors reported since creation (`reportError`, a failed `start`). */
  get errors(): number {
    return this.#errors;
  }

  /** Whether the device is RUNNING (the driver's `start` returned and no `stop` since). */
  get running(): boolean {
    return this.#life.running;
  }

  /** Whether the device is suspended: running, but no ring is processed until `resume`. */
  get suspended(): boolean {
    return this.#life.suspended;
  }

  /** The attached frontend, if any. */
  get owner(): DeviceOwner | null {
    return this.#owner;
  }

  /** Kicks that rang ring `q`'s doorbell from the relay Worker since the device was created. */
  doorbellsRung(q: number): number {
    return this.#life.doorbellsRung(q);
  }

  /** Current memory table. */
  get memory(): GuestMemory {
    return this.#table.memory;
  }

  /** Ring `q`'s state. Throws `RangeError` for an index out of range. */
  vring(q: number): VringInfo {
    const r = this.#rings[q];
    if (!r) throw new RangeError(`ring ${q} does not exist: the device has ${this.#rings.length}`);
    return r;
  }

  /** The driver's per-ring counters, or an empty list. */
  stats(): QueueStats[] {
    return this.#ops.stats?.() ?? [];
  }

  /**
   * The driver's device-wide counters, or an empty record; behind a vIOMMU
   * also the IOTLB's (`iotlb_entries`, `iotlb_updates`,
   * `iotlb_invalidations`, `iotlb_misses`, `iotlb_misses_suppressed`,
   * `iotlb_evictions`).
   */
  deviceStats(): Record<string, number> {
    const own = this.#ops.deviceStats?.() ?? {};
    return this.#iotlb === null ? own : { ...own, ...this.#iotlb.stats() };
  }

  /** The device IOTLB's counters while `VIRTIO_F_ACCESS_PLATFORM` is acked, else null. */
  iotlbStats(): Record<string, number> | null {
    return this.#iotlb?.stats() ?? null;
  }

  /** The counters the driver declares, per ring and device-wide. */
  get counters(): { ring: readonly CounterSpec[]; device: readonly CounterSpec[] } {
    const c = this.description.counters;
    return { ring: c?.ring ?? NET_RING_COUNTERS, device: c?.device ?? [] };
  }

  /**
   * Set the driver's counters back to zero.
   *
   * @throws RequestRefused when the driver cannot reset its counters.
   */
  resetStats(): void {
    if (!this.#ops.resetStats) {
      throw new RequestRefused(`driver ${this.driver.name} cannot reset its counters`);
    }
    this.#ops.resetStats();
    this.events.emit("info", "counters reset");
  }

  /**
   * Attach a frontend. Returns `false`, changing nothing, when another one is
   * attached (the RFC's `EBUSY` on a second open).
   */
  attach(owner: DeviceOwner): boolean {
    if (this.#closed) return false;
    if (this.#owner) {
      this.events.emit(
        "refused",
        `refused ${owner.description}: the device is in use by ${this.#owner.description}`,
      );
      return false;
    }
    this.#owner = owner;
    this.events.emit("connected", `${owner.description} attached`);
    return true;
  }

  /** Detach the frontend: stop the device and forget all frontend state. */
  detach(owner: DeviceOwner, reason: string): Promise<void> {
    return this.#serialize(async () => {
      if (this.#owner !== owner) return;
      await this.#reset();
      this.#owner = null;
      this.events.emit("disconnected", `${owner.description} detached: ${reason}`);
    });
  }

  /**
   * The ioctl-style entry point, mirroring the RFC's `vhost_mdev_ioctl`: the
   * vhost ioctl set plus `VHOST_MDEV_SET_STATE`, each mapped onto the named
   * request method below (see `ioctl.ts`).
   *
   * @throws ProtocolError for malformed arguments, RequestRefused when the
   *   device refuses.
   */
  ioctl<R extends keyof IoctlArgs>(
    request: R,
    ...arg: IoctlArgs[R] extends undefined ? [] : [IoctlArgs[R]]
  ): Promise<IoctlResults[R]>;
  ioctl(request: number, arg?: unknown): Promise<unknown> {
    return vhostIoctl(this, request, arg);
  }

  // --- requests --------------------------------------------------------------
  // One method per frontend request. Each runs alone (requests are
  // serialized), throws ProtocolError for a malformed argument and
  // RequestRefused for one the device refuses.

  /**
   * `GET_FEATURES`: what the device offers: the driver's features, and
   * `VHOST_F_LOG_ALL` when the driver logs dirty pages (`ops.setLog`).
   */
  getFeatures(): bigint {
    return this.#offered;
  }

  /** Whether the driver logs dirty pages (`ops.setLog`), so the device can be migrated. */
  get canLog(): boolean {
    return this.#ops.setLog !== undefined;
  }

  /**
   * `SET_LOG_BASE`: the dirty log is `size` bytes at `offset` of `fd`
   * (live migration). It replaces any earlier log; the earlier one is
   * unmapped once the driver has moved to the new one. The fd stays the
   * caller's.
   *
   * @throws RequestRefused when the driver cannot log; GuestMemoryError for
   *   a log file that is too short, could shrink, or a size past the limit.
   */
  setLogBase(fd: number, size: number, offset: number): Promise<void> {
    return this.#serialize(async () => {
      if (!this.canLog) {
        throw new RequestRefused(
          `SET_LOG_BASE: driver ${this.driver.name} cannot log dirty pages (no setLog), ` +
            `so it offers no VHOST_F_LOG_ALL`,
        );
      }
      const next = DirtyLog.map(fd, size, offset, { allowUnsealed: this.#allowUnsealed });
      const previous = this.#dirtyLog;
      this.#dirtyLog = next;
      this.events.emit(
        "info",
        `dirty log: ${size} bytes covering ${(next.coverage / 1048576).toFixed(0)} MiB of ` +
          `guest memory${previous ? " (replaces the previous log)" : ""}`,
        { size, offset },
      );
      this.#checkLogCoverage();
      await this.#applyLog();
      if (previous !== null && previous !== this.#driverLog) previous.close();
    });
  }

  /**
   * `SEND_RARP`: the guest arrived here by live migration; the driver
   * announces `mac` (`ops.announce`).
   *
   * @throws RequestRefused when the driver has no `announce` or it fails.
   */
  announce(mac: Uint8Array): Promise<void> {
    return this.#serialize(async () => {
      const text = [...mac].map((b) => b.toString(16).padStart(2, "0")).join(":");
      if (!this.#ops.announce) {
        throw new RequestRefused(`SEND_RARP ${text}: driver ${this.driver.name} cannot announce`);
      }
      try {
        await this.#ops.announce(mac);
      } catch (e) {
        throw new RequestRefused(`SEND_RARP ${text}: the driver failed: ${message(e)}`);
      }
      this.events.emit("info", `announced ${text} (SEND_RARP)`, { mac: text });
    });
  }

  /**
   * `GET_INFLIGHT_FD`: make a new zeroed inflight region for `numQueues`
   * rings of `queueSize` and use it. Returns its memfd (the caller sends it
   * and closes it) and shape.
   *
   * @throws RequestRefused when the driver does not track inflight requests,
   *   rings run, or the shape is invalid.
   */
  getInflightFd(
    numQueues: number,
    queueSize: number,
  ): Promise<{ fd: number; shape: InflightShape }> {
    return this.#serialize(() => {
      this.#checkInflight("GET_INFLIGHT_FD");
      const { region, fd, shape } = InflightRegion.create(numQueues, queueSize, this.#rings.length);
      this.#useInflight(region, "made");
      return Promise.resolve({ fd, shape });
    });
  }

  /**
   * `SET_INFLIGHT_FD`: use the region `shape` describes in `fd` (a region
   * this or an earlier backend made, kept by the frontend across a
   * reconnect). The fd stays the caller's.
   *
   * @throws RequestRefused when the driver does not track inflight requests,
   *   rings run, or the region fails a check; GuestMemoryError for a file
   *   that is too short or could shrink.
   */
  setInflightFd(fd: number, shape: InflightShape): Promise<void> {
    return this.#serialize(() => {
      this.#checkInflight("SET_INFLIGHT_FD");
      const region = InflightRegion.map(fd, shape, {
        maxQueues: this.#rings.length,
        allowUnsealed: this.#allowUnsealed,
      });
      this.#useInflight(region, "taken from the frontend");
      return Promise.resolve();
    });
  }

  #checkInflight(request: string): void {
    if (!this.description.inflight) {
      throw new RequestRefused(
        `${request}: driver ${this.driver.name} does not track inflight requests`,
      );
    }
    if (this.#life.running || this.#rings.some((r) => r.running)) {
      throw new RequestRefused(`${request}: not while rings run`);
    }
  }

  #useInflight(region: InflightRegion, how: string): void {
    this.#inflight?.close();
    this.#inflight = region;
    this.events.emit(
      "info",
      `inflight region ${how}: ${region.numQueues} ring(s) of ${region.queueSize}`,
    );
  }

  /** `SET_FEATURES`: the features the frontend acks (only offered bits). */
  setFeatures(features: bigint): Promise<void> {
    return this.#serialize(() => this.#setFeatures(features));
  }

  /** `SET_MEM_TABLE`: replace the memory table. The region fds stay the caller's. */
  setMemTable(regions: readonly MemoryRegionSpec[]): Promise<void> {
    return this.#serialize(() => this.#setMemTable(regions));
  }

  /** `SET_VRING_NUM`: ring `index` has `num` entries. */
  setVringNum(index: number, num: number): Promise<void> {
    return this.#serialize(async () => {
      const r = this.#ring(index, "SET_VRING_NUM");
      const packed = hasBit(this.#acked, VirtioFeatureBit.RING_PACKED);
      if (
        !Number.isInteger(num) || num < 1 || num > this.description.maxQueueSize ||
        (!packed && (num & (num - 1)) !== 0)
      ) {
        throw new RequestRefused(
          `SET_VRING_NUM ring ${index}: size ${num} refused; the device takes a power of two ` +
            `from 1 to ${this.description.maxQueueSize}`,
        );
      }
      await this.#quiesceRing(r, "ring size changed");
      r.num = num;
      // Addresses accepted for the old size may not fit the new one.
      this.#translate(r);
      await this.#evaluate();
    });
  }

  /** `SET_VRING_ADDR`: ring addresses, as frontend virtual addresses. */
  setVringAddr(addr: VringAddr): Promise<void> {
    return this.#serialize(() => this.#setVringAddr(addr));
  }

  /** `SET_VRING_BASE`: ring `index` starts at available index `base`. */
  setVringBase(index: number, base: number): Promise<void> {
    return this.#serialize(async () => {
      const r = this.#ring(index, "SET_VRING_BASE");
      if (!Number.isInteger(base) || base < 0 || base > 0xffffffff) {
        throw new ProtocolError(`SET_VRING_BASE ring ${index}: base ${base} is not a u32`);
      }
      await this.#quiesceRing(r, "ring base changed");
      r.state = decodeRingBase(base, this.#packed);
      await this.#evaluate();
    });
  }

  /**
   * `GET_VRING_BASE`: stop ring `index` and return where the device got to.
   * The other rings run on when the driver has `stopRing`; otherwise the
   * device is suspended (or stopped) and parks until a ring is enabled or
   * kicked again.
   */
  getVringBase(index: number): Promise<VringState> {
    return this.#serialize(async () => {
      const r = this.#ring(index, "GET_VRING_BASE");
      if (r.running) {
        if (this.#perRing) {
          await this.#life.stopRing(r, "GET_VRING_BASE");
        } else {
          this.#setParked(true);
          await this.#life.suspend(`frontend stopped ring ${index}`);
        }
      }
      await this.#life.saveState(r);
      // The ring is stopped: its kick fd is no longer watched, as in vhost.
      r.setKick(-1);
      r.kickSet = false;
      return { index, num: encodeRingBase(r.state, this.#packed) };
    });
  }

  /**
   * Pause every ring, keeping configuration and ring state (the driver's
   * `suspend`; a driver without it is stopped, and started again on
   * `resume`). For migration and embedders.
   */
  suspend(): Promise<void> {
    return this.#serialize(() => this.#life.suspend("suspend requested"));
  }

  /** Continue after {@linkcode VhostMdevDevice.suspend}, each ring where it paused. */
  resume(): Promise<void> {
    return this.#serialize(async () => {
      this.#setParked(false);
      await this.#evaluate();
    });
  }

  /** `SET_VRING_KICK`: ring `index`'s kick eventfd (the device owns it from now on), or -1. */
  setVringKick(index: number, fd: number): Promise<void> {
    return this.#serialize(async () => {
      const r = this.#ringFile(index, fd, "SET_VRING_KICK");
      try {
        await this.#quiesceRing(r, "kick fd changed");
      } finally {
        r.setKick(fd);
      }
      await this.#evaluate();
    });
  }

  /** `SET_VRING_CALL`: ring `index`'s call eventfd (owned by the device from now on), or -1. */
  setVringCall(index: number, fd: number): Promise<void> {
    return this.#serialize(async () => {
      const r = this.#ringFile(index, fd, "SET_VRING_CALL");
      if (r.callFd === fd) return;
      try {
        await this.#quiesceRing(r, "call fd changed");
      } finally {
        r.setCall(fd);
      }
      await this.#evaluate();
    });
  }

  /** `SET_VRING_ERR`: ring `index`'s error eventfd (owned by the device from now on), or -1. */
  setVringErr(index: number, fd: number): Promise<void> {
    return this.#serialize(() => {
      this.#ringFile(index, fd, "SET_VRING_ERR").setErr(fd);
    });
  }

  /**
   * The RFC's `VHOST_MDEV_SET_STATE`: start a fully configured device
   * (`RUNNING`) or stop it (`STOPPED`) on an embedder's say-so.
   */
  setState(state: number): Promise<void> {
    return this.#serialize(async () => {
      if (state === VhostMdevState.RUNNING) {
        const why = this.#whyNotReady();
        if (why !== null) {
          throw new RequestRefused(`cannot start: ${why}; configure the rings first`);
        }
        this.#setParked(false);
        return await this.#life.start();
      }
      if (state === VhostMdevState.STOPPED) {
        this.#setParked(true);
        return await this.#life.stop("VHOST_MDEV_SET_STATE(STOPPED)");
      }
      throw new ProtocolError(`VHOST_MDEV_SET_STATE: unknown state ${state}`);
    });
  }

  /** `SET_VRING_ENABLE`: enable or disable ring `index`; the other rings run on. */
  setVringEnable(index: number, enable: boolean): Promise<void> {
    return this.#serialize(async () => {
      const r = this.#ring(index, "SET_VRING_ENABLE");
      if (r.enabled === enable) {
        // Enabling an enabled ring (or its kick arriving, without
        // VHOST_USER_F_PROTOCOL_FEATURES) restarts a device parked by
        // GET_VRING_BASE once its rings are set up again.
        if (enable && this.#parked) {
          this.#setParked(false);
          await this.#evaluate();
        }
        return;
      }
      if (!enable && r.running) {
        // A driver that stops whole devices only parks until a ring is
        // enabled again: a frontend disabling rings one by one causes one stop.
        if (!this.#perRing) this.#parkBriefly();
        await this.#quiesceRing(r, "disabled");
      }
      r.enabled = enable;
      if (enable) this.#setParked(false);
      await this.#evaluate();
    });
  }

  /** `SET_STATUS`: the virtio device status byte. */
  setStatus(status: number): Promise<void> {
    return this.#serialize(async () => {
      if (!Number.isInteger(status) || status < 0 || status > 0xff) {
        throw new ProtocolError(`SET_STATUS: ${status} is not a status byte`);
      }
      const previous = this.#status;
      this.#statusDriven = true;
      if (status === 0) {
        // The frontend resets the device: stop it, but keep the ring and
        // memory configuration, which GET_VRING_BASE may still read and a
        // new handshake overwrites (RESET_DEVICE forgets everything).
        this.#status = 0;
        this.#setParked(false);
        if (previous !== 0) this.events.emit("status", "status 0: device reset by the frontend");
        await this.#life.stop("status reset to 0");
        return;
      }
      if ((status & VirtioStatus.FEATURES_OK) && !this.#featuresSet) {
        throw new RequestRefused("SET_STATUS: FEATURES_OK before SET_FEATURES");
      }
      status = await this.#driverStatus(status, previous);
      this.#status = status;
      if (status !== previous) {
        this.events.emit("status", `status ${statusNames(status)}`, { status });
      }
      this.#setParked(false);
      await this.#evaluate();
    });
  }

  /** `RESET_DEVICE` / `RESET_OWNER`: stop and forget all frontend state. */
  reset(): Promise<void> {
    return this.#serialize(() => this.#reset());
  }

  /** `GET_CONFIG`: `length` bytes of config space at `offset`. */
  getConfig(offset: number, length: number): Uint8Array {
    if (this.#ops.getConfig) return this.#ops.getConfig(offset, length);
    const config = this.description.config ?? new Uint8Array(0);
    if (offset < 0 || length < 0 || offset + length > config.length) {
      throw new RequestRefused(
        `GET_CONFIG offset ${offset} length ${length} is outside the ${config.length}-byte config space`,
      );
    }
    return config.slice(offset, offset + length);
  }

  /** `SET_CONFIG`: write config space. */
  setConfig(offset: number, data: Uint8Array): void {
    if (!this.#ops.setConfig) {
      throw new RequestRefused("SET_CONFIG: the device's config space is read-only");
    }
    this.#ops.setConfig(offset, data);
  }

  /** `ADD_MEM_REG`: add one region (its fd stays the caller's). */
  addMemoryRegion(region: MemoryRegionSpec): Promise<void> {
    return this.#serialize(async () => {
      if (this.#table.countRepeat(region)) return;
      this.#table.checkSlot(region);
      await this.#changeMemory(this.#table.planAdd(region));
    });
  }

  /** `REM_MEM_REG`: remove the region at `gpa` of `size` bytes. */
  removeMemoryRegion(gpa: number, size: number): Promise<void> {
    return this.#serialize(async () => {
      if (this.#table.dropRepeat(gpa, size)) return;
      await this.#changeMemory(this.#table.planRemove(gpa, size));
    });
  }

  /**
   * `IOTLB_MSG` update (behind a vIOMMU): `size` bytes from `iova` are the
   * frontend's `uaddr`, with `perm` access. Rings waiting for the
   * translation start; Workers waiting for it are kicked; a driver with
   * `mapMemory` gets the range mapped at its IOVA (and what the update
   * replaced unmapped first).
   *
   * @throws RequestRefused when `VIRTIO_F_ACCESS_PLATFORM` was not acked, or
   *   the entry is invalid or not inside one region of the memory table.
   */
  iotlbUpdate(entry: IotlbEntry): Promise<void> {
    return this.#serialize(async () => {
      const iotlb = this.#requireIotlb("IOTLB update");
      const what = `IOTLB update iova ${hex(entry.iova)} size ${hex(entry.size)} uaddr ${
        hex(entry.uaddr)
      }`;
      if (
        !Number.isSafeInteger(entry.uaddr) || !Number.isSafeInteger(entry.size) ||
        this.#table.memory.findUva(entry.uaddr, entry.size) < 0
      ) {
        throw new RequestRefused(
          `${what}: the range is not inside one region of the memory table`,
        );
      }
      let gone: IotlbEntry[] | null;
      try {
        gone = iotlb.update(entry);
      } catch (e) {
        throw new RequestRefused(message(e));
      }
      if (gone !== null) await this.#dmaDelta(gone, [entry]);
      // Rings that waited for this translation may run now; running rings
      // whose areas were invalidated may see them translated again.
      await this.#recheckRings(false);
    });
  }

  /**
   * `IOTLB_MSG` invalidation: take back `[iova, iova + size)` (`size` 0:
   * to the end of the address space). A running ring whose own areas lose
   * their translation asks for them again and runs on meanwhile (a guest
   * flushing its IOTLB still maps its rings): when the answers translate to
   * the same memory nothing stops; when they move, are refused or do not
   * come within `IOTLB_MISS_TIMEOUT_MS`, the ring stops (the others run on)
   * and starts again once translated. A driver that maps the IOTLB itself
   * (`mapsIotlb`) cannot keep a DMA mapping the guest took back: its rings
   * stop at once. A driver with `unmapMemory` gets the removed ranges
   * unmapped (and what stays of them mapped again).
   *
   * @throws RequestRefused when `VIRTIO_F_ACCESS_PLATFORM` was not acked.
   */
  iotlbInvalidate(iova: number, size: number): Promise<void> {
    return this.#serialize(async () => {
      const iotlb = this.#requireIotlb("IOTLB invalidation");
      const { removed, kept } = iotlb.invalidate(iova, size);
      if (removed.length === 0) return;
      const end = size === 0 ? Number.MAX_SAFE_INTEGER : iova + size;
      for (const r of this.#rings) {
        if (r.uva === null || !r.addrValid) continue;
        const [d, a, u] = ringAreaSizes(Math.max(r.num, 1), this.#eventIdx, this.#packed);
        const hit = ([[r.uva.desc, d], [r.uva.avail, a], [r.uva.used, u]] as const).some(
          ([start, n]) => start < end && iova < start + n,
        );
        if (!hit) continue;
        if (r.running && !this.#mapsIotlb) {
          if (r.revalidating < 0) r.revalidating = performance.now();
          await this.#revalidate(r);
          continue;
        }
        await this.#quiesceRing(r, "IOTLB invalidated its addresses");
        this.#translate(r);
      }
      if (this.#rings.some((r) => r.revalidating >= 0)) this.#scheduleRingCheck();
      await this.#dmaDelta(removed, kept);
      await this.#evaluate();
    });
  }

  /** Destroy the device: stop it, release frontend state, call the driver's `close`. */
  close(): Promise<void> {
    return this.#serialize(async () => {
      if (this.#closed) return;
      await this.#reset();
      this.#closed = true;
      this.#useIotlb(false);
      this.#table.close();
      try {
        await this.#ops.close?.();
      } catch (e) {
        this.events.emit("error", `driver close failed: ${message(e)}`);
      }
    });
  }

  // --- internals -----------------------------------------------------------

  #serialize<T>(fn: () => Promise<T> | T): Promise<T> {
    const next = this.#lock.then(fn, fn);
    this.#lock = next.catch(() => {});
    return next;
  }

  #ring(index: number, request: string): RingState {
    const r = Number.isInteger(index) ? this.#rings[index] : undefined;
    if (!r) {
      throw new ProtocolError(
        `${request}: ring index ${index} is out of range (the device has ${this.#rings.length} rings)`,
      );
    }
    return r;
  }

  /**
   * The ring a kick, call or error fd is for. The fd is the device's from
   * here on: when the request is refused (ring out of range, an fd that is
   * not an eventfd) it is closed. Accepted fds are made non-blocking, so no
   * thread ever blocks writing or reading one, whatever the frontend did to
   * its counter.
   */
  #ringFile(index: number, fd: number, request: string): RingState {
    let r: RingState;
    try {
      r = this.#ring(index, request);
    } catch (e) {
      if (fd >= 0) closeQuietly(fd);
      throw e;
    }
    checkRingFd(fd, request, index);
    return r;
  }

  #signal(q: number): void {
    const r = this.#rings[q];
    if (r && r.callFd >= 0) {
      try {
        eventfdSignal(r.callFd);
      } catch (e) {
        this.#reportError(`interrupting ring ${q} failed: ${message(e)}`, q);
      }
    }
  }

  #notifyConfigChange(): void {
    try {
      this.#owner?.notifyConfigChange?.();
    } catch (e) {
      this.events.emit("warn", `config change notification failed: ${message(e)}`);
    }
  }

  #reportError(text: string, queue?: number): void {
    this.#errors++;
    const had = (this.#status & VirtioStatus.NEEDS_RESET) !== 0;
    this.#status |= VirtioStatus.NEEDS_RESET;
    const r = queue === undefined ? undefined : this.#rings[queue];
    this.events.emit(
      "error",
      text,
      queue === undefined ? { status: this.#status } : {
        queue,
        status: this.#status,
      },
    );
    if (r && r.errFd >= 0) {
      try {
        eventfdSignal(r.errFd);
      } catch {
        // The error fd is gone: the event and the status still say it.
      }
    }
    if (!had) this.#notifyConfigChange();
  }

  #ringError(queue: number, text: string): void {
    const r = this.#rings[queue];
    if (!r) {
      throw new RangeError(`ring ${queue} does not exist: the device has ${this.#rings.length}`);
    }
    this.#errors++;
    this.events.emit("error", text, { queue });
    if (r.errFd >= 0) {
      try {
        eventfdSignal(r.errFd);
      } catch {
        // The error fd is gone: the event still says it.
      }
    }
  }

  /**
   * The status after the driver saw it: `FEATURES_OK` cleared when the
   * driver refuses the features (virtio 1.2 §3.1.1 step 6). `NEEDS_RESET`
   * raised by the device stays until the frontend resets.
   */
  async #driverStatus(status: number, previous: number): Promise<number> {
    status |= this.#status & VirtioStatus.NEEDS_RESET;
    if (!this.#ops.setStatus) return status;
    let verdict: void | boolean;
    try {
      verdict = await this.#ops.setStatus(status);
    } catch (e) {
      throw new RequestRefused(
        `SET_STATUS ${statusNames(status)}: the driver failed: ${message(e)}`,
      );
    }
    const asked = (status & VirtioStatus.FEATURES_OK) !== 0 &&
      (previous & VirtioStatus.FEATURES_OK) === 0;
    if (verdict === false && asked) {
      this.events.emit(
        "warn",
        `the driver refused features ${hex(this.#acked)}: FEATURES_OK stays clear`,
      );
      return status & ~VirtioStatus.FEATURES_OK & ~VirtioStatus.DRIVER_OK;
    }
    return status;
  }

  async #setFeatures(features: bigint): Promise<void> {
    if (typeof features !== "bigint" || features < 0n || features >= 1n << 64n) {
      throw new ProtocolError(`SET_FEATURES: ${features} is not a u64`);
    }
    const extra = features & ~this.#offered;
    if (extra !== 0n) {
      throw new RequestRefused(
        `SET_FEATURES ${hex(features)} refused: bits ${hex(extra)} are not offered ` +
          `(the device offers ${hex(this.#offered)})`,
      );
    }
    if (this.#featuresSet && features === this.#acked) return;
    // VHOST_F_LOG_ALL "can be changed while device is active": turning
    // logging on or off changes no ring, so nothing stops.
    const onlyLogging = this.#featuresSet && (features ^ this.#acked) === bit(VHOST_F_LOG_ALL);
    if (!onlyLogging) await this.#quiesce("features changed");
    this.#acked = features;
    this.#featuresSet = true;
    this.#useIotlb(hasBit(features, VirtioFeatureBit.ACCESS_PLATFORM));
    if (!onlyLogging) this.#retranslate();
    this.events.emit("features", `features acked ${hex(features)}`, { features: hex(features) });
    await this.#ops.featuresChanged?.(features);
    await this.#applyLog();
    if (!onlyLogging) await this.#evaluate();
  }

  /**
   * Give the driver the log it should write now: the frontend's log while
   * `VHOST_F_LOG_ALL` is acked, else none. A driver that fails to switch
   * keeps its previous log mapped (it may still write it) and the device
   * reports the error.
   */
  async #applyLog(): Promise<void> {
    const want = hasBit(this.#acked, VHOST_F_LOG_ALL) ? this.#dirtyLog : null;
    if (want === this.#driverLog || !this.#ops.setLog) return;
    const previous = this.#driverLog;
    try {
      await this.#ops.setLog(want);
    } catch (e) {
      this.#reportError(`the driver failed to switch its dirty log: ${message(e)}`);
      throw new RequestRefused(`the driver failed to switch its dirty log: ${message(e)}`);
    }
    this.#driverLog = want;
    this.events.emit("info", want ? "dirty logging on" : "dirty logging off");
    if (previous !== null && previous !== this.#dirtyLog) previous.close();
  }

  /** Warn when the log does not reach the end of guest memory: writes past it are errors. */
  #checkLogCoverage(): void {
    const log = this.#dirtyLog;
    if (log === null || !this.#table.isSet) return;
    const end = this.#table.memory.regions.reduce((m, r) => Math.max(m, r.gpa + r.size), 0);
    if (end > log.coverage) {
      this.events.emit(
        "warn",
        `dirty log covers ${hex(log.coverage)} bytes of guest memory, which ends at ${hex(end)}: ` +
          `writes past the log are device errors until the frontend sends a larger log`,
      );
    }
  }

  /**
   * Mark ring `r`'s whole used ring in the log when it stops or the device
   * suspends while logging (vhost-user: "log the used ring" for rings with
   * `VHOST_VRING_F_LOG`), so the ring handed over is consistent whatever the
   * device logged while running.
   */
  #logUsedRing(r: RingState): void {
    const log = this.#driverLog;
    if (log === null || !r.logging || r.num === 0) return;
    // A packed ring's used descriptors are written into the descriptor ring.
    if (this.#packed) log.mark(r.descAddr, packedRingSize(r.num));
    const size = this.#packed
      ? EVENT_SUPPRESS_SIZE
      : usedRingSize(r.num, hasBit(this.#acked, VirtioFeatureBit.EVENT_IDX));
    if (!log.mark(r.logAddr, size)) {
      this.#ringError(
        r.index,
        `used ring at ${hex(r.logAddr)} (${size} bytes) is past the dirty log's ` +
          `${hex(log.coverage)} bytes of coverage`,
      );
    }
  }

  async #setMemTable(regions: readonly MemoryRegionSpec[]): Promise<void> {
    await this.#changeMemory(this.#table.planReplace(regions));
  }

  /**
   * Make `next` the memory table. A driver with `mapMemory`/`unmapMemory`
   * gets the difference as ranges while the rings run on; only rings whose
   * own addresses move or leave the table stop (and start again once they
   * translate). Any other driver is stopped around the change.
   */
  async #changeMemory(next: GuestMemory): Promise<void> {
    const old = this.#table.memory;
    // Behind a vIOMMU the IOTLB's translations end in frontend addresses of
    // the old table: a new table empties it (the frontend answers misses
    // again), and a mapping driver unmaps what it had mapped of it.
    const iotlb = this.#iotlb;
    const flushed = iotlb === null || !this.#mapsIotlb
      ? []
      : iotlb.table.list().flatMap((e) => this.#dmaRange(e) ?? []);
    const removed = old.regions.filter((r) => !holds(next, r));
    const added = next.regions.filter((r) => !holds(old, r));
    const incremental = this.#life.running && this.#ops.mapMemory !== undefined &&
      this.#ops.unmapMemory !== undefined;
    try {
      if (!incremental) {
        await this.#quiesce("memory table changed");
      } else {
        const eventIdx = hasBit(this.#acked, VirtioFeatureBit.EVENT_IDX);
        for (const r of this.#life.runningRings()) {
          const under = [r.descAddr, r.availAddr, r.usedAddr].some((gpa) =>
            removed.some((m) => gpa >= m.gpa && gpa < m.gpa + m.size)
          );
          if (under || !r.sameIn(next, eventIdx, this.#packed)) {
            await this.#life.stopRing(r, "memory under it changed");
          }
        }
      }
    } catch (e) {
      next.close();
      throw e;
    }
    this.#table.commit(next);
    if (iotlb !== null) {
      iotlb.table.clear();
      next.useIotlb(iotlb.table);
    }
    this.#retranslate();
    const total = next.regions.reduce((s, r) => s + r.size, 0);
    this.events.emit(
      "memory",
      `memory table: ${next.regions.length} region(s), ${(total / 1048576).toFixed(0)} MiB` +
        ` (+${added.length} -${removed.length})`,
      {
        regions: next.regions.map((r) => ({ gpa: hex(r.gpa), size: r.size, uva: hex(r.uva) })),
        added: added.length,
        removed: removed.length,
      },
    );
    if (incremental && this.#life.running) {
      // The table is the new one now: what left it stays mapped in this
      // process while leases hold it, so the driver unmaps it from its
      // device, then maps what joined.
      try {
        if (iotlb !== null && this.#mapsIotlb) {
          for (const r of flushed) await this.#ops.unmapMemory!(r);
        } else {
          for (const r of removed) await this.#ops.unmapMemory!(regionRange(r));
          for (const r of added) await this.#ops.mapMemory!(regionRange(r));
        }
      } catch (e) {
        this.#reportError(`updating the device's memory mappings failed: ${message(e)}`);
        await this.#life.stop("memory mapping failed");
        throw new RequestRefused(`the driver failed to update its memory mappings: ${message(e)}`);
      }
    }
    await this.#evaluate();
  }

  /** Translate every ring's addresses into the current table. */
  #retranslate(): void {
    for (const r of this.#rings) this.#translate(r);
  }

  async #setVringAddr(a: VringAddr): Promise<void> {
    const r = this.#ring(a.index, "SET_VRING_ADDR");
    for (const [k, v] of Object.entries({ desc: a.desc, used: a.used, avail: a.avail })) {
      if (!Number.isSafeInteger(v) || v < 0) {
        throw new ProtocolError(`SET_VRING_ADDR ring ${a.index}: ${k} address ${v} is invalid`);
      }
    }
    const same = r.uva !== null && r.uva.desc === a.desc && r.uva.avail === a.avail &&
      r.uva.used === a.used && r.addrValid;
    if (same) {
      // Only the logging flag or address changed (live migration turns
      // logging on and off this way on running rings): nothing stops.
      r.logging = (a.flags & 1) !== 0;
      r.logAddr = a.log;
      return;
    }
    await this.#quiesceRing(r, "ring addresses changed");
    r.uva = { desc: a.desc, avail: a.avail, used: a.used };
    r.logging = (a.flags & 1) !== 0;
    r.logAddr = a.log;
    if (!this.#table.isSet) {
      throw new RequestRefused(
        `SET_VRING_ADDR ring ${a.index}: no memory table yet; send SET_MEM_TABLE first`,
      );
    }
    this.#translate(r);
    if (!r.addrValid && r.missing === null) {
      throw new RequestRefused(
        `SET_VRING_ADDR ring ${a.index}: desc ${hex(a.desc)} avail ${hex(a.avail)} ` +
          `used ${hex(a.used)} are not all inside the memory table`,
      );
    }
    await this.#evaluate();
  }

  #setParked(on: boolean): void {
    this.#parked = on;
    clearTimeout(this.#unparkTimer);
    this.#unparkTimer = undefined;
  }

  /**
   * A ring was disabled on a driver that stops whole devices only: park, so
   * a frontend disabling its rings one by one causes one stop, and run the
   * rings still enabled again once the frontend has been quiet for
   * {@linkcode UNPARK_MS} (a guest dropping one queue pair keeps the others).
   */
  #parkBriefly(): void {
    this.#setParked(true);
    this.#unparkTimer = setTimeout(() => {
      this.#unparkTimer = undefined;
      this.#serialize(async () => {
        if (!this.#parked || this.#closed || this.#unparkTimer !== undefined) return;
        this.#parked = false;
        await this.#evaluate();
      }).catch((e) => this.events.emit("warn", `running the enabled rings again: ${message(e)}`));
    }, UNPARK_MS);
  }

  get #perRing(): boolean {
    return this.#life.perRing;
  }

  get #packed(): boolean {
    return hasBit(this.#acked, VirtioFeatureBit.RING_PACKED);
  }

  get #eventIdx(): boolean {
    return hasBit(this.#acked, VirtioFeatureBit.EVENT_IDX);
  }

  #translate(r: RingState): void {
    const iotlb = this.#iotlb;
    const deniedBefore = r.denied;
    r.translate(this.#table.memory, this.#eventIdx, this.#packed, iotlb?.table ?? null);
    if (iotlb === null) return;
    if (r.missing !== null) {
      iotlb.ask(r.missing);
      // A frontend that ignores the miss (an unmapped page) is asked again
      // until it answers: a ring never waits on one lost message.
      this.#scheduleRingCheck();
    }
    // Reported once, not at every IOTLB update that re-translates the ring.
    if (r.denied !== null && r.denied !== deniedBefore) this.#ringError(r.index, r.denied);
  }

  /** Whether the driver maps IOTLB translations for DMA itself (`mapsIotlb`). */
  get #mapsIotlb(): boolean {
    return this.description.mapsIotlb === true && this.#ops.mapMemory !== undefined &&
      this.#ops.unmapMemory !== undefined;
  }

  /**
   * A running ring whose areas were invalidated: translate them again. The
   * same memory: it runs on. Missing: ask again (it runs on until the
   * timeout). Moved or refused: stop it, re-translated (reported when
   * refused). Returns true when the ring was stopped.
   */
  async #revalidate(r: RingState): Promise<boolean> {
    const iotlb = this.#iotlb;
    if (iotlb === null || !r.running) {
      r.revalidating = -1;
      return false;
    }
    const gpas = r.resolve(this.#table.memory, this.#eventIdx, this.#packed, iotlb.table);
    if (
      gpas !== null && gpas[0] === r.descAddr && gpas[1] === r.availAddr &&
      gpas[2] === r.usedAddr
    ) {
      r.revalidating = -1;
      return false;
    }
    if (gpas === null && r.missing !== null) {
      iotlb.ask(r.missing);
      return false;
    }
    r.revalidating = -1;
    await this.#quiesceRing(r, "IOTLB moved or refused its addresses");
    this.#translate(r);
    return true;
  }

  /**
   * While a ring waits for the translation of its own addresses (never
   * translated yet, or running and checking them again after an
   * invalidation), look again every {@linkcode RING_RETRY_MS}: ask the
   * frontend again (within the miss bounds), run what now translates, and
   * stop a running ring whose areas did not come back within
   * `IOTLB_MISS_TIMEOUT_MS`.
   */
  #scheduleRingCheck(): void {
    if (this.#ringCheckTimer !== undefined) return;
    this.#ringCheckTimer = setTimeout(() => {
      this.#ringCheckTimer = undefined;
      this.#serialize(async () => {
        if (!this.#closed && this.#iotlb !== null) await this.#recheckRings(true);
      }).catch((e) => this.events.emit("warn", `translating rings again: ${message(e)}`));
    }, RING_RETRY_MS);
  }

  /**
   * Translate again the rings that wait for their addresses (`periodic`:
   * only those a miss is out for, and with the timeout applied; else, after
   * an update, also those refused before) and run what now translates.
   */
  async #recheckRings(periodic: boolean): Promise<void> {
    const now = performance.now();
    let changed = false;
    for (const r of this.#rings) {
      if (r.revalidating >= 0) {
        if (periodic && r.running && now - r.revalidating >= IOTLB_MISS_TIMEOUT_MS) {
          r.revalidating = -1;
          await this.#quiesceRing(r, "IOTLB translation of its addresses did not come back");
          this.#translate(r);
          changed = true;
        } else {
          changed = (await this.#revalidate(r)) || changed;
        }
      } else if (r.uva !== null && !r.addrValid && (!periodic || r.missing !== null)) {
        this.#translate(r);
        changed ||= r.addrValid;
      }
    }
    if (this.#rings.some((r) => r.revalidating >= 0)) this.#scheduleRingCheck();
    if (changed) await this.#evaluate();
  }

  #requireIotlb(what: string): DeviceIotlb {
    if (this.#iotlb === null) {
      throw new RequestRefused(
        `${what}: VIRTIO_F_ACCESS_PLATFORM was not negotiated, so the device has no IOTLB`,
      );
    }
    return this.#iotlb;
  }

  /**
   * Make the device IOTLB exist (`on`, kept if it does) or not; the memory
   * table translates buffer addresses through it.
   */
  #useIotlb(on: boolean): void {
    if (on && this.#iotlb === null) {
      this.#iotlb = new DeviceIotlb({
        sendMiss: (iova, perm) => this.#owner?.sendIotlbMiss?.(iova, perm) ?? false,
        wake: () => this.#kickRunningRings(),
      }, { evict: !this.#mapsIotlb });
    } else if (!on && this.#iotlb !== null) {
      this.#iotlb.close();
      this.#iotlb = null;
      clearTimeout(this.#ringCheckTimer);
      this.#ringCheckTimer = undefined;
      for (const r of this.#rings) r.revalidating = -1;
    }
    this.#table.memory.useIotlb(this.#iotlb?.table ?? null);
  }

  /**
   * Kick every running ring, as if the frontend had: a ring whose Worker
   * waits for a translation looks again (a spurious kick is harmless,
   * virtio 1.2 §2.7.13).
   */
  #kickRunningRings(): void {
    for (const r of this.#rings) {
      if (!r.running || r.kickFd < 0) continue;
      try {
        eventfdSignal(r.kickFd);
      } catch {
        // The frontend closed it: the ring's own Worker reports that.
      }
    }
  }

  /** What the device's DMA space holds: see `DeviceContext.dmaRanges`. */
  #dmaRanges(): MemoryRange[] {
    const memory = this.#table.memory;
    if (this.#iotlb === null) return memory.regions.map(regionRange);
    return this.#iotlb.table.list().flatMap((e) => this.#dmaRange(e) ?? []);
  }

  /** An IOTLB entry as a DMA range, or null when its memory is not in the table. */
  #dmaRange(e: IotlbEntry): MemoryRange | null {
    const memory = this.#table.memory;
    const i = memory.findUva(e.uaddr, e.size);
    if (i < 0) return null;
    const r = memory.regions[i];
    const offset = e.uaddr - r.uva;
    return {
      gpa: r.gpa + offset,
      iova: e.iova,
      size: e.size,
      address: r.address + offset,
      access: e.perm,
    };
  }

  /**
   * Behind a vIOMMU, tell a running driver with `mapMemory`/`unmapMemory`
   * what left its DMA space and what joined it.
   */
  async #dmaDelta(removed: IotlbEntry[], added: IotlbEntry[]): Promise<void> {
    if (!this.#life.running || !this.#mapsIotlb) return;
    try {
      for (const e of removed) {
        const range = this.#dmaRange(e);
        if (range) await this.#ops.unmapMemory!(range);
      }
      for (const e of added) {
        const range = this.#dmaRange(e);
        if (range) await this.#ops.mapMemory!(range);
      }
    } catch (e) {
      this.#reportError(`updating the device's IOTLB mappings failed: ${message(e)}`);
      await this.#life.stop("IOTLB mapping failed");
      throw new RequestRefused(`the driver failed to update its IOTLB mappings: ${message(e)}`);
    }
  }

  #whyNotReady(): string | null {
    return notReadyReason({
      closed: this.#closed,
      featuresSet: this.#featuresSet,
      memorySet: this.#table.isSet,
      rings: this.#rings,
      perRing: this.#perRing,
    });
  }

  /** Start, stop, resume or start single rings to match the frontend's configuration. */
  async #evaluate(): Promise<void> {
    const want = shouldRun({
      closed: this.#closed,
      featuresSet: this.#featuresSet,
      memorySet: this.#table.isSet,
      rings: this.#rings,
      perRing: this.#perRing,
      parked: this.#parked,
      statusDriven: this.#statusDriven,
      status: this.#status,
    });
    if (!want) {
      if (this.#life.running) await this.#life.stop("configuration no longer complete");
      return;
    }
    if (!this.#life.running) return await this.#life.start();
    const wanted = this.#rings.filter((r) => r.enabled && r.ready);
    if (this.#life.suspended) {
      // Resume only what was suspended; a different set of rings starts afresh.
      const same = wanted.length === this.#life.runningRings().length &&
        wanted.every((r) => r.running);
      if (same && this.#ops.resume) return await this.#life.resume();
      await this.#life.stop("rings changed while suspended");
      return await this.#life.start();
    }
    for (const r of wanted) if (!r.running) await this.#life.startRing(r);
  }

  /** Stop ring `r` while the frontend reconfigures it, if it runs. */
  async #quiesceRing(r: RingState, reason: string): Promise<void> {
    if (r.running) await this.#life.stopRing(r, reason);
  }

  async #quiesce(reason: string): Promise<void> {
    if (this.#life.running) await this.#life.stop(reason);
  }

  async #reset(): Promise<void> {
    this.#setParked(false);
    await this.#life.stop("device reset");
    this.#acked &= ~bit(VHOST_F_LOG_ALL);
    try {
      await this.#applyLog();
    } catch {
      // Reported; the driver keeps its log mapped.
    }
    if (this.#dirtyLog !== null && this.#dirtyLog !== this.#driverLog) this.#dirtyLog.close();
    this.#dirtyLog = null;
    this.#inflight?.close();
    this.#inflight = null;
    for (const r of this.#rings) r.reset();
    this.#table.clear();
    this.#useIotlb(false);
    this.#retranslate();
    this.#acked = 0n;
    this.#featuresSet = false;
    this.#status = 0;
    this.#statusDriven = false;
  }
}

function validateDescription(name: string, d: DeviceDescription): void {
  if (!Number.isInteger(d.numQueues) || d.numQueues < 1 || d.numQueues > 256) {
    throw new RangeError(`driver ${name}: numQueues ${d.numQueues} must be 1..256`);
  }
  const m = d.maxQueueSize;
  if (!Number.isInteger(m) || m < 1 || m > MAX_RING_SIZE || (m & (m - 1)) !== 0) {
    throw new RangeError(`driver ${name}: maxQueueSize ${m} must be a power of two up to 32768`);
  }
  if (typeof d.features !== "bigint") {
    throw new RangeError(`driver ${name}: features must be a bigint`);
  }
  for (const b of [...d.protocolFeatures?.add ?? [], ...d.protocolFeatures?.remove ?? []]) {
    if (!Number.isInteger(b) || b < 0 || b > 63) {
      throw new RangeError(`driver ${name}: protocol feature bit ${b} must be 0..63`);
    }
  }
  for (const list of [d.counters?.ring ?? [], d.counters?.device ?? []]) {
    const names = new Set<string>();
    for (const c of list) {
      if (typeof c?.name !== "string" || !/^[a-z][a-z0-9_]*$/.test(c.name) || c.name === "queue") {
        throw new RangeError(
          `driver ${name}: counter name ${c?.name} must be lower_snake_case and not "queue"`,
        );
      }
      if (names.has(c.name)) {
        throw new RangeError(`driver ${name}: counter ${c.name} declared twice`);
      }
      names.add(c.name);
    }
  }
  if (hasBit(d.features, VHOST_F_LOG_ALL) && typeof d.ops?.setLog !== "function") {
    throw new RangeError(
      `driver ${name}: offers VHOST_F_LOG_ALL but has no ops.setLog; the SDK offers it ` +
        `for drivers that log`,
    );
  }
  if (typeof d.ops?.getVringState !== "function") {
    throw new RangeError(`driver ${name}: ops.getVringState is required`);
  }
}

/** A memory table region as the device's DMA sees it without a vIOMMU: IOVA = GPA, read-write. */
function regionRange(r: GuestRegion): MemoryRange {
  return {
    gpa: r.gpa,
    iova: r.gpa,
    size: r.size,
    address: r.address,
    access: IotlbAccess.READ_WRITE,
  };
}

/** Whether `memory` has a region with `r`'s addresses at the same host address. */
function holds(memory: GuestMemory, r: GuestRegion): boolean {
  return memory.regions.some((m) =>
    m.gpa === r.gpa && m.size === r.size && m.uva === r.uva && m.address === r.address
  );
}

/** The message of an unknown thrown value. */
export function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
