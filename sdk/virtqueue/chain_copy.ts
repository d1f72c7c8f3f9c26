/**
 * Copies between a validated {@linkcode DescriptorChain} and a buffer, the
 * same for split and packed rings: the chain's segments already name their
 * region and offset, so no address is translated here.
 *
 * Segments up to 16 bytes are copied byte by byte; longer ones with
 * `Uint8Array.set` from a subarray (a short-lived view: the engine has no
 * copy between two buffers without one).
 *
 * @module
 */

import type { DirtyLog } from "../memory/dirty_log.ts";
import type { DescriptorChain } from "./descriptor.ts";

/** A copy of at most this many bytes is done byte by byte. */
const SMALL_COPY = 16;

/**
 * Copy the chain's readable bytes, from `offset` into them, to `dst`;
 * returns the bytes copied (at most `dst.length`).
 */
export function readChainInto(
  regions: readonly Uint8Array[],
  chain: DescriptorChain,
  dst: Uint8Array,
  offset: number,
): number {
  const lengths = chain.lengths, offsets = chain.offsets, index = chain.regions;
  const cap = dst.length;
  let skip = offset, pos = 0;
  for (let s = 0, n = chain.readable; s < n && pos < cap; s++) {
    let len = lengths[s];
    if (skip >= len) {
      skip -= len;
      continue;
    }
    const from = offsets[s] + skip;
    len -= skip;
    skip = 0;
    const take = len < cap - pos ? len : cap - pos;
    const src = regions[index[s]];
    if (take <= SMALL_COPY) {
      for (let k = 0; k < take; k++) dst[pos + k] = src[from + k];
    } else {
      dst.set(src.subarray(from, from + take), pos);
    }
    pos += take;
  }
  return pos;
}

/**
 * Copy `src` into the chain's writable bytes from `offset`, marking each
 * piece in `log` after writing it; returns the bytes written (less than
 * `src.length` when the buffers are too small).
 */
export function writeChainFrom(
  regions: readonly Uint8Array[],
  chain: DescriptorChain,
  src: Uint8Array,
  offset: number,
  log: DirtyLog | null,
): number {
  const lengths = chain.lengths, offsets = chain.offsets, index = chain.regions;
  const addresses = chain.addresses;
  const total = src.length;
  let skip = offset, pos = 0;
  for (let s = chain.readable, n = chain.count; s < n && pos < total; s++) {
    let len = lengths[s];
    if (skip >= len) {
      skip -= len;
      continue;
    }
    const to = offsets[s] + skip;
    len -= skip;
    const take = len < total - pos ? len : total - pos;
    const dst = regions[index[s]];
    if (take <= SMALL_COPY) {
      for (let k = 0; k < take; k++) dst[to + k] = src[pos + k];
    } else {
      dst.set(src.subarray(pos, pos + take), to);
    }
    if (log !== null) log.mark(addresses[s] + skip, take);
    skip = 0;
    pos += take;
  }
  return pos;
}
