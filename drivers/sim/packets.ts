/**
 * The frames the sim device makes or answers: the responder's ARP and ICMP
 * echo replies, the source mode's UDP frame, and completing a partial
 * checksum the guest left to the device. Everything works on byte offsets
 * into caller buffers, so the datapath allocates nothing per frame.
 *
 * @module
 */

const ETH_HLEN = 14;
const ETHERTYPE_IPV4 = 0x0800;
const ETHERTYPE_ARP = 0x0806;
const ARP_LEN = 28;
const IPPROTO_ICMP = 1;
const IPPROTO_UDP = 17;
const ICMP_ECHO_REPLY = 0;
const ICMP_ECHO_REQUEST = 8;
/** TTL of the replies the responder sends (Linux's default). */
const REPLY_TTL = 64;

/** Room a reply may need: the largest ICMP echo fits an IPv4 packet. */
export const MAX_REPLY_SIZE: number = ETH_HLEN + 65535;

/**
 * The one's complement sum (RFC 1071) of `length` bytes of `buf` from
 * `offset`, as big-endian 16-bit words, folded to 16 bits, not inverted.
 * An odd trailing byte is padded with zero.
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

function be16(buf: Uint8Array, at: number): number {
  return (buf[at] << 8) | buf[at + 1];
}

function putBe16(buf: Uint8Array, at: number, v: number): void {
  buf[at] = v >>> 8;
  buf[at + 1] = v & 0xff;
}

function equal(a: Uint8Array, at: number, b: Uint8Array): boolean {
  for (let i = 0; i < b.length; i++) if (a[at + i] !== b[i]) return false;
  return true;
}

function copy(dst: Uint8Array, to: number, src: Uint8Array, from: number, n: number): void {
  for (let i = 0; i < n; i++) dst[to + i] = src[from + i];
}

/** Store the Internet checksum of `length` bytes from `start` at `at` (field zeroed first). */
function storeChecksum(buf: Uint8Array, start: number, length: number, at: number): void {
  buf[at] = buf[at + 1] = 0;
  putBe16(buf, at, ~onesComplementSum(buf, start, length) & 0xffff);
}

/**
 * Complete a checksum the guest left partial (`VIRTIO_NET_HDR_F_NEEDS_CSUM`,
 * virtio 1.2 §5.1.6.2): the one's complement of the sum from `csumStart` to
 * the end of the frame, stored at `csumStart + csumOffset`. The guest has
 * already put the pseudo-header sum in that field, so it is included.
 * Returns false (frame untouched) when the offsets do not fit the frame.
 */
export function completeChecksum(
  frame: Uint8Array,
  offset: number,
  length: number,
  csumStart: number,
  csumOffset: number,
): boolean {
  if (csumStart + csumOffset + 2 > length) return false;
  const sum = onesComplementSum(frame, offset + csumStart, length - csumStart);
  putBe16(frame, offset + csumStart + csumOffset, ~sum & 0xffff);
  return true;
}

/**
 * Build the responder's answer to the frame at `inBuf[inOff, inOff + inLen)`
 * into `out` from `outOff` (which needs {@linkcode MAX_REPLY_SIZE} bytes of
 * room): an ARP reply to an ARP request for `ip`, or an ICMP echo reply to
 * an unfragmented echo request addressed to `ip`. Returns the reply's length,
 * or 0 when the frame gets no answer. Request checksums are not verified;
 * reply checksums are computed in full.
 */
export function respond(
  inBuf: Uint8Array,
  inOff: number,
  inLen: number,
  out: Uint8Array,
  outOff: number,
  mac: Uint8Array,
  ip: Uint8Array,
): number {
  if (inLen < ETH_HLEN) return 0;
  const type = be16(inBuf, inOff + 12);
  if (type === ETHERTYPE_ARP) return arpReply(inBuf, inOff, inLen, out, outOff, mac, ip);
  if (type === ETHERTYPE_IPV4) return echoReply(inBuf, inOff, inLen, out, outOff, mac, ip);
  return 0;
}

