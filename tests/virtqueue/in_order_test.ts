// VIRTIO_F_IN_ORDER batching on both ring layouts (virtio 1.2, "In-order use
// of descriptors"): the device returns a batch of chains with one used entry,
// the batch's last; the test kit's driver, told IN_ORDER was negotiated,
// takes every chain made available before that one as used too.

import assert from "node:assert/strict";
import { GuestMemory } from "../../sdk/memory/mod.ts";
import {
  DescriptorChain,
  openVirtqueue,
  PackedQueueDriver,
  SplitQueueDriver,
  type Virtqueue,
} from "../../sdk/virtqueue/mod.ts";

const NUM = 8;
const RING = 0x1000;
const DATA = 0x20000;
const SIZE = 0x80000;

function rig(packed: boolean, inOrder = true) {
  const memory = GuestMemory.fromBuffers([{ gpa: 0, bytes: new Uint8Array(SIZE) }]);
  const layout = packed ? PackedQueueDriver.layout(NUM, RING) : SplitQueueDriver.layout(NUM, RING);
  const opts = { eventIdx: false, indirect: false };
  const driver = packed
    ? new PackedQueueDriver(memory, layout, { ...opts, inOrder })
    : new SplitQueueDriver(memory, layout, { ...opts, inOrder });
  const queue: Virtqueue = openVirtqueue(memory, layout, {
    packed,
    position: { availIdx: 0, usedIdx: 0, availWrap: true, usedWrap: true },
    ...opts,
  });
  return { memory, layout, driver, queue, chain: new DescriptorChain() };
}

type Rig = ReturnType<typeof rig>;

/** Pop every available chain; their heads (buffer IDs) in the order taken. */
function popAll(r: Rig): number[] {
  const heads = [];
  while (r.queue.pop(r.chain)) heads.push(r.chain.head);
  return heads;
}

function takeAll(r: Rig): { token: number; len: number }[] {
  const out = [];
  for (let u = r.driver.takeUsed(); u !== null; u = r.driver.takeUsed()) out.push(u);
  return out;
}

