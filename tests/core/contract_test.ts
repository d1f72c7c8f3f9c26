// The device contract as a driver sees it: rings start and stop alone while
// the others run, the full ring state, suspend and resume, the status byte,
// ring errors, protocol features. The device is driven through its named
// request methods, as the vhost-user session does.

import assert from "node:assert/strict";
import {
  type DeviceEvent,
  RequestRefused,
  type RingPosition,
  VhostMdevDevice,
  VirtioStatus,
} from "@vhost-mdev/sdk";
import { offeredProtocolFeatures, ProtocolFeatureBit } from "@vhost-mdev/sdk/vhost-user";
import { bit } from "@vhost-mdev/sdk";
import { eventfd, eventfdRead, SysError } from "@vhost-mdev/sdk/sys";
import { until } from "@vhost-mdev/testing";
import {
  NET_FEATURES,
  type Recorder,
  type RecorderOptions,
  recordingDriver,
} from "../support/recording_driver.ts";
import { setMemory, setRing } from "./setup.ts";
import { decodeRingBase, encodeRingBase } from "../../sdk/core/ring.ts";

/** A device with `queues` pairs, features and memory set, every ring configured and enabled. */
async function running(options: RecorderOptions, queues = 2) {
  const rec = recordingDriver(options);
  const events: DeviceEvent[] = [];
  const dev = await VhostMdevDevice.create(rec.driver, { queues, options: {} }, {
    listener: (e) => events.push(e),
  });
  await dev.setFeatures(NET_FEATURES);
  await setMemory(dev);
  for (let q = 0; q < 2 * queues; q++) await setRing(dev, q);
  for (let q = 0; q < 2 * queues; q++) await dev.setVringEnable(q, true);
  return { rec, dev, events };
}

const count = (rec: Recorder, op: Parameters<Recorder["count"]>[0]) => rec.count(op);

Deno.test("per-ring: disabling and enabling one pair leaves the other running, no device stop", async () => {
  const { rec, dev, events } = await running({ perRing: true });
  // Rings came up one by one: the first started the device, the rest started alone.
  assert.equal(count(rec, "start"), 1);
  assert.deepEqual(rec.calls.filter((c) => c.op === "startRing").map((c) => c.queue), [1, 2, 3]);
  rec.calls.length = 0;
  events.length = 0;

  await dev.setVringEnable(2, false);
  await dev.setVringEnable(3, false);
  assert.deepEqual(rec.calls.map((c) => [c.op, c.queue]), [
    ["stopRing", 2],
    ["getVringState", 2],
    ["stopRing", 3],
    ["getVringState", 3],
  ]);
  assert.equal(dev.running, true);
  assert.deepEqual([0, 1, 2, 3].map((q) => dev.vring(q).running), [true, true, false, false]);

  await dev.setVringEnable(2, true);
  await dev.setVringEnable(3, true);
  assert.deepEqual(
    rec.calls.filter((c) => c.op === "startRing").map((c) => c.queue),
    [2, 3],
  );
  assert.equal(count(rec, "stop"), 0);
  assert.equal(count(rec, "start"), 0);
  assert.deepEqual(events.filter((e) => e.type === "stop" || e.type === "start"), []);
  assert.deepEqual(
    events.filter((e) => e.type === "ring-stop" || e.type === "ring-start").map((e) => e.type),
    ["ring-stop", "ring-stop", "ring-start", "ring-start"],
  );
  await dev.close();
});

Deno.test("per-ring fallback: a driver without startRing/stopRing restarts the device, saying so", async () => {
  const { rec, dev, events } = await running({});
  // Each ring enabled after the first restarted the whole device.
  assert.equal(count(rec, "start"), 4);
  assert.equal(count(rec, "stop"), 3);
  const said = events.filter((e) =>
    e.type === "info" && /no startRing\/stopRing, so the whole device restarts/.test(e.message)
  );
  assert.equal(said.length, 3);
  rec.calls.length = 0;
  // Disabling rings stops the device once; when the frontend is quiet the
  // rings still enabled run again (a guest dropping a queue pair keeps the other).
  await dev.setVringEnable(3, false);
  await dev.setVringEnable(2, false);
  assert.equal(count(rec, "stop"), 1);
  assert.equal(dev.running, false);
  await until("the enabled rings to run again", () => dev.running, 2000);
  const again = rec.calls.findLast((c) => c.op === "start")!;
  assert.deepEqual(again.rings!.filter((r) => r.running).map((r) => r.index), [0, 1]);
  assert.equal(count(rec, "stop"), 1);
  await dev.setVringEnable(3, true);
  assert.equal(count(rec, "start"), 2);
  assert.equal(dev.running, true);
  await dev.close();
});

