/**
 * The drivers bundled with vhost-mdev, by name, and lookup of plugins by
 * module specifier.
 *
 * @module
 */

import { type Driver, loadDriverModule } from "@vhost-mdev/sdk";
import { driver as sim } from "@vhost-mdev/sim";
import { driver as ifcvf } from "@vhost-mdev/ifcvf";

/** Bundled drivers by name. */
export const BUNDLED_DRIVERS: Readonly<Record<string, Driver>> = { sim, ifcvf };

/** A bundled driver by name, or a plugin loaded from a path or URL. */
export async function findDriver(nameOrModule: string): Promise<Driver> {
  const bundled = BUNDLED_DRIVERS[nameOrModule];
  if (bundled) return bundled;
  if (/[/.:]/.test(nameOrModule)) return await loadDriverModule(nameOrModule);
  throw new Error(
    `no driver named "${nameOrModule}"; bundled drivers: ${
      Object.keys(BUNDLED_DRIVERS).join(", ")
    }; or give a module path (./my_driver.ts)`,
  );
}
