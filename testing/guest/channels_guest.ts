/**
 * The channels guest: the ping guest's kernel and busybox, a 2-queue-pair
 * virtio-net NIC on a vhost-user socket, and a small static helper,
 * `set_channels` (`set_channels.c`, compiled on the host with `cc -static`
 * when the image is built), that changes the NIC's combined channel count
 * with the ethtool ioctl (`ETHTOOL_SCHANNELS`, as `ethtool -L eth0 combined
 * N` does; busybox has no ethtool).
 *
 * Its `/init` brings `eth0` up, waits for the device to answer one echo
 * request, starts `ping -c COUNT -i INTERVAL` to the device in the
 * background, then walks the channel counts it was given (`2,1,2,1`), one
 * step per gap, printing a marker per step and one when the steps are done,
 * waits for ping and prints the same `vm-counters:` line as
 * the ping guest (`guest_script.ts`):
 *
 * ```text
 * vm-channels: step=1 combined=2 rc=0 at 3.41 s: set_channels: eth0 combined 1 -> 2 (max 2), ...
 * vm-channels: done steps=4 ping_running=1 at 7.52 s
 * vm-counters: ping_exit=0 transmitted=120 received=120 loss=0 tx_packets=121 ...
 * ```
 *
 * On each change the guest's virtio_net driver sends
 * `VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET` on its control queue; QEMU handles that
 * queue itself for vhost-user and sends `SET_VRING_ENABLE` for the rings of
 * the pairs above the new count. The helper also steers every CPU's
 * transmissions to queue 0 (`xps_cpus`), so the ping stays on pair 0 while
 * pair 1 comes and goes: the kernel's own XPS map would give the single
 * vCPU both queues and pick one by flow hash.
 *
 * @module
 */

import { guestBootArgs, type GuestImage, prepareGuestImage } from "./guest_image.ts";
import {
  COUNTERS_LINE_SCRIPT,
  COUNTERS_MARKER,
  ETH0_UP_SCRIPT,
  guestCommandLine,
  PING_SUMMARY_SCRIPT,
  pingParameters,
} from "./guest_script.ts";
import { buildStaticHelper, C_COMPILER } from "./static_helper.ts";
import { vhostUserNicArgs } from "./vhost_user_nic.ts";

export { C_COMPILER, COUNTERS_MARKER };

/** One `vm-channels: step=...` line: step number, count asked for, exit status, output. */
export const CHANNELS_STEP_MARKER: RegExp =
  /vm-channels: step=(\d+) combined=(\d+) rc=(\d+) at ([\d.]+) s: ([^\n]*)\n/;

/** The `vm-channels: done` line: steps run and whether ping was still running. */
export const CHANNELS_DONE_MARKER: RegExp =
  /vm-channels: done steps=(\d+) ping_running=(\d) at ([\d.]+) s\n/;

const BODY = `
${ETH0_UP_SCRIPT}
echo "vm-init: eth0 up at $(uptime_s) s, mac $(cat /sys/class/net/eth0/address), \\
tx queues $(ls -d /sys/class/net/eth0/queues/tx-* | wc -l), ping $vm_peer x $vm_count every $vm_interval s"
# One echo first, so the count below measures the changes and not the device's start.
ping -c 1 -W 30 "$vm_peer" > /tmp/first.txt 2>&1 || { cat /tmp/first.txt; return 1; }
echo "vm-channels: $vm_peer answers at $(uptime_s) s"
ping -c "$vm_count" -i "$vm_interval" -W 5 "$vm_peer" > /tmp/ping.txt 2>&1 &
pid=$!
sleep "$vm_gap"
n=0
for c in $(echo "$vm_steps" | tr , ' '); do
  n=$((n + 1))
  out=$(set_channels eth0 "$c" xps0 2>&1)
  rc=$?
  echo "vm-channels: step=$n combined=$c rc=$rc at $(uptime_s) s: $out"
  if [ "$rc" != 0 ]; then kill "$pid"; return 1; fi
  sleep "$vm_gap"
done
if kill -0 "$pid" 2>/dev/null; then running=1; else running=0; fi
echo "vm-channels: done steps=$n ping_running=$running at $(uptime_s) s"
wait "$pid"
rc=$?
${PING_SUMMARY_SCRIPT}
# Every reply line when something was lost (the gaps in seq= say which), else the summary.
if [ "$tx" = "$rx" ]; then tail -n 3 /tmp/ping.txt; else cat /tmp/ping.txt; fi
${COUNTERS_LINE_SCRIPT}
`;

/**
 * A built channels guest; its initramfs holds busybox, the virtio modules,
 * `set_channels` and `/init`.
 */
export interface ChannelsGuest extends GuestImage {
  /** The static `set_channels` binary on the host (cached). */
  helper: string;
}

/**
 * Compile `set_channels.c` with `cc -static -O2` into the guest cache, or
 * find it there (see {@linkcode buildStaticHelper}).
 *
 * @throws MissingToolsError when the binary is not cached and no C compiler
 *   is installed (the message names the install command).
 * @throws Error when compiling fails (the compiler's output is in the message).
 */
export function buildSetChannels(log: (line: string) => void = () => {}): Promise<string> {
  return buildStaticHelper("set_channels", log);
}

/**
 * Fetch the kernel, compile `set_channels` and build the initramfs (all
 * cached).
 *
 * @param busybox path of a static busybox
 * @param log progress lines
 * @throws MissingToolsError when a C compiler is needed and missing.
 */
export async function prepareChannelsGuest(
  busybox: string,
  log: (line: string) => void,
): Promise<ChannelsGuest> {
  const helper = await buildSetChannels(log);
  const image = await prepareGuestImage({
    flavour: "cloud",
    modules: ["virtio_pci", "virtio_net"],
    body: BODY,
    busybox,
    files: [{ path: "/bin/set_channels", data: await Deno.readFile(helper), mode: 0o755 }],
    log,
  });
  return { ...image, helper };
}

/** Options of {@linkcode channelsGuestArgs}. */
export interface ChannelsGuestRun {
  /** The vhost-user socket the backend listens on. */
  socket: string;
  /** Queue pairs of the NIC (at least the largest step). */
  queues: number;
  /** Guest address (`10.0.0.2`). */
  ip: string;
  /** Prefix length of the guest's address. */
  prefix: number;
  /** Address to ping. */
  peer: string;
  /** Combined channel counts to set, in order. */
  steps: readonly number[];
  /** Seconds before the first step, between steps and after the last. */
  gap: number;
  /** Echo requests to send (enough to outlast the steps). */
  count: number;
  /** Seconds between requests (busybox accepts fractions). */
  interval: number;
  /** Guest RAM in MiB (shared with the backend). */
  memoryMiB: number;
  /** MSI-X vectors of the NIC (0: INTx, as the ping guest uses). */
  vectors: number;
  /** Print every kernel message (no `quiet`). */
  verboseKernel?: boolean;
}

/**
 * QEMU arguments that boot `guest` on one vCPU with a multiqueue NIC
 * (`queues=N` on the netdev, `mq=on` on the device) on the vhost-user socket.
 */
export function channelsGuestArgs(guest: ChannelsGuest, run: ChannelsGuestRun): string[] {
  const parameters = [
    ...pingParameters(run),
    `vm_steps=${run.steps.join(",")}`,
    `vm_gap=${run.gap}`,
  ];
  return [
    ...guestBootArgs(guest, {
      append: guestCommandLine(run.verboseKernel, parameters),
      memoryMiB: run.memoryMiB,
      cpus: 1,
    }),
    ...vhostUserNicArgs({ ...run, multiqueue: true }),
  ];
}
