// Driver <-> device round trips over one guest memory: direct, chained and
// indirect chains, copies in both directions, batching, index wrap-around,
// and the same over a real memfd mapped twice.

import assert from "node:assert/strict";
import { DirtyLog, GuestMemory } from "../../sdk/memory/mod.ts";
import { close, ftruncate, memfdCreate, openFdCount } from "../../sdk/sys/mod.ts";
import { DescriptorChain, vringNeedEvent } from "../../sdk/virtqueue/mod.ts";
import { BASE, DATA, fill, rig, SIZE } from "./rig.ts";

Deno.test("vringNeedEvent follows the spec formula across the 16-bit wrap", () => {
  assert.equal(vringNeedEvent(5, 6, 5), true);
  assert.equal(vringNeedEvent(5, 5, 4), false, "event 5 not passed yet");
  assert.equal(vringNeedEvent(3, 10, 5), false, "event already passed before old");
  assert.equal(vringNeedEvent(65535, 0, 65535), true);
  assert.equal(vringNeedEvent(65535, 1, 65534), true);
  assert.equal(vringNeedEvent(0, 0, 65535), false);
  assert.equal(vringNeedEvent(0, 1, 65535), true);
});

Deno.test("direct single buffer: device reads what the driver wrote", () => {
  const { memory, driver, device, chain } = rig();
  const data = fill(memory, DATA, 100, 1);
  assert.equal(device.pop(chain), false, "empty queue");
  assert.ok(driver.add([{ gpa: DATA, len: 100, write: false }], 42));
  assert.equal(device.pop(chain), false, "not published yet");
  driver.publish();
  assert.equal(device.available(), 1);
  assert.ok(device.pop(chain));
  assert.equal(chain.count, 1);
  assert.equal(chain.readable, 1);
  assert.equal(chain.readableBytes, 100);
  assert.equal(chain.writableBytes, 0);
  assert.equal(chain.indirect, false);
  const got = new Uint8Array(200);
  assert.equal(device.readChain(chain, got), 100);
  assert.deepEqual(got.subarray(0, 100), data);
  const part = new Uint8Array(10);
  assert.equal(device.readChain(chain, part, 95), 5, "offset into the readable bytes");
  assert.deepEqual(part.subarray(0, 5), data.subarray(95));
  device.pushUsed(chain.head, 0);
  assert.equal(driver.nextUsed(), false, "not published yet");
  device.publishUsed();
  assert.deepEqual(driver.takeUsed(), { token: 42, len: 0 });
  assert.equal(driver.takeUsed(), null);
  assert.equal(driver.freeCount(), 16);
  assert.equal(device.counters.chains, 1);
  assert.equal(device.counters.used, 1);
  assert.equal(device.counters.errors, 0);
});

Deno.test("chained: readable segments then writable, copies across segment edges", () => {
  const { memory, driver, device, chain } = rig();
  const h1 = fill(memory, DATA, 12, 2);
  const h2 = fill(memory, DATA + 0x100, 3, 3); // small: byte-wise copy path
  const h3 = fill(memory, DATA + 0x200, 700, 4);
  driver.add([
    { gpa: DATA, len: 12, write: false },
    { gpa: DATA + 0x100, len: 3, write: false },
    { gpa: DATA + 0x200, len: 700, write: false },
    { gpa: DATA + 0x1000, len: 10, write: true },
    { gpa: DATA + 0x2000, len: 2000, write: true },
  ], 7);
  assert.equal(driver.freeCount(), 11);
  driver.publish();
  assert.ok(device.pop(chain));
  assert.equal(chain.count, 5);
  assert.equal(chain.readable, 3);
  assert.equal(chain.writable, 2);
  assert.equal(chain.readableBytes, 715);
  assert.equal(chain.writableBytes, 2010);
  assert.equal(chain.descriptors, 5);
  const got = new Uint8Array(715);
  assert.equal(device.readChain(chain, got), 715);
  assert.deepEqual(got, new Uint8Array([...h1, ...h2, ...h3]));
  const short = new Uint8Array(14);
  assert.equal(device.readChain(chain, short, 1), 14);
  assert.deepEqual(short, new Uint8Array([...h1.subarray(1), ...h2.subarray(0, 3)]));

  const out = new Uint8Array(1500).map((_, i) => (i * 13) & 0xff);
  assert.equal(device.writeChain(chain, out), 1500);
  assert.deepEqual(memory.bytes(DATA + 0x1000, 10), out.subarray(0, 10));
  assert.deepEqual(memory.bytes(DATA + 0x2000, 1490), out.subarray(10));
  assert.equal(
    device.writeChain(chain, new Uint8Array([9, 9, 9]), 9),
    3,
    "offset into writable bytes",
  );
  assert.equal(memory.bytes(DATA + 0x1000, 10)[9], 9);
  assert.deepEqual(memory.bytes(DATA + 0x2000, 2), new Uint8Array([9, 9]));
  assert.equal(device.writeChain(chain, new Uint8Array(5000)), 2010, "truncated to the buffers");
  device.pushUsed(chain.head, 1500);
  device.publishUsed();
  assert.deepEqual(driver.takeUsed(), { token: 7, len: 1500 });
  assert.equal(driver.freeCount(), 16, "all five descriptors returned");
});

