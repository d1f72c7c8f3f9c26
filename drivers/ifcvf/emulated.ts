/**
 * An emulated Intel IFC VF (the virtio-net VF of the N3000 / C5000X cards),
 * for developing and testing drivers with no hardware. It is a virtio 1.x
 * PCI modern network device with the IFC VF's vendor extra, the
 * live-migration BAR, behind the SDK's `PciFunction` / `DmaSpace`
 * interfaces:
 *
 * - config space: IDs `1af4:1041`, subsystem `8086:001a` (N3000), an MSI-X
 *   capability and the virtio vendor capabilities (common, notify, ISR,
 *   device config) locating structures in BAR 0; MSI-X table in BAR 1;
 * - BAR 0: `virtio_pci_common_cfg` with its register semantics (status and
 *   reset, feature select/words and FEATURES_OK, queue select/size/
 *   addresses/MSI-X vector/enable, notify offsets), ISR, virtio-net config,
 *   doorbells at `queue_notify_off * notify_off_multiplier`;
 * - BAR 4: the live-migration registers as the Linux and DPDK ifcvf drivers
 *   use them: from offset 0x20, 0x40 bytes per queue pair, one 32-bit word
 *   per queue (`last_avail_idx` in bits 0-15, `last_used_idx` in bits
 *   16-31). The driver writes it before DRIVER_OK to resume a ring where it
 *   stopped and reads it after stopping to learn where that was. The
 *   logging registers at 0x0-0x1c: with logging on, the device sets the
 *   dirty-log bit of every page it writes into a receive buffer, in the log
 *   at the IOVA range the driver gave, through its DMA mappings; like the
 *   hardware it does not log its used-ring writes (the SDK marks used rings
 *   when rings stop).
 *
 * The datapath is a loopback wire: a frame the driver puts on TX queue
 * `2p+1` comes back on RX queue `2p`. Rings are real split rings in the
 * memory the driver mapped for DMA, reached only through the
 * `EmulatedDmaSpace` (an IOVA outside the mappings is a device
 * error, as an IOMMU fault would be). A doorbell store processes its ring
 * synchronously, inside the store. Interrupts are MSI-X: writing the
 * eventfd wired to the queue's vector.
 *
 * Like QEMU's virtio-pci, the common config ignores accesses whose width
 * is not the register's (a byte-wise write of a 16-bit register does
 * nothing); they are counted in {@linkcode EmulatedIfcvf.badAccesses}, so
 * tests prove the driver's access widths.
 *
 * @module
 */

import {
  bit,
  DescriptorChain,
  DescriptorChainError,
  hasBit,
  SplitQueue,
  VIRTIO_NET_HDR_SIZE,
  VirtioFeatureBit,
  VirtioNetFeatureBit,
  VirtioStatus,
} from "@vhost-mdev/sdk";
import { ReceiveDelivery, ReceiveResult } from "@vhost-mdev/sdk/net";
import {
  EmulatedDmaSpace,
  EmulatedPciFunction,
  type EmulatedRegisters,
  MemoryRegisters,
  PciCapabilityId,
  PciConfig,
  PciConfigBuffer,
  PciStatus,
  VIRTIO_MSI_NO_VECTOR,
  VirtioCommonCfg as C,
  VirtioPciCapType,
} from "@vhost-mdev/sdk/pci";
import type { ProbeParams } from "@vhost-mdev/sdk";
import type { IfcvfTarget } from "./ifcvf.ts";
import {
  LM_BAR,
  LM_BASE_ADDR_HIGH,
  LM_BASE_ADDR_LOW,
  LM_CFG_SIZE,
  LM_END_ADDR_HIGH,
  LM_END_ADDR_LOW,
  LM_LOGGING_CTRL,
  LM_LOGGING_DISABLE,
  LM_LOGGING_ENABLE_VF,
  LM_RING_STATE_OFFSET,
} from "./lm.ts";

/** BAR 0 layout of the emulated device. */
export const EmulatedIfcvfLayout = {
  COMMON: 0x0000,
  COMMON_LENGTH: 0x40,
  ISR: 0x1000,
  ISR_LENGTH: 4,
  DEVICE: 0x2000,
  DEVICE_LENGTH: 0x100,
  /** Doorbells: `max(0x1000, notify_off_multiplier * queues)` bytes from here. */
  NOTIFY: 0x3000,
  /** BAR holding the MSI-X table (offset 0) and PBA (offset 0x800). */
  MSIX_BAR: 1,
  /** The live-migration BAR (the layout is `lm.ts`'s, the driver's own). */
  LM_BAR,
  LM_SIZE: 0x1000,
  /** Offset of queue pair 0's ring state in the LM BAR. */
  LM_RING_STATE: LM_RING_STATE_OFFSET,
  /** Bytes per queue pair in the LM BAR. */
  LM_PAIR_STRIDE: LM_CFG_SIZE,
} as const;

