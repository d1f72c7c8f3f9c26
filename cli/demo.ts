/**
 * `deno task demo`: the main job. Serves the simulated virtio-net device and
 * attaches a frontend to it — a QEMU guest that pings the device's responder
 * when QEMU is installed, otherwise the SDK's own TypeScript frontend, which
 * streams frames through the device in loopback and checks every one comes
 * back byte-identical. Shows packets per second per queue while it runs and
 * ends with a summary.
 *
 * @module
 */

import { type QueueStats, VhostMdevDevice } from "@vhost-mdev/sdk";
import { VhostUserServer } from "@vhost-mdev/sdk/vhost-user";
import { findExecutable, VhostUserFrontend, VirtioNetDriver } from "@vhost-mdev/testing";
import { driver as sim } from "@vhost-mdev/sim";
import { parseFlags } from "./format.ts";

const HELP =
  `Usage: deno task demo [--frontend auto|qemu|ts] [--queues N] [--seconds S] [--size BYTES]

Serve the simulated virtio-net device (drivers/sim) over vhost-user and attach a
frontend to it, with live packets/s per queue and a summary at the end.

  --frontend auto   a QEMU guest when qemu-system-x86_64 is installed, else the
                    TypeScript frontend (default)
  --frontend ts     the SDK's TypeScript frontend: frames through the device in
                    loopback, each checked byte-identical on return
  --frontend qemu   boot a small Linux guest under QEMU that pings the device
                    (see examples/vm.ts; needs qemu-system-x86 and busybox-static)
  --queues N        queue pairs (default 2 for ts, 1 for qemu)
  --seconds S       how long to stream (ts, default 5)
  --size BYTES      frame size (ts, default 256)
  --help            this text
`;

function rate(n: number, ms: number): string {
  const pps = n / (ms / 1000);
  return pps >= 1e6 ? `${(pps / 1e6).toFixed(2)} Mpps` : `${(pps / 1e3).toFixed(1)} kpps`;
}

