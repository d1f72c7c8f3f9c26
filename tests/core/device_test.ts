// The device core without sockets: state machine, features, ring checks,
// memory-table translation of ring addresses, kick relay and call signalling.

import assert from "node:assert/strict";
import {
  bit,
  ProtocolError,
  RequestRefused,
  VhostIoctl,
  VhostMdevDevice,
  VhostMdevState,
  VirtioFeatureBit,
  VirtioStatus,
} from "@vhost-mdev/sdk";
import {
  close,
  eventfdRead,
  eventfdWrite,
  ftruncate,
  memfdCreate,
  POLLIN,
  pollSync,
} from "@vhost-mdev/sdk/sys";
import { NET_FEATURES, type Recorder, recordingDriver } from "../support/recording_driver.ts";
import { settledFdCount } from "../support/peers.ts";
import { GPA, MiB, setMemory, setRing, UVA } from "./setup.ts";

const VERSION_1 = bit(VirtioFeatureBit.VERSION_1);

async function newDevice(rec: Recorder, queues = 1): Promise<VhostMdevDevice> {
  return await VhostMdevDevice.create(rec.driver, { queues, options: {} });
}

async function configured(rec: Recorder, queues = 1) {
  const dev = await newDevice(rec, queues);
  await dev.ioctl(VhostIoctl.SET_FEATURES, NET_FEATURES);
  await setMemory(dev);
  const fds = [];
  for (let q = 0; q < 2 * queues; q++) fds.push(await setRing(dev, q));
  return { dev, fds };
}

Deno.test("features: offered bits are acked, others refused", async () => {
  const rec = recordingDriver();
  const dev = await newDevice(rec);
  assert.equal(await dev.ioctl(VhostIoctl.GET_FEATURES), NET_FEATURES);
  await assert.rejects(
    dev.ioctl(VhostIoctl.SET_FEATURES, NET_FEATURES | bit(VirtioFeatureBit.RING_PACKED)),
    (e: Error) => e instanceof RequestRefused && /0x400000000/.test(e.message),
  );
  assert.equal(dev.ackedFeatures, 0n);
  await dev.ioctl(VhostIoctl.SET_FEATURES, VERSION_1);
  assert.equal(dev.ackedFeatures, VERSION_1);
  assert.deepEqual(rec.calls.map((c) => [c.op, c.features]), [["featuresChanged", VERSION_1]]);
  await dev.close();
});

Deno.test("rings: sizes, indexes and addresses are checked", async () => {
  const rec = recordingDriver({ maxQueueSize: 512 });
  const dev = await newDevice(rec);
  await dev.ioctl(VhostIoctl.SET_FEATURES, NET_FEATURES);
  await assert.rejects(dev.ioctl(VhostIoctl.SET_VRING_NUM, { index: 0, num: 300 }), RequestRefused);
  await assert.rejects(
    dev.ioctl(VhostIoctl.SET_VRING_NUM, { index: 0, num: 1024 }),
    RequestRefused,
  );
  await assert.rejects(
    dev.ioctl(VhostIoctl.SET_VRING_NUM, { index: 2, num: 256 }),
    (e: Error) => e instanceof ProtocolError && /ring index 2 is out of range/.test(e.message),
  );
  // Address before any memory table.
  await dev.ioctl(VhostIoctl.SET_VRING_NUM, { index: 0, num: 256 });
  await assert.rejects(
    dev.ioctl(VhostIoctl.SET_VRING_ADDR, {
      index: 0,
      flags: 0,
      desc: UVA,
      avail: UVA + 4096,
      used: UVA + 8192,
      log: 0,
    }),
    /no memory table/,
  );
  await setMemory(dev);
  // First byte of the region: fine, translated to GPA.
  const end = UVA + 4 * MiB;
  await dev.ioctl(VhostIoctl.SET_VRING_ADDR, {
    index: 0,
    flags: 0,
    desc: UVA,
    avail: UVA + 4096,
    used: end - (6 + 8 * 256), // used ring (with avail_event) ends on the last byte
    log: 0,
  });
  const r = dev.vring(0);
  assert.equal(r.descAddr, GPA);
  assert.equal(r.availAddr, GPA + 4096);
  assert.equal(r.usedAddr, GPA + 4 * MiB - (6 + 8 * 256));
  // One byte further: the used ring leaves the region.
  await assert.rejects(
    dev.ioctl(VhostIoctl.SET_VRING_ADDR, {
      index: 0,
      flags: 0,
      desc: UVA,
      avail: UVA + 4096,
      used: end - (6 + 8 * 256) + 1,
      log: 0,
    }),
    /not all inside the memory table/,
  );
  assert.equal(dev.vring(0).ready, false);
  await dev.close();
});

