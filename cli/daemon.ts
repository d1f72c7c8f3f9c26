/**
 * The daemon's state: the drivers it knows and the devices it serves, each
 * on its own vhost-user socket, and the control methods that change and read
 * them (`driver_list`, `driver_load`, `device_create`, `device_delete`,
 * `device_list`, `device_get`, `device_stats`, `device_reset_stats`). The
 * socket that carries the methods is in `control_server.ts`.
 *
 * Changes run one at a time; a create that fails leaves no device and no
 * socket file behind.
 *
 * @example Create a device in-process and read its counters
 * ```ts
 * import { Daemon } from "./daemon.ts";
 *
 * const daemon = new Daemon();
 * await daemon.createDevice({
 *   name: "net0", driver: "sim", socket: "/tmp/net0.sock", options: { mode: "loopback" },
 * });
 * console.log(daemon.deviceStats({ name: "net0" }));
 * await daemon.close();
 * ```
 *
 * @module
 */

import { type DeviceEvent, type Driver, RequestRefused, VhostMdevDevice } from "@vhost-mdev/sdk";
import { VhostUserClient, VhostUserServer } from "@vhost-mdev/sdk/vhost-user";
import { BUNDLED_DRIVERS } from "./drivers.ts";
import { ContractMismatchError, loadDriverModule } from "./driver_loader.ts";
import { Params } from "./params.ts";
import { RpcError, RpcErrorCode, type RpcMethod } from "./rpc.ts";

/** Device names: what `dev add NAME` takes, also used in metrics labels. */
const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

/** The most devices one daemon serves. */
export const MAX_DEVICES = 256;

/** How a device meets its frontend. */
export type DeviceMode = "server" | "client";

/** What `device_create` takes (and a configuration file's device entry). */
export interface DeviceSpec {
  /** Device name: letters, digits, `_`, `.`, `-`, at most 64. */
  name: string;
  /** A driver name of `driver_list`. */
  driver: string;
  /** The vhost-user socket path. */
  socket: string;
  /** `server` (listen on `socket`, default) or `client` (connect to a listening frontend). */
  mode?: DeviceMode;
  /** Queue pairs (net) or request queues (blk), 1 to 64 (default 1). */
  queues?: number;
  /** PCI address for PCI drivers (`0000:03:00.0`, or `emulated`). */
  pci?: string;
  /** Driver options (`{ "mode": "loopback" }`). */
  options?: Record<string, string>;
  /** Accept guest memory the frontend could shrink (trusted frontends only). */
  allowUnsealedMemory?: boolean;
}

/** A device the daemon serves. */
export interface DeviceEntry {
  /** What it was created with, defaults filled in. */
  readonly spec: Required<Omit<DeviceSpec, "pci">> & { pci?: string };
  /** The device. */
  readonly device: VhostMdevDevice;
  /** Its vhost-user endpoint. */
  readonly endpoint: VhostUserServer | VhostUserClient;
  /** When it was created (ms since the epoch). */
  readonly created: number;
}

/** A driver the daemon knows. */
export interface DriverEntry {
  /** The driver, once loaded (bundled drivers load when first used or listed). */
  driver?: Driver;
  /** `bundled`, or the module path it was loaded from. */
  source: string;
}

/** Options of {@linkcode Daemon}. */
export interface DaemonOptions {
  /** Where device events and the daemon's own lines go (default: nowhere). */
  onEvent?: (event: DeviceEvent) => void;
}

/** The devices and drivers of one process, and the control methods on them. */
export class Daemon {
  readonly #devices = new Map<string, DeviceEntry>();
  readonly #drivers = new Map<string, DriverEntry>();
  readonly #onEvent: (event: DeviceEvent) => void;
  #lock: Promise<unknown> = Promise.resolve();
  #closed = false;

  /**
   * A daemon with the bundled drivers known and no devices.
   *
   * @param options Where events go.
   */
  constructor(options: DaemonOptions = {}) {
    this.#onEvent = options.onEvent ?? (() => {});
    for (const name of Object.keys(BUNDLED_DRIVERS)) this.#drivers.set(name, { source: "bundled" });
  }

