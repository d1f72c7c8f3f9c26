// Packed virtqueues (virtio 1.2 §2.8): the device side against the driver
// side over one memory, through many turns of the ring (wrap counters),
// chained and indirect buffers, event suppression both ways, and hostile
// rings: each broken rule detected, counted, the chain consumed, the next
// good chain still processed.

import assert from "node:assert/strict";
import { GuestMemory } from "../../sdk/memory/mod.ts";
import {
  DescriptorChain,
  DescriptorChainError,
  type DescriptorChainErrorKind,
  openVirtqueue,
  PackedQueue,
  PackedQueueDriver,
  RING_EVENT_FLAGS_DESC,
  VIRTQ_DESC_F_INDIRECT as INDIRECT,
  VIRTQ_DESC_F_NEXT as NEXT,
  VIRTQ_DESC_F_WRITE as WRITE,
  WritableBuffers,
} from "../../sdk/virtqueue/mod.ts";

const DATA = 0x20000;
const SIZE = 0x80000;

function rig(num: number, options: { eventIdx?: boolean; indirect?: boolean } = {}) {
  const memory = GuestMemory.fromBuffers([{ gpa: 0, bytes: new Uint8Array(SIZE) }]);
  const layout = PackedQueueDriver.layout(num, 0x1000, {
    indirectSegments: options.indirect ? 4 : 0,
  });
  const driver = new PackedQueueDriver(memory, layout, {
    eventIdx: options.eventIdx ?? false,
    indirect: options.indirect ?? false,
  });
  const device = new PackedQueue(memory, layout, {
    position: { availIdx: 0, usedIdx: 0, availWrap: true, usedWrap: true },
    eventIdx: options.eventIdx ?? false,
    indirect: options.indirect ?? false,
  });
  return { memory, layout, driver, device, chain: new DescriptorChain() };
}

Deno.test("packed: buffers round-trip through many turns of an odd-sized ring, chained, byte-exact", () => {
  const r = rig(7); // not a power of two: packed rings allow it
  let token = 0;
  for (let round = 0; round < 40; round++) {
    // Chains of 1..3 descriptors: the ring wraps mid-chain now and then.
    const k = 1 + (round % 3);
    const segs = Array.from({ length: k }, (_, j) => ({
      gpa: DATA + (round * 4 + j) * 64,
      len: 32,
      write: j === k - 1,
    }));
    for (const s of segs.filter((s) => !s.write)) r.memory.bytes(s.gpa, 32).fill(round + 1);
    assert.ok(r.driver.add(segs, token), `add in round ${round}`);
    r.driver.publish();
    assert.ok(r.device.pop(r.chain), `pop in round ${round}`);
    assert.equal(r.chain.count, k);
    const got = new Uint8Array(64);
    const n = r.device.readChain(r.chain, got);
    assert.equal(n, 32 * (k - 1));
    assert.ok(got.subarray(0, n).every((b) => b === round + 1));
    const w = r.device.writeChain(r.chain, new Uint8Array(32).fill(0xa0 + (round & 15)));
    r.device.pushUsed(r.chain.head, w);
    r.device.publishUsed();
    const used = r.driver.takeUsed();
    assert.deepEqual(used, { token, len: 32 });
    assert.ok(r.memory.bytes(segs[k - 1].gpa, 32).every((b) => b === 0xa0 + (round & 15)));
    token++;
  }
  assert.equal(r.driver.freeCount(), 7);
  assert.equal(r.device.counters.chains, 40);
  // 80 descriptors went round a ring of 7: positions and wrap counters agree on both sides.
  assert.equal(r.device.lastAvailIdx, r.driver.availIdx);
  assert.equal(r.device.usedIdx, r.driver.lastUsedIdx);
});

Deno.test("packed: used descriptors pushed together appear together, first flags last", () => {
  const r = rig(8);
  for (let i = 0; i < 4; i++) r.driver.add([{ gpa: DATA + i * 64, len: 64, write: true }], i);
  r.driver.publish();
  const heads = [];
  while (r.device.pop(r.chain)) heads.push(r.chain.head);
  assert.equal(heads.length, 4);
  for (const h of heads) r.device.pushUsed(h, 8);
  assert.equal(r.driver.takeUsed(), null, "nothing visible before publishUsed");
  r.device.publishUsed();
  const tokens = [];
  for (let u = r.driver.takeUsed(); u; u = r.driver.takeUsed()) tokens.push(u.token);
  assert.deepEqual(tokens, [0, 1, 2, 3]);
});

