/**
 * A generic virtio guest over a {@linkcode VhostUserFrontend}: what every
 * guest driver does before it does anything device-specific. It negotiates
 * features, lays out N split rings of one size in the frontend's guest
 * memory (each driven by a `SplitQueueDriver`), hands out buffer areas
 * after them, brings the device to DRIVER_OK, and waits for used entries on
 * a ring's call eventfd. Device classes (virtio-net, virtio-blk, …) build on
 * it: they choose the features and queue count and post their buffers
 * between {@linkcode VirtioGuest.setup} and {@linkcode VirtioGuest.activate}.
 *
 * Packed rings (`packed` option, `VIRTIO_F_RING_PACKED`) are driven by a
 * `PackedQueueDriver`: {@linkcode VirtioGuest.ring} returns either kind.
 *
 * Behind a vIOMMU (`iommu` option, with a frontend made with `iommu`), the
 * guest acknowledges `VIRTIO_F_ACCESS_PLATFORM` and gives the device I/O
 * virtual addresses: each guest-physical address plus a fixed
 * {@linkcode VirtioGuest.iovaOffset}, in ring addresses and in every
 * descriptor its rings' `add`/`addBuffer` write (they take GPAs and write
 * IOVAs). Before the rings are programmed, the frontend's page table maps
 * all of guest memory there read-write, so the device's misses are answered.
 *
 * Interrupts: {@linkcode VirtioGuest.waitUsed} asks for one (clears
 * `VIRTQ_AVAIL_F_NO_INTERRUPT`, or with `EVENT_IDX` sets `used_event` to the
 * next used index) only when the ring has nothing waiting, and sleeps on the
 * call eventfd. With `EVENT_IDX` that request is one-shot: the device
 * signals once when it passes `used_event`, so a guest that keeps up is not
 * interrupted per batch.
 *
 * @example A guest with two rings, each holding one buffer
 * ```ts
 * import { bit, VirtioFeatureBit } from "@vhost-mdev/sdk";
 * import { VhostUserFrontend, VirtioGuest } from "@vhost-mdev/testing";
 *
 * const fe = await VhostUserFrontend.connect("/tmp/vhost.sock");
 * const guest = await VirtioGuest.setup(fe, {
 *   queues: 2,
 *   ringSize: 256,
 *   optional: bit(VirtioFeatureBit.EVENT_IDX),
 * });
 * const buffers = guest.allocate(2 * 4096);
 * guest.queue(0).addBuffer(buffers, 4096, true, 0);
 * guest.queue(0).publish();
 * await guest.activate();
 * guest.kick(0);
 * await guest.waitUsed(0, 1000);
 * await guest.stop();
 * fe.close();
 * ```
 *
 * @module
 */

import { pollAsync, POLLIN } from "@vhost-mdev/sdk/sys";
import { ProtocolFeatureBit } from "@vhost-mdev/sdk/vhost-user";
import {
  bit,
  hasBit,
  isValidPackedQueueSize,
  isValidQueueSize,
  PackedQueueDriver,
  SplitQueueDriver,
  VirtioFeatureBit,
  VirtioStatus,
  type VirtqueueDriver,
} from "@vhost-mdev/sdk";
import type { FrontendRingLayout, VhostUserFrontend } from "./vhost_user_frontend.ts";

/** Default {@linkcode VirtioGuestIommuOptions.iovaOffset}: 512 GiB, far above any GPA here. */
export const DEFAULT_IOVA_OFFSET = 0x80_0000_0000;

/** Options of a guest behind the frontend's IOMMU ({@linkcode VirtioGuestOptions.iommu}). */
export interface VirtioGuestIommuOptions {
  /**
   * What is added to a guest-physical address to make the IOVA the device
   * is given (default {@linkcode DEFAULT_IOVA_OFFSET}); a multiple of 4096.
   */
  iovaOffset?: number;
}

/** Options of {@linkcode VirtioGuest.setup}. */
export interface VirtioGuestOptions {
  /** Rings to set up (1..256), numbered from 0. */
  queues: number;
  /** Descriptors per ring, a power of two (default 256). */
  ringSize?: number;
  /**
   * Feature bits the device must offer, acknowledged; `VERSION_1` is always
   * required. Setup fails naming the bits that are missing.
   */
  required?: bigint;
  /** Feature bits acknowledged when the device offers them. */
  optional?: bigint;
  /** Drive packed rings (`VIRTIO_F_RING_PACKED`, then required); default split. */
  packed?: boolean;
  /**
   * Run behind the frontend's IOMMU (the frontend must be made with
   * `iommu`): `VIRTIO_F_ACCESS_PLATFORM` is required and acknowledged, and
   * every address the device is given is an IOVA (see the module
   * documentation). `true` is `{}`.
   */
  iommu?: boolean | VirtioGuestIommuOptions;
}

