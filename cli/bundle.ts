/**
 * `vhost-mdev bundle ./mydriver.ts -o mydriver.js`: make a driver plugin one
 * self-contained JavaScript file with esbuild. The driver's own modules are
 * bundled in; the SDK (`@vhost-mdev/*` imports) is left as bare imports that
 * the loading process resolves to its own SDK, as a published driver uses
 * its host's SDK rather than a copy, so a plugin and the daemon share one
 * set of classes, Worker modules and one contract. The driver module must
 * export `contractVersion`, which the loader checks.
 *
 * @module
 */

import { parseArgs } from "node:util";
import * as esbuild from "esbuild";
import { CONTRACT_VERSION } from "./driver_loader.ts";

const HELP = `Usage: vhost-mdev bundle DRIVER.ts -o OUT.js

Bundle a driver plugin into one JavaScript file that \`vhost-mdev daemon\`
loads at run time (vhost-mdev driver load OUT.js) and \`serve --driver OUT.js\`
serves. The driver's own imports (relative modules) are bundled in; imports of
@vhost-mdev/* (the SDK) stay imports, resolved by the process that loads the
bundle. npm: and jsr: imports cannot be bundled: vendor them as relative files.

The driver module must export \`driver\` and \`contractVersion\`, the driver
contract version it was written for (this SDK: ${CONTRACT_VERSION}):

  export const contractVersion = ${CONTRACT_VERSION};

Options:
  -o, --output FILE  the bundle to write (required)
  --minify           minify the bundle
  -h, --help         this text

Exit codes: 0 written, 1 esbuild or the driver failed (message on stderr), 2 bad arguments.`;

/** Options of {@linkcode bundleDriver}. */
export interface BundleOptions {
  /** Minify the output (default false). */
  minify?: boolean;
}

/**
 * Bundle the driver module at `entry` into `output`; resolves with the
 * bundle's size in bytes.
 *
 * @throws Error naming what could not be resolved, or a driver module that
 *   does not export `driver` and `contractVersion`.
 */
export async function bundleDriver(
  entry: string,
  output: string,
  options: BundleOptions = {},
): Promise<number> {
  try {
    Deno.statSync(entry);
  } catch {
    throw new Error(`${entry}: no such file; give the driver module's path`);
  }
  let result;
  try {
    result = await esbuild.build({
      entryPoints: [entry],
      bundle: true,
      format: "esm",
      platform: "neutral",
      target: "esnext",
      write: false,
      metafile: true,
      minify: options.minify ?? false,
      outfile: output,
      // The SDK comes from the loading process; node: built-ins from the runtime.
      external: ["@vhost-mdev/*", "node:*"],
      logLevel: "silent",
      banner: { js: `// vhost-mdev driver bundle of ${entry.split("/").pop()}` },
    });
  } catch (e) {
    const errors = (e as { errors?: { text: string; location?: { file: string } }[] }).errors;
    const text = errors?.length
      ? errors.map((x) => `${x.location?.file ? x.location.file + ": " : ""}${x.text}`).join("; ")
      : (e as Error).message;
    throw new Error(
      `cannot bundle ${entry}: ${text}` +
        (/npm:|jsr:/.test(text) ? " (vendor npm:/jsr: dependencies as relative files)" : ""),
    );
  } finally {
    await esbuild.stop();
  }
  const out = Object.values(result.metafile!.outputs)[0];
  for (const name of ["driver", "contractVersion"]) {
    if (!out.exports.includes(name)) {
      throw new Error(
        `${entry} does not export \`${name}\`; a driver plugin exports \`driver\` and ` +
          `\`export const contractVersion = ${CONTRACT_VERSION};\``,
      );
    }
  }
  const file = result.outputFiles![0];
  await Deno.writeFile(output, file.contents);
  return file.contents.length;
}

/** Run `vhost-mdev bundle` with `args`; resolves with the exit code. */
export async function main(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      options: {
        output: { type: "string", short: "o" },
        minify: { type: "boolean", default: false },
        help: { type: "boolean", short: "h", default: false },
      },
      strict: true,
      allowPositionals: true,
    });
  } catch (e) {
    console.error(`error: ${(e as Error).message} (see vhost-mdev bundle --help)`);
    return 2;
  }
  const { values, positionals } = parsed;
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  if (positionals.length !== 1 || values.output === undefined) {
    console.error("error: give one driver module and -o OUT.js (see vhost-mdev bundle --help)");
    return 2;
  }
  try {
    const bytes = await bundleDriver(positionals[0], values.output, { minify: values.minify });
    console.log(`wrote ${values.output} (${bytes} bytes)`);
    return 0;
  } catch (e) {
    console.error(`error: ${(e as Error).message}`);
    return 1;
  }
}
