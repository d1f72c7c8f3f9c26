/**
 * The IFC VF device: what `probe` finds on the PCI function and the device
 * ops that run it. The IFC VF is a virtio 1.x PCI device whose rings the
 * hardware walks itself, so the driver programs the frontend's rings
 * (guest-physical addresses, mapped 1:1 as IOVAs) into the device, wires
 * its MSI-X vectors to the frontend's call eventfds and rings its doorbells;
 * the live-migration BAR carries ring state across stop and start.
 *
 * @module
 */

import {
  bit,
  type DeviceContext,
  type DeviceDescription,
  type DeviceOps,
  type DirtyLog,
  IotlbAccess,
  type MemoryRange,
  type NotifyArea,
  type ProbeParams,
  type QueueStats,
  type RingPosition,
  VirtioBlkConfig,
  VirtioBlkFeatureBit as B,
  VirtioDeviceId,
  VirtioFeatureBit as F,
  VirtioNetConfig,
  VirtioNetFeatureBit as N,
  VirtioStatus,
  type VringInfo,
} from "@vhost-mdev/sdk";
import {
  type DmaMapping,
  type DmaSpace,
  formatPciIdentity,
  type MmioAccessor,
  PciCommand,
  PciConfig,
  type PciFunction,
  readPciIdentity,
  VIRTIO_MSI_NO_VECTOR,
  VirtioPciTransport,
} from "@vhost-mdev/sdk/pci";
import { VfioPciIrq } from "@vhost-mdev/sdk/vfio";
import { close, pageSize } from "@vhost-mdev/sdk/sys";
import { describeIds, isVirtioNet, matchIfcvf } from "./ids.ts";
import { IFCVF_LOG_IOVA, IfcvfLiveMigration, LM_BAR } from "./lm.ts";
import { type FanoutSource, InterruptFanout, planVectors, type VectorPlan } from "./interrupts.ts";

/** A PCI function and its DMA space, as the driver gets them. */
export interface IfcvfTarget {
  /** The function. */
  fn: PciFunction;
  /** Where to map guest memory for its DMA. */
  dma: DmaSpace;
  /** How to describe it in messages ("0000:03:00.0 (VFIO)"). */
  description: string;
  /** Device-side counters, when the device has them (the emulated one does). */
  stats?(): QueueStats[];
  /** Release the function and its DMA space. */
  close(): void;
}

/** virtio-net features the driver passes from the device to the frontend. */
const NET_FEATURES: bigint = [
  F.VERSION_1,
  // Behind a vIOMMU the frontend's IOTLB becomes VFIO mappings (`mapsIotlb`).
  F.ACCESS_PLATFORM,
  F.ANY_LAYOUT,
  F.INDIRECT_DESC,
  F.EVENT_IDX,
  N.CSUM,
  N.GUEST_CSUM,
  N.MTU,
  N.MAC,
  N.GUEST_TSO4,
  N.GUEST_TSO6,
  N.GUEST_ECN,
  N.GUEST_UFO,
  N.HOST_TSO4,
  N.HOST_TSO6,
  N.HOST_ECN,
  N.HOST_UFO,
  N.MRG_RXBUF,
  N.STATUS,
  N.MQ,
].reduce((m, b) => m | bit(b), 0n);

/** virtio-blk features passed through (SIZE_MAX .. WRITE_ZEROES, no legacy SCSI). */
const BLK_FEATURES: bigint = [
  F.VERSION_1,
  F.ACCESS_PLATFORM,
  F.ANY_LAYOUT,
  F.INDIRECT_DESC,
  F.EVENT_IDX,
  B.SIZE_MAX,
  B.SEG_MAX,
  B.GEOMETRY,
  B.RO,
  B.BLK_SIZE,
  B.FLUSH,
  B.TOPOLOGY,
  B.CONFIG_WCE,
  B.MQ,
  B.DISCARD,
  B.WRITE_ZEROES,
]
  .reduce((m, b) => m | bit(b), 0n);

/** The running state made by `start` and undone by `stop`. */
interface Running {
  /** The running rings; the interrupt fan-out reads this array as it changes. */
  rings: number[];
  mappings: DmaMapping[];
  fanout: InterruptFanout | null;
  plan: VectorPlan | null;
}

