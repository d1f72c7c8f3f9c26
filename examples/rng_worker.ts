/**
 * The virtio-rng device logic (virtio 1.2 §5.4.6): each request is one
 * device-writable buffer, which the device fills with random bytes; the
 * used length is the bytes written. A request without a writable buffer,
 * or with a device-readable one, breaks §5.4.6.1: it fails, and the kit
 * returns it with length 0, counts it and reports it.
 *
 * @module
 */

import { serveQueue } from "@vhost-mdev/sdk/soft";

/** `crypto.getRandomValues` fills at most 65536 bytes per call. */
const random = new Uint8Array(65536);

serveQueue((request) => {
  if (request.readableBytes > 0 || request.writable === 0) {
    throw new Error(
      `a virtio-rng request is device-writable only; this one has ` +
        `${request.readableBytes} readable and ${request.writable} writable bytes`,
    );
  }
  for (let at = 0; at < request.writable; at += random.length) {
    const n = Math.min(random.length, request.writable - at);
    request.write(crypto.getRandomValues(random.subarray(0, n)), at);
  }
  return request.writable;
});
