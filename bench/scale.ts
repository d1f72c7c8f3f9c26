/**
 * The scale part of `deno task bench --scale`: one daemon process serving
 * many sim devices on a pool of datapath Workers.
 *
 * - Idle devices: the daemon's resident memory (`VmRSS`) with 1, 16 and 64
 *   sim devices created over its control socket and no frontend, and the
 *   cost per device after the first.
 * - Traffic on the pool: the daemon with one datapath Worker (pinned with
 *   the rest of the daemon to the backend CPU) serves 1 or 4 sim devices in
 *   sink mode; one testpmd on the frontend CPU drives all of them with
 *   `net_virtio_user` ports in txonly mode. The rate is the sum of the
 *   devices' transmit-ring packets over the measured interval; runs
 *   alternate 1 and 4 devices.
 *
 * @module
 */

import { callDaemon } from "@vhost-mdev/cli/control-client";
import type { QueueStats } from "@vhost-mdev/sdk";
import { Testpmd } from "@vhost-mdev/testing";

/** How to run the scale part. */
export interface ScaleConfig {
  /** dpdk-testpmd path. */
  testpmd: string;
  /** Repository root. */
  root: string;
  /** Directory for sockets. */
  dir: string;
  /** Runs per device count (median reported). */
  runs: number;
  /** Seconds measured per run. */
  seconds: number;
  /** Seconds of traffic before measuring. */
  warmupSeconds: number;
  /** CPU of the daemon. */
  backendCpu: number;
  /** CPU of testpmd. */
  frontendCpu: number;
  /** Progress lines. */
  log: (line: string) => void;
}

