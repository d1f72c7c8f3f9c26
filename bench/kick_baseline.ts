/**
 * The C baseline of the kick latency (`kick_baseline.c`): compiled with the
 * system's C compiler into a temporary directory when one is installed, run
 * with the same CPU placement as the TypeScript measurement.
 *
 * @module
 */

import { findExecutable } from "@vhost-mdev/testing";
import { type LatencyStats, latencyStats } from "./kick_latency.ts";

/** What the C program measured. */
export interface BaselineLatency {
  /** Write -> the relay thread returned from `poll` (where a C backend would call notify). */
  oneHop: LatencyStats;
  /** Write -> relay thread -> eventfd -> the writing thread woke (the SDK's two-thread path). */
  twoHop: LatencyStats;
}

/**
 * Compile the baseline into `dir`; returns the executable, or `null` (with
 * the reason) when there is no C compiler or compiling fails.
 */
export async function buildBaseline(dir: string): Promise<{ path: string | null; why: string }> {
  const cc = findExecutable("cc") ?? findExecutable("gcc");
  if (!cc) return { path: null, why: "no C compiler (apt-get install gcc)" };
  const source = new URL("./kick_baseline.c", import.meta.url).pathname;
  const path = `${dir}/kick_baseline`;
  const out = await new Deno.Command(cc, {
    args: ["-O2", "-pthread", "-o", path, source],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    return { path: null, why: `compiling failed: ${new TextDecoder().decode(out.stderr).trim()}` };
  }
  return { path, why: "" };
}

/** Run the baseline under `taskset -c cpus`. */
export async function runBaseline(
  path: string,
  cpus: string,
  samples: number,
  warmup: number,
  gapUs: number,
): Promise<BaselineLatency> {
  const out = await new Deno.Command("taskset", {
    args: ["-c", cpus, path, String(samples), String(warmup), String(gapUs)],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    throw new Error(`kick baseline failed: ${new TextDecoder().decode(out.stderr).trim()}`);
  }
  const r = JSON.parse(new TextDecoder().decode(out.stdout)) as {
    oneHopUs: number[];
    twoHopUs: number[];
  };
  // latencyStats takes milliseconds.
  return {
    oneHop: latencyStats(r.oneHopUs.map((v) => v / 1000)),
    twoHop: latencyStats(r.twoHopUs.map((v) => v / 1000)),
  };
}
