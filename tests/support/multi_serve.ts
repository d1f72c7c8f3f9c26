/**
 * Several devices served by ONE process, as a daemon serves tenants: the
 * backend that the security tests attack from another process.
 *
 *   deno run -A tests/support/multi_serve.ts --socket A.sock --socket B.sock \
 *     [--mode loopback|sink|responder] [--allow-unsealed-memory] [--sample-ms 5]
 *
 * Each `--socket` gets its own sim device named after the socket file
 * (`A.sock` → `A`). stdout carries only JSON lines: one per device event
 * (`{"device","type","message"}`), `{"ready":true,"pid":N}` once every socket
 * listens, and, with `--sample-ms`, a `{"report":{...}}` line on the line
 * `report` on stdin and on SIGTERM (then the process exits); the line `reset`
 * forgets the stalls seen so far.
 *
 * A report gives per device the packets its rings counted and `maxStallMs`:
 * the longest time between two samples in which the counters did not grow
 * while traffic was flowing (the time before the first growth and after the
 * last one is not counted), plus `maxSampleGapMs`, the longest time between
 * two samples (how long the main thread was kept from its timer).
 *
 * @module
 */

import { parseArgs } from "node:util";
import {
  bit,
  type DeviceEvent,
  type DeviceOptions,
  type Driver,
  type QueueStats,
  VhostMdevDevice,
  VirtioDeviceId,
  VirtioFeatureBit,
  VirtioNetFeatureBit,
} from "@vhost-mdev/sdk";
import { VhostUserServer } from "@vhost-mdev/sdk/vhost-user";
import { driver as simDriver } from "@vhost-mdev/sim";

const HELP =
  `Usage: deno run -A tests/support/multi_serve.ts --socket <path> [--socket <path> ...] [options]

Serve one sim device per socket, all in this one process.

Options:
  --socket <path>           a sim device on <path>, named after the file (A.sock -> A); repeatable
  --trusted-socket <path>   like --socket, but this device accepts guest memory that is not
                            sealed (DPDK virtio_user --no-huge); repeatable
  --relay-socket <path>     a device whose driver has notify(): its kicks go through the SDK's
                            kick relay to the main thread (the sim polls its own kicks); repeatable
  --mode <mode>             sim mode of every sim device: loopback, sink or responder (default loopback)
  --allow-unsealed-memory   every device accepts guest memory that is not sealed
  --sample-ms <ms>          sample every device's packet counters this often and report
                            {packets, maxStallMs} on SIGTERM or on a "report" line on stdin;
                            a "reset" line forgets the stalls seen so far
  --help                    this text

stdout: one JSON line per event {"device","type","message"}, {"ready":true,"pid":N} when
listening, {"report":{...}} when asked.
`;

/** Counters of one device as the sampler tracks them. */
interface Sampled {
  device: VhostMdevDevice;
  last: number;
  firstAt: number;
  lastAt: number;
  grown: boolean;
  maxStallMs: number;
}

/** A driver whose kicks reach `notify` on the main thread through the SDK's kick relay. */
function relayDriver(): Driver {
  return {
    name: "relay",
    description: "counts kicks relayed to the main thread; never touches the rings",
    pciIds: [],
    probe(ctx, params) {
      const numQueues = 2 * params.queues;
      const kicks = new Array<number>(numQueues).fill(0);
      return {
        deviceId: VirtioDeviceId.NET,
        features: bit(VirtioFeatureBit.VERSION_1) | bit(VirtioNetFeatureBit.MAC) |
          bit(VirtioNetFeatureBit.STATUS),
        numQueues,
        maxQueueSize: 1024,
        config: new Uint8Array([0x52, 0x54, 0, 0x12, 0x34, 0x57, 1, 0, params.queues, 0]),
        ops: {
          start() {},
          stop() {},
          notify(q) {
            kicks[q]++;
          },
          getVringState: (q) => ctx.vring(q).state,
          stats: (): QueueStats[] =>
            kicks.map((k, queue) => ({ queue, packets: k, bytes: 0, drops: 0, errors: 0 })),
        },
      };
    },
  };
}

function nameOf(path: string): string {
  const base = path.slice(path.lastIndexOf("/") + 1);
  return base.endsWith(".sock") ? base.slice(0, -5) : base;
}

function line(value: unknown): void {
  console.log(JSON.stringify(value));
}

