/**
 * Finding a driver plugin: a module that exports `driver` (or a default
 * export) shaped like {@linkcode Driver}.
 *
 * @module
 */

import type { Driver } from "@vhost-mdev/sdk";

/** Whether `value` looks like a {@linkcode Driver}. */
export function isDriver(value: unknown): value is Driver {
  const d = value as Driver;
  return !!d && typeof d === "object" && typeof d.name === "string" &&
    typeof d.probe === "function" && Array.isArray(d.pciIds);
}

/**
 * Import a driver plugin from a module specifier (a path or URL). Relative
 * paths are resolved against the current directory.
 *
 * @example
 * ```ts
 * import { loadDriverModule } from "./driver_loader.ts";
 * const driver = await loadDriverModule("./my_driver.ts");
 * console.log(driver.name, driver.description);
 * ```
 *
 * @throws Error naming the module and what it lacks.
 */
export async function loadDriverModule(specifier: string): Promise<Driver> {
  let url: string;
  if (/^[a-z][a-z0-9+.-]*:/i.test(specifier)) url = specifier;
  else {
    const abs = specifier.startsWith("/") ? specifier : `${Deno.cwd()}/${specifier}`;
    url = new URL(`file://${abs}`).href;
  }
  let mod: Record<string, unknown>;
  try {
    mod = await import(url);
  } catch (e) {
    throw new Error(
      `cannot load driver module ${specifier}: ${e instanceof Error ? e.message : e}`,
    );
  }
  const candidate = mod.driver ?? mod.default;
  if (!isDriver(candidate)) {
    throw new Error(
      `${specifier} is not a driver plugin: it must export \`driver\` (or a default export) ` +
        `with name, description, pciIds and probe()`,
    );
  }
  return candidate;
}
