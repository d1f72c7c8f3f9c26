/**
 * Per-ring state as the frontend configures it (`SET_VRING_*`), kept by the
 * device core. The driver sees it read-only through `DeviceContext.vring`.
 *
 * @module
 */

import type { RingPosition, VringInfo } from "../ops.ts";
import type { GuestMemory } from "../memory/guest_memory.ts";
import type { IotlbMiss, IotlbView } from "../memory/iotlb.ts";
import { IotlbAccess } from "../uapi/vhost.ts";
import { availRingSize, descTableSize, usedRingSize } from "../virtqueue/layout.ts";
import { EVENT_SUPPRESS_SIZE, packedRingSize } from "../virtqueue/packed_layout.ts";
import { decodeRingIndex, encodeRingIndex } from "../virtqueue/queue.ts";
import {
  close,
  describeFd,
  eventfdIsSemaphore,
  isEventfd,
  setNonBlocking,
  SysError,
} from "../sys/mod.ts";
import { hex } from "../uapi/hex.ts";
import { RequestRefused } from "./errors.ts";

/** Where a ring starts before the frontend says otherwise: index 0, wrap counters 1. */
export const RING_START: RingPosition = Object.freeze({
  availIdx: 0,
  usedIdx: 0,
  availWrap: true,
  usedWrap: true,
});

/**
 * The ring state a `SET_VRING_BASE` number stands for. Split ring: the
 * next available index in bits 0-15; the device has completed everything
 * before it (vhost-user: a backend finishes in-flight buffers before
 * `GET_VRING_BASE` answers), so the used index is the same. Packed ring
 * (the vhost layout of `vhost_vring_state.num`): bits 0-14 the available
 * position, bit 15 its wrap counter, bits 16-30 the used position and bit
 * 31 its wrap counter; a frontend that sends only the low 16 bits means a
 * used position equal to the available one.
 */
export function decodeRingBase(num: number, packed: boolean): RingPosition {
  const avail = decodeRingIndex(num & 0xffff, packed);
  const high = num >>> 16;
  // Split rings carry no used half; a packed frontend may leave it out too.
  const used = packed && high !== 0 ? decodeRingIndex(high, packed) : avail;
  return { availIdx: avail.idx, availWrap: avail.wrap, usedIdx: used.idx, usedWrap: used.wrap };
}

/** The `GET_VRING_BASE` number for `state`: see {@linkcode decodeRingBase}. */
export function encodeRingBase(state: RingPosition, packed: boolean): number {
  const avail = encodeRingIndex(state.availIdx, state.availWrap, packed);
  if (!packed) return avail;
  return (avail | (encodeRingIndex(state.usedIdx, state.usedWrap, packed) << 16)) >>> 0;
}

/**
 * `state` if it is a ring state a ring of this kind can hold, else a reason
 * it is not.
 */
export function checkRingPosition(state: unknown, packed: boolean): string | null {
  if (typeof state !== "object" || state === null) return `${state} is not a ring state`;
  const s = state as Record<string, unknown>;
  const max = packed ? 0x7fff : 0xffff;
  for (const k of ["availIdx", "usedIdx"]) {
    const v = s[k];
    if (!Number.isInteger(v) || (v as number) < 0 || (v as number) > max) {
      return `${k} ${v} is not an index from 0 to ${max}`;
    }
  }
  for (const k of ["availWrap", "usedWrap"]) {
    if (typeof s[k] !== "boolean") return `${k} ${s[k]} is not a boolean`;
  }
  return null;
}

/**
 * Bytes of a ring's three areas: split (descriptor table, available ring,
 * used ring; the event fields with `EVENT_IDX`, virtio 1.2 §2.7) or packed
 * (descriptor ring, driver and device event areas, §2.8).
 */
export function ringAreaSizes(
  num: number,
  eventIdx: boolean,
  packed: boolean,
): [desc: number, avail: number, used: number] {
  if (packed) return [packedRingSize(num), EVENT_SUPPRESS_SIZE, EVENT_SUPPRESS_SIZE];
  return [descTableSize(num), availRingSize(num, eventIdx), usedRingSize(num, eventIdx)];
}

