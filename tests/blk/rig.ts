// A blk device on a backing file, served on a fresh vhost-user socket, with
// the test kit's frontend and virtio-blk guest driver connected to it.

import { type DeviceEvent, VhostMdevDevice } from "@vhost-mdev/sdk";
import { VhostUserServer } from "@vhost-mdev/sdk/vhost-user";
import { driver } from "@vhost-mdev/blk";
import {
  VhostUserFrontend,
  VirtioBlkDriver,
  type VirtioBlkDriverOptions,
} from "@vhost-mdev/testing";

/** One device on `file`, its frontend and guest driver, and the device's events. */
export interface BlkRig {
  device: VhostMdevDevice;
  blk: VirtioBlkDriver;
  file: string;
  events: DeviceEvent[];
  frontend: VhostUserFrontend;
}

/** Options of {@linkcode withBlk}. */
export interface BlkRigOptions {
  /** The backing file (default: a fresh sparse one of `sizeBytes` in a temp dir). */
  file?: string;
  /** Size of the fresh backing file (default 4 MiB). */
  sizeBytes?: number;
  /** Device options besides `file`. */
  options?: Record<string, string>;
  /** Request queues (default 1). */
  queues?: number;
  /** Guest driver options. */
  guest?: VirtioBlkDriverOptions;
  /** Called with the frontend before the guest driver starts the device. */
  beforeStart?: (frontend: VhostUserFrontend) => Promise<void>;
}

/** Serve a blk device, start the guest driver on it, run `body`, tear down. */
export async function withBlk(
  o: BlkRigOptions,
  body: (rig: BlkRig) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "blk_test" });
  const file = o.file ?? `${dir}/disk.img`;
  if (o.file === undefined) {
    await Deno.writeFile(file, new Uint8Array(0));
    await Deno.truncate(file, o.sizeBytes ?? 4 << 20);
  }
  const queues = o.queues ?? 1;
  const device = await VhostMdevDevice.create(driver, {
    queues,
    options: { file, ...o.options },
  });
  const events: DeviceEvent[] = [];
  device.addListener((e) => events.push(e));
  const server = VhostUserServer.listen(device, `${dir}/vhost.sock`);
  // The first start of a Worker type-checks its module: a slow first reply under load.
  const fe = await VhostUserFrontend.connect(`${dir}/vhost.sock`, {
    memoryMiB: 32,
    replyTimeoutMs: 30_000,
  });
  try {
    await o.beforeStart?.(fe);
    const blk = await VirtioBlkDriver.start(fe, { queues, ...o.guest });
    await body({ device, blk, file, events, frontend: fe });
    await blk.stop();
  } finally {
    fe.close();
    await server.close();
    await device.close();
    await Deno.remove(dir, { recursive: true });
  }
}

/** The device's ring counters summed over its rings. */
export function totals(device: VhostMdevDevice): { requests: number; errors: number } {
  let requests = 0, errors = 0;
  for (const s of device.stats()) {
    requests += s.requests ?? 0;
    errors += s.errors ?? 0;
  }
  return { requests, errors };
}

/** `n` random bytes. */
export function randomBytes(n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let at = 0; at < n; at += 65536) crypto.getRandomValues(out.subarray(at, at + 65536));
  return out;
}

/** Bytes `[offset, offset + length)` of `path`, read by the host on its own. */
export async function fileRange(path: string, offset: number, length: number): Promise<Uint8Array> {
  using f = await Deno.open(path, { read: true });
  await f.seek(offset, Deno.SeekMode.Start);
  const out = new Uint8Array(length);
  let done = 0;
  while (done < length) {
    const n = await f.read(out.subarray(done));
    if (n === null) break;
    done += n;
  }
  return out.subarray(0, done);
}
