// The kick relay under a kick flood: kicks of one ring are coalesced while
// one is on its way to the main thread, so the queue between the threads
// never holds more than one message per ring and the main thread stays free.
// A ring with a doorbell is rung by the relay Worker itself: the value lands
// in memory and the main thread hears nothing of that ring.

import assert from "node:assert/strict";
import { KickRelay } from "../../sdk/core/kick_relay.ts";
import { close, dup, eventfd, eventfdWrite, mmapAnonymous } from "@vhost-mdev/sdk/sys";
import { until } from "@vhost-mdev/testing";
import type { Doorbell } from "../../sdk/core/doorbell.ts";
import { settledFdCount } from "../support/peers.ts";

Deno.test("a kick flood costs at most one pending message per ring", async () => {
  const kicks = [eventfd(0, { nonBlocking: true }), eventfd(0, { nonBlocking: true })];
  const seen = [0, 0];
  let maxPending = 0;
  let relay: KickRelay | null = null;
  relay = new KickRelay(
    kicks.map((fd, queue) => ({ queue, fd })),
    (q) => {
      seen[q]++;
      maxPending = Math.max(maxPending, relay!.pendingKicks);
    },
  );
  // A frontend kicking as fast as it can while this thread is busy: the
  // Worker sees thousands of kicks, the main thread gets at most two messages.
  const end = performance.now() + 200;
  let written = 0;
  while (performance.now() < end) {
    for (const fd of kicks) eventfdWrite(fd, 1);
    written++;
  }
  assert.ok(relay.pendingKicks <= 2, `${relay.pendingKicks} kick messages pending`);
  // Once the main thread turns, each ring is notified and the flag cleared.
  const deadline = Date.now() + 2000;
  while ((seen[0] === 0 || seen[1] === 0) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 5));
  }
  assert.ok(seen[0] >= 1 && seen[1] >= 1, `notified ${seen}`);
  assert.ok(seen[0] < written, "kicks were coalesced");
  assert.ok(maxPending <= 2);
  // A kick after the flood still arrives.
  const before = seen[0];
  eventfdWrite(kicks[0], 1);
  while (seen[0] === before && Date.now() < deadline + 2000) {
    await new Promise((r) => setTimeout(r, 5));
  }
  assert.equal(seen[0], before + 1);
  await relay.stop();
  for (const fd of kicks) close(fd);
});

