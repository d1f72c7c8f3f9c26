/**
 * A live migration of a vhost-user guest between two QEMUs on this machine,
 * each with its own backend process, with traffic that catches device writes
 * the backend did not log.
 *
 * The source QEMU boots the migration guest (`migration_guest.ts`); the
 * destination QEMU has the same command line plus `-incoming unix:PATH` and
 * waits. Once the guest's `migcheck` runs its rounds against the backend's
 * responder, the source is told to `migrate` over QMP and `query-migrate` is
 * polled until the migration completes (or fails); QEMU's own figures
 * (`total-time`, `downtime`, `setup-time`) are kept. The guest's console
 * continues on the destination QEMU's stdout after the switch-over, where
 * `migcheck`'s summary is read.
 *
 * The vhost-user side, per QEMU docs/interop/vhost-user.rst "Live
 * migration": QEMU sets `VHOST_F_LOG_ALL` and hands the source backend a
 * log (`SET_LOG_BASE`, protocol feature `LOG_SHMFD`); the backend marks every
 * page it writes (receive buffers, used rings) while QEMU copies dirty pages;
 * at the switch-over QEMU stops the source rings (`GET_VRING_BASE`) and starts
 * the destination's from that state (`SET_VRING_BASE`). After the switch-over
 * the destination QEMU announces the guest: with `RARP` negotiated and the
 * guest without `VIRTIO_NET_F_GUEST_ANNOUNCE`, it asks the backend to with
 * `SEND_RARP`.
 *
 * @module
 */

import { GUEST_TOOLS } from "./host_tools.ts";
import {
  type BackendCounters,
  type MigrationBackend,
  startDpdkBackend,
  startSimBackend,
} from "./migration_backend.ts";
import {
  fieldValues,
  MIGCHECK_CORRUPT_MARKER,
  MIGCHECK_DONE_MARKER,
  MIGCHECK_EXIT_MARKER,
  MIGCHECK_START_MARKER,
  type MigcheckRound,
  type MigcheckSummary,
  type MigcheckTraffic,
  migrationGuestArgs,
  parseMigcheckRounds,
  parseMigcheckSummary,
  prepareMigrationGuest,
} from "./migration_guest.ts";
import { neighbourAddress } from "./ping_vm.ts";
import { QemuVm } from "./qemu.ts";
import type { QmpClient } from "./qmp.ts";
import { C_COMPILER } from "./static_helper.ts";
import { GuestVmRun } from "./vm_run.ts";

/** Which vhost-user backend serves both QEMUs. */
export type MigrationBackendKind = "sim" | "dpdk";

/** Options of {@linkcode runMigrationVm}. */
export interface MigrationVmOptions {
  /** `sim` (this SDK's `serve --driver sim`) or `dpdk` (testpmd's `net_vhost`). */
  backend: MigrationBackendKind;
  /**
   * URL or path of the CLI's serve module, which the sim backends run
   * (`import.meta.resolve("@vhost-mdev/cli/serve")`); needed for `sim`.
   */
  serveModule?: string;
  /** The `deno.json` the serve module needs for its imports (default: Deno finds one). */
  config?: string;
  /** More sim options for the source backend only (`{ "log-buffers": "false" }`). */
  sourceOptions?: Record<string, string>;
  /** The responder's IPv4 address (default `10.0.0.1`); the guest takes a neighbour. */
  ip?: string;
  /**
   * The guest's traffic (defaults: for 10 s, every 200 ms 16 x 1400 bytes,
   * each round's replies held 5 s, longer than a migration here takes).
   */
  traffic?: Partial<MigcheckTraffic>;
  /**
   * Rounds `migcheck` reads on the source before the migration starts
   * (default 1: its socket then holds `holdMs` of replies).
   */
  roundsBefore?: number;
  /**
   * Guest RAM in KiB (default 256 MiB + 8 KiB: QEMU 7.2's TCG migration was
   * seen to lose guest-CPU writes with exactly 256 MiB, whatever the backend).
   */
  memoryKiB?: number;
  /** Echo the guest console through `log`. */
  verbose?: boolean;
  /** Install missing host packages with apt-get first. */
  setup?: boolean;
  /** Progress lines. Default: none. */
  log?: (line: string) => void;
  /** Aborting kills both QEMUs; the run then rejects. */
  signal?: AbortSignal;
}

