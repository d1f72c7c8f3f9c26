// The ifcvf driver on the emulated IFC VF, in process, under the test kit's
// DriverHarness: the SDK's device core configured as a frontend does, guest
// memory in a memfd, rings written by a TypeScript virtio driver. Frames go
// out on TX and come back on RX through the device's DMA, interrupts arrive
// on the call eventfds through MSI-X, and stop/start resumes at the ring
// state saved in the live-migration BAR.

import { waitInterrupt } from "./interrupt.ts";
import assert from "node:assert/strict";
import {
  bit,
  type GuestMemory,
  type SplitQueueDriver,
  VHOST_F_LOG_ALL,
  VhostIoctl,
  VhostMdevDevice,
  VIRTIO_NET_HDR_SIZE,
  VirtioFeatureBit,
  VirtioNetFeatureBit,
  VirtioStatus,
} from "@vhost-mdev/sdk";
import { readNumBuffers } from "@vhost-mdev/sdk/net";
import { close, eventfdWrite, ftruncate, memfdCreate, mmap } from "@vhost-mdev/sdk/sys";
import { DriverHarness, until } from "@vhost-mdev/testing";
import { EmulatedIfcvf, type EmulatedIfcvfOptions } from "@vhost-mdev/ifcvf/emulated";
import { IFCVF_LOG_IOVA, makeIfcvfDriver } from "@vhost-mdev/ifcvf";
import type { PciFunction } from "@vhost-mdev/sdk/pci";

const MiB = 1 << 20;
const GPA = 0x4000_0000;
const MEMORY = 4 * MiB;
const RING = 64;
const BUF = 2048;
/** Buffers per direction (slots of `BUF` bytes). */
const SLOTS = 16;
const HDR = VIRTIO_NET_HDR_SIZE;
/** What the guest acks, of what the device offers. */
const FEATURES = bit(VirtioFeatureBit.VERSION_1) | bit(VirtioNetFeatureBit.MRG_RXBUF) |
  bit(VirtioFeatureBit.EVENT_IDX) | bit(VirtioNetFeatureBit.MAC);

/** The emulated VF under the harness, and the guest side of pair 0. */
interface Guest {
  harness: DriverHarness;
  device: VhostMdevDevice;
  emu: EmulatedIfcvf;
  memory: GuestMemory;
  rx: SplitQueueDriver;
  tx: SplitQueueDriver;
  /** The guest's ends of rings 0 (RX) and 1 (TX)'s kick eventfds. */
  kick: number[];
  /** The guest's ends of rings 0 and 1's call eventfds. */
  call: number[];
  features: bigint;
  /** Guest-physical address of the RX buffers (`SLOTS` of `BUF` bytes). */
  rxBufs: number;
  /** Guest-physical address of the TX buffers. */
  txBufs: number;
}

function driverFor(emu: EmulatedIfcvf) {
  return makeIfcvfDriver(() => ({
    fn: emu.function,
    dma: emu.dma,
    description: "the test's emulated IFC VF",
    stats: () => emu.stats(),
    close: () => emu.function.close(),
  }));
}

/**
 * Create the device and bring both rings of pair 0 up the way a frontend
 * does (with `pairs` > 1, every pair's rings).
 */
async function bringUp(
  emuOptions: EmulatedIfcvfOptions = {},
  probeOptions: Record<string, string> = {},
  pairs = 1,
): Promise<Guest> {
  const emu = new EmulatedIfcvf({ queuePairs: pairs, ...emuOptions });
  const harness = await DriverHarness.create(
    driverFor(emu),
    { queues: pairs, pci: "emulated", options: probeOptions },
    {
      memoryBytes: MEMORY,
      gpa: GPA,
      ringSize: RING,
      features: FEATURES,
      device: Deno.env.get("IFCVF_TEST_DEBUG")
        ? { listener: (e) => console.log(e.type, e.message) }
        : {},
    },
  );
  const g: Guest = {
    harness,
    device: harness.device,
    emu,
    memory: harness.memory,
    rx: harness.ring(0).driver,
    tx: harness.ring(1).driver,
    kick: [harness.ring(0).kick, harness.ring(1).kick],
    call: [harness.ring(0).call, harness.ring(1).call],
    features: harness.features,
    rxBufs: harness.alloc(SLOTS * BUF),
    txBufs: harness.alloc(SLOTS * BUF),
  };
  for (let i = 0; i < SLOTS; i++) {
    g.rx.add([{ gpa: g.rxBufs + i * BUF, len: BUF, write: true }], i);
  }
  g.rx.publish();
  if (pairs === 1) await configureRings(g, [0, 0]);
  else await harness.start();
  return g;
}

