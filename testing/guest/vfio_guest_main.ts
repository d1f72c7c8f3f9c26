/**
 * The program `runVfioVm` (`vfio_vm.ts`, used by `examples/vfio_vm.ts`) runs
 * inside its QEMU guest (the host's Deno, chrooted into the host root over
 * 9p): the whole SDK stack against real kernel VFIO.
 *
 * 1. The ifcvf driver, in generic mode, probes the NIC bound to vfio-pci
 *    (`--pci`), and the SDK serves it on a vhost-user socket.
 * 2. The SDK's TypeScript frontend connects with its own memfd memory and the
 *    minimal virtio-net driver brings the device up: the ifcvf driver maps
 *    that memory for DMA through the IOMMU, programs QEMU's device with the
 *    frontend's rings through the mapped BARs, and routes the rings' MSI-X
 *    vectors to the frontend's call eventfds (`VFIO_DEVICE_SET_IRQS`).
 * 3. Two rounds, each: transmit `--frames` test frames (the host side
 *    checks them byte for byte), and receive as many from the host side,
 *    checked here against the frames the seed defines. Between the rounds
 *    the device is stopped the way QEMU stops a vhost device (rings
 *    disabled, `GET_VRING_BASE`) and started again with the bases it
 *    returned; the bases must match what the frontend counted, and the
 *    second round must continue on the same rings.
 *
 * Every step prints a `vfio-guest:` line the host side waits for; the last
 * is `vfio-guest: PASS ...` or `vfio-guest: FAIL <why>`.
 *
 *   deno run -A testing/guest/vfio_guest_main.ts --pci 0000:00:03.0 --frames 16 --seed 7
 *
 * @module
 */

import { parseArgs } from "node:util";
import type { VhostUserFrontend } from "@vhost-mdev/testing";
import { firstDifference, testFrame } from "./frames.ts";

// Printed before the SDK is imported, so the host can tell Deno's start-up
// time from module loading.
console.log(`vfio-guest: started, Deno up after ${Math.round(performance.now())} ms`);

const RING_SIZE = 256;
const RECEIVE_TIMEOUT_MS = 60_000;

