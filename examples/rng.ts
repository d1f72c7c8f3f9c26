/**
 * A virtio-rng device (virtio 1.2 §5.4) built with the software-device kit:
 * the driver below plus the request handler in `rng_worker.ts`.
 *
 *   deno run -A examples/rng.ts [--socket PATH]
 *
 * Run directly, it serves the device on a vhost-user socket for a
 * vhost-user-rng frontend, such as QEMU's `-chardev socket,id=c0,path=PATH
 * -device vhost-user-rng-pci,chardev=c0`; the guest's virtio_rng driver
 * then reads from it (`/dev/hwrng`).
 *
 * @module
 */

import { parseArgs } from "node:util";
import {
  bit,
  type Driver,
  VhostMdevDevice,
  VirtioDeviceId,
  VirtioFeatureBit,
} from "@vhost-mdev/sdk";
import { softwareDriver } from "@vhost-mdev/sdk/soft";
import { ProtocolFeatureBit, VhostUserServer } from "@vhost-mdev/sdk/vhost-user";

/** The virtio-rng driver: one request queue (virtio 1.2 §5.4.2), no config space (§5.4.4). */
export const driver: Driver = softwareDriver({
  name: "rng",
  description: "virtio-rng entropy source: random bytes from crypto.getRandomValues",
  deviceId: VirtioDeviceId.ENTROPY,
  features: bit(VirtioFeatureBit.VERSION_1) | bit(VirtioFeatureBit.EVENT_IDX) |
    bit(VirtioFeatureBit.INDIRECT_DESC),
  numQueues: 1,
  maxQueueSize: 1024,
  worker: new URL("./rng_worker.ts", import.meta.url),
  // QEMU 7.2's vhost-user-rng-pci never sends DRIVER_OK with SET_STATUS,
  // so a device offering STATUS would wait for it forever.
  protocolFeatures: { remove: [ProtocolFeatureBit.STATUS] },
});

const HELP = `Usage: deno run -A examples/rng.ts [options]

Serve a virtio-rng device (virtio 1.2 §5.4) on a vhost-user socket until
interrupted.

  --socket <path>  the socket to listen on (default /tmp/vhost-rng.sock)
  --help           this text`;

/** Serve the device on `--socket` until SIGINT or SIGTERM. */
export async function main(args: string[]): Promise<number> {
  let flags;
  try {
    flags = parseArgs({
      args,
      options: {
        socket: { type: "string", default: "/tmp/vhost-rng.sock" },
        help: { type: "boolean" },
      },
    }).values;
  } catch (e) {
    console.error(`error: ${(e as Error).message} (see --help)`);
    return 2;
  }
  if (flags.help) {
    console.log(HELP);
    return 0;
  }
  const device = await VhostMdevDevice.create(driver, { queues: 1, options: {} });
  device.addListener((e) => console.log(`${e.type}: ${e.message}`));
  const server = VhostUserServer.listen(device, flags.socket);
  const done = Promise.withResolvers<void>();
  const signals = ["SIGINT", "SIGTERM"] as const;
  for (const s of signals) Deno.addSignalListener(s, done.resolve);
  await done.promise;
  for (const s of signals) Deno.removeSignalListener(s, done.resolve);
  const [stats] = device.stats();
  console.log(`served ${stats.requests} requests, ${stats.bytes} bytes, ${stats.errors} errors`);
  await server.close();
  await device.close();
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
