/**
 * Rate limiting for a datapath's reports: a hostile guest can break a chain
 * per descriptor, millions a second, and each report is a message to the
 * main thread. Every report is counted; a burst goes through, then about
 * one a second, each carrying how many were suppressed before it.
 *
 * @module
 */

/** Reports let through at once before limiting starts. */
export const REPORT_BURST = 5;
/** Reports let through per second after the burst. */
export const REPORTS_PER_SECOND = 1;

/**
 * A report function over `send`: passes the text (with "(N earlier reports
 * suppressed)" when some were) while the allowance lasts, drops the rest.
 *
 * @example
 * ```ts
 * import { rateLimitedReports } from "@vhost-mdev/sdk/soft";
 * const report = rateLimitedReports((text) => console.warn(text));
 * for (let i = 0; i < 100; i++) report(`chain ${i} is broken`); // 5 printed
 * ```
 */
export function rateLimitedReports(send: (text: string) => void): (text: string) => void {
  let allowance = REPORT_BURST;
  let last = performance.now();
  let suppressed = 0;
  return (text) => {
    const now = performance.now();
    allowance = Math.min(REPORT_BURST, allowance + (now - last) / 1000 * REPORTS_PER_SECOND);
    last = now;
    if (allowance < 1) {
      suppressed++;
      return;
    }
    allowance--;
    const more = suppressed > 0 ? ` (${suppressed} earlier reports suppressed)` : "";
    suppressed = 0;
    send(`${text}${more}`);
  };
}
