/**
 * The ping VM: serve a device on a vhost-user socket, boot the ping guest
 * (`ping_guest.ts`) under QEMU with its NIC on that socket, let the guest
 * ping the device, and compare both sides' packet counters:
 *
 * - guest `tx_packets` == packets the device took from its TX rings (odd
 *   rings 1, 3, ...), and
 * - guest `rx_packets` == packets the device put on its RX rings (even rings
 *   0, 2, ...).
 *
 * The device must answer ARP and ICMP echo for its address (the sim driver
 * does in `responder` mode).
 *
 * With `iommu` the NIC sits behind an emulated Intel IOMMU (`viommu.ts`):
 * the guest maps its buffers through it, and the device sees I/O virtual
 * addresses it must translate through vhost-user IOTLB messages.
 *
 * @module
 */

import type { QueueStats, VhostMdevDevice } from "@vhost-mdev/sdk";
import {
  COUNTERS_MARKER,
  parsePingReport,
  pingGuestArgs,
  type PingGuestReport,
  preparePingGuest,
} from "./ping_guest.ts";
import { type QemuVm, withMemoryHotplug } from "./qemu.ts";
import type { QmpClient } from "./qmp.ts";
import { GuestVmRun } from "./vm_run.ts";
import { type IommuReport, parseIommuReport, type ViommuMode } from "./viommu.ts";

/** Options of {@linkcode runPingVm}. */
export interface PingVmOptions {
  /** The device the guest's NIC talks to; served here, closed by the caller. */
  device: VhostMdevDevice;
  /** The device's IPv4 address; the guest takes a neighbour in the same /24. Default `10.0.0.1`. */
  ip?: string;
  /** Queue pairs of the guest's NIC (default: what the device offers). */
  queues?: number;
  /** Packed rings on the guest's NIC (`packed=on`; the device must offer them). */
  packed?: boolean;
  /** Echo requests the guest sends (default 20). */
  count?: number;
  /** Seconds between requests (default 0.2). */
  interval?: number;
  /** Print every kernel message and echo the guest console through `log`. */
  verbose?: boolean;
  /** Install missing host packages with apt-get first. */
  setup?: boolean;
  /** Progress lines (booting takes seconds). Default: none. */
  log?: (line: string) => void;
  /** Aborting kills QEMU; the run then rejects. */
  signal?: AbortSignal;
  /**
   * Called once the guest's `eth0` is up and its ping starts, with a QMP
   * connection to QEMU (launched with a QMP socket only when this is given):
   * e.g. pause and resume the guest while it pings. The run waits for it
   * before waiting for the guest's counters, and rejects if it rejects; the
   * ping should be long enough (`count` x `interval` of guest time) to
   * outlast it.
   */
  during?: (run: PingVmRun) => Promise<void>;
  /**
   * DIMM slots for memory hot-plug (default none): QEMU gets
   * `-m 256M,slots=N,maxmem=MAX` beside its 256 MiB of shared boot RAM, so a
   * {@linkcode PingVmOptions.during} hook can add memory over QMP
   * (`object-add` a `memory-backend-memfd` with `share: true`, then
   * `device_add` a `pc-dimm`) and remove it again (`device_del`, then
   * `object-del`) while the guest pings.
   */
  hotplugSlots?: number;
  /** Most guest RAM in MiB with hot-plugged DIMMs (default 2048; only with `hotplugSlots`). */
  maxMemMiB?: number;
  /**
   * Put the guest's NIC behind an emulated Intel IOMMU (default none):
   * `true` boots a q35 machine (`kernel-irqchip=split`) with
   * `-device intel-iommu,intremap=on,device-iotlb=on`, the guest kernel
   * with `intel_iommu=on`, and the NIC with `iommu_platform=on,ats=on` on a
   * PCIe root port, so the device must offer `VIRTIO_F_ACCESS_PLATFORM` and
   * translate the guest's I/O virtual addresses through vhost-user IOTLB
   * messages. `"platform-off"` is the same machine and guest with the NIC's
   * DMA bypassing the IOMMU (no `iommu_platform`): it proves the machine
   * and guest side alone. Either way the run fails when the guest's NIC
   * ends up in no IOMMU group, and {@linkcode PingVmResult.iommu} holds the
   * guest's report.
   */
  iommu?: ViommuMode;
}

/** What {@linkcode PingVmOptions.during} gets. */
export interface PingVmRun {
  /** QMP, past capabilities negotiation; closed by the run afterwards. */
  qmp: QmpClient;
  /** The running guest (its console so far, `waitFor` more). */
  vm: QemuVm;
  /** The device the guest pings. */
  device: VhostMdevDevice;
}

