/**
 * Ethernet frames for tests: build and parse Ethernet II, ARP (RFC 826),
 * IPv4 (RFC 791) with its header checksum, ICMP echo (RFC 792) and UDP
 * (RFC 768). MAC addresses are strings
 * (`"02:00:00:00:00:01"`), IPv4 addresses dotted quads (`"10.0.0.1"`). All
 * multi-byte fields are big-endian (network order). Parsers treat frames as
 * untrusted: a short or inconsistent frame throws a {@linkcode FrameError}
 * naming the field. The checksum, the protocol numbers and the responder
 * are `@vhost-mdev/sdk/net`'s, re-exported here.
 *
 * @example Answer a ping
 * ```ts
 * import { buildIcmpEcho, parseIcmpEcho, respond } from "@vhost-mdev/testing";
 *
 * const me = { mac: "02:00:00:00:00:02", ip: "10.0.0.2" };
 * const ping = buildIcmpEcho({
 *   srcMac: "02:00:00:00:00:01", dstMac: me.mac, srcIp: "10.0.0.1", dstIp: me.ip,
 *   type: "request", id: 7, seq: 1, data: new Uint8Array([1, 2, 3]),
 * });
 * const pong = respond(ping, me)!;
 * console.log(parseIcmpEcho(pong).type); // "reply"
 * ```
 *
 * @module
 */

import { internetChecksum } from "@vhost-mdev/sdk/net";
import { ARP_SIZE, ArpOp, ETHERNET_HEADER_SIZE, EtherType, IpProtocol } from "@vhost-mdev/sdk/net";
import { MAX_REPLY_SIZE, respond as respondInto } from "@vhost-mdev/sdk/net";

export { ARP_SIZE, ArpOp, ETHERNET_HEADER_SIZE, EtherType, internetChecksum, IpProtocol };

/** Smallest Ethernet frame without its FCS; shorter frames are padded. */
export const ETHERNET_MIN_FRAME = 60;
/** The broadcast MAC address. */
export const BROADCAST_MAC = "ff:ff:ff:ff:ff:ff";

/** A frame or packet was too short or inconsistent. */
export class FrameError extends Error {
  /**
   * Create the error.
   *
   * @param message What was wrong, naming the field.
   */
  constructor(message: string) {
    super(message);
    this.name = "FrameError";
  }
}

/** Parse `"aa:bb:cc:dd:ee:ff"` into 6 bytes. */
export function parseMac(mac: string): Uint8Array {
  const parts = mac.split(":");
  if (parts.length !== 6 || parts.some((p) => !/^[0-9a-fA-F]{2}$/.test(p))) {
    throw new FrameError(`"${mac}" is not a MAC address (aa:bb:cc:dd:ee:ff)`);
  }
  return new Uint8Array(parts.map((p) => parseInt(p, 16)));
}

/** Format 6 bytes (at `offset`) as `"aa:bb:cc:dd:ee:ff"`. */
export function formatMac(bytes: Uint8Array, offset = 0): string {
  const out: string[] = [];
  for (let i = 0; i < 6; i++) out.push(bytes[offset + i].toString(16).padStart(2, "0"));
  return out.join(":");
}

/** Parse a dotted-quad IPv4 address into 4 bytes. */
export function parseIpv4Address(ip: string): Uint8Array {
  const parts = ip.split(".");
  if (parts.length !== 4 || parts.some((p) => !/^\d{1,3}$/.test(p) || Number(p) > 255)) {
    throw new FrameError(`"${ip}" is not an IPv4 address`);
  }
  return new Uint8Array(parts.map(Number));
}

/** Format 4 bytes (at `offset`) as a dotted quad. */
export function formatIpv4Address(bytes: Uint8Array, offset = 0): string {
  return `${bytes[offset]}.${bytes[offset + 1]}.${bytes[offset + 2]}.${bytes[offset + 3]}`;
}

function need(data: Uint8Array, size: number, what: string): DataView {
  if (data.length < size) {
    throw new FrameError(`${what}: ${data.length} bytes, need at least ${size}`);
  }
  return new DataView(data.buffer, data.byteOffset, data.byteLength);
}

