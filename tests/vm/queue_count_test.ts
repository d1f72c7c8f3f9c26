/**
 * Per-ring start and stop with a real peer: a QEMU guest (one vCPU) whose
 * 2-queue-pair virtio-net NIC is the sim responder pings it every 50 ms
 * while changing its combined channel count 2 -> 1 -> 2 -> 1 with the
 * ethtool ioctl. The Linux driver sends `VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET`,
 * QEMU (which owns the control queue under vhost-user) sends
 * `SET_VRING_ENABLE` for rings 2 and 3 only, and the device must stop and
 * start just those rings: one whole-device `start`, no `stop` until the
 * changes are over, `ring-stop`/`ring-start` for rings 2 and 3, not a ping
 * lost, and the device's ring 0/1 counters equal to the guest's.
 *
 * The second case runs the same guest against the same driver with its
 * `startRing`/`stopRing` taken away: the SDK then stops and starts the whole
 * device on the changes instead, which the events must show, and after the
 * last change to one pair it must run pair 0 again (the SDK parks such a
 * device for a moment after a ring is disabled, then runs the rings still
 * enabled). Its ping loss is printed, not asserted: each restart takes time.
 */

import assert from "node:assert/strict";
import type { DeviceEvent, DeviceOps, Driver } from "@vhost-mdev/sdk";
import { VhostMdevDevice } from "@vhost-mdev/sdk";
import { driver as sim } from "@vhost-mdev/sim";
import {
  C_COMPILER,
  channelsVmEventLines,
  type ChannelsVmResult,
  findProgram,
  runChannelsVm,
} from "@vhost-mdev/testing/guest";
import { skipGuestTest } from "./example_process.ts";

const IP = "10.0.0.1";
const STEPS = [2, 1, 2, 1];

async function skip(name: string): Promise<boolean> {
  if (await skipGuestTest(name)) return true;
  // The guest's set_channels helper is compiled with cc -static; under CI a
  // missing compiler fails the run with the install command instead.
  if (Deno.env.get("CI") !== "true" && (await findProgram(C_COMPILER.program)) === null) {
    console.log(`skipping ${name}: no C compiler; install with: apt-get install gcc libc6-dev`);
    return true;
  }
  return false;
}

/** The ring an event is about (`ring-start` says `index`, `ring-stop` says `queue`). */
function ringOf(e: DeviceEvent): number {
  const n = e.fields?.index ?? e.fields?.queue ?? /ring (\d+)/.exec(e.message)?.[1];
  return Number(n);
}

async function run(driver: Driver, name: string): Promise<ChannelsVmResult> {
  const device = await VhostMdevDevice.create(driver, {
    queues: 2,
    options: { mode: "responder", ip: IP },
  }, { name });
  try {
    const result = await runChannelsVm({
      device,
      ip: IP,
      steps: STEPS,
      log: (l) => console.log(`  ${name}| ${l}`),
    });
    for (const l of channelsVmEventLines(result, true)) console.log(`  ${name} event| ${l}`);
    console.log(
      `  ${name}| ping ${result.guest.received}/${result.guest.transmitted}, ` +
        `guest tx/rx ${result.guest.counters.tx_packets}/${result.guest.counters.rx_packets}, ` +
        `rings ${result.rings.map((r) => `${r.queue}:${r.packets}`).join(" ")}, ` +
        `timings ${JSON.stringify(result.timings)}`,
    );
    return result;
  } finally {
    await device.close();
  }
}

/** Events from the first whole-device start to the guest's "steps done" line. */
function duringChanges(result: ChannelsVmResult): DeviceEvent[] {
  const first = result.events.findIndex((e) => e.type === "start");
  assert.ok(first >= 0, "the device never started");
  assert.ok(
    first < result.steps[0].eventsBefore,
    "the device started only after the first channel change",
  );
  return result.events.slice(first, result.eventsAtStepsDone);
}

function assertStepsRan(result: ChannelsVmResult): void {
  assert.deepEqual(result.steps.map((s) => [s.combined, s.exitCode]), STEPS.map((c) => [c, 0]));
  assert.ok(result.pingOutlastedSteps, "ping ended before the last channel change");
}