/** Bytes of a page: rings and buffer areas start on one. */
const PAGE = 4096;
/** How long one wait on a call eventfd lasts before the deadline is looked at again, in ms. */
const POLL_SLICE_MS = 20;
/** Device-status bits a driver sets before DRIVER_OK. */
const FEATURES_OK = VirtioStatus.ACKNOWLEDGE | VirtioStatus.DRIVER | VirtioStatus.FEATURES_OK;

function alignUp(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}

/** A virtio device as its guest driver sees it: features, rings, interrupts. */
export class VirtioGuest {
  /** The frontend it drives. */
  readonly frontend: VhostUserFrontend;
  /** Features acknowledged with `SET_FEATURES`. */
  readonly features: bigint;
  /** Descriptors per ring. */
  readonly ringSize: number;
  /** Whether `VIRTIO_F_EVENT_IDX` was negotiated. */
  readonly eventIdx: boolean;
  /** Whether the rings are packed (`VIRTIO_F_RING_PACKED` negotiated). */
  readonly packed: boolean;
  /**
   * What is added to a guest-physical address to make the address the
   * device is given: the IOVA offset behind the IOMMU, else 0.
   */
  readonly iovaOffset: number;
  readonly #queues: VirtqueueDriver[];
  readonly #layouts: FrontendRingLayout[];
  readonly #calls: number[];
  readonly #statusFeature: boolean;
  #next: number;
  #stopped = false;

  private constructor(
    frontend: VhostUserFrontend,
    features: bigint,
    ringSize: number,
    queues: VirtqueueDriver[],
    layouts: FrontendRingLayout[],
    next: number,
    iovaOffset: number,
  ) {
    this.frontend = frontend;
    this.features = features;
    this.ringSize = ringSize;
    this.eventIdx = hasBit(features, VirtioFeatureBit.EVENT_IDX);
    this.packed = hasBit(features, VirtioFeatureBit.RING_PACKED);
    this.iovaOffset = iovaOffset;
    this.#queues = queues;
    this.#layouts = layouts;
    this.#calls = queues.map(() => 0);
    this.#statusFeature = hasBit(frontend.protocolFeatures, ProtocolFeatureBit.STATUS);
    this.#next = next;
  }

