/**
 * The daemon's configuration file, applied at start: driver modules to load,
 * then devices to create, each entry with the parameters of `driver_load`
 * and `device_create`.
 *
 * ```json
 * {
 *   "drivers": ["/usr/lib/vhost-mdev/mydriver.js"],
 *   "devices": [
 *     { "name": "net0", "driver": "sim", "socket": "/run/vhost-mdev/net0.sock",
 *       "queues": 2, "options": { "mode": "loopback" } }
 *   ]
 * }
 * ```
 *
 * Relative driver paths are resolved against the file's directory.
 *
 * @example
 * ```ts
 * import { parseConfig } from "./config.ts";
 *
 * const config = parseConfig('{"devices": []}', "/etc/vhost-mdev/config.json");
 * console.log(config.devices.length);
 * ```
 *
 * @module
 */

import { type DeviceSpec, parseDeviceSpec } from "./daemon.ts";
import { RpcError } from "./rpc.ts";

/** A parsed configuration file. */
export interface DaemonConfig {
  /** Driver modules to load, absolute paths. */
  drivers: string[];
  /** Devices to create, in order. */
  devices: DeviceSpec[];
}

/**
 * Parse and check a configuration file's text.
 *
 * @param text The file's contents.
 * @param path The file's path, for messages and relative driver paths.
 * @throws Error naming the file, the entry and what is wrong.
 */
export function parseConfig(text: string, path: string): DaemonConfig {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new Error(`${path} is not JSON: ${(e as Error).message}`);
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    throw new Error(`${path}: the configuration is an object with "drivers" and "devices"`);
  }
  const r = raw as Record<string, unknown>;
  const extra = Object.keys(r).filter((k) => k !== "drivers" && k !== "devices");
  if (extra.length) {
    throw new Error(`${path}: unknown key(s) ${extra.join(", ")}; it takes "drivers", "devices"`);
  }
  const dir = path.includes("/") ? path.slice(0, path.lastIndexOf("/")) || "/" : ".";
  const drivers = r.drivers ?? [];
  if (!Array.isArray(drivers) || !drivers.every((d) => typeof d === "string" && d.length > 0)) {
    throw new Error(`${path}: "drivers" is a list of module paths`);
  }
  const devices = r.devices ?? [];
  if (!Array.isArray(devices)) throw new Error(`${path}: "devices" is a list of devices`);
  const specs = devices.map((d, i) => {
    if (typeof d !== "object" || d === null || Array.isArray(d)) {
      throw new Error(`${path}: device ${i + 1} is not an object`);
    }
    try {
      return parseDeviceSpec(d as Record<string, unknown>, `device ${i + 1}`);
    } catch (e) {
      throw new Error(`${path}: ${e instanceof RpcError ? e.message : e}`);
    }
  });
  const names = new Set<string>();
  for (const s of specs) {
    if (names.has(s.name)) throw new Error(`${path}: two devices are named ${s.name}`);
    names.add(s.name);
  }
  return {
    drivers: (drivers as string[]).map((d) =>
      d.startsWith("/") || /^[a-z][a-z0-9+.-]*:/i.test(d) ? d : `${dir}/${d}`
    ),
    devices: specs,
  };
}