Deno.test({
  name: "queue count: channel changes stop and start only rings 2 and 3; ping loses nothing",
  ignore: await skip("queue count vm"),
  async fn() {
    const result = await run(sim, "sim");
    assertStepsRan(result);

    const g = result.guest;
    assert.equal(g.pingExit, 0);
    assert.equal(g.lossPercent, 0);
    assert.ok(g.transmitted > 0);
    assert.equal(g.received, g.transmitted);

    assert.equal(result.events.filter((e) => e.type === "start").length, 1, "start events");
    const window = duringChanges(result);
    assert.deepEqual(window.filter((e) => e.type === "stop").map((e) => e.message), []);
    const ringEvents = window.filter((e) => e.type === "ring-start" || e.type === "ring-stop");
    assert.deepEqual([...new Set(ringEvents.map(ringOf))].sort(), [2, 3]);
    for (const type of ["ring-stop", "ring-start"]) {
      for (const ring of [2, 3]) {
        const n = ringEvents.filter((e) => e.type === type && ringOf(e) === ring).length;
        assert.ok(n >= 2, `${n} ${type} events for ring ${ring}, expected at least 2`);
      }
    }

    // Every frame the guest counted crossed a ring the device counted. The
    // guest steers its transmissions to pair 0 once the first change has run,
    // but a frame or two can leave on pair 1 before that (the socket's cached
    // queue), and its reply comes back on pair 1: so the sums over the pairs.
    const packets = (q: number) => result.rings.find((r) => r.queue === q)?.packets ?? 0;
    assert.equal(packets(0) + packets(2), g.counters.rx_packets, "guest rx vs RX rings 0 + 2");
    assert.equal(packets(1) + packets(3), g.counters.tx_packets, "guest tx vs TX rings 1 + 3");
    assert.ok(packets(3) <= 3, `${packets(3)} frames left on pair 1, expected pair 0`);
    assert.ok(g.counters.tx_packets >= g.transmitted + 1, `guest tx ${g.counters.tx_packets}`);
  },
});

/** Sim with its ops minus `startRing`/`stopRing`: a driver that stops whole devices only. */
const wholeDeviceSim: Driver = {
  ...sim,
  async probe(ctx, params) {
    const description = await sim.probe(ctx, params);
    const ops = description.ops as DeviceOps & Record<string, unknown>;
    const wrapped: Record<string, unknown> = {};
    for (let p = ops as object; p && p !== Object.prototype; p = Object.getPrototypeOf(p)) {
      for (const key of Object.getOwnPropertyNames(p)) {
        const value = ops[key];
        if (key === "constructor" || key === "startRing" || key === "stopRing") continue;
        if (typeof value === "function" && !(key in wrapped)) wrapped[key] = value.bind(ops);
      }
    }
    return { ...description, ops: wrapped as unknown as DeviceOps };
  },
};

Deno.test({
  name: "queue count: a driver without startRing/stopRing restarts the whole device instead",
  ignore: await skip("queue count vm (whole-device driver)"),
  async fn() {
    const result = await run(wholeDeviceSim, "sim-whole-device");
    assertStepsRan(result);
    const window = duringChanges(result);
    assert.deepEqual(window.filter((e) => e.type === "ring-start" || e.type === "ring-stop"), []);
    // Each change to 1 stops the device, each change to 2 restarts it (once per ring).
    const stops = window.filter((e) => e.type === "stop").length;
    const restarts = window.filter((e) => e.type === "start").length - 1;
    assert.ok(stops >= 2, `${stops} whole-device stops during ${STEPS.length} changes`);
    assert.ok(restarts >= 2, `${restarts} whole-device starts after the first`);
    // After the last change (to one pair) the device runs rings 0 and 1 again.
    const whole = window.filter((e) => e.type === "start" || e.type === "stop");
    const last = whole.at(-1)!;
    assert.equal(last.type, "start", `the device ends the changes ${last.type}ped`);
    assert.match(last.message, /start: 2 ring\(s\) 0:\d+ 1:\d+$/);
    const g = result.guest;
    console.log(`whole-device driver: ping ${g.received}/${g.transmitted} received`);
    assert.ok(g.received > 0);
  },
});