/** One virtqueue's configuration and file descriptors. Owns its fds. */
export class RingState implements VringInfo {
  num = 0;
  descAddr = 0;
  availAddr = 0;
  usedAddr = 0;
  logAddr = 0;
  logging = false;
  state: RingPosition = RING_START;
  running = false;
  kickFd = -1;
  callFd = -1;
  errFd = -1;
  enabled = false;
  /**
   * The addresses as the frontend sent them, kept to re-translate after a
   * new memory table: its virtual addresses, or IOVAs behind a vIOMMU.
   */
  uva: { desc: number; avail: number; used: number } | null = null;
  /** Whether the addresses translated into the current memory table. */
  addrValid = false;
  /** Behind a vIOMMU: the translation the ring still needs, or null. */
  missing: IotlbMiss | null = null;
  /** Behind a vIOMMU: why the IOTLB refuses the ring's areas (wrong permissions), or null. */
  denied: string | null = null;
  /**
   * Behind a vIOMMU: since when (`performance.now()`) a running ring has
   * waited to see its areas translated again after an invalidation, or -1.
   */
  revalidating = -1;
  /** Whether the addresses were IOVAs translated through an IOTLB. */
  #viaIotlb = false;
  /** Whether SET_VRING_KICK was received (with an fd or with the no-fd flag). */
  kickSet = false;

  /**
   * A ring with nothing configured.
   *
   * @param index Ring index.
   */
  constructor(readonly index: number) {}

  /** Size, addresses and kick are set, so the ring may run. */
  get ready(): boolean {
    return this.num > 0 && this.addrValid && this.kickSet;
  }

  /**
   * The addresses the device's DMA uses for the three areas: the IOVAs the
   * frontend sent behind a vIOMMU, else the guest-physical ones.
   */
  get dma(): { desc: number; avail: number; used: number } {
    if (this.#viaIotlb && this.uva) return this.uva;
    return { desc: this.descAddr, avail: this.availAddr, used: this.usedAddr };
  }

  /**
   * Translate the frontend's ring addresses into guest-physical ones in
   * `memory`: valid only when the descriptor table and both rings, at the
   * current size, each lie inside one region (the event fields count only
   * with `EVENT_IDX`, virtio 1.2 §2.7). Behind a vIOMMU (`iotlb` given) the
   * addresses are IOVAs, translated first through the IOTLB, each area as
   * one range the device may access as it must (read the descriptors and
   * the available ring, write the used ring; a packed ring's descriptors
   * both): a missing translation is left in {@linkcode RingState.missing},
   * a refused one in {@linkcode RingState.denied}.
   */
  translate(
    memory: GuestMemory,
    eventIdx: boolean,
    packed = false,
    iotlb: IotlbView | null = null,
  ): void {
    this.addrValid = false;
    this.#viaIotlb = iotlb !== null;
    const gpas = this.resolve(memory, eventIdx, packed, iotlb);
    if (gpas === null) {
      this.descAddr = this.availAddr = this.usedAddr = 0;
      return;
    }
    [this.descAddr, this.availAddr, this.usedAddr] = gpas;
    this.addrValid = true;
  }

  /**
   * The guest-physical addresses of the three areas as
   * {@linkcode RingState.translate} would set them, without setting them,
   * or null (with {@linkcode RingState.missing} or
   * {@linkcode RingState.denied} saying why, behind a vIOMMU).
   */
  resolve(
    memory: GuestMemory,
    eventIdx: boolean,
    packed = false,
    iotlb: IotlbView | null = null,
  ): [desc: number, avail: number, used: number] | null {
    this.missing = null;
    this.denied = null;
    if (!this.uva) return null;
    const [desc, avail, used] = ringAreaSizes(Math.max(this.num, 1), eventIdx, packed);
    const { READ, WRITE, READ_WRITE } = IotlbAccess;
    try {
      const at = (what: string, address: number, size: number, perm: number) =>
        memory.uvaToGpa(
          iotlb ? this.#throughIotlb(iotlb, what, address, size, perm) : address,
          size,
        );
      return [
        at("descriptors", this.uva.desc, desc, packed ? READ_WRITE : READ),
        at("driver area", this.uva.avail, avail, READ),
        at("device area", this.uva.used, used, WRITE),
      ];
    } catch {
      return null;
    }
  }

  /** The frontend address of an area at `iova`, or throw having noted what is missing. */
  #throughIotlb(
    iotlb: IotlbView,
    what: string,
    iova: number,
    size: number,
    perm: number,
  ): number {
    const uaddr = iotlb.translateRange(iova, size, perm);
    if (uaddr >= 0) return uaddr;
    if (uaddr === -1 && iotlb.missAt >= 0) {
      this.missing = { iova: iotlb.missAt, perm };
      throw new RangeError("missing");
    }
    const access = perm === IotlbAccess.READ_WRITE
      ? "read-write"
      : perm === IotlbAccess.READ
      ? "read"
      : "write";
    this.denied = `ring ${this.index} ${what} at iova ${hex(iova)}: ` +
      (uaddr === -1
        ? "the IOTLB maps it to discontiguous memory"
        : `the IOTLB does not give the device ${access} access`);
    throw new RangeError(this.denied);
  }

