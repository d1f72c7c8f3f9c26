/**
 * Stopping a guest run from the keyboard: an `AbortSignal` that fires on
 * SIGINT or SIGTERM, for the `signal` option of `runPingVm` and `runVfioVm`,
 * which then kill QEMU before the program exits.
 *
 * @module
 */

/** What {@linkcode abortOnTermination} returns. */
export interface TerminationSignal extends Disposable {
  /** Aborts on the first SIGINT or SIGTERM. */
  readonly signal: AbortSignal;
}

/**
 * Listen for SIGINT and SIGTERM until disposed; either aborts the signal.
 * While listening, those signals no longer end the process by themselves.
 *
 * @example
 * ```ts
 * import { abortOnTermination } from "@vhost-mdev/testing/guest";
 *
 * using stop = abortOnTermination();
 * stop.signal.addEventListener("abort", () => console.log("stopping"));
 * ```
 */
export function abortOnTermination(): TerminationSignal {
  const controller = new AbortController();
  const abort = () => controller.abort(new Error("interrupted"));
  const signals: Deno.Signal[] = ["SIGINT", "SIGTERM"];
  for (const s of signals) Deno.addSignalListener(s, abort);
  return {
    signal: controller.signal,
    [Symbol.dispose]() {
      for (const s of signals) Deno.removeSignalListener(s, abort);
    },
  };
}
