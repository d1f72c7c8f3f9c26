/**
 * The sim device's options (`--mode`, `--mac`, ...) and their validation.
 *
 * @module
 */

import type { DriverOption } from "@vhost-mdev/sdk";

/**
 * What the device does with frames, like testpmd's forwarding modes:
 *
 * - `loopback`: every frame the guest transmits on ring `2k + 1` comes back
 *   on its receive ring `2k`, byte for byte.
 * - `sink`: transmitted frames are consumed and counted.
 * - `source`: the device fills every receive buffer the guest posts with a
 *   generated frame of `frame-size` bytes.
 * - `responder`: ARP requests and ICMP echo requests for `ip` are answered;
 *   other frames are counted as dropped.
 */
export type SimMode = "loopback" | "sink" | "source" | "responder";

/** Every {@linkcode SimMode}. */
export const SIM_MODES: readonly SimMode[] = ["loopback", "sink", "source", "responder"];

/** The validated options of one sim device. */
export interface SimOptions {
  /** What the device does with frames. */
  mode: SimMode;
  /** The NIC's MAC address (config space), 6 bytes. */
  mac: Uint8Array;
  /** The responder's IPv4 address, 4 bytes. */
  ip: Uint8Array;
  /** MTU in config space (`VIRTIO_NET_F_MTU`), 68..65521. */
  mtu: number;
  /** Bytes of each generated frame in `source` mode (Ethernet header included, no FCS). */
  frameSize: number;
  /** Offer `VIRTIO_NET_F_MRG_RXBUF`. */
  mrgRxbuf: boolean;
  /** Offer `VIRTIO_F_EVENT_IDX`. */
  eventIdx: boolean;
  /** Offer `VIRTIO_F_INDIRECT_DESC`. */
  indirect: boolean;
  /**
   * Log the receive buffers it writes while a migration logs (default). A
   * device with this off is deliberately broken: it marks used rings but not
   * the frames it delivers, so a migration check can show it catches that.
   */
  logBuffers: boolean;
  /**
   * In `sink` mode with `VIRTIO_F_IN_ORDER` negotiated, return each run of
   * transmit chains with one used entry (virtio 1.2, "In-order use of
   * descriptors"). Off by default: against DPDK's packed frontend it was
   * slower (docs/benchmarks.md, "IN_ORDER batching").
   */
  batchUsed: boolean;
}

/** Defaults of the options. */
export const SIM_DEFAULTS: Readonly<Record<string, string>> = {
  mode: "loopback",
  mac: "52:54:00:12:34:56",
  ip: "10.0.0.1",
  mtu: "1500",
  "frame-size": "64",
  "mrg-rxbuf": "true",
  "event-idx": "true",
  indirect: "true",
  "log-buffers": "true",
  "batch-used": "false",
};

/** The options as the CLI lists them (`--driver sim --help`). */
export const SIM_OPTIONS: readonly DriverOption[] = [
  {
    name: "mode",
    description: "what the device does with frames",
    values: SIM_MODES,
    default: SIM_DEFAULTS.mode,
  },
  { name: "mac", description: "the NIC's MAC address", default: SIM_DEFAULTS.mac },
  {
    name: "ip",
    description: "IPv4 address the responder answers ARP and ping for",
    default: SIM_DEFAULTS.ip,
  },
  {
    name: "mtu",
    description: "MTU offered in config space (68..65521)",
    default: SIM_DEFAULTS.mtu,
  },
  {
    name: "frame-size",
    description: "bytes of each generated frame in source mode (60..MTU+14)",
    default: SIM_DEFAULTS["frame-size"],
  },
  {
    name: "mrg-rxbuf",
    description: "offer mergeable receive buffers",
    values: ["true", "false"],
    default: SIM_DEFAULTS["mrg-rxbuf"],
  },
  {
    name: "event-idx",
    description: "offer EVENT_IDX notification suppression",
    values: ["true", "false"],
    default: SIM_DEFAULTS["event-idx"],
  },
  {
    name: "indirect",
    description: "offer indirect descriptors",
    values: ["true", "false"],
    default: SIM_DEFAULTS.indirect,
  },
  {
    name: "log-buffers",
    description: "mark delivered frames in the migration dirty log (false: a deliberately " +
      "broken device, to show a migration check catches lost writes)",
    values: ["true", "false"],
    default: SIM_DEFAULTS["log-buffers"],
  },
  {
    name: "batch-used",
    description: "in sink mode with IN_ORDER negotiated, return each run of transmit chains " +
      "with one used entry",
    values: ["true", "false"],
    default: SIM_DEFAULTS["batch-used"],
  },
];

