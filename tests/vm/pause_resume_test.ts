/**
 * GET_VRING_BASE with a real peer: a QEMU guest pings the sim responder
 * every 50 ms while the test pauses the whole VM over QMP (`stop`), waits a
 * second and resumes it (`cont`), three times. On `stop` QEMU's vhost-user
 * net backend stops the device's rings and asks each where it got to
 * (`GET_VRING_BASE`); on `cont` it sets them up again from those numbers
 * (`SET_VRING_BASE`) and restarts them. A device that reported a wrong
 * position would make the guest lose or repeat frames, or fail the ring
 * with `bad-avail-idx`.
 *
 * What QEMU 7.2 does on `stop`, with the SDK offering the STATUS protocol
 * feature: `SET_STATUS 0` first, which stops the whole device (one `stop`
 * event, "status reset to 0", with each ring's saved position in
 * `fields.bases`/`fields.states`), then `GET_VRING_BASE` for rings 0 and 1,
 * answered from those saved positions; no `ring-stop`. On `cont`:
 * `SET_VRING_BASE` per ring, `SET_STATUS` up to `DRIVER_OK` and the rings'
 * enable, then one `start` event whose rings' `avail` is where they start.
 *
 * The test records the device's events and, through a wrapper around the
 * device's `getVringBase`/`setVringBase` that only watches, the numbers
 * exchanged, and asserts for every pause: the device stopped once, at the
 * positions `GET_VRING_BASE` then reported for rings 0 and 1 (nothing left
 * in flight: used == avail); `cont` set each ring's base to exactly what it
 * reported and the device started each ring there; the TX ring moved on
 * between pauses; no `error` event and no `bad-avail-idx` anywhere; the
 * guest lost no ping and its tx/rx counters equal the device's ring 1/ring
 * 0 counters.
 */

import assert from "node:assert/strict";
import { type DeviceEvent, VhostMdevDevice, type VringState } from "@vhost-mdev/sdk";
import { driver } from "@vhost-mdev/sim";
import { type PingVmRun, pingVmSummary, runPingVm } from "@vhost-mdev/testing/guest";
import { until } from "@vhost-mdev/testing";
import { skipGuestTest } from "./example_process.ts";

const IP = "10.0.0.1";
const PAUSES = 3;
/** Wall time the VM stays paused, ms. */
const PAUSED_MS = 1000;
/** Wall time the VM runs before the first pause and after each `cont`, ms. */
const RUNNING_MS = 600;
/** Seconds between echo requests. */
const INTERVAL = 0.05;
/**
 * Echo requests: 4 s of guest time. The guest's clock stands still while it
 * is paused, so this covers 0.6 s + 3 x 0.6 s of running between and after
 * the pauses with room to spare; the test checks that the ping was still
 * running after the last `cont`.
 */
const COUNT = 80;

/** One line of the run's log: a device event, a base exchanged, or a QMP command. */
type Entry =
  | { kind: "event"; time: number; event: DeviceEvent }
  | { kind: "get" | "set"; time: number; index: number; num: number }
  | { kind: "qmp"; time: number; command: string; status?: string };

/** The pause/resume phases: index ranges into the log. */
interface Pause {
  /** Log index when `stop` was sent. */
  stopAt: number;
  /** Log index when `cont` was sent. */
  contAt: number;
  /** Log index when the next `stop` was sent (or the hook ended). */
  endAt: number;
}

function entryLine(e: Entry, t0: number): string {
  const at = `+${String(e.time - t0).padStart(5)} ms`;
  switch (e.kind) {
    case "event":
      return `${at} event ${e.event.type}: ${e.event.message}` +
        (e.event.type === "ring-stop" ? ` state=${JSON.stringify(e.event.fields?.state)}` : "") +
        (e.event.type === "ring-start" ? ` avail=${e.event.fields?.avail}` : "") +
        (e.event.type === "stop" ? ` bases=${JSON.stringify(e.event.fields?.bases)}` : "") +
        (e.event.type === "start"
          ? ` avail=${
            JSON.stringify(
              (e.event.fields?.rings as { index: number; avail: number }[]).map((r) => [
                r.index,
                r.avail,
              ]),
            )
          }`
          : "");
    case "get":
      return `${at} GET_VRING_BASE ring ${e.index} -> ${e.num}`;
    case "set":
      return `${at} SET_VRING_BASE ring ${e.index} = ${e.num}`;
    case "qmp":
      return `${at} -- QMP ${e.command}${e.status ? ` (now ${e.status})` : ""}`;
  }
}