/**
 * Configure the device and enable rings 0 (RX) and 1 (TX), starting at
 * available index `bases[q]`, as a frontend (re)starting it does.
 */
async function configureRings(g: Guest, bases: number[]): Promise<void> {
  await g.harness.start([0, 1], { bases });
}

/** The call eventfd the device was given for ring `q` (what its driver wires). */
function deviceCall(g: Guest, q: number): number {
  return g.harness.deviceFds(q).call;
}

async function tearDown(g: Guest): Promise<void> {
  await g.harness.close();
}

function frame(seed: number, length = 60 + seed * 7): Uint8Array {
  const f = new Uint8Array(length);
  for (let i = 0; i < length; i++) f[i] = (i * 31 + seed * 17) & 0xff;
  f.set([0x02, 0, 0, 0, 0, seed], 0); // destination MAC
  return f;
}

/** Put `f` on TX behind a zero virtio-net header and kick. */
function transmit(g: Guest, f: Uint8Array, slot: number): void {
  const gpa = g.txBufs + slot * BUF;
  const bytes = g.memory.bytes(gpa, HDR + f.length);
  bytes.fill(0, 0, HDR);
  bytes.set(f, HDR);
  assert.ok(g.tx.add([{ gpa, len: HDR + f.length, write: false }], slot));
  g.tx.publish();
  eventfdWrite(g.kick[1], 1);
}

/** Wait for the call eventfd of ring `q`; returns its count. */
function waitCall(g: Guest, q: number, ms = 3000): Promise<number> {
  return waitInterrupt(
    g.call[q],
    `ring ${q}`,
    () =>
      `device errors ${JSON.stringify(g.emu.errors)}, stats ${
        JSON.stringify(g.emu.stats())
      }, bad accesses ${JSON.stringify(g.emu.badAccesses)}`,
    ms,
  );
}

/** Receive one frame from RX (waiting for its interrupt); returns the frame and num_buffers. */
async function receive(g: Guest): Promise<{ frame: Uint8Array; numBuffers: number }> {
  let used = g.rx.takeUsed();
  // Ask for an interrupt (EVENT_IDX: used_event), then sleep on the call
  // fd; an interrupt may be spurious (virtio allows it): look again after each.
  for (let tries = 0; !used && tries < 10; tries++) {
    if (!g.rx.enableInterrupts()) await waitCall(g, 0);
    used = g.rx.takeUsed();
  }
  assert.ok(used, "a used RX buffer after the interrupt");
  const bytes = g.memory.bytes(g.rxBufs + used.token * BUF, used.len).slice();
  // Give the buffer back to the device for the next frame.
  g.rx.add([{ gpa: g.rxBufs + used.token * BUF, len: BUF, write: true }], used.token);
  g.rx.publish();
  return { frame: bytes.subarray(HDR), numBuffers: readNumBuffers(bytes, 0) };
}

/** Wait until `count` TX buffers came back, sleeping on ring 1's interrupts; returns the interrupts seen. */
async function reclaimTxAll(g: Guest, count: number): Promise<number> {
  let done = 0, calls = 0;
  for (let tries = 0; tries < 20; tries++) {
    while (g.tx.takeUsed()) done++;
    if (done >= count) return calls;
    if (!g.tx.enableInterrupts()) calls += await waitCall(g, 1);
  }
  throw new Error(`only ${done} of ${count} TX buffers came back`);
}

/** Reclaim every TX buffer the device returned; returns how many. */
function reclaimTx(g: Guest): number {
  let n = 0;
  while (g.tx.takeUsed()) n++;
  return n;
}