for (const packed of [false, true]) {
  const ring = packed ? "packed" : "split";

  Deno.test(`${ring} IN_ORDER: one used entry returns a batch; the others count as written in full`, () => {
    const r = rig(packed);
    for (let i = 0; i < 5; i++) r.driver.addBuffer(DATA + i * 0x1000, 100 + i, true, 10 + i);
    r.driver.publish();
    const heads = popAll(r);
    assert.equal(heads.length, 5);
    r.queue.pushUsedInOrder(heads, 5, 7);
    r.queue.publishUsed();
    assert.equal(r.queue.counters.used, 5);
    assert.deepEqual(takeAll(r), [
      { token: 10, len: 100 },
      { token: 11, len: 101 },
      { token: 12, len: 102 },
      { token: 13, len: 103 },
      { token: 14, len: 7 },
    ]);
    assert.equal(r.driver.freeCount(), NUM, "every descriptor came back");
    // One entry was written, at the batch's first used position.
    if (packed) {
      const desc = new DataView(r.memory.bytes(r.layout.descAddr, NUM * 16).slice().buffer);
      assert.equal(desc.getUint16(12, true), heads[4], "slot 0 carries the last buffer ID");
      assert.equal(desc.getUint32(8, true), 7);
      for (let slot = 1; slot < 5; slot++) {
        const flags = desc.getUint16(slot * 16 + 14, true);
        assert.equal(flags & 0x8000, 0, `slot ${slot} was not marked used`);
      }
    } else {
      const used = new DataView(r.memory.bytes(r.layout.usedAddr, 4 + NUM * 8).slice().buffer);
      assert.equal(used.getUint16(2, true), 5, "used.idx moved by the batch");
      assert.deepEqual([used.getUint32(4, true), used.getUint32(8, true)], [heads[4], 7]);
      for (let slot = 1; slot < 5; slot++) {
        assert.equal(used.getUint32(4 + slot * 8, true), 0, `element ${slot} was not written`);
      }
    }
  });

  Deno.test(`${ring} IN_ORDER: batches, single returns and multi-descriptor chains round the ring`, () => {
    const r = rig(packed);
    let token = 0, expect = 0;
    for (let round = 0; round < 30; round++) {
      // 1 to 3 chains of 1 or 2 descriptors (a packed chain takes that many slots).
      const chains = 1 + round % 3;
      for (let c = 0; c < chains; c++) {
        const two = (round + c) % 2 === 0;
        const segs = two
          ? [{ gpa: DATA, len: 16, write: false }, { gpa: DATA + 0x100, len: 32, write: true }]
          : [{ gpa: DATA + 0x200, len: 48, write: true }];
        assert.ok(r.driver.add(segs, token++));
      }
      r.driver.publish();
      const heads = popAll(r);
      assert.equal(heads.length, chains);
      if (round % 4 === 3) {
        for (const h of heads) r.queue.pushUsed(h, 1);
      } else {
        r.queue.pushUsedInOrder(heads, heads.length, 1);
      }
      r.queue.publishUsed();
      const got = takeAll(r);
      assert.deepEqual(got.map((u) => u.token), heads.map(() => expect++), `round ${round}`);
      assert.equal(got[got.length - 1].len, 1);
      assert.equal(r.driver.freeCount(), NUM, `round ${round}: every descriptor back`);
    }
    assert.equal(r.queue.counters.used, token);
  });

  Deno.test(`${ring} IN_ORDER: a bad batch throws and pushes nothing`, () => {
    const r = rig(packed);
    for (let i = 0; i < 3; i++) r.driver.addBuffer(DATA + i * 0x1000, 64, true, i);
    r.driver.publish();
    const heads = popAll(r);
    const before = r.queue.counters.used;
    assert.throws(
      () => r.queue.pushUsedInOrder(heads, 0, 0),
      /in-order batch of 0 is not in 1\.\.8/,
    );
    assert.throws(() => r.queue.pushUsedInOrder(heads, 9, 0), RangeError);
    assert.throws(() => r.queue.pushUsedInOrder([heads[0], 99], 2, 0), RangeError);
    if (packed) {
      // A buffer given twice, or one not held, is refused; what was checked is kept.
      assert.throws(() => r.queue.pushUsedInOrder([heads[0], heads[0]], 2, 0), /not a buffer/);
      assert.throws(() => r.queue.pushUsedInOrder([heads[0], 5], 2, 0), /not a buffer/);
    }
    assert.equal(r.queue.counters.used, before);
    r.queue.publishUsed();
    assert.deepEqual(takeAll(r), [], "nothing was made used");
    r.queue.pushUsedInOrder(heads, 3, 5);
    r.queue.publishUsed();
    assert.deepEqual(takeAll(r).map((u) => u.token), [0, 1, 2]);
  });

  Deno.test(`${ring} IN_ORDER: the driver refuses a batch ending at a buffer not in flight`, () => {
    const r = rig(packed);
    r.driver.addBuffer(DATA, 64, true, 0);
    r.driver.publish();
    r.queue.pushUsedInOrder(popAll(r), 1, 1);
    r.queue.publishUsed();
    assert.equal(r.driver.takeUsed()?.token, 0);
    // A used entry at the next position, by hand, naming buffer 5: nothing is in flight.
    if (packed) {
      r.driver.writeDescriptor(1, 0, 0, 5, 0x8080); // AVAIL and USED: used, wrap counter 1
    } else {
      const used = r.memory.bytes(r.layout.usedAddr, 4 + NUM * 8);
      const view = new DataView(used.buffer, used.byteOffset, used.byteLength);
      view.setUint32(4 + 8, 5, true);
      view.setUint16(2, 2, true);
    }
    assert.throws(() => r.driver.takeUsed(), /buffer 5, which is not in flight/);
  });

  Deno.test(`${ring} without IN_ORDER the driver takes a batch entry as one buffer only`, () => {
    // Why the option exists: a driver that did not negotiate IN_ORDER reads
    // the batch's entry as the last buffer alone and leaves the others.
    const r = rig(packed, false);
    for (let i = 0; i < 3; i++) r.driver.addBuffer(DATA + i * 0x1000, 64, true, i);
    r.driver.publish();
    const heads = popAll(r);
    r.queue.pushUsedInOrder(heads, 3, 9);
    r.queue.publishUsed();
    const got = r.driver.takeUsed();
    assert.deepEqual(got, { token: 2, len: 9 });
    assert.notEqual(r.driver.freeCount(), NUM);
  });
}
