/**
 * The virtio-net layer (virtio 1.2 §5.1): the `virtio_net_hdr` layout and
 * its length rule, frame delivery into a receive queue (`MRG_RXBUF`,
 * `num_buffers`), the config-space builder, the Internet checksum and a
 * responder answering ARP and ICMP echo. What is used per frame works on
 * byte offsets into caller buffers and allocates nothing. Feature bits and
 * the device ID are in `@vhost-mdev/sdk` (`VirtioNetFeatureBit`,
 * `VirtioDeviceId.NET`).
 *
 * @example Read and write a received frame's header
 * ```ts
 * import { netHeaderSizeFor, readNumBuffers, writeNumBuffers } from "@vhost-mdev/sdk/net";
 * const hdr = new Uint8Array(netHeaderSizeFor(true, true)); // 12 bytes
 * writeNumBuffers(hdr, 0, 3);
 * console.log(readNumBuffers(hdr, 0)); // 3
 * ```
 *
 * @module
 */

export * from "./header.ts";
export * from "./receive.ts";
export * from "./config.ts";
export * from "./ethernet.ts";
export * from "./checksum.ts";
export * from "./responder.ts";
