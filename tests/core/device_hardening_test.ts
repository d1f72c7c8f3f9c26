// The device core against a hostile frontend, without sockets: kick, call and
// error fds must be eventfds and are made non-blocking; a saturated call fd is
// an interrupt already pending, not a failure; the memory-slot limit; a ring
// parked by GET_VRING_BASE restarts on its kick without protocol features;
// reconfiguring a running ring restarts it; and a driver's reportError reaches
// the status, the error fd, the events and the counter.

import assert from "node:assert/strict";
import {
  type DeviceEvent,
  RequestRefused,
  VhostIoctl,
  VhostMdevDevice,
  VirtioStatus,
} from "@vhost-mdev/sdk";
import { MAX_MEM_SLOTS } from "@vhost-mdev/sdk/vhost-user";
import {
  close,
  eventfd,
  eventfdIsSemaphore,
  eventfdRead,
  eventfdWrite,
  F_GETFL,
  fcntl,
  ftruncate,
  memfdCreate,
  O_CLOEXEC,
  O_NONBLOCK,
  O_PATH,
  O_RDONLY,
  open,
  socketPair,
} from "@vhost-mdev/sdk/sys";
import { NET_FEATURES, type Recorder, recordingDriver } from "../support/recording_driver.ts";
import { settledFdCount } from "../support/peers.ts";
import { MiB, setMemory, setRing, UVA } from "./setup.ts";

async function device(rec: Recorder, events: DeviceEvent[] = []): Promise<VhostMdevDevice> {
  return await VhostMdevDevice.create(rec.driver, { queues: 1, options: {} }, {
    listener: (e) => events.push(e),
  });
}

/** A device with both rings of a pair set up and enabled, running. */
async function running(rec: Recorder): Promise<VhostMdevDevice> {
  const dev = await device(rec);
  await dev.ioctl(VhostIoctl.SET_FEATURES, NET_FEATURES);
  await setMemory(dev);
  for (const q of [0, 1]) {
    await setRing(dev, q);
    await dev.setVringEnable(q, true); // also what the session does on a kick without the feature
  }
  return dev;
}

/** Fds that are not eventfds, as a hostile frontend would send them. */
function notEventfds(): { what: string; fd: number }[] {
  const [a, b] = socketPair();
  close(b);
  const memfd = memfdCreate("not-an-eventfd");
  return [
    { what: "socket", fd: a },
    { what: "memfd", fd: memfd },
    { what: "/dev/zero", fd: open("/dev/zero", O_RDONLY | O_CLOEXEC) },
    { what: "O_PATH", fd: open("/", O_PATH | O_CLOEXEC) },
  ];
}

Deno.test("kick, call and error fds that are not eventfds are refused and closed", async () => {
  const rec = recordingDriver();
  const dev = await device(rec);
  const baseline = await settledFdCount();
  for (
    const req of [VhostIoctl.SET_VRING_KICK, VhostIoctl.SET_VRING_CALL, VhostIoctl.SET_VRING_ERR]
  ) {
    for (const { what, fd } of notEventfds()) {
      await assert.rejects(
        dev.ioctl(req, { index: 0, fd }),
        (e: Error) => e instanceof RequestRefused && /not an eventfd/.test(e.message),
        what,
      );
    }
  }
  // Out of range: refused, and the fd closed too.
  await assert.rejects(dev.ioctl(VhostIoctl.SET_VRING_CALL, { index: 9, fd: eventfd() }));
  assert.equal(await settledFdCount(), baseline, "every refused fd was closed");
  await dev.close();
});

Deno.test("a semaphore-mode eventfd is refused as a kick fd (each read would be one kick)", async () => {
  const rec = recordingDriver();
  const dev = await device(rec);
  const sem = eventfd(0, { semaphore: true });
  // Linux 6.3 and later say it in fdinfo; older kernels accept such fds (docs/security.md).
  if (eventfdIsSemaphore(sem) === null && Deno.env.get("CI") !== "true") {
    close(sem);
    console.log("skipping: this kernel's fdinfo does not show eventfd-semaphore");
    await dev.close();
    return;
  }
  await assert.rejects(
    dev.ioctl(VhostIoctl.SET_VRING_KICK, { index: 0, fd: sem }),
    (e: Error) => e instanceof RequestRefused && /semaphore-mode eventfd/.test(e.message),
  );
  // As a call fd it is only written: that is fine.
  await dev.ioctl(VhostIoctl.SET_VRING_CALL, { index: 0, fd: eventfd(0, { semaphore: true }) });
  await dev.close();
});

Deno.test("accepted kick, call and error fds are made non-blocking", async () => {
  const rec = recordingDriver();
  const dev = await device(rec);
  const fds = [eventfd(0), eventfd(0), eventfd(0)]; // blocking, as a hostile frontend sends them
  // The open file description is shared: the frontend's copy turns non-blocking too.
  const mine = fds.map((fd) => fcntl(fd, 1030, /* F_DUPFD_CLOEXEC */ 0));
  await dev.ioctl(VhostIoctl.SET_VRING_KICK, { index: 0, fd: fds[0] });
  await dev.ioctl(VhostIoctl.SET_VRING_CALL, { index: 0, fd: fds[1] });
  await dev.ioctl(VhostIoctl.SET_VRING_ERR, { index: 0, fd: fds[2] });
  for (const fd of mine) {
    assert.equal(fcntl(fd, F_GETFL) & O_NONBLOCK, O_NONBLOCK);
    close(fd);
  }
  await dev.close();
});

