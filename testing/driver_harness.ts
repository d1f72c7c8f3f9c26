/**
 * A driver harness: a vendor's driver under a real device core, with guest
 * memory and rings laid out as a frontend would, and no socket. `probe`
 * runs as it does when served, `start` and `stop` happen through the same
 * requests a frontend sends, and the test drives the guest side of every
 * ring (a {@linkcode SplitQueueDriver} over the same memory) and its kick
 * and call eventfds.
 *
 * @module
 */

import {
  bit,
  type DeviceOptions,
  type Driver,
  GuestMemory,
  hasBit,
  IotlbAccess,
  type IotlbEntry,
  PackedQueueDriver,
  type PackedQueueDriverLayout,
  type ProbeParams,
  SplitQueueDriver,
  type SplitQueueDriverLayout,
  VHOST_F_LOG_ALL,
  VhostMdevDevice,
  VirtioFeatureBit,
  VirtioStatus,
  type VirtqueueDriver,
} from "@vhost-mdev/sdk";
import {
  close,
  dup,
  eventfd,
  eventfdRead,
  eventfdWrite,
  ftruncate,
  type Mapping,
  memfdCreate,
  mmap,
  pollAsync,
  POLLIN,
} from "@vhost-mdev/sdk/sys";
import { VRING_F_LOG } from "@vhost-mdev/sdk/vhost-user";

/** Options of {@linkcode DriverHarness.create}. */
export interface DriverHarnessOptions {
  /** Bytes of guest memory (default 16 MiB). */
  memoryBytes?: number;
  /**
   * Guest-physical address where the memory starts (default 0), for a
   * device that should see addresses other than zero (a multiple of 4096).
   */
  gpa?: number;
  /** Entries per ring (default 256). */
  ringSize?: number;
  /**
   * Features to ack, of those the device offers (default: all it offers);
   * `VHOST_F_LOG_ALL` never, as a frontend acks it only when a migration
   * starts (then `device.setFeatures`).
   */
  features?: bigint;
  /**
   * Descriptors kept out of every ring's free list, for chains the test
   * writes by hand (default 0; see `SplitQueueDriverOptions.reserved`).
   */
  reserved?: number;
  /** Options for the device core (name, listener, memory policy). */
  device?: DeviceOptions;
  /**
   * Run packed rings (`VIRTIO_F_RING_PACKED` acked, when the device offers
   * it; default false: split rings, and the bit is not acked).
   */
  packed?: boolean;
  /**
   * Ack `VIRTIO_F_ACCESS_PLATFORM` when the device offers it (default
   * false: ring and buffer addresses are guest-physical). The harness sends
   * no IOTLB messages: a test that sets it feeds the device's IOTLB itself
   * (`device.iotlbUpdate`).
   */
  iommu?: boolean;
  /**
   * With `iommu` acked: where guest memory lies in the device's I/O virtual
   * address space, IOVA = GPA + `iovaOffset` (a multiple of 4096, at least
   * `-gpa`). The ring addresses `start` and `logRing` send are these IOVAs,
   * and a test writes buffer addresses as them ({@linkcode DriverHarness.iova})
   * and maps them with {@linkcode DriverHarness.iotlbEntries}. Default: the
   * frontend's virtual address of each byte (GPA + the harness's own offset),
   * the addresses sent without a vIOMMU. The ring drivers address the
   * indirect tables they lay out by GPA: with `iommu`, leave
   * `VIRTIO_F_INDIRECT_DESC` unacked unless IOVA = GPA (`iovaOffset` 0).
   */
  iovaOffset?: number;
}

/** Options of {@linkcode DriverHarness.start}. */
export interface HarnessStartOptions {
  /**
   * Ring `q` starts at available index `bases[q]` (default 0), as a
   * frontend restarting a device sets the bases it got back.
   */
  bases?: readonly number[];
}

/** One ring as the guest sees it. */
export interface HarnessRing {
  /** Ring index. */
  readonly index: number;
  /**
   * The guest side of a split ring, with its raw-descriptor tools.
   *
   * @throws TypeError for a packed ring: use {@linkcode HarnessRing.queue}.
   */
  readonly driver: SplitQueueDriver;
  /** The guest side of the ring, split or packed. */
  readonly queue: VirtqueueDriver;
  /** The packed ring's guest side, or null for a split ring. */
  readonly packed: PackedQueueDriver | null;
  /** Where the ring lies in guest memory (packed: avail/used are the event areas). */
  readonly layout: SplitQueueDriverLayout | PackedQueueDriverLayout;
  /** The guest's end of the kick eventfd (the device holds its own). */
  readonly kick: number;
  /** The guest's end of the call eventfd. */
  readonly call: number;
}

