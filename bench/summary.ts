/**
 * Order statistics of the benchmark's samples: medians and spreads of runs,
 * percentiles of latency samples.
 *
 * @module
 */

/** Median, minimum and maximum of a set of runs. */
export interface Spread {
  /** Median (mean of the two middle values for an even count). */
  median: number;
  /** Smallest value. */
  min: number;
  /** Largest value. */
  max: number;
}

/**
 * The value at quantile `q` (0..1) of `values`, by linear interpolation
 * between the nearest ranks. `NaN` for no values.
 *
 * @example
 * ```ts
 * import { quantile } from "./summary.ts";
 * quantile([1, 2, 3, 4], 0.5); // 2.5
 * ```
 */
export function quantile(values: readonly number[], q: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const pos = (sorted.length - 1) * Math.min(1, Math.max(0, q));
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

/** Median, min and max of `values`; all `NaN` when empty. */
export function spread(values: readonly number[]): Spread {
  if (values.length === 0) return { median: NaN, min: NaN, max: NaN };
  return {
    median: quantile(values, 0.5),
    min: Math.min(...values),
    max: Math.max(...values),
  };
}

/** `value` with `digits` decimals, or "-" when it is not a finite number. */
export function fixed(value: number, digits: number): string {
  return Number.isFinite(value) ? value.toFixed(digits) : "-";
}

/**
 * Render rows as a text table with a header rule; the first column is
 * left-aligned, the others right-aligned.
 */
export function textTable(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const all = [header, ...rows];
  const widths = header.map((_, c) => Math.max(...all.map((r) => (r[c] ?? "").length)));
  const line = (r: readonly string[]) =>
    r.map((cell, c) => c === 0 ? cell.padEnd(widths[c]) : cell.padStart(widths[c])).join("  ")
      .trimEnd();
  const rule = widths.map((w) => "-".repeat(w)).join("  ");
  return [line(header), rule, ...rows.map(line)].join("\n");
}
