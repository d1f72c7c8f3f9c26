/**
 * A host's answers to ARP requests (RFC 826) and ICMP echo requests (RFC
 * 792) for its IPv4 address, built on byte offsets into caller buffers so a
 * datapath allocates nothing per frame.
 *
 * @module
 */

import { storeInternetChecksum } from "./checksum.ts";
import {
  ARP_SIZE,
  ArpOp,
  ETHERNET_HEADER_SIZE as ETH_HLEN,
  EtherType,
  IpProtocol,
} from "./ethernet.ts";

const ICMP_ECHO_REPLY = 0;
const ICMP_ECHO_REQUEST = 8;
/** ARP hardware type Ethernet (RFC 826). */
const ARP_HTYPE_ETHERNET = 1;
/** TTL of the replies (Linux's default). */
const REPLY_TTL = 64;
/** Copies up to this size go byte by byte (no subarray object). */
const SMALL_COPY = 64;

/** Room a reply may need: the largest ICMP echo fits an IPv4 packet. */
export const MAX_REPLY_SIZE: number = ETH_HLEN + 65535;

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

/**
 * Build the answer to the frame at `inBuf[inOff, inOff + inLen)` into `out`
 * from `outOff` (which needs {@linkcode MAX_REPLY_SIZE} bytes of room, or
 * the request's length): an ARP reply to an Ethernet/IPv4 ARP request for
 * `ip`, or an ICMP echo reply to an unfragmented echo request addressed to
 * `ip`, both from `mac`. Returns the reply's length, or 0 when the frame
 * gets no answer. Request checksums are not verified; reply checksums are
 * computed in full.
 *
 * @example
 * ```ts
 * import { MAX_REPLY_SIZE, respond } from "@vhost-mdev/sdk/net";
 * const out = new Uint8Array(MAX_REPLY_SIZE);
 * const mac = new Uint8Array([2, 0, 0, 0, 0, 2]), ip = new Uint8Array([10, 0, 0, 2]);
 * console.log(respond(new Uint8Array(60), 0, 60, out, 0, mac, ip)); // 0: not ARP or IPv4
 * ```
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
  if (type === EtherType.ARP) return arpReply(inBuf, inOff, inLen, out, outOff, mac, ip);
  if (type === EtherType.IPV4) return echoReply(inBuf, inOff, inLen, out, outOff, mac, ip);
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
  if (inLen < ETH_HLEN + ARP_SIZE) return 0;
  const a = inOff + ETH_HLEN;
  // Ethernet/IPv4 ARP request (RFC 826): htype 1, ptype 0x0800, hlen 6, plen 4, op 1.
  if (
    be16(inBuf, a) !== ARP_HTYPE_ETHERNET || be16(inBuf, a + 2) !== EtherType.IPV4 ||
    inBuf[a + 4] !== 6 || inBuf[a + 5] !== 4 || be16(inBuf, a + 6) !== ArpOp.REQUEST ||
    !equal(inBuf, a + 24, ip)
  ) {
    return 0;
  }
  copy(out, o, inBuf, a + 8, 6); // to the requester's hardware address
  out.set(mac, o + 6);
  putBe16(out, o + 12, EtherType.ARP);
  const r = o + ETH_HLEN;
  putBe16(out, r, ARP_HTYPE_ETHERNET);
  putBe16(out, r + 2, EtherType.IPV4);
  out[r + 4] = 6;
  out[r + 5] = 4;
  putBe16(out, r + 6, ArpOp.REPLY);
  out.set(mac, r + 8); // sender: us
  out.set(ip, r + 14);
  copy(out, r + 18, inBuf, a + 8, 10); // target: the requester's sha and spa
  return ETH_HLEN + ARP_SIZE;
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
  // IPv4 header (RFC 791): version 4, IHL in words, total length, flags/offset, protocol.
  if (inLen < ETH_HLEN + 20 || inBuf[p] >> 4 !== 4) return 0;
  const ihl = (inBuf[p] & 0x0f) * 4;
  const total = be16(inBuf, p + 2);
  if (ihl < 20 || total < ihl + 8 || ETH_HLEN + total > inLen) return 0;
  // Fragments (MF set or an offset) are not reassembled: no answer.
  if ((be16(inBuf, p + 6) & 0x3fff) !== 0) return 0;
  if (inBuf[p + 9] !== IpProtocol.ICMP || !equal(inBuf, p + 16, ip)) return 0;
  const icmp = p + ihl;
  if (inBuf[icmp] !== ICMP_ECHO_REQUEST || inBuf[icmp + 1] !== 0) return 0;
  const icmpLen = total - ihl;

  copy(out, o, inBuf, inOff + 6, 6); // back to the sender's MAC
  out.set(mac, o + 6);
  putBe16(out, o + 12, EtherType.IPV4);
  const q = o + ETH_HLEN;
  out[q] = 0x45; // IPv4, 20-byte header: request options are not echoed
  out[q + 1] = inBuf[p + 1];
  putBe16(out, q + 2, 20 + icmpLen);
  copy(out, q + 4, inBuf, p + 4, 2); // identification
  putBe16(out, q + 6, 0);
  out[q + 8] = REPLY_TTL;
  out[q + 9] = IpProtocol.ICMP;
  out.set(ip, q + 12);
  copy(out, q + 16, inBuf, p + 12, 4);
  storeInternetChecksum(out, q, 20, q + 10);
  const r = q + 20;
  if (icmpLen <= SMALL_COPY) copy(out, r, inBuf, icmp, icmpLen);
  else out.set(inBuf.subarray(icmp, icmp + icmpLen), r);
  out[r] = ICMP_ECHO_REPLY;
  out[r + 1] = 0;
  storeInternetChecksum(out, r, icmpLen, r + 2);
  return ETH_HLEN + 20 + icmpLen;
}