  /** The devices, in creation order. */
  get devices(): readonly DeviceEntry[] {
    return [...this.#devices.values()];
  }

  /** The control methods, by name. */
  methods(): Record<string, RpcMethod> {
    return {
      driver_list: (p) => {
        new Params(p, "driver_list").done();
        return this.listDrivers();
      },
      driver_load: (p) => {
        const q = new Params(p, "driver_load");
        const path = q.string("path");
        q.done();
        return this.loadDriver(path);
      },
      device_create: (p) => this.createDevice(parseDeviceSpec(p, "device_create")),
      device_delete: (p) => this.deleteDevice(nameParam(p, "device_delete")),
      device_list: (p) => {
        new Params(p, "device_list").done();
        return this.devices.map((e) => this.#describe(e));
      },
      device_get: (p) => this.#describe(this.#entry(nameParam(p, "device_get"))),
      device_stats: (p) => this.deviceStats({ name: nameParam(p, "device_stats") }),
      device_reset_stats: (p) => this.resetStats(nameParam(p, "device_reset_stats")),
    };
  }

  /** Run `fn` after every change before it. */
  #serialize<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#lock.then(fn, fn);
    this.#lock = run.catch(() => {});
    return run;
  }

  #emit(
    type: DeviceEvent["type"],
    device: string,
    message: string,
    fields?: DeviceEvent["fields"],
  ) {
    try {
      this.#onEvent({ type, device, message, time: Date.now(), fields });
    } catch {
      // A listener's failure is not the daemon's.
    }
  }

  /** Every driver: name, description, where it came from, options. */
  async listDrivers(): Promise<Record<string, unknown>[]> {
    const out = [];
    for (const [name, entry] of this.#drivers) {
      let driver = entry.driver;
      if (!driver && entry.source === "bundled") {
        try {
          driver = await this.#driver(name);
        } catch (e) {
          out.push({ name, source: entry.source, error: (e as Error).message });
          continue;
        }
      }
      out.push({
        name,
        description: driver?.description ?? "",
        source: entry.source,
        pciIds: (driver?.pciIds ?? []).map((id) => ({ ...id })),
        options: (driver?.options ?? []).map((o) => ({ ...o })),
      });
    }
    return out;
  }

