/**
 * Finding a driver plugin: a module that exports `driver` (or a default
 * export) shaped like {@linkcode Driver}, and `contractVersion`, the version
 * of the driver contract (`sdk/ops.ts`) it was written for.
 *
 * A single-file bundle made by `vhost-mdev bundle` keeps its `@vhost-mdev/*`
 * imports as bare specifiers; the loader points them at the SDK of the
 * process loading it, so a plugin and its host share one SDK.
 *
 * @module
 */

import type { Driver } from "@vhost-mdev/sdk";

/** The version of the driver contract (`sdk/ops.ts`) this SDK serves. */
export const CONTRACT_VERSION = 2;

/** The contract versions whose drivers this process loads. */
export const SUPPORTED_CONTRACT_VERSIONS: readonly number[] = Object.freeze([2]);

/** A driver module was built for a contract version this process does not serve. */
export class ContractMismatchError extends Error {
  /** The version the module declares. */
  readonly declared: unknown;

  /**
   * The refusal of `specifier`, naming the versions that fit.
   *
   * @param specifier The module.
   * @param declared What it declares as `contractVersion`.
   */
  constructor(specifier: string, declared: unknown) {
    super(
      `${specifier} was built for driver contract version ${
        JSON.stringify(declared) ?? "(none declared)"
      }; this vhost-mdev loads drivers of version ${
        SUPPORTED_CONTRACT_VERSIONS.join(", ")
      }: rebuild the driver against an SDK of that version (\`export const contractVersion = ${CONTRACT_VERSION}\`)`,
    );
    this.name = "ContractMismatchError";
    this.declared = declared;
  }
}

/** Whether `value` looks like a {@linkcode Driver}. */
export function isDriver(value: unknown): value is Driver {
  const d = value as Driver;
  return !!d && typeof d === "object" && typeof d.name === "string" &&
    typeof d.probe === "function" && Array.isArray(d.pciIds);
}

/** Imports of a bundle left for the loading process: `from "@vhost-mdev/..."` and `import("@vhost-mdev/...")`. */
const SDK_IMPORT =
  /(\bfrom\s*|\bimport\s*\(?\s*)(["'])(@vhost-mdev\/[a-z0-9_-]+(?:\/[a-z0-9_/-]+)?)\2/g;

/**
 * The module URL to import for a single-file JavaScript bundle: when it
 * imports `@vhost-mdev/*`, a `data:` module whose SDK imports are resolved
 * against this process (the bundle's own `import.meta.url` is then the data
 * URL, so a bundle must not reach sibling files through it); otherwise
 * the file itself.
 */
async function bundleUrl(url: string, specifier: string): Promise<string> {
  const text = await Deno.readTextFile(new URL(url));
  if (!new RegExp(SDK_IMPORT.source).test(text)) return url;
  const rewritten = text.replace(SDK_IMPORT, (_m, lead: string, q: string, spec: string) => {
    let resolved: string;
    try {
      resolved = import.meta.resolve(spec);
    } catch {
      throw new Error(
        `${specifier} imports ${spec}, which this vhost-mdev does not provide; ` +
          `rebuild the bundle against the SDK's public entry points`,
      );
    }
    return `${lead}${q}${resolved}${q}`;
  });
  const bytes = new TextEncoder().encode(rewritten);
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return `data:text/javascript;base64,${btoa(binary)}`;
}

/**
 * Import a driver plugin from a module specifier (a path or URL). Relative
 * paths are resolved against the current directory. A module that exports
 * `contractVersion` must name a version of
 * {@linkcode SUPPORTED_CONTRACT_VERSIONS}; a JavaScript module (a bundle)
 * must export it, a TypeScript source module may leave it out (it is
 * type-checked against this SDK as it loads).
 *
 * @example
 * ```ts
 * import { loadDriverModule } from "./driver_loader.ts";
 * const driver = await loadDriverModule("./my_driver.ts");
 * console.log(driver.name, driver.description);
 * ```
 *
 * @throws ContractMismatchError when the module was built for another contract version.
 * @throws Error naming the module and what it lacks.
 */
export async function loadDriverModule(specifier: string): Promise<Driver> {
  let url: string;
  if (/^[a-z][a-z0-9+.-]*:/i.test(specifier)) url = specifier;
  else {
    const abs = specifier.startsWith("/") ? specifier : `${Deno.cwd()}/${specifier}`;
    url = new URL(`file://${abs}`).href;
  }
  const javascript = /\.(m?js)$/.test(new URL(url).pathname);
  let mod: Record<string, unknown>;
  try {
    mod = await import(
      javascript && url.startsWith("file:") ? await bundleUrl(url, specifier) : url
    );
  } catch (e) {
    throw new Error(
      `cannot load driver module ${specifier}: ${e instanceof Error ? e.message : e}`,
    );
  }
  if ("contractVersion" in mod || javascript) {
    if (!SUPPORTED_CONTRACT_VERSIONS.includes(mod.contractVersion as number)) {
      throw new ContractMismatchError(specifier, mod.contractVersion);
    }
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