Deno.test("GET_VRING_BASE stops only that ring and returns the driver's state", async () => {
  const states = new Map<number, RingPosition>();
  const { rec, dev } = await running({ perRing: true, states });
  states.set(1, { availIdx: 4242, usedIdx: 4242, availWrap: true, usedWrap: true });
  const got = await dev.getVringBase(1);
  assert.deepEqual(got, { index: 1, num: 4242 });
  assert.equal(rec.calls.filter((c) => c.op === "stopRing" && c.queue === 1).length, 1);
  assert.equal(dev.running, true, "the other rings run on");
  assert.equal(dev.vring(1).running, false);
  assert.equal(dev.vring(1).kickFd, -1, "the stopped ring's kick is no longer watched");
  // The frontend sets the ring up again: it starts alone, from the state it was left at.
  await setRing(dev, 1);
  await dev.setVringBase(1, 4242);
  await dev.setVringEnable(1, true);
  const restart = rec.calls.findLast((c) => c.op === "startRing" && c.queue === 1);
  assert.ok(restart, "startRing(1) after the ring is set up again");
  assert.equal(restart.rings![1].state.availIdx, 4242);
  assert.equal(count(rec, "stop"), 0, rec.calls.map((c) => c.op + (c.queue ?? "")).join(","));
  await dev.close();
});

Deno.test("suspend keeps configuration and state; resume continues the same rings", async () => {
  const { rec, dev, events } = await running({ suspend: true, perRing: true });
  rec.calls.length = 0;
  await dev.suspend();
  assert.equal(dev.suspended, true);
  assert.equal(dev.running, true);
  assert.deepEqual(rec.calls.map((c) => c.op), [
    "suspend",
    "getVringState",
    "getVringState",
    "getVringState",
    "getVringState",
  ]);
  rec.calls.length = 0;
  await dev.resume();
  assert.equal(dev.suspended, false);
  assert.deepEqual(rec.calls.map((c) => c.op), ["resume"]);
  assert.ok(events.some((e) => e.type === "suspend") && events.some((e) => e.type === "resume"));
  assert.equal(count(rec, "stop"), 0);
  await dev.close();
});

Deno.test("GET_VRING_BASE on a driver with suspend but no per-ring ops suspends the device", async () => {
  const states = new Map<number, RingPosition>();
  const { rec, dev } = await running({ suspend: true }, 1);
  states.set(0, { availIdx: 9, usedIdx: 9, availWrap: true, usedWrap: true });
  rec.calls.length = 0;
  assert.deepEqual(await dev.getVringBase(0), { index: 0, num: 0 });
  assert.deepEqual(rec.calls.map((c) => c.op), [
    "suspend",
    "getVringState",
    "getVringState",
    "getVringState",
  ]);
  assert.equal(dev.suspended, true);
  assert.equal(count(rec, "stop"), 0);
  await dev.close();
});

Deno.test("a driver without suspend is stopped instead, and started again on resume", async () => {
  const { rec, dev } = await running({ perRing: true }, 1);
  rec.calls.length = 0;
  await dev.suspend();
  assert.equal(dev.running, false);
  assert.equal(count(rec, "stop"), 1);
  await dev.resume();
  assert.equal(dev.running, true);
  assert.equal(count(rec, "start"), 1);
  await dev.close();
});

Deno.test("status: a driver refusing the features leaves FEATURES_OK clear (virtio 1.2 §3.1.1)", async () => {
  const rec = recordingDriver({ refuseFeatures: true });
  const events: DeviceEvent[] = [];
  const dev = await VhostMdevDevice.create(rec.driver, { queues: 1, options: {} }, {
    listener: (e) => events.push(e),
  });
  await dev.setFeatures(NET_FEATURES);
  const S = VirtioStatus;
  await dev.setStatus(S.ACKNOWLEDGE | S.DRIVER | S.FEATURES_OK);
  assert.equal(dev.status, S.ACKNOWLEDGE | S.DRIVER, "the frontend reads FEATURES_OK back cleared");
  assert.deepEqual(
    rec.calls.filter((c) => c.op === "setStatus").map((c) => c.status),
    [S.ACKNOWLEDGE | S.DRIVER | S.FEATURES_OK],
  );
  assert.ok(events.some((e) => e.type === "warn" && /refused features/.test(e.message)));
  await dev.close();

  // The same sequence with a driver that accepts: FEATURES_OK stays.
  const ok = recordingDriver({ refuseFeatures: false });
  const dev2 = await VhostMdevDevice.create(ok.driver, { queues: 1, options: {} });
  await dev2.setFeatures(NET_FEATURES);
  await dev2.setStatus(S.ACKNOWLEDGE | S.DRIVER | S.FEATURES_OK);
  assert.equal(dev2.status, S.ACKNOWLEDGE | S.DRIVER | S.FEATURES_OK);
  await dev2.close();
});

