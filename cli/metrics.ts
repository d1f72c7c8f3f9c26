/**
 * Prometheus text exposition (format 0.0.4) of the daemon's devices, served
 * over HTTP on a loopback address only (`--metrics 127.0.0.1:9464`):
 *
 * - `vhost_mdev_device_info{device,driver,mode,socket} 1`
 * - `vhost_mdev_device_running{device}` and
 *   `vhost_mdev_device_frontend_connected{device}`, 0 or 1
 * - `vhost_mdev_device_reported_errors_total{device}`
 * - per ring, each counter the driver declares:
 *   `vhost_mdev_ring_<counter>_total{device,queue}` (sim: packets, bytes,
 *   drops, errors; blk: requests, bytes, ...)
 * - device-wide declared counters: `vhost_mdev_device_<counter>_total{device}`
 *
 * @example
 * ```ts
 * import { Daemon } from "./daemon.ts";
 * import { renderMetrics } from "./metrics.ts";
 *
 * console.log(renderMetrics(new Daemon().devices));
 * ```
 *
 * @module
 */

import type { DeviceEntry } from "./daemon.ts";

/** The content type of the text exposition format. */
export const METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

/** A metric name part made of what Prometheus allows (`[a-zA-Z0-9_]`). */
function metricPart(name: string): string {
  return name.replace(/[^a-zA-Z0-9_]/g, "_").toLowerCase();
}

/** A label value with `\`, `"` and newlines escaped. */
function labelValue(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

/** HELP text with `\` and newlines escaped. */
function helpText(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n");
}

function labels(l: Record<string, string | number>): string {
  if (Object.keys(l).length === 0) return "";
  return "{" + Object.entries(l).map(([k, v]) => `${k}="${labelValue(String(v))}"`).join(",") +
    "}";
}

/** One metric family: its HELP, TYPE and samples. */
interface Family {
  help: string;
  type: "gauge" | "counter";
  samples: string[];
}

/** The exposition text for `devices`. */
export function renderMetrics(devices: readonly DeviceEntry[]): string {
  const families = new Map<string, Family>();
  const add = (
    name: string,
    type: Family["type"],
    help: string,
    l: Record<string, string | number>,
    value: number,
  ) => {
    let f = families.get(name);
    if (!f) families.set(name, f = { help, type, samples: [] });
    f.samples.push(`${name}${labels(l)} ${Number.isFinite(value) ? value : "NaN"}`);
  };
  add("vhost_mdev_devices", "gauge", "Devices this daemon serves.", {}, devices.length);
  for (const { spec, device } of devices) {
    const d = { device: spec.name };
    add(
      "vhost_mdev_device_info",
      "gauge",
      "A device: its driver, vhost-user socket and mode (always 1).",
      { ...d, driver: spec.driver, mode: spec.mode, socket: spec.socket },
      1,
    );
    add(
      "vhost_mdev_device_running",
      "gauge",
      "Whether the device runs (1) or is stopped (0).",
      d,
      device.running ? 1 : 0,
    );
    add(
      "vhost_mdev_device_frontend_connected",
      "gauge",
      "Whether a vhost-user frontend is attached (1) or not (0).",
      d,
      device.owner !== null ? 1 : 0,
    );
    add(
      "vhost_mdev_device_reported_errors_total",
      "counter",
      "Device errors reported since creation.",
      d,
      device.errors,
    );
    const declared = device.counters;
    for (const q of device.stats()) {
      for (const c of declared.ring) {
        if (!(c.name in q)) continue;
        add(
          `vhost_mdev_ring_${metricPart(c.name)}_total`,
          "counter",
          `Per ring: ${c.description}.`,
          { ...d, queue: q.queue },
          q[c.name],
        );
      }
    }
    const totals = device.deviceStats();
    for (const c of declared.device) {
      if (!(c.name in totals)) continue;
      add(
        `vhost_mdev_device_${metricPart(c.name)}_total`,
        "counter",
        `Per device: ${c.description}.`,
        d,
        totals[c.name],
      );
    }
    // Behind a vIOMMU: the device IOTLB's counters (the SDK's, whatever the driver).
    const iotlb = device.iotlbStats();
    if (iotlb !== null) {
      for (const [key, value] of Object.entries(iotlb)) {
        const help = IOTLB_METRICS[key];
        if (help === undefined) continue;
        const gauge = key === "iotlb_entries";
        add(
          `vhost_mdev_${metricPart(key)}${gauge ? "" : "_total"}`,
          gauge ? "gauge" : "counter",
          help,
          d,
          value,
        );
      }
    }
  }
  let out = "";
  for (const [name, f] of families) {
    out += `# HELP ${name} ${helpText(f.help)}\n# TYPE ${name} ${f.type}\n`;
    out += f.samples.join("\n") + "\n";
  }
  return out;
}

/** Help of each device IOTLB counter (`VhostMdevDevice.iotlbStats`), by its key. */
const IOTLB_METRICS: Record<string, string> = {
  iotlb_entries: "Behind a vIOMMU: translations in the device IOTLB now.",
  iotlb_updates: "Behind a vIOMMU: IOTLB updates the frontend sent.",
  iotlb_invalidations: "Behind a vIOMMU: IOTLB invalidations the frontend sent.",
  iotlb_misses: "Behind a vIOMMU: IOTLB misses the device sent the frontend.",
  iotlb_misses_suppressed:
    "Behind a vIOMMU: IOTLB misses not sent (repeated, over a bound, or no channel).",
  iotlb_evictions: "Behind a vIOMMU: IOTLB entries evicted to make room.",
};

/**
 * Parse `HOST:PORT` for the metrics listener, refusing any address that is
 * not loopback (`127.0.0.0/8`, `::1`, `localhost`).
 *
 * @throws Error saying what to give instead.
 */
export function parseMetricsAddress(text: string): { hostname: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:]+)\]|([^:]+)):(\d{1,5})$/.exec(text);
  if (!m) {
    throw new Error(`--metrics ${text}: give HOST:PORT, such as 127.0.0.1:9464`);
  }
  const hostname = m[1] ?? m[2];
  const port = Number(m[3]);
  if (port > 65535) throw new Error(`--metrics ${text}: port ${port} is above 65535`);
  const loopback = hostname === "localhost" || hostname === "::1" ||
    /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(hostname);
  if (!loopback) {
    throw new Error(
      `--metrics ${text}: metrics are served on loopback only (127.0.0.1, ::1, localhost); ` +
        `put a scraper or a proxy on this host to reach them from elsewhere`,
    );
  }
  return { hostname, port };
}