Deno.test("packed: indirect tables carry a chain in one ring slot", () => {
  const r = rig(4, { indirect: true });
  const segs = [
    { gpa: DATA, len: 10, write: false },
    { gpa: DATA + 100, len: 20, write: false },
    { gpa: DATA + 200, len: 30, write: true },
  ];
  r.memory.bytes(DATA, 10).fill(1);
  r.memory.bytes(DATA + 100, 20).fill(2);
  assert.ok(r.driver.add(segs, 42));
  r.driver.publish();
  assert.equal(r.driver.freeCount(), 3, "one ring slot for three buffers");
  assert.ok(r.device.pop(r.chain));
  assert.ok(r.chain.indirect);
  assert.deepEqual([r.chain.count, r.chain.readable, r.chain.writableBytes], [3, 2, 30]);
  const got = new Uint8Array(30);
  assert.equal(r.device.readChain(r.chain, got), 30);
  assert.deepEqual([...got.subarray(8, 12)], [1, 1, 2, 2]);
  r.device.pushUsed(r.chain.head, 0);
  r.device.publishUsed();
  assert.deepEqual(r.driver.takeUsed(), { token: 42, len: 0 });
});

Deno.test("packed event suppression: with EVENT_IDX each side is told exactly when the other asked", () => {
  const r = rig(8, { eventIdx: true });
  // Device asks for a kick at its position: the driver's first publish needs one.
  assert.equal(r.device.enableNotifications(), false);
  r.driver.add([{ gpa: DATA, len: 8, write: true }], 0);
  r.driver.publish();
  assert.equal(r.driver.kickNeeded(), true);
  // Device polls: no more kicks wanted.
  r.device.disableNotifications();
  r.driver.add([{ gpa: DATA + 64, len: 8, write: true }], 1);
  r.driver.publish();
  assert.equal(r.driver.kickNeeded(), false);
  // Driver asks for an interrupt at its used position, then takes the first.
  assert.equal(r.driver.enableInterrupts(), false);
  assert.ok(r.device.pop(r.chain));
  r.device.pushUsed(r.chain.head, 8);
  r.device.publishUsed();
  assert.equal(r.device.needsNotify(), true, "first used passes the driver's event");
  assert.ok(r.driver.takeUsed());
  r.driver.disableInterrupts();
  assert.ok(r.device.pop(r.chain));
  r.device.pushUsed(r.chain.head, 8);
  r.device.publishUsed();
  assert.equal(r.device.needsNotify(), false, "interrupts disabled");
  // The driver's event set one past its position: the device interrupts only after passing it.
  assert.ok(r.driver.takeUsed());
  assert.equal(r.driver.enableInterrupts(), false);
  for (let i = 0; i < 2; i++) r.driver.add([{ gpa: DATA + i * 64, len: 8, write: true }], i);
  r.driver.publish();
  assert.ok(r.device.pop(r.chain));
  r.device.pushUsed(r.chain.head, 8);
  r.device.publishUsed();
  assert.equal(r.device.needsNotify(), true);
  assert.equal(r.device.counters.suppressed, 1);
});

Deno.test("packed event suppression wraps: the event offset is compared across the ring's end", () => {
  const r = rig(4, { eventIdx: true });
  let interrupts = 0;
  for (let i = 0; i < 30; i++) {
    r.driver.add([{ gpa: DATA, len: 8, write: true }], i);
    r.driver.publish();
    r.driver.enableInterrupts(); // asks for the next used, wherever the ring stands
    assert.ok(r.device.pop(r.chain));
    r.device.pushUsed(r.chain.head, 8);
    r.device.publishUsed();
    if (r.device.needsNotify()) interrupts++;
    assert.ok(r.driver.takeUsed());
  }
  assert.equal(interrupts, 30, "every used buffer the driver asked for interrupted");
  assert.equal(
    new Uint16Array(r.memory.bytes(r.layout.availAddr, 4).slice().buffer)[1],
    RING_EVENT_FLAGS_DESC,
  );
});