/** How to build an {@linkcode EmulatedIfcvf}. */
export interface EmulatedIfcvfOptions {
  /** Queue pairs (default 1; at most 8 as on the N3000). */
  queuePairs?: number;
  /** Largest ring size (default 256). */
  maxQueueSize?: number;
  /** MSI-X table size (default one per queue plus config). */
  msixVectors?: number;
  /** `notify_off_multiplier` (default 4). */
  notifyOffMultiplier?: number;
  /** MAC address (default 52:54:00:12:34:56). */
  mac?: readonly number[];
  /** PCI device ID (default 0x1041, modern virtio-net). */
  deviceId?: number;
  /** Subsystem vendor ID (default 0x8086). */
  subsystemVendor?: number;
  /** Subsystem device ID (default 0x001a, the N3000 VF). */
  subsystemDevice?: number;
  /** Whether BAR 4 has the live-migration registers (default true). */
  liveMigrationBar?: boolean;
  /** Frames the wire holds while the RX ring has no buffers (default 256). */
  wireBacklog?: number;
  /** Name used as the function's address (default "emulated:ifcvf"). */
  name?: string;
  /** The DMA space (default a new {@linkcode EmulatedDmaSpace}). */
  dma?: EmulatedDmaSpace;
  /**
   * Offer `VIRTIO_F_RING_RESET` and reset single queues through
   * `queue_reset` (virtio 1.2 §2.6.1, §4.1.4.3), as newer functions do
   * (default false: the N3000 VF has no queue reset).
   */
  ringReset?: boolean;
}

/** Counters of one emulated queue. */
export interface EmulatedQueueStats {
  /** Queue index. */
  queue: number;
  /** Frames completed (TX: sent on the wire; RX: delivered to the driver). */
  packets: number;
  /** Frame bytes completed (without the virtio-net header). */
  bytes: number;
  /** Frames dropped (RX: no buffer and the wire backlog full). */
  drops: number;
  /** Malformed chains. */
  errors: number;
  /** The device's counters by name (the four above). */
  [counter: string]: number;
}

interface QueueState {
  size: number;
  msixVector: number;
  enabled: boolean;
  desc: number[];
  driver: number[];
  device: number[];
  lmAvail: number;
  lmUsed: number;
  ring: SplitQueue | null;
  /** Frames into the ring, for a receive queue (virtio 1.2 §5.1.6.4). */
  receive: ReceiveDelivery | null;
  stats: EmulatedQueueStats;
}

/** The device requires `VERSION_1`, so every frame has the 12-byte header. */
const NET_HDR = VIRTIO_NET_HDR_SIZE;
const MAX_FRAME = 65535;
const TWO_32 = 0x1_0000_0000;

/** Width of each common-config register, by offset. */
const COMMON_WIDTH: Record<number, 1 | 2 | 4> = {
  [C.DEVICE_FEATURE_SELECT]: 4,
  [C.DEVICE_FEATURE]: 4,
  [C.DRIVER_FEATURE_SELECT]: 4,
  [C.DRIVER_FEATURE]: 4,
  [C.CONFIG_MSIX_VECTOR]: 2,
  [C.NUM_QUEUES]: 2,
  [C.DEVICE_STATUS]: 1,
  [C.CONFIG_GENERATION]: 1,
  [C.QUEUE_SELECT]: 2,
  [C.QUEUE_SIZE]: 2,
  [C.QUEUE_MSIX_VECTOR]: 2,
  [C.QUEUE_ENABLE]: 2,
  [C.QUEUE_NOTIFY_OFF]: 2,
  [C.QUEUE_DESC]: 4,
  [C.QUEUE_DESC + 4]: 4,
  [C.QUEUE_DRIVER]: 4,
  [C.QUEUE_DRIVER + 4]: 4,
  [C.QUEUE_DEVICE]: 4,
  [C.QUEUE_DEVICE + 4]: 4,
  [C.QUEUE_NOTIFY_DATA]: 2,
  [C.QUEUE_RESET]: 2,
};

/**
 * The emulated IFC VF. Give {@linkcode EmulatedIfcvf.function} and
 * {@linkcode EmulatedIfcvf.dma} to a driver as its `PciFunction` and
 * `DmaSpace`.
 *
 * @example
 * ```ts
 * import { EmulatedIfcvf } from "@vhost-mdev/ifcvf/emulated";
 * const device = new EmulatedIfcvf({ queuePairs: 1 });
 * const fn = device.function; // config space, BARs, MSI-X
 * const dma = device.dma;     // where the driver maps guest memory
 * ```
 */
export class EmulatedIfcvf {
  /** The PCI function (config space, BARs, MSI-X). */
  readonly function: EmulatedPciFunction;
  /** The IOMMU the device's DMA goes through. */
  readonly dma: EmulatedDmaSpace;
  /** Features the device offers. */
  readonly deviceFeatures: bigint;
  /** Accesses the device ignored (wrong width or offset), described. */
  readonly badAccesses: string[] = [];
  /** Device errors (IOMMU faults, hostile rings), described; each sets NEEDS_RESET. */
  readonly errors: string[] = [];
  /** Device resets (status 0 written) since creation. */
  deviceResets = 0;
  /** Single-queue resets (`queue_reset`) since creation. */
  queueResets = 0;
  /** Pages marked in the dirty log (one per page per write), since creation. */
  loggedPages = 0;
  readonly #pairs: number;
  readonly #maxQueueSize: number;
  readonly #multiplier: number;
  readonly #notifyLength: number;
  readonly #msixVectors: number;
  readonly #backlogLimit: number;
  readonly #mac: number[];
  #status = 0;
  #deviceFeatureSelect = 0;
  #driverFeatureSelect = 0;
  #driverFeatures = [0, 0];
  #configVector = VIRTIO_MSI_NO_VECTOR;
  #configGeneration = 0;
  #queueSelect = 0;
  #queues: QueueState[];
  #linkUp = true;
  #isr = 0;
  #dmaGeneration = -1;
  #backlog: Uint8Array[][];
  #chain = new DescriptorChain();
  #frame = new Uint8Array(NET_HDR + MAX_FRAME);
  #packet = new Uint8Array(NET_HDR + MAX_FRAME);
  #processing = false;
  /** The logging registers: control word, log start and end (IOVA, in 32-bit halves). */
  #logRegs = new Map<number, number>();
  /** The log writer while logging is on. */
  #logWriter: { mark(gpa: number, length: number): boolean } | null = null;