/** What {@linkcode runPingVm} found. */
export interface PingVmResult {
  /** Whether ping lost nothing and both sides' counters agree. */
  pass: boolean;
  /** Why it did not pass (empty on pass). */
  reasons: string[];
  /** The guest's ping summary and interface counters. */
  guest: PingGuestReport;
  /** The device's ring counters: TX rings (odd), RX rings (even), each ring. */
  device: { txRingPackets: number; rxRingPackets: number; rings: QueueStats[] };
  /**
   * The device's own counters (`device.deviceStats()`), read with the ring
   * counters, while the guest is still attached: e.g. `iotlb_updates`,
   * `iotlb_misses` for a device behind a vIOMMU.
   */
  deviceStats: Record<string, number>;
  /**
   * With {@linkcode PingVmOptions.iommu}: what the guest reported about its
   * IOMMU (the NIC's group and domain type, ATS, the kernel's DMAR
   * messages); `null` when it printed no report.
   */
  iommu?: IommuReport | null;
  /**
   * Phase times in ms: `image_ms`, `boot_ms`, `ping_ms`, `shutdown_ms`,
   * `total_ms`; with {@linkcode PingVmOptions.during} also `during_ms` (the
   * hook, which `ping_ms` then excludes).
   */
  timings: Record<string, number>;
}

/**
 * The guest's address for a device at `ip`: same /24, host number 2 (3 when
 * the device is .2).
 *
 * @throws TypeError when `ip` is not a dotted IPv4 address.
 */
export function neighbourAddress(ip: string): string {
  const parts = ip.split(".").map(Number);
  if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p) || p < 0 || p > 255)) {
    throw new TypeError(`${ip} is not an IPv4 address like 10.0.0.1`);
  }
  parts[3] = parts[3] === 2 ? 3 : 2;
  return parts.join(".");
}

/**
 * Serve `options.device` on a vhost-user socket in a temporary directory,
 * boot the ping guest under QEMU (TCG) with its NIC on that socket, wait for
 * its pings and counters, and check them against the device's ring
 * counters. The socket and QEMU are gone when it settles.
 *
 * @example Ping the sim driver's responder from a guest
 * ```ts
 * import { VhostMdevDevice } from "@vhost-mdev/sdk";
 * import { driver } from "@vhost-mdev/sim";
 * import { pingVmSummary, runPingVm } from "@vhost-mdev/testing/guest";
 *
 * const device = await VhostMdevDevice.create(driver, {
 *   queues: 1,
 *   options: { mode: "responder", ip: "10.0.0.1" },
 * });
 * try {
 *   const result = await runPingVm({ device, ip: "10.0.0.1", count: 5, log: console.log });
 *   for (const line of pingVmSummary(result)) console.log(line);
 * } finally {
 *   await device.close();
 * }
 * ```
 *
 * @throws MissingToolsError when QEMU or a static busybox is missing.
 * @throws GuestConsoleError when the guest does not get through a phase in time.
 */