Deno.test("the relay holds its own fds: the ring's fd may be closed under it", async () => {
  // Count from a second relay: the first Worker start creates runtime fds for good.
  const warmFd = eventfd(0, { nonBlocking: true });
  const warm = new KickRelay([{ queue: 0, fd: warmFd }], () => {});
  await warm.stop();
  close(warmFd);
  const baseline = await settledFdCount();
  const kick = eventfd(0, { nonBlocking: true });
  const frontendCopy = dup(kick);
  let notified = 0;
  const relay = new KickRelay([{ queue: 3, fd: kick }], () => notified++);
  close(kick); // the core replaced the ring's kick fd while the relay still ran
  eventfdWrite(frontendCopy, 1);
  const deadline = Date.now() + 2000;
  while (notified === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  assert.equal(notified, 1, "the relay polls its own duplicate");
  await relay.stop();
  close(frontendCopy);
  assert.equal(await settledFdCount(), baseline, "the relay closed its duplicate and stop fd");
});

Deno.test("a ring with a doorbell is rung by the Worker, not notified", async () => {
  using page = mmapAnonymous(4096);
  const reg = new Uint16Array(page.buffer, 0x40, 1);
  const kick = eventfd(0, { nonBlocking: true });
  const notified: number[] = [];
  const errors: string[] = [];
  const relay = new KickRelay(
    [{ queue: 5, fd: kick, doorbell: { address: page.address + 0x40, width: 2, value: 5 } }],
    (q) => notified.push(q),
    (m) => errors.push(m),
  );
  try {
    eventfdWrite(kick, 1);
    await until("the doorbell to be stored", () => Atomics.load(reg, 0) === 5, 2000, 1);
    await until("the count of doorbells rung", () => relay.doorbellsRung(5) === 1, 2000, 1);
    // Ring again after a reset: each kick is one store.
    Atomics.store(reg, 0, 0);
    eventfdWrite(kick, 1);
    await until("the second store", () => Atomics.load(reg, 0) === 5, 2000, 1);
    await until("two doorbells rung", () => relay.doorbellsRung(5) === 2, 2000, 1);
    // Give a stray message time to arrive: there must be none.
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(notified, [], "the main thread was not told of a doorbell ring's kicks");
    assert.equal(relay.pendingKicks, 0);
    assert.equal(relay.doorbellsRung(4), 0, "an unwatched ring rang nothing");
    // Nothing next to the register was touched.
    const bytes = new Uint8Array(page.buffer);
    assert.equal(bytes[0x3f] + bytes[0x42], 0);
  } finally {
    await relay.stop();
    close(kick);
  }
  assert.deepEqual(errors, []);
});

Deno.test("under a kick flood every kick is followed by a doorbell store", async () => {
  using page = mmapAnonymous(4096);
  const reg = new Uint16Array(page.buffer, 0, 1);
  const kick = eventfd(0, { nonBlocking: true });
  const notified: number[] = [];
  const relay = new KickRelay(
    [{ queue: 7, fd: kick, doorbell: { address: page.address, width: 2, value: 7 } }],
    (q) => notified.push(q),
  );
  try {
    // The device "consumes" each notification (reset to 0) just before the
    // frontend kicks again: whatever the interleaving, the last kick must be
    // followed by a store.
    const end = performance.now() + 100;
    let written = 0;
    while (performance.now() < end) {
      Atomics.store(reg, 0, 0);
      eventfdWrite(kick, 1);
      written++;
    }
    await until("a store after the last kick", () => Atomics.load(reg, 0) === 7, 2000, 1);
    const rung = relay.doorbellsRung(7);
    assert.ok(rung >= 1 && rung <= 2 * written, `${rung} stores for ${written} kicks`);
    assert.deepEqual(notified, []);
  } finally {
    await relay.stop();
    close(kick);
  }
});

Deno.test("a mixed relay rings one ring's doorbell and notifies the other", async () => {
  using page = mmapAnonymous(4096);
  const reg = new Uint32Array(page.buffer, 0x100, 1);
  const kicks = [eventfd(0, { nonBlocking: true }), eventfd(0, { nonBlocking: true })];
  const notified: number[] = [];
  const relay = new KickRelay(
    [
      // 32 bits: notification data (virtio 1.2 §4.1.5.2), vqn 0 with next_off 0x1234.
      {
        queue: 0,
        fd: kicks[0],
        doorbell: { address: page.address + 0x100, width: 4, value: 0x1234_0000 },
      },
      { queue: 1, fd: kicks[1] },
    ],
    (q) => notified.push(q),
  );
  try {
    eventfdWrite(kicks[0], 1);
    eventfdWrite(kicks[1], 1);
    await until("ring 0's doorbell", () => Atomics.load(reg, 0) === 0x1234_0000, 2000, 1);
    await until(() => `ring 1's notify (got ${notified})`, () => notified.length === 1, 2000, 1);
    assert.deepEqual(notified, [1]);
    assert.equal(relay.doorbellsRung(0), 1);
    assert.equal(relay.doorbellsRung(1), 0, "ring 1 has no doorbell");
    // Another kick of ring 0 alone: a store, no notify.
    Atomics.store(reg, 0, 0);
    eventfdWrite(kicks[0], 1);
    await until("ring 0's second store", () => Atomics.load(reg, 0) === 0x1234_0000, 2000, 1);
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(notified, [1]);
    assert.equal(relay.doorbellsRung(0), 2);
  } finally {
    await relay.stop();
    for (const fd of kicks) close(fd);
  }
});

Deno.test("a malformed doorbell is refused before anything starts", async (t) => {
  const kick = eventfd(0, { nonBlocking: true });
  using page = mmapAnonymous(4096);
  const cases: [string, Doorbell, RegExp][] = [
    [
      "unaligned",
      { address: page.address + 1, width: 2, value: 0 },
      /doorbell of ring 2: address 0x[0-9a-f]+ is not aligned to its width 2/,
    ],
    [
      "unaligned for 4 bytes",
      { address: page.address + 2, width: 4, value: 0 },
      /not aligned to its width 4/,
    ],
    [
      "width 3",
      { address: page.address, width: 3 as 2, value: 0 },
      /doorbell of ring 2: width 3 is not 2 or 4/,
    ],
    [
      "address 0",
      { address: 0, width: 2, value: 0 },
      /doorbell of ring 2: address 0 is not a valid address/,
    ],
    [
      "value too wide",
      { address: page.address, width: 2, value: 0x10000 },
      /doorbell of ring 2: value 65536 does not fit in 2 bytes/,
    ],
  ];
  const baseline = await settledFdCount();
  for (const [name, doorbell, message] of cases) {
    await t.step(name, () => {
      assert.throws(
        () => new KickRelay([{ queue: 2, fd: kick, doorbell }], () => {}),
        (e: unknown) => e instanceof RangeError && message.test(e.message),
      );
    });
  }
  assert.equal(await settledFdCount(), baseline, "a refused relay holds no fds");
  close(kick);
});
