/**
 * The command-line side of a program that runs a guest (`examples/vm.ts`,
 * `examples/vfio_vm.ts`): flags with `--help` and usage errors (exit status
 * 2), and the run itself with its summary, its optional `--json` line and
 * the exit status: 0 pass, 1 fail, 2 missing tools, 130 interrupted (Ctrl-C
 * or SIGTERM, which kill QEMU first).
 *
 * @module
 */

import { parseArgs, type ParseArgsOptionsConfig } from "node:util";
import { MissingToolsError } from "./host_tools.ts";
import { abortOnTermination } from "./termination.ts";

/** Print `error: <message> (see --help)` to stderr and exit with status 2. */
export function usageError(message: string): never {
  console.error(`error: ${message} (see --help)`);
  Deno.exit(2);
}

/**
 * The integer in flag `--name`'s `value`.
 *
 * @throws never: a value that is not an integer from `min` to `max` is a
 *   {@linkcode usageError}.
 */
export function integerFlag(name: string, value: string, min: number, max: number): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < min || n > max) {
    usageError(`--${name} ${value}: ${min} to ${max}`);
  }
  return n;
}

/** A flag without a value, for `parseArgs`. */
export type BooleanFlag = {
  /** Always `boolean`. */
  readonly type: "boolean";
};

/** The flags every guest command has, which {@linkcode parseFlags} adds. */
export type GuestCommandFlags = {
  /** `--json`: print the result as one JSON line at the end. */
  readonly json: BooleanFlag;
  /** `--verbose`: echo the guest console. */
  readonly verbose: BooleanFlag;
  /** `--setup`: install the missing host packages with apt-get first. */
  readonly setup: BooleanFlag;
  /** `--help`: print the help text and exit. */
  readonly help: BooleanFlag;
};

/** `--json`, `--verbose`, `--setup` and `--help`. */
export const GUEST_COMMAND_FLAGS: GuestCommandFlags = {
  json: { type: "boolean" },
  verbose: { type: "boolean" },
  setup: { type: "boolean" },
  help: { type: "boolean" },
};

/** The flag values {@linkcode parseFlags} returns for `options`. */
export type FlagValues<O extends ParseArgsOptionsConfig> = ReturnType<
  typeof parseArgs<{ args: string[]; options: GuestCommandFlags & O }>
>["values"];

/**
 * Parse `args` with `node:util`'s `parseArgs` against `options` and
 * {@linkcode GUEST_COMMAND_FLAGS}. Returns `null` after printing `help` when
 * `--help` is given; a flag it does not know or a missing value is a
 * {@linkcode usageError}.
 *
 * @example
 * ```ts
 * import { parseFlags } from "@vhost-mdev/testing/guest";
 *
 * const flags = parseFlags(["--count", "5", "--json"], {
 *   count: { type: "string", default: "20" },
 * }, "Usage: ...");
 * console.log(flags?.count, flags?.json);
 * ```
 */
export function parseFlags<const O extends ParseArgsOptionsConfig>(
  args: string[],
  options: O,
  help: string,
): FlagValues<O> | null {
  let values: FlagValues<O>;
  try {
    values = parseArgs({ args, options: { ...GUEST_COMMAND_FLAGS, ...options } }).values;
  } catch (e) {
    usageError((e as Error).message);
  }
  if ((values as { help?: boolean }).help) {
    console.log(help);
    return null;
  }
  return values;
}

/** Options of {@linkcode runGuestCommand}. */
export interface GuestCommandOptions<R> {
  /** The result's summary lines, printed after an empty line. */
  summary: (result: R) => string[];
  /** Print the result as one JSON line at the end. */
  json?: boolean;
}

/**
 * Run a guest until it is done or interrupted and turn the outcome into an
 * exit status: the summary (and with `json` the result as one JSON line),
 * then 0 when the result passed, 1 when it did not or the run failed
 * (`FAIL: <message>` on stderr), 2 when host tools are missing (`error:
 * <message>` naming the install command), 130 when SIGINT or SIGTERM
 * aborted the signal given to `run`.
 *
 * @example
 * ```ts
 * import { runGuestCommand, runVfioVm, vfioVmSummary } from "@vhost-mdev/testing/guest";
 *
 * const status = await runGuestCommand(
 *   (signal) => runVfioVm({ mode: "infra", log: console.log, signal }),
 *   { summary: vfioVmSummary },
 * );
 * Deno.exit(status);
 * ```
 */
export async function runGuestCommand<R extends { pass: boolean }>(
  run: (signal: AbortSignal) => Promise<R>,
  options: GuestCommandOptions<R>,
): Promise<number> {
  using stop = abortOnTermination(); // Ctrl-C: the kit kills QEMU first
  try {
    const result = await run(stop.signal);
    console.log(["", ...options.summary(result)].join("\n"));
    if (options.json) console.log(JSON.stringify(result));
    if (stop.signal.aborted) return 130;
    return result.pass ? 0 : 1;
  } catch (e) {
    if (stop.signal.aborted) return 130;
    const missing = e instanceof MissingToolsError;
    console.error(`${missing ? "error" : "FAIL"}: ${(e as Error).message}`);
    return missing ? 2 : 1;
  }
}
