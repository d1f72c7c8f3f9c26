/**
 * `vhost-mdev`: the command line of the SDK. One program, a subcommand per
 * job:
 *
 *   vhost-mdev serve --driver sim --socket /tmp/vhost-net0.sock
 *   vhost-mdev serve --driver ./my_driver.ts --socket /tmp/x.sock
 *   vhost-mdev demo
 *
 * From a checkout, `deno task serve` and `deno task demo` run the same
 * subcommands.
 *
 * @module
 */

import { main as demo } from "./demo.ts";
import { main as serve } from "./serve.ts";

const USAGE = `Usage: vhost-mdev <command> [options]

Commands:
  serve   serve one device over a vhost-user socket (vhost-mdev serve --help)
  demo    the simulated device with a frontend, live counters (vhost-mdev demo --help)

Run a command with --help for its options.`;

/**
 * Run the command line `args` (subcommand first); resolves with the exit
 * code: 0 done, 1 failed, 2 bad arguments.
 */
export async function run(args: string[]): Promise<number> {
  const [command, ...rest] = args;
  switch (command) {
    case "serve":
      return await serve(rest);
    case "demo":
      return await demo(rest);
    case undefined:
    case "help":
    case "--help":
    case "-h":
      console.log(USAGE);
      return command === undefined ? 2 : 0;
    default:
      console.error(`error: unknown command "${command}"; commands: serve, demo (see --help)`);
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
