// popWritable (both ring layouts): runs of one-descriptor device-writable
// chains are taken at once; the first chain that is anything else stays for
// pop, which checks it and reports what is wrong.

import assert from "node:assert/strict";
import { GuestMemory } from "../../sdk/memory/mod.ts";
import {
  DescriptorChain,
  DescriptorChainError,
  openVirtqueue,
  PackedQueueDriver,
  type SplitQueue,
  SplitQueueDriver,
  type Virtqueue,
  WritableBuffers,
} from "../../sdk/virtqueue/mod.ts";

const DATA = 0x20000;
const SIZE = 0x80000;

function rig(packed: boolean) {
  const memory = GuestMemory.fromBuffers([{ gpa: 0, bytes: new Uint8Array(SIZE) }]);
  const layout = packed
    ? PackedQueueDriver.layout(8, 0x1000, { indirectSegments: 0 })
    : SplitQueueDriver.layout(8, 0x1000, { indirectSegments: 0 });
  const opts = { eventIdx: false, indirect: false };
  const driver = packed
    ? new PackedQueueDriver(memory, layout, opts)
    : new SplitQueueDriver(memory, layout, opts);
  const queue: Virtqueue = openVirtqueue(memory, layout, {
    packed,
    position: { availIdx: 0, usedIdx: 0, availWrap: true, usedWrap: true },
    ...opts,
  });
  return { memory, driver, queue, out: new WritableBuffers(8), chain: new DescriptorChain() };
}

for (const packed of [false, true]) {
  const ring = packed ? "packed" : "split";

  Deno.test(`${ring} popWritable: takes one-buffer writable chains, stops at the first other one`, () => {
    const r = rig(packed);
    r.driver.addBuffer(DATA, 256, true, 0);
    r.driver.addBuffer(DATA + 0x1000, 128, true, 1);
    r.driver.addBuffer(DATA + 0x2000, 64, true, 2); // shorter than asked for
    r.driver.addBuffer(DATA + 0x3000, 256, true, 3);
    r.driver.publish();
    // A split ring's popWritable works from the avail.idx pop last read.
    if (!packed) assert.equal((r.queue as SplitQueue).available(), 4);
    assert.equal(r.queue.popWritable(r.out, 2, 8, 100), 2, "two, then the 64-byte buffer");
    assert.deepEqual([...r.out.ids.subarray(2, 4)], [0, 1]);
    assert.deepEqual([...r.out.offsets.subarray(2, 4)], [DATA, DATA + 0x1000]);
    assert.deepEqual([...r.out.lengths.subarray(2, 4)], [256, 128]);
    assert.deepEqual([...r.out.regions.subarray(2, 4)], [0, 0]);
    assert.equal(r.queue.popWritable(r.out, 0, 8, 100), 0, "the short one stays");
    assert.ok(r.queue.pop(r.chain), "pop takes it");
    assert.equal(r.chain.head, 2);
    assert.equal(r.queue.popWritable(r.out, 0, 8, 100), 1);
    assert.equal(r.out.ids[0], 3);
    assert.equal(r.queue.counters.chains, 4);
    for (const id of [0, 1, 2, 3]) r.queue.pushUsed(id, 10);
    r.queue.publishUsed();
    const used = [];
    for (let u = r.driver.takeUsed(); u !== null; u = r.driver.takeUsed()) used.push(u.token);
    assert.deepEqual(used, [0, 1, 2, 3]);
  });

  Deno.test(`${ring} popWritable: readable, chained and outside buffers are left for pop`, () => {
    const r = rig(packed);
    r.driver.add([{ gpa: DATA, len: 64, write: false }], 0); // device-readable
    r.driver.add([{ gpa: DATA + 0x100, len: 64, write: true }, {
      gpa: DATA + 0x200,
      len: 64,
      write: true,
    }], 1); // two descriptors
    r.driver.add([{ gpa: SIZE - 16, len: 64, write: true }], 2); // past the end of memory
    r.driver.publish();
    if (!packed) (r.queue as SplitQueue).available();
    for (const [id, count] of [[0, 1], [1, 2]]) {
      assert.equal(r.queue.popWritable(r.out, 0, 8, 1), 0);
      assert.ok(r.queue.pop(r.chain));
      assert.deepEqual([r.chain.head, r.chain.count], [id, count]);
    }
    assert.equal(r.queue.popWritable(r.out, 0, 8, 1), 0);
    assert.throws(() => r.queue.pop(r.chain), (e) => {
      assert.ok(e instanceof DescriptorChainError);
      assert.equal(e.kind, "out-of-bounds");
      return true;
    });
    assert.equal(r.queue.counters.errors, 1);
    assert.equal(r.queue.popWritable(r.out, 0, 8, 1), 0, "nothing more");
  });
}

for (const packed of [false, true]) {
  Deno.test(`${packed ? "packed" : "split"} popWritable: round and round the ring, wrap counters kept`, () => {
    const r = rig(packed);
    let token = 0;
    for (let round = 0; round < 30; round++) {
      const k = 1 + (round % 3);
      for (let i = 0; i < k; i++) {
        r.driver.addBuffer(DATA + (token + i) % 8 * 0x100, 64, true, token + i);
      }
      r.driver.publish();
      if (!packed) (r.queue as SplitQueue).available();
      assert.equal(r.queue.popWritable(r.out, 0, 8, 64), k, `round ${round}`);
      for (let i = 0; i < k; i++) r.queue.pushUsed(r.out.ids[i], 64);
      r.queue.publishUsed();
      for (let i = 0; i < k; i++) {
        assert.deepEqual(r.driver.takeUsed(), { token: token + i, len: 64 });
      }
      token += k;
    }
    assert.equal(r.queue.lastAvailIdx, r.driver.availIdx);
    assert.equal(r.queue.usedIdx, r.driver.lastUsedIdx);
  });
}