Deno.test("ringError writes the ring's error fd without NEEDS_RESET; reportError sets it", async () => {
  const { rec, dev, events } = await running({ perRing: true }, 1);
  const err = eventfd(0, { nonBlocking: true });
  await dev.setVringErr(0, err);
  const ctx = rec.ctx();
  ctx.ringError(0, "chain 7: a descriptor outside guest memory");
  assert.equal(dev.status & VirtioStatus.NEEDS_RESET, 0);
  assert.equal(dev.errors, 1);
  assert.equal(eventfdRead(err), 1);
  assert.ok(events.some((e) => e.type === "error" && /chain 7/.test(e.message)));
  assert.throws(() => ctx.ringError(9, "no such ring"), RangeError);
  ctx.reportError("the hardware failed", 0);
  assert.notEqual(dev.status & VirtioStatus.NEEDS_RESET, 0);
  assert.equal(eventfdRead(err), 1);
  assert.throws(() => eventfdRead(err), (e: Error) => e instanceof SysError);
  await dev.close();
});

Deno.test("a driver's ring state outside the ring's range is refused, the ring keeps its last", async () => {
  const states = new Map<number, RingPosition>();
  const { dev, events } = await running({ perRing: true, states }, 1);
  await dev.setVringBase(0, 0);
  states.set(0, { availIdx: 70000, usedIdx: 0, availWrap: true, usedWrap: true });
  await dev.setVringEnable(0, false);
  assert.equal(dev.vring(0).state.availIdx, 0);
  assert.ok(events.some((e) => e.type === "warn" && /availIdx 70000/.test(e.message)));
  await dev.close();
});

Deno.test("ring base numbers: split is the 16-bit index, packed carries both positions and wraps", () => {
  assert.deepEqual(decodeRingBase(0x1_2345, false), {
    availIdx: 0x2345,
    usedIdx: 0x2345,
    availWrap: true,
    usedWrap: true,
  });
  const packed = { availIdx: 100, usedIdx: 90, availWrap: false, usedWrap: true };
  const num = encodeRingBase(packed, true);
  assert.equal(num, (100 | ((90 | 0x8000) << 16)) >>> 0);
  assert.deepEqual(decodeRingBase(num, true), packed);
  // Only the low 16 bits (older frontends): the used position equals the available one.
  assert.deepEqual(decodeRingBase(0x8000 | 5, true), {
    availIdx: 5,
    usedIdx: 5,
    availWrap: true,
    usedWrap: true,
  });
});

Deno.test("protocol features: a driver adds and removes from the SDK's offer", async () => {
  const base = offeredProtocolFeatures({
    deviceId: 1,
    features: 0n,
    numQueues: 2,
    maxQueueSize: 256,
    ops: {
      start() {},
      stop() {},
      getVringState: () => ({ availIdx: 0, usedIdx: 0, availWrap: true, usedWrap: true }),
    },
  });
  assert.notEqual(base & bit(ProtocolFeatureBit.HOST_NOTIFIER), 0n);
  assert.equal(base & bit(ProtocolFeatureBit.LOG_SHMFD), 0n);
  const rec = recordingDriver();
  const driver = {
    ...rec.driver,
    async probe(
      ctx: Parameters<typeof rec.driver.probe>[0],
      params: Parameters<typeof rec.driver.probe>[1],
    ) {
      const d = await rec.driver.probe(ctx, params);
      return {
        ...d,
        protocolFeatures: {
          add: [ProtocolFeatureBit.LOG_SHMFD],
          remove: [ProtocolFeatureBit.HOST_NOTIFIER],
        },
      };
    },
  };
  const dev = await VhostMdevDevice.create(driver, { queues: 1, options: {} });
  const offered = offeredProtocolFeatures(dev.description);
  assert.equal(
    offered,
    (base | bit(ProtocolFeatureBit.LOG_SHMFD)) & ~bit(ProtocolFeatureBit.HOST_NOTIFIER),
  );
  await dev.close();
  // A bit number that cannot be one is refused when the device is created.
  const bad = {
    ...driver,
    async probe(
      ctx: Parameters<typeof rec.driver.probe>[0],
      params: Parameters<typeof rec.driver.probe>[1],
    ) {
      return { ...await rec.driver.probe(ctx, params), protocolFeatures: { add: [64] } };
    },
  };
  await assert.rejects(
    VhostMdevDevice.create(bad, { queues: 1, options: {} }),
    (e: Error) => e instanceof RangeError && /protocol feature bit 64/.test(e.message),
  );
});

