/**
 * The vhost-user backends of a live migration, each its own process, as an
 * operator runs them: one for the source QEMU, one for the destination.
 *
 * - `sim`: `vhost-mdev serve --driver sim --mode responder` (the SDK's CLI,
 *   run by module URL with `deno run`), which answers ARP and ICMP echo for
 *   its address; its `--log json --stats` lines give the ring counters and
 *   the device counters (`announcements`: `SEND_RARP` requests).
 * - `dpdk`: DPDK's own vhost-user backend, `dpdk-testpmd` with a
 *   `net_vhost` port (testpmd is the vhost-user server) in `icmpecho`
 *   forwarding mode, which answers ARP and ICMP echo for any address.
 *
 * @module
 */

import { Testpmd } from "../testpmd.ts";

/** What a backend counted: frames per direction, per ring, and device-wide. */
export interface BackendCounters {
  /** Frames the backend took from the guest (TX rings; testpmd: port RX). */
  fromGuest: number;
  /** Frames the backend gave the guest (RX rings; testpmd: port TX). */
  toGuest: number;
  /** Per-ring counters by name (sim only; empty for testpmd). */
  rings: Record<string, number>[];
  /** Device-wide counters by name (sim: `announcements`). */
  device: Record<string, number>;
}

/** A running backend process serving one vhost-user socket. */
export interface MigrationBackend {
  /** `sim` or `dpdk`, with the side (`sim (source)`). */
  readonly name: string;
  /** The vhost-user socket it serves. */
  readonly socket: string;
  /** Its counters now. */
  counters(): Promise<BackendCounters>;
  /** Its last lines of output, for errors. */
  outputTail(): string;
  /** Stop it and wait for it to exit. */
  close(): Promise<void>;
}

/** Options of {@linkcode startSimBackend}. */
export interface SimBackendOptions {
  /** The side, for messages (`source`, `destination`). */
  side: string;
  /** URL or path of the CLI's serve module (`import.meta.resolve("@vhost-mdev/cli/serve")`). */
  serveModule: string;
  /** The `deno.json` whose imports the serve module needs (absent: Deno finds one). */
  config?: string;
  /** The vhost-user socket to listen on. */
  socket: string;
  /** The responder's IPv4 address. */
  ip: string;
  /** More sim options (`{ "log-buffers": "false" }`). */
  options?: Record<string, string>;
  /** Progress lines (the device's lifecycle events). */
  log: (line: string) => void;
  /** How long to wait for the ready line, ms (default 30 000). */
  readyTimeoutMs?: number;
}

/** Lifecycle events of the sim backend that are worth a progress line. */
const SHOWN_EVENTS = new Set(["connected", "disconnected", "refused", "warn", "error"]);

/**
 * Start `serve --driver sim --mode responder` in its own process and wait
 * for its ready line.
 *
 * @throws Error with its output when it exits or is not ready in time.
 */