Deno.test("a saturated call fd is an interrupt already pending, not a failure", async () => {
  const rec = recordingDriver();
  const events: DeviceEvent[] = [];
  const dev = await device(rec, events);
  const call = eventfd(0);
  const mine = fcntl(call, 1030, 0);
  eventfdWrite(mine, Number.MAX_SAFE_INTEGER); // the counter holds at most 2^64 - 2
  eventfdWrite(mine, 0xffff_fffe - 1);
  await dev.ioctl(VhostIoctl.SET_VRING_CALL, { index: 0, fd: call });
  const ctx = rec.ctx();
  for (let i = 0; i < 100; i++) ctx.signal(0); // would block forever on a blocking fd
  assert.equal(dev.errors, 0);
  assert.equal(events.filter((e) => e.type === "error").length, 0);
  assert.ok(eventfdRead(mine) > 0);
  close(mine);
  await dev.close();
});

Deno.test("ADD_MEM_REG: 32 slots, then refused; a repeat is counted, not mapped", async () => {
  const rec = recordingDriver();
  const dev = await device(rec);
  const fd = memfdCreate("slots", { allowSealing: true });
  ftruncate(fd, (MAX_MEM_SLOTS + 1) * 64 * 1024);
  try {
    const region = (i: number) => ({
      gpa: i * 65536,
      size: 65536,
      uva: UVA + i * 65536,
      mmapOffset: i * 65536,
      fd,
    });
    for (let i = 0; i < MAX_MEM_SLOTS; i++) await dev.addMemoryRegion(region(i));
    await dev.addMemoryRegion(region(0)); // QEMU repeats regions per queue pair
    assert.equal(dev.memory.regions.length, MAX_MEM_SLOTS);
    await assert.rejects(
      dev.addMemoryRegion(region(MAX_MEM_SLOTS)),
      (e: Error) => e instanceof RequestRefused && /all 32 memory slots are in use/.test(e.message),
    );
    // The repeat holds a reference: one removal keeps it, the second removes it.
    await dev.removeMemoryRegion(0, 65536);
    assert.equal(dev.memory.regions.length, MAX_MEM_SLOTS);
    await dev.removeMemoryRegion(0, 65536);
    assert.equal(dev.memory.regions.length, MAX_MEM_SLOTS - 1);
  } finally {
    close(fd);
    await dev.close();
  }
});

Deno.test("without protocol features a ring parked by GET_VRING_BASE restarts on its kick", async () => {
  const rec = recordingDriver();
  const dev = await running(rec);
  const starts = rec.count("start");
  assert.equal(dev.running, true);
  await dev.ioctl(VhostIoctl.GET_VRING_BASE, { index: 0 });
  await dev.ioctl(VhostIoctl.GET_VRING_BASE, { index: 1 });
  assert.equal(dev.running, false);
  for (const q of [0, 1]) {
    await setRing(dev, q);
    await dev.setVringEnable(q, true);
  }
  assert.equal(dev.running, true, "the kick of a set-up ring starts it again");
  assert.ok(rec.count("start") > starts);
  await dev.close();
});

Deno.test("SET_VRING_NUM/BASE on a running ring restart it; a size the addresses do not fit parks it", async () => {
  const rec = recordingDriver();
  const dev = await running(rec);
  const starts = rec.count("start");
  await dev.ioctl(VhostIoctl.SET_VRING_BASE, { index: 0, num: 7 });
  assert.equal(dev.running, true, "restarted after the base changed");
  assert.equal(rec.count("start"), starts + 1);
  assert.equal(rec.count("stop"), starts);
  await dev.ioctl(VhostIoctl.SET_VRING_NUM, { index: 1, num: 128 });
  assert.equal(dev.running, true, "restarted after the size changed");
  assert.equal(rec.count("start"), starts + 2);
  // Ring 0's used ring sits 0x8000 bytes in; 1024 entries would run into ring 1's
  // area but still inside memory; at the end of memory it would not fit.
  await dev.ioctl(VhostIoctl.SET_VRING_ADDR, {
    index: 1,
    flags: 0,
    desc: UVA + 4 * MiB - 0x4000,
    avail: UVA + 4 * MiB - 0x2000,
    used: UVA + 4 * MiB - 0x1000,
    log: 0,
  });
  assert.equal(dev.running, true);
  await dev.ioctl(VhostIoctl.SET_VRING_NUM, { index: 1, num: 1024 });
  assert.equal(dev.vring(1).ready, false, "the addresses do not fit 1024 entries");
  assert.equal(dev.running, false);
  await dev.close();
});

Deno.test("reportError: NEEDS_RESET, the ring's error fd, an event, a counter", async () => {
  const rec = recordingDriver();
  const events: DeviceEvent[] = [];
  const dev = await device(rec, events);
  const err = eventfd(0, { nonBlocking: true });
  const mine = fcntl(err, 1030, 0);
  await dev.ioctl(VhostIoctl.SET_VRING_ERR, { index: 1, fd: err });
  await dev.setStatus(VirtioStatus.ACKNOWLEDGE | VirtioStatus.DRIVER);
  rec.ctx().reportError("the datapath of ring 1 died", 1);
  assert.equal(dev.status & VirtioStatus.NEEDS_RESET, VirtioStatus.NEEDS_RESET);
  assert.equal(rec.ctx().status & VirtioStatus.NEEDS_RESET, VirtioStatus.NEEDS_RESET);
  assert.equal(eventfdRead(mine), 1, "the frontend's error fd was written");
  assert.equal(dev.errors, 1);
  const e = events.find((e) => e.type === "error")!;
  assert.match(e.message, /the datapath of ring 1 died/);
  assert.equal(e.fields?.queue, 1);
  rec.ctx().reportError("again");
  assert.equal(dev.errors, 2);
  // A reset of the status by the frontend clears it, as virtio's reset does.
  await dev.setStatus(0);
  assert.equal(dev.status, 0);
  close(mine);
  await dev.close();
});