Deno.test("state: start once when a ring is enabled, stop once on teardown", async () => {
  const rec = recordingDriver();
  const { dev, fds } = await configured(rec);
  assert.equal(rec.count("start"), 0, "nothing enabled yet");
  await dev.setVringEnable(0, true);
  await dev.setVringEnable(1, true);
  // Enabling the second ring while running restarts: one stop, two starts.
  assert.equal(rec.count("start"), 2);
  assert.equal(rec.count("stop"), 1);
  assert.equal(dev.running, true);
  const start = rec.calls.filter((c) => c.op === "start").at(-1)!;
  assert.equal(start.ringsInMemory, true);
  assert.deepEqual(start.rings!.map((r) => [r.num, r.enabled, r.descAddr]), [
    [256, true, GPA],
    [256, true, GPA + 0x10000],
  ]);
  // DPDK's teardown: disable each ring, then GET_VRING_BASE each: one stop only.
  rec.calls.length = 0;
  await dev.setVringEnable(0, false);
  await dev.setVringEnable(1, false);
  const b0 = await dev.ioctl(VhostIoctl.GET_VRING_BASE, { index: 0 });
  const b1 = await dev.ioctl(VhostIoctl.GET_VRING_BASE, { index: 1 });
  assert.deepEqual([b0, b1], [{ index: 0, num: 0 }, { index: 1, num: 0 }]);
  assert.equal(rec.count("stop"), 1);
  assert.equal(rec.count("start"), 0);
  assert.equal(dev.running, false);
  void fds;
  await dev.close();
});

Deno.test("state: SET_STATUS drives start at DRIVER_OK and reset at 0", async () => {
  const rec = recordingDriver();
  const { dev } = await configured(rec);
  await dev.setStatus(VirtioStatus.ACKNOWLEDGE | VirtioStatus.DRIVER | VirtioStatus.FEATURES_OK);
  await dev.setVringEnable(0, true);
  await dev.setVringEnable(1, true);
  assert.equal(rec.count("start"), 0, "no DRIVER_OK yet");
  await dev.setStatus(0xf);
  assert.equal(rec.count("start"), 1);
  assert.equal(dev.running, true);
  await dev.setStatus(0);
  assert.equal(rec.count("stop"), 1);
  assert.equal(dev.running, false);
  assert.equal(dev.status, 0);
  // RESET_DEVICE forgets everything the frontend configured.
  await dev.reset();
  assert.equal(dev.ackedFeatures, 0n, "reset forgets features");
  assert.equal(dev.vring(0).kickFd, -1, "reset closes ring fds");
  assert.equal(rec.count("stop"), 1, "no second stop");
  await dev.close();
});

Deno.test("state: VHOST_MDEV_SET_STATE switches RUNNING and STOPPED exactly once each", async () => {
  const rec = recordingDriver();
  const { dev } = await configured(rec);
  await assert.rejects(
    dev.ioctl(VhostIoctl.MDEV_SET_STATE, VhostMdevState.RUNNING),
    /no ring is enabled/,
  );
  await dev.setVringEnable(0, true);
  await dev.ioctl(VhostIoctl.MDEV_SET_STATE, VhostMdevState.STOPPED);
  await dev.ioctl(VhostIoctl.MDEV_SET_STATE, VhostMdevState.STOPPED);
  assert.equal(rec.count("stop"), 1);
  await dev.ioctl(VhostIoctl.MDEV_SET_STATE, VhostMdevState.RUNNING);
  await dev.ioctl(VhostIoctl.MDEV_SET_STATE, VhostMdevState.RUNNING);
  assert.equal(rec.count("start"), 2);
  assert.equal(dev.running, true);
  await assert.rejects(dev.ioctl(VhostIoctl.MDEV_SET_STATE, 7), ProtocolError);
  await dev.close();
  assert.equal(rec.count("stop"), 2, "close stops a running device");
});

