// The kick relay under a kick flood: kicks of one ring are coalesced while
// one is on its way to the main thread, so the queue between the threads
// never holds more than one message per ring and the main thread stays free.

import assert from "node:assert/strict";
import { KickRelay } from "../../sdk/core/kick_relay.ts";
import { close, dup, eventfd, eventfdWrite } from "@vhost-mdev/sdk/sys";
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
