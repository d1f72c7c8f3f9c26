/**
 * Waiting in tests for something another thread or process does: poll a
 * condition until it holds, or fail saying what was awaited.
 *
 * @module
 */

/**
 * Resolve once `condition()` is true, checking every `intervalMs`.
 *
 * @param what Named in the error ("the device to start"), or a function
 *   that says it at the time of failure (to add what was seen instead).
 * @throws Error `timed out after N ms waiting for <what>` when it never holds.
 *
 * @example
 * ```ts
 * import { until } from "@vhost-mdev/testing";
 *
 * let done = false;
 * setTimeout(() => done = true, 10);
 * await until("the timer", () => done, 1000);
 * ```
 */
export async function until(
  what: string | (() => string),
  condition: () => boolean,
  timeoutMs = 5000,
  intervalMs = 10,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) {
      const said = typeof what === "string" ? what : what();
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${said}`);
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}