/** A parsed Ethernet II frame. */
export interface EthernetFrame {
  /** Destination MAC. */
  dst: string;
  /** Source MAC. */
  src: string;
  /** EtherType (after one 802.1Q tag, if present). */
  etherType: number;
  /** VLAN ID of an 802.1Q tag, or -1. */
  vlan: number;
  /** The bytes after the header (including any padding). */
  payload: Uint8Array;
}

/** What {@linkcode buildEthernet} needs. */
export interface EthernetSpec {
  /** Destination MAC. */
  dst: string;
  /** Source MAC. */
  src: string;
  /** EtherType. */
  etherType: number;
  /** Payload. */
  payload: Uint8Array;
  /** Pad with zeros up to this size (default 60, the minimum frame). */
  minSize?: number;
}

/** Build an Ethernet II frame (no FCS), zero-padded to `minSize`. */
export function buildEthernet(spec: EthernetSpec): Uint8Array {
  const len = Math.max(
    ETHERNET_HEADER_SIZE + spec.payload.length,
    spec.minSize ?? ETHERNET_MIN_FRAME,
  );
  const f = new Uint8Array(len);
  f.set(parseMac(spec.dst), 0);
  f.set(parseMac(spec.src), 6);
  new DataView(f.buffer).setUint16(12, spec.etherType);
  f.set(spec.payload, ETHERNET_HEADER_SIZE);
  return f;
}

/** Parse an Ethernet II frame, stepping over one 802.1Q tag. */
export function parseEthernet(frame: Uint8Array): EthernetFrame {
  const v = need(frame, ETHERNET_HEADER_SIZE, "Ethernet header");
  let etherType = v.getUint16(12);
  let vlan = -1;
  let off = ETHERNET_HEADER_SIZE;
  if (etherType === EtherType.VLAN) {
    need(frame, ETHERNET_HEADER_SIZE + 4, "802.1Q-tagged Ethernet header");
    vlan = v.getUint16(14) & 0x0fff;
    etherType = v.getUint16(16);
    off += 4;
  }
  return {
    dst: formatMac(frame, 0),
    src: formatMac(frame, 6),
    etherType,
    vlan,
    payload: frame.subarray(off),
  };
}

/** An ARP packet for IPv4 over Ethernet. */
export interface ArpPacket {
  /** 1 = request, 2 = reply. */
  op: number;
  /** Sender hardware address. */
  senderMac: string;
  /** Sender protocol address. */
  senderIp: string;
  /** Target hardware address (zero in a request). */
  targetMac: string;
  /** Target protocol address. */
  targetIp: string;
}

/** Encode an ARP packet (Ethernet hardware, IPv4 protocol). */
export function encodeArp(p: ArpPacket): Uint8Array {
  const b = new Uint8Array(ARP_SIZE);
  const v = new DataView(b.buffer);
  v.setUint16(0, 1); // hardware type: Ethernet
  v.setUint16(2, EtherType.IPV4);
  b[4] = 6;
  b[5] = 4;
  v.setUint16(6, p.op);
  b.set(parseMac(p.senderMac), 8);
  b.set(parseIpv4Address(p.senderIp), 14);
  b.set(parseMac(p.targetMac), 18);
  b.set(parseIpv4Address(p.targetIp), 24);
  return b;
}

/** Parse an ARP packet (the Ethernet payload); only Ethernet/IPv4 ARP is accepted. */
export function parseArp(payload: Uint8Array): ArpPacket {
  const v = need(payload, ARP_SIZE, "ARP packet");
  if (
    v.getUint16(0) !== 1 || v.getUint16(2) !== EtherType.IPV4 || payload[4] !== 6 ||
    payload[5] !== 4
  ) {
    throw new FrameError("ARP packet: not Ethernet/IPv4 (htype 1, ptype 0x0800, hlen 6, plen 4)");
  }
  return {
    op: v.getUint16(6),
    senderMac: formatMac(payload, 8),
    senderIp: formatIpv4Address(payload, 14),
    targetMac: formatMac(payload, 18),
    targetIp: formatIpv4Address(payload, 24),
  };
}

