/**
 * examples/iommu_vm.ts end to end: a q35 guest with an emulated Intel IOMMU
 * (`intel-iommu,intremap=on,device-iotlb=on`, guest `intel_iommu=on`) whose
 * NIC is the sim device in responder mode pings it.
 *
 * The first test leaves `iommu_platform` off the NIC (`--platform-off`): the
 * guest has the IOMMU and puts the NIC in an IOMMU group, but the NIC's DMA
 * bypasses it, so this proves the machine and guest side with any backend.
 * The second is the real thing (`iommu_platform=on,ats=on`): the device
 * sees IOVAs, so it must have missed translations, received IOTLB updates
 * from QEMU and, the NIC having ATS, invalidations (`iotlb_misses`,
 * `iotlb_updates`, `iotlb_invalidations` > 0 in `device.deviceStats()`),
 * and still ping must lose nothing and both sides' counters agree. Each
 * test re-checks the example's JSON result rather than trusting its exit
 * code alone.
 */

import assert from "node:assert/strict";
import type { PingVmResult } from "@vhost-mdev/testing/guest";
import { runExample, skipGuestTest } from "./example_process.ts";

const COUNT = 20;
const skip = await skipGuestTest("iommu vm example");

/** Run the example with `args` and check what every mode must show; return its result. */
async function runIommuExample(args: string[]): Promise<PingVmResult> {
  const run = await runExample(
    "examples/iommu_vm.ts",
    ["--count", String(COUNT), "--interval", "0.1", "--json", ...args],
    { timeoutMs: 240_000, prefix: "  iommu_vm.ts| " },
  );
  assert.ok(run.result, `examples/iommu_vm.ts printed no JSON result (exit ${run.code})`);
  const r = run.result as unknown as PingVmResult;
  assert.deepEqual(r.reasons, []);
  // The guest runs with the IOMMU on and the NIC behind it.
  assert.ok(r.iommu, "the result has no guest IOMMU report");
  assert.ok(
    r.iommu.dmesg.some((l) =>
      /DMAR: IOMMU enabled|Virtualization Technology for Directed I\/O/.test(l)
    ),
    `no DMAR line in the guest's dmesg: ${r.iommu.dmesg.join(" | ")}`,
  );
  assert.notEqual(r.iommu.group, "none", "the guest's NIC is in no IOMMU group");
  assert.match(r.iommu.type, /^DMA/, `the NIC's IOMMU domain is ${r.iommu.type}, not translated`);
  assert.equal(r.iommu.ats, "enabled", "the guest did not enable ATS on the NIC");
  // Ping lost nothing and both sides counted the same packets.
  assert.equal(r.guest.transmitted, COUNT);
  assert.equal(r.guest.received, COUNT);
  assert.equal(r.guest.lossPercent, 0);
  assert.ok(r.guest.counters.rx_packets >= COUNT + 1, `rx_packets ${r.guest.counters.rx_packets}`);
  assert.equal(r.guest.counters.tx_packets, r.device.txRingPackets);
  assert.equal(r.guest.counters.rx_packets, r.device.rxRingPackets);
  assert.equal(r.pass, true);
  assert.equal(run.code, 0);
  return r;
}

Deno.test({
  name: "iommu vm: a q35 guest with intel_iommu=on (NIC without iommu_platform) pings the sim",
  ignore: skip,
  async fn() {
    await runIommuExample(["--platform-off"]);
  },
});

Deno.test({
  name: "iommu vm: a NIC with iommu_platform=on behind intel-iommu pings the sim through the IOTLB",
  ignore: skip,
  async fn() {
    const r = await runIommuExample([]);
    const stats = r.deviceStats;
    assert.ok(
      (stats.iotlb_updates ?? 0) > 0,
      `the device saw no IOTLB updates: ${JSON.stringify(stats)}`,
    );
    assert.ok(
      (stats.iotlb_misses ?? 0) > 0,
      `the device asked for no translation: ${JSON.stringify(stats)}`,
    );
    // ATS is on, so the guest's unmaps reach the device as invalidations.
    assert.ok(
      (stats.iotlb_invalidations ?? 0) > 0,
      `the device saw no IOTLB invalidation: ${JSON.stringify(stats)}`,
    );
  },
});
