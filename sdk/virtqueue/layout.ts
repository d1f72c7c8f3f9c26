/**
 * The split virtqueue's memory layout (virtio 1.2 §2.7): a descriptor table,
 * the available (driver) ring and the used (device) ring, each a separate
 * area of guest memory with its own alignment.
 *
 * ```text
 * descriptor table (align 16)  num × { addr: u64, len: u32, flags: u16, next: u16 }
 * available ring   (align 2)   flags: u16, idx: u16, ring[num]: u16, used_event: u16
 * used ring        (align 4)   flags: u16, idx: u16, ring[num]: { id: u32, len: u32 }, avail_event: u16
 * ```
 *
 * `used_event` and `avail_event` exist only with `VIRTIO_F_EVENT_IDX`; the
 * sizes below include them, since a frontend always reserves the space.
 * All fields are little-endian.
 *
 * @module
 */

import { hex } from "../uapi/hex.ts";

/** This descriptor continues via the `next` field. */
export const VIRTQ_DESC_F_NEXT = 1;
/** The buffer is device write-only (otherwise device read-only). */
export const VIRTQ_DESC_F_WRITE = 2;
/** The buffer holds a table of descriptors (`VIRTIO_F_INDIRECT_DESC`). */
export const VIRTQ_DESC_F_INDIRECT = 4;
/** Driver to device: do not interrupt me when you consume a buffer. */
export const VIRTQ_AVAIL_F_NO_INTERRUPT = 1;
/** Device to driver: do not kick me when you add a buffer. */
export const VIRTQ_USED_F_NO_NOTIFY = 1;

/** Bytes of one descriptor (`struct virtq_desc`). */
export const DESC_SIZE = 16;
/** Bytes of one used element (`struct virtq_used_elem`). */
export const USED_ELEM_SIZE = 8;
/** Largest queue size of a split virtqueue (virtio 1.2 §2.7). */
export const MAX_QUEUE_SIZE = 32768;

/** Required alignment of the descriptor table. */
export const DESC_ALIGN = 16;
/** Required alignment of the available ring. */
export const AVAIL_ALIGN = 2;
/** Required alignment of the used ring. */
export const USED_ALIGN = 4;

/** Bytes of the descriptor table of a queue of `num` entries. */
export function descTableSize(num: number): number {
  return DESC_SIZE * num;
}

/**
 * Bytes of the available ring, including `used_event` unless `eventIdx` is
 * false (the field exists only with `VIRTIO_F_EVENT_IDX`, virtio 1.2 §2.7.6).
 */
export function availRingSize(num: number, eventIdx = true): number {
  return (eventIdx ? 6 : 4) + 2 * num;
}

/**
 * Bytes of the used ring, including `avail_event` unless `eventIdx` is
 * false (virtio 1.2 §2.7.8).
 */
export function usedRingSize(num: number, eventIdx = true): number {
  return (eventIdx ? 6 : 4) + USED_ELEM_SIZE * num;
}

/** Byte offset of `used_event` within the available ring. */
export function usedEventOffset(num: number): number {
  return 4 + 2 * num;
}

/** Byte offset of `avail_event` within the used ring. */
export function availEventOffset(num: number): number {
  return 4 + USED_ELEM_SIZE * num;
}

/** Whether `num` is a valid split queue size: a power of two from 1 to 32768. */
export function isValidQueueSize(num: number): boolean {
  return Number.isInteger(num) && num >= 1 && num <= MAX_QUEUE_SIZE && (num & (num - 1)) === 0;
}

/**
 * The notification test of virtio 1.2 §2.7 (`vring_need_event`): after
 * moving an index from `oldIdx` to `newIdx`, the other side asked to be told
 * once the index passes `eventIdx`. All arithmetic is modulo 2^16, so it is
 * right across the wrap from 65535 to 0.
 *
 * @example
 * ```ts
 * import { vringNeedEvent } from "@vhost-mdev/sdk";
 * vringNeedEvent(65535, 0, 65535); // true: the index just passed 65535
 * vringNeedEvent(10, 10, 9);       // false: index 10 not yet passed
 * ```
 */
