/**
 * The VFIO VM: the ifcvf driver on real kernel VFIO, without the hardware.
 * Boot the VFIO guest (`vfio_guest.ts`: q35, an emulated Intel IOMMU, a
 * virtio-net NIC behind it bound to vfio-pci) and run the host's Deno inside
 * it, from the host root over 9p, on `vfio_guest_main.ts`: the ifcvf driver
 * in generic mode drives the NIC through `/dev/vfio`, and the SDK's
 * TypeScript vhost-user frontend attaches to it as a VM would.
 *
 * The NIC's QEMU backend is a UDP socket pair on 127.0.0.1, so this side
 * sees the wire:
 *
 * - frames the frontend transmits leave through QEMU's device (DMA reads
 *   through the IOMMU) and must arrive here byte-identical;
 * - frames sent from here must land in the frontend's receive buffers (DMA
 *   writes), the guest program checking them and the MSI-X-driven call fd;
 * - after the round the guest program stops the device, checks the rings'
 *   state (GET_VRING_BASE) and that generic mode refuses to resume at a
 *   non-zero index instead of replaying old descriptors.
 *
 * The guest program runs from this package's files on the host, so the kit
 * must be loaded from a local checkout (a `file:` URL).
 *
 * @module
 */

import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { firstDifference, identifyFrame, testFrame } from "./frames.ts";
import type { QemuVm } from "./qemu.ts";
import { UdpPeer } from "./udp_peer.ts";
import { prepareVfioGuest, scratchDirFor, type VfioGuest, vfioGuestArgs } from "./vfio_guest.ts";
import { GuestVmRun } from "./vm_run.ts";

/** Options of {@linkcode runVfioVm}. */
export interface VfioVmOptions {
  /**
   * `program` (default): run the guest program's round of frames, the stop
   * and the refused resume; `infra`: only prove the plumbing (VFIO bound,
   * `/dev/vfio/N` present, Deno started from the host root in the guest).
   */
  mode?: "infra" | "program";
  /** Frames each way per round, 1 to 128 (default 16). */
  frames?: number;
  /** Seed of the test frames (default: random). */
  seed?: number;
  /** Guest CPUs (default 2). */
  cpus?: number;
  /** Guest RAM in MiB (default 2048). */
  memoryMiB?: number;
  /**
   * Directory the guest program runs in; its `deno.json` must resolve the
   * `@vhost-mdev/*` packages. Default: the workspace root above this kit.
   */
  cwd?: string;
  /** Print every kernel message and echo the guest console through `log`. */
  verbose?: boolean;
  /** Install missing host packages with apt-get first. */
  setup?: boolean;
  /** Progress lines (booting takes seconds). Default: none. */
  log?: (line: string) => void;
  /** Aborting kills QEMU; the run then resolves with a failed result. */
  signal?: AbortSignal;
}

/** What {@linkcode runVfioVm} found. */
export interface VfioVmResult {
  /** Whether every phase and every frame checked out. */
  pass: boolean;
  /** What ran. */
  mode: "infra" | "program";
  /** Why it did not pass (empty on pass). */
  reasons: string[];
  /** Frames from the guest's frontend that arrived here byte-identical. */
  framesToHost: number;
  /** Frames sent from here to the guest's NIC. */
  framesToGuest: number;
  /** Phase times in ms (`image_ms`, `boot_ms`, ..., `total_ms`). */
  timings: Record<string, number>;
}

/** The nearest directory at or above `start` whose `deno.json` is a workspace root. */
async function workspaceRoot(start: string): Promise<string> {
  for (let dir = start;; dir = dirname(dir)) {
    const text = await Deno.readTextFile(join(dir, "deno.json")).catch(() => "");
    if (/"workspace"\s*:/.test(text)) return dir;
    if (dirname(dir) === dir) return dirname(start);
  }
}

/**
 * Boot the VFIO guest and follow it through its phases: boot, modules, the
 * vfio-pci bind, the 9p mount, then (`program` mode) the guest program's
 * rounds, exchanging test frames with it over QEMU's UDP backend.
 *
 * Failures after the tools were found (a phase timing out, a frame that
 * differs, the guest program's `FAIL`) end up in the result's `reasons`;
 * the guest console's tail is logged with them.
 *
 * @example Only the plumbing
 * ```ts
 * import { runVfioVm, vfioVmSummary } from "@vhost-mdev/testing/guest";
 *
 * const result = await runVfioVm({ mode: "infra", log: console.log });
 * for (const line of vfioVmSummary(result)) console.log(line);
 * ```
 *
 * @throws MissingToolsError when QEMU or a static busybox is missing.
 */
