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

import { prepareGuestKernel } from "./guest_kernel.ts";
import { buildInitramfs, initScript } from "./initramfs.ts";
import { kernelBootArgs } from "./qemu.ts";

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

/** Counters the guest prints. */
export const GUEST_COUNTERS: readonly string[] = [
  "tx_packets",
  "rx_packets",
  "tx_bytes",
  "rx_bytes",
  "tx_dropped",
  "rx_dropped",
  "tx_errors",
  "rx_errors",
];

/** The marker line the ping guest prints last. */
export const COUNTERS_MARKER: RegExp = /vm-counters: ([^\n]*)\n/;

const BODY = `
ip link set lo up
ip link set eth0 up || return 1
ip addr add "$vm_ip/$vm_prefix" dev eth0 || return 1
echo "vm-init: eth0 up at $(uptime_s) s, mac $(cat /sys/class/net/eth0/address), ping $vm_peer x $vm_count"
ping -c "$vm_count" -i "$vm_interval" -W 5 "$vm_peer" > /tmp/ping.txt 2>&1
rc=$?
cat /tmp/ping.txt
# Let the last completions and interrupts land before reading the counters.
sleep 0.5
summary=$(grep 'packets transmitted' /tmp/ping.txt)
tx=$(echo "$summary" | sed -n 's/^\\([0-9]*\\) packets transmitted.*/\\1/p')
rx=$(echo "$summary" | sed -n 's/.* \\([0-9]*\\) packets received.*/\\1/p')
loss=$(echo "$summary" | sed -n 's/.* \\([0-9.]*\\)% packet loss.*/\\1/p')
line="ping_exit=$rc transmitted=\${tx:--1} received=\${rx:--1} loss=\${loss:-100}"
for c in ${GUEST_COUNTERS.join(" ")}; do
  line="$line $c=$(cat /sys/class/net/eth0/statistics/$c)"
done
echo "vm-counters: $line"
`;

/** A built ping guest. */
export interface PingGuest {
  /** Kernel image path. */
  kernel: string;
  /** Initramfs path. */
  initrd: string;
  /** Kernel release, for messages. */
  release: string;
}

/**
 * Fetch the kernel and build the initramfs (both cached).
 *
 * @param busybox path of a static busybox
 * @param log progress lines
 */
export async function preparePingGuest(
  busybox: string,
  log: (line: string) => void,
): Promise<PingGuest> {
  const kernel = await prepareGuestKernel({
    flavour: "cloud",
    modules: ["virtio_pci", "virtio_net"],
    log,
  });
  const initrd = await buildInitramfs({
    init: initScript({ modules: kernel.modules.map((m) => m.name), body: BODY }),
    modules: kernel.modules,
    busybox,
    log,
  });
  return { kernel: kernel.image, initrd, release: kernel.release };
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
}

/** QEMU arguments that boot `guest` with its NIC on the vhost-user socket. */
export function pingGuestArgs(guest: PingGuest, run: PingGuestRun): string[] {
  const mq = run.queues > 1;
  const append = [
    run.verboseKernel ? "" : "quiet",
    "ipv6.disable=1", // no router solicitations or DAD: the ping is the only traffic
    `vm_ip=${run.ip}`,
    `vm_prefix=${run.prefix}`,
    `vm_peer=${run.peer}`,
    `vm_count=${run.count}`,
    `vm_interval=${run.interval}`,
  ].filter((s) => s !== "").join(" ");
  return [
    ...kernelBootArgs({
      kernel: guest.kernel,
      initrd: guest.initrd,
      append,
      memoryMiB: run.memoryMiB,
    }),
    "-object",
    `memory-backend-memfd,id=mem,size=${run.memoryMiB}M,share=on`,
    "-numa",
    "node,memdev=mem",
    "-chardev",
    `socket,id=c0,path=${run.socket}`,
    "-netdev",
    `vhost-user,id=n0,chardev=c0${mq ? `,queues=${run.queues}` : ""}`,
    "-device",
    `virtio-net-pci,netdev=n0,vectors=0,mac=52:54:00:12:34:56${mq ? ",mq=on" : ""}`,
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