Deno.test("ifcvf on the emulated IFC VF: frames loop back byte-identical, MSI-X reaches the call fds", async () => {
  const g = await bringUp();
  try {
    assert.ok(g.device.running, "the device runs once both rings are enabled and DRIVER_OK is set");
    assert.equal(g.emu.status & VirtioStatus.DRIVER_OK, VirtioStatus.DRIVER_OK);
    assert.ok(g.emu.running(0) && g.emu.running(1));
    // Guest memory is mapped for DMA at IOVA = GPA.
    assert.deepEqual(g.emu.dma.mappings().map((m) => [m.iova, m.size]), [[GPA, MEMORY]]);
    // Vector per queue: vector q+1 is wired straight to ring q's call fd.
    assert.equal(g.emu.function.wiredEventfd(1), deviceCall(g, 0));
    assert.equal(g.emu.function.wiredEventfd(2), deviceCall(g, 1));
    eventfdWrite(g.kick[0], 1); // RX buffers are posted

    for (let i = 0; i < 5; i++) {
      const sent = frame(i);
      transmit(g, sent, i);
      const got = await receive(g);
      assert.deepEqual(got.frame, sent, `frame ${i} comes back byte-identical`);
      assert.equal(got.numBuffers, 1);
    }
    assert.ok(await waitCall(g, 1) >= 1, "TX completions interrupt on ring 1's call fd");
    assert.equal(reclaimTx(g), 5);
    const stats = g.device.stats();
    assert.equal(stats[1].packets, 5);
    assert.equal(stats[0].packets, 5);
    assert.equal(stats[0].bytes, [0, 1, 2, 3, 4].reduce((s, i) => s + frame(i).length, 0));
    assert.deepEqual(g.emu.badAccesses, [], "every register access had the register's width");
    assert.deepEqual(g.emu.errors, []);
    assert.ok(g.emu.function.delivered[1] >= 5 && g.emu.function.delivered[2] >= 1);
  } finally {
    await tearDown(g);
  }
});

Deno.test("ifcvf: stop saves ring state from the LM BAR, start resumes there", async () => {
  const g = await bringUp();
  try {
    eventfdWrite(g.kick[0], 1);
    for (let i = 0; i < 3; i++) {
      transmit(g, frame(i), i);
      await receive(g);
    }
    await waitCall(g, 1);
    assert.equal(reclaimTx(g), 3);

    // The frontend stops the rings as DPDK does (disable, then GET_VRING_BASE):
    // the bases come from the LM BAR's ring state.
    await g.device.setVringEnable(0, false);
    await g.device.setVringEnable(1, false);
    const tx = await g.device.ioctl(VhostIoctl.GET_VRING_BASE, { index: 1 });
    const rx = await g.device.ioctl(VhostIoctl.GET_VRING_BASE, { index: 0 });
    assert.equal(g.device.running, false);
    assert.equal(tx.num, 3);
    assert.equal(rx.num, 3);
    assert.deepEqual(g.emu.ringState(1), { lastAvail: 3, lastUsed: 3 });
    assert.deepEqual(g.emu.ringState(0), { lastAvail: 3, lastUsed: 3 });
    assert.equal(g.emu.status, 0, "the device was reset");
    assert.deepEqual(g.emu.dma.mappings(), [], "DMA unmapped");
    assert.equal(g.emu.function.wiredEventfd(1), -1, "MSI-X unwired");

    // Scribble over the stopped device's ring state, so that the resumed
    // state can only come from the driver writing the bases back.
    const lm = g.emu.function.mapBar(4);
    lm.write32(0x20, 0x0007_0007);
    lm.write32(0x24, 0x0009_0009);
    assert.deepEqual(g.emu.ringState(1), { lastAvail: 9, lastUsed: 9 });

    // Resume at the saved bases; the driver writes them to the LM BAR.
    await configureRings(g, [rx.num, tx.num]);
    assert.ok(g.device.running);
    assert.deepEqual(g.emu.ringState(1), { lastAvail: 3, lastUsed: 3 });
    eventfdWrite(g.kick[0], 1);
    const sent = frame(9, 1514);
    transmit(g, sent, 3);
    const got = await receive(g);
    assert.deepEqual(got.frame, sent);
    await reclaimTxAll(g, 1);
    assert.deepEqual(g.emu.ringState(1), { lastAvail: 4, lastUsed: 4 });
    assert.deepEqual(g.emu.errors, []);
    assert.deepEqual(g.emu.badAccesses, []);
  } finally {
    await tearDown(g);
  }
});

