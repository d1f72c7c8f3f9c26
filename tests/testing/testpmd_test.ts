// The Testpmd runner against real DPDK: a virtio_user testpmd (txonly) sends
// to DPDK's own vhost backend in a second testpmd (rxonly), and every packet
// the sender reports is counted by the receiver.

import assert from "node:assert/strict";
import { requirePeer } from "../support/peers.ts";
import {
  findExecutable,
  parseForwardStats,
  parsePortStats,
  Testpmd,
  TestpmdError,
} from "@vhost-mdev/testing";

// Skips (printing why) when DPDK is missing; with CI=true that is a failure.
const TESTPMD = await requirePeer("dpdk-testpmd");

const STOP_TEXT = `Telling cores to stop...
Waiting for lcores to finish...

  ---------------------- Forward statistics for port 0  ----------------------
  RX-packets: 0              RX-dropped: 0             RX-total: 0
  TX-packets: 36330144       TX-dropped: 4796064       TX-total: 41126208
  ----------------------------------------------------------------------------

  +++++++++++++++ Accumulated forward statistics for all ports+++++++++++++++
  RX-packets: 0              RX-dropped: 0             RX-total: 0
  TX-packets: 36330144       TX-dropped: 4796064       TX-total: 41126208
  ++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++

Done.
`;

const STATS_TEXT = `
  ######################## NIC statistics for port 0  ########################
  RX-packets: 17         RX-missed: 3          RX-bytes:  1088
  RX-errors: 1
  RX-nombuf:  2
  TX-packets: 36330144   TX-errors: 0          TX-bytes:  2325129216

  Throughput (since last show)
  Rx-pps:            5          Rx-bps:            2560
  Tx-pps:            7          Tx-bps:            3584
  ############################################################################
`;

Deno.test("parseForwardStats reads per-port and accumulated counters", () => {
  const s = parseForwardStats(STOP_TEXT);
  const expected = {
    rxPackets: 0,
    rxDropped: 0,
    rxTotal: 0,
    txPackets: 36330144,
    txDropped: 4796064,
    txTotal: 41126208,
  };
  assert.deepEqual(s.ports[0], expected);
  assert.deepEqual(s.total, expected);
  assert.equal(s.cycles, null, "no --record-core-cycles");
  assert.throws(() => parseForwardStats("Packet forwarding not started\n"), TestpmdError);
});

Deno.test("parseForwardStats reads the busy cycles of --record-core-cycles", () => {
  // testpmd 22.11's rxonly with --record-core-cycles.
  const text = STOP_TEXT.replace(
    "\nDone.",
    "  CPU cycles/packet=180.14 (total cycles=7055020077 / total rxonly packets=39163320) " +
      "at 2100 MHz Clock\n\nDone.",
  );
  assert.deepEqual(parseForwardStats(text).cycles, {
    busyCycles: 7055020077,
    packets: 39163320,
    perPacket: 7055020077 / 39163320,
    mhz: 2100,
  });
  // Later testpmds name them busy cycles.
  const later = text.replace("(total cycles=", "(busy cycles=");
  assert.equal(parseForwardStats(later).cycles?.busyCycles, 7055020077);
});

Deno.test("parsePortStats reads every counter", () => {
  assert.deepEqual(parsePortStats(STATS_TEXT), {
    rxPackets: 17,
    rxBytes: 1088,
    rxErrors: 1,
    rxMissed: 3,
    rxNombuf: 2,
    txPackets: 36330144,
    txBytes: 2325129216,
    txErrors: 0,
    rxPps: 5,
    rxBps: 2560,
    txPps: 7,
    txBps: 3584,
  });
  assert.throws(() => parsePortStats("Invalid port 5\n"), /lack RX-packets/);
});

Deno.test("findExecutable searches PATH and checks paths", () => {
  assert.match(findExecutable("sh") ?? "", /\/sh$/);
  assert.equal(findExecutable("no-such-program-vhost-mdev"), null);
  assert.equal(findExecutable("/nonexistent/dpdk-testpmd"), null);
});

Deno.test({
  name: "Testpmd: an early exit is an error carrying testpmd's output",
  ignore: !TESTPMD,
  async fn() {
    const err = await Testpmd.start({ binary: TESTPMD!, vdevs: "net_no_such_driver0", cpu: 0 })
      .then(
        () => null,
        (e) => e,
      );
    assert.ok(err instanceof TestpmdError, `expected TestpmdError, got ${err}`);
    assert.match(err.message, /exited with code \d+ while starting/);
    assert.match(err.outputTail, /net_no_such_driver0/);
  },
});

Deno.test({
  name: "Testpmd: virtio_user txonly -> DPDK vhost rxonly counts every packet",
  ignore: !TESTPMD,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "testpmd_test" });
    const sock = `${dir}/vhost.sock`;
    let backend: Testpmd | null = null;
    let frontend: Testpmd | null = null;
    try {
      backend = await Testpmd.start({
        binary: TESTPMD!,
        vdevs: `net_vhost0,iface=${sock},queues=1`,
        forwardMode: "rxonly",
        cpu: 0,
      });
      frontend = await Testpmd.start({
        binary: TESTPMD!,
        vdevs: `net_virtio_user0,path=${sock},queues=1`,
        forwardMode: "txonly",
        txpkts: 64,
        burst: 32,
        cpu: 1,
      });
      await backend.waitForLinkUp(0);
      await frontend.waitForLinkUp(0);
      await backend.clearPortStats();
      await backend.startForwarding();
      await frontend.startForwarding();
      await new Promise((r) => setTimeout(r, 300));
      const sent = await frontend.stopForwarding();
      const sentPort = await frontend.portStats(0);
      assert.ok(sent.total.txPackets > 0, "txonly sent nothing");
      assert.equal(sentPort.txPackets, sent.total.txPackets);
      assert.equal(sentPort.txBytes, sent.total.txPackets * 64);
      assert.equal(sent.total.txTotal, sent.total.txPackets + sent.total.txDropped);

      // The backend drains what is still in the ring.
      let got = await backend.portStats(0);
      for (let i = 0; i < 100 && got.rxPackets < sent.total.txPackets; i++) {
        await new Promise((r) => setTimeout(r, 50));
        got = await backend.portStats(0);
      }
      const received = await backend.stopForwarding();
      assert.equal(got.rxPackets, sent.total.txPackets);
      assert.equal(got.rxBytes, sent.total.txPackets * 64);
      assert.equal(received.total.rxPackets, sent.total.txPackets);
      assert.equal(received.ports[0].rxPackets, sent.total.txPackets);
      assert.equal(got.rxErrors, 0);
    } finally {
      await frontend?.close();
      await backend?.close();
      await Deno.remove(dir, { recursive: true });
    }
    assert.ok(frontend!.exited && backend!.exited);
  },
});
