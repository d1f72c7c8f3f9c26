/**
 * Checking the named parameters of a control request (and of a
 * configuration file entry, which takes the same shape): each read names
 * the parameter and the type it wants, and an unknown parameter is an
 * error, so a typo never passes silently.
 *
 * @example
 * ```ts
 * import { Params } from "./params.ts";
 *
 * const p = new Params({ name: "net0", queues: 2 }, "device_create");
 * console.log(p.string("name"), p.integer("queues", { min: 1, max: 64, default: 1 }));
 * p.done();
 * ```
 *
 * @module
 */

import { RpcError, RpcErrorCode } from "./rpc.ts";

/** Reads typed parameters out of a params object; every failure is `INVALID_PARAMS`. */
export class Params {
  readonly #raw: Record<string, unknown>;
  readonly #where: string;
  readonly #read = new Set<string>();

  /**
   * @param raw The params object.
   * @param where Named in messages ("device_create", "config device 2").
   */
  constructor(raw: Record<string, unknown>, where: string) {
    this.#raw = raw;
    this.#where = where;
  }

  #fail(message: string): never {
    throw new RpcError(RpcErrorCode.INVALID_PARAMS, `${this.#where}: ${message}`);
  }

  #get(name: string): unknown {
    this.#read.add(name);
    return Object.hasOwn(this.#raw, name) ? this.#raw[name] : undefined;
  }

  /** A string parameter; required unless `fallback` is given. */
  string(name: string, fallback?: string): string {
    const v = this.#get(name);
    if (v === undefined) {
      if (fallback !== undefined) return fallback;
      this.#fail(`"${name}" is required (a string)`);
    }
    if (typeof v !== "string") this.#fail(`"${name}" must be a string, not ${typeof v}`);
    if (v.length === 0 || v.length > 4096) {
      this.#fail(`"${name}" must be 1 to 4096 characters`);
    }
    return v;
  }

  /** An optional string parameter. */
  optionalString(name: string): string | undefined {
    return this.#get(name) === undefined ? undefined : this.string(name);
  }

  /** One of `choices`; `fallback` when absent. */
  choice<T extends string>(name: string, choices: readonly T[], fallback: T): T {
    const v = this.string(name, fallback);
    if (!(choices as readonly string[]).includes(v)) {
      this.#fail(`"${name}" must be one of ${choices.join(", ")}, not "${v.slice(0, 64)}"`);
    }
    return v as T;
  }

  /** An integer within `[min, max]`; `default` when absent. */
  integer(name: string, range: { min: number; max: number; default: number }): number {
    const v = this.#get(name);
    if (v === undefined) return range.default;
    if (typeof v !== "number" || !Number.isInteger(v) || v < range.min || v > range.max) {
      this.#fail(`"${name}" must be an integer from ${range.min} to ${range.max}`);
    }
    return v;
  }

  /** A boolean; `fallback` when absent. */
  boolean(name: string, fallback: boolean): boolean {
    const v = this.#get(name);
    if (v === undefined) return fallback;
    if (typeof v !== "boolean") this.#fail(`"${name}" must be true or false`);
    return v;
  }

  /** An object of string values (driver options); `{}` when absent. */
  stringRecord(name: string): Record<string, string> {
    const v = this.#get(name);
    if (v === undefined) return {};
    if (typeof v !== "object" || v === null || Array.isArray(v)) {
      this.#fail(`"${name}" must be an object of string values`);
    }
    const out: Record<string, string> = {};
    for (const [k, value] of Object.entries(v)) {
      // Numbers and booleans are taken as their text: {"ip": "10.0.0.1", "readonly": true}.
      if (typeof value === "string") out[k] = value;
      else if (typeof value === "number" || typeof value === "boolean") out[k] = String(value);
      else this.#fail(`"${name}.${k}" must be a string`);
    }
    return out;
  }

  /** Refuse any parameter not read. */
  done(): void {
    const extra = Object.keys(this.#raw).filter((k) => !this.#read.has(k));
    if (extra.length) {
      this.#fail(
        `unknown parameter${extra.length > 1 ? "s" : ""} ${
          extra.map((k) => `"${k.slice(0, 64)}"`).join(", ")
        }; it takes ${[...this.#read].join(", ")}`,
      );
    }
  }
}
