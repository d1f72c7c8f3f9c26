/**
 * Command-line parsing and event formatting shared by the CLIs.
 *
 * @module
 */

import { parseArgs } from "node:util";
import type { DeviceEvent, DriverOption, QueueStats } from "@vhost-mdev/sdk";

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
 * own flags and driver options, with `node:util` `parseArgs`. Names in
 * `switches` take no value. `driverOptions` are the options the driver
 * declares (`Driver.options`); any other name is refused, naming the ones
 * that fit. A driver option whose values are `true` and `false` also stands
 * alone as a switch (`--readonly` is `--readonly true`).
 *
 * @throws Error naming the argument that does not fit, for the CLI to print
 *   with "see --help".
 */
export function parseFlags(
  args: readonly string[],
  switches: readonly string[],
  driverOptions: readonly DriverOption[] = [],
  driverName = "the driver",
): { flags: Record<string, string>; options: Record<string, string> } {
  const config: Record<string, { type: "string" | "boolean"; short?: string }> = {};
  for (const name of RESERVED) {
    config[name] = { type: switches.includes(name) ? "boolean" : "string" };
  }
  config.help = { type: "boolean", short: "h" };
  const booleans = new Set<string>();
  for (const o of driverOptions) {
    if (RESERVED.has(o.name)) continue;
    config[o.name] = { type: "string" };
    if (o.values?.length === 2 && o.values.includes("true") && o.values.includes("false")) {
      booleans.add(o.name);
    }
  }
  // parseArgs' string options always take a value: a true/false option
  // given alone gets its `true` here.
  const argv: string[] = [];
  for (let i = 0; i < args.length; i++) {
    argv.push(args[i]);
    const name = args[i].startsWith("--") ? args[i].slice(2) : "";
    if (booleans.has(name) && args[i + 1] !== "true" && args[i + 1] !== "false") argv.push("true");
  }
  let values: Record<string, string | boolean | undefined>;
  try {
    values = parseArgs({ args: argv, options: config, strict: true, allowPositionals: false })
      .values as Record<string, string | boolean | undefined>;
  } catch (e) {
    const why = e instanceof Error ? e.message : String(e);
    const declared = driverOptions.map((o) => `--${o.name}`).join(" ");
    const unknown = /Unknown option '(--[^']+)'/.exec(why);
    if (unknown) {
      throw new Error(
        `${driverName} has no option ${unknown[1]}; ` +
          (declared ? `its options are ${declared}` : "it declares no options") + " (see --help)",
      );
    }
    throw new Error(`${why} (see --help)`);
  }
  const flags: Record<string, string> = {};
  const options: Record<string, string> = {};
  for (const [name, value] of Object.entries(values)) {
    if (value === undefined || value === false) continue;
    (RESERVED.has(name) ? flags : options)[name] = value === true ? "" : value;
  }
  return { flags, options };
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
