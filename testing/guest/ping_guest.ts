/**
 * The ping guest: a small Linux (Debian cloud kernel + busybox) whose only
 * NIC is a virtio-net device on a vhost-user socket. Its `/init` loads the
 * virtio modules, brings `eth0` up with an address next to the peer's, pings
 * the peer, and prints one parseable line with the ping summary and the
 * interface counters from `/sys/class/net/eth0/statistics`:
 *
 * ```text
 * vm-counters: ping_exit=0 transmitted=20 received=20 loss=0 tx_packets=21 rx_packets=21 ...
 * ```
 *
 * The image does not depend on the run (addresses and count come on the
 * kernel command line), so it is built once and cached.
 *
 * QEMU notes (DESIGN.md): vhost-user needs the guest RAM shared with the
 * backend (`memory-backend-memfd,share=on` + a NUMA node using it), and
 * `vectors=0` (no MSI-X) because QEMU 7.2 under TCG crashes in
 * `vhost_net_start` with MSI-X vectors.
 *
 * @module
 */

import { guestBootArgs, type GuestImage, prepareGuestImage } from "./guest_image.ts";
import {
  COUNTERS_LINE_SCRIPT,
  COUNTERS_MARKER,
  ETH0_UP_SCRIPT,
  GUEST_COUNTERS,
  guestCommandLine,
  PING_SUMMARY_SCRIPT,
  pingParameters,
} from "./guest_script.ts";
import { vhostUserNicArgs } from "./vhost_user_nic.ts";
import {
  IOMMU_REPORT_SCRIPT,
  VIOMMU_KERNEL_PARAMETERS,
  VIOMMU_MACHINE,
  VIOMMU_NIC_PORT,
  viommuDeviceArgs,
  type ViommuMode,
} from "./viommu.ts";

export { COUNTERS_MARKER, GUEST_COUNTERS };

/** Interface counters the guest reports, plus its ping summary. */
export interface PingGuestReport {
  /** Exit status of `ping`. */
  pingExit: number;
  /** Echo requests sent. */
  transmitted: number;
  /** Echo replies received. */
  received: number;
  /** Loss in percent, as ping printed it. */
  lossPercent: number;
  /** `/sys/class/net/eth0/statistics/*` by name (`tx_packets`, `rx_bytes`...). */
  counters: Record<string, number>;
}

const BODY = `
${ETH0_UP_SCRIPT}
echo "vm-init: eth0 up at $(uptime_s) s, mac $(cat /sys/class/net/eth0/address), ping $vm_peer x $vm_count"
${IOMMU_REPORT_SCRIPT}
ping -c "$vm_count" -i "$vm_interval" -W 5 "$vm_peer" > /tmp/ping.txt 2>&1
rc=$?
cat /tmp/ping.txt
${PING_SUMMARY_SCRIPT}
${COUNTERS_LINE_SCRIPT}
`;

/** A built ping guest. */
export type PingGuest = GuestImage;

/**
 * Fetch the kernel and build the initramfs (both cached).
 *
 * @param busybox path of a static busybox
 * @param log progress lines
 */
export function preparePingGuest(
  busybox: string,
  log: (line: string) => void,
): Promise<PingGuest> {
  return prepareGuestImage({
    flavour: "cloud",
    modules: ["virtio_pci", "virtio_net"],
    body: BODY,
    busybox,
    log,
  });
}

/** Options of {@linkcode pingGuestArgs}. */
export interface PingGuestRun {
  /** The vhost-user socket the backend listens on. */
  socket: string;
  /** Queue pairs of the NIC. */
  queues: number;
  /** Guest address (`10.0.0.2`). */
  ip: string;
  /** Prefix length of the guest's address. */
  prefix: number;
  /** Address to ping. */
  peer: string;
  /** Echo requests to send. */
  count: number;
  /** Seconds between requests (busybox accepts fractions). */
  interval: number;
  /** Guest RAM in MiB (shared with the backend). */
  memoryMiB: number;
  /** Print every kernel message (no `quiet`). */
  verboseKernel?: boolean;
  /** Packed rings on the NIC (`packed=on`). */
  packed?: boolean;
  /**
   * Behind an emulated Intel IOMMU (`viommu.ts`): `true` gives the q35
   * machine with `intel-iommu,intremap=on,device-iotlb=on`, the guest
   * kernel `intel_iommu=on`, and the NIC `iommu_platform=on,ats=on` on a
   * PCIe root port; `"platform-off"` the same without `iommu_platform`
   * (the NIC's DMA bypasses the IOMMU, though it keeps `ats=on`). Either way the guest prints
   * `vm-iommu:` lines (`parseIommuReport`). Default: no IOMMU, `pc`
   * machine.
   */
  iommu?: ViommuMode;
}

/**
 * QEMU arguments that boot `guest` with its NIC on the vhost-user socket.
 *
 * @example Behind a vIOMMU
 * ```ts
 * import { pingGuestArgs } from "./ping_guest.ts";
 * const guest = { kernel: "/cache/vmlinuz", initrd: "/cache/ping.cpio.gz", release: "6.1" };
 * const args = pingGuestArgs(guest, {
 *   socket: "/tmp/vhost-net.sock", queues: 1, ip: "10.0.0.2", prefix: 24, peer: "10.0.0.1",
 *   count: 5, interval: 0.2, memoryMiB: 256, iommu: true,
 * });
 * ```
 */
export function pingGuestArgs(guest: PingGuest, run: PingGuestRun): string[] {
  const iommu = run.iommu ?? false;
  const parameters = pingParameters(run);
  if (iommu !== false) parameters.push(...VIOMMU_KERNEL_PARAMETERS, "vm_iommu=1");
  return [
    ...guestBootArgs(guest, {
      append: guestCommandLine(run.verboseKernel, parameters),
      memoryMiB: run.memoryMiB,
      ...(iommu === false ? {} : { machine: VIOMMU_MACHINE }),
    }),
    // The IOMMU must exist before the devices behind it.
    ...(iommu === false ? [] : viommuDeviceArgs()),
    ...vhostUserNicArgs({
      socket: run.socket,
      memoryMiB: run.memoryMiB,
      queues: run.queues,
      packed: run.packed,
      multiqueue: run.queues > 1,
      vectors: 0,
      ...(iommu === false
        ? {}
        : { bus: VIOMMU_NIC_PORT, iommuPlatform: iommu === true, ats: true }),
    }),
  ];
}

/**
 * Parse the `vm-counters:` line's fields.
 *
 * @throws Error when a field is missing or not a number.
 */
export function parsePingReport(fields: string): PingGuestReport {
  const values = new Map<string, number>();
  for (const part of fields.trim().split(/\s+/)) {
    const eq = part.indexOf("=");
    if (eq <= 0) continue;
    const n = Number(part.slice(eq + 1));
    if (!Number.isFinite(n)) throw new Error(`guest report field ${part} is not a number`);
    values.set(part.slice(0, eq), n);
  }
  const need = (name: string) => {
    const v = values.get(name);
    if (v === undefined) throw new Error(`guest report lacks ${name}: ${fields}`);
    return v;
  };
  const counters: Record<string, number> = {};
  for (const c of GUEST_COUNTERS) counters[c] = need(c);
  return {
    pingExit: need("ping_exit"),
    transmitted: need("transmitted"),
    received: need("received"),
    lossPercent: need("loss"),
    counters,
  };
}