Deno.test("startRing failing fails the request and reports the device error", async () => {
  const rec = recordingDriver({ perRing: true });
  const dev = await VhostMdevDevice.create({
    ...rec.driver,
    async probe(ctx, params) {
      const d = await rec.driver.probe(ctx, params);
      d.ops.startRing = (q) => {
        throw new Error(`ring ${q} cannot start on purpose`);
      };
      return d;
    },
  }, { queues: 1, options: {} });
  await dev.setFeatures(NET_FEATURES);
  await setMemory(dev);
  await setRing(dev, 0);
  await setRing(dev, 1);
  await dev.setVringEnable(0, true);
  await assert.rejects(
    dev.setVringEnable(1, true),
    (e: Error) => e instanceof RequestRefused && /ring 1 cannot start on purpose/.test(e.message),
  );
  assert.equal(dev.vring(1).running, false);
  assert.notEqual(dev.status & VirtioStatus.NEEDS_RESET, 0);
  assert.equal(dev.errors, 1);
  await dev.close();
});

Deno.test("counters: a driver declares its counters by name; reset reaches it; bad names are refused", async () => {
  const rings = [new Map<string, number>([["requests", 3], ["bytes", 4096], ["errors", 0]])];
  let resets = 0;
  const rec = recordingDriver();
  const counting = {
    ...rec.driver,
    async probe(
      ctx: Parameters<typeof rec.driver.probe>[0],
      params: Parameters<typeof rec.driver.probe>[1],
    ) {
      const d = await rec.driver.probe(ctx, params);
      d.counters = {
        ring: [
          { name: "requests", description: "requests completed" },
          { name: "bytes", description: "bytes read and written" },
          { name: "errors", description: "malformed requests" },
        ],
        device: [{ name: "resets", description: "device resets" }],
      };
      d.ops.stats = () => rings.map((m, queue) => ({ queue, ...Object.fromEntries(m) }));
      d.ops.deviceStats = () => ({ resets });
      d.ops.resetStats = () => {
        resets++;
        for (const m of rings) for (const k of m.keys()) m.set(k, 0);
      };
      return d;
    },
  };
  const dev = await VhostMdevDevice.create(counting, { queues: 1, options: {} });
  assert.deepEqual(dev.counters.ring.map((c) => c.name), ["requests", "bytes", "errors"]);
  assert.deepEqual(dev.stats(), [{ queue: 0, requests: 3, bytes: 4096, errors: 0 }]);
  dev.resetStats();
  assert.deepEqual(dev.stats(), [{ queue: 0, requests: 0, bytes: 0, errors: 0 }]);
  assert.deepEqual(dev.deviceStats(), { resets: 1 });
  await dev.close();

  // Without resetStats the reset is refused, saying so; undeclared counters default to the net set.
  const plain = await VhostMdevDevice.create(rec.driver, { queues: 1, options: {} });
  assert.deepEqual(plain.counters.ring.map((c) => c.name), ["packets", "bytes", "drops", "errors"]);
  assert.throws(
    () => plain.resetStats(),
    (e: Error) => /cannot reset its counters/.test(e.message),
  );
  await plain.close();

  for (const name of ["Bytes", "queue", ""]) {
    const bad = {
      ...rec.driver,
      async probe(
        ctx: Parameters<typeof rec.driver.probe>[0],
        params: Parameters<typeof rec.driver.probe>[1],
      ) {
        return {
          ...await rec.driver.probe(ctx, params),
          counters: { ring: [{ name, description: "x" }] },
        };
      },
    };
    await assert.rejects(
      VhostMdevDevice.create(bad, { queues: 1, options: {} }),
      (e: Error) => e instanceof RangeError && /counter name/.test(e.message),
      `counter name ${JSON.stringify(name)}`,
    );
  }
});