export async function startSimBackend(o: SimBackendOptions): Promise<MigrationBackend> {
  const args = [
    "run",
    "-A",
    "--quiet",
    ...(o.config ? ["--config", o.config] : []),
    o.serveModule,
    "--driver",
    "sim",
    "--mode",
    "responder",
    "--ip",
    o.ip,
    ...Object.entries(o.options ?? {}).map(([k, v]) => `--${k}=${v}`),
    "--socket",
    o.socket,
    "--log",
    "json",
    "--stats",
    "0.2",
  ];
  const name = `sim (${o.side})`;
  const child = new Deno.Command(Deno.execPath(), {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  const tail: string[] = [];
  let latest: BackendCounters | null = null;
  /** `time` of the latest stats line (when the backend printed it, ms since the epoch). */
  let latestTime = 0;
  let onReady!: () => void;
  const ready = new Promise<void>((r) => onReady = r);
  const statsWaiters: (() => void)[] = [];
  const line = (l: string) => {
    let msg: Record<string, unknown> | null = null;
    try {
      msg = JSON.parse(l);
    } catch {
      // a warning or a stack trace: kept for errors
    }
    if (msg?.type === "stats") {
      latest = simCounters(msg);
      latestTime = typeof msg.time === "number" ? msg.time : Date.now();
      for (const w of statsWaiters.splice(0)) w();
      return;
    }
    tail.push(l);
    if (tail.length > 60) tail.shift();
    if (msg?.type === "ready") onReady();
    else if (typeof msg?.type === "string" && SHOWN_EVENTS.has(msg.type)) {
      o.log(`${name}: ${msg.type}: ${msg.message}`);
    }
  };
  const readers = Promise.all([pumpLines(child.stdout, line), pumpLines(child.stderr, line)]);
  const exited = child.status.then(async (s) => {
    await readers;
    return s;
  });
  let gone = false;
  exited.then(() => gone = true);
  const outputTail = () => tail.join("\n");
  const close = async () => {
    if (!gone) {
      try {
        child.kill("SIGTERM");
      } catch {
        // it exited between the check and the signal
      }
    }
    const timer = setTimeout(() => {
      try {
        child.kill("SIGKILL");
      } catch {
        // gone
      }
    }, 5000);
    await exited;
    clearTimeout(timer);
  };
  const timeout = o.readyTimeoutMs ?? 30_000;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const outcome = await Promise.race([
    ready.then(() => "ready" as const),
    exited.then(() => "exited" as const),
    new Promise<"timeout">((r) => timer = setTimeout(() => r("timeout"), timeout)),
  ]);
  clearTimeout(timer);
  if (outcome !== "ready") {
    await close();
    throw new Error(
      `${name} backend ${outcome === "exited" ? "exited" : `not ready within ${timeout} ms`}: ` +
        `deno ${args.join(" ")}\n--- its output ---\n${outputTail()}`,
    );
  }
  o.log(`${name}: serving ${o.socket} (pid ${child.pid})`);
  return {
    name,
    socket: o.socket,
    outputTail,
    close,
    async counters() {
      // A stats line the backend printed after this call (a line read now
      // may have waited in the pipe): counters as of now.
      const asked = Date.now();
      const deadline = asked + 10_000;
      while (!gone && latestTime < asked && Date.now() < deadline) {
        let t: ReturnType<typeof setTimeout> | undefined;
        await Promise.race([
          new Promise<void>((r) => statsWaiters.push(r)),
          exited,
          new Promise((r) => t = setTimeout(r, 1000)),
        ]);
        clearTimeout(t);
      }
      if (latest === null) {
        throw new Error(`${name}: no stats line from the backend\n${outputTail()}`);
      }
      return latest;
    },
  };
}

function simCounters(msg: Record<string, unknown>): BackendCounters {
  const rings = (Array.isArray(msg.queues) ? msg.queues : []) as Record<string, number>[];
  const sum = (odd: number) =>
    rings.filter((r) => r.queue % 2 === odd).reduce((s, r) => s + (r.packets ?? 0), 0);
  return {
    fromGuest: sum(1),
    toGuest: sum(0),
    rings,
    device: (msg.totals ?? {}) as Record<string, number>,
  };
}

/** Options of {@linkcode startDpdkBackend}. */
export interface DpdkBackendOptions {
  /** The side, for messages and the EAL file prefix. */
  side: string;
  /** The vhost-user socket testpmd creates and listens on. */
  socket: string;
  /** CPU for testpmd's lcores (it busy-polls one). */
  cpu?: number;
  /** Progress lines. */
  log: (line: string) => void;
}

/**
 * Start `dpdk-testpmd` with `--vdev net_vhost0,iface=SOCKET,queues=1` in
 * `icmpecho` mode and start forwarding.
 *
 * @throws TestpmdError when testpmd is missing or does not start.
 */
export async function startDpdkBackend(o: DpdkBackendOptions): Promise<MigrationBackend> {
  const name = `dpdk (${o.side})`;
  const tp = await Testpmd.start({
    vdevs: `net_vhost0,iface=${o.socket},queues=1`,
    forwardMode: "icmpecho",
    cpu: o.cpu,
    memoryMb: 256,
    totalNumMbufs: 8192,
    filePrefix: `vmmig${Deno.pid}_${o.side}`,
  });
  try {
    await tp.startForwarding();
  } catch (e) {
    await tp.close();
    throw e;
  }
  o.log(`${name}: testpmd (pid ${tp.pid}) serving ${o.socket}, forwarding icmpecho`);
  return {
    name,
    socket: o.socket,
    outputTail: () => tp.outputTail(),
    close: async () => {
      await tp.close();
    },
    async counters() {
      const s = await tp.portStats(0);
      return { fromGuest: s.rxPackets, toGuest: s.txPackets, rings: [], device: {} };
    },
  };
}

async function pumpLines(
  stream: ReadableStream<Uint8Array>,
  line: (l: string) => void,
): Promise<void> {
  let partial = "";
  try {
    for await (const text of stream.pipeThrough(new TextDecoderStream())) {
      const parts = (partial + text).split("\n");
      partial = parts.pop() ?? "";
      for (const l of parts) line(l);
    }
  } catch {
    // the pipe broke because the process was killed
  }
  if (partial) line(partial);
}
