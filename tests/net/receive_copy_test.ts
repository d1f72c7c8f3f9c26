// ReceiveDelivery.deliverCopies' copy into one-buffer chains, against real
// split and packed queues driven by the test kit's guest side: every byte
// of every buffer is checked, whatever the frame length, the buffer's
// alignment, the header size, the region's own alignment, and what the
// buffer held before (its old header kept, or differing in one byte).

import assert from "node:assert/strict";
import fc from "fast-check";
import {
  GuestMemory,
  PackedQueue,
  PackedQueueDriver,
  SplitQueue,
  SplitQueueDriver,
  type Virtqueue,
} from "@vhost-mdev/sdk";
import { ReceiveDelivery } from "@vhost-mdev/sdk/net";

const GPA = 0x10000;
const RING = GPA;
/** Buffer `i` lies at `DATA + i * STRIDE + shift` (a shift of 1..3 leaves it off a word). */
const DATA = 0x100000;
const SIZE = 0x10000;
const STRIDE = 0x1000;
const BUFFERS = 8;
const BUFFER_LEN = 2048;

interface Case {
  packed: boolean;
  header: 10 | 12;
  frame: number;
  /** Where each buffer starts past its 4 KiB slot. */
  shift: number;
  /** Where the region's bytes start in their ArrayBuffer (0: on a word). */
  regionShift: number;
  /** What each buffer holds before: 0 zeros, 1 the packet's header, 2 the header but one byte. */
  before: number[];
  /** Which header byte differs for `before` 2. */
  differing: number;
  seed: number;
}

interface Ring {
  memory: GuestMemory;
  queue: Virtqueue;
  post(i: number): void;
  publish(): void;
  used(): { token: number; len: number }[];
}

function ring(c: Case): Ring {
  // The rings in a region of their own; the buffers' region starts `regionShift`
  // bytes into its ArrayBuffer.
  const backing = new Uint8Array(SIZE + 8);
  const memory = GuestMemory.fromBuffers([
    { gpa: GPA, bytes: new Uint8Array(0x1000) },
    { gpa: DATA, bytes: backing.subarray(c.regionShift, c.regionShift + SIZE) },
  ]);
  const address = (i: number) => DATA + i * STRIDE + c.shift;
  let driver: PackedQueueDriver | SplitQueueDriver, queue: Virtqueue;
  if (c.packed) {
    const layout = PackedQueueDriver.layout(BUFFERS, RING);
    driver = new PackedQueueDriver(memory, layout, { eventIdx: false, indirect: false });
    queue = new PackedQueue(memory, layout, {
      position: { availIdx: 0, availWrap: true, usedIdx: 0, usedWrap: true },
      eventIdx: false,
      indirect: false,
    });
  } else {
    const layout = SplitQueueDriver.layout(BUFFERS, RING);
    driver = new SplitQueueDriver(memory, layout, { eventIdx: false });
    queue = new SplitQueue(memory, layout, { lastAvailIdx: 0, eventIdx: false, indirect: false });
  }
  return {
    memory,
    queue,
    post: (i) => assert.ok(driver.addBuffer(address(i), BUFFER_LEN, true, i)),
    publish: () => driver.publish(),
    used: () => drain(() => driver.takeUsed()),
  };
}

function drain(
  take: () => { token: number; len: number } | null,
): { token: number; len: number }[] {
  const out = [];
  for (let u = take(); u !== null; u = take()) out.push({ token: u.token, len: u.len });
  return out;
}

/** A packet: header (num_buffers set by deliverCopies) and a frame of bytes from `seed`. */
function packet(c: Case): Uint8Array {
  const p = new Uint8Array(c.header + c.frame);
  for (let i = 0; i < p.length; i++) p[i] = (c.seed + i * 7) & 0xff;
  return p;
}

const cases: fc.Arbitrary<Case> = fc.record({
  packed: fc.boolean(),
  header: fc.constantFrom(10 as const, 12 as const),
  frame: fc.oneof(
    fc.integer({ min: 0, max: 300 }),
    fc.constantFrom(60, 61, 62, 63, 64, 65, 252, 253, 256, 257, 1514),
  ),
  shift: fc.integer({ min: 0, max: 7 }),
  regionShift: fc.integer({ min: 0, max: 7 }),
  before: fc.array(fc.integer({ min: 0, max: 2 }), { minLength: BUFFERS, maxLength: BUFFERS }),
  differing: fc.integer({ min: 0, max: 11 }),
  seed: fc.integer({ min: 0, max: 255 }),
});

function check(c: Case): void {
  const r = ring(c);
  const p = packet(c);
  // num_buffers as deliverCopies sets it (12-byte header only), to seed the old headers.
  const expected = p.slice();
  if (c.header === 12) expected.set([1, 0], 10);
  for (let i = 0; i < BUFFERS; i++) {
    const bytes = r.memory.bytes(DATA + i * STRIDE + c.shift, BUFFER_LEN);
    bytes.fill(0xee);
    if (c.before[i] === 0) bytes.fill(0, 0, c.header);
    else bytes.set(expected.subarray(0, c.header));
    if (c.before[i] === 2) bytes[c.differing % c.header] ^= 0x5a;
    r.post(i);
  }
  r.publish();
  const delivery = new ReceiveDelivery(r.queue, {
    headerSize: c.header,
    mergeable: c.header === 12,
  });
  assert.equal(delivery.deliverCopies(p, BUFFERS), BUFFERS);
  r.queue.publishUsed();
  assert.deepEqual(
    r.used(),
    Array.from({ length: BUFFERS }, (_, i) => ({ token: i, len: p.length })),
  );
  for (let i = 0; i < BUFFERS; i++) {
    const bytes = r.memory.bytes(DATA + i * STRIDE + c.shift, BUFFER_LEN);
    assert.deepEqual(bytes.subarray(0, p.length), expected, `buffer ${i}: header and frame`);
    assert.ok(
      bytes.subarray(p.length).every((b) => b === 0xee),
      `buffer ${i}: nothing past the packet`,
    );
  }
  assert.equal(delivery.counters.packets, BUFFERS);
  assert.equal(delivery.counters.bytes, BUFFERS * c.frame);
}

Deno.test("receive copies: every byte lands, for any frame length, alignment and old header", () => {
  fc.assert(fc.property(cases, (c) => check(c)), { numRuns: 400 });
});

Deno.test("receive copies: a header differing in any one byte is written over", () => {
  // The header a buffer holds is skipped only when all of it matches: each
  // byte of it, changed, must come back as the packet's.
  for (const packed of [false, true]) {
    for (let differing = 0; differing < 12; differing++) {
      check({
        packed,
        header: 12,
        frame: 64,
        shift: 0,
        regionShift: 0,
        before: [2, 1, 2, 0, 2, 1, 2, 2],
        differing,
        seed: 3,
      });
    }
  }
});

Deno.test("receive copies: a short frame copied word by word ends at its last byte", () => {
  // 57..59- and 61..63-byte frames end inside a word: the word copy writes none of the
  // bytes after it (0xee must stay).
  for (const frame of [57, 58, 59, 61, 62, 63]) {
    for (const packed of [false, true]) {
      check({
        packed,
        header: 12,
        frame,
        shift: 0,
        regionShift: 0,
        before: [1, 1, 1, 1, 1, 1, 1, 1],
        differing: 0,
        seed: frame,
      });
    }
  }
});
