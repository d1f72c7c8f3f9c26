/**
 * The vIOMMU part of `deno task bench`: what translating every ring and
 * buffer address through the device IOTLB costs. DPDK's testpmd
 * `net_virtio_user` speaks no IOTLB, so DPDK's backend cannot be driven
 * behind a vIOMMU here; the comparison is with our own figure without one,
 * in the same run. The backend is `serve --driver sim` (pinned to the
 * backend CPU, as in the throughput part); the frontend is the test kit's
 * virtio-net guest over its TypeScript vhost-user frontend, in this
 * process: "off" gives the device guest-physical addresses, "on" acks
 * `VIRTIO_F_ACCESS_PLATFORM` and gives it IOVAs that only the frontend's
 * IOMMU translates, answered on each IOTLB miss as QEMU does. Runs
 * alternate off, on, off, on, ...; each side's figure is the median of its
 * runs.
 *
 * Two figures per workload: packets a second (bounded by whichever side is
 * slower: the TypeScript guest, at these rates), and the backend's CPU time
 * per packet, which is what the IOTLB adds to.
 *
 * @module
 */

import { VhostUserFrontend, VirtioNetDriver } from "@vhost-mdev/testing";
import { cpuSnapshot } from "./cpu_load.ts";
import { SimServe } from "./sim_serve.ts";
import { fixed, type Spread, spread, textTable } from "./summary.ts";

/** One vIOMMU workload. */
export interface IommuWorkload {
  /** Id on the command line. */
  id: string;
  /** Which way packets flow. */
  direction: "frontend->backend" | "backend->frontend";
  /** Sim mode of the backend: it sinks what the guest sends, or sources what it receives. */
  mode: "sink" | "source";
  /** Ethernet frame size, bytes. */
  frameSize: number;
}

/** The workloads: 64-byte frames each way. */
export const IOMMU_WORKLOADS: readonly IommuWorkload[] = [
  { id: "f2b-64", direction: "frontend->backend", mode: "sink", frameSize: 64 },
  { id: "b2f-64", direction: "backend->frontend", mode: "source", frameSize: 64 },
];

/** One side's runs of one workload. */
export interface IommuSide {
  /** Mpps the guest moved in each run. */
  mpps: number[];
  /** Median, min and max of `mpps`. */
  summary: Spread;
  /** Backend CPU time per packet in each run, nanoseconds. */
  nsPerPacket: number[];
  /** Median, min and max of `nsPerPacket`. */
  cost: Spread;
}

/** One workload's result. */
export interface IommuWorkloadResult {
  /** Workload id. */
  id: string;
  /** Which way packets flow. */
  direction: string;
  /** Frame size, bytes. */
  frameSize: number;
  /** Without a vIOMMU. */
  off: IommuSide;
  /** Behind the frontend's IOMMU. */
  on: IommuSide;
  /** Median Mpps on / off. */
  ratio: number;
  /** Median backend ns per packet on / off. */
  costRatio: number;
  /** IOTLB misses the frontend answered in the last "on" run. */
  misses: number;
}

/** Options of {@linkcode iommuBench}. */
export interface IommuBenchConfig {
  /** Runs per side and workload. */
  runs: number;
  /** Measured seconds per run. */
  seconds: number;
  /** Seconds of traffic before measuring. */
  warmup: number;
  /** Workload ids. */
  workloads: readonly string[];
  /** CPU of the backend. */
  backendCpu: number;
  /** Repository root. */
  root: string;
  /** A scratch directory for the socket. */
  dir: string;
  /** Progress lines. */
  progress: (line: string) => void;
}

interface RunOutcome {
  mpps: number;
  nsPerPacket: number;
  misses: number;
}

/** Let the event loop turn (the frontend's backend channel, the child's output). */
function turn(): Promise<void> {
  return new Promise((r) => setTimeout(r, 0));
}

