/**
 * One throughput run: DPDK testpmd's `net_virtio_user` frontend against one
 * backend, ours (`drivers/sim` served by the SDK in a pinned child) or
 * DPDK's (`net_vhost` in a second testpmd), in one direction at one frame
 * size. The rate is the receiving side's packet count over the measured
 * interval: the backend's for frontend->backend (sim sink ring counters /
 * vhost port RX), the frontend's port RX for backend->frontend, which is the
 * same counter for both backends.
 *
 * @module
 */

import type { QueueStats } from "@vhost-mdev/sdk";
import { Testpmd } from "@vhost-mdev/testing";
import { cpuSnapshot, foreignCpus } from "./cpu_load.ts";
import { ringPackets, SimServe } from "./sim_serve.ts";

/** Which way packets flow. */
export type Direction = "frontend->backend" | "backend->frontend";

/** Which backend serves the frontend. */
export type Side = "ours" | "dpdk";

/** One benchmark scenario. */
export interface Scenario {
  /** Short name (`f2b-64`). */
  id: string;
  /** Which way packets flow. */
  direction: Direction;
  /** Frame size in bytes (Ethernet header to payload end, no virtio-net header, no CRC). */
  frameSize: number;
  /** Packed rings (`virtio_user` with `packed_vq=1`; both backends see the same frontend). */
  packed?: boolean;
}

/** The scenarios the benchmark knows. */
export const SCENARIOS: readonly Scenario[] = [
  { id: "f2b-64", direction: "frontend->backend", frameSize: 64 },
  { id: "b2f-64", direction: "backend->frontend", frameSize: 64 },
  { id: "f2b-1518", direction: "frontend->backend", frameSize: 1518 },
  { id: "b2f-1518", direction: "backend->frontend", frameSize: 1518 },
  { id: "f2b-64-packed", direction: "frontend->backend", frameSize: 64, packed: true },
  { id: "b2f-64-packed", direction: "backend->frontend", frameSize: 64, packed: true },
];

/** How to run. */
export interface RunConfig {
  /** dpdk-testpmd path. */
  testpmd: string;
  /** Repository root. */
  root: string;
  /** Directory for sockets. */
  dir: string;
  /** Seconds of forwarding before the measured interval. */
  warmupSeconds: number;
  /** Seconds measured. */
  seconds: number;
  /** CPU of the backend (ours or DPDK's). */
  backendCpu: number;
  /** CPU of the frontend testpmd. */
  frontendCpu: number;
  /** Extra Deno flags for our backend child (profiling). */
  denoFlags?: readonly string[];
  /** Working directory of our backend child (where V8 profile logs land). */
  childCwd?: string;
  /** Another checkout whose sim runs as the `dpdk` side (`--baseline`). */
  baselineRoot?: string;
}

/** What one run measured. */
export interface RunResult {
  /** Backend. */
  side: Side;
  /** Packets the receiving side counted in the measured interval. */
  packets: number;
  /** Length of the measured interval, seconds. */
  seconds: number;
  /** Receiving side's rate, million packets per second. */
  mpps: number;
  /** The sending side's rate over the same interval (what was offered), Mpps. */
  offeredMpps: number;
  /**
   * CPU time other processes on the machine used during the measured
   * interval, in CPUs (0.5 = half of one CPU): noise from neighbours.
   */
  foreignCpus: number;
  /**
   * Ours: the device's counters at the end of the run, by the names the
   * driver declares (from `serve --stats`).
   */
  deviceCounters?: readonly QueueStats[];
  /**
   * Backend->frontend: the frontend testpmd's cycles per packet over the
   * run, warm-up included: its busy cycles (receive bursts that brought
   * packets, from `--record-core-cycles`) over the packets it received.
   * Null frontend->backend (see `runOnce`) or when testpmd printed none.
   */
  frontendCyclesPerPacket: number | null;
  /** The share of its CPU the frontend testpmd was busy (0..1), or null. */
  frontendBusy: number | null;
}

interface Counter {
  /** Take a sample: a count and the time (ms, `performance.now()`) it stands for. */
  sample(): Promise<{ time: number; count: number }>;
}

/** A testpmd port counter; the time is the middle of the command's round trip. */
function portCounter(tp: Testpmd, what: "rxPackets" | "txPackets"): Counter {
  return {
    async sample() {
      const t0 = performance.now();
      const s = await tp.portStats(0);
      return { time: (t0 + performance.now()) / 2, count: s[what] };
    },
  };
}

/** The sim's ring counters: guest TX rings are odd, guest RX rings even. */
function simCounter(sim: SimServe, rings: "tx" | "rx"): Counter {
  const odd = rings === "tx" ? 1 : 0;
  return {
    async sample() {
      const s = await sim.nextSample();
      return { time: s.time, count: ringPackets(s.queues, (q) => q % 2 === odd) };
    },
  };
}

/**
 * The sim's options for a frame size. Its MTU (config space, default 1500)
 * bounds generated frames to MTU + 14; a 1518-byte frame (the classic
 * maximum counting a VLAN tag, as testpmd sends it) needs an MTU of 1504.
 */
