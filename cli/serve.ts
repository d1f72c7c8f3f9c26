/**
 * `deno task serve`: serve one device over vhost-user.
 *
 *   deno task serve --driver sim --socket /tmp/vhost-net0.sock --mode loopback
 *
 * Prints one ready line, then one line per lifecycle event.
 *
 * @module
 */

import { type DeviceEvent, VhostMdevDevice } from "@vhost-mdev/sdk";
import { VhostUserClient, VhostUserServer } from "@vhost-mdev/sdk/vhost-user";
import { BUNDLED_DRIVERS, findDriver } from "./drivers.ts";
import { formatEvent, formatStats, parseFlags, peekFlag } from "./format.ts";

const HELP = `Usage: deno task serve --driver <name|module> --socket <path> [options]

Serve one vhost device over a vhost-user socket.

Options:
  --driver <name|module>  bundled driver (${
  Object.keys(BUNDLED_DRIVERS).join(", ")
}) or a plugin module path/URL
  --socket <path>         vhost-user socket path
  --client                connect to a listening frontend (reconnects) instead of listening
  --queues <N>            queue pairs (net) or request queues (blk) (default 1)
  --pci <addr|emulated>   PCI device for PCI drivers (0000:03:00.0, or "emulated")
  --log <text|json>       event output format (default text)
  --debug                 also print debug events
  --stats <seconds>       print per-ring counters every N seconds (0 = off, default 0)
  --allow-unsealed-memory accept guest memory the frontend could shrink (DPDK virtio_user,
                          hugetlbfs or disk files); a frontend that shrinks it kills this
                          process, so use it only for trusted frontends (docs/security.md)
  --help                  this text

Any other --name value is passed to the driver as an option; the driver's
options are listed with --driver <name> --help.

Examples:
  deno task serve --driver sim --mode loopback --socket /tmp/vhost-net0.sock
  deno task serve --driver ifcvf --pci emulated --socket /tmp/vhost-ifc.sock
  deno task serve --driver blk --file disk.img --readonly --queues 2 --socket /tmp/vhost-blk.sock
  deno task serve --driver ./my_driver.ts --socket /tmp/vhost-x.sock --client
`;

/**
 * Run `serve` with command-line `args` (without the program name); resolves
 * with the exit code.
 */
export async function main(args: string[]): Promise<number> {
  // The driver comes first: its true/false options are switches (`--readonly`).
  const named = peekFlag(args, "driver");
  const found = named ? await findDriver(named) : undefined;
  let parsed: ReturnType<typeof parseFlags>;
  try {
    parsed = parseFlags(
      args,
      ["client", "debug", "help", "allow-unsealed-memory"],
      found?.options ?? [],
      found ? `driver ${found.name}` : "the driver",
    );
  } catch (e) {
    console.error(`error: ${e instanceof Error ? e.message : e}`);
    return 2;
  }
  const { flags, options } = parsed;
  const driverName = flags.driver;
  if (flags.help !== undefined) {
    console.log(HELP);
    if (driverName) {
      const d = found ?? await findDriver(driverName);
      console.log(`Driver ${d.name}: ${d.description}`);
      for (const o of d.options ?? []) {
        const values = o.values ? ` (${o.values.join("|")})` : "";
        const def = o.default !== undefined ? ` [default ${o.default}]` : "";
        console.log(`  --${o.name}${values}  ${o.description}${def}`);
      }
    }
    return 0;
  }
  if (!driverName || !flags.socket) {
    console.error("error: --driver and --socket are required (see --help)");
    return 2;
  }
  const json = flags.log === "json";
  const debug = flags.debug !== undefined;
  const print = (e: DeviceEvent) => {
    if (e.type === "debug" && !debug) return;
    console.log(formatEvent(e, json));
  };
  const queues = Number(flags.queues ?? "1");
  if (!Number.isInteger(queues) || queues < 1 || queues > 64) {
    console.error(`error: --queues ${flags.queues} must be an integer from 1 to 64`);
    return 2;
  }
  const driver = found ?? await findDriver(driverName);
  const known = new Set((driver.options ?? []).map((o) => o.name));
  for (const [k, v] of Object.entries(options)) {
    const o = driver.options?.find((o) => o.name === k);
    if (!known.has(k)) {
      console.error(
        `error: driver ${driver.name} has no option --${k}; it takes: ${
          [...known].map((n) => "--" + n).join(" ") || "none"
        }`,
      );
      return 2;
    }
    if (o?.values && !o.values.includes(v)) {
      console.error(`error: --${k} ${v}: choose one of ${o.values.join(", ")}`);
      return 2;
    }
  }
  const device = await VhostMdevDevice.create(
    driver,
    { queues, pci: flags.pci, options },
    { listener: print, allowUnsealedMemory: flags["allow-unsealed-memory"] !== undefined },
  );
  const socket = flags.socket;
  const client = flags.client !== undefined;
  const endpoint = client
    ? VhostUserClient.connect(device, socket)
    : VhostUserServer.listen(device, socket);
  const ready = {
    type: "ready",
    message: `ready: ${driver.name} ${client ? "connecting to" : "listening on"} ${socket}, ` +
      `${queues} queue pair(s)`,
    device: driver.name,
    time: Date.now(),
  } as const;
  console.log(json ? JSON.stringify(ready) : ready.message);

  const statsEvery = Number(flags.stats ?? "0");
  const timer = statsEvery > 0
    ? setInterval(() => {
      const s = device.stats(), total = device.deviceStats();
      if (s.length === 0 && Object.keys(total).length === 0) return;
      console.log(
        json
          ? JSON.stringify({
            type: "stats",
            device: driver.name,
            time: Date.now(),
            queues: s,
            totals: total,
          })
          : `stats: ${formatStats(s, total, device.counters.ring.map((c) => c.name))}`,
      );
    }, statsEvery * 1000)
    : undefined;

  const stop = new Promise<string>((resolve) => {
    for (const sig of ["SIGINT", "SIGTERM"] as const) {
      Deno.addSignalListener(sig, () => resolve(sig));
    }
  });
  const sig = await stop;
  if (timer !== undefined) clearInterval(timer);
  await endpoint.close();
  await device.close();
  console.log(json ? JSON.stringify({ type: "exit", signal: sig }) : `exit on ${sig}`);
  return 0;
}

if (import.meta.main) {
  try {
    Deno.exit(await main(Deno.args));
  } catch (e) {
    console.error(`error: ${e instanceof Error ? e.message : e}`);
    Deno.exit(1);
  }
}
