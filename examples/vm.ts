/**
 * Boot a small Linux guest under QEMU whose virtio-net NIC is served by the
 * SDK, ping the device from the guest, and check that both sides counted the
 * same packets.
 *
 *   deno run -A examples/vm.ts [--driver sim] [--queues N] [--mode responder] [--setup]
 *
 * What happens:
 *
 * 1. The SDK creates the device (`sim` in `responder` mode answers ARP and
 *    ICMP echo for `--ip`) and serves it on a vhost-user socket, in this
 *    process.
 * 2. QEMU (TCG) boots a Debian cloud kernel with a busybox initramfs; QEMU's
 *    vhost-user netdev connects to the socket and hands the guest's memory
 *    and rings to the device.
 * 3. The guest brings `eth0` up, pings the device `--count` times, and prints
 *    its interface counters.
 * 4. The example prints both sides' counters and exits 0 only when ping lost
 *    nothing and the counters agree, meaning exactly:
 *    - guest `tx_packets` == packets the device took from its TX rings
 *      (odd rings 1, 3, ...), and
 *    - guest `rx_packets` == packets the device put on its RX rings (even
 *      rings 0, 2, ...).
 *
 * Exit status: 0 pass, 1 the check failed, 2 usage or missing host tools.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { type DeviceEvent, type QueueStats, VhostMdevDevice } from "@vhost-mdev/sdk";
import { VhostUserServer } from "@vhost-mdev/sdk/vhost-user";
import { findDriver } from "../cli/drivers.ts";
import {
  GUEST_TOOLS,
  installHostTools,
  MissingToolsError,
  requireHostTools,
} from "../testing/guest/host_tools.ts";
import {
  COUNTERS_MARKER,
  parsePingReport,
  pingGuestArgs,
  type PingGuestReport,
  preparePingGuest,
} from "../testing/guest/ping_guest.ts";
import { QemuVm } from "../testing/guest/qemu.ts";

const HELP = `Usage: deno run -A examples/vm.ts [options]

Boot a Linux guest under QEMU whose NIC is a vhost-user device served by this
SDK, ping the device from the guest, and compare both sides' packet counters.

Options:
  --driver <name|module>  driver serving the NIC (default sim)
  --mode <mode>           driver mode (default responder: answers ARP and ping)
  --queues <N>            queue pairs (default 1)
  --ip <addr>             the device's IPv4 address (default 10.0.0.1); the guest
                          takes a neighbour in the same /24
  --count <N>             echo requests the guest sends (default 20)
  --interval <seconds>    time between requests (default 0.2)
  --json                  print the result as one JSON line at the end
  --verbose               echo the guest console and every device event
  --setup                 install missing host packages with apt-get first
  --help                  this text

Needs qemu-system-x86_64 and a static busybox:
  apt-get install qemu-system-x86 busybox-static
The guest kernel is fetched once with apt-get download (Debian's
linux-image-cloud-amd64) and cached with the built image in
\${XDG_CACHE_HOME:-~/.cache}/vhost-mdev/guest.

Exit status: 0 pass, 1 check failed, 2 usage error or missing tools.
`;

/** What the example found. */
interface VmResult {
  pass: boolean;
  reasons: string[];
  guest: PingGuestReport;
  device: { txRingPackets: number; rxRingPackets: number; rings: QueueStats[] };
  timings: Record<string, number>;
}

function usage(message: string): never {
  console.error(`error: ${message} (see --help)`);
  Deno.exit(2);
}

function intFlag(name: string, value: string, min: number, max: number): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < min || n > max) {
    usage(`--${name} ${value}: expected an integer from ${min} to ${max}`);
  }
  return n;
}

/** The guest's address: same /24 as the device, a different host number. */
function neighbourOf(ip: string): string {
  const parts = ip.split(".").map(Number);
  if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p) || p < 0 || p > 255)) {
    usage(`--ip ${ip}: expected an IPv4 address like 10.0.0.1`);
  }
  parts[3] = parts[3] === 2 ? 3 : 2;
  return parts.join(".");
}