Deno.test("openVirtqueue makes the layout negotiated, and both report positions the same way", () => {
  const r = rig(8);
  const q = openVirtqueue(r.memory, r.layout, {
    packed: true,
    position: { availIdx: 3, usedIdx: 3, availWrap: false, usedWrap: false },
    eventIdx: false,
    indirect: false,
  });
  assert.equal(q.packed, true);
  assert.equal(q.lastAvailIdx, 3, "wrap counter 0: bit 15 clear");
  assert.deepEqual(q.position(), { availIdx: 3, usedIdx: 3, availWrap: false, usedWrap: false });
  assert.equal(q.availBefore(4), 0x8000 | 7, "four back from 3 crosses the end: wrap flips");
});

Deno.test("packed: one-descriptor chains the short path does not take are walked", () => {
  // Two adjacent regions: a buffer may run across their boundary.
  const memory = GuestMemory.fromBuffers([
    { gpa: 0, bytes: new Uint8Array(0x40000) },
    { gpa: 0x40000, bytes: new Uint8Array(0x40000) },
  ]);
  const layout = PackedQueueDriver.layout(8, 0x1000, { indirectSegments: 0 });
  const driver = new PackedQueueDriver(memory, layout, { eventIdx: false, indirect: false });
  const device = new PackedQueue(memory, layout, {
    position: { availIdx: 0, usedIdx: 0, availWrap: true, usedWrap: true },
    eventIdx: false,
    indirect: false,
  });
  const chain = new DescriptorChain();
  driver.addBuffer(0x3ff00, 0x200, true, 0); // across the boundary: two segments
  driver.addBuffer(DATA, 0, true, 1); // empty: a chain with no segment
  driver.addBuffer(0x40100, 64, false, 2); // the common case, in the second region
  driver.publish();
  assert.ok(device.pop(chain));
  assert.deepEqual([chain.head, chain.count, chain.writableBytes], [0, 2, 0x200]);
  assert.deepEqual([chain.regions[0], chain.offsets[0], chain.lengths[0]], [0, 0x3ff00, 0x100]);
  assert.deepEqual([chain.regions[1], chain.offsets[1], chain.lengths[1]], [1, 0, 0x100]);
  assert.ok(device.pop(chain));
  assert.deepEqual([chain.head, chain.count, chain.descriptors], [1, 0, 1]);
  assert.ok(device.pop(chain));
  assert.deepEqual([chain.head, chain.count, chain.readableBytes], [2, 1, 64]);
  assert.deepEqual([chain.regions[0], chain.offsets[0], chain.addresses[0]], [1, 0x100, 0x40100]);
  assert.equal(device.pop(chain), false, "nothing more is available");
  for (const id of [0, 1, 2]) device.pushUsed(id, 0);
  device.publishUsed();
  assert.deepEqual([driver.takeUsed(), driver.takeUsed(), driver.takeUsed()].map((u) => u?.token), [
    0,
    1,
    2,
  ]);
  // An address beyond 2^53 is refused as the walk refuses it.
  driver.writeDescriptor(3, 0, 16, 5, (1 << 7) | WRITE);
  new DataView(memory.bytes(layout.descAddr + 3 * 16, 8).buffer).setUint32(
    layout.descAddr + 3 * 16 + 4,
    0x200000,
    true,
  );
  assert.throws(() => device.pop(chain), (e) => {
    assert.ok(e instanceof DescriptorChainError);
    assert.equal(e.kind, "out-of-bounds");
    assert.match(e.message, /beyond 2\^53/);
    return true;
  });
});

// ---- hostile rings ---------------------------------------------------------

interface Hostile {
  name: string;
  kind: DescriptorChainErrorKind;
  says: RegExp;
  indirect?: boolean;
  /** Write the chain at slot 0 (available for wrap 1); return the buffer ID it carries. */
  setup(r: ReturnType<typeof rig>): number;
}