function arpReply(
  inBuf: Uint8Array,
  inOff: number,
  inLen: number,
  out: Uint8Array,
  o: number,
  mac: Uint8Array,
  ip: Uint8Array,
): number {
  if (inLen < ETH_HLEN + ARP_LEN) return 0;
  const a = inOff + ETH_HLEN;
  // Ethernet/IPv4 ARP request (RFC 826): htype 1, ptype 0x0800, hlen 6, plen 4, op 1.
  if (
    be16(inBuf, a) !== 1 || be16(inBuf, a + 2) !== ETHERTYPE_IPV4 || inBuf[a + 4] !== 6 ||
    inBuf[a + 5] !== 4 || be16(inBuf, a + 6) !== 1 || !equal(inBuf, a + 24, ip)
  ) {
    return 0;
  }
  copy(out, o, inBuf, a + 8, 6); // to the requester's hardware address
  out.set(mac, o + 6);
  putBe16(out, o + 12, ETHERTYPE_ARP);
  const r = o + ETH_HLEN;
  putBe16(out, r, 1);
  putBe16(out, r + 2, ETHERTYPE_IPV4);
  out[r + 4] = 6;
  out[r + 5] = 4;
  putBe16(out, r + 6, 2);
  out.set(mac, r + 8); // sender: us
  out.set(ip, r + 14);
  copy(out, r + 18, inBuf, a + 8, 10); // target: the requester's sha and spa
  return ETH_HLEN + ARP_LEN;
}

function echoReply(
  inBuf: Uint8Array,
  inOff: number,
  inLen: number,
  out: Uint8Array,
  o: number,
  mac: Uint8Array,
  ip: Uint8Array,
): number {
  const p = inOff + ETH_HLEN;
  if (inLen < ETH_HLEN + 20 || inBuf[p] >> 4 !== 4) return 0;
  const ihl = (inBuf[p] & 0x0f) * 4;
  const total = be16(inBuf, p + 2);
  if (ihl < 20 || total < ihl + 8 || ETH_HLEN + total > inLen) return 0;
  // Fragments (MF set or an offset) are not reassembled: no answer.
  if ((be16(inBuf, p + 6) & 0x3fff) !== 0) return 0;
  if (inBuf[p + 9] !== IPPROTO_ICMP || !equal(inBuf, p + 16, ip)) return 0;
  const icmp = p + ihl;
  if (inBuf[icmp] !== ICMP_ECHO_REQUEST || inBuf[icmp + 1] !== 0) return 0;
  const icmpLen = total - ihl;

  copy(out, o, inBuf, inOff + 6, 6); // back to the sender's MAC
  out.set(mac, o + 6);
  putBe16(out, o + 12, ETHERTYPE_IPV4);
  const q = o + ETH_HLEN;
  out[q] = 0x45; // IPv4, 20-byte header: request options are not echoed
  out[q + 1] = inBuf[p + 1];
  putBe16(out, q + 2, 20 + icmpLen);
  copy(out, q + 4, inBuf, p + 4, 2); // identification
  putBe16(out, q + 6, 0);
  out[q + 8] = REPLY_TTL;
  out[q + 9] = IPPROTO_ICMP;
  out.set(ip, q + 12);
  copy(out, q + 16, inBuf, p + 12, 4);
  storeChecksum(out, q, 20, q + 10);
  const r = q + 20;
  if (icmpLen <= 64) copy(out, r, inBuf, icmp, icmpLen);
  else out.set(inBuf.subarray(icmp, icmp + icmpLen), r);
  out[r] = ICMP_ECHO_REPLY;
  out[r + 1] = 0;
  storeChecksum(out, r, icmpLen, r + 2);
  return ETH_HLEN + 20 + icmpLen;
}

/** Source MAC of generated frames: a locally administered address. */
export const SOURCE_PEER_MAC: Uint8Array = new Uint8Array([0x02, 0, 0, 0, 0, 0x01]);

/**
 * The frame source mode sends: `size` bytes of Ethernet + IPv4 + UDP from
 * 198.18.0.1:9 to 198.18.0.2:9 (the benchmarking range, RFC 2544), addressed
 * to `dstMac`, with a valid IPv4 header checksum, UDP checksum 0 (none, as
 * IPv4 allows) and a payload of incrementing bytes.
 *
 * @param size 42..65535 bytes.
 */
export function sourceFrame(size: number, dstMac: Uint8Array): Uint8Array {
  if (!Number.isInteger(size) || size < ETH_HLEN + 28 || size > ETH_HLEN + 65535) {
    throw new RangeError(`frame size ${size} is not within 42..${ETH_HLEN + 65535}`);
  }
  const f = new Uint8Array(size);
  f.set(dstMac, 0);
  f.set(SOURCE_PEER_MAC, 6);
  putBe16(f, 12, ETHERTYPE_IPV4);
  const q = ETH_HLEN;
  f[q] = 0x45;
  putBe16(f, q + 2, size - ETH_HLEN);
  f[q + 8] = REPLY_TTL;
  f[q + 9] = IPPROTO_UDP;
  f.set([198, 18, 0, 1], q + 12);
  f.set([198, 18, 0, 2], q + 16);
  storeChecksum(f, q, 20, q + 10);
  const u = q + 20;
  putBe16(f, u, 9);
  putBe16(f, u + 2, 9);
  putBe16(f, u + 4, size - u);
  for (let i = u + 8; i < size; i++) f[i] = i & 0xff;
  return f;
}
