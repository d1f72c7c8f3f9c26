/**
 * The virtio 1.2 PCI modern transport (§4.1.4) as a driver uses it: status,
 * feature negotiation, per-queue setup through `queue_select`, doorbells and
 * device config. Every register is accessed with exactly its width, and the
 * 64-bit queue addresses as two 32-bit stores, low half first, which every
 * device accepts (the spec lets a device require it).
 *
 * @module
 */

import { VirtioStatus } from "../uapi/virtio.ts";
import { VirtioCommonCfg as C } from "../uapi/pci.ts";
import type { PciFunction } from "./function.ts";
import { type MmioAccessor, MmioWindow } from "./mmio.ts";
import { readVirtioPciLayout, type VirtioPciLayout } from "./virtio_caps.ts";

const TWO_32 = 0x1_0000_0000;

/** The device did not do what the transport asked (refused features, stuck reset). */
export class VirtioPciError extends Error {
  /**
   * Make the error.
   *
   * @param message What the device refused.
   */
  constructor(message: string) {
    super(message);
    this.name = "VirtioPciError";
  }
}

/** Ring addresses and settings for {@linkcode VirtioPciTransport.setupQueue}. */
export interface QueueSetup {
  /** Ring size (at most the device's maximum). */
  size: number;
  /** Descriptor table IOVA. */
  desc: number;
  /** Driver (available) ring IOVA. */
  driver: number;
  /** Device (used) ring IOVA. */
  device: number;
  /** MSI-X vector, or `VIRTIO_MSI_NO_VECTOR`. */
  msixVector: number;
}

/**
 * A virtio modern device's registers. Build it with
 * {@linkcode VirtioPciTransport.open} on a {@linkcode PciFunction}, or from
 * windows directly in tests.
 *
 * @example
 * ```ts
 * import { type PciFunction, VirtioPciTransport } from "@vhost-mdev/sdk/pci";
 * import { VirtioStatus } from "@vhost-mdev/sdk";
 *
 * declare const fn: PciFunction;
 * declare const wanted: bigint; // features the driver supports
 * declare const desc: number, driver: number, device: number; // ring IOVAs
 * const t = VirtioPciTransport.open(fn);
 * t.reset();
 * t.addStatus(VirtioStatus.ACKNOWLEDGE | VirtioStatus.DRIVER);
 * t.negotiate(t.deviceFeatures() & wanted);
 * t.setupQueue(0, { size: 256, desc, driver, device, msixVector: 1 });
 * t.enableQueue(0);
 * t.addStatus(VirtioStatus.DRIVER_OK);
 * t.notify(0);
 * ```
 */
export class VirtioPciTransport {
  /** The common configuration structure. */
  readonly common: MmioAccessor;
  /** The notification area. */
  readonly notifyArea: MmioAccessor;
  /** Device-specific configuration, if the device has it. */
  readonly deviceConfig: MmioAccessor | null;
  /** ISR status, if the device has it. */
  readonly isr: MmioAccessor | null;
  /** Where the structures are (BARs and offsets). */
  readonly layout: VirtioPciLayout;
  #doorbells: number[] = [];

  /** Use already-mapped windows; `layout` says where they came from. */
  constructor(
    layout: VirtioPciLayout,
    windows: {
      common: MmioAccessor;
      notify: MmioAccessor;
      device?: MmioAccessor | null;
      isr?: MmioAccessor | null;
    },
  ) {
    this.layout = layout;
    this.common = windows.common;
    this.notifyArea = windows.notify;
    this.deviceConfig = windows.device ?? null;
    this.isr = windows.isr ?? null;
    if (this.common.size < C.SIZE) {
      throw new VirtioPciError(
        `common cfg is ${this.common.size} bytes, smaller than the ${C.SIZE} virtio 1.0 requires`,
      );
    }
  }

  /**
   * Find the structures in `fn`'s config space and map their BARs.
   *
   * @throws VirtioPciLayoutError when `fn` is not a virtio modern device.
   */
  static open(fn: PciFunction): VirtioPciTransport {
    const layout = readVirtioPciLayout(fn.config);
    const window = (loc: { bar: number; offset: number; length: number }, what: string) =>
      new MmioWindow(fn.mapBar(loc.bar), loc.offset, loc.length, what);
    return new VirtioPciTransport(layout, {
      common: window(layout.common, "virtio common cfg"),
      notify: window(layout.notify, "virtio notify area"),
      device: layout.device ? window(layout.device, "virtio device cfg") : null,
      isr: layout.isr ? window(layout.isr, "virtio ISR") : null,
    });
  }

