/**
 * Adding one guest buffer to a {@linkcode DescriptorChain}, the same for
 * split and packed rings: the descriptor rules both layouts share (virtio
 * 1.2 §2.7.4, §2.8.6: readable buffers before writable ones, an address
 * inside guest memory) checked before any byte of the buffer is touched.
 *
 * @module
 */

import { type GuestMemory, TranslationFault } from "../memory/guest_memory.ts";
import { IotlbAccess } from "../uapi/vhost.ts";
import { hex } from "../uapi/hex.ts";
import type { DescriptorChain, DescriptorChainErrorKind } from "./descriptor.ts";
import { VIRTQ_DESC_F_WRITE } from "./layout.ts";

/** 2^32: a descriptor's address is `low + high * TWO_32`. */
export const TWO_32 = 4294967296;
/** An address's high word above this makes the address exceed 2^53 - 1. */
export const MAX_HIGH_WORD = 0x1fffff;

/** Why a buffer cannot join a chain: the error kind and the details. */
export interface BufferFault {
  /** The rule broken, or `miss`: a translation the IOTLB does not have yet. */
  kind: DescriptorChainErrorKind | "miss";
  /** What was wrong, with the values. */
  why: string;
}

/** A descriptor's 64-bit address from its two words, as hex (exact beyond 2^53). */
export function hex64(lo: number, hi: number): string {
  return hi === 0 ? hex(lo) : hex(hi) + lo.toString(16).padStart(8, "0");
}

/**
 * Add the buffer of `len` bytes at device address `lo + hi * 2^32` with
 * descriptor `flags` to `chain`: one segment, or one per region (or IOTLB
 * entry, behind a vIOMMU) when it runs across several; a zero-length
 * buffer adds nothing. Returns null, or why the buffer breaks the rules
 * (nothing the caller may use is added then): kind `miss` when the IOTLB
 * lacks a translation (`memory.missAddress`/`missPerm` say which), which
 * is not the guest's fault. `regionGpa` is `memory`'s regions' addresses,
 * kept by the queue so the hot path reads no objects. The access checked is
 * a read for device-readable buffers and a write for device-writable ones.
 */
export function appendBuffer(
  chain: DescriptorChain,
  memory: GuestMemory,
  regionGpa: Float64Array,
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
  const address = lo + hi * TWO_32;
  if (memory.iotlb === null) {
    // Guest-physical: the common case, one region holds the whole buffer.
    const r = memory.find(address, len);
    if (r >= 0) {
      chain.addSegment(address, len, r, address - regionGpa[r], writable);
      return null;
    }
  }
  const perm = writable ? IotlbAccess.WRITE : IotlbAccess.READ;
  let at = address, left = len;
  while (left > 0) {
    const k = memory.translate(at, left, perm);
    if (k < 0) return bufferFault(memory, address, len, at, writable);
    const offset = memory.offset, take = memory.span;
    chain.addSegment(regionGpa[k] + offset, take, k, offset, writable);
    at += take;
    left -= take;
  }
  return null;
}

/**
 * Find the indirect table of `len` bytes at device address `lo + hi * 2^32`,
 * which the device reads in place: the index of the region holding all of
 * it (its offset there in `memory.offset`), or why it cannot be read (kind
 * `miss` when the IOTLB lacks a translation, as for a buffer).
 */
export function locateIndirectTable(
  memory: GuestMemory,
  lo: number,
  hi: number,
  len: number,
): number | BufferFault {
  const address = lo + hi * TWO_32;
  const r = hi > MAX_HIGH_WORD ? -1 : memory.translateWhole(address, len, IotlbAccess.READ);
  if (r >= 0) return r;
  const why = `indirect table ${memory.iotlb === null ? "gpa" : "iova"} ${
    hex64(lo, hi)
  } length ${len}`;
  const fault = hi > MAX_HIGH_WORD ? TranslationFault.OUTSIDE : memory.fault;
  if (fault === TranslationFault.MISS) return { kind: "miss", why: `${why}: no IOTLB translation` };
  if (fault === TranslationFault.DENIED) {
    return { kind: "access-denied", why: `${why}: the IOTLB does not let the device read it` };
  }
  return {
    kind: "out-of-bounds",
    why: `${why} is not inside one region of guest memory (or one IOTLB mapping)`,
  };
}

/** Why `memory.translate` refused byte `at` of a buffer. */
function bufferFault(
  memory: GuestMemory,
  address: number,
  len: number,
  at: number,
  writable: boolean,
): BufferFault {
  const space = memory.iotlb === null ? "gpa" : "iova";
  const where = `buffer ${space} ${hex(address)} length ${len}: ` +
    (at === address ? "" : `byte ${hex(at)}: `);
  switch (memory.fault) {
    case TranslationFault.MISS:
      return { kind: "miss", why: `${where}no IOTLB translation` };
    case TranslationFault.DENIED:
      return {
        kind: "access-denied",
        why: `${where}the IOTLB maps it ${writable ? "read-only" : "write-only"}, the device ` +
          `would ${writable ? "write" : "read"} it`,
      };
    default:
      return {
        kind: "out-of-bounds",
        why: `${where}not inside guest memory`,
      };
  }
}