/** A broadcast "who has `targetIp`? tell `srcIp`" frame. */
export function buildArpRequest(
  spec: { srcMac: string; srcIp: string; targetIp: string },
): Uint8Array {
  return buildEthernet({
    dst: BROADCAST_MAC,
    src: spec.srcMac,
    etherType: EtherType.ARP,
    payload: encodeArp({
      op: ArpOp.REQUEST,
      senderMac: spec.srcMac,
      senderIp: spec.srcIp,
      targetMac: "00:00:00:00:00:00",
      targetIp: spec.targetIp,
    }),
  });
}

/** A unicast "`srcIp` is at `srcMac`" frame to `dstMac`/`dstIp`. */
export function buildArpReply(
  spec: { srcMac: string; srcIp: string; dstMac: string; dstIp: string },
): Uint8Array {
  return buildEthernet({
    dst: spec.dstMac,
    src: spec.srcMac,
    etherType: EtherType.ARP,
    payload: encodeArp({
      op: ArpOp.REPLY,
      senderMac: spec.srcMac,
      senderIp: spec.srcIp,
      targetMac: spec.dstMac,
      targetIp: spec.dstIp,
    }),
  });
}

/** A parsed IPv4 packet. */
export interface Ipv4Packet {
  /** Source address. */
  src: string;
  /** Destination address. */
  dst: string;
  /** Protocol number ({@linkcode IpProtocol}). */
  protocol: number;
  /** Time to live. */
  ttl: number;
  /** Identification field. */
  id: number;
  /** Header length in bytes. */
  headerLength: number;
  /** Total length from the header. */
  totalLength: number;
  /** The payload (exactly `totalLength - headerLength` bytes; Ethernet padding removed). */
  payload: Uint8Array;
}

/** What {@linkcode encodeIpv4} needs. */
export interface Ipv4Spec {
  /** Source address. */
  src: string;
  /** Destination address. */
  dst: string;
  /** Protocol number. */
  protocol: number;
  /** Payload. */
  payload: Uint8Array;
  /** Time to live (default 64). */
  ttl?: number;
  /** Identification (default 0). */
  id?: number;
}

/** Encode an IPv4 packet with a 20-byte header, don't-fragment set, checksum filled. */
export function encodeIpv4(spec: Ipv4Spec): Uint8Array {
  const total = 20 + spec.payload.length;
  if (total > 0xffff) throw new FrameError(`IPv4 packet of ${total} bytes exceeds 65535`);
  const b = new Uint8Array(total);
  const v = new DataView(b.buffer);
  b[0] = 0x45;
  v.setUint16(2, total);
  v.setUint16(4, spec.id ?? 0);
  v.setUint16(6, 0x4000);
  b[8] = spec.ttl ?? 64;
  b[9] = spec.protocol;
  b.set(parseIpv4Address(spec.src), 12);
  b.set(parseIpv4Address(spec.dst), 16);
  v.setUint16(10, internetChecksum(b.subarray(0, 20)));
  b.set(spec.payload, 20);
  return b;
}

/** Parse an IPv4 packet (the Ethernet payload), verifying version, lengths and header checksum. */
export function parseIpv4(data: Uint8Array): Ipv4Packet {
  const v = need(data, 20, "IPv4 header");
  if (data[0] >> 4 !== 4) throw new FrameError(`IPv4 header: version ${data[0] >> 4}, expected 4`);
  const headerLength = (data[0] & 0xf) * 4;
  if (headerLength < 20) throw new FrameError(`IPv4 header: IHL ${headerLength / 4} is below 5`);
  need(data, headerLength, "IPv4 header with options");
  const totalLength = v.getUint16(2);
  if (totalLength < headerLength || totalLength > data.length) {
    throw new FrameError(
      `IPv4 header: total length ${totalLength} outside ${headerLength}..${data.length}`,
    );
  }
  if (internetChecksum(data.subarray(0, headerLength)) !== 0) {
    throw new FrameError("IPv4 header: bad header checksum");
  }
  return {
    src: formatIpv4Address(data, 12),
    dst: formatIpv4Address(data, 16),
    protocol: data[9],
    ttl: data[8],
    id: v.getUint16(4),
    headerLength,
    totalLength,
    payload: data.subarray(headerLength, totalLength),
  };
}