  /** Build the device; see {@linkcode EmulatedIfcvfOptions} for the defaults. */
  constructor(options: EmulatedIfcvfOptions = {}) {
    const pairs = options.queuePairs ?? 1;
    if (!Number.isInteger(pairs) || pairs < 1 || pairs > 8) {
      throw new RangeError(`queuePairs ${pairs} is not in 1..8`);
    }
    this.#pairs = pairs;
    this.#maxQueueSize = options.maxQueueSize ?? 256;
    this.#multiplier = options.notifyOffMultiplier ?? 4;
    this.#notifyLength = Math.max(0x1000, this.#multiplier * 2 * pairs);
    this.#msixVectors = options.msixVectors ?? 2 * pairs + 1;
    this.#backlogLimit = options.wireBacklog ?? 256;
    this.#mac = [...(options.mac ?? [0x52, 0x54, 0x00, 0x12, 0x34, 0x56])];
    this.#backlog = Array.from({ length: pairs }, () => []);
    this.deviceFeatures = bit(VirtioFeatureBit.VERSION_1) | bit(VirtioFeatureBit.ACCESS_PLATFORM) |
      bit(VirtioFeatureBit.EVENT_IDX) | bit(VirtioFeatureBit.INDIRECT_DESC) |
      bit(VirtioFeatureBit.ANY_LAYOUT) | bit(VirtioNetFeatureBit.MAC) |
      bit(VirtioNetFeatureBit.STATUS) | bit(VirtioNetFeatureBit.MRG_RXBUF) |
      (pairs > 1 ? bit(VirtioNetFeatureBit.MQ) : 0n) |
      (options.ringReset ? bit(VirtioFeatureBit.RING_RESET) : 0n);
    this.#queues = Array.from({ length: 2 * pairs }, (_, i) => this.#newQueue(i));
    this.dma = options.dma ?? new EmulatedDmaSpace();

    const config = buildConfigSpace({
      deviceId: options.deviceId ?? 0x1041,
      subsystemVendor: options.subsystemVendor ?? 0x8086,
      subsystemDevice: options.subsystemDevice ?? 0x001a,
      msixVectors: this.#msixVectors,
      multiplier: this.#multiplier,
      notifyLength: this.#notifyLength,
    });
    const bar0: EmulatedRegisters = {
      size: bar0Size(this.#notifyLength),
      read: (off, width) => this.#readBar0(off, width),
      write: (off, width, value) => this.#writeBar0(off, width, value),
    };
    const lm: EmulatedRegisters = {
      size: EmulatedIfcvfLayout.LM_SIZE,
      read: (off, width) => this.#readLm(off, width),
      write: (off, width, value) => this.#writeLm(off, width, value),
    };
    const bars: (EmulatedRegisters | null)[] = [
      bar0,
      new MemoryRegisters(0x1000),
      null,
      null,
      null,
    ];
    bars[EmulatedIfcvfLayout.LM_BAR] = options.liveMigrationBar === false ? null : lm;
    this.function = new EmulatedPciFunction({
      address: options.name ?? "emulated:ifcvf",
      config,
      bars,
      msixVectors: this.#msixVectors,
      onReset: () => this.#reset(),
    });
  }

  /** Device status byte. */
  get status(): number {
    return this.#status;
  }

  /** Number of queues (two per pair). */
  get numQueues(): number {
    return this.#queues.length;
  }

  /** Whether queue `q` is processing (enabled and DRIVER_OK). */
  running(q: number): boolean {
    return this.#queues[q]?.ring != null;
  }

  /** Ring state as the LM BAR reports it for queue `q`. */
  ringState(q: number): { lastAvail: number; lastUsed: number } {
    const s = this.#queues[q];
    if (!s) throw new RangeError(`queue ${q} does not exist`);
    if (s.ring) return { lastAvail: s.ring.lastAvailIdx, lastUsed: s.ring.usedIdx };
    return { lastAvail: s.lmAvail, lastUsed: s.lmUsed };
  }

  /** Per-queue counters. */
  stats(): EmulatedQueueStats[] {
    return this.#queues.map((q) => ({ ...q.stats }));
  }

  /** Change the link state: updates device config and raises the config interrupt. */
  setLinkUp(up: boolean): void {
    this.#linkUp = up;
    this.#configChanged();
  }

  // --- BAR 0 ---------------------------------------------------------------

  #readBar0(off: number, width: 1 | 2 | 4): number {
    const L = EmulatedIfcvfLayout;
    if (off < L.COMMON + L.COMMON_LENGTH) return this.#readCommon(off, width);
    if (off >= L.ISR && off < L.ISR + L.ISR_LENGTH) {
      const v = this.#isr;
      this.#isr = 0; // reading ISR acknowledges it
      return off === L.ISR ? v : 0;
    }
    if (off >= L.DEVICE && off < L.DEVICE + L.DEVICE_LENGTH) {
      return this.#readDeviceConfig(off - L.DEVICE, width);
    }
    this.#bad(`read${width * 8} of BAR0 offset 0x${off.toString(16)}`);
    return 0;
  }