/** What QEMU's `query-migrate` said when the migration ended. */
export interface MigrationFigures {
  /** `completed`, `failed`, `cancelled`. */
  status: string;
  /** `total-time`, ms. */
  totalMs: number | null;
  /** `downtime`, ms. */
  downtimeMs: number | null;
  /** `setup-time`, ms. */
  setupMs: number | null;
  /** RAM bytes sent (`ram.transferred`). */
  ramTransferred: number | null;
  /** QEMU's error description when it failed. */
  error: string | null;
}

/** What the guest saw. */
export interface MigrationGuestReport {
  /** `migcheck`'s summary. */
  summary: MigcheckSummary;
  /** `migcheck`'s exit status (0: every reply verified). */
  exit: number;
  /** Rounds whose line the source QEMU printed. */
  roundsOnSource: number;
  /** Rounds whose line the destination QEMU printed (after the switch-over). */
  roundsOnDestination: number;
  /** Rounds on the destination with every reply verified. */
  cleanRoundsOnDestination: number;
  /** Rounds with a corrupt or lost reply, wherever they ran. */
  badRounds: MigcheckRound[];
  /** The first `migcheck: corrupt ...` and `garbled ...` lines (at most 10). */
  corruptLines: string[];
  /** `eth0`'s counters at the end (`tx_packets`, `rx_packets`, ...). */
  counters: Record<string, number>;
}

/** What {@linkcode runMigrationVm} found. */
export interface MigrationVmResult {
  /** Completed, traffic continued on the destination, and 0 corrupt replies. */
  pass: boolean;
  /** Why it did not pass (empty on pass). */
  reasons: string[];
  /** The backend. */
  backend: MigrationBackendKind;
  /** QEMU's figures. */
  migration: MigrationFigures;
  /** The guest's report. */
  guest: MigrationGuestReport;
  /** The source backend's counters after the switch-over. */
  source: BackendCounters;
  /** The destination backend's counters at the end (all after the switch-over). */
  destination: BackendCounters;
  /** Phase times in ms: `image_ms`, `backends_ms`, `boot_ms`, `traffic_ms`, `migrate_ms`, `after_ms`, `total_ms`. */
  timings: Record<string, number>;
}

const TERMINAL = new Set(["completed", "failed", "cancelled"]);

/**
 * Start both backends and both QEMUs, migrate the guest while its `migcheck`
 * runs, and collect QEMU's figures, the guest's verdict and both backends'
 * counters. Everything is gone when it settles.
 *
 * @example Migrate a guest served by the sim driver
 * ```ts
 * import { migrationVmSummary, runMigrationVm } from "@vhost-mdev/testing/guest";
 *
 * const result = await runMigrationVm({
 *   backend: "sim",
 *   serveModule: import.meta.resolve("@vhost-mdev/cli/serve"),
 *   log: console.log,
 * });
 * console.log(migrationVmSummary(result).join("\n"));
 * ```
 *
 * @throws MissingToolsError when QEMU, a static busybox or a C compiler is missing.
 * @throws GuestConsoleError when the guest does not get through a phase in time.
 * @throws Error when a backend does not start (its output is in the message).
 */
