/**
 * Property-based fuzzing of the SDK's hostile-input surfaces: the
 * vhost-user session (`session`), the split-ring walker (`ring`), the
 * packed-ring device side (`packed-ring`) and guest memory tables
 * (`memory`). Each target gets an equal share of the time;
 * progress is printed as it goes, then a summary with the seed, the runs
 * and failures per target and, for a failure, the case and how to replay it.
 *
 * ```sh
 * deno run -A tests/fuzz/fuzz.ts --seconds 60
 * deno run -A tests/fuzz/fuzz.ts --seed 1234 --target ring
 * ```
 *
 * Exits 1 when any target failed.
 *
 * @module
 */

import { parseArgs } from "node:util";
import type { FuzzOptions, FuzzReport } from "./arbitraries.ts";
import { fuzzMemory } from "./memory_fuzz.ts";
import { fuzzPackedRing } from "./packed_ring_fuzz.ts";
import { fuzzRing } from "./ring_fuzz.ts";
import { fuzzSession } from "./session_fuzz.ts";

/** The fuzz targets by name, in the order they run. */
export const TARGETS: Readonly<Record<string, (options: FuzzOptions) => Promise<FuzzReport>>> = {
  session: fuzzSession,
  ring: fuzzRing,
  "packed-ring": fuzzPackedRing,
  memory: fuzzMemory,
};

const USAGE = `Fuzz the SDK with generated hostile inputs.

usage: deno run -A tests/fuzz/fuzz.ts [options]

  --seconds N   total time, shared equally by the targets (default 60)
  --seed S      seed of the case generator (default: random, printed)
  --target T    run only T: ${Object.keys(TARGETS).join(", ")}
  --runs N      stop each target after N cases (within the time)
  --watchdog N  kill the process when one case takes over N seconds (default 120),
                printing the case's replay command: a stuck case blocks timers
  --path P      with --seed and --target: replay the case at fast-check path P
                (that case only, unless --runs says more)
  --help        this text

A failure prints its case and the command that replays it; the same seed
generates the same cases in the same order.`;

/** How often a progress line is printed, per target. */
const PROGRESS_MS = 2000;

/** Default `--watchdog`: seconds a single case may take. */
const WATCHDOG_SECONDS = 120;

/**
 * The watchdog Worker: a case that blocks the main thread (a synchronous
 * call that never returns, a walk that never ends) stops every timer and
 * promise there, so only another thread can notice and say which case it
 * was. It reads the heartbeat the main thread bumps before each case.
 */
const WATCHDOG_SOURCE = `
self.onmessage = (e) => {
  const { shared, limit, seed, targets } = e.data;
  const beat = new Int32Array(shared);
  let last = -1, since = Date.now();
  setInterval(() => {
    const now = Atomics.load(beat, 0);
    if (now !== last) { last = now; since = Date.now(); return; }
    if (Date.now() - since < limit * 1000) return;
    const target = targets[Atomics.load(beat, 2)], runs = Atomics.load(beat, 1);
    const path = runs > 0 ? " --path " + (runs - 1) : "";
    console.error("watchdog: the " + target + " target has been in case " + runs + " for over " +
      limit + " s; killing the process. Replay: deno run -A tests/fuzz/fuzz.ts --seed " + seed +
      " --target " + target + path);
    Deno.kill(Deno.pid, "SIGKILL");
  }, 250);
};`;

/** Start the watchdog; returns the heartbeat and a function that stops it. */
function startWatchdog(
  limit: number,
  seed: number,
  targets: string[],
): { beat: Int32Array; stop: () => void } {
  const shared = new SharedArrayBuffer(12);
  const url = URL.createObjectURL(new Blob([WATCHDOG_SOURCE], { type: "text/javascript" }));
  const worker = new Worker(url, { type: "module" });
  worker.postMessage({ shared, limit, seed, targets });
  return {
    beat: new Int32Array(shared),
    stop: () => {
      worker.terminate();
      URL.revokeObjectURL(url);
    },
  };
}

/** A random 31-bit seed (fast-check takes 32-bit integers). */
export function randomSeed(): number {
  return crypto.getRandomValues(new Uint32Array(1))[0] >>> 1;
}

/** Parsed command line. */
export interface FuzzCommand {
  /** Total seconds. */
  seconds: number;
  /** Generator seed. */
  seed: number;
  /** Targets to run. */
  targets: string[];
  /** Cases per target at most. */
  runs?: number;
  /** fast-check path to replay. */
  path?: string;
  /** Seconds one case may take before the process is killed. */
  watchdog: number;
}

/**
 * Parse the arguments; returns the usage text for `--help`.
 *
 * @throws Error naming a bad option or value.
 */