/** ICMP echo request or reply, and its Ethernet/IPv4 envelope. */
export interface IcmpEcho {
  /** Request (type 8) or reply (type 0). */
  type: "request" | "reply";
  /** Identifier. */
  id: number;
  /** Sequence number. */
  seq: number;
  /** Data after the 8-byte ICMP header. */
  data: Uint8Array;
  /** Source MAC of the frame. */
  srcMac: string;
  /** Destination MAC of the frame. */
  dstMac: string;
  /** Source IPv4 address. */
  srcIp: string;
  /** Destination IPv4 address. */
  dstIp: string;
}

/** Build an Ethernet frame carrying an ICMP echo request or reply, checksums filled. */
export function buildIcmpEcho(spec: IcmpEcho & { ttl?: number; ipId?: number }): Uint8Array {
  const icmp = new Uint8Array(8 + spec.data.length);
  const v = new DataView(icmp.buffer);
  icmp[0] = spec.type === "request" ? 8 : 0;
  v.setUint16(4, spec.id);
  v.setUint16(6, spec.seq);
  icmp.set(spec.data, 8);
  v.setUint16(2, internetChecksum(icmp));
  return buildEthernet({
    dst: spec.dstMac,
    src: spec.srcMac,
    etherType: EtherType.IPV4,
    payload: encodeIpv4({
      src: spec.srcIp,
      dst: spec.dstIp,
      protocol: IpProtocol.ICMP,
      payload: icmp,
      ttl: spec.ttl,
      id: spec.ipId,
    }),
  });
}

/**
 * Parse an Ethernet frame carrying an ICMP echo request or reply, verifying
 * both checksums.
 *
 * @throws FrameError when it is anything else or damaged.
 */
export function parseIcmpEcho(frame: Uint8Array): IcmpEcho {
  const eth = parseEthernet(frame);
  if (eth.etherType !== EtherType.IPV4) {
    throw new FrameError(`ICMP echo: EtherType 0x${eth.etherType.toString(16)} is not IPv4`);
  }
  const ip = parseIpv4(eth.payload);
  if (ip.protocol !== IpProtocol.ICMP) {
    throw new FrameError(`ICMP echo: IP protocol ${ip.protocol}`);
  }
  const icmp = ip.payload;
  const v = need(icmp, 8, "ICMP header");
  if (icmp[0] !== 8 && icmp[0] !== 0) throw new FrameError(`ICMP type ${icmp[0]} is not an echo`);
  if (icmp[1] !== 0) throw new FrameError(`ICMP echo: code ${icmp[1]}, expected 0`);
  if (internetChecksum(icmp) !== 0) throw new FrameError("ICMP echo: bad checksum");
  return {
    type: icmp[0] === 8 ? "request" : "reply",
    id: v.getUint16(4),
    seq: v.getUint16(6),
    data: icmp.subarray(8),
    srcMac: eth.src,
    dstMac: eth.dst,
    srcIp: ip.src,
    dstIp: ip.dst,
  };
}

/** A UDP datagram in its Ethernet/IPv4 envelope. */
export interface UdpDatagram {
  /** Source MAC of the frame. */
  srcMac: string;
  /** Destination MAC of the frame. */
  dstMac: string;
  /** Source IPv4 address. */
  srcIp: string;
  /** Destination IPv4 address. */
  dstIp: string;
  /** Source port. */
  srcPort: number;
  /** Destination port. */
  dstPort: number;
  /** Payload. */
  data: Uint8Array;
}

