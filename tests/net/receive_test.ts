// ReceiveDelivery against a real SplitQueue, with the guest side of the
// ring driven by SplitQueueDriver over the same memory (virtio 1.2 §5.1.6.4).

import assert from "node:assert/strict";
import {
  DescriptorChain,
  DescriptorChainError,
  DirtyLog,
  GuestMemory,
  SplitQueue,
  SplitQueueDriver,
  type SplitQueueDriverLayout,
  type UsedBuffer,
  VIRTQ_DESC_F_WRITE,
} from "@vhost-mdev/sdk";
import {
  readNumBuffers,
  ReceiveDelivery,
  type ReceiveDeliveryOptions,
  ReceiveOverrunError,
  ReceiveResult,
} from "@vhost-mdev/sdk/net";

const BASE = 0x100000;
const SIZE = 0x40000;
const RING = BASE + 0x1000;
/** Receive buffers: 4 KiB apart from here, buffer `i` at `buf(i)`. */
const DATA = BASE + 0x10000;

function buf(i: number): number {
  return DATA + i * 0x1000;
}

interface Rx {
  memory: GuestMemory;
  layout: SplitQueueDriverLayout;
  driver: SplitQueueDriver;
  queue: SplitQueue;
  delivery: ReceiveDelivery;
  malformed: [number, number][];
  chainErrors: unknown[];
}

function rx(
  options: Partial<ReceiveDeliveryOptions> & { num?: number; reserved?: number } = {},
): Rx {
  const num = options.num ?? 16;
  const memory = GuestMemory.fromBuffers([{ gpa: BASE, bytes: new Uint8Array(SIZE) }]);
  const layout = SplitQueueDriver.layout(num, RING);
  const driver = new SplitQueueDriver(memory, layout, {
    eventIdx: false,
    reserved: options.reserved ?? 0,
  });
  const queue = new SplitQueue(memory, layout, {
    lastAvailIdx: 0,
    eventIdx: false,
    indirect: false,
  });
  const malformed: [number, number][] = [];
  const chainErrors: unknown[] = [];
  const delivery = new ReceiveDelivery(queue, {
    headerSize: 12,
    mergeable: true,
    onMalformed: (head, writable) => malformed.push([head, writable]),
    onChainError: (e) => {
      chainErrors.push(e);
      return !(e instanceof DescriptorChainError && e.kind === "bad-avail-idx");
    },
    ...options,
  });
  return { memory, layout, driver, queue, delivery, malformed, chainErrors };
}

/** Post receive buffers (one writable descriptor each, or the given segments) as tokens 0, 1, ... */
function post(r: Rx, chains: (number | number[])[], firstToken = 0): void {
  chains.forEach((c, i) => {
    const token = firstToken + i;
    const lens = typeof c === "number" ? [c] : c;
    const ok = r.driver.add(
      lens.map((len, j) => ({ gpa: buf(token) + j * 0x100, len, write: true })),
      token,
    );
    assert.ok(ok, "room in the ring");
  });
  r.driver.publish();
}

function used(r: Rx): UsedBuffer[] {
  r.queue.publishUsed();
  const out: UsedBuffer[] = [];
  for (let u = r.driver.takeUsed(); u !== null; u = r.driver.takeUsed()) out.push(u);
  return out;
}

/** A frame behind a zero 12-byte header (or `hdr` bytes), with a byte pattern. */
function packet(frameLength: number, hdr = 12): Uint8Array {
  const p = new Uint8Array(hdr + frameLength);
  for (let i = 0; i < frameLength; i++) p[hdr + i] = (i * 7 + 3) & 0xff;
  return p;
}

