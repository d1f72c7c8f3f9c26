// `deno task bench` end to end on one scenario, one short run per side:
// the JSON report has its documented shape and both backends (the SDK's sim
// and DPDK's net_vhost) received packets from testpmd's virtio_user. No
// timing is asserted; only that the numbers exist and packets moved.

import assert from "node:assert/strict";
import { requirePeer } from "../support/peers.ts";

// Skips (printing why) when DPDK is missing; with CI=true that is a failure.
const TESTPMD = await requirePeer("dpdk-testpmd");

const BENCH = new URL("../../bench/bench.ts", import.meta.url).pathname;

async function runBench(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", BENCH, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const d = new TextDecoder();
  return { code: out.code, stdout: d.decode(out.stdout), stderr: d.decode(out.stderr) };
}

function assertSide(side: unknown, what: string, receivingFrontend: boolean): void {
  assert.ok(side && typeof side === "object", `${what}: missing`);
  const s = side as Record<string, unknown>;
  for (const k of ["mpps", "offeredMpps", "packets", "seconds"]) {
    assert.ok(Array.isArray(s[k]), `${what}.${k} is an array`);
    assert.equal((s[k] as unknown[]).length, 1, `${what}.${k} has one run`);
  }
  const packets = (s.packets as number[])[0];
  assert.ok(Number.isInteger(packets) && packets > 0, `${what} received ${packets} packets`);
  const mpps = (s.mpps as number[])[0];
  assert.ok(Number.isFinite(mpps) && mpps > 0, `${what} rate ${mpps}`);
  assert.ok((s.seconds as number[])[0] > 0, `${what} measured interval`);
  // A receiving frontend testpmd counted its busy cycles (--record-core-cycles).
  const cycles = (s.frontendCyclesPerPacket as (number | null)[])[0];
  const busy = (s.frontendBusy as (number | null)[])[0];
  if (receivingFrontend) {
    assert.ok(cycles! > 0 && cycles! < 1e6, `${what}: frontend ${cycles} cycles/packet`);
    assert.ok(busy! > 0 && busy! <= 1, `${what}: frontend busy ${busy}`);
  } else {
    assert.deepEqual([cycles, busy], [null, null], `${what}: a sending frontend is not counted`);
  }
  const summary = s.summary as Record<string, number>;
  assert.deepEqual(Object.keys(summary).sort(), ["max", "median", "min"]);
  assert.equal(summary.median, mpps);
}

Deno.test("bench --help describes the options and exits 0", async () => {
  const r = await runBench(["--help"]);
  assert.equal(r.code, 0, r.stderr);
  for (const flag of ["--runs", "--seconds", "--scenario", "--json", "dpdk-dev"]) {
    assert.ok(r.stdout.includes(flag), `--help mentions ${flag}`);
  }
});

Deno.test("bench refuses unknown arguments and scenarios", async () => {
  const r = await runBench(["--scenario", "f2b-65"]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /--scenario f2b-65: unknown; choose from f2b-64/);
});

Deno.test("bench says how to install testpmd when it is missing", async () => {
  const r = await runBench(["--testpmd", "/nonexistent/dpdk-testpmd", "--runs", "1"]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /apt-get install dpdk-dev/);
});

Deno.test({
  name: "bench --runs 1 --seconds 1 --json: both sides move packets, report has its shape",
  ignore: !TESTPMD,
  async fn() {
    const r = await runBench([
      "--runs",
      "1",
      "--seconds",
      "1",
      "--warmup",
      "0.5",
      "--scenario",
      "f2b-64",
      "--latency-samples",
      "300",
      "--iommu",
      "f2b-64",
      "--testpmd",
      TESTPMD!,
      "--json",
    ]);
    assert.equal(r.code, 0, `bench failed:\n${r.stderr}`);
    const report = JSON.parse(r.stdout);
    assert.equal(report.version, 1);
    assert.equal(report.config.runs, 1);
    assert.equal(report.config.seconds, 1);
    assert.equal(report.scenarios.length, 1);
    const s = report.scenarios[0];
    assert.equal(s.id, "f2b-64");
    assert.equal(s.direction, "frontend->backend");
    assert.equal(s.frameSize, 64);
    assert.equal(s.rings, "split");
    assertSide(s.ours, "ours", false);
    assertSide(s.dpdk, "dpdk", false);
    assert.equal(s.ratio, s.ours.summary.median / s.dpdk.summary.median);
    const pair = s.ours.mpps[0] / s.dpdk.mpps[0];
    assert.deepEqual(s.pairRatios, { median: pair, min: pair, max: pair });
    // Progress went to stderr, one line per run.
    assert.match(r.stderr, /f2b-64 run 1\/1 ours: /);
    assert.match(r.stderr, /f2b-64 run 1\/1 dpdk: /);

    // The vIOMMU part: the same sim with and without the IOTLB, misses answered.
    assert.equal(report.iommu.length, 1);
    const io = report.iommu[0];
    assert.equal(io.id, "f2b-64");
    for (const side of [io.off, io.on]) {
      assert.equal(side.mpps.length, 1);
      assert.ok(side.mpps[0] > 0, `vIOMMU run moved frames: ${side.mpps[0]} Mpps`);
      assert.ok(side.nsPerPacket[0] > 0);
    }
    assert.ok(io.misses > 0, `the device asked for translations (${io.misses} misses answered)`);
    assert.equal(io.ratio, io.on.summary.median / io.off.summary.median);
    assert.match(r.stderr, /iommu f2b-64 run 1\/1 on: /);

    const l = report.latency;
    assert.equal(l.samples, 300);
    assert.equal(l.placements.length, 2);
    for (const p of l.placements) {
      for (const k of ["kickToNotify", "kickToRelayWake", "kickToRelayMessage", "kickToDoorbell"]) {
        assert.equal(p.sdk[k].samples, 300, `${p.cpus} ${k} samples`);
        assert.ok(p.sdk[k].p50 > 0 && p.sdk[k].p99 >= p.sdk[k].p50, `${p.cpus} ${k} percentiles`);
      }
      if (p.c !== null) assert.equal(p.c.oneHop.samples, 300);
    }
  },
});

Deno.test("bench --baseline refuses a directory that is not a checkout with the sim", async () => {
  const r = await runBench(["--baseline", "/nonexistent/checkout", "--scenario", "f2b-64"]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /\/nonexistent\/checkout\/drivers\/sim\/mod.ts is missing: --baseline/);
});

Deno.test({
  name: "bench --baseline DIR: the sim from DIR runs in DPDK's place, and both move packets",
  ignore: !TESTPMD,
  async fn() {
    const root = new URL("../..", import.meta.url).pathname;
    const r = await runBench([
      ...["--runs", "1", "--seconds", "1", "--warmup", "0.5", "--scenario", "b2f-64-packed"],
      ...["--latency-samples", "0", "--iommu", "none", "--blk", "none"],
      ...["--baseline", root, "--testpmd", TESTPMD!, "--json"],
    ]);
    assert.equal(r.code, 0, `bench failed:\n${r.stderr}`);
    const report = JSON.parse(r.stdout);
    assert.equal(report.config.baseline, root.replace(/\/$/, ""));
    const s = report.scenarios[0];
    assert.equal(s.rings, "packed");
    assertSide(s.ours, "ours", true);
    assertSide(s.dpdk, "baseline", true);
    // The sim's progress line carries its device counters; DPDK's does not.
    assert.match(
      r.stderr,
      /b2f-64-packed run 1\/1 baseline: [\d.]+ Mpps received .*; device q0 packets=/,
    );
    assert.doesNotMatch(r.stderr, /run 1\/1 dpdk: /);
  },
});
