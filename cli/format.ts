/**
 * Command-line parsing and event formatting shared by the CLIs.
 *
 * @module
 */

import type { DeviceEvent, Driver, QueueStats } from "@vhost-mdev/sdk";

/** Reserved flags of the CLIs; anything else is a driver option. */
const RESERVED = new Set([
  "driver",
  "socket",
  "client",
  "queues",
  "pci",
  "log",
  "debug",
  "stats",
  "help",
  "seconds",
  "json",
  "frontend",
  "runs",
  "size",
  "allow-unsealed-memory",
]);

/**
 * Split `--name value` / `--name=value` / `--switch` arguments into the CLI's
 * own flags and driver options. Names in `switches` take no value. Names in
 * `booleans` (driver options whose values are `true` and `false`) take
 * `true` or `false` when one follows, and are `true` alone (`--readonly`).
 */
export function parseFlags(
  args: readonly string[],
  switches: readonly string[],
  booleans: readonly string[] = [],
): { flags: Record<string, string>; options: Record<string, string> } {
  const flags: Record<string, string> = {};
  const options: Record<string, string> = {};
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === "-h") {
      flags.help = "";
      continue;
    }
    if (!a.startsWith("--")) throw new Error(`unexpected argument "${a}" (see --help)`);
    let name = a.slice(2);
    let value: string;
    const eq = name.indexOf("=");
    if (eq >= 0) {
      value = name.slice(eq + 1);
      name = name.slice(0, eq);
    } else if (switches.includes(name)) {
      value = "";
    } else if (booleans.includes(name)) {
      const next = args[i + 1];
      value = next === "true" || next === "false" ? args[++i] : "true";
    } else {
      if (i + 1 >= args.length) throw new Error(`--${name} needs a value`);
      value = args[++i];
    }
    (RESERVED.has(name) ? flags : options)[name] = value;
  }
  return { flags, options };
}

/**
 * The driver options that are switches on the command line: those whose
 * values are exactly `false` and `true`.
 */
export function booleanOptions(driver: Driver | undefined): string[] {
  return (driver?.options ?? []).filter((o) =>
    o.values?.length === 2 && o.values.includes("true") && o.values.includes("false")
  ).map((o) => o.name);
}

/** The value of `--name` (or `--name=value`) in `args`, looked up before parsing them. */
export function peekFlag(args: readonly string[], name: string): string | undefined {
  for (let i = 0; i < args.length; i++) {
    if (args[i] === `--${name}`) return args[i + 1];
    if (args[i].startsWith(`--${name}=`)) return args[i].slice(name.length + 3);
  }
  return undefined;
}

/** One event as a line of text (`12:00:01.234 sim start: 2 ring(s) ...`) or JSON. */
export function formatEvent(e: DeviceEvent, json: boolean): string {
  if (json) return JSON.stringify(e);
  const t = new Date(e.time).toISOString().slice(11, 23);
  return `${t} ${e.device} ${e.type}: ${e.message}`;
}

/**
 * One line of counters: each ring's declared counters by name (`q0
 * packets=10 bytes=640 drops=0 errors=0`), then the device-wide ones.
 */
export function formatStats(
  rings: readonly QueueStats[],
  device: Readonly<Record<string, number>>,
  names: readonly string[],
): string {
  const parts = rings.map((q) =>
    `q${q.queue} ` + names.filter((n) => n in q).map((n) => `${n}=${q[n]}`).join(" ")
  );
  const totals = Object.entries(device).map(([n, v]) => `${n}=${v}`).join(" ");
  if (totals) parts.push(`device ${totals}`);
  return parts.join(" | ");
}