async function main(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      socket: { type: "string", multiple: true, default: [] },
      "trusted-socket": { type: "string", multiple: true, default: [] },
      "relay-socket": { type: "string", multiple: true, default: [] },
      mode: { type: "string", default: "loopback" },
      "allow-unsealed-memory": { type: "boolean", default: false },
      "sample-ms": { type: "string" },
      help: { type: "boolean", default: false },
    },
    strict: true,
  });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  const mode = values.mode;
  if (!["loopback", "sink", "responder"].includes(mode)) {
    console.error(`error: --mode ${mode}: choose loopback, sink or responder`);
    return 2;
  }
  const sampleMs = values["sample-ms"] === undefined ? 0 : Number(values["sample-ms"]);
  if (!Number.isFinite(sampleMs) || sampleMs < 0) {
    console.error(`error: --sample-ms ${values["sample-ms"]} is not a number of milliseconds`);
    return 2;
  }
  const specs = [
    ...values.socket.map((path) => ({ path, kind: "sim", trusted: false })),
    ...values["trusted-socket"].map((path) => ({ path, kind: "sim", trusted: true })),
    ...values["relay-socket"].map((path) => ({ path, kind: "relay", trusted: false })),
  ];
  if (specs.length === 0) {
    console.error("error: give at least one --socket (see --help)");
    return 2;
  }
  const names = specs.map((s) => nameOf(s.path));
  if (new Set(names).size !== names.length) {
    console.error(`error: two sockets have the same file name: ${names.join(", ")}`);
    return 2;
  }

  const listener = (e: DeviceEvent) => line({ device: e.device, type: e.type, message: e.message });
  const served: { name: string; device: VhostMdevDevice; server: VhostUserServer }[] = [];
  for (const [i, spec] of specs.entries()) {
    // `allowUnsealedMemory` is not known to every version of DeviceOptions:
    // typed through a variable so an older SDK still compiles (and ignores it).
    const options: DeviceOptions & { allowUnsealedMemory?: boolean } = {
      name: names[i],
      listener,
      allowUnsealedMemory: values["allow-unsealed-memory"] || spec.trusted,
    };
    const device = spec.kind === "relay"
      ? await VhostMdevDevice.create(relayDriver(), { queues: 1, options: {} }, options)
      : await VhostMdevDevice.create(simDriver, { queues: 1, options: { mode } }, options);
    served.push({ name: names[i], device, server: VhostUserServer.listen(device, spec.path) });
  }

  const sampled: Sampled[] = served.map((s) => ({
    device: s.device,
    last: 0,
    firstAt: 0,
    lastAt: 0,
    grown: false,
    maxStallMs: 0,
  }));
  const packets = (d: VhostMdevDevice) => d.stats().reduce((n, q) => n + q.packets, 0);
  let lastSample = 0;
  let maxSampleGapMs = 0;
  const sample = () => {
    const now = performance.now();
    if (lastSample > 0) maxSampleGapMs = Math.max(maxSampleGapMs, now - lastSample);
    lastSample = now;
    for (const s of sampled) {
      const p = packets(s.device);
      if (p > s.last) {
        // The flat run that ends here lay between two growths: traffic was flowing.
        if (s.grown) s.maxStallMs = Math.max(s.maxStallMs, s.lastAt - s.firstAt);
        s.grown = true;
        s.last = p;
        s.firstAt = s.lastAt = now;
      } else {
        s.lastAt = now;
      }
    }
  };
  for (const s of sampled) s.last = packets(s.device);
  const timer = sampleMs > 0 ? setInterval(sample, sampleMs) : undefined;
  const report = () => {
    sample();
    const out: Record<string, unknown> = {};
    for (const [i, s] of sampled.entries()) {
      out[served[i].name] = {
        packets: s.last,
        maxStallMs: Math.round(s.maxStallMs * 10) / 10,
        maxSampleGapMs: Math.round(maxSampleGapMs * 10) / 10,
        queues: s.device.stats(),
      };
    }
    line({ report: out });
  };

  /** Forget the stalls seen so far: measure from now on. */
  const resetSamples = () => {
    lastSample = 0;
    maxSampleGapMs = 0;
    for (const s of sampled) {
      s.grown = false;
      s.maxStallMs = 0;
      s.last = packets(s.device);
    }
  };

  line({ ready: true, pid: Deno.pid });

  const stop = new Promise<string>((resolve) => {
    for (const sig of ["SIGINT", "SIGTERM"] as const) {
      Deno.addSignalListener(sig, () => resolve(sig));
    }
  });
  // stdin lines: "report" prints a report; the end of stdin changes nothing.
  (async () => {
    let buf = "";
    try {
      for await (const chunk of Deno.stdin.readable.pipeThrough(new TextDecoderStream())) {
        buf += chunk;
        let at;
        while ((at = buf.indexOf("\n")) >= 0) {
          const cmd = buf.slice(0, at).trim();
          buf = buf.slice(at + 1);
          if (cmd === "report") report();
          else if (cmd === "reset") resetSamples();
        }
      }
    } catch {
      // No stdin: nothing to read.
    }
  })();

  await stop;
  if (timer !== undefined) {
    clearInterval(timer);
    report();
  }
  for (const s of served) {
    await s.server.close();
    await s.device.close();
  }
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