export async function runMigrationVm(options: MigrationVmOptions): Promise<MigrationVmResult> {
  const { backend, verbose = false, signal } = options;
  const log = options.log ?? (() => {});
  const ip = options.ip ?? "10.0.0.1";
  const traffic: MigcheckTraffic = {
    seconds: 10,
    burst: 16,
    intervalMs: 200,
    holdMs: 5000,
    size: 1400,
    ...options.traffic,
  };
  if (backend === "sim" && !options.serveModule) {
    throw new TypeError("runMigrationVm: the sim backend needs serveModule");
  }
  await using run = await GuestVmRun.start({
    prepare: prepareMigrationGuest,
    setup: options.setup,
    setupTools: [...GUEST_TOOLS, C_COMPILER],
    verbose,
    log,
    signal,
  });
  const { timings } = run;
  const dir = await run.tempDir();
  const sockets = { source: `${dir}/source.sock`, destination: `${dir}/destination.sock` };
  const start = async (side: "source" | "destination"): Promise<MigrationBackend> => {
    const b = backend === "sim"
      ? await startSimBackend({
        side,
        serveModule: options.serveModule!,
        config: options.config,
        socket: sockets[side],
        ip,
        options: side === "source" ? options.sourceOptions : undefined,
        log,
      })
      : await startDpdkBackend({ side, socket: sockets[side], cpu: 1, log });
    run.defer(() => b.close());
    await waitForSocket(b, 20_000);
    return b;
  };
  const sourceBackend = await start("source");
  const destinationBackend = await start("destination");
  run.lap("backends_ms");

  const args = (socket: string) =>
    migrationGuestArgs(run.guest, {
      socket,
      ip: neighbourAddress(ip),
      prefix: 24,
      peer: ip,
      memoryKiB: options.memoryKiB ?? 256 * 1024 + 8,
      verboseKernel: verbose,
      ...traffic,
    });
  const source = run.launch(args(sockets.source), { qmp: `${dir}/qmp-source.sock` });
  const sourceQmp = await run.connectQmp();
  const incoming = `unix:${dir}/migration.sock`;
  const destination = QemuVm.launch({
    qemu: run.tools.get("qemu-system-x86_64"),
    args: [...args(sockets.destination), "-incoming", incoming],
    name: "destination",
    log,
    onConsoleLine: verbose ? (l) => log(`  destination console| ${l}`) : undefined,
    qmp: `${dir}/qmp-destination.sock`,
  });
  const killDestination = () => void destination.close();
  signal?.addEventListener("abort", killDestination);
  run.defer(() => signal?.removeEventListener("abort", killDestination));
  run.defer(() => destination.close());
  log(`destination: QEMU started (pid ${destination.pid}), waiting on ${incoming}`);
  const destinationQmp = await destination.connectQmp();
  run.defer(() => destinationQmp.close());

  await run.waitForBoot();
  await source.waitFor(MIGCHECK_START_MARKER, {
    timeoutMs: 60_000,
    what: "eth0 and the responder's first echo reply",
  });
  const roundsBefore = options.roundsBefore ?? 1;
  await source.waitFor(new RegExp(`migcheck: round=${roundsBefore} `), {
    timeoutMs: 30_000 + traffic.holdMs + roundsBefore * (traffic.intervalMs + 3000),
    what: `migcheck's first ${roundsBefore} rounds on the source`,
  });
  run.lap("traffic_ms");

  log(`migration: migrate to ${incoming}`);
  await sourceQmp.execute("migrate", { uri: incoming });
  const migration = await pollMigration(sourceQmp, log, 120_000);
  run.lap("migrate_ms");
  log(
    `migration: ${migration.status}, total ${migration.totalMs} ms, downtime ` +
      `${migration.downtimeMs} ms, setup ${migration.setupMs} ms` +
      (migration.error ? `: ${migration.error}` : ""),
  );
  const completed = migration.status === "completed";
  const sourceCounters = await sourceBackend.counters();
  if (completed) {
    const status = await destinationQmp.execute<{ status: string }>("query-status");
    log(`destination: ${status.status}`);
  }
  // The guest carries on where it runs now: the destination, or the source after a failure.
  const guestVm = completed ? destination : source;
  const budget = (traffic.seconds + 2) * 1000 + traffic.holdMs + 60_000;
  const done = await guestVm.waitFor(MIGCHECK_DONE_MARKER, {
    timeoutMs: budget,
    what: `migcheck's summary on the ${completed ? "destination" : "source"}`,
  });
  const exit = await guestVm.waitFor(MIGCHECK_EXIT_MARKER, {
    timeoutMs: 10_000,
    what: "the guest's interface counters",
  });
  const destinationCounters = await destinationBackend.counters();
  run.lap("after_ms");
  run.total();

  const onSource = parseMigcheckRounds(source.console);
  const onDestination = completed ? parseMigcheckRounds(destination.console) : [];
  const all = [...onSource, ...onDestination];
  const consoles = source.console + (completed ? destination.console : "");
  const guest: MigrationGuestReport = {
    summary: parseMigcheckSummary(done[1]),
    exit: Number(exit[1]),
    roundsOnSource: onSource.length,
    roundsOnDestination: onDestination.length,
    cleanRoundsOnDestination:
      onDestination.filter((r) => r.verified === r.sent && r.sent > 0).length,
    badRounds: all.filter((r) => r.corrupt > 0 || r.lost > 0),
    corruptLines: [...consoles.matchAll(MIGCHECK_CORRUPT_MARKER)].slice(0, 10).map((m) => m[1]),
    counters: Object.fromEntries(fieldValues(exit[2])),
  };
  const reasons: string[] = [];
  if (!completed) reasons.push(`migration ${migration.status}: ${migration.error ?? "no error"}`);
  if (guest.summary.corrupt > 0) {
    reasons.push(
      `${guest.summary.corrupt} reply payload(s) corrupt: guest memory on the destination ` +
        `lacks device writes (first: ${guest.corruptLines[0] ?? "?"})`,
    );
  }
  if (completed && guest.cleanRoundsOnDestination === 0) {
    reasons.push("no clean migcheck round ran on the destination");
  }
  if (completed && (destinationCounters.fromGuest === 0 || destinationCounters.toGuest === 0)) {
    reasons.push(
      `the destination backend carried no traffic (from guest ${destinationCounters.fromGuest}, ` +
        `to guest ${destinationCounters.toGuest})`,
    );
  }
  return {
    pass: reasons.length === 0,
    reasons,
    backend,
    migration,
    guest,
    source: sourceCounters,
    destination: destinationCounters,
    timings,
  };
}

