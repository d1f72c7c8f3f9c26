// Hostile descriptor chains: each is detected with the right kind, counted,
// reported with the descriptor and its values, and the next good chain is
// still processed.

import assert from "node:assert/strict";
import type { GuestMemory } from "../../sdk/memory/mod.ts";
import {
  DescriptorChainError,
  type DescriptorChainErrorKind,
  VIRTQ_DESC_F_INDIRECT as INDIRECT,
  VIRTQ_DESC_F_NEXT as NEXT,
  VIRTQ_DESC_F_WRITE as WRITE,
} from "../../sdk/virtqueue/mod.ts";
import { BASE, DATA, fill, type Rig, rig, type RigOptions, SIZE } from "./rig.ts";

const NUM = 16;
/** First reserved descriptor: 8..15 are free for raw writes. */
const R = 8;
/** Where raw indirect tables go. */
const TABLE = DATA + 0x10000;

type Entry = [addr: number, len: number, flags: number, next: number];

function writeTable(memory: GuestMemory, gpa: number, entries: Entry[]): number {
  const b = memory.bytes(gpa, entries.length * 16);
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  entries.forEach(([addr, len, flags, next], i) => {
    v.setUint32(i * 16, addr % 2 ** 32, true);
    v.setUint32(i * 16 + 4, Math.floor(addr / 2 ** 32), true);
    v.setUint32(i * 16 + 8, len, true);
    v.setUint16(i * 16 + 12, flags, true);
    v.setUint16(i * 16 + 14, next, true);
  });
  return entries.length * 16;
}

interface Case {
  name: string;
  kind: DescriptorChainErrorKind;
  /** Words the message must contain. */
  says: string[];
  options?: RigOptions;
  /** Write the descriptors; return the head to make available. */
  setup(r: Rig): number;
  /** The error's head (default: the head made available). */
  head?: number;
}