Deno.test("ifcvf: a device outside the ID table is refused unless generic mode is asked for", async () => {
  const plain = { subsystemVendor: 0x1af4, subsystemDevice: 0x0001, liveMigrationBar: false };
  const emu = new EmulatedIfcvf(plain);
  await assert.rejects(
    VhostMdevDevice.create(driverFor(emu), { queues: 1, pci: "emulated", options: {} }),
    (e: Error) => {
      assert.match(e.message, /1af4:1041 \(subsystem 1af4:0001\), not an IFC VF/);
      assert.match(e.message, /--generic true/);
      assert.match(e.message, /8086:001a \(IFC VF N3000 net\)/);
      return true;
    },
  );

  // Generic mode: no LM BAR, so the ring base falls back to used.idx.
  const g = await bringUp(plain, { generic: "true" });
  try {
    eventfdWrite(g.kick[0], 1);
    for (let i = 0; i < 2; i++) {
      transmit(g, frame(i), i);
      assert.deepEqual((await receive(g)).frame, frame(i));
    }
    await reclaimTxAll(g, 2);
    const tx = await g.device.ioctl(VhostIoctl.GET_VRING_BASE, { index: 1 });
    const rx = await g.device.ioctl(VhostIoctl.GET_VRING_BASE, { index: 0 });
    assert.deepEqual([tx.num, rx.num], [2, 2]);
  } finally {
    await tearDown(g);
  }
});

Deno.test("ifcvf: with two MSI-X vectors the queues share one, fanned out to every call fd", async () => {
  const g = await bringUp({ msixVectors: 2 });
  try {
    // Vector 0 config, vector 1 shared: both are the driver's own eventfds.
    assert.notEqual(g.emu.function.wiredEventfd(1), deviceCall(g, 0));
    assert.notEqual(g.emu.function.wiredEventfd(1), deviceCall(g, 1));
    assert.notEqual(g.emu.function.wiredEventfd(1), -1);
    eventfdWrite(g.kick[0], 1);
    const sent = frame(3);
    transmit(g, sent, 0);
    assert.deepEqual((await receive(g)).frame, sent);
    assert.ok(await waitCall(g, 1) >= 1);
  } finally {
    await tearDown(g);
  }
});

Deno.test("ifcvf: doorbell areas for host notifiers only when a page holds one queue's doorbell", async () => {
  for (const [multiplier, expectMapped] of [[4, false], [4096, true]] as const) {
    const emu = new EmulatedIfcvf({ notifyOffMultiplier: multiplier });
    const memfd = memfdCreate("bar", { allowSealing: true });
    // A function whose BARs are "backed" by a file, as a VFIO device's are.
    const e = emu.function;
    const fn: PciFunction = {
      address: e.address,
      config: e.config,
      fd: memfd,
      canReset: true,
      region: (i) => ({ ...e.region(i), mappable: true }),
      mapBar: (bar) => e.mapBar(bar),
      irqInfo: (i) => e.irqInfo(i),
      setIrqEventfds: (i, start, fds) => e.setIrqEventfds(i, start, fds),
      disableIrqs: (i) => e.disableIrqs(i),
      reset: () => e.reset(),
      close: () => e.close(),
    };
    const driver = makeIfcvfDriver(() => ({
      fn,
      dma: emu.dma,
      description: "emulated",
      close: () => emu.function.close(),
    }));
    const device = await VhostMdevDevice.create(driver, {
      queues: 1,
      pci: "emulated",
      options: {},
    });
    try {
      const ops = device.description.ops;
      const areas = [0, 1].map((q) => ops.getNotifyAddr!(q));
      if (!expectMapped) {
        assert.deepEqual(areas, [null, null]);
      } else {
        const base = fn.region(0).offset + 0x3000;
        assert.deepEqual(areas, [
          { fd: memfd, offset: base, size: 4096 },
          { fd: memfd, offset: base + 4096, size: 4096 },
        ]);
      }
    } finally {
      await device.close();
      close(memfd);
    }
  }
});

Deno.test("ifcvf: a TX chain outside the DMA mappings is an error the device survives", async () => {
  const g = await bringUp();
  try {
    eventfdWrite(g.kick[0], 1);
    // A buffer beyond guest memory: the device cannot reach it (IOMMU fault).
    assert.ok(g.tx.add([{ gpa: GPA + 8 * MiB, len: 100, write: false }], 7));
    g.tx.publish();
    const sent = frame(5);
    transmit(g, sent, 0);
    assert.deepEqual((await receive(g)).frame, sent, "the good frame after it still arrives");
    await reclaimTxAll(g, 2);
    assert.equal(g.device.stats()[1].errors, 1);
    assert.equal(g.device.stats()[1].packets, 1);
    assert.deepEqual(g.emu.errors, [], "a bad chain does not stop the device");
    assert.ok(g.device.running);
  } finally {
    await tearDown(g);
  }
});

