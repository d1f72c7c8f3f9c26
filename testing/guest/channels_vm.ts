/**
 * The channels VM: serve a multiqueue device on a vhost-user socket, boot the
 * channels guest (`channels_guest.ts`) on one vCPU with a 2-queue-pair NIC on
 * it, and let the guest change its combined channel count (2, 1, 2, 1) while
 * it pings the device. Returns the guest's ping summary and counters, the
 * steps it took, the device's ring counters and every device event seen
 * during the run, with the place in that log where each step was reported.
 *
 * What a correct device shows: QEMU answers each change with
 * `SET_VRING_ENABLE` for pair 1's rings (2 and 3) only, so a driver with
 * `startRing`/`stopRing` gets `ring-start`/`ring-stop` events for those rings
 * while pair 0 (and the ping on it) runs on, and the device never stops as a
 * whole.
 *
 * @module
 */

import type { DeviceEvent, QueueStats, VhostMdevDevice } from "@vhost-mdev/sdk";
import {
  C_COMPILER,
  CHANNELS_DONE_MARKER,
  CHANNELS_STEP_MARKER,
  channelsGuestArgs,
  prepareChannelsGuest,
} from "./channels_guest.ts";
import { GUEST_TOOLS } from "./host_tools.ts";
import { COUNTERS_MARKER, parsePingReport, type PingGuestReport } from "./ping_guest.ts";
import { neighbourAddress } from "./ping_vm.ts";
import { GuestVmRun } from "./vm_run.ts";

/** Options of {@linkcode runChannelsVm}. */
export interface ChannelsVmOptions {
  /** The device the guest's NIC talks to (at least 2 queue pairs); served here, closed by the caller. */
  device: VhostMdevDevice;
  /** The device's IPv4 address; the guest takes a neighbour in the same /24. Default `10.0.0.1`. */
  ip?: string;
  /** Combined channel counts the guest sets, in order (default `[2, 1, 2, 1]`). */
  steps?: readonly number[];
  /** Seconds before the first step, between steps and after the last (default 1). */
  gap?: number;
  /** Seconds between echo requests (default 0.05). */
  interval?: number;
  /** MSI-X vectors of the guest's NIC (default 0: INTx; see the README on QEMU 7.2 and MSI-X). */
  vectors?: number;
  /** Print every kernel message and echo the guest console through `log`. */
  verbose?: boolean;
  /** Install missing host packages with apt-get first. */
  setup?: boolean;
  /** Progress lines (booting takes seconds). Default: none. */
  log?: (line: string) => void;
  /** Aborting kills QEMU; the run then rejects. */
  signal?: AbortSignal;
}

/** One channel change as the guest reported it. */
export interface ChannelStep {
  /** 1 for the first change. */
  step: number;
  /** Combined channel count asked for. */
  combined: number;
  /** Exit status of `set_channels` (0: set and read back). */
  exitCode: number;
  /** Guest uptime in seconds when it returned. */
  uptime: number;
  /** What `set_channels` printed. */
  output: string;
  /** How many device events had been seen when the host read the step's line. */
  eventsBefore: number;
}

/** What {@linkcode runChannelsVm} found. */
export interface ChannelsVmResult {
  /** The guest's ping summary and interface counters. */
  guest: PingGuestReport;
  /** The channel changes, in order. */
  steps: ChannelStep[];
  /** Whether ping still ran when the last step's gap ended (it covered every change). */
  pingOutlastedSteps: boolean;
  /** Every device event from serving the socket until QEMU exited. */
  events: DeviceEvent[];
  /** How many of `events` had been seen when the guest reported the steps done. */
  eventsAtStepsDone: number;
  /** The device's ring counters after the guest's last count. */
  rings: QueueStats[];
  /** Phase times in ms: `image_ms`, `boot_ms`, `channels_ms`, `ping_ms`, `shutdown_ms`, `total_ms`. */
  timings: Record<string, number>;
}

/**
 * Serve `options.device` on a vhost-user socket in a temporary directory,
 * boot the channels guest with a 2-queue-pair NIC (`-smp 1`) on it, and
 * record the device's events while the guest pings the device and changes
 * its channel count. The socket and QEMU are gone when it settles.
 *
 * @example Change the channel count under the sim responder
 * ```ts
 * import { VhostMdevDevice } from "@vhost-mdev/sdk";
 * import { driver } from "@vhost-mdev/sim";
 * import { runChannelsVm } from "@vhost-mdev/testing/guest";
 *
 * const device = await VhostMdevDevice.create(driver, {
 *   queues: 2,
 *   options: { mode: "responder", ip: "10.0.0.1" },
 * });
 * try {
 *   const run = await runChannelsVm({ device, ip: "10.0.0.1", log: console.log });
 *   console.log(run.guest.received, "of", run.guest.transmitted);
 *   for (const e of run.events) console.log(e.type, e.message);
 * } finally {
 *   await device.close();
 * }
 * ```
 *
 * @throws MissingToolsError when QEMU, a static busybox or (to build the
 *   helper) a C compiler is missing.
 * @throws GuestConsoleError when the guest does not get through a phase in
 *   time, or a channel change fails (the console tail says which).
 */