/** A running metrics listener. */
export interface MetricsServer {
  /** The port it listens on (useful with port 0). */
  readonly port: number;
  /** Stop serving. */
  close(): Promise<void>;
}

/**
 * Serve `GET /metrics` (and `/`) with what `render` returns.
 *
 * @throws Error when the address is not loopback or cannot be bound.
 */
export async function serveMetrics(
  address: string,
  render: () => string,
): Promise<MetricsServer> {
  const { hostname, port } = parseMetricsAddress(address);
  const bound = Promise.withResolvers<number>();
  const ac = new AbortController();
  let server: Deno.HttpServer<Deno.NetAddr>;
  try {
    server = Deno.serve({
      hostname,
      port,
      signal: ac.signal,
      onListen: (addr) => bound.resolve(addr.port),
      onError: () => new Response("metrics failed; see the daemon's log\n", { status: 500 }),
    }, (req) => {
      const path = new URL(req.url).pathname;
      if (req.method !== "GET" && req.method !== "HEAD") {
        return new Response("only GET\n", { status: 405 });
      }
      if (path !== "/metrics" && path !== "/") {
        return new Response("metrics are at /metrics\n", { status: 404 });
      }
      return new Response(render(), { headers: { "content-type": METRICS_CONTENT_TYPE } });
    });
  } catch (e) {
    throw new Error(`cannot serve metrics on ${address}: ${(e as Error).message}`);
  }
  const actual = await bound.promise;
  return {
    port: actual,
    close: async () => {
      ac.abort();
      await server.finished;
    },
  };
}