/** Where the frontend says the memory is in its address space (GPA + this: deliberately not the GPA). */
const UVA_OFFSET = 0x7f00_0000_0000;

/**
 * A driver's device under test: the real {@linkcode VhostMdevDevice}, guest
 * memory shared through a sealed memfd, and every ring laid out, configured
 * and enabled by {@linkcode DriverHarness.start}.
 *
 * @example Start the sim driver and loop one frame
 * ```ts
 * import { DriverHarness } from "@vhost-mdev/testing";
 * import { driver } from "@vhost-mdev/sim";
 *
 * const h = await DriverHarness.create(driver, { queues: 1, options: { mode: "loopback" } });
 * await h.start();
 * // h.ring(1).driver.add(...); h.kick(1); await h.waitCall(0);
 * await h.close();
 * ```
 */
export class DriverHarness {
  /** The device core the driver runs under. */
  readonly device: VhostMdevDevice;
  /** Guest memory as the guest sees it (guest-physical addresses). */
  readonly memory: GuestMemory;
  /** The features acked. */
  readonly features: bigint;
  readonly #rings: HarnessRing[];
  readonly #given: { kick: number; call: number }[];
  readonly #gpa: number;
  /** IOVA - GPA while `VIRTIO_F_ACCESS_PLATFORM` is acked, else null (addresses are GPAs). */
  readonly #iovaOffset: number | null;
  readonly #memfd: number;
  readonly #mapping: Mapping;
  #next: number;
  readonly #end: number;

  private constructor(
    device: VhostMdevDevice,
    memory: GuestMemory,
    features: bigint,
    rings: HarnessRing[],
    gpa: number,
    memfd: number,
    mapping: Mapping,
    next: number,
    iovaOffset: number | null,
  ) {
    this.device = device;
    this.memory = memory;
    this.features = features;
    this.#rings = rings;
    this.#given = rings.map(() => ({ kick: -1, call: -1 }));
    this.#gpa = gpa;
    this.#iovaOffset = iovaOffset;
    this.#memfd = memfd;
    this.#mapping = mapping;
    this.#next = next;
    this.#end = gpa + mapping.length;
  }

  /**
   * Probe `driver` under a device core, share guest memory with it and
   * lay out its rings (nothing is started yet).
   *
   * @throws Error from the driver's probe, as when served.
   */
  static async create(
    driver: Driver,
    params: ProbeParams,
    options: DriverHarnessOptions = {},
  ): Promise<DriverHarness> {
    const size = options.memoryBytes ?? 16 << 20;
    const num = options.ringSize ?? 256;
    const gpa = options.gpa ?? 0;
    if (!Number.isInteger(gpa) || gpa < 0 || gpa % 0x1000 !== 0) {
      throw new RangeError(`gpa ${gpa} is not a page-aligned guest-physical address`);
    }
    const device = await VhostMdevDevice.create(driver, params, options.device ?? {});
    // LOG_ALL is acked when a migration starts, not at start-up (see `logRing`).
    const packedBit = bit(VirtioFeatureBit.RING_PACKED);
    const features = (options.features ?? device.getFeatures()) & device.getFeatures() &
      ~bit(VHOST_F_LOG_ALL) & (options.packed ? ~0n : ~packedBit) &
      (options.iommu ? ~0n : ~bit(VirtioFeatureBit.ACCESS_PLATFORM));
    if (options.packed && (features & packedBit) === 0n) {
      throw new RangeError(`driver ${driver.name} does not offer VIRTIO_F_RING_PACKED`);
    }
    const iovaOffset = options.iovaOffset ?? UVA_OFFSET;
    if (
      !Number.isSafeInteger(iovaOffset) || iovaOffset % 0x1000 !== 0 || gpa + iovaOffset < 0 ||
      !Number.isSafeInteger(gpa + size + iovaOffset)
    ) {
      throw new RangeError(
        `iovaOffset ${iovaOffset} does not put guest memory at page-aligned IOVAs`,
      );
    }
    const memfd = memfdCreate("driver-harness", { allowSealing: true });
    ftruncate(memfd, size);
    const mapping = mmap(memfd, size);
    const memory = GuestMemory.fromBuffers([
      { gpa, uva: gpa + UVA_OFFSET, bytes: new Uint8Array(mapping.buffer) },
    ]);
    const eventIdx = hasBit(features, VirtioFeatureBit.EVENT_IDX);
    const indirect = hasBit(features, VirtioFeatureBit.INDIRECT_DESC);
    // A device may then return a batch of chains with one used entry.
    const inOrder = hasBit(features, VirtioFeatureBit.IN_ORDER);
    const rings: HarnessRing[] = [];
    let next = gpa + 0x1000;
    for (let q = 0; q < device.numQueues; q++) {
      const segments = { indirectSegments: indirect ? 4 : 0 };
      const kick = eventfd(0, { nonBlocking: true }), call = eventfd(0, { nonBlocking: true });
      if (options.packed) {
        const layout = PackedQueueDriver.layout(num, next, segments);
        next = Math.ceil((next + layout.bytes) / 0x1000) * 0x1000;
        const packed = new PackedQueueDriver(memory, layout, { eventIdx, indirect, inOrder });
        rings.push({
          index: q,
          get driver(): SplitQueueDriver {
            throw new TypeError(`ring ${q} is packed: use its queue (or packed) driver`);
          },
          queue: packed,
          packed,
          layout,
          kick,
          call,
        });
        continue;
      }
      const layout = SplitQueueDriver.layout(num, next, segments);
      next = Math.ceil((next + layout.bytes) / 0x1000) * 0x1000;
      const driver = new SplitQueueDriver(memory, layout, {
        eventIdx,
        indirect,
        inOrder,
        reserved: options.reserved ?? 0,
      });
      rings.push({ index: q, driver, queue: driver, packed: null, layout, kick, call });
    }
    const viaIommu = hasBit(features, VirtioFeatureBit.ACCESS_PLATFORM);
    return new DriverHarness(
      device,
      memory,
      features,
      rings,
      gpa,
      memfd,
      mapping,
      next,
      viaIommu ? iovaOffset : null,
    );
  }

