/**
 * Conversions between native pointers and the plain `number` addresses the
 * SDK passes around, and 64-bit fields read and written as two 32-bit
 * halves so that no BigInt is made. User-space addresses on x86-64 are below
 * 2^47, well inside `Number.MAX_SAFE_INTEGER`.
 *
 * @module
 */

const TWO_32 = 0x1_0000_0000;

/** The address of a pointer as a number (0 for null). */
export function addressOf(pointer: Deno.PointerValue): number {
  if (pointer === null) return 0;
  const value = Deno.UnsafePointer.value(pointer);
  const n = Number(value);
  if (!Number.isSafeInteger(n)) {
    throw new RangeError(`pointer 0x${value.toString(16)} is outside the safe integer range`);
  }
  return n;
}

/** A pointer for an address (null for 0). */
export function pointerAt(address: number): Deno.PointerValue {
  return Deno.UnsafePointer.create(BigInt(address));
}

/** Store a non-negative safe integer as a little-endian u64 at `offset`. */
export function setU64(view: DataView, offset: number, value: number): void {
  view.setUint32(offset, value % TWO_32, true);
  view.setUint32(offset + 4, Math.floor(value / TWO_32), true);
}

/** Load a little-endian u64 at `offset` (exact up to 2^53). */
export function getU64(view: DataView, offset: number): number {
  return view.getUint32(offset, true) + view.getUint32(offset + 4, true) * TWO_32;
}

/** Store a pointer as a u64 at `offset` (null stores 0). */
export function setPointer(view: DataView, offset: number, pointer: Deno.PointerValue): void {
  view.setBigUint64(
    offset,
    pointer === null ? 0n : Deno.UnsafePointer.value(pointer),
    true,
  );
}

/**
 * A pointer to the first byte of `buf` that stays valid while `buf` lives.
 * V8 keeps very small typed arrays inside its moving heap; asking for their
 * `buffer` moves the bytes to a fixed backing store first.
 */
export function stablePointer(buf: ArrayBufferView | ArrayBuffer): Deno.PointerValue {
  if (buf.byteLength === 0) return null;
  if (ArrayBuffer.isView(buf)) {
    if (buf.buffer.byteLength === 0) return null;
    return Deno.UnsafePointer.of(buf as ArrayBufferView<ArrayBuffer>);
  }
  return Deno.UnsafePointer.of(buf);
}