const A = 1 << 7; // AVAIL for wrap counter 1
const cases: Hostile[] = [
  {
    name: "a chain whose second descriptor is not available (wrong wrap flags)",
    kind: "bad-wrap",
    says: /descriptor 1 continues the chain but is not available/,
    setup({ driver }) {
      driver.writeDescriptor(1, DATA, 16, 3, WRITE); // flags without AVAIL: not available
      driver.writeDescriptor(0, DATA, 16, 3, A | NEXT);
      return 3; // consumed up to the last descriptor read: slot 0, buffer ID 3
    },
  },
  {
    name: "a buffer ID out of range",
    kind: "bad-index",
    says: /buffer ID 900 is not below the queue size 8/,
    setup({ driver }) {
      driver.writeDescriptor(0, DATA, 16, 900, A | WRITE);
      return -1;
    },
  },
  {
    name: "a chain running around the whole ring",
    kind: "too-long",
    says: /runs around the whole ring of 8/,
    setup({ driver }) {
      for (let i = 7; i >= 0; i--) driver.writeDescriptor(i, DATA, 16, 5, A | NEXT);
      return 5;
    },
  },
  {
    name: "a buffer outside guest memory",
    kind: "out-of-bounds",
    says: /not inside guest memory/,
    setup({ driver }) {
      driver.writeDescriptor(0, SIZE - 8, 64, 2, A | WRITE);
      return 2;
    },
  },
  {
    name: "an indirect table without INDIRECT_DESC",
    kind: "bad-indirect",
    says: /without INDIRECT_DESC/,
    setup({ driver }) {
      driver.writeDescriptor(0, DATA, 32, 1, A | INDIRECT);
      return 1;
    },
  },
  {
    name: "an indirect table that is not a multiple of 16 bytes",
    kind: "bad-indirect",
    indirect: true,
    says: /not a positive multiple of 16/,
    setup({ driver }) {
      driver.writeDescriptor(0, DATA, 20, 1, A | INDIRECT);
      return 1;
    },
  },
  {
    name: "an indirect table larger than the ring",
    kind: "bad-indirect",
    indirect: true,
    says: /larger than 8/,
    setup({ driver }) {
      driver.writeDescriptor(0, DATA, 16 * 9, 1, A | INDIRECT);
      return 1;
    },
  },
  {
    name: "a nested indirect table",
    kind: "nested-indirect",
    indirect: true,
    says: /indirect descriptor inside a table/,
    setup({ driver, memory }) {
      const t = new DataView(memory.bytes(DATA, 32).buffer, DATA, 32);
      t.setUint32(0, DATA + 0x1000, true);
      t.setUint32(8, 16, true);
      t.setUint16(14, INDIRECT, true);
      driver.writeDescriptor(0, DATA, 32, 4, A | INDIRECT);
      return 4;
    },
  },
  {
    name: "a readable buffer after a writable one",
    kind: "write-before-read",
    says: /device-readable descriptor follows a device-writable one/,
    setup({ driver }) {
      driver.writeDescriptor(1, DATA + 64, 16, 6, A);
      driver.writeDescriptor(0, DATA, 16, 6, A | WRITE | NEXT);
      return 6;
    },
  },
];

for (const c of cases) {
  Deno.test(`packed hostile: ${c.name} -> ${c.kind}, and the next chain is served`, () => {
    const r = rig(8, { indirect: c.indirect });
    const id = c.setup(r);
    let err: unknown;
    try {
      r.device.pop(r.chain);
    } catch (e) {
      err = e;
    }
    assert.ok(err instanceof DescriptorChainError, `no error: ${err}`);
    assert.equal(err.kind, c.kind);
    assert.match(err.message, c.says);
    assert.equal(err.head, id);
    assert.equal(r.device.counters.byKind[c.kind], 1);
    assert.equal(r.device.counters.errors, 1);
    if (id >= 0) {
      // The device returns the broken buffer empty and goes on.
      r.device.pushUsed(id, 0);
      r.device.publishUsed();
    }
    // A good chain written where the device now stands is served.
    const at = r.device.position();
    const flags = at.availWrap ? A : 1 << 15;
    r.driver.writeDescriptor(at.availIdx, DATA + 0x800, 16, 7, flags | WRITE);
    assert.ok(r.device.pop(r.chain), "the next chain");
    assert.equal(r.chain.head, 7);
    assert.equal(r.chain.writableBytes, 16);
  });
}

