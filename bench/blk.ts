/**
 * The blk part of `deno task bench`: the SDK's blk device ("ours", served
 * by `cli/serve.ts --driver blk`) against qemu-storage-daemon's
 * vhost-user-blk export ("qsd") on the same backing file, both driven by
 * the same frontend: the test kit's virtio-blk guest driver over its
 * TypeScript vhost-user frontend, in this process. Each run starts the
 * backend (pinned to the backend CPU with `taskset`), connects, and runs
 * every workload for the measured seconds after a warm-up; runs alternate
 * ours, qsd, ours, qsd, ... and each side's figure is the median of its
 * runs. The backing file is filled once and read before the first run, so
 * reads come from the host page cache.
 *
 * @module
 */

import { VhostUserFrontend, VirtioBlkDriver } from "@vhost-mdev/testing";
import { VirtioBlkRequestType } from "@vhost-mdev/sdk";
import { fixed, type Spread, spread } from "./summary.ts";

/** A blk workload. */
export interface BlkWorkload {
  /** Id on the command line. */
  id: string;
  /** What it measures. */
  label: string;
  /** Request type. */
  write: boolean;
  /** Bytes per request. */
  bytes: number;
  /** Requests kept in flight. */
  depth: number;
  /** Random offsets (else sequential). */
  random: boolean;
  /** Report MB/s (else IOPS). */
  mbps: boolean;
}

/** The workloads: 4 KiB random read and write at QD1 and QD32, 1 MiB sequential. */
export const BLK_WORKLOADS: readonly BlkWorkload[] = [
  {
    id: "randread-4k-qd1",
    label: "4 KiB random read, QD1",
    write: false,
    bytes: 4096,
    depth: 1,
    random: true,
    mbps: false,
  },
  {
    id: "randread-4k-qd32",
    label: "4 KiB random read, QD32",
    write: false,
    bytes: 4096,
    depth: 32,
    random: true,
    mbps: false,
  },
  {
    id: "randwrite-4k-qd1",
    label: "4 KiB random write, QD1",
    write: true,
    bytes: 4096,
    depth: 1,
    random: true,
    mbps: false,
  },
  {
    id: "randwrite-4k-qd32",
    label: "4 KiB random write, QD32",
    write: true,
    bytes: 4096,
    depth: 32,
    random: true,
    mbps: false,
  },
  {
    id: "seqread-1m-qd4",
    label: "1 MiB sequential read, QD4",
    write: false,
    bytes: 1 << 20,
    depth: 4,
    random: false,
    mbps: true,
  },
  {
    id: "seqwrite-1m-qd4",
    label: "1 MiB sequential write, QD4",
    write: true,
    bytes: 1 << 20,
    depth: 4,
    random: false,
    mbps: true,
  },
];

/** The two backends. */
export type BlkSide = "ours" | "qsd";

/** How to run the blk part. */
export interface BlkBenchConfig {
  /** Runs per side. */
  runs: number;
  /** Measured seconds per workload. */
  seconds: number;
  /** Seconds of each workload before measuring. */
  warmup: number;
  /** Workload ids. */
  workloads: string[];
  /** CPU of the backend. */
  backendCpu: number;
  /** The repository root. */
  root: string;
  /** A scratch directory (the backing file and sockets go there). */
  dir: string;
  /** Backing file size in MiB. */
  fileMiB: number;
  /** Progress lines. */
  progress: (line: string) => void;
}

/** One workload's figures per side. */
export interface BlkWorkloadResult {
  /** Workload id. */
  id: string;
  /** What it measures. */
  label: string;
  /** The unit of the figures: IOPS or MB/s. */
  unit: "IOPS" | "MB/s";
  /** Each side's runs and their spread. */
  ours: { runs: number[]; summary: Spread };
  /** qemu-storage-daemon. */
  qsd: { runs: number[]; summary: Spread };
  /** ours / qsd of the medians. */
  ratio: number;
}

