/**
 * A Linux guest under QEMU pings a device this SDK serves, and both sides
 * must count the same packets.
 *
 *   deno run -A examples/vm.ts [--driver sim] [--queues N] [--count N] [--json] [--setup]
 *
 * The SDK creates the device (`sim` in `responder` mode answers ARP and ICMP
 * echo for `--ip`); the test kit's `runPingVm` serves it on a vhost-user
 * socket, boots the guest with its NIC on that socket, and passes when ping
 * lost nothing, guest `tx_packets` equals the packets the device took from
 * its TX rings and guest `rx_packets` the packets it put on its RX rings.
 *
 * @module
 */

import { isIPv4 } from "node:net";
import { type Driver, VhostMdevDevice } from "@vhost-mdev/sdk";
import { driver as sim } from "@vhost-mdev/sim";
import {
  integerFlag,
  parseFlags,
  pingVmSummary,
  runGuestCommand,
  runPingVm,
  usageError,
} from "@vhost-mdev/testing/guest";

const HELP = `Usage: deno run -A examples/vm.ts [options]

Boot a Linux guest under QEMU whose NIC is a vhost-user device served by this
SDK, ping the device from the guest, and compare both sides' packet counters.

  --driver <name|module>  sim (default), or a module path or URL exporting \`driver\`
  --mode <mode>           driver mode (default responder: answers ARP and ping)
  --queues <N>            queue pairs (default 1)
  --ip <addr>             the device's IPv4 address (default 10.0.0.1)
  --count <N>             echo requests the guest sends (default 20)
  --interval <seconds>    time between requests (default 0.2)
  --json                  print the result as one JSON line at the end
  --verbose               echo the guest console and every device event
  --setup                 install qemu-system-x86 and busybox-static with apt-get
  --help                  this text

Exit status: 0 pass, 1 check failed, 2 usage error or missing tools.`;

/** `sim`, or a plugin module that exports `driver` (or a default export). */
async function loadDriver(spec: string): Promise<Driver> {
  if (spec === "sim") return sim;
  if (!/[/.:]/.test(spec)) {
    usageError(`--driver ${spec}: sim, or a module path like ./my_driver.ts`);
  }
  const mod = await import(new URL(spec, `file://${Deno.cwd()}/`).href);
  const driver = mod.driver ?? mod.default;
  if (typeof driver?.probe !== "function") throw new Error(`${spec} exports no driver`);
  return driver;
}

async function main(args: string[]): Promise<number> {
  const options = {
    driver: { type: "string", default: "sim" },
    mode: { type: "string", default: "responder" },
    queues: { type: "string", default: "1" },
    ip: { type: "string", default: "10.0.0.1" },
    count: { type: "string", default: "20" },
    interval: { type: "string", default: "0.2" },
  } as const;
  const flags = parseFlags(args, options, HELP);
  if (flags === null) return 0;
  const queues = integerFlag("queues", flags.queues, 1, 8);
  const count = integerFlag("count", flags.count, 1, 1000);
  const interval = Number(flags.interval);
  if (!(interval >= 0.01 && interval <= 10)) {
    usageError(`--interval ${flags.interval}: 0.01 to 10 s`);
  }
  if (flags.mode !== "responder") usageError(`--mode ${flags.mode}: the guest pings, so responder`);
  if (!isIPv4(flags.ip)) usageError(`--ip ${flags.ip}: expected an IPv4 address like 10.0.0.1`);

  const shown = ["connected", "disconnected", "refused", "start", "stop", "warn", "error"];
  const listener = ({ type, message }: { type: string; message: string }) => {
    if (flags.verbose ? type !== "debug" : shown.includes(type)) {
      console.log(`device: ${type}: ${message}`);
    }
  };
  const params = { queues, options: { mode: flags.mode, ip: flags.ip } };
  const device = await VhostMdevDevice.create(await loadDriver(flags.driver), params, { listener });
  try {
    const { ip, verbose, setup } = flags;
    const run = { device, ip, queues, count, interval, verbose, setup, log: console.log };
    return await runGuestCommand((signal) => runPingVm({ ...run, signal }), {
      summary: pingVmSummary,
      json: flags.json,
    });
  } finally {
    await device.close();
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
