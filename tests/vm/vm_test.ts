/**
 * examples/vm.ts end to end: a QEMU guest whose NIC is the sim device in
 * responder mode pings it; the example must report 0% loss and equal
 * counters on both sides (guest tx_packets == device TX-ring packets, guest
 * rx_packets == device RX-ring packets). The test re-checks the example's
 * JSON result rather than trusting its exit code alone.
 */

import assert from "node:assert/strict";
import { runExample, skipGuestTest } from "./example_process.ts";

const COUNT = 20;

Deno.test({
  name: "vm example: the guest pings the sim responder and both sides' counters agree",
  ignore: await skipGuestTest("vm example"),
  async fn() {
    const run = await runExample(
      "examples/vm.ts",
      ["--driver", "sim", "--mode", "responder", "--count", String(COUNT), "--json"],
      { timeoutMs: 240_000, prefix: "  vm.ts| " },
    );
    assert.ok(run.result, `examples/vm.ts printed no JSON result (exit ${run.code})`);
    const r = run.result as {
      pass: boolean;
      reasons: string[];
      guest: {
        transmitted: number;
        received: number;
        lossPercent: number;
        counters: Record<string, number>;
      };
      device: { txRingPackets: number; rxRingPackets: number };
    };
    assert.deepEqual(r.reasons, []);
    assert.equal(r.guest.transmitted, COUNT);
    assert.equal(r.guest.received, COUNT);
    assert.equal(r.guest.lossPercent, 0);
    // The pings and their replies (plus at least one ARP each way) crossed the device.
    assert.ok(
      r.guest.counters.tx_packets >= COUNT + 1,
      `guest tx_packets ${r.guest.counters.tx_packets}`,
    );
    assert.ok(
      r.guest.counters.rx_packets >= COUNT + 1,
      `guest rx_packets ${r.guest.counters.rx_packets}`,
    );
    assert.equal(r.guest.counters.tx_packets, r.device.txRingPackets);
    assert.equal(r.guest.counters.rx_packets, r.device.rxRingPackets);
    assert.equal(r.pass, true);
    assert.equal(run.code, 0);
  },
});
