/**
 * The virtio-net device configuration space (virtio 1.2 §5.1.4) a device
 * presents to the driver: `mac`, `status`, `max_virtqueue_pairs`, `mtu`,
 * little-endian.
 *
 * @module
 */

import { VIRTIO_NET_S_LINK_UP, VirtioNetConfig } from "../uapi/virtio.ts";

/** What {@linkcode netConfigSpace} writes. */
export interface NetConfigFields {
  /** `mac` (valid with `VIRTIO_NET_F_MAC`): 6 bytes. */
  mac: Uint8Array;
  /** `status` (valid with `VIRTIO_NET_F_STATUS`); default `VIRTIO_NET_S_LINK_UP`. */
  status?: number;
  /** `max_virtqueue_pairs` (valid with `VIRTIO_NET_F_MQ`). */
  maxVirtqueuePairs: number;
  /** `mtu` (valid with `VIRTIO_NET_F_MTU`). */
  mtu: number;
}

/**
 * The virtio-net config space (virtio 1.2 §5.1.4) holding `fields`:
 * {@linkcode VirtioNetConfig.SIZE} bytes, little-endian.
 *
 * @example
 * ```ts
 * import { netConfigSpace } from "@vhost-mdev/sdk/net";
 * const mac = new Uint8Array([0x52, 0x54, 0, 0x12, 0x34, 0x56]);
 * const config = netConfigSpace({ mac, maxVirtqueuePairs: 2, mtu: 1500 });
 * console.log(config.length); // 12
 * ```
 */
export function netConfigSpace(fields: NetConfigFields): Uint8Array {
  const config = new Uint8Array(VirtioNetConfig.SIZE);
  const view = new DataView(config.buffer);
  config.set(fields.mac, VirtioNetConfig.MAC);
  view.setUint16(VirtioNetConfig.STATUS, fields.status ?? VIRTIO_NET_S_LINK_UP, true);
  view.setUint16(VirtioNetConfig.MAX_VIRTQUEUE_PAIRS, fields.maxVirtqueuePairs, true);
  view.setUint16(VirtioNetConfig.MTU, fields.mtu, true);
  return config;
}