  /** Device status byte. */
  get status(): number {
    return this.common.read8(C.DEVICE_STATUS);
  }

  /** Write the status byte. */
  setStatus(status: number): void {
    this.common.write8(C.DEVICE_STATUS, status);
  }

  /** Set more status bits (keeps those already set). */
  addStatus(bits: number): void {
    this.setStatus(this.status | bits);
  }

  /**
   * Reset the device: write status 0, then wait until it reads back 0
   * (the device may take time to finish in-flight work).
   *
   * @throws VirtioPciError when the device does not reset within `timeoutMs`.
   */
  reset(timeoutMs = 1000): void {
    this.setStatus(0);
    const deadline = performance.now() + timeoutMs;
    while (this.status !== 0) {
      if (performance.now() > deadline) {
        throw new VirtioPciError(`the device did not finish its reset within ${timeoutMs} ms`);
      }
    }
    this.#doorbells = [];
  }

  /** The 64 device feature bits (two 32-bit words through the select register). */
  deviceFeatures(): bigint {
    this.common.write32(C.DEVICE_FEATURE_SELECT, 0);
    const lo = this.common.read32(C.DEVICE_FEATURE);
    this.common.write32(C.DEVICE_FEATURE_SELECT, 1);
    const hi = this.common.read32(C.DEVICE_FEATURE);
    return (BigInt(hi) << 32n) | BigInt(lo);
  }

  /** Write the 64 driver feature bits. */
  setDriverFeatures(features: bigint): void {
    this.common.write32(C.DRIVER_FEATURE_SELECT, 0);
    this.common.write32(C.DRIVER_FEATURE, Number(features & 0xffff_ffffn));
    this.common.write32(C.DRIVER_FEATURE_SELECT, 1);
    this.common.write32(C.DRIVER_FEATURE, Number((features >> 32n) & 0xffff_ffffn));
  }

  /**
   * Write `features`, set FEATURES_OK and check the device kept it.
   *
   * @throws VirtioPciError when the device refuses the feature set.
   */
  negotiate(features: bigint): void {
    this.setDriverFeatures(features);
    this.addStatus(VirtioStatus.FEATURES_OK);
    if ((this.status & VirtioStatus.FEATURES_OK) === 0) {
      throw new VirtioPciError(
        `the device refused features 0x${features.toString(16)} (FEATURES_OK did not stick)`,
      );
    }
  }

  /** Number of virtqueues the device has. */
  get numQueues(): number {
    return this.common.read16(C.NUM_QUEUES);
  }

  /** Select queue `q` for the QUEUE_* registers. */
  selectQueue(q: number): void {
    this.common.write16(C.QUEUE_SELECT, q);
  }

  /** Largest size queue `q` accepts (0: the queue does not exist). */
  queueMaxSize(q: number): number {
    this.selectQueue(q);
    return this.common.read16(C.QUEUE_SIZE);
  }

  /**
   * Program queue `q` (not yet enabled). Returns the MSI-X vector the device
   * accepted: `VIRTIO_MSI_NO_VECTOR` (0xffff) when it refused the one asked for.
   *
   * @throws VirtioPciError for a size above the queue's maximum.
   */
  setupQueue(q: number, setup: QueueSetup): number {
    const max = this.queueMaxSize(q);
    if (setup.size < 1 || setup.size > max) {
      throw new VirtioPciError(`queue ${q}: size ${setup.size} is outside 1..${max}`);
    }
    this.common.write16(C.QUEUE_SIZE, setup.size);
    this.#write64(C.QUEUE_DESC, setup.desc);
    this.#write64(C.QUEUE_DRIVER, setup.driver);
    this.#write64(C.QUEUE_DEVICE, setup.device);
    this.common.write16(C.QUEUE_MSIX_VECTOR, setup.msixVector);
    const vector = this.common.read16(C.QUEUE_MSIX_VECTOR);
    this.#doorbells[q] = this.#doorbellOffset(q);
    return vector;
  }

  /** The queue addresses the device holds for `q` (for checks and state saving). */
  queueAddresses(q: number): { size: number; desc: number; driver: number; device: number } {
    this.selectQueue(q);
    return {
      size: this.common.read16(C.QUEUE_SIZE),
      desc: this.#read64(C.QUEUE_DESC),
      driver: this.#read64(C.QUEUE_DRIVER),
      device: this.#read64(C.QUEUE_DEVICE),
    };
  }

  /** Enable queue `q` (after {@linkcode VirtioPciTransport.setupQueue}). */
  enableQueue(q: number): void {
    this.selectQueue(q);
    this.common.write16(C.QUEUE_ENABLE, 1);
  }