async function main(): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: Deno.args,
      options: {
        driver: { type: "string", default: "sim" },
        mode: { type: "string", default: "responder" },
        queues: { type: "string", default: "1" },
        ip: { type: "string", default: "10.0.0.1" },
        count: { type: "string", default: "20" },
        interval: { type: "string", default: "0.2" },
        json: { type: "boolean", default: false },
        verbose: { type: "boolean", default: false },
        setup: { type: "boolean", default: false },
        help: { type: "boolean", default: false },
      },
      strict: true,
      allowPositionals: false,
    });
  } catch (e) {
    usage((e as Error).message);
  }
  const flags = parsed.values;
  if (flags.help) {
    console.log(HELP);
    return 0;
  }
  const queues = intFlag("queues", flags.queues, 1, 8);
  const count = intFlag("count", flags.count, 1, 1000);
  const interval = Number(flags.interval);
  if (!(interval >= 0.01 && interval <= 10)) usage(`--interval ${flags.interval}: 0.01 to 10 s`);
  if (flags.mode !== "responder") {
    usage(`--mode ${flags.mode}: the guest pings the device, which only the responder answers`);
  }
  const guestIp = neighbourOf(flags.ip);
  const log = (line: string) => console.log(line);
  const timings: Record<string, number> = {};
  const t0 = performance.now();
  const lap = (name: string, since: number) => {
    timings[name] = Math.round(performance.now() - since);
  };

  if (flags.setup) await installHostTools(GUEST_TOOLS, log);
  let tools: Map<string, string>;
  try {
    tools = await requireHostTools(GUEST_TOOLS);
  } catch (e) {
    if (e instanceof MissingToolsError) {
      console.error(`error: ${e.message}`);
      return 2;
    }
    throw e;
  }

  const driver = await findDriver(flags.driver);
  let t = performance.now();
  const guest = await preparePingGuest(tools.get("busybox")!, (l) => log(`image: ${l}`));
  lap("image_ms", t);
  log(`image: kernel ${guest.release}, initramfs ${guest.initrd}`);

  const printEvent = (e: DeviceEvent) => {
    const always = ["connected", "disconnected", "refused", "start", "stop", "warn", "error"];
    if (flags.verbose ? e.type !== "debug" : always.includes(e.type)) {
      log(`device: ${e.type}: ${e.message}`);
    }
  };
  const device = await VhostMdevDevice.create(
    driver,
    { queues, options: { mode: flags.mode, ip: flags.ip } },
    { listener: printEvent },
  );
  const dir = await Deno.makeTempDir({ prefix: "vhost-mdev-vm-" });
  const socket = `${dir}/vhost-net.sock`;
  let server: VhostUserServer | null = null;
  let vm: QemuVm | null = null;
  const onSignal = () => {
    vm?.close().finally(() => Deno.exit(130));
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  try {
    server = VhostUserServer.listen(device, socket);
    log(
      `device: ${driver.name} (${flags.mode}, ${flags.ip}) serving ${queues} queue pair(s) on ${socket}`,
    );
    t = performance.now();
    vm = QemuVm.launch({
      qemu: tools.get("qemu-system-x86_64"),
      args: pingGuestArgs(guest, {
        socket,
        queues,
        ip: guestIp,
        prefix: 24,
        peer: flags.ip,
        count,
        interval,
        memoryMiB: 256,
        verboseKernel: flags.verbose,
      }),
      log,
      onConsoleLine: flags.verbose ? (l) => log(`  console| ${l}`) : undefined,
    });
    log(`guest: QEMU started (pid ${vm.pid}), booting ${guest.release} under TCG`);
    await vm.waitFor(/vm-init: userspace up/, {
      timeoutMs: 90_000,
      what: "the guest kernel to boot",
    });
    lap("boot_ms", t);
    t = performance.now();
    await vm.waitFor(/vm-init: modules loaded/, { timeoutMs: 30_000, what: "the virtio modules" });
    await vm.waitFor(/vm-init: eth0 up/, { timeoutMs: 30_000, what: "eth0 to come up" });
    const pingBudget = 30_000 + count * (interval * 1000 + 100) + 10_000;
    const m = await vm.waitFor(COUNTERS_MARKER, {
      timeoutMs: pingBudget,
      what: `the guest's ${count} pings and its counters`,
    });
    lap("ping_ms", t);
    const report = parsePingReport(m[1]);
    const rings = device.stats();
    const inUse = rings.filter((r) => r.queue < 2 * queues);
    const txRingPackets = inUse.filter((r) => r.queue % 2 === 1).reduce((s, r) => s + r.packets, 0);
    const rxRingPackets = inUse.filter((r) => r.queue % 2 === 0).reduce((s, r) => s + r.packets, 0);
    const shutdown = performance.now();
    await Promise.race([vm.exited, new Promise((r) => setTimeout(r, 10_000))]);
    timings.shutdown_ms = Math.round(performance.now() - shutdown);
    timings.total_ms = Math.round(performance.now() - t0);

    const c = report.counters;
    const reasons: string[] = [];
    if (
      report.pingExit !== 0 || report.received !== report.transmitted || report.lossPercent !== 0
    ) {
      reasons.push(
        `ping lost packets: ${report.transmitted} sent, ${report.received} received ` +
          `(${report.lossPercent}% loss, exit ${report.pingExit})`,
      );
    }
    if (report.transmitted !== count) reasons.push(`ping sent ${report.transmitted}, not ${count}`);
    if (rings.length === 0) {
      reasons.push(`driver ${driver.name} reports no ring counters (ops.stats)`);
    }
    if (c.tx_packets !== txRingPackets) {
      reasons.push(`guest tx_packets ${c.tx_packets} != device TX-ring packets ${txRingPackets}`);
    }
    if (c.rx_packets !== rxRingPackets) {
      reasons.push(`guest rx_packets ${c.rx_packets} != device RX-ring packets ${rxRingPackets}`);
    }
    const result: VmResult = {
      pass: reasons.length === 0,
      reasons,
      guest: report,
      device: { txRingPackets, rxRingPackets, rings },
      timings,
    };
    log("");
    log(
      `guest:  ping ${report.transmitted} sent, ${report.received} received, ${report.lossPercent}% loss; ` +
        `tx_packets=${c.tx_packets} rx_packets=${c.rx_packets} tx_bytes=${c.tx_bytes} ` +
        `rx_bytes=${c.rx_bytes} dropped=${c.tx_dropped}/${c.rx_dropped} errors=${c.tx_errors}/${c.rx_errors}`,
    );
    log(
      `device: TX rings ${txRingPackets} packets, RX rings ${rxRingPackets} packets; ` +
        rings.map((r) =>
          `ring ${r.queue} (${r.queue % 2 ? "tx" : "rx"}): ${r.packets}p ${r.bytes}B ` +
          `drops ${r.drops} errors ${r.errors}`
        ).join(", "),
    );
    log(
      `timing: image ${timings.image_ms} ms, boot ${timings.boot_ms} ms, ` +
        `modules+link+ping ${timings.ping_ms} ms, total ${timings.total_ms} ms`,
    );
    if (result.pass) {
      log(
        `PASS: 0% loss; guest tx ${c.tx_packets} == device TX-ring ${txRingPackets}, ` +
          `guest rx ${c.rx_packets} == device RX-ring ${rxRingPackets}`,
      );
    } else {
      log(`FAIL: ${reasons.join("; ")}`);
    }
    if (flags.json) console.log(JSON.stringify(result));
    return result.pass ? 0 : 1;
  } catch (e) {
    console.error(`FAIL: ${(e as Error).message}`);
    return 1;
  } finally {
    Deno.removeSignalListener("SIGINT", onSignal);
    Deno.removeSignalListener("SIGTERM", onSignal);
    await vm?.close();
    await server?.close();
    await device.close();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

if (import.meta.main) {
  try {
    Deno.exit(await main());
  } catch (e) {
    console.error(`error: ${e instanceof Error ? e.message : e}`);
    Deno.exit(1);
  }
}
