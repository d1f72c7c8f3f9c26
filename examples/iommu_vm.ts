/**
 * A Linux guest behind an emulated Intel IOMMU (vIOMMU) pings a device this
 * SDK serves over vhost-user: the guest maps every buffer through the IOMMU,
 * so the device sees I/O virtual addresses (IOVAs), not guest-physical ones,
 * and must ask QEMU to translate them.
 *
 *   deno run -A examples/iommu_vm.ts [--count N] [--json] [--verbose] [--setup]
 *
 * QEMU runs a q35 machine (`-machine q35,kernel-irqchip=split`) with
 * `-device intel-iommu,intremap=on,device-iotlb=on`, and the guest's NIC is
 * `virtio-net-pci,...,iommu_platform=on,ats=on` on a PCIe root port, on a
 * `vhost-user` netdev served by the `sim` driver in `responder` mode; the
 * guest kernel boots with `intel_iommu=on`. QEMU then offers
 * `VIRTIO_F_ACCESS_PLATFORM` (bit 33) and needs the device to offer it too,
 * with the `IOTLB`, `BACKEND_REQ` and `REPLY_ACK` protocol features. While
 * the guest pings, the device misses translations and asks QEMU for them
 * (IOTLB misses over the backend channel), QEMU answers with IOTLB updates
 * on the main channel, and the guest's unmaps come back as invalidations
 * (the device-IOTLB invalidations ATS allows).
 *
 * It passes as `examples/vm.ts` does: ping lost nothing, guest `tx_packets`
 * equals the packets the device took from its TX rings and `rx_packets`
 * those it put on its RX rings; and the guest's NIC must be in an IOMMU
 * group. It prints what the guest says about its IOMMU (group, domain type,
 * ATS, the kernel's `DMAR:` lines) and the device's IOTLB counters from
 * `device.deviceStats()` (`iotlb_updates`, `iotlb_invalidations`,
 * `iotlb_misses`, ...), when the device reports them.
 *
 * `--platform-off` keeps the machine and the guest's IOMMU but leaves
 * `iommu_platform` off the NIC (its DMA bypasses the IOMMU): that checks the
 * machine and guest side with a device that does not translate IOVAs.
 *
 * @module
 */

import { isIPv4 } from "node:net";
import { VhostMdevDevice } from "@vhost-mdev/sdk";
import { driver as sim } from "@vhost-mdev/sim";
import {
  integerFlag,
  parseFlags,
  type PingVmResult,
  pingVmSummary,
  runGuestCommand,
  runPingVm,
  usageError,
  type ViommuMode,
} from "@vhost-mdev/testing/guest";

const HELP = `Usage: deno run -A examples/iommu_vm.ts [options]

Boot a Linux guest on a q35 machine with an emulated Intel IOMMU whose NIC
(iommu_platform=on, ats=on) is a vhost-user device served by this SDK (the sim
driver's responder); ping the device from the guest, compare both sides'
packet counters, and print the device's IOTLB counters.

  --ip <addr>             the device's IPv4 address (default 10.0.0.1)
  --count <N>             echo requests the guest sends (default 20)
  --interval <seconds>    time between requests (default 0.2)
  --platform-off          no iommu_platform on the NIC: the guest has the IOMMU,
                          the NIC's DMA bypasses it (checks machine and guest only)
  --json                  print the result as one JSON line at the end
  --verbose               echo the guest console (every kernel message) and
                          every device event
  --setup                 install qemu-system-x86 and busybox-static with apt-get
  --help                  this text

Exit status: 0 pass, 1 check failed, 2 usage error or missing tools.`;

/** The device counters about its IOTLB, in the order printed. */
const IOTLB_STATS: readonly string[] = [
  "iotlb_updates",
  "iotlb_invalidations",
  "iotlb_misses",
  "iotlb_entries",
  "iotlb_miss_timeouts",
];

/** The IOTLB counters among `stats` (the known ones first, then any other `iotlb_*`). */
function iotlbStats(stats: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const k of IOTLB_STATS) if (k in stats) out[k] = stats[k];
  for (const [k, v] of Object.entries(stats)) if (k.startsWith("iotlb_")) out[k] ??= v;
  return out;
}

/** The run's summary: the IOMMU lines, the device's IOTLB counters, then `pingVmSummary`. */
function summary(result: PingVmResult): string[] {
  const lines: string[] = [];
  for (const d of result.iommu?.dmesg ?? []) lines.push(`guest dmesg: ${d}`);
  const iotlb = iotlbStats(result.deviceStats);
  lines.push(
    Object.keys(iotlb).length === 0
      ? "device IOTLB: the device reports no iotlb_* counters (deviceStats)"
      : `device IOTLB: ${Object.entries(iotlb).map(([k, v]) => `${k}=${v}`).join(" ")}`,
  );
  return [...lines, ...pingVmSummary(result)];
}

async function main(args: string[]): Promise<number> {
  const options = {
    ip: { type: "string", default: "10.0.0.1" },
    count: { type: "string", default: "20" },
    interval: { type: "string", default: "0.2" },
    "platform-off": { type: "boolean" },
  } as const;
  const flags = parseFlags(args, options, HELP);
  if (flags === null) return 0;
  const count = integerFlag("count", flags.count, 1, 1000);
  const interval = Number(flags.interval);
  if (!(interval >= 0.01 && interval <= 10)) {
    usageError(`--interval ${flags.interval}: 0.01 to 10 s`);
  }
  if (!isIPv4(flags.ip)) usageError(`--ip ${flags.ip}: expected an IPv4 address like 10.0.0.1`);
  const iommu: ViommuMode = flags["platform-off"] ? "platform-off" : true;

  const shown = ["connected", "disconnected", "refused", "start", "stop", "warn", "error"];
  const listener = ({ type, message }: { type: string; message: string }) => {
    if (flags.verbose ? type !== "debug" : shown.includes(type)) {
      console.log(`device: ${type}: ${message}`);
    }
  };
  const params = { queues: 1, options: { mode: "responder", ip: flags.ip } };
  const device = await VhostMdevDevice.create(sim, params, { listener });
  try {
    const { ip, verbose, setup } = flags;
    const run = { device, ip, queues: 1, count, interval, verbose, setup, iommu, log: console.log };
    return await runGuestCommand((signal) => runPingVm({ ...run, signal }), {
      summary,
      json: flags.json,
    });
  } finally {
    await device.close();
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