  /**
   * Handshake, negotiate features, `SET_STATUS` ACKNOWLEDGE|DRIVER|
   * FEATURES_OK (with the `STATUS` protocol feature), `SET_MEM_TABLE`, and
   * program every ring (`SET_VRING_*`). The rings are not enabled and the
   * device is not live until {@linkcode VirtioGuest.activate}. Behind the
   * IOMMU, all of guest memory is mapped at the IOVA offset in the
   * frontend's page table before the rings are programmed.
   *
   * @throws RangeError for bad options or rings that do not fit in guest
   *   memory; Error naming missing feature bits or a failed request, or an
   *   `iommu` guest on a frontend without one.
   */
  static async setup(
    frontend: VhostUserFrontend,
    options: VirtioGuestOptions,
  ): Promise<VirtioGuest> {
    const queues = options.queues;
    const ringSize = options.ringSize ?? 256;
    if (!Number.isInteger(queues) || queues < 1 || queues > 256) {
      throw new RangeError(`queues ${queues} is not within 1..256`);
    }
    const packed = options.packed ?? false;
    if (!(packed ? isValidPackedQueueSize(ringSize) : isValidQueueSize(ringSize))) {
      throw new RangeError(
        packed
          ? `ringSize ${ringSize} is not within 1..32768`
          : `ringSize ${ringSize} is not a power of two within 1..32768`,
      );
    }
    const iommu = options.iommu === true ? {} : options.iommu || null;
    const iovaOffset = iommu === null ? 0 : iommu.iovaOffset ?? DEFAULT_IOVA_OFFSET;
    const deviceAddressOffset = iovaOffset;
    if (iommu !== null) {
      if (frontend.iommu === null) {
        throw new Error("virtio: a guest behind an IOMMU needs a frontend made with `iommu`");
      }
      if (
        !Number.isSafeInteger(iovaOffset) || iovaOffset < 0 || iovaOffset % 4096 !== 0 ||
        !Number.isSafeInteger(iovaOffset + frontend.memoryGpa + frontend.memorySize)
      ) {
        throw new RangeError(`iovaOffset ${iovaOffset} is not a page-aligned offset below 2^53`);
      }
    }
    const offered = await frontend.handshake();
    const required = bit(VirtioFeatureBit.VERSION_1) | (options.required ?? 0n) |
      (packed ? bit(VirtioFeatureBit.RING_PACKED) : 0n) |
      (iommu !== null ? bit(VirtioFeatureBit.ACCESS_PLATFORM) : 0n);
    const missing = required & ~offered;
    if (missing !== 0n) {
      throw new Error(
        `virtio: the device does not offer feature bits 0x${missing.toString(16)} ` +
          `(offer 0x${offered.toString(16)})`,
      );
    }
    const features = required | (offered & bit(VirtioFeatureBit.PROTOCOL_FEATURES)) |
      (offered & (options.optional ?? 0n));
    await frontend.setFeatures(features);
    if (hasBit(frontend.protocolFeatures, ProtocolFeatureBit.STATUS)) {
      await frontend.setStatus(FEATURES_OK);
    }
    await frontend.setMemTable();
    if (iommu !== null) {
      await frontend.iommu!.map(
        frontend.memoryGpa + iovaOffset,
        frontend.memoryGpa,
        frontend.memorySize,
      );
    }

    const eventIdx = hasBit(features, VirtioFeatureBit.EVENT_IDX);
    // A device may then return a batch of chains with one used entry.
    const inOrder = hasBit(features, VirtioFeatureBit.IN_ORDER);
    const ringBytes = packed
      ? PackedQueueDriver.layout(ringSize, 0).bytes
      : SplitQueueDriver.layout(ringSize, 0).bytes;
    // Page 0 stays unused, so GPA 0 is never a valid buffer.
    let next = frontend.memoryGpa + PAGE;
    const rings: VirtqueueDriver[] = [];
    const layouts: FrontendRingLayout[] = [];
    for (let q = 0; q < queues; q++) {
      const at = next;
      next = alignUp(next + ringBytes, PAGE);
      if (next > frontend.memoryGpa + frontend.memorySize) {
        throw new RangeError(
          `virtio: ${queues} rings of ${ringSize} entries do not fit in ` +
            `${frontend.memorySize / 1048576} MiB of guest memory`,
        );
      }
      const memory = frontend.memory;
      let layout: FrontendRingLayout;
      if (packed) {
        const l = PackedQueueDriver.layout(ringSize, at);
        rings.push(new PackedQueueDriver(memory, l, { eventIdx, deviceAddressOffset, inOrder }));
        layout = { num: l.num, descAddr: l.descAddr, availAddr: l.availAddr, usedAddr: l.usedAddr };
      } else {
        const l = SplitQueueDriver.layout(ringSize, at);
        rings.push(new SplitQueueDriver(memory, l, { eventIdx, deviceAddressOffset, inOrder }));
        layout = { num: l.num, descAddr: l.descAddr, availAddr: l.availAddr, usedAddr: l.usedAddr };
      }
      layouts.push(layout);
      // The device is given IOVAs behind the IOMMU; a packed ring starts
      // with both wrap counters at 1 (virtio 1.2 §2.8.1).
      await frontend.setupRing(
        q,
        {
          num: layout.num,
          descAddr: layout.descAddr + iovaOffset,
          availAddr: layout.availAddr + iovaOffset,
          usedAddr: layout.usedAddr + iovaOffset,
        },
        packed ? 0x8000 : 0,
      );
    }
    return new VirtioGuest(frontend, features, ringSize, rings, layouts, next, iovaOffset);
  }

  /** Rings set up. */
  get queueCount(): number {
    return this.#queues.length;
  }

  /**
   * The driver side of split ring `q`.
   *
   * @throws RangeError when there is no ring `q`; TypeError when the rings
   *   are packed (use {@linkcode VirtioGuest.ring}).
   */
  queue(q: number): SplitQueueDriver {
    const ring = this.ring(q);
    if (!(ring instanceof SplitQueueDriver)) {
      throw new TypeError(`ring ${q} is packed: use ring(${q})`);
    }
    return ring;
  }