function simOptions(frameSize: number): Record<string, string> {
  const options: Record<string, string> = { "frame-size": String(frameSize) };
  if (frameSize > 1514) options.mtu = String(frameSize - 14);
  return options;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Run one scenario once against one backend; every process is gone when it returns. */
export async function runOnce(scenario: Scenario, side: Side, cfg: RunConfig): Promise<RunResult> {
  const f2b = scenario.direction === "frontend->backend";
  const sock = `${cfg.dir}/${side}-${scenario.id}-${crypto.randomUUID().slice(0, 8)}.sock`;
  let sim: SimServe | null = null;
  let vhost: Testpmd | null = null;
  let frontend: Testpmd | null = null;
  try {
    // The backend is the vhost-user server: it starts first.
    const simRoot = side === "ours" ? cfg.root : cfg.baselineRoot;
    if (simRoot !== undefined) {
      sim = await SimServe.start({
        socket: sock,
        mode: f2b ? "sink" : "source",
        options: simOptions(scenario.frameSize),
        cpu: cfg.backendCpu,
        root: simRoot,
        // Profiling is for our side only.
        denoFlags: side === "ours" ? cfg.denoFlags : undefined,
        cwd: side === "ours" ? cfg.childCwd : undefined,
      });
    } else {
      vhost = await Testpmd.start({
        binary: cfg.testpmd,
        vdevs: `net_vhost0,iface=${sock},queues=1`,
        forwardMode: f2b ? "rxonly" : "txonly",
        txpkts: scenario.frameSize,
        cpu: cfg.backendCpu,
      });
    }
    frontend = await Testpmd.start({
      binary: cfg.testpmd,
      vdevs: `net_virtio_user0,path=${sock},queues=1${scenario.packed ? ",packed_vq=1" : ""}`,
      forwardMode: f2b ? "txonly" : "rxonly",
      txpkts: scenario.frameSize,
      cpu: cfg.frontendCpu,
      // Its busy cycles, when it receives: what each backend costs the frontend
      // per packet. Sending (txonly), testpmd counts every burst, also those the
      // ring had no room for, so the count would not say who waits for whom.
      args: f2b ? [] : ["--record-core-cycles"],
    });
    await frontend.waitForLinkUp(0);
    if (vhost) await vhost.waitForLinkUp(0);
    if (sim) await sim.waitStarted();

    let receiver: Counter;
    let sender: Counter;
    if (f2b) {
      sender = portCounter(frontend, "txPackets");
      receiver = sim ? simCounter(sim, "tx") : portCounter(vhost!, "rxPackets");
    } else {
      receiver = portCounter(frontend, "rxPackets");
      sender = sim ? simCounter(sim, "rx") : portCounter(vhost!, "txPackets");
    }

    // The receiver runs first, so nothing the sender offers finds it stopped.
    let frontendStart: number;
    if (f2b) {
      if (vhost) await vhost.startForwarding();
      await frontend.startForwarding();
      frontendStart = performance.now();
    } else {
      await frontend.startForwarding();
      frontendStart = performance.now();
      if (vhost) await vhost.startForwarding();
    }
    await sleep(cfg.warmupSeconds * 1000);
    const pids = [frontend.pid, sim?.pid ?? vhost!.pid];
    const c0 = cpuSnapshot(pids);
    const r0 = await receiver.sample();
    const s0 = await sender.sample();
    await sleep(cfg.seconds * 1000);
    const r1 = await receiver.sample();
    const s1 = await sender.sample();
    const c1 = cpuSnapshot(pids);
    const deviceCounters = sim ? (await sim.nextSample()).queues : undefined;
    const forwarded = (performance.now() - frontendStart) / 1000;
    const cycles = (await frontend.stopForwarding()).cycles;

    const seconds = (r1.time - r0.time) / 1000;
    const packets = r1.count - r0.count;
    return {
      side,
      packets,
      seconds,
      mpps: packets / seconds / 1e6,
      offeredMpps: (s1.count - s0.count) / ((s1.time - s0.time) / 1000) / 1e6,
      foreignCpus: foreignCpus(c0, c1),
      deviceCounters,
      frontendCyclesPerPacket: cycles?.perPacket ?? null,
      frontendBusy: cycles ? Math.min(1, cycles.busyCycles / (cycles.mhz * 1e6 * forwarded)) : null,
    };
  } catch (e) {
    const tails = [
      sim ? `--- sim backend ---\n${sim.outputTail()}` : "",
      vhost ? `--- vhost testpmd ---\n${vhost.outputTail().slice(-2000)}` : "",
      frontend ? `--- virtio_user testpmd ---\n${frontend.outputTail().slice(-2000)}` : "",
    ].filter((t) => t).join("\n");
    const msg = e instanceof Error ? e.message : String(e);
    throw new Error(`${side} ${scenario.id}: ${msg}${tails ? `\n${tails}` : ""}`);
  } finally {
    await frontend?.close();
    await vhost?.close();
    await sim?.close();
    try {
      await Deno.remove(sock);
    } catch {
      // The server removed it already.
    }
  }
}
