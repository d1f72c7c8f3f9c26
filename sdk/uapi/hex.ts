/**
 * How the SDK writes addresses, sizes and feature masks in its messages:
 * `0x` and lowercase hex digits, as the kernel and the specs print them.
 *
 * @module
 */

/**
 * `0x…` form of `n`; a value that is no address (negative, not finite) is
 * written as it is, so a message shows what the peer really sent.
 */
export function hex(n: number | bigint): string {
  if (typeof n === "bigint") return n >= 0n ? "0x" + n.toString(16) : String(n);
  return Number.isFinite(n) && n >= 0 ? "0x" + n.toString(16) : String(n);
}
