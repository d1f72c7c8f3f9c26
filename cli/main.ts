/**
 * `vhost-mdev`: the command line of the SDK. One program, a subcommand per
 * job:
 *
 *   vhost-mdev serve --driver sim --socket /tmp/vhost-net0.sock
 *   vhost-mdev serve --driver ./my_driver.ts --socket /tmp/x.sock
 *   vhost-mdev demo
 *   vhost-mdev daemon --control /run/vhost-mdev/control.sock --config config.json
 *   vhost-mdev --control /run/vhost-mdev/control.sock dev add net0 driver sim socket /tmp/n.sock
 *   vhost-mdev bundle ./my_driver.ts -o my_driver.js
 *
 * From a checkout, `deno task vhost-mdev ...` runs the same program, and
 * `deno task serve` and `deno task demo` the same subcommands.
 *
 * @module
 */

import { main as demo } from "./demo.ts";
import { main as serve } from "./serve.ts";
import { main as daemon } from "./daemon_command.ts";
import { main as objectCommand } from "./dev_command.ts";
import { main as bundle } from "./bundle.ts";

const USAGE = `Usage: vhost-mdev <command> [options]
       vhost-mdev [--control PATH] dev|driver <command> [options]

Commands:
  serve   serve one device over a vhost-user socket (vhost-mdev serve --help)
  demo    the simulated device with a frontend, live counters (vhost-mdev demo --help)
  daemon  serve many devices, changed at run time over a control socket (vhost-mdev daemon --help)
  dev     add, delete, show devices of a running daemon, read their counters (vhost-mdev dev --help)
  driver  show the daemon's drivers, load a plugin into it (vhost-mdev driver --help)
  bundle  make a driver plugin one JavaScript file (vhost-mdev bundle --help)

--control PATH picks the daemon for dev and driver (default $VHOST_MDEV_CONTROL
or /run/vhost-mdev/control.sock). Run a command with --help for its options.`;

const COMMANDS = "serve, demo, daemon, dev, driver, bundle";

/**
 * Run the command line `args` (subcommand first, optionally after
 * `--control PATH`); resolves with the exit code: 0 done, 1 failed, 2 bad
 * arguments, 3 (dev, driver) the daemon cannot be reached.
 */
export async function run(args: string[]): Promise<number> {
  let control: string | undefined;
  if (args[0] === "--control" || args[0]?.startsWith("--control=")) {
    control = args[0] === "--control" ? args[1] : args[0].slice("--control=".length);
    args = args.slice(args[0] === "--control" ? 2 : 1);
    if (control === undefined) {
      console.error("error: --control needs a socket path (see --help)");
      return 2;
    }
  }
  const [command, ...rest] = args;
  switch (command) {
    case "serve":
      return await serve(rest);
    case "demo":
      return await demo(rest);
    case "daemon":
      return await daemon(control !== undefined ? ["--control", control, ...rest] : rest);
    case "dev":
    case "driver":
      return await objectCommand(command, rest, control);
    case "bundle":
      return await bundle(rest);
    case undefined:
    case "help":
    case "--help":
    case "-h":
      console.log(USAGE);
      return command === undefined ? 2 : 0;
    default:
      console.error(`error: unknown command "${command}"; commands: ${COMMANDS} (see --help)`);
      return 2;
  }
}

if (import.meta.main) {
  try {
    Deno.exit(await run(Deno.args));
  } catch (e) {
    console.error(`error: ${e instanceof Error ? e.message : e}`);
    Deno.exit(1);
  }
}
