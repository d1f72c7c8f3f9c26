/**
 * The migration guest: the ping guest's kernel and busybox, one virtio-net
 * NIC on a vhost-user socket, and `migcheck` (`migcheck.c`, compiled on the
 * host with `cc -static`), which sends a burst of ICMP echo requests every
 * interval with payloads that are a function of (request number, offset),
 * leaves each burst's replies unread in its socket for longer than a
 * migration takes, then verifies every payload byte. A reply held across a
 * live migration's switch-over is read on the destination from the
 * receive-buffer page the source's device wrote: if the device did not mark
 * that page in the dirty log, the destination has an older copy and the
 * payload compares wrong.
 *
 * Its `/init` brings `eth0` up, waits for the peer to answer one echo request
 * (so ARP is resolved before the rounds start), prints a start marker, runs
 * `migcheck` for the seconds it was given, and prints the interface counters:
 *
 * ```text
 * vm-migcheck: start at 3.12 s
 * migcheck: round=1 sent=16 verified=16 corrupt=0 lost=0 late=0 at 7.13 s
 * migcheck: done rounds=50 sent=800 verified=800 corrupt=0 lost=0 late=0 bad_rounds=0 garbled=0
 * vm-migcheck: exit=0 tx_packets=643 rx_packets=642 ...
 * ```
 *
 * @module
 */

import { guestBootArgs, type GuestImage, prepareGuestImage } from "./guest_image.ts";
import { ETH0_UP_SCRIPT, GUEST_COUNTERS, guestCommandLine } from "./guest_script.ts";
import { buildStaticHelper } from "./static_helper.ts";
import { vhostUserNicArgs } from "./vhost_user_nic.ts";

/** The line the guest prints when `migcheck` starts its rounds. */
export const MIGCHECK_START_MARKER: RegExp = /vm-migcheck: start at ([\d.]+) s\n/;

/** One round's line: round, sent, verified, corrupt, lost, late, guest uptime. */
export const MIGCHECK_ROUND_MARKER: RegExp =
  /migcheck: round=(\d+) sent=(\d+) verified=(\d+) corrupt=(\d+) lost=(\d+) late=(\d+) at ([\d.]+) s\n/g;

/** `migcheck`'s summary line. */
export const MIGCHECK_DONE_MARKER: RegExp = /migcheck: done ([^\n]*)\n/;

/** The line after `migcheck` exits: its exit status and `eth0`'s counters. */
export const MIGCHECK_EXIT_MARKER: RegExp = /vm-migcheck: exit=(\d+) ([^\n]*)\n/;

/**
 * A `migcheck: corrupt ...` line (a reply whose payload compared wrong) or a
 * `migcheck: garbled ...` line (one whose header did).
 */
export const MIGCHECK_CORRUPT_MARKER: RegExp = /migcheck: ((?:corrupt|garbled) [^\n]*)\n/g;

const BODY = `
${ETH0_UP_SCRIPT}
echo "vm-init: eth0 up at $(uptime_s) s, mac $(cat /sys/class/net/eth0/address)"
# One echo first, so ARP is resolved before the rounds start.
ping -c 1 -W 30 "$vm_peer" > /tmp/first.txt 2>&1 || { cat /tmp/first.txt; return 1; }
echo "vm-migcheck: start at $(uptime_s) s"
migcheck "$vm_peer" "$vm_seconds" "$vm_burst" "$vm_interval" "$vm_hold" "$vm_size"
rc=$?
line="exit=$rc"
for c in ${GUEST_COUNTERS.join(" ")}; do
  line="$line $c=$(cat /sys/class/net/eth0/statistics/$c)"
done
echo "vm-migcheck: $line"
`;

/** A built migration guest; its initramfs holds busybox, the virtio modules, `migcheck` and `/init`. */
export interface MigrationGuest extends GuestImage {
  /** The static `migcheck` binary on the host (cached). */
  helper: string;
}

/**
 * Fetch the kernel, compile `migcheck` and build the initramfs (all cached).
 *
 * @param busybox path of a static busybox
 * @param log progress lines
 * @throws MissingToolsError when a C compiler is needed and missing.
 */
export async function prepareMigrationGuest(
  busybox: string,
  log: (line: string) => void,
): Promise<MigrationGuest> {
  const helper = await buildStaticHelper("migcheck", log);
  const image = await prepareGuestImage({
    flavour: "cloud",
    modules: ["virtio_pci", "virtio_net"],
    body: BODY,
    busybox,
    files: [{ path: "/bin/migcheck", data: await Deno.readFile(helper), mode: 0o755 }],
    log,
  });
  return { ...image, helper };
}