/** Poll `query-migrate` every 50 ms until the status is terminal; log each new status. */
async function pollMigration(
  qmp: QmpClient,
  log: (line: string) => void,
  timeoutMs: number,
): Promise<MigrationFigures> {
  const deadline = performance.now() + timeoutMs;
  let last = "";
  while (true) {
    const info = await qmp.execute<Record<string, unknown>>("query-migrate");
    const status = String(info.status ?? "none");
    if (status !== last) {
      log(`migration: ${status}`);
      last = status;
    }
    if (TERMINAL.has(status)) {
      const num = (k: string) => typeof info[k] === "number" ? info[k] as number : null;
      const ram = info.ram as Record<string, unknown> | undefined;
      return {
        status,
        totalMs: num("total-time"),
        downtimeMs: num("downtime"),
        setupMs: num("setup-time"),
        ramTransferred: typeof ram?.transferred === "number" ? ram.transferred : null,
        error: typeof info["error-desc"] === "string" ? info["error-desc"] : null,
      };
    }
    if (performance.now() > deadline) {
      throw new Error(
        `migration still ${status} after ${timeoutMs / 1000} s: ${JSON.stringify(info)}`,
      );
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function waitForSocket(b: MigrationBackend, timeoutMs: number): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (true) {
    try {
      if ((await Deno.stat(b.socket)).isSocket) return;
    } catch {
      // not there yet
    }
    if (performance.now() > deadline) {
      throw new Error(`${b.name} did not create ${b.socket}\n${b.outputTail()}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * A run's summary as lines: QEMU's figures, the guest's verdict, both
 * backends' counters and the verdict (`PASS: ...` or `FAIL: <reasons>`).
 */
export function migrationVmSummary(result: MigrationVmResult): string[] {
  const { migration: m, guest: g, source: s, destination: d } = result;
  const counters = (c: BackendCounters) =>
    `from guest ${c.fromGuest}, to guest ${c.toGuest}` +
    Object.entries(c.device).map(([k, v]) => `, ${k} ${v}`).join("");
  return [
    `migration (${result.backend}): ${m.status}, total ${m.totalMs} ms, downtime ` +
    `${m.downtimeMs} ms, setup ${m.setupMs} ms, ${
      ((m.ramTransferred ?? 0) / 1e6).toFixed(1)
    } MB sent`,
    `guest: ${g.summary.rounds} rounds (${g.roundsOnSource} on the source, ` +
    `${g.roundsOnDestination} on the destination), ${g.summary.sent} sent, ` +
    `${g.summary.verified} verified, ${g.summary.corrupt} corrupt (${g.summary.garbled} ` +
    `garbled), ${g.summary.lost} lost, ` +
    `${g.summary.late} late`,
    ...g.badRounds.map((r) =>
      `  round ${r.round}: ${r.corrupt} corrupt, ${r.lost} missing of ${r.sent} at ${r.at} s`
    ),
    ...g.corruptLines.slice(0, 3).map((l) => `  ${l}`),
    `source backend: ${counters(s)}`,
    `destination backend: ${counters(d)}`,
    result.pass
      ? `PASS: migration completed, ${g.cleanRoundsOnDestination} clean rounds on the ` +
        `destination, 0 corrupt payloads`
      : `FAIL: ${result.reasons.join("; ")}`,
  ];
}