export function vringNeedEvent(eventIdx: number, newIdx: number, oldIdx: number): boolean {
  return ((newIdx - eventIdx - 1) & 0xffff) < ((newIdx - oldIdx) & 0xffff);
}

/** Where a split queue's three areas are, as guest-physical addresses. */
export interface SplitQueueLayout {
  /** Number of descriptors: a power of two from 1 to 32768. */
  num: number;
  /** Guest-physical address of the descriptor table (16-byte aligned). */
  descAddr: number;
  /** Guest-physical address of the available ring (2-byte aligned). */
  availAddr: number;
  /** Guest-physical address of the used ring (4-byte aligned). */
  usedAddr: number;
}

/**
 * Typed-array views of a queue's rings in guest memory. Little-endian host
 * order is assumed (x86-64, little-endian Arm), which is virtio's order.
 */
export interface RingViews {
  /** The descriptor table as 4 words per descriptor: addr lo, addr hi, len, flags | next << 16. */
  desc: Uint32Array;
  /** The available ring: [0] flags, [1] idx, [2 + i] ring[i], [2 + num] used_event. */
  avail: Uint16Array;
  /** The used ring's 16-bit fields: [0] flags, [1] idx, [2 + 4 * num] avail_event. */
  used: Uint16Array;
  /** The used elements: [2 * i] id, [2 * i + 1] len. */
  usedElems: Uint32Array;
}

/**
 * Check a layout against guest memory and make the views both sides use.
 * Each area must lie inside one region and be aligned as virtio requires,
 * also in host memory (it is when the region's host mapping keeps the
 * frontend's page offsets, as every mapping of the frontend's fd does).
 *
 * @throws RangeError for an invalid queue size, or an area that is not
 *   inside one region or misaligned, naming the area and its address.
 */
export function ringViews(
  regions: readonly { gpa: number; size: number; bytes: Uint8Array }[],
  layout: SplitQueueLayout,
): RingViews {
  const { num } = layout;
  if (!isValidQueueSize(num)) {
    throw new RangeError(`queue size ${num} is not a power of two from 1 to ${MAX_QUEUE_SIZE}`);
  }
  const area = (name: string, gpa: number, size: number, align: number): [ArrayBuffer, number] => {
    const what = `${name} at gpa ${hex(gpa)} (${size} bytes)`;
    if (!Number.isSafeInteger(gpa) || gpa < 0) throw new RangeError(`${what}: invalid address`);
    if (gpa % align !== 0) throw new RangeError(`${what}: not ${align}-byte aligned`);
    const r = regions.find((r) =>
      gpa >= r.gpa && gpa - r.gpa < r.size && size <= r.size - (gpa - r.gpa)
    );
    if (r === undefined) throw new RangeError(`${what}: not inside one region of guest memory`);
    const byteOffset = r.bytes.byteOffset + (gpa - r.gpa);
    if (byteOffset % align !== 0) {
      throw new RangeError(`${what}: its host address is not ${align}-byte aligned`);
    }
    return [r.bytes.buffer as ArrayBuffer, byteOffset];
  };
  const [db, doff] = area("descriptor table", layout.descAddr, descTableSize(num), DESC_ALIGN);
  const [ab, aoff] = area("available ring", layout.availAddr, availRingSize(num), AVAIL_ALIGN);
  const [ub, uoff] = area("used ring", layout.usedAddr, usedRingSize(num), USED_ALIGN);
  return {
    desc: new Uint32Array(db, doff, 4 * num),
    avail: new Uint16Array(ab, aoff, 3 + num),
    used: new Uint16Array(ub, uoff, 3 + 4 * num),
    usedElems: new Uint32Array(ub, uoff + 4, 2 * num),
  };
}