Deno.test("state: a failing start is refused and marks NEEDS_RESET", async () => {
  const rec = recordingDriver({ failStart: true });
  const { dev } = await configured(rec);
  await assert.rejects(dev.setVringEnable(0, true), /start failed on purpose/);
  assert.equal(dev.running, false);
  assert.ok(dev.status & VirtioStatus.NEEDS_RESET);
  await dev.close();
  assert.equal(rec.count("stop"), 0, "never started, never stopped");
});

Deno.test("kick relay: a kick reaches notify(q); signal(q) writes the call fd", async () => {
  const rec = recordingDriver();
  const { dev } = await configured(rec);
  await dev.setVringEnable(0, true);
  await dev.setVringEnable(1, true);
  eventfdWrite(dev.vring(1).kickFd, 1);
  await rec.until((c) => c.some((x) => x.op === "notify" && x.queue === 1), 5000, "notify(1)");
  eventfdWrite(dev.vring(0).kickFd, 1);
  await rec.until((c) => c.some((x) => x.op === "notify" && x.queue === 0), 5000, "notify(0)");
  rec.ctx().signal(0);
  rec.ctx().signal(0);
  const call = dev.vring(0).callFd;
  assert.notEqual(pollSync([{ fd: call, events: POLLIN }], 0)[0], 0);
  assert.equal(eventfdRead(call), 2);
  await dev.close();
});

Deno.test("memory: a new table replaces the old one and ring addresses are re-translated", async () => {
  const rec = recordingDriver();
  const { dev } = await configured(rec);
  const before = dev.memory;
  await setMemory(dev, 8 * MiB);
  assert.notEqual(dev.memory, before);
  assert.equal(dev.memory.regions.length, 1);
  assert.equal(dev.memory.regions[0].size, 8 * MiB);
  assert.equal(dev.vring(0).descAddr, GPA);
  assert.equal(dev.vring(0).ready, true);
  await dev.close();
});

Deno.test("no fd leaks across 50 configure/reset cycles", async () => {
  const rec = recordingDriver();
  const dev = await newDevice(rec);
  let before = 0;
  for (let i = 0; i < 51; i++) {
    // The first cycle starts the runtime's Worker machinery (threads and their
    // fds live for the process); count from the second.
    if (i === 1) before = await settledFdCount();
    await dev.ioctl(VhostIoctl.SET_FEATURES, NET_FEATURES);
    await setMemory(dev);
    await setRing(dev, 0);
    await setRing(dev, 1);
    await dev.setVringEnable(0, true);
    await dev.reset();
  }
  assert.equal(await settledFdCount(), before);
  await dev.close();
});

Deno.test("memory: an identical ADD_MEM_REG is counted, not refused (QEMU, one per queue pair)", async () => {
  const rec = recordingDriver();
  const dev = await newDevice(rec);
  const fd = memfdCreate("guest", { allowSealing: true });
  ftruncate(fd, MiB);
  try {
    const region = { gpa: GPA, size: MiB, uva: UVA, mmapOffset: 0, fd };
    await dev.addMemoryRegion(region);
    await dev.addMemoryRegion(region);
    assert.equal(dev.memory.regions.length, 1);
    await dev.removeMemoryRegion(GPA, MiB);
    assert.equal(dev.memory.regions.length, 1, "still referenced once");
    await dev.removeMemoryRegion(GPA, MiB);
    assert.equal(dev.memory.regions.length, 0);
  } finally {
    close(fd);
    await dev.close();
  }
});
