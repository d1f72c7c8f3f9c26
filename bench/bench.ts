/**
 * `deno task bench`: the SDK's datapath against DPDK's, side by side in one
 * run. DPDK testpmd's `net_virtio_user` is the frontend; the backend is
 * either the SDK serving `drivers/sim` ("ours") or DPDK's own `net_vhost`
 * ("dpdk"). Runs alternate ours, dpdk, ours, dpdk, ... and each side's
 * result is the median of its runs. Then the kick relay latency: kick to
 * `ops.notify` through the main thread, and kick to a doorbell the relay
 * Worker stores itself, each against a C baseline. Then the blk part
 * (`blk.ts`): the SDK's blk device against qemu-storage-daemon's
 * vhost-user-blk export on the same file, the same way alternating.
 *
 * @module
 */

import { parseArgs as parseOptions } from "node:util";
import type { QueueStats } from "@vhost-mdev/sdk";
import { findExecutable } from "@vhost-mdev/testing";
import { type BaselineLatency, buildBaseline, runBaseline } from "./kick_baseline.ts";
import {
  KICK_GAP_US,
  KICK_WARMUP,
  type KickLatencyResult,
  type LatencyStats,
  measureKickLatency,
} from "./kick_latency.ts";
import { fixed, type Spread, spread, textTable } from "./summary.ts";
import { type RunConfig, runOnce, type RunResult, SCENARIOS, type Side } from "./throughput.ts";
import { BLK_WORKLOADS, blkBench, type BlkWorkloadResult } from "./blk.ts";
import { formatScale, scaleBench, type ScaleResult } from "./scale.ts";
import { formatIommu, IOMMU_WORKLOADS, iommuBench, type IommuWorkloadResult } from "./iommu.ts";

const HELP = `Usage: deno task bench [options]

Throughput of the SDK's sim backend and of DPDK's net_vhost backend, both
driven by DPDK testpmd's net_virtio_user frontend, alternating runs in one
invocation; then the kick relay latency (eventfd write -> ops.notify on the
main thread, and eventfd write -> doorbell stored by the relay Worker), with
p50/p99 ratios to a C two-thread baseline (write -> poll thread -> writer woke).

Options:
  --runs N              runs per side and scenario; the median is reported (default 5)
  --seconds S           measured seconds per run, after the warm-up (default 4)
  --warmup S            seconds of forwarding before measuring (default 1)
  --scenario LIST       comma-separated scenario ids (default all):
                          ${SCENARIOS.map((s) => s.id).join(", ")}
                        f2b = frontend->backend (virtio_user txonly vs sim sink / vhost rxonly)
                        b2f = backend->frontend (sim source / vhost txonly vs virtio_user rxonly)
                        none = skip the throughput part
  --blk LIST            comma-separated blk workloads (default all), none to skip:
                          ${BLK_WORKLOADS.map((w) => w.id).join(", ")}
                        ours (serve --driver blk) vs qemu-storage-daemon's vhost-user-blk
                        export on the same page-cached file, both driven by the test kit's
                        virtio-blk guest over its TypeScript frontend; --runs, --seconds,
                        --warmup and --backend-cpu apply
  --blk-file-mib N      size of the blk backing file (default 256)
  --iommu LIST          comma-separated vIOMMU workloads (default all), none to skip:
                          ${IOMMU_WORKLOADS.map((w) => w.id).join(", ")}
                        the sim behind the test kit's IOMMU (every address an IOVA the
                        device translates through its IOTLB, misses answered) against the
                        same without, both driven by the test kit's virtio-net guest
                        (testpmd's virtio_user speaks no IOTLB); --runs, --seconds,
                        --warmup and --backend-cpu apply
  --scale               also the scale part: one daemon's RSS with 1, 16 and 64 idle sim
                        devices, and 1 against 4 devices with traffic on one pooled
                        datapath Worker (one testpmd drives them all); --runs, --seconds,
                        --warmup and the CPUs apply
  --sides LIST          ours,dpdk (default both)
  --baseline DIR        measure a change: in place of DPDK's backend, the sim served from
                        DIR, another checkout of this repository (e.g. made with
                        git worktree add DIR COMMIT), in the same alternating runs; the
                        ratio column is then ours/baseline
  --latency-samples N   kicks per latency path, 0 to skip the latency part (default 5000)
  --backend-cpu C       CPU of the backend (default 0)
  --frontend-cpu C      CPU of the frontend testpmd (default 1)
  --testpmd PATH        dpdk-testpmd binary (default: found on PATH)
  --profile DIR         run our backend child with V8's tick profiler: one isolate-*.log per
                        thread and run in DIR (read with: node --prof-process FILE)
  --json                print one JSON document on stdout instead of tables
  --help                this text

Progress goes to stderr. Needs dpdk-testpmd (apt-get install dpdk-dev),
taskset (util-linux) and, for the blk part, qemu-storage-daemon
(apt-get install qemu-system-common).
`;

