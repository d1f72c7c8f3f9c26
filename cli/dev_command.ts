/**
 * `vhost-mdev dev` and `vhost-mdev driver`: the daemon's client, in
 * iproute2's conventions (`vdpa dev add/del/show/vstats`): keywords and
 * values after the object and verb, `-j` for JSON, `-p` to pretty-print it.
 *
 *   vhost-mdev --control /tmp/c.sock dev add net0 driver sim socket /tmp/net0.sock mode loopback
 *   vhost-mdev dev show -j -p
 *   vhost-mdev dev stats net0
 *   vhost-mdev driver load ./mydriver.js
 *
 * Exit codes: {@linkcode ExitCode}.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { callDaemon, DaemonUnreachable } from "./control_client.ts";
import { DEFAULT_CONTROL } from "./daemon_command.ts";
import { RpcError } from "./rpc.ts";

/** What `vhost-mdev dev|driver ...` exits with; scripts can rely on these. */
export const ExitCode = {
  /** Done. */
  OK: 0,
  /** The daemon refused the request (a JSON-RPC error; its message is printed). */
  DAEMON_ERROR: 1,
  /** Bad command line (unknown keyword, missing value); nothing was sent. */
  USAGE: 2,
  /** Nothing answers on the control socket, or the answer never came. */
  UNREACHABLE: 3,
} as const;

const DEV_HELP = `Usage: vhost-mdev [--control PATH] dev <command> [options]

Commands:
  dev add NAME driver DRV socket PATH [queues N] [mode server|client] [pci ADDR]
          [unsealed on|off] [KEY VALUE ...]
      create a device. mode server (default) listens on PATH for the frontend,
      mode client connects to a frontend listening there; any other KEY VALUE
      is a driver option (mode loopback is the sim's option: server and client
      are the only values taken as the vhost-user role). unsealed on accepts
      guest memory the frontend could shrink (trusted frontends only).
  dev del NAME               delete a device (its frontend is disconnected)
  dev show [NAME] [-j] [-p]  list devices, or one
  dev stats NAME [-j] [-p]   per-ring and device counters
  dev reset-stats NAME       set a device's counters to zero

Options:
  --control PATH  the daemon's control socket (default $VHOST_MDEV_CONTROL or
                  ${DEFAULT_CONTROL})
  -j, --json      JSON output
  -p, --pretty    indent the JSON
  -h, --help      this text

Exit codes: 0 ok, 1 the daemon refused (message on stderr), 2 bad command
line, 3 the daemon cannot be reached.

Examples:
  vhost-mdev dev add net0 driver sim socket /run/vhost-mdev/net0.sock queues 2 mode loopback
  vhost-mdev dev show -j -p
  vhost-mdev dev stats net0`;

const DRIVER_HELP = `Usage: vhost-mdev [--control PATH] driver <command> [options]

Commands:
  driver show [NAME] [-j] [-p]  the drivers the daemon knows and their options
  driver load PATH [-j]         load a driver module (a .ts source or a bundle made
                                with vhost-mdev bundle) into the running daemon

Options:
  --control PATH  the daemon's control socket (default $VHOST_MDEV_CONTROL or
                  ${DEFAULT_CONTROL})
  -j, --json      JSON output
  -p, --pretty    indent the JSON
  -h, --help      this text

Exit codes: 0 ok, 1 the daemon refused (message on stderr), 2 bad command
line, 3 the daemon cannot be reached.`;

/** Thrown for a bad command line; the message says what is wrong. */
class UsageError extends Error {}

interface Common {
  positionals: string[];
  control: string;
  json: boolean;
  pretty: boolean;
  help: boolean;
}

