/**
 * Test frames both ends of the VFIO example can regenerate from a seed, so
 * each side checks what arrived byte for byte without shipping the expected
 * bytes across: Ethernet frames of EtherType 0x88b5 (IEEE "local
 * experimental"), sizes from 60 to 1514 bytes, a small header naming the
 * direction, index and seed, and pseudo-random payload.
 *
 * @module
 */

/** Which way a frame travels. */
export type FrameDirection = "to-host" | "to-guest";

/** The experimental EtherType the frames carry. */
export const TEST_ETHERTYPE = 0x88b5;

/** MAC address of the guest's NIC in the VFIO example. */
export const GUEST_NIC_MAC = "52:54:00:12:34:57";

/** MAC address the host side uses. */
export const HOST_MAC = "02:00:00:00:00:01";

function macBytes(mac: string): number[] {
  return mac.split(":").map((h) => parseInt(h, 16));
}

/** Length of frame `index` (60..1514, varied so rings see many sizes). */
export function frameLength(index: number): number {
  return 60 + ((index * 389) % 1455);
}

/**
 * Frame `index` of `direction` for `seed`.
 *
 * @example
 * ```ts
 * import { testFrame } from "./frames.ts";
 * const f = testFrame("to-host", 0, 42);
 * console.log(f.length); // 60
 * ```
 */
export function testFrame(direction: FrameDirection, index: number, seed: number): Uint8Array {
  const frame = new Uint8Array(frameLength(index));
  const toHost = direction === "to-host";
  frame.set(macBytes(toHost ? HOST_MAC : GUEST_NIC_MAC), 0);
  frame.set(macBytes(toHost ? GUEST_NIC_MAC : HOST_MAC), 6);
  const v = new DataView(frame.buffer);
  v.setUint16(12, TEST_ETHERTYPE);
  v.setUint8(14, toHost ? 1 : 2);
  v.setUint32(15, index);
  v.setUint32(19, seed >>> 0);
  // xorshift32 over the rest, seeded by (seed, direction, index)
  let x = ((seed >>> 0) ^ (index * 0x9e3779b1) ^ (toHost ? 0x1234567 : 0x7654321)) >>> 0 || 1;
  for (let i = 23; i < frame.length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    frame[i] = x & 0xff;
  }
  return frame;
}

/**
 * Which test frame `bytes` is, or `null` when it is not one of ours (a guest
 * may also send other traffic).
 */
export function identifyFrame(
  bytes: Uint8Array,
): { direction: FrameDirection; index: number; seed: number } | null {
  if (bytes.length < 23) return null;
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (v.getUint16(12) !== TEST_ETHERTYPE) return null;
  const d = v.getUint8(14);
  if (d !== 1 && d !== 2) return null;
  return {
    direction: d === 1 ? "to-host" : "to-guest",
    index: v.getUint32(15),
    seed: v.getUint32(19),
  };
}

/** Index of the first byte where `a` and `b` differ, or -1 when identical. */
export function firstDifference(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}