Deno.test({
  name: "pause/resume: cont resumes every ring from the base GET_VRING_BASE reported",
  ignore: await skipGuestTest("pause/resume vm"),
  async fn() {
    const log: Entry[] = [];
    const device = await VhostMdevDevice.create(driver, {
      queues: 1,
      options: { mode: "responder", ip: IP },
    }, { listener: (event) => log.push({ kind: "event", time: Date.now(), event }) });
    // Watch the numbers the vhost-user session exchanges; behaviour unchanged.
    const getVringBase = device.getVringBase.bind(device);
    const setVringBase = device.setVringBase.bind(device);
    device.getVringBase = async (index: number): Promise<VringState> => {
      const s = await getVringBase(index);
      log.push({ kind: "get", time: Date.now(), index, num: s.num });
      return s;
    };
    device.setVringBase = async (index: number, base: number): Promise<void> => {
      log.push({ kind: "set", time: Date.now(), index, num: base });
      await setVringBase(index, base);
    };

    const pauses: Pause[] = [];
    let pingOutlasted = false;
    const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
    const during = async ({ qmp, vm }: PingVmRun) => {
      const status = async () => (await qmp.execute<{ status: string }>("query-status")).status;
      // The first sim Worker of a process can take seconds to load under
      // load: pausing is about a running device, so wait for it.
      await until("the device to run", () => device.running, 15_000);
      await sleep(RUNNING_MS);
      for (let i = 0; i < PAUSES; i++) {
        const stopAt = log.length;
        await qmp.execute("stop");
        log.push({ kind: "qmp", time: Date.now(), command: "stop", status: await status() });
        await sleep(PAUSED_MS);
        const contAt = log.length;
        await qmp.execute("cont");
        log.push({ kind: "qmp", time: Date.now(), command: "cont", status: await status() });
        await sleep(RUNNING_MS);
        pauses.push({ stopAt, contAt, endAt: log.length });
      }
      // The ping prints its summary only when it ends: it must still be running.
      pingOutlasted = !/packets transmitted/.test(vm.console);
      const names = qmp.events.map((e) => e.event).filter((n) => n === "STOP" || n === "RESUME");
      assert.deepEqual(names, Array.from({ length: PAUSES }, () => ["STOP", "RESUME"]).flat());
    };

    const started = performance.now();
    let result;
    try {
      result = await runPingVm({
        device,
        ip: IP,
        count: COUNT,
        interval: INTERVAL,
        during,
        log: (l) => console.log(`  pause-vm| ${l}`),
      });
    } finally {
      await device.close();
      const t0 = log[0]?.time ?? 0;
      for (const e of log) {
        if (e.kind !== "event" || e.event.type !== "debug") {
          console.log(`  pause-vm log| ${entryLine(e, t0)}`);
        }
      }
    }
    const wall = ((performance.now() - started) / 1000).toFixed(1);
    for (const l of pingVmSummary(result)) console.log(`  pause-vm| ${l}`);
    console.log(`  pause-vm| wall time ${wall} s, timings ${JSON.stringify(result.timings)}`);

    // No failures of any kind, and no ring declared broken.
    const events = log.flatMap((e) => e.kind === "event" ? [e.event] : []);
    assert.deepEqual(events.filter((e) => e.type === "error").map((e) => e.message), []);
    assert.ok(
      !JSON.stringify(events).includes("bad-avail-idx"),
      "bad-avail-idx in the device events",
    );
    for (const r of result.device.rings) assert.equal(r.errors, 0, `ring ${r.queue} errors`);
    assert.equal(pauses.length, PAUSES);
    assert.ok(pingOutlasted, "the ping ended before the last cont: raise COUNT");

    const bases: Record<number, number>[] = [];
    for (const [i, p] of pauses.entries()) {
      const what = `pause ${i + 1}`;
      const paused = log.slice(p.stopAt, p.contAt);
      const resumed = log.slice(p.contAt, p.endAt);
      assert.deepEqual(
        log.slice(p.stopAt, p.endAt).flatMap((e) => e.kind === "qmp" ? [e.status] : []),
        ["paused", "running"],
        `${what}: QMP status after stop and after cont`,
      );

      // stop: QEMU resets the status (SET_STATUS 0, the STATUS protocol
      // feature), which stops the whole device and saves each ring's
      // position; then one GET_VRING_BASE per ring reads that position back.
      const gets = paused.flatMap((e) => e.kind === "get" ? [e] : []);
      assert.deepEqual(gets.map((g) => g.index).sort(), [0, 1], `${what}: GET_VRING_BASE rings`);
      const base: Record<number, number> = {};
      for (const g of gets) base[g.index] = g.num;
      bases.push(base);
      const pausedEvents = paused.flatMap((e) => e.kind === "event" ? [e.event] : []);
      assert.deepEqual(
        pausedEvents.filter((e) => e.type !== "debug").map((e) => e.type),
        ["status", "stop"],
        `${what}: events while pausing`,
      );
      const stop = pausedEvents.find((e) => e.type === "stop")!;
      assert.equal(stop.message, "stop: status reset to 0", `${what}: why the device stopped`);
      assert.deepEqual(stop.fields?.bases, { 0: base[0], 1: base[1] }, `${what}: stop bases`);
      const states = stop.fields?.states as Record<number, { availIdx: number; usedIdx: number }>;
      for (const ring of [0, 1]) {
        assert.equal(states[ring].availIdx, base[ring], `${what}: ring ${ring} stop state`);
        assert.equal(states[ring].usedIdx, base[ring], `${what}: ring ${ring} left in flight`);
      }
      // Every GET_VRING_BASE answer came after the stop that fixed it.
      const stopIndex = log.findIndex((x) => x.kind === "event" && x.event === stop);
      const firstGet = log.findIndex((x, k) => k >= p.stopAt && x.kind === "get");
      assert.ok(stopIndex < firstGet, `${what}: GET_VRING_BASE answered before the stop`);

      // cont: SET_VRING_BASE back to exactly the reported base, then the device
      // starts (on DRIVER_OK and the rings' enable) with each ring there.
      const sets = resumed.flatMap((e) => e.kind === "set" ? [e] : []);
      assert.deepEqual(
        sets.map((s) => [s.index, s.num]).sort(),
        [[0, base[0]], [1, base[1]]],
        `${what}: SET_VRING_BASE on cont`,
      );
      const resumedEvents = resumed.flatMap((e) => e.kind === "event" ? [e.event] : []);
      assert.deepEqual(
        resumedEvents.filter((e) => e.type !== "debug" && e.type !== "status").map((e) => e.type),
        ["start"],
        `${what}: events on cont`,
      );
      const start = resumedEvents.find((e) => e.type === "start")!;
      const rings = start.fields?.rings as { index: number; avail: number; usedIdx: number }[];
      assert.deepEqual(
        rings.map((r) => [r.index, r.avail, r.usedIdx]),
        [[0, base[0], base[0]], [1, base[1], base[1]]],
        `${what}: where the rings start`,
      );
    }
    // Traffic flowed between the pauses: the guest posted new requests on TX ring 1.
    for (let i = 1; i < bases.length; i++) {
      assert.ok(
        bases[i][1] > bases[i - 1][1],
        `TX ring base did not move between pauses ${i} and ${i + 1}: ${bases[i - 1][1]} -> ${
          bases[i][1]
        }`,
      );
    }

    // Nothing lost or repeated: ping complete, both sides' counters equal.
    const g = result.guest;
    assert.equal(g.pingExit, 0);
    assert.equal(g.transmitted, COUNT);
    assert.equal(g.received, COUNT);
    assert.equal(g.lossPercent, 0);
    assert.equal(g.counters.tx_packets, result.device.txRingPackets);
    assert.equal(g.counters.rx_packets, result.device.rxRingPackets);
    const packets = (q: number) => result.device.rings.find((r) => r.queue === q)?.packets;
    assert.equal(packets(1), g.counters.tx_packets);
    assert.equal(packets(0), g.counters.rx_packets);
    assert.deepEqual(result.reasons, []);
    assert.equal(result.pass, true);
  },
});
