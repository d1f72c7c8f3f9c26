/**
 * The packed virtqueue's memory layout (virtio 1.2 §2.8): one descriptor
 * ring both sides write, and two event suppression structures.
 *
 * ```text
 * descriptor ring        (align 16)  num × { addr: u64, len: u32, id: u16, flags: u16 }
 * driver event area      (align 4)   { desc_event_off_wrap: u16, desc_event_flags: u16 }  (driver writes)
 * device event area      (align 4)   { desc_event_off_wrap: u16, desc_event_flags: u16 }  (device writes)
 * ```
 *
 * A descriptor is available when its `AVAIL` flag equals the driver's wrap
 * counter and its `USED` flag does not; the device marks it used by setting
 * both to its own wrap counter. Each side's wrap counter starts at 1 and
 * flips whenever its index passes the end of the ring (§2.8.1). In
 * vhost-user `SET_VRING_ADDR` the descriptor ring comes as the descriptor
 * table, the driver area as the available ring and the device area as the
 * used ring. The queue size need not be a power of two.
 *
 * @module
 */

import { hex } from "../uapi/hex.ts";
import { DESC_SIZE } from "./layout.ts";

/** Descriptor flag: the driver made it available (compared with the driver's wrap counter). */
export const VIRTQ_DESC_F_AVAIL = 1 << 7;
/** Descriptor flag: the device used it (compared with the device's wrap counter). */
export const VIRTQ_DESC_F_USED = 1 << 15;
/** Event suppression: notifications on. */
export const RING_EVENT_FLAGS_ENABLE = 0x0;
/** Event suppression: notifications off. */
export const RING_EVENT_FLAGS_DISABLE = 0x1;
/** Event suppression: notify when the descriptor at `desc_event_off_wrap` is reached (`EVENT_IDX`). */
export const RING_EVENT_FLAGS_DESC = 0x2;
/** Bytes of one event suppression structure. */
export const EVENT_SUPPRESS_SIZE = 4;
/** Required alignment of an event suppression structure. */
export const EVENT_SUPPRESS_ALIGN = 4;
/** Largest packed queue size (indexes are 15 bits, virtio 1.2 §2.8). */
export const MAX_PACKED_QUEUE_SIZE = 32768;

/** Bytes of the descriptor ring of a packed queue of `num` entries. */
export function packedRingSize(num: number): number {
  return DESC_SIZE * num;
}

/** Whether `num` is a valid packed queue size: 1 to 32768. */
export function isValidPackedQueueSize(num: number): boolean {
  return Number.isInteger(num) && num >= 1 && num <= MAX_PACKED_QUEUE_SIZE;
}

/**
 * Where a packed queue's three areas are, as guest-physical addresses. The
 * field names are the split queue's, as vhost-user and the SDK's
 * `VringInfo` carry them.
 */
export interface PackedQueueLayout {
  /** Number of descriptors, 1 to 32768. */
  num: number;
  /** The descriptor ring (16-byte aligned). */
  descAddr: number;
  /** The driver event suppression area (4-byte aligned). */
  availAddr: number;
  /** The device event suppression area (4-byte aligned). */
  usedAddr: number;
}

/** Typed-array views of a packed queue in guest memory (little-endian host order). */
export interface PackedRingViews {
  /** The ring as 4 words per descriptor: addr lo, addr hi, len, id | flags << 16. */
  desc: Uint32Array;
  /** The ring as 8 halfwords per descriptor: [8i + 6] id, [8i + 7] flags. */
  desc16: Uint16Array;
  /** Driver event suppression: [0] off_wrap, [1] flags. */
  driverEvent: Uint16Array;
  /** Device event suppression: [0] off_wrap, [1] flags. */
  deviceEvent: Uint16Array;
}

/**
 * A packed ring's position as one 16-bit value, the form `SET_VRING_BASE`
 * and `GET_VRING_BASE` carry per side: the index in bits 0-14, the wrap
 * counter in bit 15.
 */
export function encodePackedIndex(idx: number, wrap: boolean): number {
  return (idx & 0x7fff) | (wrap ? 0x8000 : 0);
}

/**
 * Check a layout against guest memory and make the views.
 *
 * @throws RangeError for an invalid size, or an area not inside one region
 *   or misaligned, naming the area and its address.
 */
export function packedRingViews(
  regions: readonly { gpa: number; size: number; bytes: Uint8Array }[],
  layout: PackedQueueLayout,
): PackedRingViews {
  const num = layout.num;
  if (!isValidPackedQueueSize(num)) {
    throw new RangeError(`packed queue size ${num} is not in 1..${MAX_PACKED_QUEUE_SIZE}`);
  }
  const area = (name: string, gpa: number, size: number, align: number) => {
    if (!Number.isSafeInteger(gpa) || gpa < 0 || gpa % align !== 0) {
      throw new RangeError(`packed ${name} at ${hex(gpa)} is not ${align}-byte aligned`);
    }
    const r = regions.find((r) =>
      gpa >= r.gpa && gpa - r.gpa < r.size && size <= r.size - (gpa - r.gpa)
    );
    if (!r) {
      throw new RangeError(
        `packed ${name} at ${hex(gpa)} (${size} bytes) is not inside one region of guest memory`,
      );
    }
    const offset = r.bytes.byteOffset + (gpa - r.gpa);
    if (offset % align !== 0) {
      throw new RangeError(`packed ${name} at ${hex(gpa)} is misaligned in host memory`);
    }
    return { buffer: r.bytes.buffer as ArrayBuffer, offset };
  };
  const d = area("descriptor ring", layout.descAddr, packedRingSize(num), 16);
  const drv = area("driver event area", layout.availAddr, EVENT_SUPPRESS_SIZE, 4);
  const dev = area("device event area", layout.usedAddr, EVENT_SUPPRESS_SIZE, 4);
  return {
    desc: new Uint32Array(d.buffer, d.offset, 4 * num),
    desc16: new Uint16Array(d.buffer, d.offset, 8 * num),
    driverEvent: new Uint16Array(drv.buffer, drv.offset, 2),
    deviceEvent: new Uint16Array(dev.buffer, dev.offset, 2),
  };
}