/** What the scale part measured. */
export interface ScaleResult {
  /** Resident set of the daemon, KiB, by idle device count. */
  idleRssKiB: { devices: number; rssKiB: number }[];
  /** (RSS with the most devices - RSS with one) / (most - 1), KiB. */
  perIdleDeviceKiB: number;
  /** Aggregate Mpps of each run, by device count. */
  traffic: { devices: number; mpps: number[] }[];
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

/** A daemon child pinned to `cpu`, its control socket ready. */
async function startDaemon(cfg: ScaleConfig, workers: number, tag: string) {
  const control = `${cfg.dir}/scale-${tag}.sock`;
  const child = new Deno.Command("taskset", {
    args: [
      "-c",
      String(cfg.backendCpu),
      Deno.execPath(),
      "run",
      "-A",
      "--quiet",
      `${cfg.root}/cli/main.ts`,
      "daemon",
      "--control",
      control,
      "--datapath-workers",
      String(workers),
    ],
    stdout: "piped",
    stderr: "piped",
    cwd: cfg.root,
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let seen = "";
  const deadline = Date.now() + 60_000;
  while (!/ready: control on/.test(seen)) {
    if (Date.now() > deadline) throw new Error(`the daemon did not start: ${seen.slice(-500)}`);
    const { value, done } = await reader.read();
    if (done) throw new Error(`the daemon exited: ${seen.slice(-500)}`);
    seen += value;
  }
  // Keep reading so the daemon never blocks on a full pipe.
  (async () => {
    while (!(await reader.read()).done) { /* drain */ }
  })().catch(() => {});
  child.stderr.pipeTo(new WritableStream()).catch(() => {});
  const stop = async () => {
    try {
      child.kill("SIGTERM");
    } catch {
      // already gone
    }
    await child.status;
  };
  return { control, pid: child.pid, stop };
}

async function rssKiB(pid: number): Promise<number> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  const m = /VmRSS:\s+(\d+) kB/.exec(status);
  if (!m) throw new Error(`no VmRSS in /proc/${pid}/status`);
  return Number(m[1]);
}

async function createSink(control: string, dir: string, name: string): Promise<string> {
  const socket = `${dir}/${name}.sock`;
  await callDaemon(control, "device_create", {
    name,
    driver: "sim",
    socket,
    options: { mode: "sink" },
    allowUnsealedMemory: true,
  });
  return socket;
}

async function txPackets(control: string, names: string[]): Promise<number> {
  let n = 0;
  for (const name of names) {
    const s = await callDaemon(control, "device_stats", { name }) as { rings: QueueStats[] };
    n += s.rings.filter((r) => r.queue % 2 === 1).reduce((a, r) => a + r.packets, 0);
  }
  return n;
}

/** Run the scale part. */
export async function scaleBench(cfg: ScaleConfig): Promise<ScaleResult> {
  // Idle devices.
  const idle = await startDaemon(cfg, 2, "idle");
  const idleRssKiB: { devices: number; rssKiB: number }[] = [];
  try {
    let made = 0;
    for (const target of [1, 16, 64]) {
      while (made < target) await createSink(idle.control, cfg.dir, `idle${made++}`);
      await new Promise((r) => setTimeout(r, 1000));
      const rss = await rssKiB(idle.pid);
      idleRssKiB.push({ devices: target, rssKiB: rss });
      cfg.log(`scale: ${target} idle device(s): daemon RSS ${(rss / 1024).toFixed(1)} MiB`);
    }
  } finally {
    await idle.stop();
  }
  const first = idleRssKiB[0], last = idleRssKiB[idleRssKiB.length - 1];
  const perIdleDeviceKiB = (last.rssKiB - first.rssKiB) / (last.devices - first.devices);

  // Traffic on a one-Worker pool: 1 device, then 4, alternating.
  const traffic = [{ devices: 1, mpps: [] as number[] }, { devices: 4, mpps: [] as number[] }];
  for (let run = 0; run < cfg.runs; run++) {
    for (const t of traffic) {
      const d = await startDaemon(cfg, 1, `traffic${run}-${t.devices}`);
      let tp: Testpmd | null = null;
      try {
        const names = Array.from({ length: t.devices }, (_, i) => `net${i}`);
        const sockets = [];
        for (const name of names) {
          sockets.push(await createSink(d.control, cfg.dir, `${name}-${run}`));
        }
        const tagged = names.map((n) => `${n}-${run}`);
        tp = await Testpmd.start({
          binary: cfg.testpmd,
          vdevs: sockets.map((s, i) => `net_virtio_user${i},path=${s},queues=1`),
          forwardMode: "txonly",
          txpkts: 64,
          cpu: cfg.frontendCpu,
        });
        for (let p = 0; p < t.devices; p++) await tp.waitForLinkUp(p);
        await tp.startForwarding();
        await new Promise((r) => setTimeout(r, cfg.warmupSeconds * 1000));
        const before = await txPackets(d.control, tagged), t0 = performance.now();
        await new Promise((r) => setTimeout(r, cfg.seconds * 1000));
        const after = await txPackets(d.control, tagged), t1 = performance.now();
        await tp.stopForwarding();
        const mpps = (after - before) / ((t1 - t0) / 1000) / 1e6;
        t.mpps.push(mpps);
        cfg.log(
          `scale: run ${run + 1}/${cfg.runs}, ${t.devices} device(s) on one Worker: ` +
            `${mpps.toFixed(3)} Mpps in all`,
        );
      } finally {
        await tp?.close();
        await d.stop();
      }
    }
  }
  return { idleRssKiB, perIdleDeviceKiB, traffic };
}

/** The scale part as text. */
export function formatScale(r: ScaleResult): string[] {
  const lines = ["Scale: one daemon, sim devices on a pool of datapath Workers", ""];
  for (const x of r.idleRssKiB) {
    lines.push(
      `  ${String(x.devices).padStart(3)} idle device(s): RSS ${(x.rssKiB / 1024).toFixed(1)} MiB`,
    );
  }
  lines.push(
    `  per idle device after the first: ${
      (r.perIdleDeviceKiB / 1024).toFixed(2)
    } MiB (target < 2 MiB)`,
    "",
  );
  for (const t of r.traffic) {
    lines.push(
      `  ${t.devices} device(s) with traffic on one Worker: ${
        median(t.mpps).toFixed(3)
      } Mpps in all ` +
        `(median of ${t.mpps.length}; ${t.mpps.map((m) => m.toFixed(3)).join(", ")})`,
    );
  }
  return lines;
}