interface Args {
  runs: number;
  seconds: number;
  warmup: number;
  scenarios: string[];
  blk: string[];
  iommu: string[];
  blkFileMiB: number;
  sides: Side[];
  latencySamples: number;
  backendCpu: number;
  frontendCpu: number;
  testpmd: string | null;
  baseline: string | null;
  profile: string | null;
  json: boolean;
  help: boolean;
  scale: boolean;
  /** Internal: measure kick latency in this process and print it as JSON. */
  latencyChild: number | null;
}

class UsageError extends Error {}

function parseArgs(argv: readonly string[]): Args {
  const a: Args = {
    runs: 5,
    seconds: 4,
    warmup: 1,
    scenarios: SCENARIOS.map((s) => s.id),
    blk: BLK_WORKLOADS.map((w) => w.id),
    iommu: IOMMU_WORKLOADS.map((w) => w.id),
    blkFileMiB: 256,
    sides: ["ours", "dpdk"],
    latencySamples: 5000,
    backendCpu: 0,
    frontendCpu: 1,
    testpmd: null,
    baseline: null,
    profile: null,
    json: false,
    help: false,
    latencyChild: null,
    scale: false,
  };
  const num = (name: string, v: string, min: number, integer: boolean) => {
    const n = Number(v);
    if (!Number.isFinite(n) || n < min || (integer && !Number.isInteger(n))) {
      throw new UsageError(
        `--${name} ${v}: expected ${integer ? "an integer" : "a number"} >= ${min}`,
      );
    }
    return n;
  };
  let parsed;
  try {
    parsed = parseOptions({
      args: [...argv],
      strict: true,
      allowPositionals: false,
      options: {
        runs: { type: "string" },
        seconds: { type: "string" },
        warmup: { type: "string" },
        scenario: { type: "string" },
        blk: { type: "string" },
        iommu: { type: "string" },
        "blk-file-mib": { type: "string" },
        sides: { type: "string" },
        baseline: { type: "string" },
        "latency-samples": { type: "string" },
        "backend-cpu": { type: "string" },
        "frontend-cpu": { type: "string" },
        testpmd: { type: "string" },
        profile: { type: "string" },
        "latency-child": { type: "string" },
        json: { type: "boolean" },
        scale: { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
    });
  } catch (e) {
    throw new UsageError(`${e instanceof Error ? e.message : e} (see --help)`);
  }
  const v = parsed.values;
  /** A comma-separated list of known ids, or `none` for an empty one. */
  const ids = (name: string, text: string, known: readonly string[]): string[] => {
    const list = text.split(",").map((s) => s.trim()).filter((s) => s);
    if (list.length === 1 && list[0] === "none") return [];
    for (const id of list) {
      if (!known.includes(id)) {
        throw new UsageError(`--${name} ${id}: unknown; choose from ${known.join(", ")}`);
      }
    }
    if (list.length === 0) throw new UsageError(`--${name} needs at least one id, or none`);
    return list;
  };
  if (v.runs !== undefined) a.runs = num("runs", v.runs, 1, true);
  if (v.seconds !== undefined) a.seconds = num("seconds", v.seconds, 0.1, false);
  if (v.warmup !== undefined) a.warmup = num("warmup", v.warmup, 0, false);
  if (v.scenario !== undefined) {
    a.scenarios = ids("scenario", v.scenario, SCENARIOS.map((s) => s.id));
  }
  if (v.blk !== undefined) a.blk = ids("blk", v.blk, BLK_WORKLOADS.map((w) => w.id));
  if (v.iommu !== undefined) a.iommu = ids("iommu", v.iommu, IOMMU_WORKLOADS.map((w) => w.id));
  if (v["blk-file-mib"] !== undefined) {
    a.blkFileMiB = num("blk-file-mib", v["blk-file-mib"], 16, true);
  }
  if (v.sides !== undefined) {
    const sides = v.sides.split(",").map((s) => s.trim());
    for (const s of sides) {
      if (s !== "ours" && s !== "dpdk") throw new UsageError(`--sides ${s}: ours or dpdk`);
    }
    a.sides = [...new Set(sides)] as Side[];
  }
  if (v["latency-samples"] !== undefined) {
    a.latencySamples = num("latency-samples", v["latency-samples"], 0, true);
  }
  if (v["backend-cpu"] !== undefined) a.backendCpu = num("backend-cpu", v["backend-cpu"], 0, true);
  if (v["frontend-cpu"] !== undefined) {
    a.frontendCpu = num("frontend-cpu", v["frontend-cpu"], 0, true);
  }
  if (v.testpmd !== undefined) a.testpmd = v.testpmd;
  if (v.baseline !== undefined) a.baseline = v.baseline.replace(/\/$/, "");
  if (v.profile !== undefined) a.profile = v.profile;
  if (v["latency-child"] !== undefined) {
    a.latencyChild = num("latency-child", v["latency-child"], 1, true);
  }
  a.json = v.json ?? false;
  a.scale = v.scale ?? false;
  a.help = v.help ?? false;
  return a;
}

/** One side's runs of one scenario. */
export interface SideResult {
  /** Receiving side's Mpps of each run, in run order. */
  mpps: number[];
  /** Median, min and max of `mpps`. */
  summary: Spread;
  /** Sending side's Mpps of each run (what was offered). */
  offeredMpps: number[];
  /** Packets counted by the receiver in each run's measured interval. */
  packets: number[];
  /** Length of each run's measured interval, seconds. */
  seconds: number[];
  /** CPUs' worth of time other processes took during each run (noise). */
  foreignCpus: number[];
  /**
   * The frontend testpmd's busy cycles per packet in each run (null where
   * it printed none): what this backend costs the frontend. See
   * `RunResult.frontendCyclesPerPacket`.
   */
  frontendCyclesPerPacket: (number | null)[];
  /** The share of its CPU the frontend testpmd was busy in each run (0..1, or null). */
  frontendBusy: (number | null)[];
}

/** One scenario's results. */
export interface ScenarioResult {
  /** Scenario id (`f2b-64`). */
  id: string;
  /** Which way packets flow. */
  direction: string;
  /** Frame size, bytes. */
  frameSize: number;
  /** Ring layout the frontend asked for: `split` or `packed` (`VIRTIO_F_RING_PACKED`). */
  rings: "split" | "packed";
  /** The SDK serving drivers/sim, when measured. */
  ours: SideResult | null;
  /** DPDK net_vhost, when measured (with `--baseline`: the baseline's sim). */
  dpdk: SideResult | null;
  /** Median ours / median of the other side, when both were measured. */
  ratio: number | null;
  /**
   * Ours / the other side run by run (each run of ours against the other
   * side's run next to it), when both were measured: the
   * machine's speed can change between minutes, and a pair measured
   * seconds apart shares it.
   */
  pairRatios: Spread | null;
}

/** The whole report (`--json`). */
export interface BenchReport {
  /** Format version of this document. */
  version: 1;
  /** When the run started (ISO 8601). */
  date: string;
  /** How it ran. */
  config: {
    runs: number;
    seconds: number;
    warmupSeconds: number;
    backendCpu: number;
    frontendCpu: number;
    testpmd: string;
    deno: string;
    cpus: number;
    kernel: string;
    /** With `--baseline`: the checkout whose sim ran in place of DPDK's backend. */
    baseline: string | null;
  };
  /** Throughput per scenario. */
  scenarios: ScenarioResult[];
  /** Kick latency (to notify, to doorbell), or null when skipped. */
  latency: LatencyReport | null;
  /** blk: ours vs qemu-storage-daemon per workload (empty when skipped). */
  blk: BlkWorkloadResult[];
  /** vIOMMU: the sim with and without the IOTLB per workload (empty when skipped). */
  iommu: IommuWorkloadResult[];
  /** The scale part, or null when not asked for. */
  scale: ScaleResult | null;
}

/** Kick latency under one CPU placement. */
export interface LatencyPlacement {
  /** The `taskset -c` CPU list the measuring process ran on. */
  cpus: string;
  /** The SDK's relay. */
  sdk: KickLatencyResult;
  /** The C baseline, or null when it could not be built. */
  c: BaselineLatency | null;
}

/** The kick latency part of the report. */
export interface LatencyReport {
  /** Kicks measured per placement (after warm-up). */
  samples: number;
  /** Microseconds between a notify and the next kick. */
  gapUs: number;
  /** One entry per CPU placement. */
  placements: LatencyPlacement[];
  /** Why the C baseline is missing, or "". */
  baselineMissing: string;
}

function sideResult(runs: RunResult[]): SideResult {
  return {
    mpps: runs.map((r) => r.mpps),
    summary: spread(runs.map((r) => r.mpps)),
    offeredMpps: runs.map((r) => r.offeredMpps),
    packets: runs.map((r) => r.packets),
    seconds: runs.map((r) => r.seconds),
    foreignCpus: runs.map((r) => r.foreignCpus),
    frontendCyclesPerPacket: runs.map((r) => r.frontendCyclesPerPacket),
    frontendBusy: runs.map((r) => r.frontendBusy),
  };
}

function progress(message: string): void {
  console.error(`bench: ${message}`);
}

function kernel(): string {
  try {
    return Deno.readTextFileSync("/proc/sys/kernel/osrelease").trim();
  } catch {
    return "unknown";
  }
}

/** Run the benchmark as `args` ask; returns the report. */
async function bench(args: Args, testpmd: string, root: string): Promise<BenchReport> {
  const dir = await Deno.makeTempDir({ prefix: "vhost-mdev-bench-" });
  const report: BenchReport = {
    version: 1,
    date: new Date().toISOString(),
    config: {
      runs: args.runs,
      seconds: args.seconds,
      warmupSeconds: args.warmup,
      backendCpu: args.backendCpu,
      frontendCpu: args.frontendCpu,
      testpmd,
      deno: Deno.version.deno,
      cpus: navigator.hardwareConcurrency,
      kernel: kernel(),
      baseline: args.baseline,
    },
    scenarios: [],
    latency: null,
    blk: [],
    iommu: [],
    scale: null,
  };
  try {
    if (args.profile) await Deno.mkdir(args.profile, { recursive: true });
    const cfg: RunConfig = {
      testpmd,
      root,
      dir,
      warmupSeconds: args.warmup,
      seconds: args.seconds,
      backendCpu: args.backendCpu,
      frontendCpu: args.frontendCpu,
      // V8's tick profiler writes one isolate-*.log per isolate (main thread and
      // each datapath Worker) into the child's working directory.
      denoFlags: args.profile ? ["--v8-flags=--prof"] : undefined,
      childCwd: args.profile ? await Deno.realPath(args.profile) : undefined,
      baselineRoot: args.baseline ?? undefined,
    };
    for (const id of args.scenarios) {
      const scenario = SCENARIOS.find((s) => s.id === id)!;
      const runs: Record<Side, RunResult[]> = { ours: [], dpdk: [] };
      for (let i = 1; i <= args.runs; i++) {
        for (const side of args.sides) {
          const r = await runOnce(scenario, side, cfg);
          runs[side].push(r);
          progress(
            `${id} run ${i}/${args.runs} ${
              side === "dpdk" && args.baseline ? "baseline" : side
            }: ` +
              `${fixed(r.mpps, 3)} Mpps received ` +
              `(${r.packets} packets in ${fixed(r.seconds, 2)} s; sender ${
                fixed(r.offeredMpps, 3)
              } Mpps; other processes used ${fixed(r.foreignCpus, 2)} CPU${
                r.frontendCyclesPerPacket === null
                  ? ""
                  : `; frontend ${fixed(r.frontendCyclesPerPacket, 0)} cycles/packet, busy ${
                    fixed((r.frontendBusy ?? NaN) * 100, 0)
                  }%`
              })` +
              (r.deviceCounters ? `; device ${formatCounters(r.deviceCounters)}` : ""),
          );
        }
      }
      const ours = args.sides.includes("ours") ? sideResult(runs.ours) : null;
      const dpdk = args.sides.includes("dpdk") ? sideResult(runs.dpdk) : null;
      report.scenarios.push({
        id,
        direction: scenario.direction,
        frameSize: scenario.frameSize,
        rings: scenario.packed ? "packed" : "split",
        ours,
        dpdk,
        ratio: ours && dpdk ? ours.summary.median / dpdk.summary.median : null,
        pairRatios: ours && dpdk ? pairRatios(ours.mpps, dpdk.mpps) : null,
      });
    }
    if (args.latencySamples > 0) {
      report.latency = await latency(args, root, dir);
    }
    if (args.blk.length > 0) {
      report.blk = await blkBench({
        runs: args.runs,
        seconds: args.seconds,
        warmup: args.warmup,
        workloads: args.blk,
        backendCpu: args.backendCpu,
        root,
        dir,
        fileMiB: args.blkFileMiB,
        progress,
      });
    }
    if (args.iommu.length > 0) {
      report.iommu = await iommuBench({
        runs: args.runs,
        seconds: args.seconds,
        warmup: args.warmup,
        workloads: args.iommu,
        backendCpu: args.backendCpu,
        root,
        dir,
        progress,
      });
    }
    if (args.scale) {
      report.scale = await scaleBench({
        testpmd,
        root,
        dir,
        runs: args.runs,
        seconds: args.seconds,
        warmupSeconds: args.warmup,
        backendCpu: args.backendCpu,
        frontendCpu: args.frontendCpu,
        log: progress,
      });
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  return report;
}

/** Kick latency with the measuring process on one CPU, then on two. */
async function latency(args: Args, root: string, dir: string): Promise<LatencyReport> {
  const baseline = await buildBaseline(dir);
  const placements: LatencyPlacement[] = [];
  const cpuSets = [String(args.backendCpu), `${args.backendCpu},${args.frontendCpu}`];
  for (const cpus of cpuSets) {
    progress(`kick latency on CPU(s) ${cpus}, ${args.latencySamples} kicks per path`);
    const out = await new Deno.Command("taskset", {
      args: [
        "-c",
        cpus,
        Deno.execPath(),
        "run",
        "-A",
        "--quiet",
        `${root}/bench/bench.ts`,
        "--latency-child",
        String(args.latencySamples),
      ],
      cwd: root,
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!out.success) {
      throw new Error(
        `kick latency measurement failed: ${new TextDecoder().decode(out.stderr).trim()}`,
      );
    }
    const sdk = JSON.parse(new TextDecoder().decode(out.stdout)) as KickLatencyResult;
    const c = baseline.path
      ? await runBaseline(baseline.path, cpus, args.latencySamples, KICK_WARMUP, KICK_GAP_US)
      : null;
    placements.push({ cpus, sdk, c });
  }
  return {
    samples: args.latencySamples,
    gapUs: KICK_GAP_US,
    placements,
    baselineMissing: baseline.why,
  };
}

function range(s: Spread, digits: number): string {
  return `${fixed(s.median, digits)} (${fixed(s.min, digits)}-${fixed(s.max, digits)})`;
}

/**
 * The ratios `ours[i] / other[i]` of runs measured next to each other,
 * summarised: unlike the ratio of the medians, a change of the machine's
 * speed between pairs moves both sides of a pair alike.
 *
 * @example
 * ```ts
 * import { pairRatios } from "./bench.ts";
 * // Medians 20 and 17.5 (1.14), but each pair is 2 or 1.
 * pairRatios([10, 30], [5, 30]); // { median: 1.5, min: 1, max: 2 }
 * ```
 */
export function pairRatios(ours: readonly number[], other: readonly number[]): Spread {
  if (ours.length !== other.length) {
    throw new RangeError(`${ours.length} runs of ours against ${other.length} of the other side`);
  }
  return spread(ours.map((m, i) => m / other[i]));
}

/** Whether the frontend's cycles were counted in any of `side`'s runs. */
function frontendMeasured(side: SideResult | null): boolean {
  return side !== null && side.frontendCyclesPerPacket.some((v) => v !== null);
}

/** The report as text tables. */
export function formatReport(r: BenchReport): string {
  const out: string[] = [];
  const c = r.config;
  if (r.scenarios.length > 0) {
    out.push(
      `Throughput, Mpps received: median of ${c.runs} run(s) (min-max), ${c.seconds} s ` +
        `measured per run after ${c.warmupSeconds} s warm-up; backend on CPU ${c.backendCpu}, ` +
        `frontend (testpmd net_virtio_user) on CPU ${c.frontendCpu}`,
    );
    out.push("");
  }
  if (r.scenarios.length > 0) {
    out.push(textTable(
      c.baseline === null
        ? ["scenario", "frame", "rings", "ours (sim)", "DPDK net_vhost", "ours/DPDK", "by pair"]
        : [
          "scenario",
          "frame",
          "rings",
          "ours (sim)",
          "baseline (sim)",
          "ours/baseline",
          "by pair",
        ],
      r.scenarios.map((s) => [
        s.direction,
        `${s.frameSize} B`,
        s.rings,
        s.ours ? range(s.ours.summary, 3) : "-",
        s.dpdk ? range(s.dpdk.summary, 3) : "-",
        s.ratio === null ? "-" : fixed(s.ratio, 2),
        s.pairRatios === null ? "-" : range(s.pairRatios, 2),
      ]),
    ));
    if (r.scenarios.some((s) => s.pairRatios !== null)) {
      out.push("");
      out.push(
        "by pair: the ratio of each run of ours to the other side's run next to it, " +
          "median (min-max); the machine's speed can change between minutes, a pair shares it",
      );
    }
  }
  if (r.scenarios.some((s) => frontendMeasured(s.ours) || frontendMeasured(s.dpdk))) {
    out.push("");
    out.push(
      "Backend->frontend, the receiving frontend testpmd's work: its busy cycles per packet " +
        "(receive bursts that brought packets, from --record-core-cycles) and the share of its " +
        "CPU it was busy, median of the runs",
    );
    out.push("");
    const cell = (side: SideResult | null) => {
      if (!frontendMeasured(side)) return "-";
      const cpp = spread(side!.frontendCyclesPerPacket.filter((v) => v !== null));
      const busy = spread(side!.frontendBusy.filter((v) => v !== null));
      return `${fixed(cpp.median, 0)} cycles, ${fixed(busy.median * 100, 0)}% busy`;
    };
    out.push(textTable(
      [
        "scenario",
        "frame",
        "rings",
        "with ours",
        c.baseline === null ? "with DPDK" : "with baseline",
      ],
      r.scenarios
        .filter((s) => frontendMeasured(s.ours) || frontendMeasured(s.dpdk))
        .map((s) => [s.direction, `${s.frameSize} B`, s.rings, cell(s.ours), cell(s.dpdk)]),
    ));
  }
  const foreign = r.scenarios.flatMap((s) => [
    ...(s.ours?.foreignCpus ?? []),
    ...(s.dpdk?.foreignCpus ?? []),
  ]);
  if (foreign.length > 0) {
    const f = spread(foreign);
    out.push("");
    out.push(
      `Noise: other processes on the machine used ${fixed(f.median, 2)} CPU (median; ` +
        `${fixed(f.min, 2)}-${fixed(f.max, 2)}) of the ${c.cpus} during the measured intervals.`,
    );
  }
  if (r.latency) {
    const l = r.latency;
    const cell = (v: LatencyStats | undefined) =>
      v ? `${fixed(v.p50, 1)} / ${fixed(v.p99, 1)}` : "-";
    const rows: [string, (p: LatencyPlacement) => LatencyStats | undefined][] = [
      ["SDK: eventfd write -> ops.notify (device)", (p) => p.sdk.kickToNotify],
      ["SDK: eventfd write -> relay Worker woke", (p) => p.sdk.kickToRelayWake],
      ["SDK: eventfd write -> relay message handled", (p) => p.sdk.kickToRelayMessage],
      ["SDK: eventfd write -> doorbell stored by relay", (p) => p.sdk.kickToDoorbell],
      ["C: eventfd write -> poll() woke (one hop)", (p) => p.c?.oneHop],
      ["C: write -> relay thread -> writer woke (two hops)", (p) => p.c?.twoHop],
    ];
    // SDK / C two-hop, p50 and p99 each.
    const ratio = (v: LatencyStats | undefined, base: LatencyStats | undefined) =>
      v && base ? `${fixed(v.p50 / base.p50, 2)}x / ${fixed(v.p99 / base.p99, 2)}x` : "-";
    const ratios: [string, (p: LatencyPlacement) => LatencyStats | undefined][] = [
      ["ratio: write -> ops.notify / C two hops", (p) => p.sdk.kickToNotify],
      ["ratio: write -> doorbell / C two hops", (p) => p.sdk.kickToDoorbell],
    ];
    out.push("");
    out.push(
      `Kick latency, microseconds, p50 / p99 (${l.samples} kicks per placement, ` +
        `${l.gapUs} us between a notify or doorbell store and the next kick)` +
        (l.baselineMissing ? `; C baseline skipped: ${l.baselineMissing}` : ""),
    );
    out.push("");
    out.push(textTable(
      ["path", ...l.placements.map((p) => `CPU ${p.cpus}`)],
      [
        ...rows.map(([name, pick]) => [name, ...l.placements.map((p) => cell(pick(p)))]),
        ...ratios.map((
          [name, pick],
        ) => [name, ...l.placements.map((p) => ratio(pick(p), p.c?.twoHop))]),
      ],
    ));
  }
  if (r.blk.length > 0) {
    out.push("");
    out.push(
      `blk, median of ${c.runs} run(s) (min-max), ${c.seconds} s measured per workload after ` +
        `${c.warmupSeconds} s warm-up; backend on CPU ${c.backendCpu}; frontend: the test ` +
        `kit's virtio-blk guest (TypeScript vhost-user frontend)`,
    );
    out.push("");
    out.push(textTable(
      ["workload", "unit", "ours (blk)", "qemu-storage-daemon", "ours/qsd"],
      r.blk.map((b) => {
        const digits = b.unit === "IOPS" ? 0 : 1;
        return [
          b.label,
          b.unit,
          range(b.ours.summary, digits),
          range(b.qsd.summary, digits),
          fixed(b.ratio, 2),
        ];
      }),
    ));
  }
  if (r.iommu.length > 0) {
    out.push("");
    out.push(...formatIommu(r.iommu, c.runs));
  }
  if (r.scale) {
    out.push("");
    out.push(...formatScale(r.scale));
  }
  return out.join("\n");
}

async function main(argv: string[]): Promise<number> {
  let args: Args;
  try {
    args = parseArgs(argv);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    console.error(`bench: ${e.message}`);
    return 2;
  }
  if (args.help) {
    console.log(HELP);
    return 0;
  }
  if (args.latencyChild !== null) {
    const dir = await Deno.makeTempDir({ prefix: "vhost-mdev-kick-" });
    try {
      console.log(JSON.stringify(await measureKickLatency(dir, args.latencyChild)));
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
    return 0;
  }
  const testpmd = findExecutable(args.testpmd ?? "dpdk-testpmd") ??
    (args.scenarios.length === 0 ? "(not used)" : null);
  if (args.blk.length > 0 && !findExecutable("qemu-storage-daemon")) {
    console.error(
      "bench: qemu-storage-daemon not found; install it with `apt-get install " +
        "qemu-system-common` (or pass --blk none)",
    );
    return 1;
  }
  if (!testpmd) {
    console.error(
      `bench: ${args.testpmd ?? "dpdk-testpmd"} not found; install DPDK's testpmd with ` +
        "`apt-get install dpdk-dev` (or pass --testpmd PATH)",
    );
    return 1;
  }
  if (!findExecutable("taskset")) {
    console.error("bench: taskset not found; install it with `apt-get install util-linux`");
    return 1;
  }
  const root = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
  const sims = [
    ...(args.sides.includes("ours") ? [root] : []),
    ...(args.baseline !== null && args.sides.includes("dpdk") ? [args.baseline] : []),
  ];
  for (const dir of sims) {
    try {
      Deno.statSync(`${dir}/drivers/sim/mod.ts`);
    } catch {
      console.error(
        `bench: ${dir}/drivers/sim/mod.ts is missing: ${
          dir === root ? "our side" : "--baseline"
        } needs a checkout of this repository with drivers/sim`,
      );
      return 1;
    }
  }
  const report = await bench(args, testpmd, root);
  console.log(args.json ? JSON.stringify(report, null, 2) : formatReport(report));
  return 0;
}

if (import.meta.main) {
  try {
    Deno.exit(await main(Deno.args));
  } catch (e) {
    console.error(`bench: ${e instanceof Error ? e.message : e}`);
    Deno.exit(1);
  }
}

/** A device's ring counters by their declared names: `q0 packets=1 bytes=64 | q1 ...`. */
function formatCounters(rings: readonly QueueStats[]): string {
  return rings.map((r) =>
    `q${r.queue} ` +
    Object.entries(r).filter(([k]) => k !== "queue").map(([k, v]) => `${k}=${v}`).join(" ")
  ).join(" | ");
}
