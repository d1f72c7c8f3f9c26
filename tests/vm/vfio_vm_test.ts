/**
 * examples/vfio_vm.ts end to end: the ifcvf driver (generic mode) on real
 * kernel VFIO in a QEMU guest with an emulated IOMMU, the SDK's TypeScript
 * frontend attached, frames both ways through QEMU's virtio-net device, with
 * a device stop, its ring bases checked, and a refused resume.
 *
 * The first test proves the plumbing alone (VFIO bound, Deno running from
 * the host root inside the guest), so a failure there points at the
 * environment rather than at the driver.
 */

import assert from "node:assert/strict";
import { runExample, skipGuestTest } from "./example_process.ts";

const FRAMES = 16;
const skip = await skipGuestTest("vfio vm example");

Deno.test({
  name: "vfio vm: the guest binds the NIC to vfio-pci and runs Deno from the host root",
  ignore: skip,
  async fn() {
    const run = await runExample("examples/vfio_vm.ts", ["--infra", "--json"], {
      timeoutMs: 240_000,
      prefix: "  vfio_vm.ts| ",
    });
    assert.ok(run.result, `examples/vfio_vm.ts printed no JSON result (exit ${run.code})`);
    const r = run.result as { pass: boolean; reasons: string[]; timings: Record<string, number> };
    assert.deepEqual(r.reasons, []);
    assert.ok(run.lines.some((l) => /vfio-guest: deno up, \/dev\/vfio holds \d+ vfio/.test(l)));
    assert.equal(run.code, 0);
  },
});

Deno.test({
  name: "vfio vm: ifcvf over VFIO moves frames both ways through QEMU's device, across stop/start",
  ignore: skip,
  async fn() {
    const run = await runExample("examples/vfio_vm.ts", ["--frames", String(FRAMES), "--json"], {
      timeoutMs: 300_000,
      prefix: "  vfio_vm.ts| ",
    });
    assert.ok(run.result, `examples/vfio_vm.ts printed no JSON result (exit ${run.code})`);
    const r = run.result as {
      pass: boolean;
      reasons: string[];
      framesToHost: number;
      framesToGuest: number;
    };
    assert.deepEqual(r.reasons, []);
    // One round each way, every frame checked byte for byte by its receiver;
    // then the device is stopped, its ring bases checked, and a resume at a
    // non-zero index refused (generic mode has no ring-state register).
    assert.equal(r.framesToHost, FRAMES);
    assert.equal(r.framesToGuest, FRAMES);
    assert.ok(
      run.lines.some((l) => /guest: stopped; bases rx 16 tx 16; resume refused/.test(l)),
      "the guest program did not report the stop and the refused resume",
    );
    assert.ok(
      run.lines.some((l) => /guest: PASS/.test(l)),
      "the guest program did not report PASS",
    );
    assert.equal(run.code, 0);
  },
});
