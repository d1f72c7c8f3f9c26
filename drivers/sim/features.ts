/**
 * What the sim device offers: feature bits and the virtio-net config space.
 *
 * Checksum offload is offered and honoured, never faked:
 *
 * - `VIRTIO_NET_F_CSUM` lets the guest transmit frames with a partial
 *   checksum (`VIRTIO_NET_HDR_F_NEEDS_CSUM`, `csum_start`, `csum_offset`).
 * - When the guest also acknowledged `VIRTIO_NET_F_GUEST_CSUM`, a looped
 *   back frame keeps that header, so the receiving side (the same guest,
 *   which said it accepts partial checksums) completes it, as a Linux veth
 *   pair does. Without `GUEST_CSUM` the device completes the checksum itself
 *   before delivering the frame, since the guest cannot take it partial.
 * - Frames the device makes (source, responder) carry full checksums.
 * - The device never verifies received checksums (it sets no `DATA_VALID`).
 *
 * No segmentation offload is offered, so every transmitted header must have
 * `gso_type` NONE. The datapath completes chains in order, so `IN_ORDER` is
 * offered. There is no control queue: `numQueues` is two per queue pair.
 * Split and packed rings (`VIRTIO_F_RING_PACKED`) both work in every mode;
 * the frontend picks. `VIRTIO_F_ACCESS_PLATFORM` is offered: behind a
 * vIOMMU the Workers translate IOVAs through the device IOTLB.
 *
 * @module
 */

import { bit, VirtioFeatureBit, VirtioNetFeatureBit } from "@vhost-mdev/sdk";
import { netConfigSpace } from "@vhost-mdev/sdk/net";
import type { SimOptions } from "./options.ts";

/** Most queue pairs one sim device serves (one Worker each). */
export const SIM_MAX_QUEUE_PAIRS = 64;

/** Largest ring the device accepts. */
export const SIM_MAX_QUEUE_SIZE = 32768;

/**
 * The feature bits the device offers for `options`.
 *
 * @example
 * ```ts
 * import { parseSimOptions, simFeatures } from "@vhost-mdev/sim";
 * const f = simFeatures(parseSimOptions({ "mrg-rxbuf": "false" }));
 * console.log((f >> 15n) & 1n); // 0n: no MRG_RXBUF
 * ```
 */
export function simFeatures(options: SimOptions): bigint {
  let f = bit(VirtioFeatureBit.VERSION_1) | bit(VirtioFeatureBit.IN_ORDER) |
    bit(VirtioNetFeatureBit.MQ) | bit(VirtioNetFeatureBit.MAC) |
    bit(VirtioNetFeatureBit.STATUS) | bit(VirtioNetFeatureBit.MTU) |
    bit(VirtioNetFeatureBit.CSUM) | bit(VirtioNetFeatureBit.GUEST_CSUM) |
    bit(VirtioFeatureBit.RING_PACKED) | bit(VirtioFeatureBit.ACCESS_PLATFORM);
  if (options.mrgRxbuf) f |= bit(VirtioNetFeatureBit.MRG_RXBUF);
  if (options.eventIdx) f |= bit(VirtioFeatureBit.EVENT_IDX);
  if (options.indirect) f |= bit(VirtioFeatureBit.INDIRECT_DESC);
  return f;
}

/**
 * The virtio-net config space (virtio 1.2 §5.1.4): `mac`, `status` =
 * `LINK_UP`, `max_virtqueue_pairs` = `queuePairs`, `mtu`; little-endian.
 */
export function simConfigSpace(options: SimOptions, queuePairs: number): Uint8Array {
  return netConfigSpace({ mac: options.mac, maxVirtqueuePairs: queuePairs, mtu: options.mtu });
}