  /**
   * Whether this ring's addresses translate in `memory` to the same
   * guest-physical addresses, inside regions at the same host addresses:
   * a ring that runs on through a memory table change.
   */
  sameIn(memory: GuestMemory, eventIdx: boolean, packed = false): boolean {
    if (!this.uva || !this.addrValid || this.#viaIotlb) return false;
    const [desc, avail, used] = ringAreaSizes(Math.max(this.num, 1), eventIdx, packed);
    const parts: [number, number, number][] = [
      [this.uva.desc, desc, this.descAddr],
      [this.uva.avail, avail, this.availAddr],
      [this.uva.used, used, this.usedAddr],
    ];
    for (const [uva, size, gpa] of parts) {
      let now: number;
      try {
        now = memory.uvaToGpa(uva, size);
      } catch {
        return false;
      }
      if (now !== gpa) return false;
    }
    return true;
  }

  /** Replace the kick fd, closing the previous one. */
  setKick(fd: number): void {
    if (this.kickFd >= 0 && this.kickFd !== fd) close(this.kickFd);
    this.kickFd = fd;
    this.kickSet = true;
  }

  /** Replace the call fd, closing the previous one. */
  setCall(fd: number): void {
    if (this.callFd >= 0 && this.callFd !== fd) close(this.callFd);
    this.callFd = fd;
  }

  /** Replace the error fd, closing the previous one. */
  setErr(fd: number): void {
    if (this.errFd >= 0 && this.errFd !== fd) close(this.errFd);
    this.errFd = fd;
  }

  /** Forget everything and close the fds (device reset). */
  reset(): void {
    this.setKick(-1);
    this.setCall(-1);
    this.setErr(-1);
    this.kickSet = false;
    this.num = 0;
    this.descAddr =
      this.availAddr =
      this.usedAddr =
      this.logAddr =
        0;
    this.logging = false;
    this.state = RING_START;
    this.running = false;
    this.enabled = false;
    this.uva = null;
    this.addrValid = false;
    this.missing = null;
    this.denied = null;
    this.revalidating = -1;
    this.#viaIotlb = false;
  }

  /** A plain snapshot for logs and events. */
  describe(): Record<string, unknown> {
    return {
      index: this.index,
      num: this.num,
      desc: hex(this.descAddr),
      availAddr: hex(this.availAddr),
      used: hex(this.usedAddr),
      avail: this.state.availIdx,
      usedIdx: this.state.usedIdx,
      enabled: this.enabled,
      kick: this.kickFd >= 0,
      call: this.callFd >= 0,
    };
  }
}

/**
 * Accept `fd` as ring `index`'s kick, call or error fd (-1: none), or
 * close it and refuse. It must be an eventfd, and for a kick not in
 * semaphore mode (each read would take 1: a saturated one reads as 2^64
 * kicks). An accepted fd is made non-blocking, so no thread ever blocks on
 * it whatever the frontend did to its counter.
 *
 * @throws RequestRefused naming the request, the ring and what the fd is.
 */
export function checkRingFd(fd: number, request: string, index: number): void {
  if (fd < 0) return;
  try {
    if (!isEventfd(fd)) {
      let what = "a closed fd";
      try {
        what = describeFd(fd);
      } catch {
        // Reported as closed.
      }
      throw new RequestRefused(
        `${request} ring ${index}: fd ${fd} is ${what}, not an eventfd; send an eventfd`,
      );
    }
    if (request === "SET_VRING_KICK" && eventfdIsSemaphore(fd) === true) {
      throw new RequestRefused(
        `${request} ring ${index}: fd ${fd} is a semaphore-mode eventfd; send one made ` +
          `without EFD_SEMAPHORE`,
      );
    }
    setNonBlocking(fd, true);
  } catch (e) {
    closeQuietly(fd);
    throw e instanceof SysError ? new RequestRefused(`${request} ring ${index}: ${e.message}`) : e;
  }
}

/** Close `fd`, ignoring that it may already be closed. */
export function closeQuietly(fd: number): void {
  try {
    close(fd);
  } catch {
    // Not open: nothing to release.
  }
}
