/**
 * Numbers of the frames a virtio-net device carries: the Ethernet II header
 * (IEEE 802.3), EtherTypes, IPv4 protocol numbers (RFC 791, IANA) and the
 * ARP operation codes (RFC 826).
 *
 * @module
 */

/** Bytes of an Ethernet II header (destination, source, EtherType). */
export const ETHERNET_HEADER_SIZE = 14;

/** EtherType values used here. */
export const EtherType = {
  /** IPv4 (RFC 791). */
  IPV4: 0x0800,
  /** ARP (RFC 826). */
  ARP: 0x0806,
  /** An 802.1Q VLAN tag follows. */
  VLAN: 0x8100,
  /** IPv6 (RFC 8200). */
  IPV6: 0x86dd,
} as const;

/** IPv4 protocol numbers used here. */
export const IpProtocol = {
  /** ICMP (RFC 792). */
  ICMP: 1,
  /** TCP (RFC 9293). */
  TCP: 6,
  /** UDP (RFC 768). */
  UDP: 17,
} as const;

/** ARP operation codes (RFC 826). */
export const ArpOp = { REQUEST: 1, REPLY: 2 } as const;

/** Bytes of an Ethernet/IPv4 ARP packet (RFC 826). */
export const ARP_SIZE = 28;