const cases: Case[] = [
  {
    name: "a loop of two descriptors",
    kind: "loop",
    says: ["head 8", "descriptor 8 appears twice"],
    setup({ driver }) {
      driver.writeDescriptor(R, DATA, 16, NEXT, R + 1);
      driver.writeDescriptor(R + 1, DATA, 16, NEXT, R);
      return R;
    },
  },
  {
    name: "a descriptor pointing at itself",
    kind: "loop",
    says: ["descriptor 9 appears twice"],
    setup({ driver }) {
      driver.writeDescriptor(R + 1, DATA, 16, NEXT, R + 1);
      return R + 1;
    },
  },
  {
    name: "a loop inside an indirect table",
    kind: "loop",
    says: ["indirect descriptor 0", "appears twice in the indirect table"],
    setup({ driver, memory }) {
      const len = writeTable(memory, TABLE, [[DATA, 8, NEXT, 1], [DATA, 8, NEXT, 2], [
        DATA,
        8,
        NEXT,
        0,
      ]]);
      driver.writeDescriptor(R, TABLE, len, INDIRECT, 0);
      return R;
    },
  },
  {
    name: "a chain longer than maxChainLength",
    kind: "too-long",
    says: ["longer than 4 descriptors", "descriptor 12"],
    options: { device: { maxChainLength: 4 } },
    setup({ driver }) {
      for (let i = 0; i < 5; i++) driver.writeDescriptor(R + i, DATA, 8, NEXT, R + i + 1);
      driver.writeDescriptor(R + 4, DATA, 8, 0, 0);
      return R;
    },
  },
  {
    name: "a chain longer than the queue size (direct prefix + full indirect table)",
    kind: "too-long",
    says: ["longer than 16 descriptors", "indirect descriptor 15"],
    setup({ driver, memory }) {
      const entries: Entry[] = Array.from(
        { length: NUM },
        (_, i) => [DATA, 8, i < NUM - 1 ? NEXT : 0, i + 1],
      );
      const len = writeTable(memory, TABLE, entries);
      driver.writeDescriptor(R, DATA, 8, NEXT, R + 1);
      driver.writeDescriptor(R + 1, TABLE, len, INDIRECT, 0);
      return R;
    },
  },
  {
    name: "a buffer outside guest memory",
    kind: "out-of-bounds",
    says: ["descriptor 8", "gpa 0x10 length 16", "not inside guest memory"],
    setup({ driver }) {
      driver.writeDescriptor(R, 0x10, 16, 0, 0);
      return R;
    },
  },
  {
    name: "a buffer running one byte past the end of memory",
    kind: "out-of-bounds",
    says: [
      `gpa 0x${(BASE + SIZE - 15).toString(16)} length 16`,
      `byte 0x${(BASE + SIZE).toString(16)}`,
    ],
    setup({ driver }) {
      driver.writeDescriptor(R, BASE + SIZE - 15, 16, 0, 0);
      return R;
    },
  },
  {
    name: "an address beyond 2^53",
    kind: "out-of-bounds",
    says: ["address 0x1000000000000000 is beyond 2^53"],
    setup({ driver }) {
      driver.writeDescriptor(R, 2 ** 60, 16, 0, 0);
      return R;
    },
  },
  {
    name: "a second, bad buffer after a good one",
    kind: "out-of-bounds",
    says: ["descriptor 9"],
    setup({ driver }) {
      driver.writeDescriptor(R, DATA, 16, NEXT, R + 1);
      driver.writeDescriptor(R + 1, BASE + SIZE, 1, WRITE, 0);
      return R;
    },
  },
  {
    name: "an indirect table outside guest memory",
    kind: "out-of-bounds",
    says: ["indirect table gpa 0x40", "length 32"],
    setup({ driver }) {
      driver.writeDescriptor(R, 0x40, 32, INDIRECT, 0);
      return R;
    },
  },
  {
    name: "an indirect table whose length is not a multiple of 16",
    kind: "bad-indirect",
    says: ["length 24", "multiple of 16"],
    setup({ driver }) {
      driver.writeDescriptor(R, TABLE, 24, INDIRECT, 0);
      return R;
    },
  },
  {
    name: "an empty indirect table",
    kind: "bad-indirect",
    says: ["length 0"],
    setup({ driver }) {
      driver.writeDescriptor(R, TABLE, 0, INDIRECT, 0);
      return R;
    },
  },
  {
    name: "an indirect table larger than the queue size",
    kind: "bad-indirect",
    says: ["17 descriptors", "larger than the queue size 16"],
    setup({ driver }) {
      driver.writeDescriptor(R, TABLE, 17 * 16, INDIRECT, 0);
      return R;
    },
  },
  {
    name: "an indirect descriptor without INDIRECT_DESC negotiated",
    kind: "bad-indirect",
    says: ["not negotiated"],
    options: { indirect: false },
    setup({ driver, memory }) {
      const len = writeTable(memory, TABLE, [[DATA, 8, 0, 0]]);
      driver.writeDescriptor(R, TABLE, len, INDIRECT, 0);
      return R;
    },
  },
  {
    name: "an indirect descriptor with NEXT",
    kind: "bad-indirect",
    says: ["also has the NEXT flag"],
    setup({ driver, memory }) {
      const len = writeTable(memory, TABLE, [[DATA, 8, 0, 0]]);
      driver.writeDescriptor(R, TABLE, len, INDIRECT | NEXT, R + 1);
      driver.writeDescriptor(R + 1, DATA, 8, 0, 0);
      return R;
    },
  },
  {
    name: "a nested indirect table",
    kind: "nested-indirect",
    says: ["indirect descriptor 1", "inside an indirect table"],
    setup({ driver, memory }) {
      const len = writeTable(memory, TABLE, [[DATA, 8, NEXT, 1], [TABLE, 16, INDIRECT, 0]]);
      driver.writeDescriptor(R, TABLE, len, INDIRECT, 0);
      return R;
    },
  },
  {
    name: "a head index >= num",
    kind: "bad-index",
    says: ["head index 16", "queue size 16"],
    head: -1,
    setup: () => NUM,
  },
  {
    name: "a head index of 65535",
    kind: "bad-index",
    says: ["head index 65535"],
    head: -1,
    setup: () => 65535,
  },
  {
    name: "a next index >= num",
    kind: "bad-index",
    says: ["descriptor 8 has next 40"],
    setup({ driver }) {
      driver.writeDescriptor(R, DATA, 8, NEXT, 40);
      return R;
    },
  },
  {
    name: "a next index past the indirect table",
    kind: "bad-index",
    says: ["descriptor 1 has next 2", "2 entries"],
    setup({ driver, memory }) {
      const len = writeTable(memory, TABLE, [[DATA, 8, NEXT, 1], [DATA, 8, NEXT, 2]]);
      driver.writeDescriptor(R, TABLE, len, INDIRECT, 0);
      return R;
    },
  },
  {
    name: "a readable descriptor after a writable one",
    kind: "write-before-read",
    says: ["descriptor 9", "readable descriptor follows a device-writable one"],
    setup({ driver }) {
      driver.writeDescriptor(R, DATA, 8, NEXT | WRITE, R + 1);
      driver.writeDescriptor(R + 1, DATA, 8, 0, 0);
      return R;
    },
  },
  {
    name: "a readable descriptor after a writable one in an indirect table",
    kind: "write-before-read",
    says: ["indirect descriptor 2"],
    setup({ driver, memory }) {
      const len = writeTable(memory, TABLE, [[DATA, 8, NEXT, 1], [DATA, 8, NEXT | WRITE, 2], [
        DATA,
        8,
        0,
        0,
      ]]);
      driver.writeDescriptor(R, TABLE, len, INDIRECT, 0);
      return R;
    },
  },
];