/**
 * Build an Ethernet frame carrying a UDP datagram. The UDP checksum is
 * filled (pseudo-header included); `minSize` pads the frame (default 60).
 */
export function buildUdp(spec: UdpDatagram & { ttl?: number; minSize?: number }): Uint8Array {
  const udp = new Uint8Array(8 + spec.data.length);
  const v = new DataView(udp.buffer);
  v.setUint16(0, spec.srcPort);
  v.setUint16(2, spec.dstPort);
  v.setUint16(4, udp.length);
  udp.set(spec.data, 8);
  v.setUint16(6, udpChecksum(spec.srcIp, spec.dstIp, udp) || 0xffff);
  return buildEthernet({
    dst: spec.dstMac,
    src: spec.srcMac,
    etherType: EtherType.IPV4,
    payload: encodeIpv4({
      src: spec.srcIp,
      dst: spec.dstIp,
      protocol: IpProtocol.UDP,
      payload: udp,
      ttl: spec.ttl,
    }),
    minSize: spec.minSize,
  });
}

function udpChecksum(src: string, dst: string, udp: Uint8Array): number {
  const pseudo = new Uint8Array(12);
  pseudo.set(parseIpv4Address(src), 0);
  pseudo.set(parseIpv4Address(dst), 4);
  pseudo[9] = IpProtocol.UDP;
  new DataView(pseudo.buffer).setUint16(10, udp.length);
  const partial = ~internetChecksum(pseudo) & 0xffff;
  return internetChecksum(udp, 0, udp.length, partial);
}

/**
 * Parse an Ethernet frame carrying a UDP datagram. The UDP checksum is
 * verified when present (non-zero).
 *
 * @throws FrameError when it is anything else or damaged.
 */
export function parseUdp(frame: Uint8Array): UdpDatagram {
  const eth = parseEthernet(frame);
  if (eth.etherType !== EtherType.IPV4) {
    throw new FrameError(`UDP: EtherType 0x${eth.etherType.toString(16)} is not IPv4`);
  }
  const ip = parseIpv4(eth.payload);
  if (ip.protocol !== IpProtocol.UDP) throw new FrameError(`UDP: IP protocol ${ip.protocol}`);
  const v = need(ip.payload, 8, "UDP header");
  const len = v.getUint16(4);
  if (len < 8 || len > ip.payload.length) {
    throw new FrameError(`UDP header: length ${len} outside 8..${ip.payload.length}`);
  }
  const udp = ip.payload.subarray(0, len);
  if (v.getUint16(6) !== 0 && udpChecksum(ip.src, ip.dst, udp) !== 0) {
    throw new FrameError("UDP: bad checksum");
  }
  return {
    srcMac: eth.src,
    dstMac: eth.dst,
    srcIp: ip.src,
    dstIp: ip.dst,
    srcPort: v.getUint16(0),
    dstPort: v.getUint16(2),
    data: udp.subarray(8),
  };
}

/** Who a responder is. */
export interface ResponderIdentity {
  /** Its MAC address. */
  mac: string;
  /** Its IPv4 address. */
  ip: string;
}

/**
 * What a host at `me` answers to `frame`: an ARP reply to an ARP request for
 * `me.ip`, an ICMP echo reply to an echo request addressed to `me.ip` (same
 * id, sequence and data), otherwise `null`. Malformed frames get `null`.
 * A copy of the answer of `@vhost-mdev/sdk/net`'s allocation-free
 * `respond`, which the sim device runs.
 */
export function respond(frame: Uint8Array, me: ResponderIdentity): Uint8Array | null {
  let mac: Uint8Array, ip: Uint8Array;
  try {
    mac = parseMac(me.mac);
    ip = parseIpv4Address(me.ip);
  } catch {
    return null;
  }
  const out = new Uint8Array(
    Math.min(MAX_REPLY_SIZE, Math.max(frame.length, ETHERNET_HEADER_SIZE + ARP_SIZE)),
  );
  const n = respondInto(frame, 0, frame.length, out, 0, mac, ip);
  return n === 0 ? null : out.slice(0, n);
}
