// A kit device served on a fresh vhost-user socket, with the test kit's
// frontend and generic guest connected to it, and the device's events kept.

import {
  bit,
  type DeviceEvent,
  type Driver,
  VhostMdevDevice,
  VirtioFeatureBit,
} from "@vhost-mdev/sdk";
import { VhostUserServer } from "@vhost-mdev/sdk/vhost-user";
import { VhostUserFrontend, VirtioGuest } from "@vhost-mdev/testing";

/** One device, its server, a frontend and a one-ring guest on it. */
export interface SoftRig {
  device: VhostMdevDevice;
  fe: VhostUserFrontend;
  guest: VirtioGuest;
  events: DeviceEvent[];
}

/** Serve `driver` with `options`, set up a guest with one ring, run `body`, tear down. */
export async function withDevice(
  driver: Driver,
  body: (rig: SoftRig) => Promise<void>,
  options: Record<string, string> = {},
  ringSize = 64,
  iommu = false,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "soft_test" });
  const device = await VhostMdevDevice.create(driver, { queues: 1, options });
  const events: DeviceEvent[] = [];
  device.addListener((e) => events.push(e));
  const server = VhostUserServer.listen(device, `${dir}/vhost.sock`);
  // The first start of a Worker type-checks its module: a slow first reply under load.
  const fe = await VhostUserFrontend.connect(`${dir}/vhost.sock`, {
    memoryMiB: 4,
    replyTimeoutMs: 30_000,
    iommu,
  });
  try {
    const guest = await VirtioGuest.setup(fe, {
      queues: 1,
      ringSize,
      optional: bit(VirtioFeatureBit.EVENT_IDX) | bit(VirtioFeatureBit.INDIRECT_DESC),
      iommu,
    });
    await body({ device, fe, guest, events });
  } finally {
    fe.close();
    await server.close();
    await device.close();
    await Deno.remove(dir, { recursive: true });
  }
}

/**
 * Wait until `count` more used entries came back on ring 0; returns their
 * lengths by token, failing on a token returned twice.
 */
export async function takeUsed(
  guest: VirtioGuest,
  count: number,
  timeoutMs = 5000,
): Promise<Map<number, number>> {
  const got = new Map<number, number>();
  const ring = guest.queue(0);
  const deadline = performance.now() + timeoutMs;
  while (got.size < count) {
    const left = deadline - performance.now();
    if (left <= 0) throw new Error(`only ${got.size} of ${count} used entries came back`);
    await guest.waitUsed(0, left);
    while (ring.nextUsed()) {
      if (got.has(ring.usedToken)) throw new Error(`token ${ring.usedToken} came back twice`);
      got.set(ring.usedToken, ring.usedLen);
    }
  }
  return got;
}