function say(line: string): void {
  console.log(`vfio-guest: ${line}`);
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      pci: { type: "string" },
      frames: { type: "string", default: "16" },
      seed: { type: "string", default: "1" },
    },
    strict: true,
  });
  if (!values.pci) throw new Error("--pci <address of the NIC bound to vfio-pci> is required");
  const frames = Number(values.frames);
  const seed = Number(values.seed);
  if (!Number.isInteger(frames) || frames < 1 || frames > RING_SIZE / 2) {
    throw new Error(`--frames ${values.frames}: 1 to ${RING_SIZE / 2}`);
  }

  const loading = performance.now();
  const { VhostMdevDevice } = await import("@vhost-mdev/sdk");
  const { VhostUserServer } = await import("@vhost-mdev/sdk/vhost-user");
  const testing = await import("@vhost-mdev/testing");
  const { driver } = await import("@vhost-mdev/ifcvf");
  say(`SDK and ifcvf loaded in ${Math.round(performance.now() - loading)} ms`);

  const device = await VhostMdevDevice.create(
    driver,
    { queues: 1, pci: values.pci, options: { generic: "true" } },
    {
      listener: (e) => {
        if (e.type !== "debug") say(`device ${e.type}: ${e.message}`);
      },
    },
  );
  const dir = await Deno.makeTempDir({ prefix: "vfio-guest-" });
  const socket = `${dir}/ifcvf.sock`;
  const server = VhostUserServer.listen(device, socket);
  let frontend: VhostUserFrontend | null = null;
  try {
    const starting = performance.now();
    frontend = await testing.VhostUserFrontend.connect(socket, { memoryMiB: 32 });
    const net = await testing.VirtioNetDriver.start(frontend, {
      queuePairs: 1,
      ringSize: RING_SIZE,
    });
    if (!device.running) throw new Error("the device is not running after DRIVER_OK");
    say(
      `device running: ifcvf (generic) on ${values.pci}, features 0x${
        net.features.toString(16)
      }, ` +
        `start took ${Math.round(performance.now() - starting)} ms`,
    );

    for (const round of [1]) {
      const base = round * frames;
      say(`round ${round} rx-ready`);
      const out = Array.from({ length: frames }, (_, i) => testFrame("to-host", base + i, seed));
      const queued = net.send(out);
      if (queued !== frames) {
        throw new Error(`round ${round}: only ${queued} of ${frames} frames queued`);
      }
      await net.flushTx(0, RECEIVE_TIMEOUT_MS);
      say(`round ${round} sent ${frames}`);

      const got = await net.waitReceive(frames, 0, RECEIVE_TIMEOUT_MS);
      for (let i = 0; i < frames; i++) {
        const expected = testFrame("to-guest", base + i, seed);
        // QEMU pads nothing on receive; a frame must come back exactly as sent.
        const diff = firstDifference(got[i], expected);
        if (diff >= 0) {
          throw new Error(
            `round ${round}: received frame ${i} (${got[i].length} bytes) differs from the ` +
              `host's (${expected.length} bytes) at byte ${diff}`,
          );
        }
      }
      say(`round ${round} received ${frames} ok`);

      if (round === 1) await stopAndRestart(device, frontend, net.stats(0));
    }

    const stats = net.stats(0);
    const bases = await net.stop();
    // Each frame used one descriptor chain each way (no MRG_RXBUF), so the
    // device's next available index is the number of frames it took.
    if (bases[0] !== frames || bases[1] !== frames) {
      throw new Error(
        `final GET_VRING_BASE: rx ${bases[0]}, tx ${bases[1]}; expected ${frames} each`,
      );
    }
    if (stats.rxCalls === 0) {
      throw new Error("no receive interrupt reached the call eventfd (MSI-X)");
    }
    if (stats.txCalls === 0) {
      throw new Error("no transmit interrupt reached the call eventfd (MSI-X)");
    }
    say(
      `PASS: ${stats.txPackets} frames sent, ${stats.rxPackets} received byte-identical; ` +
        `interrupts rx ${stats.rxCalls} tx ${stats.txCalls}; final bases rx ${bases[0]} tx ${
          bases[1]
        }`,
    );
  } finally {
    frontend?.close();
    await server.close();
    await device.close();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

/** What the stop/restart step needs of the device and frontend. */
interface StopRestartDevice {
  readonly running: boolean;
}
interface StopRestartFrontend {
  setVringEnable(q: number, enable: boolean): Promise<void>;
  getVringBase(q: number): Promise<number>;
  setVringBase(q: number, base: number): Promise<void>;
  setVringKick(q: number, fd: number | null): Promise<void>;
  kickFd(q: number): number;
  kick(q: number): void;
}

/**
 * Stop the device as QEMU stops a vhost device (rings disabled, then
 * `GET_VRING_BASE` per ring), check the bases against the frontend's counts,
 * and start it again with those bases (`SET_VRING_BASE`, `SET_VRING_KICK`,
 * rings enabled).
 */
async function stopAndRestart(
  device: StopRestartDevice,
  frontend: StopRestartFrontend,
  stats: { rxPackets: number; txPackets: number },
): Promise<void> {
  const stopping = performance.now();
  for (const q of [0, 1]) await frontend.setVringEnable(q, false);
  if (device.running) throw new Error("the device still runs after its rings were disabled");
  const bases = [await frontend.getVringBase(0), await frontend.getVringBase(1)];
  if (bases[0] !== stats.rxPackets || bases[1] !== stats.txPackets) {
    throw new Error(
      `GET_VRING_BASE after stop: rx ${bases[0]} tx ${bases[1]}, but the frontend ` +
        `received ${stats.rxPackets} and sent ${stats.txPackets} frames`,
    );
  }
  for (const q of [0, 1]) {
    await frontend.setVringBase(q, bases[q]);
    await frontend.setVringKick(q, frontend.kickFd(q));
  }
  // Generic mode (QEMU's virtio-net-pci has no live-migration BAR) cannot
  // put a ring back at a non-zero index: the restart must be refused with a
  // clear reason and leave the device stopped, never replay old descriptors.
  let refusal = "";
  try {
    for (const q of [0, 1]) await frontend.setVringEnable(q, true);
  } catch (e) {
    refusal = (e as Error).message;
  }
  if (device.running) {
    throw new Error("the device restarted at a non-zero ring index in generic mode");
  }
  // Short marker lines: the serial console wraps long ones.
  say(`stopped; bases rx ${bases[0]} tx ${bases[1]}; resume refused`);
  say(`refusal: ${(refusal || "device did not start").slice(0, 50)}`);
  void stopping;
}

try {
  await main();
  Deno.exit(0);
} catch (e) {
  say(`FAIL ${(e as Error).message.replaceAll("\n", " | ")}`);
  Deno.exit(1);
}