Deno.test("ifcvf: a region added and removed while running is mapped and unmapped for DMA, no stop", async () => {
  const g = await bringUp();
  const events: string[] = [];
  const off = g.device.addListener((e) => events.push(e.type));
  const fd = memfdCreate("hotplug", { allowSealing: true });
  const HOT = GPA + 0x1000_0000;
  try {
    ftruncate(fd, 2 * MiB);
    eventfdWrite(g.kick[0], 1);
    transmit(g, frame(1), 0);
    assert.deepEqual((await receive(g)).frame, frame(1));

    await g.device.addMemoryRegion({
      gpa: HOT,
      size: 2 * MiB,
      uva: HOT + 0x10_0000_0000,
      mmapOffset: 0,
      fd,
    });
    assert.deepEqual(
      g.emu.dma.mappings().map((m) => [m.iova, m.size]),
      [[GPA, MEMORY], [HOT, 2 * MiB]],
      "the new region is mapped for DMA at IOVA = GPA",
    );
    assert.equal(g.device.running, true);
    // Traffic goes on through the change.
    transmit(g, frame(2), 1);
    assert.deepEqual((await receive(g)).frame, frame(2));

    await g.device.removeMemoryRegion(HOT, 2 * MiB);
    assert.deepEqual(g.emu.dma.mappings().map((m) => [m.iova, m.size]), [[GPA, MEMORY]]);
    transmit(g, frame(3), 2);
    assert.deepEqual((await receive(g)).frame, frame(3));
    assert.deepEqual(
      events.filter((t) => t === "start" || t === "stop"),
      [],
      "no whole-device stop",
    );
    assert.equal(events.filter((t) => t === "memory").length, 2);
    assert.deepEqual(g.emu.errors, []);
  } finally {
    off();
    close(fd);
    await tearDown(g);
  }
});

Deno.test("ifcvf with RING_RESET: one queue pair stops and starts alone, no function reset, pair 0 carries on", async () => {
  const g = await bringUp({ ringReset: true }, {}, 2);
  const events: string[] = [];
  const off = g.device.addListener((e) => events.push(`${e.type} ${e.message}`));
  try {
    const resets = g.emu.deviceResets;
    assert.ok([0, 1, 2, 3].every((q) => g.emu.running(q)));
    eventfdWrite(g.kick[0], 1);
    let n = 0;
    const roundTrip = async () => {
      const f = frame(n % 8);
      transmit(g, f, n % SLOTS);
      assert.deepEqual((await receive(g)).frame, f, `frame ${n} on pair 0`);
      reclaimTx(g);
      n++;
    };
    await roundTrip();
    // The frontend drops pair 1 (a guest going to one queue pair).
    await g.device.setVringEnable(2, false);
    await g.device.setVringEnable(3, false);
    assert.equal(g.emu.queueResets, 2);
    assert.ok(!g.emu.running(2) && !g.emu.running(3), "pair 1's queues are reset");
    assert.ok(g.emu.running(0) && g.emu.running(1), "pair 0 runs on");
    await roundTrip();
    // And takes it back: the queues are programmed and enabled again.
    await g.device.setVringEnable(2, true);
    await g.device.setVringEnable(3, true);
    assert.ok([0, 1, 2, 3].every((q) => g.emu.running(q)));
    await roundTrip();
    assert.equal(g.emu.deviceResets, resets, "no function reset for a ring change");
    assert.deepEqual(events.filter((e) => /^(start|stop) /.test(e)), []);
    assert.equal(events.filter((e) => e.startsWith("ring-stop")).length, 2);
    assert.equal(events.filter((e) => e.startsWith("ring-start")).length, 2);
    assert.deepEqual(g.emu.errors, []);
    assert.deepEqual(g.emu.badAccesses, []);
  } finally {
    off();
    await tearDown(g);
  }
});