export async function runVfioVm(options: VfioVmOptions = {}): Promise<VfioVmResult> {
  const mode = options.mode ?? "program";
  const frames = options.frames ?? 16;
  const seed = options.seed ?? Math.floor(Math.random() * 2 ** 31);
  const { verbose = false, signal } = options;
  const log = options.log ?? (() => {});
  if (!Number.isInteger(frames) || frames < 1 || frames > 128) {
    throw new RangeError(`frames ${frames}: 1 to 128`);
  }
  if (!import.meta.url.startsWith("file:")) {
    throw new Error(`the VFIO guest runs the kit from local files, not from ${import.meta.url}`);
  }
  const here = dirname(fileURLToPath(import.meta.url));
  const reasons: string[] = [];
  const counts = { toHost: 0, toGuest: 0 };
  const run = await GuestVmRun.start({
    prepare: prepareVfioGuest,
    setup: options.setup,
    verbose,
    log,
    signal,
  });
  try {
    const cwd = options.cwd ?? await workspaceRoot(here);
    const deno = Deno.execPath();
    const scratch = await scratchDirFor([cwd, here, deno]);
    const peer = await UdpPeer.bind();
    run.defer(() => peer.close());
    const qemuPort = await UdpPeer.freePort();
    try {
      await followGuest(run, {
        args: vfioGuestArgs(run.guest, {
          mode,
          deno,
          cwd,
          script: join(here, "vfio_guest_main.ts"),
          frames,
          seed,
          hostPort: peer.port,
          qemuPort,
          memoryMiB: options.memoryMiB ?? 2048,
          cpus: options.cpus ?? 2,
          scratch,
          verboseKernel: verbose,
        }),
        mode,
        rounds: { peer, qemuPort, frames, seed, reasons, log, timings: run.timings, counts },
      });
    } catch (e) {
      reasons.push((e as Error).message);
    }
  } finally {
    await run[Symbol.asyncDispose]();
  }
  run.total();
  const shown = verbose || reasons.some((r) => r.includes("--- guest console"));
  if (reasons.length > 0 && run.vm && !shown) {
    log(`--- guest console (last lines) ---\n${run.vm.consoleTail(30)}\n--- end of console ---`);
  }
  return {
    pass: reasons.length === 0,
    mode,
    reasons,
    framesToHost: counts.toHost,
    framesToGuest: counts.toGuest,
    timings: run.timings,
  };
}

/** What {@linkcode followGuest} launches and follows. */
interface GuestPhases {
  /** QEMU's arguments. */
  args: string[];
  /** What the guest runs. */
  mode: "infra" | "program";
  /** What {@linkcode followRounds} works on, but QEMU. */
  rounds: Omit<Rounds, "vm">;
}

/**
 * Launch QEMU and follow the guest through its phases: boot, modules, the
 * vfio-pci bind, the 9p mount, then Deno's start and (`program` mode) the
 * guest program's rounds; a phase the guest reports failed throws.
 */
async function followGuest(run: GuestVmRun<VfioGuest>, phases: GuestPhases): Promise<void> {
  const { peer, qemuPort, seed, log } = phases.rounds;
  const vm = run.launch(phases.args, {
    started: `: q35 + intel-iommu, NIC on udp 127.0.0.1:${qemuPort} ` +
      `<-> 127.0.0.1:${peer.port}, seed ${seed}`,
  });
  const failed =
    /vm-init: (FAILED[^\n]*|no PCI[^\n]*|[^\n]*did not appear[^\n]*|[^\n]*no IOMMU group[^\n]*)/;
  const step = async (re: RegExp, timeoutMs: number, what: string) => {
    const m = await vm.waitFor(new RegExp(`${re.source}|${failed.source}`), { timeoutMs, what });
    if (m[0].startsWith("vm-init: ") && failed.test(m[0]) && !re.test(m[0])) {
      throw new Error(`the guest failed: ${m[0]}`);
    }
    return m;
  };
  await step(/vm-init: userspace up/, 120_000, "the guest kernel to boot (generic kernel, TCG)");
  run.lap("boot_ms");
  await step(/vm-init: modules loaded/, 60_000, "vfio, vfio-pci, virtio-pci and 9p modules");
  run.lap("modules_ms");
  const bound = await step(
    /vm-init: vfio bound[^\n]*(?=\r?\n)/,
    30_000,
    "the NIC to bind to vfio-pci",
  );
  log(`guest: ${bound[0].replace("vm-init: ", "")}`);
  run.lap("vfio_bind_ms");
  await step(/vm-init: host root mounted/, 30_000, "the host root over 9p");
  run.lap("mount_ms");
  if (phases.mode === "infra") {
    const up = await step(
      /vfio-guest: deno up[^\n]*(?=\r?\n)/,
      180_000,
      "Deno to start inside the guest",
    );
    run.lap("deno_start_ms");
    log(`guest: ${up[0]}`);
    await step(/vm-init: done/, 60_000, "the guest to finish");
  } else {
    await step(/vfio-guest: started[^\n]*(?=\r?\n)/, 180_000, "Deno to start the guest program");
    run.lap("deno_start_ms");
    await followRounds({ vm, ...phases.rounds });
    run.lap("rounds_ms");
  }
  await run.waitForExit();
}