export function parseCommand(args: string[]): FuzzCommand | string {
  const { values } = parseArgs({
    args,
    options: {
      seconds: { type: "string" },
      seed: { type: "string" },
      target: { type: "string" },
      runs: { type: "string" },
      path: { type: "string" },
      watchdog: { type: "string" },
      help: { type: "boolean" },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) return USAGE;
  const number = (name: string, text: string | undefined, fallback?: number) => {
    if (text === undefined) return fallback;
    const n = Number(text);
    if (!Number.isFinite(n) || n < 0) {
      throw new Error(`--${name} ${text}: not a non-negative number`);
    }
    return n;
  };
  const target = values.target;
  if (target !== undefined && !(target in TARGETS)) {
    throw new Error(`--target ${target}: not one of ${Object.keys(TARGETS).join(", ")}`);
  }
  if (values.path !== undefined && (target === undefined || values.seed === undefined)) {
    throw new Error("--path replays one case: give --seed and --target too");
  }
  const seed = number("seed", values.seed, randomSeed())!;
  if (!Number.isInteger(seed) || seed > 0xffffffff) {
    throw new Error(`--seed ${seed}: not a 32-bit integer`);
  }
  const runs = number("runs", values.runs);
  return {
    seconds: number("seconds", values.seconds, 60)!,
    seed,
    targets: target ? [target] : Object.keys(TARGETS),
    // A replay runs the one case (and shrinks it when it fails), unless told otherwise.
    runs: runs === undefined ? (values.path === undefined ? undefined : 1) : Math.floor(runs),
    path: values.path,
    watchdog: number("watchdog", values.watchdog, WATCHDOG_SECONDS)!,
  };
}

/** The lines that say how a target did (and how to replay a failure). */
export function describeReport(r: FuzzReport, seconds: number): string[] {
  const rate = seconds > 0 ? ` (${(r.runs / seconds).toFixed(0)}/s)` : "";
  const lines = [
    `${r.target.padEnd(11)} ${String(r.runs).padStart(8)} runs${rate}, ${r.failures} failure(s)`,
  ];
  for (const note of r.notes ?? []) lines.push(`         note: ${note}`);
  if (r.failures) {
    lines.push(`         error: ${r.error}`);
    if (r.counterexample) {
      const c = r.counterexample;
      lines.push(`         case: ${c.length > 4000 ? c.slice(0, 4000) + " …" : c}`);
    }
    const path = r.path ? ` --path ${r.path}` : "";
    lines.push(
      `         replay: deno run -A tests/fuzz/fuzz.ts --seed ${r.seed} --target ${r.target}${path}`,
    );
  }
  return lines;
}

/** Run the command; returns the exit code. */
export async function runFuzz(cmd: FuzzCommand): Promise<number> {
  const share = cmd.seconds / cmd.targets.length;
  console.log(
    `fuzzing ${cmd.targets.join(", ")} for ${cmd.seconds} s with seed ${cmd.seed}` +
      (cmd.path ? ` (replaying path ${cmd.path})` : ""),
  );
  const reports: { report: FuzzReport; seconds: number }[] = [];
  const watchdog = startWatchdog(cmd.watchdog, cmd.seed, cmd.targets);
  const { beat } = watchdog;
  for (const [index, target] of cmd.targets.entries()) {
    const start = performance.now();
    let printed = start;
    Atomics.store(beat, 1, 0);
    Atomics.store(beat, 2, index);
    Atomics.add(beat, 0, 1);
    const progress = (runs: number) => {
      Atomics.store(beat, 1, runs);
      Atomics.add(beat, 0, 1);
      const now = performance.now();
      if (now - printed < PROGRESS_MS) return;
      printed = now;
      console.log(`[${target}] ${runs} runs, ${((now - start) / 1000).toFixed(0)} s`);
    };
    let report: FuzzReport;
    try {
      report = await TARGETS[target]({
        seed: cmd.seed,
        seconds: share,
        numRuns: cmd.runs,
        path: cmd.path,
        progress,
      });
    } catch (e) {
      // The target itself broke (its setup, not a case): a failure too.
      report = {
        target,
        runs: 0,
        seed: cmd.seed,
        failures: 1,
        error: e instanceof Error ? `${e.name}: ${e.message}` : String(e),
      };
    }
    const seconds = (performance.now() - start) / 1000;
    console.log(`[${target}] done: ${report.runs} runs in ${seconds.toFixed(1)} s`);
    reports.push({ report, seconds });
  }
  watchdog.stop();
  const total = reports.reduce((n, r) => n + r.report.runs, 0);
  const failures = reports.reduce((n, r) => n + r.report.failures, 0);
  console.log(`\nsummary (seed ${cmd.seed}): ${total} runs, ${failures} failure(s)`);
  for (const { report, seconds } of reports) {
    for (const line of describeReport(report, seconds)) console.log("  " + line);
  }
  return failures ? 1 : 0;
}

if (import.meta.main) {
  let cmd: FuzzCommand | string;
  try {
    cmd = parseCommand(Deno.args);
  } catch (e) {
    console.error(`${(e as Error).message}\n\n${USAGE}`);
    Deno.exit(2);
  }
  if (typeof cmd === "string") {
    console.log(cmd);
  } else {
    Deno.exit(await runFuzz(cmd));
  }
}