  async #driver(name: string): Promise<Driver> {
    const entry = this.#drivers.get(name);
    if (!entry) {
      throw new RpcError(
        RpcErrorCode.DRIVER_NOT_FOUND,
        `no driver named "${name.slice(0, 64)}"; drivers: ${
          [...this.#drivers.keys()].join(", ")
        }; load a plugin first with driver_load (vhost-mdev driver load PATH)`,
      );
    }
    if (!entry.driver) entry.driver = await BUNDLED_DRIVERS[name]();
    return entry.driver;
  }

  /** Load a driver module (a `.ts` source or a bundle) and make it available by its name. */
  loadDriver(path: string): Promise<Record<string, unknown>> {
    return this.#serialize(async () => {
      let driver: Driver;
      try {
        driver = await loadDriverModule(path);
      } catch (e) {
        if (e instanceof ContractMismatchError) {
          throw new RpcError(RpcErrorCode.CONTRACT_MISMATCH, e.message);
        }
        throw new RpcError(RpcErrorCode.DRIVER_LOAD_FAILED, (e as Error).message);
      }
      if (!NAME.test(driver.name)) {
        throw new RpcError(
          RpcErrorCode.DRIVER_LOAD_FAILED,
          `${path}: driver name "${driver.name.slice(0, 64)}" must be letters, digits, _ . - ` +
            `(at most 64)`,
        );
      }
      const taken = this.#drivers.get(driver.name);
      if (taken) {
        if (taken.driver === driver) return { name: driver.name, source: taken.source };
        throw new RpcError(
          RpcErrorCode.DRIVER_LOAD_FAILED,
          `a driver named "${driver.name}" is already loaded (from ${taken.source}); ` +
            `rename the plugin's driver or restart the daemon to replace it`,
        );
      }
      this.#drivers.set(driver.name, { driver, source: path });
      this.#emit("info", driver.name, `driver ${driver.name} loaded from ${path}`, { path });
      return { name: driver.name, source: path };
    });
  }

  #entry(name: string): DeviceEntry {
    const entry = this.#devices.get(name);
    if (!entry) {
      throw new RpcError(
        RpcErrorCode.DEVICE_NOT_FOUND,
        `no device named "${name.slice(0, 64)}"; list them with device_list (vhost-mdev dev show)`,
      );
    }
    return entry;
  }

  /**
   * Create a device and serve it on its socket.
   *
   * @throws RpcError (`DEVICE_EXISTS`, `SOCKET_UNAVAILABLE`, `DRIVER_NOT_FOUND`,
   *   `INVALID_PARAMS`, `DRIVER_REFUSED`); nothing is left behind.
   */
  createDevice(spec: DeviceSpec): Promise<Record<string, unknown>> {
    return this.#serialize(async () => {
      if (this.#closed) throw new RpcError(RpcErrorCode.INTERNAL_ERROR, "the daemon is stopping");
      const full = {
        name: spec.name,
        driver: spec.driver,
        socket: spec.socket,
        mode: spec.mode ?? "server",
        queues: spec.queues ?? 1,
        pci: spec.pci,
        options: { ...spec.options },
        allowUnsealedMemory: spec.allowUnsealedMemory ?? false,
      };
      if (!NAME.test(full.name)) {
        throw new RpcError(
          RpcErrorCode.INVALID_PARAMS,
          `device name "${full.name.slice(0, 64)}" must be letters, digits, _ . - (at most 64, ` +
            `not starting with _ . -)`,
        );
      }
      if (this.#devices.has(full.name)) {
        throw new RpcError(
          RpcErrorCode.DEVICE_EXISTS,
          `a device named "${full.name}" exists; choose another name or delete it first`,
        );
      }
      if (this.#devices.size >= MAX_DEVICES) {
        throw new RpcError(
          RpcErrorCode.INVALID_PARAMS,
          `this daemon serves at most ${MAX_DEVICES} devices; delete one first`,
        );
      }
      const user = [...this.#devices.values()].find((e) => e.spec.socket === full.socket);
      if (user) {
        throw new RpcError(
          RpcErrorCode.SOCKET_UNAVAILABLE,
          `socket ${full.socket} is used by device ${user.spec.name}; choose another path`,
        );
      }
      const driver = await this.#driver(full.driver);
      checkOptions(driver, full.options);
      checkSocketPath(full.socket, full.mode);
      let device: VhostMdevDevice;
      try {
        device = await VhostMdevDevice.create(
          driver,
          { queues: full.queues, pci: full.pci, options: full.options },
          {
            name: full.name,
            listener: (e) => this.#onEvent(e),
            allowUnsealedMemory: full.allowUnsealedMemory,
          },
        );
      } catch (e) {
        throw new RpcError(
          RpcErrorCode.DRIVER_REFUSED,
          `driver ${driver.name} refused the device: ${(e as Error).message}`,
        );
      }
      let endpoint: VhostUserServer | VhostUserClient;
      try {
        endpoint = full.mode === "server"
          ? VhostUserServer.listen(device, full.socket)
          : VhostUserClient.connect(device, full.socket);
      } catch (e) {
        await device.close().catch(() => {});
        throw new RpcError(RpcErrorCode.SOCKET_UNAVAILABLE, (e as Error).message);
      }
      const entry: DeviceEntry = { spec: full, device, endpoint, created: Date.now() };
      this.#devices.set(full.name, entry);
      this.#emit("info", full.name, `device ${full.name} created`, { driver: driver.name });
      return this.#describe(entry);
    });
  }

  /** Stop serving a device and destroy it. */
  deleteDevice(name: string): Promise<Record<string, unknown>> {
    return this.#serialize(async () => {
      const entry = this.#entry(name);
      this.#devices.delete(name);
      try {
        await entry.endpoint.close();
      } finally {
        await entry.device.close();
      }
      this.#emit("info", name, `device ${name} deleted`);
      return { name };
    });
  }

  #describe(entry: DeviceEntry): Record<string, unknown> {
    const { spec, device } = entry;
    const owner = device.owner;
    return {
      name: spec.name,
      driver: spec.driver,
      socket: spec.socket,
      mode: spec.mode,
      queues: spec.queues,
      ...(spec.pci !== undefined ? { pci: spec.pci } : {}),
      options: { ...spec.options },
      allowUnsealedMemory: spec.allowUnsealedMemory,
      rings: device.numQueues,
      running: device.running,
      connected: owner !== null,
      frontend: owner?.description ?? null,
      status: device.status,
      features: `0x${device.ackedFeatures.toString(16)}`,
      errors: device.errors,
      created: new Date(entry.created).toISOString(),
    };
  }

  /** Per-ring and device-wide counters of a device, with the names the driver declares. */
  deviceStats({ name }: { name: string }): Record<string, unknown> {
    const { device } = this.#entry(name);
    return {
      name,
      counters: {
        ring: device.counters.ring.map((c) => c.name),
        device: device.counters.device.map((c) => c.name),
      },
      rings: device.stats(),
      device: device.deviceStats(),
      errors: device.errors,
    };
  }

  /** Set a device's counters back to zero. */
  resetStats(name: string): Record<string, unknown> {
    const { device } = this.#entry(name);
    try {
      device.resetStats();
    } catch (e) {
      if (e instanceof RequestRefused) {
        throw new RpcError(RpcErrorCode.NOT_SUPPORTED, `${e.message}; its counters run on`);
      }
      throw e;
    }
    return { name };
  }

  /** Delete every device; the daemon takes no more changes. */
  close(): Promise<void> {
    return this.#serialize(async () => {
      this.#closed = true;
      for (const [name, entry] of [...this.#devices]) {
        this.#devices.delete(name);
        try {
          await entry.endpoint.close();
        } finally {
          await entry.device.close();
        }
      }
    });
  }
}