/** Probe `target` and describe the device; takes ownership of `target`. */
export function probeIfcvf(
  ctx: DeviceContext,
  params: ProbeParams,
  target: IfcvfTarget,
): DeviceDescription {
  try {
    return new IfcvfDevice(ctx, params, target).description;
  } catch (e) {
    target.close();
    throw e;
  }
}

/** One IFC VF (or, in generic mode, any modern virtio-net PCI device). */
class IfcvfDevice {
  readonly description: DeviceDescription;
  readonly #ctx: DeviceContext;
  readonly #target: IfcvfTarget;
  readonly #transport: VirtioPciTransport;
  readonly #lm: IfcvfLiveMigration | null;
  readonly #hwFeatures: bigint;
  readonly #offered: bigint;
  readonly #kind: "net" | "blk";
  readonly #numQueues: number;
  readonly #pairs: number;
  #features = 0n;
  #running: Running | null = null;
  /** Where each ring stopped, until the next start. */
  #saved = new Map<number, RingPosition>();
  /** The migration dirty log the VF writes, mapped for its DMA, or null. */
  #log: { mapping: DmaMapping; base: number; size: number } | null = null;

  constructor(ctx: DeviceContext, params: ProbeParams, target: IfcvfTarget) {
    this.#ctx = ctx;
    this.#target = target;
    const fn = target.fn;
    const id = readPciIdentity(fn.config);
    const entry = matchIfcvf(id);
    const generic = params.options.generic === "true";
    if (!entry && !generic) {
      throw new Error(
        `${target.description} is ${formatPciIdentity(id)}, not an IFC VF (the driver knows ` +
          `${describeIds()}). To drive it as a generic modern virtio-net device, as the kernel's ` +
          `vp_vdpa does, opt in with --generic true (options.generic = "true")`,
      );
    }
    if (!entry && !isVirtioNet(id)) {
      throw new Error(
        `${target.description} is ${formatPciIdentity(id)}: generic mode drives virtio-net ` +
          `devices only (vendor 1af4, device 1041 or 1000)`,
      );
    }
    this.#kind = entry?.kind ?? "net";
    this.#transport = VirtioPciTransport.open(fn);
    // Only a real IFC VF has ring state in BAR 4: on other virtio devices
    // BAR 4 usually holds the virtio structures themselves.
    this.#lm = entry && fn.region(LM_BAR).size > 0
      ? new IfcvfLiveMigration(fn.mapBar(LM_BAR), this.#kind)
      : null;

    const t = this.#transport;
    t.reset();
    t.addStatus(VirtioStatus.ACKNOWLEDGE | VirtioStatus.DRIVER);
    this.#hwFeatures = t.deviceFeatures();
    if ((this.#hwFeatures & bit(F.VERSION_1)) === 0n) {
      throw new Error(
        `${target.description} does not offer VIRTIO_F_VERSION_1: legacy devices are not supported`,
      );
    }
    let offered = this.#hwFeatures & (this.#kind === "net" ? NET_FEATURES : BLK_FEATURES);
    const hwQueues = t.numQueues;
    const wanted = Math.max(1, params.queues);
    if (this.#kind === "net") {
      const cfgPairs = (offered & bit(N.MQ)) !== 0n
        ? t.readDeviceConfig((c) => c.read16(VirtioNetConfig.MAX_VIRTQUEUE_PAIRS))
        : 1;
      const hwPairs = Math.max(1, Math.min(cfgPairs, Math.floor(hwQueues / 2)));
      this.#pairs = Math.min(wanted, hwPairs);
      if (wanted > hwPairs) {
        ctx.log.warn(
          `${wanted} queue pairs asked for, the device has ${hwPairs}: using ${hwPairs}`,
        );
      }
      if (this.#pairs < 2) offered &= ~bit(N.MQ);
      this.#numQueues = 2 * this.#pairs;
    } else {
      const cfgQueues = (offered & bit(B.MQ)) !== 0n
        ? t.readDeviceConfig((c) => c.read16(VirtioBlkConfig.NUM_QUEUES))
        : 1;
      this.#pairs = 0;
      this.#numQueues = Math.max(1, Math.min(wanted, cfgQueues, hwQueues));
    }
    if (hwQueues < this.#numQueues) {
      throw new Error(
        `${target.description} has ${hwQueues} virtqueues, fewer than ${this.#numQueues}`,
      );
    }
    this.#offered = offered;
    let maxSize = 32768;
    for (let q = 0; q < this.#numQueues; q++) {
      const m = t.queueMaxSize(q);
      if (m === 0) throw new Error(`${target.description}: queue ${q} is not available`);
      maxSize = Math.min(maxSize, m);
    }
    // Round down to a power of two (a split ring's size must be one).
    maxSize = 2 ** Math.floor(Math.log2(maxSize));
    t.reset();
    ctx.log.info(
      `${
        entry?.name ?? "generic virtio-net"
      } at ${target.description}: ${this.#numQueues} queues of ` +
        `up to ${maxSize}, ${
          this.#lm ? "ring state in the live-migration BAR" : "no live-migration BAR"
        }`,
    );
    this.description = {
      deviceId: this.#kind === "net" ? VirtioDeviceId.NET : VirtioDeviceId.BLOCK,
      features: offered,
      numQueues: this.#numQueues,
      maxQueueSize: maxSize,
      config: this.#readConfig(),
      ops: this.#ops(),
      // Behind a vIOMMU the IOTLB's translations are VFIO mappings at their IOVAs.
      mapsIotlb: true,
    };
  }

  #ops(): DeviceOps {
    // Single rings start and stop through a queue reset (virtio 1.2 §2.6.1)
    // when the function has one; otherwise the SDK restarts the whole device.
    const perRing = (this.#hwFeatures & bit(F.RING_RESET)) !== 0n
      ? {
        startRing: (q: number) => this.#startRing(q),
        stopRing: (q: number) => this.#stopRing(q),
      }
      : {};
    return {
      ...perRing,
      start: () => this.#start(),
      stop: () => this.#stop(),
      notify: (q) => {
        if (this.#running?.rings.includes(q)) this.#transport.notify(q);
      },
      // The relay Worker stores the queue index into the notify register
      // itself (virtio 1.2 §4.1.4.4) when the BAR is mapped memory.
      doorbell: (q) => {
        if (!this.#running?.rings.includes(q)) return null;
        const address = this.#transport.doorbellAddress(q);
        return address === null ? null : { address, width: 2, value: q };
      },
      getNotifyAddr: (q) => this.#notifyArea(q),
      // Memory changes while running: VFIO MAP_DMA / UNMAP_DMA of the one
      // region, the rings run on (vDPA's dma_map / dma_unmap). Behind a
      // vIOMMU the ranges are the frontend's IOTLB translations, at their IOVAs.
      mapMemory: (range) => {
        if (this.#running) this.#mapRegion(this.#running, range);
      },
      unmapMemory: (range) => {
        const running = this.#running;
        if (!running) return;
        const i = running.mappings.findIndex((m) => m.iova === range.iova);
        if (i < 0) return;
        const [m] = running.mappings.splice(i, 1);
        this.#target.dma.unmap(m.iova, m.size);
      },
      getVringState: (q) => this.#saved.get(q) ?? this.#ctx.vring(q).state,
      // Only an IFC VF logs its own writes (the LM BAR's logging registers);
      // without them the SDK offers no LOG_ALL and QEMU refuses to migrate
      // rather than migrate wrong.
      setLog: this.#lm ? (log) => this.#setLog(log) : undefined,
      featuresChanged: (f) => {
        this.#features = f;
      },
      getConfig: (offset, length) => {
        const cfg = this.#readConfig();
        if (
          !Number.isInteger(offset) || !Number.isInteger(length) || offset < 0 || length < 0 ||
          offset + length > cfg.length
        ) {
          throw new RangeError(
            `config read at ${offset} of ${length} bytes is outside the ${cfg.length}-byte config space`,
          );
        }
        return cfg.slice(offset, offset + length);
      },
      stats: this.#target.stats ? () => this.#target.stats!() : undefined,
      close: async () => {
        if (this.#running) await this.#stop();
        this.#setLog(null);
        this.#target.close();
      },
    };
  }

  /**
   * Log into `log` from now on (or stop logging): map it for the VF's DMA
   * at {@linkcode IFCVF_LOG_IOVA} and point the LM BAR's logging registers
   * at it. The previous log is unlogged and unmapped first, so the VF never
   * writes a log the SDK is about to release.
   */
  #setLog(log: DirtyLog | null): void {
    const lm = this.#lm!;
    const dma = this.#target.dma;
    if (this.#log) {
      lm.disableLogging();
      dma.unmap(this.#log.mapping.iova, this.#log.mapping.size);
      this.#log = null;
    }
    if (!log) return;
    const { address, size } = log.share();
    const page = dma.pageSize;
    const skip = address % page;
    const mapping: DmaMapping = {
      iova: IFCVF_LOG_IOVA,
      size: Math.ceil((skip + size) / page) * page,
      vaddr: address - skip,
    };
    dma.map(mapping);
    this.#log = { mapping, base: IFCVF_LOG_IOVA + skip, size };
    lm.enableLogging(this.#log.base, size);
    this.#ctx.log.debug(
      `the VF logs its writes into ${size} bytes at IOVA 0x${this.#log.base.toString(16)}`,
    );
  }

  /** Device config as the frontend sees it (queue pairs capped to what is exposed). */
  #readConfig(): Uint8Array {
    const t = this.#transport;
    if (!t.deviceConfig) return new Uint8Array(0);
    const size = this.#kind === "net"
      ? VirtioNetConfig.SIZE
      : Math.min(t.deviceConfig.size, VirtioBlkConfig.SIZE);
    const out = t.readDeviceConfig((c) => readNaturalWidths(c, size));
    if (this.#kind === "net") {
      new DataView(out.buffer).setUint16(VirtioNetConfig.MAX_VIRTQUEUE_PAIRS, this.#pairs, true);
    }
    return out;
  }

  async #start(): Promise<void> {
    const ctx = this.#ctx;
    const rings: number[] = [];
    for (let q = 0; q < this.#numQueues; q++) {
      const r = ctx.vring(q);
      if (r.running) rings.push(q);
    }
    if (!this.#lm) {
      // A standard virtio-pci device has no register for a ring's position:
      // after a reset it reads the available ring from index 0 and would
      // process old descriptors again. The kernel's vp_vdpa refuses the same.
      const moved = rings.filter((q) => ctx.vring(q).state.availIdx !== 0);
      if (moved.length) {
        throw new Error(
          `generic mode cannot resume ring(s) ${moved.join(",")} at a non-zero index ` +
            `(base ${
              moved.map((q) => ctx.vring(q).state.availIdx).join(",")
            }): the device has no ` +
            `live-migration BAR; reset the rings (base 0) or use an IFC VF`,
        );
      }
    }
    const running: Running = { rings, mappings: [], fanout: null, plan: null };
    try {
      this.#mapMemory(running);
      const t = this.#transport;
      t.reset();
      t.addStatus(VirtioStatus.ACKNOWLEDGE | VirtioStatus.DRIVER);
      // The device sees IOVAs through the IOMMU: acknowledge ACCESS_PLATFORM when offered.
      // RING_RESET is between this driver and the function: the frontend never sees it.
      const own = this.#hwFeatures & (bit(F.ACCESS_PLATFORM) | bit(F.RING_RESET));
      t.negotiate((this.#features & this.#offered) | own);
      const cfg = this.#target.fn.config;
      cfg.write16(
        PciConfig.COMMAND,
        cfg.read16(PciConfig.COMMAND) | PciCommand.MEMORY | PciCommand.BUS_MASTER,
      );
      const plan = planVectors(this.#numQueues, this.#target.fn.irqInfo(VfioPciIrq.MSIX).count);
      running.plan = plan;
      running.fanout = this.#wireVectors(plan, rings);
      if (t.setConfigVector(plan.config) === VIRTIO_MSI_NO_VECTOR) {
        throw new Error(`the device refused MSI-X vector ${plan.config} for config changes`);
      }
      for (const q of rings) this.#programRing(ctx.vring(q), plan.queue(q));
      // The reset cleared the logging registers: a device started during a
      // migration logs from its first write.
      if (this.#log) this.#lm!.enableLogging(this.#log.base, this.#log.size);
      t.addStatus(VirtioStatus.DRIVER_OK);
      const status = t.status;
      if (status & VirtioStatus.NEEDS_RESET || !(status & VirtioStatus.DRIVER_OK)) {
        throw new Error(`the device did not start (status 0x${status.toString(16)})`);
      }
      this.#saved.clear();
      this.#running = running;
      ctx.log.debug(
        `rings ${rings.join(",")} programmed; MSI-X ${plan.mode} (${plan.count} vectors)`,
      );
    } catch (e) {
      await this.#teardown(running);
      throw e;
    }
  }

  /**
   * Start ring `q` while the others run: program it, restore its state,
   * wire its vector and enable it (a queue reset left it ready for that,
   * virtio 1.2 §2.6.1).
   */
  #startRing(q: number): void {
    const running = this.#running;
    if (!running || !running.plan || running.rings.includes(q)) return;
    const r = this.#ctx.vring(q);
    const vector = running.plan.queue(q);
    if (running.plan.mode === "per-queue") {
      this.#target.fn.setIrqEventfds(VfioPciIrq.MSIX, vector, [r.callFd]);
    }
    this.#programRing(r, vector);
    running.rings.push(q);
    this.#saved.delete(q);
  }

  /** Stop ring `q` alone with a queue reset, saving where it got to. */
  #stopRing(q: number): void {
    const running = this.#running;
    if (!running || !running.rings.includes(q)) return;
    running.rings.splice(running.rings.indexOf(q), 1);
    const lm = this.#lm?.read(q);
    this.#transport.resetQueue(q);
    // As in #stop: the LM BAR's used index when chains were in flight, else
    // used.idx in guest memory, which the device no longer writes.
    const idx = lm ? lm.lastUsed : usedIdx(this.#ctx, this.#ctx.vring(q));
    this.#saved.set(q, position(idx));
    if (running.plan?.mode === "per-queue") {
      this.#target.fn.setIrqEventfds(VfioPciIrq.MSIX, running.plan.queue(q), [-1]);
    }
  }

  async #stop(): Promise<void> {
    const running = this.#running;
    if (!running) return;
    this.#running = null;
    const ctx = this.#ctx;
    // With the LM BAR: read where each ring got to, then stop the device.
    if (this.#lm) {
      for (const q of running.rings) {
        const s = this.#lm.read(q);
        // Chains taken but not completed are lost by the reset: resume at
        // the used index so the device processes them again (as DPDK's
        // ifcvf does for net); equal indexes are the normal case.
        this.#saved.set(q, position(s.lastAvail === s.lastUsed ? s.lastAvail : s.lastUsed));
      }
    }
    await this.#teardown(running);
    if (!this.#lm) {
      // Generic mode: no ring state registers. After the reset the device
      // writes no more; used.idx in guest memory counts the chains it
      // completed. Virtio-net devices use each ring's buffers in order, so
      // every chain before used.idx is done and every one after it was not
      // read or was in flight and dropped by the reset: used.idx is the
      // index to resume from.
      for (const q of running.rings) this.#saved.set(q, position(usedIdx(ctx, ctx.vring(q))));
    }
    ctx.log.debug(
      `stopped; ring bases ${
        running.rings.map((q) => `${q}:${this.#saved.get(q)?.availIdx}`).join(" ")
      }`,
    );
  }

  /** Reset the device, unwire vectors, unmap memory (each step even if one fails). */
  async #teardown(running: Running): Promise<void> {
    const errors: unknown[] = [];
    const step = (f: () => void) => {
      try {
        f();
      } catch (e) {
        errors.push(e);
      }
    };
    step(() => this.#transport.reset());
    step(() => this.#target.fn.disableIrqs(VfioPciIrq.MSIX));
    try {
      await running.fanout?.stop();
    } catch (e) {
      errors.push(e);
    }
    for (const m of running.mappings.splice(0).reverse()) {
      step(() => this.#target.dma.unmap(m.iova, m.size));
    }
    if (errors.length) this.#ctx.log.warn(`stopping the device: ${errors.map(String).join("; ")}`);
  }

  /**
   * Map the device's DMA space: every guest memory region (IOVA = GPA), or
   * behind a vIOMMU every IOTLB translation at its IOVA.
   */
  #mapMemory(running: Running): void {
    for (const r of this.#ctx.dmaRanges()) this.#mapRegion(running, r);
  }

  /** Map one range for DMA at its IOVA. */
  #mapRegion(running: Running, r: MemoryRange): void {
    const dma = this.#target.dma;
    const page = dma.pageSize;
    if (r.iova % page !== 0 || r.address % page !== 0) {
      throw new Error(
        `memory at IOVA 0x${r.iova.toString(16)} (host 0x${r.address.toString(16)}) ` +
          `is not aligned to the IOMMU page size ${page}: the frontend must share page-aligned memory`,
      );
    }
    // The host mapping covers whole pages, so the last partial page may be mapped too.
    const m: DmaMapping = {
      iova: r.iova,
      size: Math.ceil(r.size / page) * page,
      vaddr: r.address,
      // A translation the guest made read-only stays read-only for the device.
      readable: (r.access & IotlbAccess.READ) !== 0,
      writable: (r.access & IotlbAccess.WRITE) !== 0,
    };
    dma.map(m);
    running.mappings.push(m);
  }

  /** Wire MSI-X vectors per `plan`; returns the fan-out watching the driver's own vectors. */
  #wireVectors(plan: VectorPlan, rings: number[]): InterruptFanout {
    const ctx = this.#ctx;
    const fds = new Array<number>(plan.count).fill(-1);
    const sources: FanoutSource[] = [];
    const config = { fd: InterruptFanout.eventfd(), onFire: () => ctx.signalConfigChange() };
    sources.push(config);
    fds[plan.config] = config.fd;
    if (plan.mode === "per-queue") {
      for (const q of rings) fds[plan.queue(q)] = ctx.vring(q).callFd;
    } else if (plan.mode === "shared") {
      const shared = {
        fd: InterruptFanout.eventfd(),
        onFire: () => rings.forEach((q) => ctx.signal(q)),
      };
      sources.push(shared);
      fds[1] = shared.fd;
      ctx.log.warn(`only ${plan.count} MSI-X vectors usable: queues share one interrupt`);
    } else {
      config.onFire = () => {
        rings.forEach((q) => ctx.signal(q));
        ctx.signalConfigChange();
      };
      ctx.log.warn("one MSI-X vector: queues and config share it");
    }
    try {
      this.#target.fn.setIrqEventfds(VfioPciIrq.MSIX, 0, fds);
    } catch (e) {
      for (const s of sources) close(s.fd);
      throw e;
    }
    return new InterruptFanout(
      sources,
      (e) => ctx.reportError(`interrupt fan-out stopped, interrupts are lost: ${e}`),
    );
  }

  /** Program ring `r` into the device, restore its state, enable it. */
  #programRing(r: VringInfo, vector: number): void {
    const t = this.#transport;
    const wantVector = r.callFd >= 0 ? vector : VIRTIO_MSI_NO_VECTOR;
    const got = t.setupQueue(r.index, {
      size: r.num,
      desc: r.dma.desc,
      driver: r.dma.avail,
      device: r.dma.used,
      msixVector: wantVector,
    });
    if (got !== wantVector) {
      throw new Error(`the device refused MSI-X vector ${wantVector} for queue ${r.index}`);
    }
    this.#lm?.write(r.index, { lastAvail: r.state.availIdx, lastUsed: usedIdx(this.#ctx, r) });
    t.enableQueue(r.index);
  }

  /** Queue `q`'s doorbell page, when it can be handed to the frontend. */
  #notifyArea(q: number): NotifyArea | null {
    const fn = this.#target.fn;
    if (fn.fd < 0 || q < 0 || q >= this.#numQueues) return null;
    const layout = this.#transport.layout;
    const region = fn.region(layout.notify.bar);
    if (!region.mappable) return null;
    const page = pageSize();
    const m = layout.notifyOffMultiplier;
    // A page holding other queues' doorbells would let the frontend kick
    // them too, unless all queues share one doorbell (multiplier 0).
    if (m !== 0 && m < page) return null;
    const off = this.#transport.doorbellBarOffset(q);
    if (off % page !== 0 || off + page > region.size) return null;
    return { fd: fn.fd, offset: region.offset + off, size: page };
  }
}

/** `used.idx` of ring `r` in guest memory (0 when unreadable). */
function usedIdx(ctx: DeviceContext, r: VringInfo): number {
  try {
    const b = ctx.memory.bytes(r.usedAddr + 2, 2);
    return b[0] | (b[1] << 8);
  } catch {
    return r.state.availIdx;
  }
}

/** A split ring's state with everything before `idx` done. */
function position(idx: number): RingPosition {
  return { availIdx: idx & 0xffff, usedIdx: idx & 0xffff, availWrap: true, usedWrap: true };
}

/** Read `size` bytes with the widest aligned access that fits at each position. */
function readNaturalWidths(c: MmioAccessor, size: number): Uint8Array {
  const out = new Uint8Array(size);
  const v = new DataView(out.buffer);
  let off = 0;
  while (off < size) {
    if (off % 4 === 0 && size - off >= 4) {
      v.setUint32(off, c.read32(off), true);
      off += 4;
    } else if (off % 2 === 0 && size - off >= 2) {
      v.setUint16(off, c.read16(off), true);
      off += 2;
    } else {
      v.setUint8(off, c.read8(off));
      off += 1;
    }
  }
  return out;
}
