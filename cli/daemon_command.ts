/**
 * `vhost-mdev daemon`: one process serving many devices, changed at run
 * time over a JSON-RPC control socket (`vhost-mdev dev ...` is its client),
 * restored at start from a configuration file, with optional Prometheus
 * metrics on a loopback port. See `docs/daemon.md`.
 *
 *   vhost-mdev daemon --control /run/vhost-mdev/control.sock \
 *     --config /etc/vhost-mdev/config.json --metrics 127.0.0.1:9464
 *
 * @module
 */

import { parseArgs } from "node:util";
import { DatapathPool, useDatapathPool } from "@vhost-mdev/sim";
import type { DeviceEvent } from "@vhost-mdev/sdk";
import { parseConfig } from "./config.ts";
import { ControlServer } from "./control_server.ts";
import { Daemon } from "./daemon.ts";
import { formatEvent } from "./format.ts";
import { type MetricsServer, parseMetricsAddress, renderMetrics, serveMetrics } from "./metrics.ts";

/** The control socket the daemon and `vhost-mdev dev` use when not told otherwise. */
export const DEFAULT_CONTROL = "/run/vhost-mdev/control.sock";

const HELP =
  `Usage: vhost-mdev daemon [--control PATH] [--config FILE] [--metrics HOST:PORT] [options]

Serve many vhost devices from one process. Devices are created and deleted at
run time over the control socket (JSON-RPC 2.0, one request per line; the
client is \`vhost-mdev dev\`), and from a configuration file at start.

Options:
  --control PATH       control socket (default $VHOST_MDEV_CONTROL or ${DEFAULT_CONTROL});
                       made owner-only (mode 0600)
  --config FILE        JSON file of drivers to load and devices to create at start;
                       if any entry fails the daemon exits 1 and serves nothing
  --metrics HOST:PORT  Prometheus metrics at http://HOST:PORT/metrics; loopback
                       addresses only (127.0.0.1, ::1, localhost)
  --datapath-workers N sim devices share a pool of N datapath Workers, each serving
                       the queue pairs of many devices (default: cores, one per CPU);
                       "pair" for a Worker of its own per queue pair
  --datapath-cpus LIST pin the pool's Workers to these CPUs (e.g. 2,3), Worker i on
                       the i-th, round robin (default: not pinned)
  --log text|json      event output format on stdout (default text)
  --debug              also print debug events
  --help               this text

Exit codes: 0 stopped by SIGINT/SIGTERM, 1 could not start (the message says
why), 2 bad arguments.

Example:
  vhost-mdev daemon --control /tmp/vm.sock --metrics 127.0.0.1:9464 &
  vhost-mdev --control /tmp/vm.sock dev add net0 driver sim socket /tmp/net0.sock mode loopback
`;

/**
 * Run the daemon with command-line `args` (after `daemon`); resolves with
 * the exit code once stopped by a signal (0) or when it cannot start (1, 2).
 */
export async function main(args: string[]): Promise<number> {
  let values;
  try {
    values = parseArgs({
      args,
      options: {
        control: { type: "string" },
        config: { type: "string" },
        metrics: { type: "string" },
        "datapath-workers": { type: "string", default: "cores" },
        "datapath-cpus": { type: "string" },
        log: { type: "string", default: "text" },
        debug: { type: "boolean", default: false },
        help: { type: "boolean", short: "h", default: false },
      },
      strict: true,
      allowPositionals: false,
    }).values;
  } catch (e) {
    console.error(`error: ${(e as Error).message} (see vhost-mdev daemon --help)`);
    return 2;
  }
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  if (values.log !== "text" && values.log !== "json") {
    console.error(`error: --log ${values.log}: choose text or json`);
    return 2;
  }
  if (values.metrics !== undefined) {
    try {
      parseMetricsAddress(values.metrics);
    } catch (e) {
      console.error(`error: ${(e as Error).message}`);
      return 2;
    }
  }
  let pool: DatapathPool | null = null;
  const workers = values["datapath-workers"];
  if (workers !== "pair") {
    const n = workers === "cores" ? navigator.hardwareConcurrency : Number(workers);
    if (!Number.isInteger(n) || n < 1 || n > 256) {
      console.error(`error: --datapath-workers ${workers}: a number from 1 to 256, cores or pair`);
      return 2;
    }
    const cpuList = values["datapath-cpus"];
    const cpus = cpuList === undefined ? [] : cpuList.split(",").map((c) => Number(c.trim()));
    if (cpus.some((c) => !Number.isInteger(c) || c < 0 || c > 1023)) {
      console.error(`error: --datapath-cpus ${cpuList}: CPU numbers like 0,1`);
      return 2;
    }
    pool = new DatapathPool({ workers: n, cpus });
    useDatapathPool(pool);
  }
  const json = values.log === "json";
  const control = values.control ?? Deno.env.get("VHOST_MDEV_CONTROL") ?? DEFAULT_CONTROL;
  const print = (e: DeviceEvent) => {
    if (e.type === "debug" && !values.debug) return;
    console.log(formatEvent(e, json));
  };
  const say = (type: "ready" | "exit", message: string, fields: Record<string, unknown>) =>
    console.log(
      json ? JSON.stringify({ type, message, time: Date.now(), ...fields }) : message,
    );

  let config;
  if (values.config !== undefined) {
    try {
      config = parseConfig(await Deno.readTextFile(values.config), values.config);
    } catch (e) {
      console.error(`error: ${(e as Error).message}`);
      return e instanceof Deno.errors.NotFound ? 1 : 2;
    }
  }

  const daemon = new Daemon({ onEvent: print });
  let server: ControlServer | undefined;
  let metrics: MetricsServer | undefined;
  const shutdown = async () => {
    await server?.close();
    await metrics?.close();
    await daemon.close();
    useDatapathPool(null);
    pool?.close();
  };
  try {
    for (const path of config?.drivers ?? []) {
      try {
        await daemon.loadDriver(path);
      } catch (e) {
        throw new Error(`config ${values.config}: driver ${path}: ${(e as Error).message}`);
      }
    }
    for (const spec of config?.devices ?? []) {
      try {
        await daemon.createDevice(spec);
      } catch (e) {
        throw new Error(`config ${values.config}: device ${spec.name}: ${(e as Error).message}`);
      }
    }
    if (values.metrics !== undefined) {
      metrics = await serveMetrics(values.metrics, () => renderMetrics(daemon.devices));
    }
    server = ControlServer.listen(control, daemon.methods());
  } catch (e) {
    console.error(`error: ${(e as Error).message}`);
    await shutdown();
    return 1;
  }

  const stop = Promise.withResolvers<string>();
  const signals = ["SIGINT", "SIGTERM"] as const;
  const handlers = signals.map((sig) => {
    const h = () => stop.resolve(sig);
    Deno.addSignalListener(sig, h);
    return [sig, h] as const;
  });
  say(
    "ready",
    `ready: control on ${control}, ${daemon.devices.length} device(s)` +
      (metrics ? `, metrics on ${values.metrics?.replace(/:\d+$/, "")}:${metrics.port}` : ""),
    { pid: Deno.pid, control, devices: daemon.devices.length, metricsPort: metrics?.port ?? null },
  );
  const sig = await stop.promise;
  for (const [s, h] of handlers) Deno.removeSignalListener(s, h);
  await shutdown();
  say("exit", `exit on ${sig}`, { signal: sig });
  return 0;
}