function nameParam(p: Record<string, unknown>, where: string): string {
  const q = new Params(p, where);
  const name = q.string("name");
  q.done();
  return name;
}

/** Read a {@linkcode DeviceSpec} out of request params (or a config entry). */
export function parseDeviceSpec(p: Record<string, unknown>, where: string): DeviceSpec {
  const q = new Params(p, where);
  const spec: DeviceSpec = {
    name: q.string("name"),
    driver: q.string("driver"),
    socket: q.string("socket"),
    mode: q.choice("mode", ["server", "client"] as const, "server"),
    queues: q.integer("queues", { min: 1, max: 64, default: 1 }),
    pci: q.optionalString("pci"),
    options: q.stringRecord("options"),
    allowUnsealedMemory: q.boolean("allowUnsealedMemory", false),
  };
  q.done();
  return spec;
}

/** Refuse options the driver does not declare, and values outside its list. */
function checkOptions(driver: Driver, options: Record<string, string>): void {
  const declared = driver.options ?? [];
  for (const [k, v] of Object.entries(options)) {
    const o = declared.find((o) => o.name === k);
    if (!o) {
      throw new RpcError(
        RpcErrorCode.INVALID_PARAMS,
        `driver ${driver.name} has no option "${k.slice(0, 64)}"; it takes: ${
          declared.map((o) => o.name).join(", ") || "none"
        }`,
      );
    }
    if (o.values && !o.values.includes(v)) {
      throw new RpcError(
        RpcErrorCode.INVALID_PARAMS,
        `option ${k} of driver ${driver.name}: "${v.slice(0, 64)}" is not one of ${
          o.values.join(", ")
        }`,
      );
    }
  }
}

/**
 * Before probing: a socket path must be absolute and fit a UNIX socket
 * address; a server's must be in an existing directory and not a file that
 * is not a socket. (Whether a socket there is live is checked when
 * listening.)
 */
function checkSocketPath(path: string, mode: DeviceMode): void {
  if (!path.startsWith("/")) {
    throw new RpcError(
      RpcErrorCode.INVALID_PARAMS,
      `socket path ${path.slice(0, 256)} must be absolute: the daemon's directory is not yours`,
    );
  }
  // A UNIX socket path holds at most 107 bytes.
  if (new TextEncoder().encode(path).length > 107) {
    throw new RpcError(
      RpcErrorCode.INVALID_PARAMS,
      `socket path ${path.slice(0, 256)} is longer than 107 bytes; choose a shorter one`,
    );
  }
  // A client connects (and reconnects) to whatever the frontend makes there.
  if (mode === "client") return;
  const dir = path.slice(0, path.lastIndexOf("/")) || "/";
  try {
    if (!Deno.statSync(dir).isDirectory) throw new Error("not a directory");
  } catch {
    throw new RpcError(
      RpcErrorCode.SOCKET_UNAVAILABLE,
      `cannot listen on ${path}: directory ${dir} does not exist; create it first`,
    );
  }
  let info: Deno.FileInfo | undefined;
  try {
    info = Deno.lstatSync(path);
  } catch {
    return;
  }
  if (!info.isSocket) {
    throw new RpcError(
      RpcErrorCode.SOCKET_UNAVAILABLE,
      `${path} exists and is not a socket; remove it or choose another path`,
    );
  }
}
