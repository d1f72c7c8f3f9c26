/**
 * The pieces of the guests' `/init` bodies and kernel command lines that the
 * ping and channels guests share: bringing `eth0` up at the address the
 * command line names, reading ping's summary, and the one parseable
 * `vm-counters:` line with the summary and the interface counters:
 *
 * ```text
 * vm-counters: ping_exit=0 transmitted=20 received=20 loss=0 tx_packets=21 rx_packets=21 ...
 * ```
 *
 * `initramfs.ts`'s `initScript` wraps a body in the common `/init` (busybox
 * applets, proc/sysfs/devtmpfs mounts, module loading, power-off). Per-run
 * values reach the body as `vm_*` parameters on the kernel command line,
 * which the kernel hands to `/init` as environment variables.
 *
 * @module
 */

/** Interface counters the guests print, from `/sys/class/net/eth0/statistics`. */
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

/** The marker line the ping and channels guests print last. */
export const COUNTERS_MARKER: RegExp = /vm-counters: ([^\n]*)\n/;

/**
 * Shell lines that bring `lo` and `eth0` up and give `eth0` the address
 * `$vm_ip/$vm_prefix`; the body returns 1 when `eth0` cannot be set up.
 */
export const ETH0_UP_SCRIPT: string = `ip link set lo up
ip link set eth0 up || return 1
ip addr add "$vm_ip/$vm_prefix" dev eth0 || return 1`;

/**
 * Shell lines that let the last completions land, then read the summary of
 * the ping output in `/tmp/ping.txt` into `$tx`, `$rx` and `$loss` (empty
 * when ping printed none).
 */
export const PING_SUMMARY_SCRIPT: string =
  `# Let the last completions and interrupts land before reading the counters.
sleep 0.5
summary=$(grep 'packets transmitted' /tmp/ping.txt)
tx=$(echo "$summary" | sed -n 's/^\\([0-9]*\\) packets transmitted.*/\\1/p')
rx=$(echo "$summary" | sed -n 's/.* \\([0-9]*\\) packets received.*/\\1/p')
loss=$(echo "$summary" | sed -n 's/.* \\([0-9.]*\\)% packet loss.*/\\1/p')`;

/**
 * Shell lines that print the `vm-counters:` line ({@linkcode COUNTERS_MARKER})
 * from ping's exit status `$rc`, the summary {@linkcode PING_SUMMARY_SCRIPT}
 * read, and `eth0`'s {@linkcode GUEST_COUNTERS}.
 */
export const COUNTERS_LINE_SCRIPT: string =
  `line="ping_exit=$rc transmitted=\${tx:--1} received=\${rx:--1} loss=\${loss:-100}"
for c in ${GUEST_COUNTERS.join(" ")}; do
  line="$line $c=$(cat /sys/class/net/eth0/statistics/$c)"
done
echo "vm-counters: $line"`;

/** The command-line parameters of a guest that pings a peer from `eth0`. */
export interface PingParameters {
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
}

/**
 * The kernel command-line parameters {@linkcode ETH0_UP_SCRIPT} and a ping
 * read (`vm_ip`, `vm_prefix`, `vm_peer`, `vm_count`, `vm_interval`), after
 * `ipv6.disable=1`: no router solicitations or DAD, so the ping is the only
 * traffic.
 */
export function pingParameters(run: PingParameters): string[] {
  return [
    "ipv6.disable=1",
    `vm_ip=${run.ip}`,
    `vm_prefix=${run.prefix}`,
    `vm_peer=${run.peer}`,
    `vm_count=${run.count}`,
    `vm_interval=${run.interval}`,
  ];
}

/**
 * A guest's kernel command line (what `-append` adds): `quiet` unless every
 * kernel message is wanted, then `parameters` in order.
 */
export function guestCommandLine(
  verboseKernel: boolean | undefined,
  parameters: readonly string[],
): string {
  return [verboseKernel ? "" : "quiet", ...parameters].filter((s) => s !== "").join(" ");
}