  #writeBar0(off: number, width: 1 | 2 | 4, value: number): void {
    const L = EmulatedIfcvfLayout;
    if (off < L.COMMON + L.COMMON_LENGTH) return this.#writeCommon(off, width, value);
    if (off >= L.NOTIFY && off < L.NOTIFY + this.#notifyLength) {
      return this.#doorbell(off - L.NOTIFY, width, value);
    }
    this.#bad(`write${width * 8} 0x${value.toString(16)} to BAR0 offset 0x${off.toString(16)}`);
  }

  #readCommon(off: number, width: 1 | 2 | 4): number {
    if (COMMON_WIDTH[off] !== width) {
      this.#bad(`read${width * 8} of common cfg offset 0x${off.toString(16)}`);
      return 0;
    }
    const q = this.#queues[this.#queueSelect];
    switch (off) {
      case C.DEVICE_FEATURE_SELECT:
        return this.#deviceFeatureSelect;
      case C.DEVICE_FEATURE:
        return this.#deviceFeatureSelect > 1
          ? 0
          : Number((this.deviceFeatures >> BigInt(32 * this.#deviceFeatureSelect)) & 0xffff_ffffn);
      case C.DRIVER_FEATURE_SELECT:
        return this.#driverFeatureSelect;
      case C.DRIVER_FEATURE:
        return this.#driverFeatures[this.#driverFeatureSelect] ?? 0;
      case C.CONFIG_MSIX_VECTOR:
        return this.#configVector;
      case C.NUM_QUEUES:
        return this.#queues.length;
      case C.DEVICE_STATUS:
        return this.#status;
      case C.CONFIG_GENERATION:
        return this.#configGeneration & 0xff;
      case C.QUEUE_SELECT:
        return this.#queueSelect;
      case C.QUEUE_SIZE:
        return q ? q.size : 0;
      case C.QUEUE_MSIX_VECTOR:
        return q ? q.msixVector : VIRTIO_MSI_NO_VECTOR;
      case C.QUEUE_ENABLE:
        return q?.enabled ? 1 : 0;
      case C.QUEUE_NOTIFY_OFF:
        return q ? this.#queueSelect : 0;
      case C.QUEUE_DESC:
      case C.QUEUE_DESC + 4:
        return q ? q.desc[(off - C.QUEUE_DESC) / 4] : 0;
      case C.QUEUE_DRIVER:
      case C.QUEUE_DRIVER + 4:
        return q ? q.driver[(off - C.QUEUE_DRIVER) / 4] : 0;
      case C.QUEUE_DEVICE:
      case C.QUEUE_DEVICE + 4:
        return q ? q.device[(off - C.QUEUE_DEVICE) / 4] : 0;
      case C.QUEUE_RESET:
        // A reset completes at once: it reads back 0 (virtio 1.2 §4.1.4.3.1).
        return 0;
      default:
        return 0;
    }
  }

  #writeCommon(off: number, width: 1 | 2 | 4, value: number): void {
    if (COMMON_WIDTH[off] !== width) {
      this.#bad(
        `write${width * 8} 0x${value.toString(16)} to common cfg offset 0x${off.toString(16)}`,
      );
      return;
    }
    const q = this.#queues[this.#queueSelect];
    const queueRegister = off >= C.QUEUE_SIZE && off < C.QUEUE_NOTIFY_DATA;
    if (queueRegister && (!q || (q.enabled && off !== C.QUEUE_MSIX_VECTOR))) {
      // No such queue, or a live queue's setup: the device ignores it.
      this.#bad(`write to queue ${this.#queueSelect} register 0x${off.toString(16)}`);
      return;
    }
    switch (off) {
      case C.DEVICE_FEATURE_SELECT:
        this.#deviceFeatureSelect = value;
        return;
      case C.DRIVER_FEATURE_SELECT:
        this.#driverFeatureSelect = value;
        return;
      case C.DRIVER_FEATURE:
        if (this.#driverFeatureSelect <= 1 && !(this.#status & VirtioStatus.FEATURES_OK)) {
          this.#driverFeatures[this.#driverFeatureSelect] = value >>> 0;
        }
        return;
      case C.CONFIG_MSIX_VECTOR:
        this.#configVector = value < this.#msixVectors ? value : VIRTIO_MSI_NO_VECTOR;
        return;
      case C.DEVICE_STATUS:
        return this.#writeStatus(value);
      case C.QUEUE_SELECT:
        this.#queueSelect = value;
        return;
      case C.QUEUE_SIZE:
        q!.size = value;
        return;
      case C.QUEUE_MSIX_VECTOR:
        q!.msixVector = value < this.#msixVectors ? value : VIRTIO_MSI_NO_VECTOR;
        return;
      case C.QUEUE_ENABLE:
        if (value === 1) q!.enabled = true;
        if (q!.enabled && this.#status & VirtioStatus.DRIVER_OK) {
          this.#startQueue(this.#queueSelect);
        }
        return;
      case C.QUEUE_DESC:
      case C.QUEUE_DESC + 4:
        q!.desc[(off - C.QUEUE_DESC) / 4] = value >>> 0;
        return;
      case C.QUEUE_DRIVER:
      case C.QUEUE_DRIVER + 4:
        q!.driver[(off - C.QUEUE_DRIVER) / 4] = value >>> 0;
        return;
      case C.QUEUE_DEVICE:
      case C.QUEUE_DEVICE + 4:
        q!.device[(off - C.QUEUE_DEVICE) / 4] = value >>> 0;
        return;
      case C.QUEUE_RESET:
        return this.#resetQueue(value);
      default:
        this.#bad(`write to read-only common cfg offset 0x${off.toString(16)}`);
    }
  }

  #writeStatus(value: number): void {
    if (value === 0) {
      this.#reset();
      return;
    }
    let next = value & 0xff;
    if ((next & VirtioStatus.FEATURES_OK) && !(this.#status & VirtioStatus.FEATURES_OK)) {
      const f = this.#negotiated();
      // Refuse bits not offered, and a driver without VERSION_1.
      if ((f & ~this.deviceFeatures) !== 0n || !hasBit(f, VirtioFeatureBit.VERSION_1)) {
        next &= ~VirtioStatus.FEATURES_OK;
      }
    }
    const starting = (next & VirtioStatus.DRIVER_OK) && !(this.#status & VirtioStatus.DRIVER_OK);
    this.#status = next | (this.#status & VirtioStatus.NEEDS_RESET);
    if (starting) {
      if (!(this.#status & VirtioStatus.FEATURES_OK)) {
        this.#fail("DRIVER_OK without FEATURES_OK");
        return;
      }
      this.#queues.forEach((q, i) => {
        if (q.enabled) this.#startQueue(i);
      });
    }
  }

  #negotiated(): bigint {
    return (BigInt(this.#driverFeatures[1]) << 32n) | BigInt(this.#driverFeatures[0]);
  }

  #readDeviceConfig(off: number, width: number): number {
    // virtio_net_config: mac[6], u16 status, u16 max_virtqueue_pairs, u16 mtu.
    const bytes = new Uint8Array(16);
    bytes.set(this.#mac, 0);
    bytes[6] = this.#linkUp ? 1 : 0;
    bytes[8] = this.#pairs;
    bytes[10] = 1500 & 0xff;
    bytes[11] = 1500 >> 8;
    let v = 0;
    for (let i = width - 1; i >= 0; i--) v = v * 256 + (bytes[off + i] ?? 0);
    return v;
  }

  #configChanged(): void {
    this.#configGeneration++;
    this.#isr |= 2;
    if (this.#configVector !== VIRTIO_MSI_NO_VECTOR) this.function.interrupt(this.#configVector);
  }

  // --- live-migration BAR --------------------------------------------------

  /** Queue and half (0: last_avail, 2: last_used) addressed by an LM BAR offset, or null. */
  #lmSlot(off: number): { q: number; half: number } | null {
    const L = EmulatedIfcvfLayout;
    const rel = off - L.LM_RING_STATE;
    if (rel < 0) return null;
    const pair = Math.floor(rel / L.LM_PAIR_STRIDE);
    const within = rel % L.LM_PAIR_STRIDE;
    if (pair >= this.#pairs || within >= 8) return null;
    return { q: 2 * pair + (within >> 2), half: within & 3 };
  }

  #readLm(off: number, width: 1 | 2 | 4): number {
    if (off < EmulatedIfcvfLayout.LM_RING_STATE) {
      return width === 4 ? this.#logRegs.get(off) ?? 0 : 0;
    }
    const slot = this.#lmSlot(off);
    if (!slot || width === 1 || (width === 4 && slot.half !== 0)) return 0;
    const { lastAvail, lastUsed } = this.ringState(slot.q);
    if (width === 4) return (lastAvail | (lastUsed << 16)) >>> 0;
    return slot.half === 0 ? lastAvail : lastUsed;
  }

  #writeLm(off: number, width: 1 | 2 | 4, value: number): void {
    if (off < EmulatedIfcvfLayout.LM_RING_STATE) return this.#writeLogging(off, width, value);
    const slot = this.#lmSlot(off);
    if (!slot || width === 1 || (width === 4 && slot.half !== 0)) {
      this.#bad(`write${width * 8} to LM BAR offset 0x${off.toString(16)}`);
      return;
    }
    const q = this.#queues[slot.q];
    if (q.ring) {
      this.#bad(`write to the ring state of running queue ${slot.q}`);
      return;
    }
    if (width === 4) {
      q.lmAvail = value & 0xffff;
      q.lmUsed = value >>> 16;
    } else if (slot.half === 0) q.lmAvail = value & 0xffff;
    else q.lmUsed = value & 0xffff;
  }

  /** A write to the logging registers; the control word turns logging on or off. */
  #writeLogging(off: number, width: 1 | 2 | 4, value: number): void {
    const known = [
      LM_LOGGING_CTRL,
      LM_BASE_ADDR_LOW,
      LM_BASE_ADDR_HIGH,
      LM_END_ADDR_LOW,
      LM_END_ADDR_HIGH,
    ];
    if (width !== 4 || !known.includes(off)) {
      this.#bad(`write${width * 8} to LM BAR offset 0x${off.toString(16)}`);
      return;
    }
    this.#logRegs.set(off, value >>> 0);
    if (off !== LM_LOGGING_CTRL) return;
    if (value === LM_LOGGING_DISABLE) {
      this.#setLogWriter(null);
    } else if (value === LM_LOGGING_ENABLE_VF) {
      const r = this.#logRegs;
      const base = (r.get(LM_BASE_ADDR_LOW) ?? 0) + (r.get(LM_BASE_ADDR_HIGH) ?? 0) * TWO_32;
      const end = (r.get(LM_END_ADDR_LOW) ?? 0) + (r.get(LM_END_ADDR_HIGH) ?? 0) * TWO_32;
      if (end <= base) {
        this.#bad(
          `logging enabled with an empty log (IOVA 0x${base.toString(16)} to 0x${
            end.toString(16)
          })`,
        );
        return;
      }
      this.#setLogWriter(this.#logInto(base, end));
    } else {
      this.#bad(`logging control 0x${value.toString(16)} is neither disable (0) nor enable VF (1)`);
    }
  }

  /**
   * The device's own log writer: the bit of page `p` is bit `p % 8` of the
   * byte at IOVA `base + p / 8`, reached through the DMA mappings, set with
   * an atomic OR (the frontend clears bits concurrently). A page past the
   * log, or a log byte the mappings do not reach, is a device error.
   */
  #logInto(base: number, end: number): { mark(gpa: number, length: number): boolean } {
    const page = 4096;
    return {
      mark: (gpa, length) => {
        if (length <= 0) return true;
        const first = Math.floor(gpa / page), last = Math.floor((gpa + length - 1) / page);
        for (let p = first; p <= last; p++) {
          const at = base + Math.floor(p / 8);
          if (at >= end) {
            this.#fail(`dirty log: page 0x${p.toString(16)} is past the log's end`);
            return false;
          }
          let byte: Uint8Array;
          try {
            byte = this.dma.memory().bytes(at, 1);
          } catch {
            this.#fail(`dirty log: IOVA 0x${at.toString(16)} is not mapped (IOMMU fault)`);
            return false;
          }
          Atomics.or(byte, 0, 1 << (p % 8));
          this.loggedPages++;
        }
        return true;
      },
    };
  }

  #setLogWriter(writer: { mark(gpa: number, length: number): boolean } | null): void {
    this.#logWriter = writer;
    for (const q of this.#queues) q.receive?.setLog(writer);
  }

  // --- datapath ------------------------------------------------------------

  /**
   * `queue_reset` written: with `RING_RESET` negotiated, 1 resets the
   * selected queue alone; its ring state stays readable in the LM BAR, as
   * after a device reset.
   */
  #resetQueue(value: number): void {
    const i = this.#queueSelect, q = this.#queues[i];
    if (!q || !hasBit(this.#negotiated(), VirtioFeatureBit.RING_RESET) || value !== 1) {
      this.#bad(`queue_reset ${value} of queue ${i} without RING_RESET negotiated`);
      return;
    }
    const state = this.ringState(i);
    q.lmAvail = state.lastAvail;
    q.lmUsed = state.lastUsed;
    this.#queues[i] = this.#newQueue(i, q);
    this.queueResets++;
  }

  /**
   * The IOMMU's mappings changed: every running queue sees guest memory
   * through the new ones from here on, at its current position (a ring
   * whose memory left the mappings fails the device, as an IOMMU fault
   * would).
   */
  #remap(): void {
    this.#dmaGeneration = this.dma.generation;
    for (let i = 0; i < this.#queues.length; i++) {
      const s = this.#queues[i];
      if (!s.ring) continue;
      const at = { avail: s.ring.lastAvailIdx, used: s.ring.usedIdx };
      s.ring = null;
      s.receive = null;
      this.#startQueue(i, at);
    }
  }

  #startQueue(i: number, at?: { avail: number; used: number }): void {
    const s = this.#queues[i];
    if (s.ring || this.#status & VirtioStatus.NEEDS_RESET) return;
    const f = this.#negotiated();
    try {
      this.#dmaGeneration = this.dma.generation;
      const ring = new SplitQueue(this.dma.memory(), {
        num: s.size,
        descAddr: s.desc[0] + s.desc[1] * TWO_32,
        availAddr: s.driver[0] + s.driver[1] * TWO_32,
        usedAddr: s.device[0] + s.device[1] * TWO_32,
      }, {
        lastAvailIdx: at?.avail ?? s.lmAvail,
        usedIdx: at?.used ?? s.lmUsed,
        eventIdx: hasBit(f, VirtioFeatureBit.EVENT_IDX),
        indirect: hasBit(f, VirtioFeatureBit.INDIRECT_DESC),
      });
      s.receive = i % 2 === 1 ? null : new ReceiveDelivery(ring, {
        headerSize: NET_HDR,
        mergeable: hasBit(f, VirtioNetFeatureBit.MRG_RXBUF),
        counters: s.stats,
        onChainError: (e) => this.#chainError(s, e),
        log: this.#logWriter,
      });
      s.ring = ring;
    } catch (e) {
      this.#fail(`queue ${i} cannot start: ${e instanceof Error ? e.message : e}`);
    }
  }

  #doorbell(off: number, width: 1 | 2 | 4, value: number): void {
    if (width !== 2 && width !== 4) {
      this.#bad(
        `write${width * 8} 0x${value.toString(16)} to doorbell offset 0x${off.toString(16)}`,
      );
      return;
    }
    // The address selects the queue; with multiplier 0 the value does.
    const q = this.#multiplier === 0 ? value & 0xffff : off / this.#multiplier;
    if (!Number.isInteger(q) || q >= this.#queues.length) {
      this.#bad(`doorbell write at offset 0x${off.toString(16)} names no queue`);
      return;
    }
    if (!this.#queues[q].ring) return;
    if (this.#dmaGeneration !== this.dma.generation) this.#remap();
    if (!this.#queues[q].ring) return;
    if (this.#processing) return;
    this.#processing = true;
    try {
      if (q % 2 === 1) this.#transmit(q);
      else this.#receive(q);
    } finally {
      this.#processing = false;
    }
  }

  /** TX queue `q`: take every frame off it and put it on the wire. */
  #transmit(q: number): void {
    const s = this.#queues[q];
    const tx = s.ring!;
    const chain = this.#chain;
    const pair = (q - 1) / 2;
    do {
      for (;;) {
        if (!this.#pop(s, chain)) break;
        const n = tx.readChain(chain, this.#frame);
        tx.pushUsed(chain.head, 0);
        if (n < NET_HDR) {
          s.stats.errors++;
          continue;
        }
        s.stats.packets++;
        s.stats.bytes += n - NET_HDR;
        this.#wire(pair, this.#frame.subarray(NET_HDR, n));
      }
      tx.publishUsed();
    } while (tx.enableNotifications() && !(this.#status & VirtioStatus.NEEDS_RESET));
    if (tx.needsNotify()) this.#interrupt(s);
    this.#flushRx(2 * pair);
  }

  /** RX queue `q` got buffers: deliver what waits on the wire. */
  #receive(q: number): void {
    const pair = q / 2;
    const s = this.#queues[q];
    do {
      this.#drainBacklog(pair);
    } while (
      s.ring!.enableNotifications() && this.#backlog[pair].length > 0 &&
      !(this.#status & VirtioStatus.NEEDS_RESET)
    );
    this.#flushRx(q);
  }

  /** A frame arrives on pair `pair`'s receive side. */
  #wire(pair: number, frame: Uint8Array): void {
    const backlog = this.#backlog[pair];
    if (backlog.length === 0 && this.#deliver(pair, frame)) return;
    const rx = this.#queues[2 * pair];
    if (backlog.length >= this.#backlogLimit) {
      rx.stats.drops++;
      return;
    }
    backlog.push(frame.slice());
  }

  #drainBacklog(pair: number): void {
    const backlog = this.#backlog[pair];
    while (backlog.length > 0 && this.#deliver(pair, backlog[0])) backlog.shift();
  }

  /**
   * Write `frame` with a virtio-net header into RX chains of pair `pair`
   * (several chains with MRG_RXBUF, `num_buffers` saying how many). Returns
   * false, consuming nothing, when the ring has no buffer; a frame that does
   * not fit the buffers is dropped and the buffers returned empty.
   */
  #deliver(pair: number, frame: Uint8Array): boolean {
    const s = this.#queues[2 * pair];
    const rx = s.ring, receive = s.receive;
    if (!rx || !receive || this.#status & VirtioStatus.NEEDS_RESET) return false;
    if (rx.available() === 0) return false;
    const total = NET_HDR + frame.length;
    const packet = this.#packet;
    packet.fill(0, 0, NET_HDR); // no checksum or GSO offload on the wire
    packet.set(frame, NET_HDR);
    // The wire does not wait: a frame the ring cannot take whole now is dropped.
    if (receive.deliver(packet, total) === ReceiveResult.WAITING) receive.drop();
    return true;
  }

  #flushRx(q: number): void {
    const s = this.#queues[q];
    const rx = s.ring;
    if (!rx) return;
    rx.publishUsed();
    if (rx.needsNotify()) this.#interrupt(s);
  }

  /** Pop a chain of queue `s`, returning hostile chains unused; false when empty or broken. */
  #pop(s: QueueState, chain: DescriptorChain): boolean {
    const ring = s.ring!;
    for (;;) {
      try {
        return ring.pop(chain);
      } catch (e) {
        s.stats.errors++;
        if (!this.#chainError(s, e)) return false;
        if (e instanceof DescriptorChainError && e.head >= 0) ring.pushUsed(e.head, 0);
      }
    }
  }

  /**
   * Popping a chain of queue `s` threw `e` (already counted). A chain error
   * with a head (returned unused) or a bad head index: go on. Else the
   * device fails (NEEDS_RESET) and this returns false.
   */
  #chainError(s: QueueState, e: unknown): boolean {
    if (e instanceof DescriptorChainError && (e.head >= 0 || e.kind === "bad-index")) return true;
    this.#fail(`queue ${s.stats.queue}: ${e instanceof Error ? e.message : e}`);
    return false;
  }

  #interrupt(s: QueueState): void {
    this.#isr |= 1;
    if (s.msixVector !== VIRTIO_MSI_NO_VECTOR) this.function.interrupt(s.msixVector);
  }

  // --- state ---------------------------------------------------------------

  #newQueue(i: number, keep?: QueueState): QueueState {
    return {
      size: this.#maxQueueSize,
      msixVector: VIRTIO_MSI_NO_VECTOR,
      enabled: false,
      desc: [0, 0],
      driver: [0, 0],
      device: [0, 0],
      lmAvail: keep?.lmAvail ?? 0,
      lmUsed: keep?.lmUsed ?? 0,
      ring: null,
      receive: null,
      stats: keep?.stats ?? { queue: i, packets: 0, bytes: 0, drops: 0, errors: 0 },
    };
  }

  #reset(): void {
    this.deviceResets++;
    // The ring state stays readable in the LM BAR after the reset, so a
    // driver can save it after stopping the device.
    this.#queues = this.#queues.map((q, i) => {
      const state = this.ringState(i);
      q.lmAvail = state.lastAvail;
      q.lmUsed = state.lastUsed;
      return this.#newQueue(i, q);
    });
    this.#status = 0;
    this.#deviceFeatureSelect = 0;
    this.#driverFeatureSelect = 0;
    this.#driverFeatures = [0, 0];
    this.#configVector = VIRTIO_MSI_NO_VECTOR;
    this.#queueSelect = 0;
    this.#isr = 0;
    for (const b of this.#backlog) b.length = 0;
    // A reset turns logging off; the driver turns it on again.
    this.#logRegs.clear();
    this.#logWriter = null;
  }

  #fail(why: string): void {
    this.errors.push(why);
    this.#status |= VirtioStatus.NEEDS_RESET;
    for (const q of this.#queues) {
      q.ring = null;
      q.receive = null;
    }
    this.#configChanged();
  }

  #bad(what: string): void {
    if (this.badAccesses.length < 1000) this.badAccesses.push(what);
  }
}