/** Start one side's backend on `socket`; resolves once the frontend can connect. */
function startBackend(side: BlkSide, cfg: BlkBenchConfig, file: string, socket: string) {
  const argv = side === "ours"
    ? [
      Deno.execPath(),
      "run",
      "-A",
      "--quiet",
      `${cfg.root}/cli/serve.ts`,
      "--driver",
      "blk",
      "--file",
      file,
      "--socket",
      socket,
    ]
    : [
      "qemu-storage-daemon",
      "--blockdev",
      `driver=file,filename=${file},node-name=f`,
      "--export",
      `type=vhost-user-blk,id=e,node-name=f,addr.type=unix,addr.path=${socket},writable=on`,
    ];
  return new Deno.Command("taskset", {
    args: ["-c", String(cfg.backendCpu), ...argv],
    cwd: cfg.root,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
}

/** Keep `w.depth` requests in flight until `until`; returns requests completed. */
async function drive(blk: VirtioBlkDriver, w: BlkWorkload, until: number, sectors: number) {
  const perRequest = w.bytes / 512;
  const slots = Math.floor(sectors / perRequest);
  const data = new Uint8Array(w.bytes).fill(0x5a);
  let next = 0, done = 0;
  const worker = async () => {
    while (performance.now() < until) {
      const slot = w.random ? Math.floor(Math.random() * slots) : (next++ % slots);
      const c = await blk.submit(
        w.write
          ? { type: VirtioBlkRequestType.OUT, sector: slot * perRequest, out: data }
          : { type: VirtioBlkRequestType.IN, sector: slot * perRequest, inBytes: w.bytes },
      );
      if (c.status !== 0) throw new Error(`${w.id}: request failed with status ${c.status}`);
      done++;
    }
  };
  await Promise.all(Array.from({ length: w.depth }, worker));
  return done;
}

/** One run of one side: every workload, measured. Returns the figure per workload id. */
async function runSide(
  side: BlkSide,
  cfg: BlkBenchConfig,
  file: string,
  workloads: BlkWorkload[],
): Promise<Map<string, number>> {
  const socket = `${cfg.dir}/blk-${side}.sock`;
  await Deno.remove(socket).catch(() => {});
  const child = startBackend(side, cfg, file, socket);
  const stderr = new Response(child.stderr).text();
  const out = new Map<string, number>();
  let fe: VhostUserFrontend | null = null;
  try {
    fe = await VhostUserFrontend.connect(socket, { memoryMiB: 128, connectTimeoutMs: 20000 });
    const blk = await VirtioBlkDriver.start(fe, {
      ringSize: 128,
      maxRequestBytes: 1 << 20,
      timeoutMs: 30000,
    });
    const sectors = Number(blk.capacity);
    for (const w of workloads) {
      await drive(blk, w, performance.now() + cfg.warmup * 1000, sectors);
      const t0 = performance.now();
      const n = await drive(blk, w, t0 + cfg.seconds * 1000, sectors);
      const s = (performance.now() - t0) / 1000;
      out.set(w.id, w.mbps ? n * w.bytes / s / 1e6 : n / s);
    }
    await blk.stop();
  } catch (e) {
    child.kill("SIGKILL");
    throw new Error(`blk bench, ${side}: ${(e as Error).message}\n${(await stderr).trim()}`);
  } finally {
    fe?.close();
    try {
      child.kill("SIGTERM");
    } catch {
      // gone
    }
    await child.status;
  }
  return out;
}

/** Run the blk part; returns one result per workload. */
export async function blkBench(cfg: BlkBenchConfig): Promise<BlkWorkloadResult[]> {
  const workloads = cfg.workloads.map((id) => {
    const w = BLK_WORKLOADS.find((w) => w.id === id);
    if (!w) throw new Error(`blk workload ${id}: unknown`);
    return w;
  });
  const file = `${cfg.dir}/blk-bench.img`;
  // Fill the file (no holes) and read it once: reads then come from the page cache.
  {
    using f = await Deno.open(file, { write: true, create: true, truncate: true });
    const chunk = new Uint8Array(1 << 20);
    for (let i = 0; i < cfg.fileMiB; i++) {
      for (let at = 0; at < chunk.length; at += 65536) {
        crypto.getRandomValues(chunk.subarray(at, at + 65536));
      }
      await f.write(chunk);
    }
  }
  await Deno.readFile(file);
  const runs: Record<BlkSide, Map<string, number>[]> = { ours: [], qsd: [] };
  for (let i = 1; i <= cfg.runs; i++) {
    for (const side of ["ours", "qsd"] as const) {
      const r = await runSide(side, cfg, file, workloads);
      runs[side].push(r);
      cfg.progress(
        `blk run ${i}/${cfg.runs} ${side}: ` +
          workloads.map((w) => `${w.id} ${fixed(r.get(w.id)!, w.mbps ? 1 : 0)}`).join(", "),
      );
    }
  }
  return workloads.map((w) => {
    const ours = runs.ours.map((r) => r.get(w.id)!);
    const qsd = runs.qsd.map((r) => r.get(w.id)!);
    const o = spread(ours), q = spread(qsd);
    return {
      id: w.id,
      label: w.label,
      unit: w.mbps ? "MB/s" : "IOPS",
      ours: { runs: ours, summary: o },
      qsd: { runs: qsd, summary: q },
      ratio: o.median / q.median,
    };
  });
}