function parseMacOption(text: string): Uint8Array {
  const parts = text.split(":");
  if (parts.length !== 6 || !parts.every((p) => /^[0-9a-fA-F]{2}$/.test(p))) {
    throw new Error(`sim: --mac ${text}: expected six hex bytes like 52:54:00:12:34:56`);
  }
  const mac = new Uint8Array(parts.map((p) => parseInt(p, 16)));
  if ((mac[0] & 1) !== 0) {
    throw new Error(`sim: --mac ${text} is a multicast address; the first byte must be even`);
  }
  return mac;
}

function parseIpOption(text: string): Uint8Array {
  const parts = text.split(".");
  if (parts.length !== 4 || !parts.every((p) => /^[0-9]{1,3}$/.test(p) && Number(p) <= 255)) {
    throw new Error(`sim: --ip ${text}: expected an IPv4 address like 10.0.0.1`);
  }
  return new Uint8Array(parts.map(Number));
}

function parseIntOption(name: string, text: string, min: number, max: number): number {
  const n = /^[0-9]+$/.test(text) ? Number(text) : NaN;
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new Error(`sim: --${name} ${text}: expected an integer from ${min} to ${max}`);
  }
  return n;
}

function parseBoolOption(name: string, text: string): boolean {
  if (text === "true") return true;
  if (text === "false") return false;
  throw new Error(`sim: --${name} ${text}: expected true or false`);
}

/**
 * Validate the driver options given to `probe` (strings from the command
 * line or code), filling in defaults.
 *
 * @throws Error naming the option, the value and what is expected; also for
 *   an option the sim does not have.
 *
 * @example
 * ```ts
 * import { parseSimOptions } from "@vhost-mdev/sim";
 * const o = parseSimOptions({ mode: "responder", ip: "192.0.2.1" });
 * console.log(o.mode, o.ip); // responder Uint8Array(4) [ 192, 0, 2, 1 ]
 * ```
 */
export function parseSimOptions(options: Readonly<Record<string, string>>): SimOptions {
  const known = new Set(SIM_OPTIONS.map((o) => o.name));
  for (const k of Object.keys(options)) {
    if (!known.has(k)) {
      throw new Error(
        `sim: unknown option --${k}; options are ${[...known].map((n) => "--" + n).join(" ")}`,
      );
    }
  }
  const get = (k: string) => options[k] ?? SIM_DEFAULTS[k];
  const mode = get("mode") as SimMode;
  if (!SIM_MODES.includes(mode)) {
    throw new Error(`sim: --mode ${mode}: choose one of ${SIM_MODES.join(", ")}`);
  }
  const mtu = parseIntOption("mtu", get("mtu"), 68, 65521);
  return {
    mode,
    mac: parseMacOption(get("mac")),
    ip: parseIpOption(get("ip")),
    mtu,
    frameSize: parseIntOption("frame-size", get("frame-size"), 60, mtu + 14),
    mrgRxbuf: parseBoolOption("mrg-rxbuf", get("mrg-rxbuf")),
    eventIdx: parseBoolOption("event-idx", get("event-idx")),
    indirect: parseBoolOption("indirect", get("indirect")),
    logBuffers: parseBoolOption("log-buffers", get("log-buffers")),
    batchUsed: parseBoolOption("batch-used", get("batch-used")),
  };
}