/** One run: start the backend, bring the guest up, move frames, measure. */
async function runOnce(
  w: IommuWorkload,
  iommu: boolean,
  cfg: IommuBenchConfig,
): Promise<RunOutcome> {
  const socket = `${cfg.dir}/iommu-${w.id}.sock`;
  const sim = await SimServe.start({
    socket,
    mode: w.mode,
    options: { "frame-size": String(w.frameSize) },
    cpu: cfg.backendCpu,
    root: cfg.root,
    statsPeriod: 1,
  });
  let fe: VhostUserFrontend | null = null;
  let driver: VirtioNetDriver | null = null;
  try {
    fe = await VhostUserFrontend.connect(socket, { memoryMiB: 16, iommu: iommu || undefined });
    driver = await VirtioNetDriver.start(fe, { iommu });
    await sim.waitStarted();
    const frame = new Uint8Array(w.frameSize);
    frame.fill(0xff, 0, 6);
    frame.set([0x52, 0x54, 0, 0x12, 0x34, 0x56, 0x08, 0x00], 6);
    const write = (bytes: Uint8Array, offset: number) => {
      bytes.set(frame, offset);
      return frame.length;
    };
    const read = () => {};
    const d = driver;
    const move = w.mode === "sink"
      ? () => d.sendWith(d.txRoom(), write)
      : () => d.receiveWith(read);
    const wait = w.mode === "sink"
      ? () => d.guest.waitUsed(1, 200).catch(() => 0)
      : () => d.waitRx(0, 200).catch(() => 0);
    // Moves frames until `until`; returns how many.
    const pump = async (until: number): Promise<number> => {
      let moved = 0, batches = 0;
      while (performance.now() < until) {
        const n = move();
        moved += n;
        if (n === 0) await wait();
        else if (++batches % 16 === 0) await turn();
      }
      return moved;
    };
    await pump(performance.now() + cfg.warmup * 1000);
    const cpu0 = cpuSnapshot([sim.pid]);
    const t0 = performance.now();
    const moved = await pump(t0 + cfg.seconds * 1000);
    const t1 = performance.now();
    const cpu1 = cpuSnapshot([sim.pid]);
    const cpuSeconds = (cpu1.ours - cpu0.ours) / 100;
    return {
      mpps: moved / ((t1 - t0) / 1000) / 1e6,
      nsPerPacket: moved > 0 ? cpuSeconds * 1e9 / moved : 0,
      misses: fe.iommu?.counters.missesAnswered ?? 0,
    };
  } finally {
    await driver?.stop().catch(() => {});
    fe?.close();
    await sim.close();
  }
}

function side(runs: RunOutcome[]): IommuSide {
  return {
    mpps: runs.map((r) => r.mpps),
    summary: spread(runs.map((r) => r.mpps)),
    nsPerPacket: runs.map((r) => r.nsPerPacket),
    cost: spread(runs.map((r) => r.nsPerPacket)),
  };
}

/** Run the vIOMMU workloads, alternating off and on. */
export async function iommuBench(cfg: IommuBenchConfig): Promise<IommuWorkloadResult[]> {
  const results: IommuWorkloadResult[] = [];
  for (const id of cfg.workloads) {
    const w = IOMMU_WORKLOADS.find((x) => x.id === id);
    if (!w) throw new Error(`vIOMMU workload ${id}: unknown`);
    const runs = { off: [] as RunOutcome[], on: [] as RunOutcome[] };
    for (let i = 1; i <= cfg.runs; i++) {
      for (const on of [false, true]) {
        const r = await runOnce(w, on, cfg);
        (on ? runs.on : runs.off).push(r);
        cfg.progress(
          `iommu ${id} run ${i}/${cfg.runs} ${on ? "on" : "off"}: ${fixed(r.mpps, 3)} Mpps, ` +
            `backend ${fixed(r.nsPerPacket, 0)} ns/packet` +
            (on ? `, ${r.misses} IOTLB misses answered` : ""),
        );
      }
    }
    const off = side(runs.off), on = side(runs.on);
    results.push({
      id,
      direction: w.direction,
      frameSize: w.frameSize,
      off,
      on,
      ratio: on.summary.median / off.summary.median,
      costRatio: on.cost.median / off.cost.median,
      misses: runs.on.at(-1)?.misses ?? 0,
    });
  }
  return results;
}

/** The results as a text table with its heading. */
export function formatIommu(results: readonly IommuWorkloadResult[], runs: number): string[] {
  const range = (s: Spread, digits: number) =>
    `${fixed(s.median, digits)} (${fixed(s.min, digits)}-${fixed(s.max, digits)})`;
  return [
    `vIOMMU: the sim behind the test kit's IOMMU (IOVAs, IOTLB misses answered) against the ` +
    `same without, median of ${runs} run(s) (min-max); frontend: the test kit's virtio-net ` +
    `guest (TypeScript); backend CPU time per packet from /proc`,
    "",
    textTable(
      ["workload", "Mpps off", "Mpps on", "on/off", "ns/packet off", "ns/packet on", "on/off"],
      results.map((r) => [
        `${r.direction} ${r.frameSize} B`,
        range(r.off.summary, 3),
        range(r.on.summary, 3),
        fixed(r.ratio, 2),
        range(r.off.cost, 0),
        range(r.on.cost, 0),
        fixed(r.costRatio, 2),
      ]),
    ),
  ];
}