/** BAR 0 size: a power of two holding the doorbells after 0x3000. */
function bar0Size(notifyLength: number): number {
  return 2 ** Math.ceil(Math.log2(EmulatedIfcvfLayout.NOTIFY + notifyLength));
}

/** Config space of the emulated device: header, MSI-X and virtio capabilities. */
function buildConfigSpace(o: {
  deviceId: number;
  subsystemVendor: number;
  subsystemDevice: number;
  msixVectors: number;
  multiplier: number;
  notifyLength: number;
}): PciConfigBuffer {
  const L = EmulatedIfcvfLayout;
  const cfg = new PciConfigBuffer(PciConfig.SIZE);
  const v = new DataView(cfg.bytes.buffer);
  v.setUint16(PciConfig.VENDOR_ID, 0x1af4, true);
  v.setUint16(PciConfig.DEVICE_ID, o.deviceId, true);
  v.setUint16(PciConfig.STATUS, PciStatus.CAP_LIST, true);
  v.setUint8(PciConfig.REVISION_ID, 1);
  v.setUint8(PciConfig.CLASS_PROG + 2, 0x02); // network controller
  v.setUint32(PciConfig.BAR0, 0xfe000000, true);
  v.setUint32(PciConfig.BAR0 + 4, 0xfd000000, true);
  v.setUint32(PciConfig.BAR0 + 16, 0xfd001000, true);
  v.setUint16(PciConfig.SUBSYSTEM_VENDOR_ID, o.subsystemVendor, true);
  v.setUint16(PciConfig.SUBSYSTEM_ID, o.subsystemDevice, true);
  v.setUint8(PciConfig.INTERRUPT_PIN, 1);

  let at = 0x40;
  v.setUint8(PciConfig.CAPABILITY_LIST, at);
  const caps: ((at: number) => number)[] = [];
  if (o.msixVectors > 0) {
    caps.push((at) => {
      v.setUint8(at, PciCapabilityId.MSIX);
      v.setUint16(at + 2, o.msixVectors - 1, true);
      v.setUint32(at + 4, 0x000 | L.MSIX_BAR, true);
      v.setUint32(at + 8, 0x800 | L.MSIX_BAR, true);
      return 12;
    });
  }
  const virtioCap =
    (type: number, offset: number, length: number, multiplier?: number) => (at: number) => {
      const len = multiplier === undefined ? 16 : 20;
      v.setUint8(at, PciCapabilityId.VENDOR);
      v.setUint8(at + 2, len);
      v.setUint8(at + 3, type);
      v.setUint8(at + 4, 0);
      v.setUint32(at + 8, offset, true);
      v.setUint32(at + 12, length, true);
      if (multiplier !== undefined) v.setUint32(at + 16, multiplier, true);
      return len;
    };
  caps.push(virtioCap(VirtioPciCapType.COMMON, L.COMMON, L.COMMON_LENGTH));
  caps.push(virtioCap(VirtioPciCapType.NOTIFY, L.NOTIFY, o.notifyLength, o.multiplier));
  caps.push(virtioCap(VirtioPciCapType.ISR, L.ISR, L.ISR_LENGTH));
  caps.push(virtioCap(VirtioPciCapType.DEVICE, L.DEVICE, L.DEVICE_LENGTH));
  caps.forEach((write, i) => {
    const len = write(at);
    const next = i + 1 < caps.length ? (at + len + 3) & ~3 : 0;
    v.setUint8(at + 1, next);
    at = next;
  });
  return cfg;
}

/**
 * An ifcvf target on a new emulated IFC VF sized for `params` (at most 8
 * queue pairs, as on the N3000): what `--pci emulated` opens.
 *
 * @example
 * ```ts
 * import { makeIfcvfDriver } from "@vhost-mdev/ifcvf";
 * import { openEmulatedIfcvf } from "@vhost-mdev/ifcvf/emulated";
 *
 * const driver = makeIfcvfDriver(openEmulatedIfcvf);
 * ```
 */
export function openEmulatedIfcvf(params: ProbeParams): IfcvfTarget {
  const device = new EmulatedIfcvf({ queuePairs: Math.min(8, Math.max(1, params.queues)) });
  return {
    fn: device.function,
    dma: device.dma,
    description: "the emulated IFC VF",
    stats: () => device.stats(),
    close: () => device.function.close(),
  };
}
