/**
 * The smallest useful third-party driver: a virtio-net device that accepts
 * a frontend, runs its rings and counts each ring's kicks (relayed by the
 * SDK to `notify` on the main thread), moving no packets. It shows what a
 * plugin published outside this repository looks like: it imports only the
 * SDK's public entry point and declares the driver contract version it was
 * written for.
 *
 *   vhost-mdev bundle examples/null_driver.ts -o null_driver.js
 *   vhost-mdev driver load null_driver.js
 *   vhost-mdev dev add null0 driver null socket /tmp/null0.sock
 *
 * @module
 */

import {
  bit,
  type Driver,
  type QueueStats,
  type RingPosition,
  VirtioDeviceId,
  VirtioFeatureBit,
} from "@vhost-mdev/sdk";

/** The driver contract version (`sdk/ops.ts`) this driver was written for. */
export const contractVersion = 2;

/** A null virtio-net device: rings run, kicks are counted, nothing moves. */
export const driver: Driver = {
  name: "null",
  description: "null virtio-net device: counts kicks per ring, moves no packets",
  pciIds: [],
  options: [],
  probe(ctx, params) {
    const numQueues = 2 * params.queues;
    const kicks = new Array<number>(numQueues).fill(0);
    // Nothing is consumed, so each ring stays where the frontend put it.
    const saved = new Map<number, RingPosition>();
    return {
      deviceId: VirtioDeviceId.NET,
      features: bit(VirtioFeatureBit.VERSION_1),
      numQueues,
      maxQueueSize: 1024,
      counters: { ring: [{ name: "kicks", description: "kicks the frontend sent" }] },
      ops: {
        start() {
          for (let q = 0; q < numQueues; q++) {
            if (ctx.vring(q).running) saved.set(q, ctx.vring(q).state);
          }
        },
        stop() {},
        notify(q) {
          kicks[q]++;
        },
        getVringState: (q) => saved.get(q) ?? ctx.vring(q).state,
        stats: (): QueueStats[] => kicks.map((k, queue) => ({ queue, kicks: k })),
        resetStats: () => kicks.fill(0),
      },
    };
  },
};
