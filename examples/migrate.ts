/**
 * Live-migrate a Linux guest between two QEMUs on this machine, each with its
 * own vhost-user backend process, and check that the guest's memory is
 * consistent afterwards.
 *
 *   deno run -A examples/migrate.ts [--backend sim|dpdk|both] [--runs N] [--log-buffers false]
 *
 * The guest keeps echo replies unread across the switch-over and verifies
 * their payloads byte for byte on the destination: a page the source backend
 * wrote without marking it in the dirty log reads stale there. The example
 * reports QEMU's `query-migrate` figures (status, total time, downtime),
 * traffic lost and corrupt payloads, and exits 0 only if every migration
 * completed, traffic continued on the destination and no payload was corrupt.
 *
 * @module
 */

import {
  integerFlag,
  type MigrationBackendKind,
  type MigrationVmResult,
  migrationVmSummary,
  parseFlags,
  runGuestCommand,
  runMigrationVm,
  usageError,
} from "@vhost-mdev/testing/guest";

const HELP = `Usage: deno run -A examples/migrate.ts [options]

Migrate a QEMU guest whose NIC is served over vhost-user from a source QEMU
to a destination QEMU (each with its own backend process) while the guest
verifies the payloads of echo replies held across the switch-over.

  --backend <sim|dpdk|both>  sim: vhost-mdev serve --driver sim (default);
                             dpdk: dpdk-testpmd net_vhost; both: alternate
  --runs <N>                 migrations per backend (default 1); medians at the end
  --log-buffers <true|false> false: the SOURCE sim backend does not log the
                             receive buffers it writes (deliberately broken)
  --seconds <N>              seconds of guest traffic (default 10)
  --hold <ms>                how long replies stay unread (default 5000: longer than
                             the migration, so they are read on the destination)
  --json                     print the result as one JSON line at the end
  --verbose                  echo both guest consoles
  --setup                    install qemu-system-x86, busybox-static, gcc with apt-get
  --help                     this text

Exit status: 0 every migration completed with traffic on the destination and
0 corrupt payloads, 1 otherwise, 2 usage error or missing tools.`;

/** Every run, and per backend the medians of QEMU's figures. */
interface MigrateReport {
  pass: boolean;
  runs: MigrationVmResult[];
  medians: Record<string, { totalMs: number; downtimeMs: number; runs: number }>;
}

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

function summary(report: MigrateReport): string[] {
  const lines = report.runs.flatMap((r, i) => [`run ${i + 1}:`, ...migrationVmSummary(r)]);
  const m = Object.entries(report.medians);
  if (report.runs.length > 1) {
    lines.push("medians (QEMU query-migrate):");
    for (const [b, v] of m) {
      lines.push(`  ${b}: total ${v.totalMs} ms, downtime ${v.downtimeMs} ms (${v.runs} runs)`);
    }
    if (report.medians.sim && report.medians.dpdk) {
      const { sim, dpdk } = report.medians;
      lines.push(
        `  sim/dpdk: total x${(sim.totalMs / dpdk.totalMs).toFixed(2)}, ` +
          `downtime x${(sim.downtimeMs / dpdk.downtimeMs).toFixed(2)}`,
      );
    }
  }
  lines.push(report.pass ? "PASS" : "FAIL");
  return lines;
}

async function main(args: string[]): Promise<number> {
  const flags = parseFlags(args, {
    backend: { type: "string", default: "sim" },
    runs: { type: "string", default: "1" },
    "log-buffers": { type: "string", default: "true" },
    seconds: { type: "string", default: "10" },
    hold: { type: "string", default: "5000" },
  }, HELP);
  if (flags === null) return 0;
  const runs = integerFlag("runs", flags.runs, 1, 50);
  const seconds = integerFlag("seconds", flags.seconds, 4, 600);
  const holdMs = integerFlag("hold", flags.hold, 0, 20_000);
  const backends: MigrationBackendKind[] = flags.backend === "both"
    ? ["sim", "dpdk"]
    : flags.backend === "sim" || flags.backend === "dpdk"
    ? [flags.backend]
    : usageError(`--backend ${flags.backend}: sim, dpdk or both`);
  if (!["true", "false"].includes(flags["log-buffers"])) {
    usageError(`--log-buffers ${flags["log-buffers"]}: true or false`);
  }
  const serveModule = import.meta.resolve("@vhost-mdev/cli/serve");
  const config = new URL("../deno.json", import.meta.url).pathname;
  return await runGuestCommand(async (signal) => {
    const report: MigrateReport = { pass: true, runs: [], medians: {} };
    for (let i = 0; i < runs; i++) {
      for (const backend of backends) {
        console.log(`=== ${backend}: migration ${i + 1} of ${runs}`);
        const result = await runMigrationVm({
          backend,
          serveModule,
          config,
          sourceOptions: { "log-buffers": flags["log-buffers"] },
          traffic: { seconds, holdMs },
          verbose: flags.verbose,
          setup: flags.setup && report.runs.length === 0,
          log: console.log,
          signal,
        });
        report.runs.push(result);
        report.pass &&= result.pass;
        console.log(migrationVmSummary(result).at(-1));
      }
    }
    for (const backend of backends) {
      const done = report.runs.filter((r) =>
        r.backend === backend && r.migration.status === "completed"
      );
      if (done.length === 0) continue;
      report.medians[backend] = {
        totalMs: median(done.map((r) => r.migration.totalMs ?? NaN)),
        downtimeMs: median(done.map((r) => r.migration.downtimeMs ?? NaN)),
        runs: done.length,
      };
    }
    return report;
  }, { summary, json: flags.json });
}

if (import.meta.main) Deno.exit(await main(Deno.args));