Deno.test("indirect: one descriptor holds the table, same bytes out", () => {
  const { memory, driver, device, chain } = rig({ indirect: true });
  const a = fill(memory, DATA, 64, 5);
  const b = fill(memory, DATA + 0x400, 1000, 6);
  driver.add([
    { gpa: DATA, len: 64, write: false },
    { gpa: DATA + 0x400, len: 1000, write: false },
    { gpa: DATA + 0x3000, len: 256, write: true },
  ], 3);
  assert.equal(driver.freeCount(), 15, "one ring descriptor for the whole chain");
  driver.publish();
  assert.ok(device.pop(chain));
  assert.equal(chain.indirect, true);
  assert.equal(chain.descriptors, 4);
  assert.equal(chain.readable, 2);
  assert.equal(chain.writableBytes, 256);
  const got = new Uint8Array(1064);
  assert.equal(device.readChain(chain, got), 1064);
  assert.deepEqual(got, new Uint8Array([...a, ...b]));
  device.writeChain(chain, new Uint8Array(256).fill(0x5a));
  assert.ok(memory.bytes(DATA + 0x3000, 256).every((x) => x === 0x5a));
  device.pushUsed(chain.head, 256);
  device.publishUsed();
  assert.deepEqual(driver.takeUsed(), { token: 3, len: 256 });
  assert.equal(driver.freeCount(), 16);
});

Deno.test("a buffer across two adjacent regions becomes two segments", () => {
  const memory = GuestMemory.fromBuffers([
    { gpa: BASE, bytes: new Uint8Array(SIZE) },
    { gpa: BASE + SIZE, bytes: new Uint8Array(0x1000) },
  ]);
  const { driver, device, chain } = rig({ memory });
  const at = BASE + SIZE - 0x10;
  memory.bytes(at, 0x10).fill(1);
  memory.bytes(BASE + SIZE, 0x10).fill(2);
  driver.add([{ gpa: at, len: 0x20, write: false }], 1);
  driver.publish();
  assert.ok(device.pop(chain));
  assert.equal(chain.count, 2);
  assert.deepEqual([...chain.regions.subarray(0, 2)], [0, 1]);
  assert.deepEqual([...chain.lengths.subarray(0, 2)], [0x10, 0x10]);
  const got = new Uint8Array(0x20);
  device.readChain(chain, got);
  assert.deepEqual(got, new Uint8Array([...new Array(16).fill(1), ...new Array(16).fill(2)]));
});

Deno.test("batching: many used elements, one used.idx store", () => {
  const { driver, device, chain } = rig({ num: 64 });
  for (let i = 0; i < 40; i++) assert.ok(driver.addBuffer(DATA + i * 64, 64, true, 1000 + i));
  driver.publish();
  assert.equal(device.available(), 40);
  const heads: number[] = [];
  while (device.pop(chain)) heads.push(chain.head);
  assert.equal(heads.length, 40);
  for (const h of heads) device.pushUsed(h, 64);
  assert.equal(driver.nextUsed(), false, "nothing visible before publishUsed");
  device.publishUsed();
  const tokens: number[] = [];
  while (driver.nextUsed()) {
    tokens.push(driver.usedToken);
    assert.equal(driver.usedLen, 64);
  }
  assert.deepEqual(tokens, Array.from({ length: 40 }, (_, i) => 1000 + i));
  assert.equal(device.lastAvailIdx, 40);
  assert.equal(device.usedIdx, 40);
});

