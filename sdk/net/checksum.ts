/**
 * The Internet checksum (RFC 1071) over a range of a caller's buffer, and
 * completing a checksum a virtio-net driver left partial. Nothing here
 * allocates, so a datapath may call it per frame.
 *
 * @module
 */

/**
 * The one's complement sum (RFC 1071) of `length` bytes of `buf` from
 * `offset`, as big-endian 16-bit words, added to `initial` and folded to 16
 * bits, not inverted. An odd trailing byte is padded with zero.
 */
export function onesComplementSum(
  buf: Uint8Array,
  offset: number,
  length: number,
  initial = 0,
): number {
  let sum = initial;
  const end = offset + (length & ~1);
  for (let i = offset; i < end; i += 2) sum += (buf[i] << 8) | buf[i + 1];
  if (length & 1) sum += buf[offset + length - 1] << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum;
}

/**
 * The Internet checksum (RFC 1071) of `length` bytes of `buf` from `offset`
 * (by default all of `buf`): the one's complement of their one's complement
 * sum, `initial` being a sum already folded in (a pseudo-header's).
 * Computed over data that includes a correct checksum it gives 0.
 *
 * @example
 * ```ts
 * import { internetChecksum } from "@vhost-mdev/sdk/net";
 * // RFC 1071 §3's example words
 * const data = new Uint8Array([0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]);
 * console.log(internetChecksum(data).toString(16)); // "220d"
 * ```
 */
export function internetChecksum(
  buf: Uint8Array,
  offset = 0,
  length: number = buf.length - offset,
  initial = 0,
): number {
  return ~onesComplementSum(buf, offset, length, initial) & 0xffff;
}

/**
 * Store the Internet checksum of `length` bytes of `buf` from `start` as a
 * big-endian 16-bit field at `at`, which lies inside that range and is
 * zeroed first (IPv4 RFC 791, ICMP RFC 792).
 */
export function storeInternetChecksum(
  buf: Uint8Array,
  start: number,
  length: number,
  at: number,
): void {
  buf[at] = buf[at + 1] = 0;
  const sum = internetChecksum(buf, start, length);
  buf[at] = sum >>> 8;
  buf[at + 1] = sum & 0xff;
}

/**
 * Complete a checksum a driver left partial (`VIRTIO_NET_HDR_F_NEEDS_CSUM`,
 * virtio 1.2 §5.1.6.2) in the frame at `frame[offset, offset + length)`: the
 * Internet checksum from `csumStart` to the end of the frame, stored at
 * `csumStart + csumOffset`. The driver has already put the pseudo-header sum
 * in that field, so it is included. Returns false (frame untouched) when the
 * offsets do not fit the frame.
 */
export function completeChecksum(
  frame: Uint8Array,
  offset: number,
  length: number,
  csumStart: number,
  csumOffset: number,
): boolean {
  if (csumStart + csumOffset + 2 > length) return false;
  const sum = internetChecksum(frame, offset + csumStart, length - csumStart);
  const at = offset + csumStart + csumOffset;
  frame[at] = sum >>> 8;
  frame[at + 1] = sum & 0xff;
  return true;
}