export async function runChannelsVm(options: ChannelsVmOptions): Promise<ChannelsVmResult> {
  const { device, verbose = false, signal } = options;
  const ip = options.ip ?? "10.0.0.1";
  const guestIp = neighbourAddress(ip);
  const steps = options.steps ?? [2, 1, 2, 1];
  const gap = options.gap ?? 1;
  const interval = options.interval ?? 0.05;
  const queues = Math.max(...steps);
  if (2 * queues > device.numQueues) {
    throw new RangeError(
      `steps go up to ${queues} queue pairs; the device has ${device.numQueues / 2}`,
    );
  }
  // Enough pings to run from before the first step to well after the last.
  const count = Math.ceil((gap * (steps.length + 1) + 1) / interval);
  const log = options.log ?? (() => {});
  await using run = await GuestVmRun.start({
    prepare: prepareChannelsGuest,
    setup: options.setup,
    setupTools: [...GUEST_TOOLS, C_COMPILER],
    verbose,
    log,
    signal,
  });
  const { guest, timings } = run;

  const events: DeviceEvent[] = [];
  run.defer(device.addListener((e) => events.push(e)));
  const socket = await run.serve(device, `${queues} queue pairs`);
  const vm = run.launch(channelsGuestArgs(guest, {
    socket,
    queues,
    ip: guestIp,
    prefix: 24,
    peer: ip,
    steps,
    gap,
    count,
    interval,
    memoryMiB: 256,
    vectors: options.vectors ?? 0,
    verboseKernel: verbose,
  }));
  await run.waitForBoot();
  await vm.waitFor(/vm-init: eth0 up/, { timeoutMs: 30_000, what: "eth0 to come up" });
  await vm.waitFor(/vm-channels: \S+ answers/, {
    timeoutMs: 40_000,
    what: "the device to answer the first echo request",
  });
  const done: ChannelStep[] = [];
  for (const [i, combined] of steps.entries()) {
    const m = await vm.waitFor(CHANNELS_STEP_MARKER, {
      timeoutMs: 30_000 + gap * 1000,
      what: `channel change ${i + 1} (combined ${combined})`,
    });
    const step: ChannelStep = {
      step: Number(m[1]),
      combined: Number(m[2]),
      exitCode: Number(m[3]),
      uptime: Number(m[4]),
      output: m[5],
      eventsBefore: events.length,
    };
    done.push(step);
    log(`guest: step ${step.step}: ${step.output} (exit ${step.exitCode})`);
  }
  const end = await vm.waitFor(CHANNELS_DONE_MARKER, {
    timeoutMs: 30_000 + gap * 1000,
    what: "the end of the channel changes",
  });
  const eventsAtStepsDone = events.length;
  run.lap("channels_ms");
  const m = await vm.waitFor(COUNTERS_MARKER, {
    timeoutMs: 40_000 + count * (interval * 1000 + 100),
    what: `the guest's ${count} pings and its counters`,
  });
  run.lap("ping_ms");
  const report = parsePingReport(m[1]);
  const rings = device.stats();
  await run.waitForExit();
  run.lap("shutdown_ms");
  run.total();
  return {
    guest: report,
    steps: done,
    pingOutlastedSteps: end[2] === "1",
    events,
    eventsAtStepsDone,
    rings,
    timings,
  };
}

/**
 * A run's device events as short lines (`+1234 ms ring-stop: ring 2 stopped:
 * disabled`), timed from the first, `debug` events left out unless asked for.
 */
export function channelsVmEventLines(result: ChannelsVmResult, debug = false): string[] {
  const t0 = result.events[0]?.time ?? 0;
  const marks = new Map<number, string[]>();
  for (const s of result.steps) {
    marks.set(s.eventsBefore, [
      ...(marks.get(s.eventsBefore) ?? []),
      `-- guest reported step ${s.step}: combined ${s.combined}`,
    ]);
  }
  const lines: string[] = [];
  result.events.forEach((e, i) => {
    for (const m of marks.get(i) ?? []) lines.push(m);
    if (i === result.eventsAtStepsDone) lines.push("-- guest reported the steps done");
    if (e.type !== "debug" || debug) lines.push(`+${e.time - t0} ms ${e.type}: ${e.message}`);
  });
  for (const m of marks.get(result.events.length) ?? []) lines.push(m);
  if (result.eventsAtStepsDone === result.events.length) {
    lines.push("-- guest reported the steps done");
  }
  return lines;
}