  /**
   * Reset queue `q` alone (`VIRTIO_F_RING_RESET`, virtio 1.2 §2.6.1 and
   * §4.1.4.3.2): write 1 to `queue_reset` and wait until the device presents
   * 0 there and in `queue_enable`. The queue can then be set up and enabled
   * again while the others run.
   *
   * @throws VirtioPciError when the common config has no `queue_reset`
   *   register or the reset does not complete within `spins` reads.
   */
  resetQueue(q: number, spins = 100000): void {
    if (this.common.size < C.QUEUE_RESET + 2) {
      throw new VirtioPciError(
        `queue ${q}: the common config (${this.common.size} bytes) has no queue_reset register`,
      );
    }
    this.selectQueue(q);
    this.common.write16(C.QUEUE_RESET, 1);
    for (let i = 0; i < spins; i++) {
      if (this.common.read16(C.QUEUE_RESET) === 0 && this.common.read16(C.QUEUE_ENABLE) === 0) {
        delete this.#doorbells[q];
        return;
      }
    }
    throw new VirtioPciError(`queue ${q}: the device did not complete the queue reset`);
  }

  /** Whether queue `q` is enabled. */
  queueEnabled(q: number): boolean {
    this.selectQueue(q);
    return this.common.read16(C.QUEUE_ENABLE) === 1;
  }

  /**
   * Set the config-change MSI-X vector; returns what the device accepted
   * (`VIRTIO_MSI_NO_VECTOR` when refused).
   */
  setConfigVector(vector: number): number {
    this.common.write16(C.CONFIG_MSIX_VECTOR, vector);
    return this.common.read16(C.CONFIG_MSIX_VECTOR);
  }

  /**
   * Offset of queue `q`'s doorbell within the notify area
   * (`queue_notify_off * notify_off_multiplier`).
   *
   * @throws VirtioPciError when the doorbell lies outside the notify area.
   */
  doorbellOffset(q: number): number {
    return this.#doorbells[q] ?? this.#doorbellOffset(q);
  }

  /** Offset of queue `q`'s doorbell within its BAR. */
  doorbellBarOffset(q: number): number {
    return this.layout.notify.offset + this.doorbellOffset(q);
  }

  /**
   * Where queue `q`'s doorbell register is in this process, or `null` when
   * the notify area is not mapped memory (an emulated function).
   */
  doorbellAddress(q: number): number | null {
    const base = this.notifyArea.address;
    return base === undefined ? null : base + this.doorbellOffset(q);
  }

  /**
   * Ring queue `q`'s doorbell: one 16-bit store of the queue index (without
   * `VIRTIO_F_NOTIFICATION_DATA`). The offset is cached by `setupQueue`, so
   * the hot path is one store.
   */
  notify(q: number): void {
    const off = this.#doorbells[q] ?? this.doorbellOffset(q);
    this.notifyArea.write16(off, q);
  }

  /** Config generation (changes whenever device config changes). */
  get configGeneration(): number {
    return this.common.read8(C.CONFIG_GENERATION);
  }

  /**
   * Read device config consistently: run `read` until the generation is the
   * same before and after (virtio 1.2 §4.1.3.1).
   *
   * @throws VirtioPciError when the device has no device config or the
   *   generation keeps changing.
   */
  readDeviceConfig<T>(read: (cfg: MmioAccessor) => T): T {
    const cfg = this.deviceConfig;
    if (!cfg) throw new VirtioPciError("the device has no device-specific config structure");
    for (let i = 0; i < 100; i++) {
      const before = this.configGeneration;
      const value = read(cfg);
      if (this.configGeneration === before) return value;
    }
    throw new VirtioPciError("device config kept changing while being read");
  }

  #doorbellOffset(q: number): number {
    this.selectQueue(q);
    const off = this.common.read16(C.QUEUE_NOTIFY_OFF) * this.layout.notifyOffMultiplier;
    if (off + 2 > this.notifyArea.size) {
      throw new VirtioPciError(
        `queue ${q}: doorbell at offset ${off} is outside the ${this.notifyArea.size}-byte notify area`,
      );
    }
    return off;
  }

  #write64(offset: number, value: number): void {
    if (!Number.isSafeInteger(value) || value < 0) {
      throw new RangeError(`queue address ${value} is not a valid IOVA`);
    }
    this.common.write32(offset, value % TWO_32);
    this.common.write32(offset + 4, Math.floor(value / TWO_32));
  }

  #read64(offset: number): number {
    return this.common.read32(offset) + this.common.read32(offset + 4) * TWO_32;
  }
}