/** A run's summary as lines: timings, frame counts, and `PASS` or `FAIL: <reasons>`. */
export function vfioVmSummary(result: VfioVmResult): string[] {
  const timing = Object.entries(result.timings)
    .map(([k, v]) => `${k.replace(/_ms$/, "")} ${v} ms`).join(", ");
  return [
    `timing: ${timing}`,
    ...(result.mode === "program"
      ? [`frames: ${result.framesToHost} guest->host, ${result.framesToGuest} host->guest`]
      : []),
    result.pass ? "PASS" : `FAIL: ${result.reasons.join("\n")}`,
  ];
}

/** State {@linkcode followRounds} works on. */
interface Rounds {
  vm: QemuVm;
  peer: UdpPeer;
  qemuPort: number;
  frames: number;
  seed: number;
  reasons: string[];
  log: (line: string) => void;
  timings: Record<string, number>;
  counts: { toHost: number; toGuest: number };
}

/**
 * Follow the guest program's rounds: on `round R rx-ready` send this round's
 * frames to the guest; on `round R sent N` check that the N frames this
 * round's indices name arrived here byte-identical; end on the program's
 * `PASS`/`FAIL` line.
 */
async function followRounds(
  { vm, peer, qemuPort, frames, seed, reasons, log, timings, counts }: Rounds,
): Promise<void> {
  // Each marker must end with its newline: the console may hold half a line.
  const marker =
    /vfio-guest: (round (\d+) (rx-ready|sent (\d+)|received (\d+) ok)|device running[^\n]*|stopped; [^\n]*|PASS[^\n]*|FAIL[^\n]*)(?=\r?\n)/;
  let checked = 0; // frames of peer.received already verified
  let started = performance.now();
  while (true) {
    const m = await vm.waitFor(marker, {
      timeoutMs: 120_000,
      what: "the guest program's next step",
    });
    const what = m[1];
    if (what.startsWith("stopped; ")) {
      log(`guest: ${what}`);
      continue;
    }
    if (what.startsWith("device running")) {
      timings.device_start_ms = Math.round(performance.now() - started);
      log(`guest: ${what}`);
      continue;
    }
    if (what.startsWith("PASS")) {
      log(`guest: ${what}`);
      // A device that replayed old descriptors after the restart would send extra frames.
      await new Promise((r) => setTimeout(r, 500));
      if (peer.received.length !== checked) {
        reasons.push(
          `${
            peer.received.length - checked
          } frames reached the host beyond the ${checked} the guest sent`,
        );
      }
      return;
    }
    if (what.startsWith("FAIL")) {
      reasons.push(`guest program: ${what}`);
      return;
    }
    const round = Number(m[2]);
    const base = round * frames;
    if (m[3] === "rx-ready") {
      started = performance.now();
      for (let i = 0; i < frames; i++) {
        await peer.send(testFrame("to-guest", base + i, seed), qemuPort);
      }
      counts.toGuest += frames;
      log(`host: round ${round}: sent ${frames} frames to the guest's NIC`);
    } else if (m[4] !== undefined) {
      const n = Number(m[4]);
      if (!(await peer.waitForCount(checked + n, 10_000))) {
        reasons.push(
          `round ${round}: the guest sent ${n} frames, ${
            peer.received.length - checked
          } reached the host`,
        );
        return;
      }
      const got = peer.received.slice(checked, checked + n);
      const arrived = peer.received.length - checked;
      checked += n;
      for (let i = 0; i < n; i++) {
        const id = identifyFrame(got[i]);
        const expected = testFrame("to-host", base + i, seed);
        const diff = firstDifference(got[i], expected);
        if (diff >= 0) {
          const replay = id !== null && id.direction === "to-host" && id.seed === seed &&
              id.index < base
            ? `: that is frame ${id.index % frames} of round ${Math.floor(id.index / frames)}, ` +
              "sent again: the device replayed descriptors it had completed, so its ring state " +
              "did not survive the stop/start"
            : "";
          reasons.push(
            `round ${round}: frame ${i} differs at byte ${diff} (got ${got[i].length} bytes` +
              `${id ? `, test frame #${id.index} of seed ${id.seed}` : ", not a test frame"}; ` +
              `expected ${expected.length} bytes, test frame #${base + i}; ${arrived} frames ` +
              `arrived this round)${replay}`,
          );
          return;
        }
      }
      counts.toHost += n;
      timings[`round${round}_ms`] = Math.round(performance.now() - started);
      log(`host: round ${round}: ${n} frames from the guest arrived byte-identical`);
    } else {
      log(`guest: round ${round}: received ${m[5]} frames, checked in the frontend's buffers`);
    }
  }
}