function parseCommon(args: string[], control: string | undefined): Common {
  const { values, positionals } = parseArgs({
    args,
    options: {
      control: { type: "string" },
      json: { type: "boolean", short: "j", default: false },
      pretty: { type: "boolean", short: "p", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
    strict: true,
    allowPositionals: true,
  });
  return {
    positionals,
    control: values.control ?? control ?? Deno.env.get("VHOST_MDEV_CONTROL") ?? DEFAULT_CONTROL,
    json: values.json || values.pretty,
    pretty: values.pretty,
    help: values.help,
  };
}

function printJson(value: unknown, pretty: boolean): void {
  console.log(JSON.stringify(value, null, pretty ? 2 : undefined));
}

/** Keyword/value pairs of `dev add` after NAME, as device_create params. */
function addParams(name: string, words: string[]): Record<string, unknown> {
  if (words.length % 2 !== 0) {
    throw new UsageError(`keyword "${words[words.length - 1]}" needs a value`);
  }
  const params: Record<string, unknown> = { name };
  const options: Record<string, string> = {};
  for (let i = 0; i < words.length; i += 2) {
    const [k, v] = [words[i], words[i + 1]];
    switch (k) {
      case "driver":
      case "socket":
      case "pci":
        params[k] = v;
        break;
      case "queues": {
        const n = Number(v);
        if (!/^\d+$/.test(v) || n < 1 || n > 64) {
          throw new UsageError(`queues ${v}: give an integer from 1 to 64`);
        }
        params.queues = n;
        break;
      }
      case "unsealed":
        if (v !== "on" && v !== "off") throw new UsageError(`unsealed ${v}: give on or off`);
        params.allowUnsealedMemory = v === "on";
        break;
      case "mode":
      case "role":
        if (v === "server" || v === "client") params.mode = v;
        else if (k === "mode") options.mode = v;
        else throw new UsageError(`role ${v}: give server or client`);
        break;
      default:
        options[k] = v;
    }
  }
  if (params.driver === undefined || params.socket === undefined) {
    throw new UsageError("dev add needs driver DRV and socket PATH");
  }
  if (typeof params.socket === "string" && !params.socket.startsWith("/")) {
    params.socket = `${Deno.cwd()}/${params.socket}`;
  }
  params.options = options;
  return params;
}

function describeDevice(d: Record<string, unknown>): string {
  const opts = Object.entries((d.options ?? {}) as Record<string, string>)
    .map(([k, v]) => ` ${k} ${v}`).join("");
  return `${d.name}: driver ${d.driver} socket ${d.socket} mode ${d.mode} queues ${d.queues} ` +
    `state ${d.running ? "running" : "stopped"} frontend ${
      d.connected ? "connected" : "none"
    } errors ${d.errors}${opts ? `\n  options${opts}` : ""}`;
}

function describeStats(s: Record<string, unknown>): string {
  const rings = (s.rings ?? []) as Record<string, number>[];
  const names = ((s.counters as { ring: string[] })?.ring) ?? [];
  const lines = [`${s.name}: errors ${s.errors}`];
  for (const q of rings) {
    lines.push(`  q${q.queue} ` + names.filter((n) => n in q).map((n) => `${n} ${q[n]}`).join(" "));
  }
  const device = Object.entries((s.device ?? {}) as Record<string, number>);
  if (device.length) lines.push(`  device ${device.map(([k, v]) => `${k} ${v}`).join(" ")}`);
  return lines.join("\n");
}

async function runDev(c: Common): Promise<number> {
  const [verb, name, ...rest] = c.positionals;
  const needName = () => {
    if (name === undefined) throw new UsageError(`dev ${verb} needs a device NAME`);
    return name;
  };
  const noMore = () => {
    if (rest.length) throw new UsageError(`unexpected "${rest[0]}" after dev ${verb} ${name}`);
  };
  switch (verb) {
    case "add": {
      const params = addParams(needName(), rest);
      const r = await callDaemon(c.control, "device_create", params);
      if (c.json) printJson({ dev: { [name]: r } }, c.pretty);
      return ExitCode.OK;
    }
    case "del":
    case "delete": {
      needName();
      noMore();
      await callDaemon(c.control, "device_delete", { name });
      return ExitCode.OK;
    }
    case undefined:
    case "show":
    case "list": {
      noMore();
      const list = name === undefined
        ? await callDaemon(c.control, "device_list") as Record<string, unknown>[]
        : [await callDaemon(c.control, "device_get", { name }) as Record<string, unknown>];
      if (c.json) {
        printJson({ dev: Object.fromEntries(list.map((d) => [d.name, d])) }, c.pretty);
      } else {
        for (const d of list) console.log(describeDevice(d));
      }
      return ExitCode.OK;
    }
    case "stats":
    case "vstats": {
      needName();
      noMore();
      const s = await callDaemon(c.control, "device_stats", { name }) as Record<string, unknown>;
      if (c.json) printJson({ stats: { [name]: s } }, c.pretty);
      else console.log(describeStats(s));
      return ExitCode.OK;
    }
    case "reset-stats": {
      needName();
      noMore();
      await callDaemon(c.control, "device_reset_stats", { name });
      return ExitCode.OK;
    }
    default:
      throw new UsageError(
        `unknown dev command "${verb}"; commands: add, del, show, stats, reset-stats`,
      );
  }
}

async function runDriver(c: Common): Promise<number> {
  const [verb, arg, ...rest] = c.positionals;
  if (rest.length) throw new UsageError(`unexpected "${rest[0]}" after driver ${verb} ${arg}`);
  switch (verb) {
    case undefined:
    case "show":
    case "list": {
      let list = await callDaemon(c.control, "driver_list") as Record<string, unknown>[];
      if (arg !== undefined) {
        list = list.filter((d) => d.name === arg);
        if (!list.length) {
          console.error(`error: the daemon has no driver named "${arg}" (see driver show)`);
          return ExitCode.DAEMON_ERROR;
        }
      }
      if (c.json) {
        printJson({ driver: Object.fromEntries(list.map((d) => [d.name, d])) }, c.pretty);
        return ExitCode.OK;
      }
      for (const d of list) {
        const opts = ((d.options ?? []) as { name: string; values?: string[] }[])
          .map((o) => o.values ? `${o.name} ${o.values.join("|")}` : o.name).join(", ");
        console.log(
          `${d.name}: ${d.description ?? d.error} (${d.source})${
            opts ? `\n  options ${opts}` : ""
          }`,
        );
      }
      return ExitCode.OK;
    }
    case "load": {
      if (arg === undefined) throw new UsageError("driver load needs a module PATH");
      const path = /^[a-z][a-z0-9+.-]*:/i.test(arg) || arg.startsWith("/")
        ? arg
        : `${Deno.cwd()}/${arg}`;
      const r = await callDaemon(c.control, "driver_load", { path }) as { name: string };
      if (c.json) printJson(r, c.pretty);
      else console.log(`driver ${r.name} loaded`);
      return ExitCode.OK;
    }
    default:
      throw new UsageError(`unknown driver command "${verb}"; commands: show, load`);
  }
}

/**
 * Run `vhost-mdev dev ...` (`object` "dev") or `vhost-mdev driver ...`
 * (`object` "driver") with the words after the object; resolves with an
 * {@linkcode ExitCode}. `control` is a `--control` given before the object.
 */
export async function main(
  object: "dev" | "driver",
  args: string[],
  control?: string,
): Promise<number> {
  const help = object === "dev" ? DEV_HELP : DRIVER_HELP;
  let c: Common;
  try {
    c = parseCommon(args, control);
  } catch (e) {
    console.error(`error: ${(e as Error).message} (see vhost-mdev ${object} --help)`);
    return ExitCode.USAGE;
  }
  if (c.help || c.positionals[0] === "help") {
    console.log(help);
    return ExitCode.OK;
  }
  try {
    return object === "dev" ? await runDev(c) : await runDriver(c);
  } catch (e) {
    if (e instanceof UsageError) {
      console.error(`error: ${e.message} (see vhost-mdev ${object} --help)`);
      return ExitCode.USAGE;
    }
    if (e instanceof RpcError) {
      console.error(`error: ${e.message} (code ${e.code})`);
      return ExitCode.DAEMON_ERROR;
    }
    if (e instanceof DaemonUnreachable) {
      console.error(`error: ${e.message}`);
      return ExitCode.UNREACHABLE;
    }
    throw e;
  }
}
