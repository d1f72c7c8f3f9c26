// The software-device kit itself: what softwareDriver accepts, the config
// space it serves, device options reaching the Workers, handler mistakes,
// a Worker that never stops, a Worker that cannot start, and memory-table
// changes while rings run.

import assert from "node:assert/strict";
import {
  bit,
  type DeviceContext,
  type DeviceDescription,
  VirtioFeatureBit,
  VirtioStatus,
} from "@vhost-mdev/sdk";
import { close, ftruncate, memfdCreate } from "@vhost-mdev/sdk/sys";
import { CONFIG_SPACE_LIMIT, serveQueue, softwareDriver } from "@vhost-mdev/sdk/soft";
import { until } from "@vhost-mdev/testing";
import { takeUsed, withDevice } from "./rig.ts";

const VERSION_1 = bit(VirtioFeatureBit.VERSION_1);
const WORKER = new URL("./test_worker.ts", import.meta.url);

const testDriver = softwareDriver({
  name: "kit-test",
  description: "the kit's test device",
  deviceId: 0x7ff0,
  features: VERSION_1 | bit(VirtioFeatureBit.EVENT_IDX) | bit(VirtioFeatureBit.INDIRECT_DESC),
  numQueues: (p) => p.queues,
  maxQueueSize: 256,
  config: (p) => new Uint8Array([1, 2, 3, Number(p.options.byte ?? 0)]),
  options: [
    { name: "mode", description: "what the handler does", default: "fill" },
    { name: "byte", description: "fill byte", default: "7" },
  ],
  worker: WORKER,
});

async function probe(options: Record<string, string> = {}): Promise<DeviceDescription> {
  return await testDriver.probe({} as DeviceContext, { queues: 1, options });
}

Deno.test("softwareDriver: a spec without VERSION_1 or with bad sizes is refused; packed rings are offered", async () => {
  const spec = {
    name: "x",
    description: "x",
    deviceId: 4,
    features: VERSION_1,
    numQueues: 1,
    maxQueueSize: 256,
    worker: WORKER,
  };
  assert.equal(softwareDriver(spec).name, "x");
  assert.throws(() => softwareDriver({ ...spec, features: 0n }), /VIRTIO_F_VERSION_1/);
  const d = await softwareDriver(spec).probe({} as DeviceContext, { queues: 1, options: {} });
  assert.ok((d.features & bit(VirtioFeatureBit.RING_PACKED)) !== 0n, "the kit adds RING_PACKED");
  assert.throws(() => softwareDriver({ ...spec, maxQueueSize: 100 }), /power of two/);
  assert.throws(() => softwareDriver({ ...spec, deviceId: 0 }), /device ID 0/);
  assert.throws(() => softwareDriver({ ...spec, name: "" }), /needs a name/);
});

Deno.test("softwareDriver: probe sizes the device from its params and declares its counters", async () => {
  const d = await probe({ byte: "9" });
  assert.equal(d.deviceId, 0x7ff0);
  assert.equal(d.numQueues, 1);
  assert.equal(d.maxQueueSize, 256);
  assert.deepEqual([...d.config!], [1, 2, 3, 9], "the config builder saw the options");
  assert.deepEqual(d.counters!.ring!.map((c) => c.name), ["requests", "bytes", "errors"]);
  assert.deepEqual(d.ops.stats!(), [{ queue: 0, requests: 0, bytes: 0, errors: 0 }]);
  await assert.rejects(
    Promise.resolve().then(() => testDriver.probe({} as DeviceContext, { queues: 0, options: {} })),
    /0 queues is not in 1\.\.1024/,
  );
  await d.ops.close!();
});

Deno.test("getConfig: the struct, then zeros up to the limit; beyond it a RangeError naming it", async () => {
  const d = await probe();
  const get = (offset: number, length: number) => d.ops.getConfig!(offset, length);
  assert.deepEqual([...get(0, 4)], [1, 2, 3, 7]);
  assert.deepEqual([...get(2, 6)], [3, 7, 0, 0, 0, 0], "past the struct: zeros");
  assert.deepEqual(get(100, CONFIG_SPACE_LIMIT - 100), new Uint8Array(CONFIG_SPACE_LIMIT - 100));
  assert.throws(() => get(250, 7), (e) => e instanceof RangeError && /256-byte/.test(e.message));
  assert.throws(() => get(-1, 4), RangeError);
  await d.ops.close!();
});

Deno.test("serveQueue: refuses to run outside a Worker", () => {
  assert.throws(() => serveQueue(() => 0), /runs in the Worker softwareDriver\(\) starts/);
});

