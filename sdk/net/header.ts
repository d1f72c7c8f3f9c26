/**
 * The `virtio_net_hdr` that precedes every frame on a virtio-net queue
 * (virtio 1.2 §5.1.6): its field offsets, flag and GSO values, the rule for
 * its length, and accessors for the little-endian `num_buffers`,
 * `csum_start` and `csum_offset` fields. Accessors work on a byte offset
 * into a caller's buffer and allocate nothing.
 *
 * @module
 */

import {
  hasBit,
  VIRTIO_NET_HDR_LEGACY_SIZE,
  VIRTIO_NET_HDR_SIZE,
  VirtioFeatureBit,
  VirtioNetFeatureBit,
} from "../uapi/virtio.ts";

/** Byte offsets of the `virtio_net_hdr` fields (virtio 1.2 §5.1.6); all little-endian. */
export const VirtioNetHdr = {
  /** u8 `flags` ({@linkcode VirtioNetHdrFlag}). */
  FLAGS: 0,
  /** u8 `gso_type` ({@linkcode VirtioNetHdrGso}). */
  GSO_TYPE: 1,
  /** le16 `hdr_len`. */
  HDR_LEN: 2,
  /** le16 `gso_size`. */
  GSO_SIZE: 4,
  /** le16 `csum_start`. */
  CSUM_START: 6,
  /** le16 `csum_offset`. */
  CSUM_OFFSET: 8,
  /** le16 `num_buffers`: present only in the 12-byte header. */
  NUM_BUFFERS: 10,
} as const;

/** `virtio_net_hdr.flags` bits (virtio 1.2 §5.1.6). */
export const VirtioNetHdrFlag = {
  /** The checksum from `csum_start` is to be completed and stored at `csum_start + csum_offset`. */
  NEEDS_CSUM: 1,
  /** The device verified the frame's checksum (receive only). */
  DATA_VALID: 2,
  /** `csum_start`/`csum_offset` carry coalescing information (receive only). */
  RSC_INFO: 4,
} as const;

/** `virtio_net_hdr.gso_type` values (virtio 1.2 §5.1.6). */
export const VirtioNetHdrGso = {
  /** No segmentation. */
  NONE: 0,
  /** TCP over IPv4 segmentation. */
  TCPV4: 1,
  /** UDP fragmentation offload. */
  UDP: 3,
  /** TCP over IPv6 segmentation. */
  TCPV6: 4,
  /** UDP segmentation. */
  UDP_L4: 5,
  /** Flag: the segments carry ECN. */
  ECN: 0x80,
} as const;

/**
 * Length of the `virtio_net_hdr` for the negotiated features (virtio 1.2
 * §5.1.6): 12 bytes (with `num_buffers`) when `VERSION_1` or `MRG_RXBUF`
 * was negotiated, else the legacy 10.
 *
 * @example
 * ```ts
 * import { bit, VirtioFeatureBit } from "@vhost-mdev/sdk";
 * import { netHeaderSize } from "@vhost-mdev/sdk/net";
 * console.log(netHeaderSize(bit(VirtioFeatureBit.VERSION_1))); // 12
 * ```
 */
export function netHeaderSize(features: bigint): number {
  return netHeaderSizeFor(
    hasBit(features, VirtioFeatureBit.VERSION_1),
    hasBit(features, VirtioNetFeatureBit.MRG_RXBUF),
  );
}

/** {@linkcode netHeaderSize} from the two features that decide it. */
export function netHeaderSizeFor(version1: boolean, mrgRxbuf: boolean): number {
  return version1 || mrgRxbuf ? VIRTIO_NET_HDR_SIZE : VIRTIO_NET_HDR_LEGACY_SIZE;
}

/** `num_buffers` of the 12-byte header at `at` in `buf`. */
export function readNumBuffers(buf: Uint8Array, at: number): number {
  return buf[at + VirtioNetHdr.NUM_BUFFERS] | (buf[at + VirtioNetHdr.NUM_BUFFERS + 1] << 8);
}

/** Store `n` (0..65535) as `num_buffers` of the 12-byte header at `at` in `buf`. */
export function writeNumBuffers(buf: Uint8Array, at: number, n: number): void {
  buf[at + VirtioNetHdr.NUM_BUFFERS] = n & 0xff;
  buf[at + VirtioNetHdr.NUM_BUFFERS + 1] = n >>> 8;
}

/** `csum_start` of the header at `at` in `buf`. */
export function readCsumStart(buf: Uint8Array, at: number): number {
  return buf[at + VirtioNetHdr.CSUM_START] | (buf[at + VirtioNetHdr.CSUM_START + 1] << 8);
}

/** `csum_offset` of the header at `at` in `buf`. */
export function readCsumOffset(buf: Uint8Array, at: number): number {
  return buf[at + VirtioNetHdr.CSUM_OFFSET] | (buf[at + VirtioNetHdr.CSUM_OFFSET + 1] << 8);
}
