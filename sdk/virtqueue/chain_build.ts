/**
 * Adding one guest buffer to a {@linkcode DescriptorChain}, the same for
 * split and packed rings: the descriptor rules both layouts share (virtio
 * 1.2 §2.7.4, §2.8.6: readable buffers before writable ones, an address
 * inside guest memory) checked before any byte of the buffer is touched.
 *
 * @module
 */

import type { GuestMemory } from "../memory/guest_memory.ts";
import { hex } from "../uapi/hex.ts";
import type { DescriptorChain, DescriptorChainErrorKind } from "./descriptor.ts";
import { VIRTQ_DESC_F_WRITE } from "./layout.ts";

const TWO_32 = 4294967296;
/** An address's high word above this makes the address exceed 2^53 - 1. */
export const MAX_HIGH_WORD = 0x1fffff;

/** Why a buffer cannot join a chain: the error kind and the details. */
export interface BufferFault {
  /** The rule broken. */
  kind: DescriptorChainErrorKind;
  /** What was wrong, with the values. */
  why: string;
}

/** A descriptor's 64-bit address from its two words, as hex (exact beyond 2^53). */
export function hex64(lo: number, hi: number): string {
  return hi === 0 ? hex(lo) : hex(hi) + lo.toString(16).padStart(8, "0");
}

/**
 * Add the buffer of `len` bytes at address `lo + hi * 2^32` with descriptor
 * `flags` to `chain`: one segment, or one per region when it runs across
 * regions adjacent in guest-physical space; a zero-length buffer adds
 * nothing. Returns null, or why the buffer breaks the rules (nothing added
 * then). `regionGpa` and `regionSize` are `memory`'s regions' addresses and
 * sizes, kept by the queue so the hot path reads no objects.
 */
export function appendBuffer(
  chain: DescriptorChain,
  memory: GuestMemory,
  regionGpa: Float64Array,
  regionSize: Float64Array,
  lo: number,
  hi: number,
  len: number,
  flags: number,
): BufferFault | null {
  const writable = (flags & VIRTQ_DESC_F_WRITE) !== 0;
  if (!writable && chain.count > chain.readable) {
    return {
      kind: "write-before-read",
      why: "device-readable descriptor follows a device-writable one",
    };
  }
  if (hi > MAX_HIGH_WORD) {
    return { kind: "out-of-bounds", why: `address ${hex64(lo, hi)} is beyond 2^53` };
  }
  if (len === 0) return null;
  const gpa = lo + hi * TWO_32;
  const r = memory.find(gpa, len);
  if (r >= 0) {
    chain.addSegment(gpa, len, r, gpa - regionGpa[r], writable);
    return null;
  }
  // Not inside one region: split it if it runs across adjacent regions.
  // On a fault the caller empties the chain.
  let at = gpa, left = len;
  while (left > 0) {
    const k = memory.find(at, 1);
    if (k < 0) {
      return {
        kind: "out-of-bounds",
        why: `buffer gpa ${hex(gpa)} length ${len}: ` +
          (at === gpa ? "not inside guest memory" : `byte ${hex(at)} is not inside guest memory`),
      };
    }
    const offset = at - regionGpa[k];
    const room = regionSize[k] - offset;
    const take = left < room ? left : room;
    chain.addSegment(at, take, k, offset, writable);
    at += take;
    left -= take;
  }
  return null;
}