Deno.test("kit: option defaults reach the handler; readable bytes echo back", async () => {
  await withDevice(testDriver, async ({ guest, fe }) => {
    await guest.activate();
    const a = guest.allocate(64);
    guest.queue(0).addBuffer(a, 64, true, 1);
    guest.publish(0);
    assert.deepEqual([...(await takeUsed(guest, 1)).entries()], [[1, 64]]);
    assert.deepEqual([...fe.memory.bytes(a, 64)], new Array(64).fill(7), "the default byte 7");
    await guest.stop();
  });
  await withDevice(testDriver, async ({ guest, fe, device }) => {
    await guest.activate();
    const src = guest.allocate(300), dst = guest.allocate(300);
    fe.memory.bytes(src, 300).set(Array.from({ length: 300 }, (_, i) => (i * 7) & 0xff));
    guest.queue(0).add([
      { gpa: src, len: 100, write: false },
      { gpa: src + 100, len: 200, write: false },
      { gpa: dst, len: 300, write: true },
    ], 2);
    guest.publish(0);
    assert.deepEqual([...(await takeUsed(guest, 1)).entries()], [[2, 300]]);
    assert.deepEqual(fe.memory.bytes(dst, 300), fe.memory.bytes(src, 300));
    assert.equal(device.description.ops.stats!()[0].bytes, 600, "readable plus used bytes");
    await guest.stop();
  }, { mode: "echo" });
});

Deno.test("kit: a used length the request cannot hold fails the request, not the ring", async () => {
  await withDevice(testDriver, async ({ guest, device, events }) => {
    await guest.activate();
    for (let t = 0; t < 3; t++) guest.queue(0).addBuffer(guest.allocate(32), 32, true, t);
    guest.publish(0);
    const got = await takeUsed(guest, 3);
    assert.deepEqual([...got.values()], [0, 0, 0]);
    assert.equal(device.description.ops.stats!()[0].errors, 3);
    await until("the ring errors", () => events.filter((e) => e.type === "error").length === 3);
    assert.match(events.find((e) => e.type === "error")!.message, /returned used length 33/);
    await guest.stop();
  }, { mode: "bad-length" });
});

Deno.test("kit: a Worker that does not confirm its stop is terminated and the device needs a reset", async () => {
  await withDevice(testDriver, async ({ guest, fe, events }) => {
    await guest.activate();
    guest.queue(0).addBuffer(guest.allocate(13), 13, true, 1);
    guest.publish(0);
    await new Promise((r) => setTimeout(r, 100));
    const started = performance.now();
    await fe.getVringBase(0);
    assert.ok(performance.now() - started >= 1900, "the stop waited for the Worker");
    const error = events.find((e) => e.type === "error");
    assert.match(error?.message ?? "", /did not stop within 2000 ms; it was terminated/);
    assert.equal(error?.fields?.queue, 0);
    assert.ok(((await fe.getStatus()) & VirtioStatus.NEEDS_RESET) !== 0, "NEEDS_RESET is set");
  }, { mode: "stuck" });
});

Deno.test("kit: a Worker that fails to start fails the start, saying why", async () => {
  await withDevice(testDriver, async ({ guest, fe, events }) => {
    await assert.rejects(guest.activate());
    await until("the start failure", () => events.some((e) => /refuses to start/.test(e.message)));
    assert.ok(((await fe.getStatus()) & VirtioStatus.NEEDS_RESET) !== 0, "NEEDS_RESET is set");
  }, { mode: "fail-start" });
});

Deno.test("kit: memory regions added and removed while the ring runs switch the Worker's view", async () => {
  const GPA = 0x40000000, SIZE = 0x100000, UVA = 0x100000000000;
  const fd = memfdCreate("soft-test", { allowSealing: true });
  ftruncate(fd, SIZE);
  try {
    await withDevice(testDriver, async ({ guest, device }) => {
      await guest.activate();
      const ring = guest.queue(0);
      await device.addMemoryRegion({ gpa: GPA, size: SIZE, uva: UVA, mmapOffset: 0, fd });
      ring.addBuffer(GPA + 0x1000, 128, true, 1);
      guest.publish(0);
      assert.deepEqual([...(await takeUsed(guest, 1)).entries()], [[1, 128]], "new region used");

      await device.removeMemoryRegion(GPA, SIZE);
      ring.addBuffer(GPA + 0x1000, 128, true, 2);
      ring.addBuffer(guest.allocate(64), 64, true, 3);
      guest.publish(0);
      const got = await takeUsed(guest, 2);
      assert.deepEqual([...got.entries()], [[2, 0], [3, 64]], "removed region refused, ring on");
      assert.equal(device.description.ops.stats!()[0].errors, 1);
      await guest.stop();
    });
  } finally {
    close(fd);
  }
});