  /**
   * The driver side of ring `q`, split or packed. Behind the IOMMU its
   * `add` and `addBuffer` take guest-physical addresses and write IOVAs;
   * other addresses it is given (`writeDescriptor`) go to the device as
   * they are.
   *
   * @throws RangeError when there is no ring `q`.
   */
  ring(q: number): VirtqueueDriver {
    const ring = this.#queues[q];
    if (!ring) throw new RangeError(`queue ${q} is not within 0..${this.#queues.length - 1}`);
    return ring;
  }

  /** Where ring `q` lies in guest memory (GPAs; the device is given {@linkcode deviceAddress}es). */
  ringLayout(q: number): FrontendRingLayout {
    this.ring(q);
    return { ...this.#layouts[q] };
  }

  /** The address the device is given for guest-physical `gpa`: its IOVA behind the IOMMU. */
  deviceAddress(gpa: number): number {
    return gpa + this.iovaOffset;
  }

  /**
   * Reserve `bytes` of guest memory after the rings (page-aligned) and
   * return its guest-physical address.
   *
   * @throws RangeError when it does not fit.
   */
  allocate(bytes: number): number {
    const at = this.#next;
    const end = alignUp(at + bytes, PAGE);
    if (!(bytes > 0) || end > this.frontend.memoryGpa + this.frontend.memorySize) {
      throw new RangeError(
        `virtio: ${bytes} more bytes do not fit in ${
          this.frontend.memorySize / 1048576
        } MiB of guest memory`,
      );
    }
    this.#next = end;
    return at;
  }

  /**
   * Make the device live: enable every ring (with `PROTOCOL_FEATURES`), then
   * `SET_STATUS` with DRIVER_OK (with the `STATUS` protocol feature).
   */
  async activate(): Promise<void> {
    if (hasBit(this.features, VirtioFeatureBit.PROTOCOL_FEATURES)) {
      for (let q = 0; q < this.#queues.length; q++) await this.frontend.setVringEnable(q, true);
    }
    if (this.#statusFeature) await this.frontend.setStatus(FEATURES_OK | VirtioStatus.DRIVER_OK);
  }

  /** Notify the device that ring `q` has new buffers. */
  kick(q: number): void {
    this.frontend.kick(q);
  }

  /** Publish what was added to ring `q` and kick when the device asks for it; true when kicked. */
  publish(q: number): boolean {
    const ring = this.ring(q);
    ring.publish();
    if (!ring.kickNeeded()) return false;
    this.frontend.kick(q);
    return true;
  }

  /** Interrupts (call eventfd counts) seen on ring `q` so far. */
  calls(q: number): number {
    this.ring(q);
    this.#calls[q] += this.frontend.takeCalls(q);
    return this.#calls[q];
  }

  /**
   * Resolve with the first of `queues` that has used entries waiting (none
   * are taken), sleeping on the rings' call eventfds until one does.
   *
   * @throws Error after `timeoutMs` (default 5000) naming the rings.
   */
  async waitUsed(queues: number | readonly number[], timeoutMs = 5000): Promise<number> {
    const list = typeof queues === "number" ? [queues] : queues;
    const rings = list.map((q) => this.ring(q));
    const fds = list.map((q) => ({ fd: this.frontend.callFd(q), events: POLLIN }));
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      for (let i = 0; i < list.length; i++) {
        // Ask for an interrupt; true when entries are already waiting.
        if (rings[i].enableInterrupts()) return list[i];
      }
      const left = deadline - performance.now();
      if (left <= 0) {
        throw new Error(
          `virtio: no used entry on ring(s) ${list.join(", ")} within ${timeoutMs} ms`,
        );
      }
      const revents = await pollAsync(fds, Math.min(left, POLL_SLICE_MS));
      // Reset only the counters that are set (reading an empty one is an error to catch).
      for (let i = 0; i < list.length; i++) {
        if (revents[i] !== 0) this.#calls[list[i]] += this.frontend.takeCalls(list[i]);
      }
    }
  }

  /**
   * Stop like a guest driver unloading: disable every ring (with
   * `PROTOCOL_FEATURES`), then `GET_VRING_BASE` each. Returns the device's
   * next available index per ring. Idempotent after the first call.
   */
  async stop(): Promise<number[]> {
    if (this.#stopped) return [];
    this.#stopped = true;
    const rings = this.#queues.length;
    if (hasBit(this.features, VirtioFeatureBit.PROTOCOL_FEATURES)) {
      for (let q = 0; q < rings; q++) await this.frontend.setVringEnable(q, false);
    }
    const bases: number[] = [];
    for (let q = 0; q < rings; q++) bases.push(await this.frontend.getVringBase(q));
    return bases;
  }
}