Deno.test("indexes wrap from 65535 to 0 (ring full, drained, refilled)", () => {
  const num = 8;
  const { driver, device, chain } = rig({ num, startIdx: 65530 });
  let token = 0, seen = 0;
  for (let round = 0; round < 5; round++) {
    while (driver.addBuffer(DATA + (token % num) * 16, 16, false, token)) token++;
    assert.equal(driver.freeCount(), 0);
    driver.publish();
    assert.equal(device.available(), num);
    while (device.pop(chain)) device.pushUsed(chain.head, chain.readableBytes);
    device.publishUsed();
    while (driver.nextUsed()) {
      assert.equal(driver.usedToken, seen++);
      assert.equal(driver.usedLen, 16);
    }
  }
  assert.equal(seen, 5 * num);
  assert.equal(device.lastAvailIdx, (65530 + 40) & 0xffff);
  assert.equal(driver.availIdx, device.lastAvailIdx);
});

Deno.test("no EVENT_IDX: NO_INTERRUPT and NO_NOTIFY flags", () => {
  const { driver, device, chain } = rig();
  driver.addBuffer(DATA, 8, false, 1);
  driver.publish();
  assert.equal(driver.kickNeeded(), true);
  device.disableNotifications();
  driver.addBuffer(DATA, 8, false, 2);
  driver.publish();
  assert.equal(driver.kickNeeded(), false, "device asked for no kicks");
  assert.equal(driver.kickNeeded(), false, "nothing new published");
  assert.equal(device.pop(chain) && device.pop(chain), true);
  assert.equal(device.enableNotifications(), false, "nothing left");
  driver.addBuffer(DATA, 8, false, 3);
  driver.publish();
  assert.equal(device.enableNotifications(), true, "a buffer arrived");
  assert.equal(driver.kickNeeded(), true);

  device.pushUsed(0, 0);
  device.publishUsed();
  assert.equal(device.needsNotify(), true);
  driver.disableInterrupts();
  assert.equal(device.needsNotify(), false);
  assert.equal(driver.enableInterrupts(), true, "a used element is waiting");
  assert.equal(device.needsNotify(), true);
  assert.equal(device.counters.suppressed, 1);
  assert.equal(device.counters.notifications, 2);
});

for (const start of [0, 65533]) {
  Deno.test(`EVENT_IDX: interrupts follow used_event (start ${start}, across the wrap)`, () => {
    const { driver, device, chain } = rig({ eventIdx: true, startIdx: start });
    for (let i = 0; i < 7; i++) driver.addBuffer(DATA + i * 8, 8, true, i);
    driver.publish();
    const heads: number[] = [];
    while (device.pop(chain)) heads.push(chain.head);
    // The driver wants an interrupt at the first used element (used_event = start).
    device.pushUsed(heads[0], 0);
    device.publishUsed();
    assert.equal(device.needsNotify(), true, "first used element passes used_event");
    device.pushUsed(heads[1], 0);
    device.publishUsed();
    assert.equal(device.needsNotify(), false, "used_event already passed, driver did not re-arm");
    // Driver consumes both and re-arms for the next one.
    assert.ok(driver.nextUsed() && driver.nextUsed());
    assert.equal(driver.enableInterrupts(), false);
    device.pushUsed(heads[2], 0);
    device.pushUsed(heads[3], 0);
    device.publishUsed();
    assert.equal(device.needsNotify(), true, "re-armed: one interrupt for the batch");
    assert.equal(device.needsNotify(), false, "nothing new");
    // Driver asks for no interrupts; the device sees used_event behind it.
    assert.ok(driver.nextUsed() && driver.nextUsed());
    driver.disableInterrupts();
    device.pushUsed(heads[4], 0);
    device.publishUsed();
    assert.equal(device.needsNotify(), false);
    assert.equal(driver.enableInterrupts(), true, "used element waiting");
    device.pushUsed(heads[5], 0);
    device.publishUsed();
    assert.equal(device.needsNotify(), false, "driver re-armed for an index already published");
    assert.ok(driver.nextUsed() && driver.nextUsed());
    assert.equal(driver.enableInterrupts(), false);
    device.pushUsed(heads[6], 0);
    device.publishUsed();
    assert.equal(device.needsNotify(), true);
    assert.equal(device.usedIdx, (start + 7) & 0xffff);
  });

  Deno.test(`EVENT_IDX: kicks follow avail_event (start ${start}, across the wrap)`, () => {
    const { driver, device, chain } = rig({ eventIdx: true, startIdx: start });
    // The device armed avail_event = start at construction.
    driver.addBuffer(DATA, 8, false, 1);
    driver.publish();
    assert.equal(driver.kickNeeded(), true);
    driver.addBuffer(DATA, 8, false, 2);
    driver.publish();
    assert.equal(driver.kickNeeded(), false, "device has not re-armed: it is still busy");
    assert.equal(device.pop(chain) && device.pop(chain), true);
    device.disableNotifications();
    assert.equal(device.enableNotifications(), false, "re-armed with nothing pending");
    for (let i = 0; i < 3; i++) driver.addBuffer(DATA, 8, false, 3 + i);
    driver.publish();
    assert.equal(driver.kickNeeded(), true, "batch crosses avail_event: one kick");
    assert.equal(device.pop(chain), true);
    assert.equal(device.enableNotifications(), true, "two still pending: keep polling");
    driver.addBuffer(DATA, 8, false, 6);
    driver.publish();
    assert.equal(
      driver.kickNeeded(),
      false,
      "avail_event is behind what the driver published before",
    );
    assert.equal(device.pop(chain) && device.pop(chain) && device.pop(chain), true);
    assert.equal(device.pop(chain), false);
    assert.equal(device.enableNotifications(), false);
    driver.addBuffer(DATA, 8, false, 7);
    driver.publish();
    assert.equal(driver.kickNeeded(), true);
    assert.equal(device.lastAvailIdx, (start + 6) & 0xffff);
  });
}