/** Make a good chain available and check the device processes it. */
function goodChainStillWorks(r: Rig, token: number): void {
  const data = fill(r.memory, DATA + 0x800, 40, token);
  assert.ok(
    r.driver.add([{ gpa: DATA + 0x800, len: 40, write: false }, {
      gpa: DATA + 0x900,
      len: 40,
      write: true,
    }], token),
  );
  r.driver.publish();
  assert.ok(r.device.pop(r.chain), "the good chain is popped");
  const got = new Uint8Array(40);
  assert.equal(r.device.readChain(r.chain, got), 40);
  assert.deepEqual(got, data);
  assert.equal(r.device.writeChain(r.chain, got), 40);
  r.device.pushUsed(r.chain.head, 40);
  r.device.publishUsed();
}

for (const c of cases) {
  Deno.test(`hostile: ${c.name} -> ${c.kind}`, () => {
    const r = rig({ num: NUM, reserved: NUM - R, indirect: true, ...c.options });
    const head = c.setup(r);
    r.driver.addRaw(head, 999);
    r.driver.publish();
    let err: DescriptorChainError | undefined;
    try {
      r.device.pop(r.chain);
    } catch (e) {
      assert.ok(e instanceof DescriptorChainError, `expected DescriptorChainError, got ${e}`);
      err = e;
    }
    assert.ok(err, "pop threw");
    assert.equal(err.kind, c.kind, err.message);
    for (const s of c.says) assert.ok(err.message.includes(s), `"${err.message}" lacks "${s}"`);
    assert.equal(err.head, c.head ?? head);
    assert.equal(r.device.counters.errors, 1);
    assert.equal(r.device.counters.byKind[c.kind], 1);
    assert.equal(r.device.counters.chains, 0);
    assert.equal(r.chain.count, 0, "no segment of a bad chain is left to use");
    assert.equal(r.device.lastAvailIdx, 1, "the head was consumed");

    // What the SDK's software devices do: return the chain unused, go on.
    if (err.head >= 0) r.device.pushUsed(err.head, 0);
    goodChainStillWorks(r, 5);
    if (err.head >= 0) assert.deepEqual(r.driver.takeUsed(), { token: 999, len: 0 });
    assert.deepEqual(r.driver.takeUsed(), { token: 5, len: 40 });
    assert.equal(r.driver.takeUsed(), null);
    assert.equal(r.device.counters.chains, 1);
    assert.equal(r.device.counters.errors, 1);
  });
}

Deno.test("hostile: avail.idx jumping by more than num -> bad-avail-idx, then recovers", () => {
  const r = rig({ num: NUM });
  const avail = r.memory.bytes(r.layout.availAddr + 2, 2);
  const view = new DataView(avail.buffer, avail.byteOffset, 2);
  view.setUint16(0, NUM + 1, true);
  for (const call of [() => r.device.available(), () => r.device.pop(r.chain)]) {
    assert.throws(call, (e: unknown) => {
      assert.ok(e instanceof DescriptorChainError);
      assert.equal(e.kind, "bad-avail-idx");
      assert.equal(e.head, -1);
      assert.match(
        e.message,
        /avail\.idx 17 is 17 entries past .* last available index 0, more than the queue size 16/,
      );
      return true;
    });
  }
  assert.equal(r.device.counters.byKind["bad-avail-idx"], 2);
  assert.equal(r.device.counters.errors, 2);
  assert.equal(r.device.lastAvailIdx, 0, "nothing consumed");
  // The driver puts a sane value back: the queue carries on.
  view.setUint16(0, 0, true);
  goodChainStillWorks(r, 8);
  assert.deepEqual(r.driver.takeUsed(), { token: 8, len: 40 });
});

Deno.test("hostile: a device returning a head not in flight is refused by the driver", () => {
  const r = rig({ num: NUM });
  r.device.pushUsed(3, 0);
  r.device.publishUsed();
  assert.throws(() => r.driver.nextUsed(), /descriptor 3 .* not in flight/);
  assert.throws(() => r.device.pushUsed(NUM, 0), RangeError);
});
