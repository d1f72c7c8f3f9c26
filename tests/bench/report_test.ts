// The bench's report: how runs measured next to each other are paired, and
// what the tables show of them and of the frontend's cycles. No peer is needed.

import assert from "node:assert/strict";
import {
  type BenchReport,
  formatReport,
  pairRatios,
  type ScenarioResult,
  type SideResult,
} from "../../bench/bench.ts";
import { spread } from "../../bench/summary.ts";

function side(mpps: number[], cycles: (number | null)[], busy: (number | null)[]): SideResult {
  return {
    mpps,
    summary: spread(mpps),
    offeredMpps: mpps,
    packets: mpps.map((m) => Math.round(m * 1e6)),
    seconds: mpps.map(() => 1),
    foreignCpus: mpps.map(() => 0),
    frontendCyclesPerPacket: cycles,
    frontendBusy: busy,
  };
}

/** A report of throughput scenarios and nothing else. */
function reportOf(...scenarios: ScenarioResult[]): BenchReport {
  return {
    version: 1,
    date: "2026-12-02T00:00:00.000Z",
    config: {
      runs: scenarios[0].ours?.mpps.length ?? 0,
      seconds: 1,
      warmupSeconds: 1,
      backendCpu: 0,
      frontendCpu: 1,
      testpmd: "dpdk-testpmd",
      deno: "2",
      cpus: 2,
      kernel: "6",
      baseline: null,
    },
    scenarios,
    latency: null,
    blk: [],
    iommu: [],
    scale: null,
  };
}

Deno.test("pairRatios: each run against the run next to it, not the medians", () => {
  // The machine doubled its speed after the first pair: the medians say 1.14, every pair 2 or 1.
  assert.deepEqual(pairRatios([10, 30], [5, 30]), { median: 1.5, min: 1, max: 2 });
  assert.deepEqual(pairRatios([12, 24, 36], [6, 24, 12]), { median: 2, min: 1, max: 3 });
  assert.throws(() => pairRatios([1, 2], [1]), /2 runs of ours against 1 of the other side/);
});

Deno.test("formatReport: the ratio of medians, the pairs, and what each backend cost the frontend", () => {
  const ours = side([10, 30], [120, 140], [0.9, 0.8]);
  const dpdk = side([5, 30], [null, 200], [null, 0.95]);
  // A sending frontend counts no cycles: its scenario has no row in the frontend table.
  const sending = side([40], [null], [null]);
  const report = reportOf({
    id: "f2b-64",
    direction: "frontend->backend",
    frameSize: 64,
    rings: "split",
    ours: sending,
    dpdk: sending,
    ratio: 1,
    pairRatios: pairRatios(sending.mpps, sending.mpps),
  }, {
    id: "b2f-64-packed",
    direction: "backend->frontend",
    frameSize: 64,
    rings: "packed",
    ours,
    dpdk,
    ratio: ours.summary.median / dpdk.summary.median,
    pairRatios: pairRatios(ours.mpps, dpdk.mpps),
  });
  const text = formatReport(report);
  const header = text.split("\n").find((l) => l.startsWith("scenario"));
  assert.match(header ?? "", /ours\/DPDK +by pair$/);
  const row = text.split("\n").find((l) => l.startsWith("backend->frontend"));
  assert.match(
    row ?? "",
    /packed +20\.000 \(10\.000-30\.000\) +17\.500 \(5\.000-30\.000\) +1\.14 +1\.50 \(1\.00-2\.00\)$/,
  );
  assert.match(text, /by pair: the ratio of each run of ours to the other side's run next to it/);
  // The frontend table: medians of the runs that counted cycles.
  const lines = text.split("\n");
  const frontendHeader = lines.findIndex((l) => /^scenario .*with ours +with DPDK$/.test(l));
  assert.ok(frontendHeader > 0, text);
  assert.match(
    lines[frontendHeader + 2],
    /^backend->frontend +64 B +packed +130 cycles, 85% busy +200 cycles, 95% busy$/,
  );
  assert.equal(lines[frontendHeader + 3], "", "one row: the receiving frontend's");
});

Deno.test("formatReport: no frontend table when no run counted cycles", () => {
  const ours = side([10], [null], [null]), dpdk = side([5], [null], [null]);
  const report = reportOf({
    id: "f2b-64",
    direction: "frontend->backend",
    frameSize: 64,
    rings: "split",
    ours,
    dpdk,
    ratio: 2,
    pairRatios: pairRatios(ours.mpps, dpdk.mpps),
  });
  const text = formatReport(report);
  assert.doesNotMatch(text, /with ours/);
  assert.match(text, /frontend->backend +64 B +split +10\.000 \(10\.000-10\.000\)/);
});