/** The traffic `migcheck` makes (see {@linkcode migrationGuestArgs}). */
export interface MigcheckTraffic {
  /** Seconds of rounds. */
  seconds: number;
  /** Echo requests per round. */
  burst: number;
  /** Milliseconds between rounds. */
  intervalMs: number;
  /** Milliseconds a round's replies are left unread (longer than the migration). */
  holdMs: number;
  /** Payload bytes of each request (16 to 1472). */
  size: number;
}

/** Options of {@linkcode migrationGuestArgs}. */
export interface MigrationGuestRun extends MigcheckTraffic {
  /** The vhost-user socket the backend listens on. */
  socket: string;
  /** Guest address (`10.0.0.2`). */
  ip: string;
  /** Prefix length of the guest's address. */
  prefix: number;
  /** Address `migcheck` sends to (the responder). */
  peer: string;
  /** Guest RAM in KiB (shared with the backend; need not be whole MiB). */
  memoryKiB: number;
  /** Print every kernel message (no `quiet`). */
  verboseKernel?: boolean;
}

/**
 * QEMU arguments that boot `guest` on one vCPU with its NIC on the
 * vhost-user socket: the source's command line; the destination adds
 * `-incoming`.
 */
export function migrationGuestArgs(guest: MigrationGuest, run: MigrationGuestRun): string[] {
  const parameters = [
    "ipv6.disable=1",
    `vm_ip=${run.ip}`,
    `vm_prefix=${run.prefix}`,
    `vm_peer=${run.peer}`,
    `vm_seconds=${run.seconds}`,
    `vm_burst=${run.burst}`,
    `vm_interval=${run.intervalMs}`,
    `vm_hold=${run.holdMs}`,
    `vm_size=${run.size}`,
  ];
  const memorySize = `${run.memoryKiB}K`;
  return [
    ...guestBootArgs(guest, {
      append: guestCommandLine(run.verboseKernel, parameters),
      memoryMiB: 0,
      cpus: 1,
    }),
    "-m",
    memorySize,
    ...vhostUserNicArgs({
      socket: run.socket,
      memoryMiB: 0,
      memorySize,
      queues: 1,
      multiqueue: false,
      vectors: 0,
    }),
  ];
}

/** One `migcheck: round=...` line. */
export interface MigcheckRound {
  /** Round number from 1. */
  round: number;
  /** Requests sent. */
  sent: number;
  /** Replies whose payload compared equal. */
  verified: number;
  /** Replies whose payload compared wrong. */
  corrupt: number;
  /** Requests without a reply in the round (or whose reply came garbled). */
  lost: number;
  /** Replies that came after their round was read, so far. */
  late: number;
  /** Guest uptime when the round's replies had been read, seconds. */
  at: number;
}

/** `migcheck`'s summary (the `migcheck: done` line). */
export interface MigcheckSummary {
  /** Rounds run. */
  rounds: number;
  /** Requests sent. */
  sent: number;
  /** Replies verified byte for byte. */
  verified: number;
  /** Replies whose bytes compared wrong: payload, or header (`garbled`). */
  corrupt: number;
  /** Requests never answered within their round (garbled replies excluded). */
  lost: number;
  /** Replies that came after their round ended. */
  late: number;
  /** Rounds with a corrupt or missing reply. */
  badRounds: number;
  /** Replies whose ICMP header no longer was one of `migcheck`'s: corrupt, round unknown. */
  garbled: number;
}

/** The round lines in `text`, in order. */
export function parseMigcheckRounds(text: string): MigcheckRound[] {
  return [...text.matchAll(MIGCHECK_ROUND_MARKER)].map((m) => ({
    round: Number(m[1]),
    sent: Number(m[2]),
    verified: Number(m[3]),
    corrupt: Number(m[4]),
    lost: Number(m[5]),
    late: Number(m[6]),
    at: Number(m[7]),
  }));
}

/**
 * Parse the fields of the `migcheck: done` line.
 *
 * @throws Error when a field is missing or not a number.
 */
export function parseMigcheckSummary(fields: string): MigcheckSummary {
  const values = fieldValues(fields);
  const need = (name: string) => {
    const v = values.get(name);
    if (v === undefined) throw new Error(`migcheck summary lacks ${name}: ${fields}`);
    return v;
  };
  return {
    rounds: need("rounds"),
    sent: need("sent"),
    verified: need("verified"),
    corrupt: need("corrupt"),
    lost: need("lost"),
    late: need("late"),
    badRounds: need("bad_rounds"),
    garbled: need("garbled"),
  };
}

/** `name=number` fields of a line, by name. */
export function fieldValues(fields: string): Map<string, number> {
  const values = new Map<string, number>();
  for (const part of fields.trim().split(/\s+/)) {
    const eq = part.indexOf("=");
    const n = Number(part.slice(eq + 1));
    if (eq > 0 && Number.isFinite(n)) values.set(part.slice(0, eq), n);
  }
  return values;
}