  /**
   * The address the device's DMA uses for guest-physical `gpa`: its IOVA
   * (GPA + `iovaOffset`) while `VIRTIO_F_ACCESS_PLATFORM` is acked, else
   * `gpa` itself. Buffer addresses in descriptors must be these.
   */
  iova(gpa: number): number {
    return this.#iovaOffset === null ? gpa : gpa + this.#iovaOffset;
  }

  /** The frontend's virtual address of guest-physical `gpa` (an IOTLB entry's `uaddr`). */
  uva(gpa: number): number {
    return gpa + UVA_OFFSET;
  }

  /**
   * IOTLB entries that map all of guest memory at its IOVAs
   * ({@linkcode DriverHarness.iova}), `chunk` bytes each (default: one
   * entry), with access `perm` (default read-write), in IOVA order: what a
   * test feeds to `device.iotlbUpdate`, as a frontend answering misses would.
   */
  iotlbEntries(
    chunk: number = this.#mapping.length,
    perm: number = IotlbAccess.READ_WRITE,
  ): IotlbEntry[] {
    if (!Number.isSafeInteger(chunk) || chunk <= 0 || chunk % 0x1000 !== 0) {
      throw new RangeError(`IOTLB entry size ${chunk} is not a positive multiple of 4096`);
    }
    const out: IotlbEntry[] = [];
    for (let gpa = this.#gpa; gpa < this.#end; gpa += chunk) {
      const size = Math.min(chunk, this.#end - gpa);
      out.push({ iova: this.iova(gpa), size, uaddr: this.uva(gpa), perm });
    }
    return out;
  }

  /** Ring `q`'s guest side. */
  ring(q: number): HarnessRing {
    const r = this.#rings[q];
    if (!r) throw new RangeError(`ring ${q} does not exist: the device has ${this.#rings.length}`);
    return r;
  }

  /**
   * The kick and call eventfds ring `q` was given by the last
   * {@linkcode DriverHarness.start} (duplicates of the guest's ends, owned
   * by the device, as its driver sees them); -1 before any start.
   */
  deviceFds(q: number): { readonly kick: number; readonly call: number } {
    this.ring(q);
    return { ...this.#given[q] };
  }

  /**
   * Configure the device as a frontend does (features, memory table, every
   * ring's size, base, addresses, kick and call, enable, `DRIVER_OK`), so it
   * starts; `rings` limits which rings are enabled (default all), and
   * `options.bases` sets where rings start (default 0).
   *
   * @throws RequestRefused when the device refuses a step (its `start` failing).
   */
  async start(
    rings: readonly number[] = this.#rings.map((r) => r.index),
    options: HarnessStartOptions = {},
  ): Promise<void> {
    const d = this.device;
    await d.setStatus(VirtioStatus.ACKNOWLEDGE | VirtioStatus.DRIVER);
    await d.setFeatures(this.features);
    await d.setStatus(VirtioStatus.ACKNOWLEDGE | VirtioStatus.DRIVER | VirtioStatus.FEATURES_OK);
    await d.setMemTable([{
      gpa: this.#gpa,
      size: this.#mapping.length,
      uva: this.#gpa + UVA_OFFSET,
      mmapOffset: 0,
      fd: this.#memfd,
    }]);
    for (const q of rings) {
      const r = this.ring(q);
      await d.setVringNum(q, r.layout.num);
      // A packed ring starts with both wrap counters at 1 (virtio 1.2 §2.8.1).
      await d.setVringBase(q, options.bases?.[q] ?? (r.packed ? 0x8000 : 0));
      await d.setVringAddr({
        index: q,
        flags: 0,
        desc: this.#ringAddress(r.layout.descAddr),
        avail: this.#ringAddress(r.layout.availAddr),
        used: this.#ringAddress(r.layout.usedAddr),
        log: 0,
      });
      // The device owns what it is given: it gets duplicates, the guest keeps its ends.
      const kick = dup(r.kick);
      await d.setVringKick(q, kick);
      this.#given[q].kick = kick;
      const call = dup(r.call);
      await d.setVringCall(q, call);
      this.#given[q].call = call;
      await d.setVringEnable(q, true);
    }
    await d.setStatus(
      VirtioStatus.ACKNOWLEDGE | VirtioStatus.DRIVER | VirtioStatus.FEATURES_OK |
        VirtioStatus.DRIVER_OK,
    );
  }

  /**
   * Turn used-ring logging on or off for ring `q`, keeping its addresses:
   * `SET_VRING_ADDR` with `VHOST_VRING_F_LOG` and the used ring's
   * guest-physical address as the log address, as QEMU sends it when a
   * migration starts and ends.
   */
  async logRing(q: number, on: boolean): Promise<void> {
    const r = this.ring(q);
    await this.device.setVringAddr({
      index: q,
      flags: on ? VRING_F_LOG : 0,
      desc: this.#ringAddress(r.layout.descAddr),
      avail: this.#ringAddress(r.layout.availAddr),
      used: this.#ringAddress(r.layout.usedAddr),
      log: on ? r.layout.usedAddr : 0,
    });
  }

  /**
   * What `SET_VRING_ADDR` carries for guest-physical `gpa`: the frontend's
   * virtual address, or behind a vIOMMU the IOVA.
   */
  #ringAddress(gpa: number): number {
    return this.#iovaOffset === null ? gpa + UVA_OFFSET : gpa + this.#iovaOffset;
  }

  /** Stop the device as a frontend resetting it does (`SET_STATUS 0`). */
  async stop(): Promise<void> {
    await this.device.setStatus(0);
  }

  /** Allocate `size` bytes of guest memory after the rings (8-byte aligned). */
  alloc(size: number): number {
    const gpa = this.#next;
    if (gpa + size > this.#end) {
      throw new RangeError(`guest memory exhausted: ${size} bytes wanted at ${gpa}`);
    }
    this.#next += Math.ceil(size / 8) * 8;
    return gpa;
  }

  /** Kick ring `q` (write its kick eventfd). */
  kick(q: number): void {
    eventfdWrite(this.ring(q).kick, 1);
  }

  /**
   * Wait until ring `q`'s call eventfd fires; returns its count (0 when
   * `timeoutMs` passed first).
   */
  async waitCall(q: number, timeoutMs = 5000): Promise<number> {
    const fd = this.ring(q).call;
    const [revents] = await pollAsync([{ fd, events: POLLIN }], timeoutMs);
    if (revents === 0) return 0;
    try {
      return eventfdRead(fd);
    } catch {
      return 0;
    }
  }

  /** Close the device (stopping it) and release memory and fds. */
  async close(): Promise<void> {
    await this.device.close();
    for (const r of this.#rings) {
      close(r.kick);
      close(r.call);
    }
    this.memory.close();
    this.#mapping.unmap();
    close(this.#memfd);
  }
}