Deno.test("ifcvf without RING_RESET: a ring change restarts the function, and the SDK says so", async () => {
  const g = await bringUp({}, {}, 2);
  const events: string[] = [];
  const off = g.device.addListener((e) => events.push(`${e.type} ${e.message}`));
  try {
    const before = g.emu.deviceResets;
    await g.device.setVringEnable(2, false);
    await g.device.setVringEnable(3, false);
    await until("pair 0 to run again", () => g.device.running, 2000);
    assert.ok(g.emu.deviceResets > before, "the whole function was reset");
    assert.ok(g.emu.running(0) && g.emu.running(1) && !g.emu.running(2));
    assert.ok(events.some((e) => e.startsWith("stop ")));
    await g.device.setVringEnable(2, true);
    assert.ok(events.some((e) => /no startRing\/stopRing, so the whole device restarts/.test(e)));
  } finally {
    off();
    await tearDown(g);
  }
});

/** A sealed memfd dirty log covering guest memory, and the frontend's view of it. */
function frontendLog(): { fd: number; size: number; bytes: Uint8Array; take(): Set<number> } {
  const size = Math.ceil((GPA + MEMORY) / 4096 / 8);
  const fd = memfdCreate("ifcvf-log", { allowSealing: true });
  ftruncate(fd, size);
  const bytes = new Uint8Array(mmap(fd, size).buffer);
  return {
    fd,
    size,
    bytes,
    take() {
      const pages = new Set<number>();
      for (let i = 0; i < bytes.length; i++) {
        const v = Atomics.exchange(bytes, i, 0);
        for (let k = 0; k < 8; k++) if (v & (1 << k)) pages.add(i * 8 + k);
      }
      return pages;
    },
  };
}

Deno.test("ifcvf: the IFC VF logs its own DMA writes through the LM BAR, exactly the pages it wrote", async () => {
  const g = await bringUp();
  const log = frontendLog();
  try {
    assert.ok(g.device.canLog, "an IFC VF with the LM BAR can log");
    const resets = g.emu.deviceResets;
    await g.device.setLogBase(log.fd, log.size, 0);
    await g.device.setFeatures(g.features | bit(VHOST_F_LOG_ALL));
    assert.ok(g.device.running);
    assert.equal(g.emu.deviceResets, resets, "turning logging on reset the function");
    const logMapping = g.emu.dma.mappings().find((m) => m.iova === IFCVF_LOG_IOVA);
    assert.ok(logMapping, "the log is mapped for the VF's DMA at IFCVF_LOG_IOVA");
    log.take();

    eventfdWrite(g.kick[0], 1);
    for (let i = 0; i < 5; i++) {
      transmit(g, frame(i), i);
      assert.deepEqual((await receive(g)).frame, frame(i));
    }
    await reclaimTxAll(g, 5);
    // Receive slots 0..4 were written (the device uses buffers in order).
    const written = new Set<number>();
    for (let slot = 0; slot < 5; slot++) {
      const gpa = g.rxBufs + slot * BUF;
      for (let p = Math.floor(gpa / 4096); p <= Math.floor((gpa + BUF - 1) / 4096); p++) {
        written.add(p);
      }
    }
    const marked = log.take();
    assert.deepEqual([...marked].sort(), [...written].sort(), "logged pages = pages written");
    assert.ok(g.emu.loggedPages >= 5);

    // Rings stopped while logging: the SDK marks their whole used rings.
    await g.harness.logRing(0, true);
    await g.device.ioctl(VhostIoctl.GET_VRING_BASE, { index: 0 });
    const usedAddr = g.harness.ring(0).layout.usedAddr;
    assert.ok(log.take().has(Math.floor(usedAddr / 4096)), "used ring of a stopped ring logged");

    // Logging off: the log is unmapped from the VF and nothing more is marked.
    await g.device.setFeatures(g.features);
    assert.equal(g.emu.dma.mappings().find((m) => m.iova === IFCVF_LOG_IOVA), undefined);
    assert.deepEqual(g.emu.errors, []);
    assert.deepEqual(g.emu.badAccesses, []);
  } finally {
    await tearDown(g);
    close(log.fd);
  }
});

Deno.test("ifcvf: a device without the LM BAR (generic mode) cannot log, so LOG_ALL is not offered", async () => {
  const plain = { subsystemVendor: 0x1af4, subsystemDevice: 0x0001, liveMigrationBar: false };
  const g = await bringUp(plain, { generic: "true" });
  try {
    assert.equal(g.device.canLog, false);
    assert.equal(g.device.getFeatures() & bit(VHOST_F_LOG_ALL), 0n);
    await assert.rejects(g.device.setFeatures(g.features | bit(VHOST_F_LOG_ALL)), /not offered/);
  } finally {
    await tearDown(g);
  }
});