/** What token `t`'s buffer holds in its first `len` bytes (one descriptor). */
function read(r: Rx, token: number, len: number): Uint8Array {
  return r.memory.bytes(buf(token), len).slice();
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

Deno.test("receive: a frame that fits one buffer, num_buffers 1", () => {
  const r = rx();
  post(r, [2048]);
  const p = packet(60);
  p[10] = 0xee; // a stale num_buffers is overwritten
  assert.equal(r.delivery.deliver(p, p.length), ReceiveResult.DELIVERED);
  assert.deepEqual(used(r), [{ token: 0, len: 72 }]);
  const got = read(r, 0, 72);
  assert.equal(readNumBuffers(got, 0), 1);
  assert.deepEqual(got.subarray(12), p.subarray(12));
  assert.deepEqual(r.delivery.counters, { packets: 1, bytes: 60, drops: 0, errors: 0 });
  assert.equal(r.delivery.active, false);
  assert.equal(r.delivery.held, 0);
});

Deno.test("receive: the legacy 10-byte header has no num_buffers", () => {
  const r = rx({ headerSize: 10, mergeable: false });
  post(r, [2048]);
  const p = packet(60, 10);
  assert.equal(r.delivery.deliver(p, p.length), ReceiveResult.DELIVERED);
  assert.deepEqual(used(r), [{ token: 0, len: 70 }]);
  assert.deepEqual(read(r, 0, 70), p);
  assert.throws(
    () => new ReceiveDelivery(r.queue, { headerSize: 10, mergeable: true }),
    RangeError,
  );
  assert.throws(
    () => new ReceiveDelivery(r.queue, { headerSize: 11, mergeable: false }),
    RangeError,
  );
});

Deno.test("receive: with MRG_RXBUF a frame spans 3 buffers and num_buffers says 3", () => {
  const r = rx();
  post(r, [64, 64, 64, 64]);
  const p = packet(150); // 162 bytes: 64 + 64 + 34
  assert.equal(r.delivery.deliver(p, p.length), ReceiveResult.DELIVERED);
  assert.deepEqual(used(r), [{ token: 0, len: 64 }, { token: 1, len: 64 }, { token: 2, len: 34 }]);
  const got = concat([read(r, 0, 64), read(r, 1, 64), read(r, 2, 34)]);
  assert.equal(readNumBuffers(got, 0), 3);
  assert.deepEqual(got.subarray(12), p.subarray(12));
  assert.deepEqual(r.delivery.counters, { packets: 1, bytes: 150, drops: 0, errors: 0 });
  assert.equal(r.queue.available(), 1, "the fourth buffer is left");
});

Deno.test("receive: num_buffers lands in the first chain when its header spans descriptors", () => {
  const r = rx();
  // First chain: 8 bytes, then 4 (bytes 8..11 of the header), then 52.
  post(r, [[8, 4, 52], 64]);
  const p = packet(100); // 112 bytes: 64 + 48
  assert.equal(r.delivery.deliver(p, p.length), ReceiveResult.DELIVERED);
  assert.deepEqual(used(r), [{ token: 0, len: 64 }, { token: 1, len: 48 }]);
  const first = concat([
    r.memory.bytes(buf(0), 8),
    r.memory.bytes(buf(0) + 0x100, 4),
    r.memory.bytes(buf(0) + 0x200, 52),
  ]);
  assert.equal(readNumBuffers(first, 0), 2);
  assert.deepEqual(concat([first, read(r, 1, 48)]).subarray(12), p.subarray(12));
});

Deno.test("receive: without MRG_RXBUF a frame too large for the buffer is dropped, the buffer returned empty", () => {
  const r = rx({ mergeable: false });
  post(r, [64, 64]);
  const p = packet(100);
  assert.equal(r.delivery.deliver(p, p.length), ReceiveResult.DROPPED);
  assert.deepEqual(used(r), [{ token: 0, len: 0 }]);
  assert.deepEqual(r.delivery.counters, { packets: 0, bytes: 0, drops: 1, errors: 0 });
  assert.equal(r.queue.available(), 1, "only one buffer was taken");
  // The next frame that fits goes into the next buffer.
  const small = packet(40);
  assert.equal(r.delivery.deliver(small, small.length), ReceiveResult.DELIVERED);
  assert.deepEqual(used(r), [{ token: 1, len: 52 }]);
});

Deno.test("receive: a first buffer smaller than the header is returned empty before the frame", () => {
  const r = rx();
  post(r, [8, 2048]);
  const p = packet(60);
  assert.equal(r.delivery.deliver(p, p.length), ReceiveResult.DELIVERED);
  assert.deepEqual(used(r), [{ token: 0, len: 0 }, { token: 1, len: 72 }]);
  assert.deepEqual(r.malformed, [[0, 8]]);
  assert.deepEqual(r.delivery.counters, { packets: 1, bytes: 60, drops: 0, errors: 1 });
  assert.equal(readNumBuffers(read(r, 1, 12), 0), 1);
});

Deno.test("receive: a middle buffer smaller than the header is returned empty after the frame", () => {
  const r = rx();
  post(r, [64, 8, 64, 64]);
  const p = packet(150);
  assert.equal(r.delivery.deliver(p, p.length), ReceiveResult.DELIVERED);
  assert.deepEqual(used(r), [
    { token: 0, len: 64 },
    { token: 2, len: 64 },
    { token: 3, len: 34 },
    { token: 1, len: 0 },
  ]);
  assert.deepEqual(r.malformed, [[1, 8]]);
  const got = concat([read(r, 0, 64), read(r, 2, 64), read(r, 3, 34)]);
  assert.equal(readNumBuffers(got, 0), 3);
  assert.deepEqual(got.subarray(12), p.subarray(12));
  assert.equal(r.delivery.counters.errors, 1);
});

Deno.test("receive: the ring runs dry mid-frame, delivery resumes when buffers come", () => {
  const r = rx();
  post(r, [64]);
  const p = packet(150);
  r.delivery.begin(p, p.length);
  assert.equal(r.delivery.resume(), ReceiveResult.WAITING);
  assert.equal(r.delivery.active, true);
  assert.equal(r.delivery.held, 1, "the first buffer is held");
  assert.deepEqual(used(r), [], "nothing pushed while the frame is incomplete");
  assert.equal(r.delivery.resume(), ReceiveResult.WAITING, "still nothing");
  post(r, [64], 1);
  assert.equal(r.delivery.resume(), ReceiveResult.WAITING);
  assert.equal(r.delivery.held, 2);
  post(r, [64], 2);
  assert.equal(r.delivery.resume(), ReceiveResult.DELIVERED);
  assert.equal(r.delivery.active, false);
  assert.equal(r.delivery.held, 0);
  assert.deepEqual(used(r), [{ token: 0, len: 64 }, { token: 1, len: 64 }, { token: 2, len: 34 }]);
  const got = concat([read(r, 0, 64), read(r, 1, 64), read(r, 2, 34)]);
  assert.equal(readNumBuffers(got, 0), 3);
  assert.deepEqual(got.subarray(12), p.subarray(12));
  assert.deepEqual(r.delivery.counters, { packets: 1, bytes: 150, drops: 0, errors: 0 });
});

Deno.test("receive: a frame holding every buffer of the ring and wanting more is an overrun", () => {
  // A 4-entry ring; one 16-byte buffer made available again and again.
  const r = rx({ num: 4, reserved: 1 });
  r.driver.writeDescriptor(3, buf(0), 16, VIRTQ_DESC_F_WRITE, 0);
  for (let i = 0; i < 3; i++) r.driver.addRaw(3, 0);
  r.driver.publish();
  const p = packet(100);
  r.delivery.begin(p, p.length);
  assert.equal(r.delivery.resume(), ReceiveResult.WAITING, "3 buffers of 16 bytes: 48 of 112");
  assert.equal(r.delivery.held, 3);
  // The fourth fills the ring's worth; the frame wants a fifth.
  r.driver.addRaw(3, 0);
  r.driver.publish();
  let err: unknown = null;
  try {
    r.delivery.resume();
  } catch (e) {
    err = e;
  }
  assert.ok(err instanceof ReceiveOverrunError);
  assert.equal(err.length, 112);
  assert.equal(err.buffers, 4);
  assert.match(err.message, /took all 4 receive buffers/);
  assert.equal(r.delivery.active, true, "the frame stays in progress");
});

Deno.test("receive: a hostile chain is counted and returned, after the frame when met mid-frame", () => {
  const r = rx({ reserved: 2 });
  post(r, [64]);
  r.driver.writeDescriptor(15, 0x9_0000_0000, 64, VIRTQ_DESC_F_WRITE, 0); // outside memory
  r.driver.addRaw(15, 99);
  r.driver.publish();
  post(r, [64, 64], 1);
  const p = packet(150);
  assert.equal(r.delivery.deliver(p, p.length), ReceiveResult.DELIVERED);
  assert.deepEqual(used(r), [
    { token: 0, len: 64 },
    { token: 1, len: 64 },
    { token: 2, len: 34 },
    { token: 99, len: 0 },
  ]);
  assert.equal(r.chainErrors.length, 1);
  assert.equal((r.chainErrors[0] as DescriptorChainError).kind, "out-of-bounds");
  assert.equal(r.delivery.counters.errors, 1);
  // Met before a frame's first buffer, it goes back at once.
  r.driver.addRaw(15, 98);
  r.driver.publish();
  post(r, [2048], 3);
  assert.equal(r.delivery.deliver(p, p.length), ReceiveResult.DELIVERED);
  assert.deepEqual(used(r), [{ token: 98, len: 0 }, { token: 3, len: 162 }]);
  assert.equal(r.delivery.counters.errors, 2);
});

Deno.test("receive: a chain error hook that stops the ring leaves the frame waiting", () => {
  const r = rx();
  post(r, [64]);
  const p = packet(150);
  r.delivery.begin(p, p.length);
  assert.equal(r.delivery.resume(), ReceiveResult.WAITING);
  // avail.idx far ahead of the device: bad-avail-idx, and the hook stops.
  const idx = r.memory.bytes(r.layout.availAddr + 2, 2);
  const saved = idx.slice();
  idx[1] = (idx[1] + 1) & 0xff; // 256 entries ahead
  assert.equal(r.delivery.resume(), ReceiveResult.WAITING);
  assert.equal((r.chainErrors[0] as DescriptorChainError).kind, "bad-avail-idx");
  assert.equal(r.delivery.counters.errors, 1);
  assert.equal(r.delivery.held, 1);
  idx.set(saved);
  post(r, [64, 64], 1);
  assert.equal(r.delivery.resume(), ReceiveResult.DELIVERED);
  assert.equal(used(r).length, 3);
});

Deno.test("receive: drop gives the held buffers back empty and counts a drop", () => {
  const r = rx();
  post(r, [64, 8]);
  const p = packet(150);
  assert.equal(r.delivery.deliver(p, p.length), ReceiveResult.WAITING);
  assert.equal(r.delivery.held, 2, "the buffer and the malformed one");
  r.delivery.drop();
  assert.equal(r.delivery.active, false);
  assert.deepEqual(used(r), [{ token: 0, len: 0 }, { token: 1, len: 0 }]);
  assert.deepEqual(r.delivery.counters, { packets: 0, bytes: 0, drops: 1, errors: 1 });
  r.delivery.drop(); // nothing in progress: nothing happens
  assert.equal(r.delivery.counters.drops, 1);
});

Deno.test("receive: written bytes and num_buffers are marked in the dirty log", () => {
  const r = rx();
  const log = DirtyLog.fromBytes(new Uint8Array(Math.ceil((BASE + SIZE) / 4096 / 8)));
  r.delivery.setLog(log);
  post(r, [64, 64]);
  const p = packet(100);
  assert.equal(r.delivery.deliver(p, p.length), ReceiveResult.DELIVERED);
  for (const t of [0, 1]) {
    assert.ok(log.isDirty(buf(t)), `page of buffer ${t}`);
  }
});

Deno.test("receive: deliverCopies fills posted buffers with the packet, spanning where needed", () => {
  const r = rx();
  post(r, [2048, 2048, 64, 64, 64, 2048]);
  const p = packet(150);
  p[10] = 9; // num_buffers is set to 1 in the packet
  assert.equal(r.delivery.deliverCopies(p, 16), 4, "2 copies, 1 spanning 3 buffers, 1 copy");
  assert.deepEqual(used(r), [
    { token: 0, len: 162 },
    { token: 1, len: 162 },
    { token: 2, len: 64 },
    { token: 3, len: 64 },
    { token: 4, len: 34 },
    { token: 5, len: 162 },
  ]);
  assert.equal(readNumBuffers(read(r, 0, 12), 0), 1);
  assert.equal(readNumBuffers(read(r, 2, 12), 0), 3);
  assert.equal(readNumBuffers(p, 0), 1);
  assert.deepEqual(read(r, 5, 162), p);
  assert.deepEqual(r.delivery.counters, { packets: 4, bytes: 600, drops: 0, errors: 0 });
  assert.equal(r.delivery.active, false);
});

Deno.test("receive: deliverCopies stops at the limit, and waits mid-frame with the frame kept", () => {
  const r = rx();
  post(r, [2048, 2048, 2048, 64]);
  const p = packet(150);
  assert.equal(r.delivery.deliverCopies(p, 2), 2);
  assert.equal(r.delivery.deliverCopies(p, 8), 1, "the third copy, then a frame waits");
  assert.equal(r.delivery.active, true);
  assert.equal(r.delivery.held, 1);
  post(r, [64, 64], 4);
  assert.equal(r.delivery.resume(), ReceiveResult.DELIVERED);
  assert.deepEqual(used(r).map((u) => u.len), [162, 162, 162, 64, 64, 34]);
  assert.equal(r.delivery.counters.packets, 4);
});

Deno.test("receive: deliverCopies returns a hostile chain in ring order, between the copies", () => {
  const r = rx({ reserved: 2 });
  post(r, [2048, 2048]);
  r.driver.writeDescriptor(15, 0x9_0000_0000, 64, VIRTQ_DESC_F_WRITE, 0); // outside memory
  r.driver.addRaw(15, 99);
  r.driver.publish();
  post(r, [2048], 2);
  const p = packet(60);
  assert.equal(r.delivery.deliverCopies(p, 16), 3);
  assert.deepEqual(used(r), [
    { token: 0, len: 72 },
    { token: 1, len: 72 },
    { token: 99, len: 0 },
    { token: 2, len: 72 },
  ]);
  for (const t of [0, 1, 2]) assert.deepEqual(read(r, t, 72), p, `buffer ${t} holds the packet`);
  assert.deepEqual(r.delivery.counters, { packets: 3, bytes: 180, drops: 0, errors: 1 });
});

Deno.test("receive: deliverCopies takes more chains in one call than the ring holds", () => {
  // A packed ring's driver can post buffers again while the device holds
  // them: a queue handing out the ring's 4 buffers over and over, 10 chains.
  const r = rx({ num: 4 });
  post(r, [2048, 2048, 2048, 2048]);
  class Repeating extends SplitQueue {
    taken = 0;
    override popWritable(): number {
      return 0; // every chain through pop
    }
    override pop(chain: DescriptorChain): boolean {
      if (this.taken === 10) return false;
      this.popHead(this.taken++ % 4, chain);
      return true;
    }
  }
  const queue = new Repeating(r.memory, r.layout, {
    lastAvailIdx: 0,
    eventIdx: false,
    indirect: false,
  });
  const delivery = new ReceiveDelivery(queue, { headerSize: 12, mergeable: true });
  const p = packet(60);
  assert.equal(delivery.deliverCopies(p, 16), 10);
  assert.equal(queue.counters.used, 10, "every chain taken was returned");
  queue.publishUsed();
  // The used ring (not the test driver, which refuses a device this far ahead):
  // idx 10, its 4 slots the last 4 chains, heads 2, 3, 0, 1 at slots 2, 3, 0, 1.
  const ring = new DataView(r.memory.bytes(r.layout.usedAddr, 4 + 8 * 4).slice().buffer);
  assert.equal(ring.getUint16(2, true), 10);
  for (let slot = 0; slot < 4; slot++) {
    assert.deepEqual([ring.getUint32(4 + slot * 8, true), ring.getUint32(8 + slot * 8, true)], [
      slot,
      72,
    ]);
  }
  for (const t of [0, 1, 2, 3]) assert.deepEqual(read(r, t, 72), p);
});