export async function runPingVm(options: PingVmOptions): Promise<PingVmResult> {
  const { device, verbose = false, signal } = options;
  const ip = options.ip ?? "10.0.0.1";
  const guestIp = neighbourAddress(ip);
  const queues = options.queues ?? Math.max(1, Math.floor(device.numQueues / 2));
  const count = options.count ?? 20;
  const interval = options.interval ?? 0.2;
  const log = options.log ?? (() => {});
  await using run = await GuestVmRun.start({
    prepare: preparePingGuest,
    setup: options.setup,
    verbose,
    log,
    signal,
  });
  const { guest, timings } = run;
  const socket = await run.serve(device, `${queues} queue pair(s)`);
  const vm = run.launch(
    withMemoryHotplug(
      pingGuestArgs(guest, {
        socket,
        queues,
        ip: guestIp,
        prefix: 24,
        peer: ip,
        count,
        interval,
        memoryMiB: 256,
        verboseKernel: verbose,
        packed: options.packed,
        iommu: options.iommu,
      }),
      { hotplugSlots: options.hotplugSlots, maxMemMiB: options.maxMemMiB ?? 2048 },
    ),
    { qmp: options.during ? `${await run.tempDir()}/qmp.sock` : undefined },
  );
  const qmp = options.during ? await run.connectQmp() : null;
  await run.waitForBoot();
  await vm.waitFor(/vm-init: modules loaded/, { timeoutMs: 30_000, what: "the virtio modules" });
  await vm.waitFor(/vm-init: eth0 up/, { timeoutMs: 30_000, what: "eth0 to come up" });
  let beforeHook = 0;
  if (options.during && qmp) {
    run.lap("ping_ms");
    beforeHook = timings.ping_ms;
    await options.during({ qmp, vm, device });
    run.lap("during_ms");
  }
  const m = await vm.waitFor(COUNTERS_MARKER, {
    timeoutMs: 40_000 + count * (interval * 1000 + 100),
    what: `the guest's ${count} pings and its counters`,
  });
  run.lap("ping_ms");
  timings.ping_ms += beforeHook;
  const report = parsePingReport(m[1]);
  const rings = device.stats();
  const inUse = rings.filter((r) => r.queue < 2 * queues);
  const sum = (odd: number) =>
    inUse.filter((r) => r.queue % 2 === odd).reduce((s, r) => s + r.packets, 0);
  const txRingPackets = sum(1);
  const rxRingPackets = sum(0);
  const deviceStats = device.deviceStats();
  await run.waitForExit();
  run.lap("shutdown_ms");
  run.total();

  const c = report.counters;
  const reasons: string[] = [];
  if (report.pingExit !== 0 || report.received !== report.transmitted || report.lossPercent !== 0) {
    reasons.push(
      `ping lost packets: ${report.transmitted} sent, ${report.received} received ` +
        `(${report.lossPercent}% loss, exit ${report.pingExit})`,
    );
  }
  if (report.transmitted !== count) reasons.push(`ping sent ${report.transmitted}, not ${count}`);
  if (rings.length === 0) {
    reasons.push(`driver ${device.driver.name} reports no ring counters (ops.stats)`);
  }
  if (c.tx_packets !== txRingPackets) {
    reasons.push(`guest tx_packets ${c.tx_packets} != device TX-ring packets ${txRingPackets}`);
  }
  if (c.rx_packets !== rxRingPackets) {
    reasons.push(`guest rx_packets ${c.rx_packets} != device RX-ring packets ${rxRingPackets}`);
  }
  const iommu = options.iommu ? parseIommuReport(vm.console) : undefined;
  if (iommu === null) {
    reasons.push("the guest printed no IOMMU report (vm-iommu: lines)");
  } else if (iommu && iommu.group === "none") {
    reasons.push(`the guest's NIC (${iommu.pci}) is in no IOMMU group: intel_iommu=on not active`);
  }
  return {
    pass: reasons.length === 0,
    reasons,
    guest: report,
    device: { txRingPackets, rxRingPackets, rings },
    deviceStats,
    ...(iommu === undefined ? {} : { iommu }),
    timings,
  };
}

/**
 * A run's summary as lines: both sides' counters, the timings, and the
 * verdict (`PASS: ...` or `FAIL: <reasons>`).
 */
export function pingVmSummary(result: PingVmResult): string[] {
  const { guest: report, device, timings } = result;
  const c = report.counters;
  const iommu = result.iommu
    ? [
      `iommu:  eth0 ${result.iommu.pci} in IOMMU group ${result.iommu.group} ` +
      `(${result.iommu.type}), ATS ${result.iommu.ats}; ${result.iommu.dmesg.length} DMAR line(s)`,
    ]
    : [];
  return [
    ...iommu,
    `guest:  ping ${report.transmitted} sent, ${report.received} received, ` +
    `${report.lossPercent}% loss; tx_packets=${c.tx_packets} rx_packets=${c.rx_packets} ` +
    `tx_bytes=${c.tx_bytes} rx_bytes=${c.rx_bytes} dropped=${c.tx_dropped}/${c.rx_dropped} ` +
    `errors=${c.tx_errors}/${c.rx_errors}`,
    `device: TX rings ${device.txRingPackets} packets, RX rings ${device.rxRingPackets} packets; ` +
    device.rings.map((r) =>
      `ring ${r.queue} (${r.queue % 2 ? "tx" : "rx"}): ${r.packets}p ${r.bytes}B ` +
      `drops ${r.drops} errors ${r.errors}`
    ).join(", "),
    `timing: image ${timings.image_ms} ms, boot ${timings.boot_ms} ms, ` +
    `modules+link+ping ${timings.ping_ms} ms, total ${timings.total_ms} ms`,
    result.pass
      ? `PASS: 0% loss; guest tx ${c.tx_packets} == device TX-ring ${device.txRingPackets}, ` +
        `guest rx ${c.rx_packets} == device RX-ring ${device.rxRingPackets}`
      : `FAIL: ${result.reasons.join("; ")}`,
  ];
}