Deno.test("round trip over a real memfd, driver and device on separate mappings", () => {
  const fdsBefore = openFdCount();
  const fd = memfdCreate("vq-round-trip", { allowSealing: true });
  ftruncate(fd, SIZE + 0x1000);
  const spec = { gpa: BASE, size: SIZE, uva: 0x7f00_0000_0000, mmapOffset: 0x1000, fd };
  const frontendMemory = GuestMemory.map([spec]);
  const backendMemory = GuestMemory.map([spec]);
  try {
    const { driver, layout } = rig({ memory: frontendMemory, eventIdx: true, indirect: true });
    const { device } = rig({ memory: backendMemory, eventIdx: true, indirect: true });
    assert.equal(layout.descAddr % 16, 0);
    const chain = new DescriptorChain();
    const payload = fill(frontendMemory, DATA, 1514, 9);
    for (let i = 0; i < 100; i++) {
      assert.ok(driver.add([
        { gpa: DATA, len: 1514, write: false },
        { gpa: DATA + 0x1000 + (i % 4) * 0x800, len: 1600, write: true },
      ], i));
      driver.publish();
      assert.ok(device.pop(chain));
      const got = new Uint8Array(2048);
      const n = device.readChain(chain, got);
      assert.equal(n, 1514);
      assert.deepEqual(got.subarray(0, n), payload);
      got[0] = i;
      device.pushUsed(chain.head, device.writeChain(chain, got.subarray(0, n)));
      device.publishUsed();
      assert.ok(driver.nextUsed());
      assert.equal(driver.usedToken, i);
      assert.equal(driver.usedLen, 1514);
      assert.equal(frontendMemory.bytes(DATA + 0x1000 + (i % 4) * 0x800, 1)[0], i);
    }
    assert.equal(device.counters.chains, 100);
  } finally {
    frontendMemory.close();
    backendMemory.close();
    close(fd);
  }
  assert.equal(openFdCount(), fdsBefore);
});

Deno.test("dirty log: written buffers and used-ring updates are marked", () => {
  const bytes = new Uint8Array((BASE + SIZE) / 4096 / 8);
  const log = DirtyLog.fromBytes(bytes);
  const { driver, device, chain, layout } = rig({ device: { log } });
  driver.add(
    [{ gpa: DATA, len: 16, write: false }, { gpa: DATA + 0x3ff0, len: 0x20, write: true }],
    1,
  );
  driver.publish();
  assert.ok(device.pop(chain));
  device.readChain(chain, new Uint8Array(16));
  assert.ok(bytes.every((b) => b === 0), "reads mark nothing");
  device.writeChain(chain, new Uint8Array(0x18), 4); // bytes DATA+0x3ff4 .. DATA+0x400c
  assert.equal(log.isDirty(DATA + 0x3000), true);
  assert.equal(log.isDirty(DATA + 0x4000), true);
  assert.equal(log.isDirty(DATA), false, "the readable buffer is not marked");
  assert.equal(log.isDirty(layout.usedAddr), false);
  device.pushUsed(chain.head, 0x18);
  device.publishUsed();
  assert.equal(log.isDirty(layout.usedAddr), true);
  device.setLog(null);
  bytes.fill(0);
  device.writeChain(chain, new Uint8Array(4));
  assert.ok(bytes.every((b) => b === 0), "logging switched off");
});