/** A frame whose payload encodes `seq`, so the receiver can rebuild and compare it. */
function frameFor(pair: number, seq: number, size: number): Uint8Array {
  const f = new Uint8Array(size);
  f.set([0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x52, 0x54, 0x00, 0xab, 0xcd, pair], 0);
  f[12] = 0x88;
  f[13] = 0xb5; // local experimental EtherType
  const v = new DataView(f.buffer);
  v.setUint32(14, seq);
  for (let i = 18; i < size; i++) f[i] = (seq * 31 + i) & 0xff;
  return f;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

async function demoTs(queues: number, seconds: number, size: number): Promise<number> {
  console.log(
    `demo: drivers/sim in loopback, ${queues} queue pair(s), TypeScript frontend, ` +
      `${size}-byte frames for ${seconds} s`,
  );
  const dir = Deno.makeTempDirSync({ prefix: "vhost-mdev-demo-" });
  const sock = `${dir}/vhost-net0.sock`;
  const device = await VhostMdevDevice.create(sim, { queues, options: { mode: "loopback" } }, {
    listener: (e) => {
      if (["start", "stop", "error", "warn", "connected"].includes(e.type)) {
        console.log(`  device ${e.type}: ${e.message}`);
      }
    },
  });
  const server = VhostUserServer.listen(device, sock);
  const frontend = await VhostUserFrontend.connect(sock, { memoryMiB: 64 });
  let net: VirtioNetDriver | null = null;
  const sent = new Array(queues).fill(0);
  const received = new Array(queues).fill(0);
  let mismatched = 0;
  try {
    net = await VirtioNetDriver.start(frontend, { queuePairs: queues, ringSize: 256 });
    const started = performance.now();
    let lastTick = started;
    let lastRx = received.slice();
    const end = started + seconds * 1000;
    while (performance.now() < end) {
      let progressed = false;
      for (let p = 0; p < queues; p++) {
        // Keep at most a ring's worth in flight per pair.
        const room = 128 - (sent[p] - received[p]);
        if (room > 0) {
          const batch = [];
          for (let i = 0; i < Math.min(room, 32); i++) batch.push(frameFor(p, sent[p] + i, size));
          sent[p] += net.send(batch, p);
        }
        for (const f of net.receive(p)) {
          if (!sameBytes(f, frameFor(p, received[p], size))) mismatched++;
          received[p]++;
          progressed = true;
        }
      }
      const now = performance.now();
      if (now - lastTick >= 1000) {
        const per = received.map((r, p) => `q${p} ${rate(r - lastRx[p], now - lastTick)}`);
        console.log(`  ${((now - started) / 1000).toFixed(0)}s  ${per.join("  ")}`);
        lastTick = now;
        lastRx = received.slice();
      }
      // Let the event loop breathe (device events, timers) when the device is behind.
      if (!progressed) await new Promise((r) => setTimeout(r, 0));
    }
    // Drain what is still in flight.
    const drainEnd = performance.now() + 2000;
    while (received.some((r, p) => r < sent[p]) && performance.now() < drainEnd) {
      for (let p = 0; p < queues; p++) {
        for (const f of net.receive(p)) {
          if (!sameBytes(f, frameFor(p, received[p], size))) mismatched++;
          received[p]++;
        }
      }
      await new Promise((r) => setTimeout(r, 1));
    }
    const elapsed = performance.now() - started;
    const stats = device.stats();
    console.log("summary:");
    for (let p = 0; p < queues; p++) {
      console.log(
        `  pair ${p}: sent ${sent[p]}, received ${received[p]} (${rate(received[p], elapsed)})`,
      );
    }
    printDeviceStats(stats);
    const totalSent = sent.reduce((a, b) => a + b, 0);
    const totalRx = received.reduce((a, b) => a + b, 0);
    const ok = totalSent > 0 && totalRx === totalSent && mismatched === 0;
    console.log(
      `  ${totalRx}/${totalSent} frames came back, ${mismatched} differed: ${ok ? "OK" : "FAILED"}`,
    );
    return ok ? 0 : 1;
  } finally {
    await net?.stop().catch(() => {});
    frontend.close();
    await server.close();
    await device.close();
    Deno.removeSync(dir, { recursive: true });
  }
}

function printDeviceStats(stats: QueueStats[]) {
  for (const s of stats) {
    console.log(
      `  device ring ${s.queue}: ${s.packets} packets, ${s.bytes} bytes, ` +
        `${s.drops} drops, ${s.errors} errors`,
    );
  }
}

function qemuAvailable(): boolean {
  return findExecutable("qemu-system-x86_64") !== null;
}

async function demoQemu(queues: number): Promise<number> {
  console.log(
    "demo: drivers/sim as a ping responder, a QEMU guest on its vhost-user socket " +
      "(examples/vm.ts)",
  );
  const vm = new URL("../examples/vm.ts", import.meta.url).pathname;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", vm, "--queues", String(queues), "--mode", "responder"],
    stdout: "inherit",
    stderr: "inherit",
  }).spawn();
  return (await child.status).code;
}

/**
 * Run `demo` with command-line `args` (without the program name); resolves
 * with the exit code.
 */
export async function main(args: string[]): Promise<number> {
  const { flags } = parseFlags(args, ["help"]);
  if (flags.help !== undefined) {
    console.log(HELP);
    return 0;
  }
  const choice = flags.frontend ?? "auto";
  if (!["auto", "qemu", "ts"].includes(choice)) {
    console.error(`error: --frontend ${choice}: choose auto, qemu or ts`);
    return 2;
  }
  const useQemu = choice === "qemu" || (choice === "auto" && qemuAvailable());
  if (choice === "auto") {
    console.log(
      useQemu
        ? "QEMU found: attaching a guest (use --frontend ts for the TypeScript frontend)"
        : "QEMU not installed: using the TypeScript frontend " +
          "(apt-get install qemu-system-x86 busybox-static for a guest)",
    );
  }
  const queues = Number(flags.queues ?? (useQemu ? "1" : "2"));
  if (!Number.isInteger(queues) || queues < 1 || queues > 8) {
    console.error("error: --queues must be 1 to 8");
    return 2;
  }
  if (useQemu) return await demoQemu(queues);
  const seconds = Number(flags.seconds ?? "5");
  const size = Number(flags.size ?? "256");
  if (!(seconds > 0) || !Number.isInteger(size) || size < 60 || size > 1514) {
    console.error("error: --seconds must be > 0 and --size 60 to 1514");
    return 2;
  }
  return await demoTs(queues, seconds, size);
}

if (import.meta.main) {
  try {
    Deno.exit(await main(Deno.args));
  } catch (e) {
    console.error(`error: ${e instanceof Error ? e.message : e}`);
    Deno.exit(1);
  }
}
