/**
 * The drivers bundled with vhost-mdev, by name, and lookup of plugins by
 * module specifier. Bundled drivers load on demand, so naming one never loads
 * the others.
 *
 * @module
 */

import type { Driver } from "@vhost-mdev/sdk";
import { loadDriverModule } from "./driver_loader.ts";

export { isDriver, loadDriverModule } from "./driver_loader.ts";

/** Bundled drivers by name, each loaded when asked for. */
export const BUNDLED_DRIVERS: Readonly<Record<string, () => Promise<Driver>>> = {
  sim: async () => (await import("@vhost-mdev/sim")).driver,
  // `--pci emulated` runs ifcvf on the emulated IFC VF; anything else is VFIO.
  ifcvf: async () => {
    const { makeIfcvfDriver, openIfcvfTarget } = await import("@vhost-mdev/ifcvf");
    const { openEmulatedIfcvf } = await import("@vhost-mdev/ifcvf/emulated");
    return makeIfcvfDriver((p) => p.pci === "emulated" ? openEmulatedIfcvf(p) : openIfcvfTarget(p));
  },
  blk: async () => (await import("@vhost-mdev/blk")).driver,
};

/** A bundled driver by name, or a plugin loaded from a path or URL. */
export async function findDriver(nameOrModule: string): Promise<Driver> {
  const bundled = BUNDLED_DRIVERS[nameOrModule];
  if (bundled) return await bundled();
  if (/[/.:]/.test(nameOrModule)) return await loadDriverModule(nameOrModule);
  throw new Error(
    `no driver named "${nameOrModule}"; bundled drivers: ${
      Object.keys(BUNDLED_DRIVERS).join(", ")
    }; or give a module path (./my_driver.ts)`,
  );
}
