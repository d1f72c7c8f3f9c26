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
import {
  abortOnTermination,
  MissingToolsError,
  pingVmSummary,
  runPingVm,
} from "@vhost-mdev/testing/guest";
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
                    (needs qemu-system-x86 and busybox-static)
  --queues N        queue pairs (default 1: on two cores one pair shows the
                    datapath's rate; more pairs share the same cores)
  --seconds S       how long to stream (ts, default 5)
  --size BYTES      frame size (ts, default 256)
  --help            this text
`;

function rate(n: number, ms: number): string {
  const pps = n / (ms / 1000);
  return pps >= 1e6 ? `${(pps / 1e6).toFixed(2)} Mpps` : `${(pps / 1e3).toFixed(1)} kpps`;
}

/** Bytes of a demo frame that carry its sequence number (big-endian). */
const SEQ_AT = 14;

/** A frame whose payload encodes `seq`, so the receiver can rebuild and compare it. */
function frameFor(pair: number, seq: number, size: number): Uint8Array {
  const f = new Uint8Array(size);
  f.set([0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x52, 0x54, 0x00, 0xab, 0xcd, pair], 0);
  f[12] = 0x88;
  f[13] = 0xb5; // local experimental EtherType
  const v = new DataView(f.buffer);
  v.setUint32(SEQ_AT, seq);
  for (let i = SEQ_AT + 4; i < size; i++) f[i] = (seq * 31 + i) & 0xff;
  return f;
}

/**
 * One queue pair's stream of frames: writes frame `sent + i` in place and
 * checks each returning frame byte for byte against the one sent with its
 * sequence number. A frame's bytes depend on `seq` only through the
 * sequence field and `seq & 0xff`, so 256 templates hold every frame.
 */
class FrameStream {
  sent = 0;
  received = 0;
  mismatched = 0;
  readonly #size: number;
  readonly #templates: Uint8Array[] = [];
  /** The templates four bytes at a time (each is its own buffer, so aligned). */
  readonly #templateWords: Int32Array[] = [];
  /** Guest memory four bytes at a time, made on the first aligned frame. */
  #words: Int32Array | null = null;

  constructor(pair: number, size: number) {
    this.#size = size;
    for (let k = 0; k < 256; k++) {
      const t = frameFor(pair, k, size);
      this.#templates.push(t);
      this.#templateWords.push(new Int32Array(t.buffer, 0, size >>> 2));
    }
  }

  /** Write frame `sent + i` at `bytes[at..]` (a `FrameWriter`). */
  readonly write = (bytes: Uint8Array, at: number, i: number): number => {
    const seq = this.sent + i;
    bytes.set(this.#templates[seq & 0xff], at);
    bytes[at + SEQ_AT] = seq >>> 24;
    bytes[at + SEQ_AT + 1] = (seq >>> 16) & 0xff;
    bytes[at + SEQ_AT + 2] = (seq >>> 8) & 0xff;
    bytes[at + SEQ_AT + 3] = seq & 0xff;
    return this.#size;
  };

  /**
   * Check the next frame back against the one sent (a `FrameReader`): the
   * template gets the frame's sequence number, then four bytes at a time are
   * compared where the frame is 4-byte aligned, byte by byte elsewhere.
   */
  readonly check = (bytes: Uint8Array, at: number, length: number): void => {
    const seq = this.received++;
    const k = seq & 0xff;
    const t = this.#templates[k];
    if (length !== t.length) {
      this.mismatched++;
      return;
    }
    t[SEQ_AT] = seq >>> 24;
    t[SEQ_AT + 1] = (seq >>> 16) & 0xff;
    t[SEQ_AT + 2] = (seq >>> 8) & 0xff;
    t[SEQ_AT + 3] = seq & 0xff;
    let i = 0;
    const address = bytes.byteOffset + at;
    if ((address & 3) === 0) {
      if (this.#words?.buffer !== bytes.buffer) {
        this.#words = new Int32Array(bytes.buffer, 0, bytes.buffer.byteLength >>> 2);
      }
      const words = this.#words;
      const tw = this.#templateWords[k];
      const base = address >>> 2;
      const n = length >>> 2;
      while (i < n && words[base + i] === tw[i]) i++;
      if (i < n) {
        this.mismatched++;
        return;
      }
      i = n << 2;
    }
    while (i < length && bytes[at + i] === t[i]) i++;
    if (i < length) this.mismatched++;
  };
}

/**
 * How long the demo keeps looking at idle rings before it sleeps on their
 * call eventfds, in ms: the device answers a batch within microseconds, and
 * a sleep and wake-up costs more than that.
 */
const SPIN_MS = 0.2;

async function demoTs(queues: number, seconds: number, size: number): Promise<number> {
  console.log(
    `demo: drivers/sim in loopback, ${queues} queue pair(s), TypeScript frontend, ` +
      `${size}-byte frames for ${seconds} s`,
  );
  const dir = Deno.makeTempDirSync({ prefix: "vhost-mdev-demo-" });
  const sock = `${dir}/vhost-net0.sock`;
  const device = await VhostMdevDevice.create(
    sim,
    { queues, options: { mode: "loopback", "event-idx": "true" } },
    {
      listener: (e) => {
        if (["start", "stop", "error", "warn", "connected"].includes(e.type)) {
          console.log(`  device ${e.type}: ${e.message}`);
        }
      },
    },
  );
  const server = VhostUserServer.listen(device, sock);
  const frontend = await VhostUserFrontend.connect(sock, { memoryMiB: 64 });
  let net: VirtioNetDriver | null = null;
  const streams = Array.from({ length: queues }, (_, p) => new FrameStream(p, size));
  const pairs = streams.map((_, p) => p);
  try {
    const ringSize = 1024;
    net = await VirtioNetDriver.start(frontend, { queuePairs: queues, ringSize, eventIdx: true });
    const started = performance.now();
    let lastTick = started;
    let lastRx = streams.map((s) => s.received);
    const end = started + seconds * 1000;
    // Move whole batches: take every frame back, then refill the ring once
    // half of it came back (at most a ring's worth in flight, so the device
    // never lacks a receive buffer; one publish and at most one kick per
    // half ring); sleep on the call eventfds only after SPIN_MS idle.
    let idleSince = -1;
    for (;;) {
      let progressed = false;
      for (let p = 0; p < queues; p++) {
        const s = streams[p];
        if (net.receiveWith(s.check, p) > 0) progressed = true;
        const room = ringSize - (s.sent - s.received);
        if (room >= ringSize / 2) s.sent += net.sendWith(room, s.write, p);
      }
      const now = performance.now();
      if (now >= end) break;
      if (now - lastTick >= 1000) {
        const per = streams.map((s, p) => `q${p} ${rate(s.received - lastRx[p], now - lastTick)}`);
        console.log(`  ${((now - started) / 1000).toFixed(0)}s  ${per.join("  ")}`);
        lastTick = now;
        lastRx = streams.map((s) => s.received);
        // Let the event loop run (device events, timers) once a second.
        await new Promise((r) => setTimeout(r, 0));
      }
      if (progressed) idleSince = -1;
      else if (idleSince < 0) idleSince = now;
      else if (now - idleSince >= SPIN_MS) {
        idleSince = -1;
        await net.waitRx(pairs, Math.max(1, end - now)).catch(() => {});
      }
    }
    // Drain what is still in flight.
    const drainEnd = performance.now() + 2000;
    while (streams.some((s) => s.received < s.sent) && performance.now() < drainEnd) {
      for (let p = 0; p < queues; p++) net.receiveWith(streams[p].check, p);
      await net.waitRx(pairs, 20).catch(() => {});
    }
    const elapsed = performance.now() - started;
    const stats = device.stats();
    console.log("summary:");
    for (const [p, s] of streams.entries()) {
      console.log(
        `  pair ${p}: sent ${s.sent}, received ${s.received} (${rate(s.received, elapsed)})`,
      );
    }
    printDeviceStats(stats);
    const totalSent = streams.reduce((a, s) => a + s.sent, 0);
    const totalRx = streams.reduce((a, s) => a + s.received, 0);
    const mismatched = streams.reduce((a, s) => a + s.mismatched, 0);
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
  const ip = "10.0.0.1";
  console.log(
    `demo: drivers/sim as a ping responder on ${ip}, ${queues} queue pair(s), ` +
      "a QEMU guest on its vhost-user socket",
  );
  const device = await VhostMdevDevice.create(
    sim,
    { queues, options: { mode: "responder", ip } },
    {
      listener: (e) => {
        if (["start", "stop", "error", "warn", "connected"].includes(e.type)) {
          console.log(`  device ${e.type}: ${e.message}`);
        }
      },
    },
  );
  using stop = abortOnTermination();
  try {
    const result = await runPingVm({
      device,
      ip,
      queues,
      log: (line) => console.log(`  ${line}`),
      signal: stop.signal,
    });
    console.log("summary:");
    for (const line of pingVmSummary(result)) console.log(`  ${line}`);
    return result.pass ? 0 : 1;
  } catch (e) {
    if (stop.signal.aborted) return 130;
    if (!(e instanceof MissingToolsError)) throw e;
    console.error(`error: ${e.message}`);
    return 2;
  } finally {
    await device.close();
  }
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
  const queues = Number(flags.queues ?? "1");
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
