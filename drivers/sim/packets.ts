/**
 * The frame the sim device's source mode sends. The responder's answers,
 * the Internet checksum and completing a partial checksum are the SDK's
 * virtio-net layer (`@vhost-mdev/sdk/net`).
 *
 * @module
 */

import {
  ETHERNET_HEADER_SIZE as ETH_HLEN,
  EtherType,
  IpProtocol,
  storeInternetChecksum,
} from "@vhost-mdev/sdk/net";

/** TTL of the frames the device makes (Linux's default). */
const TTL = 64;

function putBe16(buf: Uint8Array, at: number, v: number): void {
  buf[at] = v >>> 8;
  buf[at + 1] = v & 0xff;
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
  putBe16(f, 12, EtherType.IPV4);
  const q = ETH_HLEN;
  f[q] = 0x45;
  putBe16(f, q + 2, size - ETH_HLEN);
  f[q + 8] = TTL;
  f[q + 9] = IpProtocol.UDP;
  f.set([198, 18, 0, 1], q + 12);
  f.set([198, 18, 0, 2], q + 16);
  storeInternetChecksum(f, q, 20, q + 10);
  const u = q + 20;
  putBe16(f, u, 9);
  putBe16(f, u + 2, 9);
  putBe16(f, u + 4, size - u);
  for (let i = u + 8; i < size; i++) f[i] = i & 0xff;
  return f;
}