Deno.test("packed hostile: pushing a buffer ID the device does not hold is refused", () => {
  const r = rig(8);
  assert.throws(() => r.device.pushUsed(3, 0), /not a buffer the device holds/);
  assert.throws(() => r.device.pushUsed(8, 0), /not a buffer the device holds/);
});

Deno.test("packed hostile: a buffer ID made available while in flight -> bad-index, the held buffer still returns", () => {
  const r = rig(8);
  const out = new WritableBuffers(8);
  r.driver.writeDescriptor(0, DATA, 64, 3, A | WRITE);
  assert.equal(r.device.popWritable(out, 0, 8, 1), 1);
  assert.equal(out.ids[0], 3);
  assert.equal(r.device.descriptorsOf(3), 1);
  // The same ID again: the batch path leaves it, as does pop's short path.
  r.driver.writeDescriptor(1, DATA + 64, 64, 3, A | WRITE);
  assert.equal(r.device.popWritable(out, 0, 8, 1), 0, "popWritable leaves a held ID");
  assert.throws(() => r.device.pop(r.chain), (e) => {
    assert.ok(e instanceof DescriptorChainError);
    assert.equal(e.kind, "bad-index");
    assert.match(e.message, /buffer ID 3 is already in flight/);
    assert.equal(e.head, -1, "the held ID is not handed out twice");
    return true;
  });
  assert.equal(r.device.counters.byKind["bad-index"], 1);
  assert.equal(r.device.descriptorsOf(3), 1, "the held chain's count is kept");
  // A chained duplicate takes the general walk and is refused the same way.
  r.driver.writeDescriptor(3, DATA + 192, 16, 3, A | WRITE);
  r.driver.writeDescriptor(2, DATA + 128, 16, 3, A | WRITE | NEXT);
  assert.throws(() => r.device.pop(r.chain), /buffer ID 3 is already in flight/);
  assert.equal(r.device.counters.byKind["bad-index"], 2);
  // The held buffer returns as it was taken, and the ring serves on.
  r.device.pushUsed(3, 64);
  r.device.publishUsed();
  const used = new DataView(r.memory.bytes(r.layout.descAddr, 16).buffer, r.layout.descAddr, 16);
  assert.deepEqual([used.getUint32(8, true), used.getUint16(12, true), used.getUint16(14, true)], [
    64,
    3,
    A | (1 << 15) | WRITE,
  ], "slot 0: ID 3, 64 bytes written, used");
  r.driver.writeDescriptor(4, DATA + 256, 16, 3, A | WRITE);
  assert.ok(r.device.pop(r.chain), "the ID, returned, may come again");
  assert.deepEqual([r.chain.head, r.chain.writableBytes], [3, 16]);
});

Deno.test("packed hostile: a driver reusing slots the device holds cannot push the used position off the ring", () => {
  // Ring of 4: three 3-descriptor chains, each written over slots the device
  // still holds, so the device holds 9 descriptors. Laps: slots 0-2 and 3
  // are available for wrap 1, 0-1 and 2-3 for wrap 0, 0 for wrap 1 again.
  const r = rig(4);
  const U = 1 << 15; // available for wrap counter 0
  const chains: [number, number][][] = [
    [[0, A], [1, A], [2, A]],
    [[3, A], [0, U], [1, U]],
    [[2, U], [3, U], [0, A]],
  ];
  chains.forEach((chain, id) => {
    chain.forEach(([slot, avail], k) => {
      r.driver.writeDescriptor(slot, DATA + 64 * slot, 16, id, avail | (k < 2 ? NEXT : 0));
    });
    assert.ok(r.device.pop(r.chain), `chain ${id}`);
    assert.deepEqual([r.chain.head, r.device.descriptorsOf(id)], [id, 3]);
  });
  r.device.pushUsedInOrder([0, 1, 2], 3, 0);
  r.device.publishUsed();
  // 9 descriptors from slot 0: two laps, the wrap counter back where it was.
  const at = r.device.position();
  assert.deepEqual([at.usedIdx, at.usedWrap], [1, true]);
});
