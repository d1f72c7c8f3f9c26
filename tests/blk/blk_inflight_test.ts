// Inflight I/O tracking (vhost-user INFLIGHT_SHMFD, split rings): the queue
// region's bookkeeping as the spec's "Inflight I/O tracking" steps describe
// it, the region the backend makes for GET_INFLIGHT_FD, hostile regions
// from SET_INFLIGHT_FD refused, and a blk device whose rings mark and clear
// the region while a guest writes.

import assert from "node:assert/strict";
import { ProtocolFeatureBit } from "@vhost-mdev/sdk/vhost-user";
import {
  INFLIGHT_VERSION,
  InflightQueue,
  inflightQueueBytes,
  InflightRegion,
  RequestRefused,
} from "@vhost-mdev/sdk";
import {
  close,
  F_SEAL_GROW,
  F_SEAL_SEAL,
  F_SEAL_SHRINK,
  fstat,
  ftruncate,
  getSeals,
  memfdCreate,
  mmap,
  openFdCount,
  pwrite,
} from "@vhost-mdev/sdk/sys";
import { fileRange, randomBytes, withBlk } from "./rig.ts";

const N = 8;

/** A queue region of N descriptors, its buffer, and a view of its bytes. */
function region(): { q: InflightQueue; buffer: ArrayBuffer; view: DataView } {
  const buffer = new ArrayBuffer(inflightQueueBytes(N));
  return { q: new InflightQueue(buffer, N), buffer, view: new DataView(buffer) };
}

Deno.test("inflight queue: a new region is initialized; heads marked on take, cleared after publish", () => {
  const { q, view } = region();
  const r = q.recover(5);
  assert.equal(r.initialized, true);
  assert.equal(r.lastAvailIdx, null, "a fresh region keeps the frontend's base");
  assert.equal(view.getUint16(8, true), INFLIGHT_VERSION);
  assert.equal(view.getUint16(10, true), N, "desc_num");
  assert.equal(view.getUint16(14, true), 5, "used_idx");
  q.begin(3);
  q.begin(1);
  assert.ok(q.isInflight(3) && q.isInflight(1));
  assert.equal(view.getBigUint64(16 + 16 * 3 + 8, true), 0n, "counter of the first head");
  assert.equal(view.getBigUint64(16 + 16 * 1 + 8, true), 1n, "counter of the second head");
  q.complete(3);
  assert.equal(view.getUint16(12, true), 3, "last_batch_head");
  assert.ok(q.isInflight(3), "still marked until used.idx is published");
  q.published(6);
  assert.ok(!q.isInflight(3));
  assert.ok(q.isInflight(1));
  assert.equal(q.usedIdx, 6);
});

Deno.test("inflight queue: after a crash, heads in flight come back oldest first, past used.idx", () => {
  const { q, buffer } = region();
  q.recover(0);
  for (const h of [5, 2, 7, 0]) q.begin(h);
  q.complete(5);
  q.published(1); // 5 done
  q.complete(2); // on the used ring, not published: still in flight
  // A new backend over the same region, used.idx still 1.
  const again = new InflightQueue(buffer, N);
  const r = again.recover(1);
  assert.equal(r.initialized, false);
  assert.deepEqual(r.resubmit, [2, 7, 0], "in the order they were taken");
  assert.equal(r.lastAvailIdx, 4, "used.idx + 3 in flight");
  assert.equal(r.cleared, 0);
  // New heads are stamped after the resubmitted ones.
  again.begin(6);
  assert.deepEqual(new InflightQueue(buffer, N).recover(1).resubmit, [2, 7, 0, 6]);
});

Deno.test("inflight queue: a batch published but not unmarked is unmarked on recovery", () => {
  const { q, buffer } = region();
  q.recover(10);
  for (const h of [1, 4, 6]) q.begin(h);
  q.complete(1);
  q.complete(4);
  // Crash after used.idx became 12, before the batch was unmarked.
  const r = new InflightQueue(buffer, N).recover(12);
  assert.equal(r.cleared, 2);
  assert.deepEqual(r.resubmit, [6]);
  assert.equal(r.lastAvailIdx, 13);
});

Deno.test("inflight queue: hostile regions: links outside the ring counted, wrong desc_num or version refused", () => {
  const { q, buffer, view } = region();
  q.recover(0);
  q.begin(2);
  view.setUint16(12, 999, true); // last_batch_head out of range
  const r = new InflightQueue(buffer, N).recover(3);
  assert.equal(r.badLinks, 1);
  assert.deepEqual(r.resubmit, [2]);
  view.setUint16(10, N * 2, true);
  assert.throws(() => new InflightQueue(buffer, N).recover(3), /tracks 16 descriptors/);
  view.setUint16(10, N, true);
  view.setUint16(8, 9, true);
  assert.throws(() => new InflightQueue(buffer, N).recover(3), /version 9/);
  assert.throws(() => new InflightQueue(new ArrayBuffer(32), N), /cannot track/);
});

Deno.test("inflight region: GET_INFLIGHT_FD makes a sealed zeroed memfd; SET_INFLIGHT_FD checks what it maps", () => {
  const before = openFdCount();
  const { region: made, fd, shape } = InflightRegion.create(2, 128, 2);
  try {
    assert.equal(shape.mmapSize, 2 * inflightQueueBytes(128));
    assert.equal(fstat(fd).size, shape.mmapSize);
    const seals = getSeals(fd) ?? 0;
    assert.equal(
      seals & (F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL),
      F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL,
    );
    // The same region comes back from the frontend: accepted.
    InflightRegion.map(fd, shape, { maxQueues: 2 }).close();
    // Too small, too many queues, a bad queue size: refused with the reason.
    assert.throws(
      () => InflightRegion.map(fd, { ...shape, mmapSize: 64 }, { maxQueues: 2 }),
      (e) => e instanceof RequestRefused && /less than/.test(e.message),
    );
    assert.throws(
      () => InflightRegion.map(fd, { ...shape, numQueues: 3 }, { maxQueues: 2 }),
      /not in 1..2/,
    );
    assert.throws(
      () => InflightRegion.map(fd, { ...shape, queueSize: 100 }, { maxQueues: 2 }),
      /power of two/,
    );
    // A region whose header says another version or size: refused.
    const m = mmap(fd, shape.mmapSize);
    new DataView(m.buffer).setUint16(inflightQueueBytes(128) + 8, 7, true);
    assert.throws(
      () => InflightRegion.map(fd, shape, { maxQueues: 2 }),
      /queue 1 of the region has version 7/,
    );
    new DataView(m.buffer).setUint16(inflightQueueBytes(128) + 8, 1, true);
    new DataView(m.buffer).setUint16(inflightQueueBytes(128) + 10, 64, true);
    assert.throws(() => InflightRegion.map(fd, shape, { maxQueues: 2 }), /tracks 64 descriptors/);
    m.unmap();
    // A file that could shrink is refused too.
    const loose = memfdCreate("loose");
    ftruncate(loose, shape.mmapSize);
    pwrite(loose, new Uint8Array(1), 0);
    assert.throws(() => InflightRegion.map(loose, shape, { maxQueues: 2 }), /shrink|seal/i);
    close(loose);
  } finally {
    close(fd);
    made.close();
  }
  assert.equal(openFdCount(), before, "no fd left open");
});

Deno.test("inflight region: a lease keeps it mapped past close", () => {
  const { region: r, fd } = InflightRegion.create(1, 8, 1);
  close(fd);
  const release = r.lease();
  r.close();
  const view = InflightQueue.fromShared(r.queue(0)!);
  view.recover(0); // still mapped
  release();
  release(); // idempotent
  assert.throws(() => r.queue(0), /unmapped/);
});

Deno.test("blk: INFLIGHT_SHMFD offered; the rings mark and clear the region while the guest writes", async () => {
  let fd = -1, size = 0;
  await withBlk({
    beforeStart: async (fe) => {
      const offered = await fe.getProtocolFeatures();
      assert.ok((offered >> BigInt(ProtocolFeatureBit.INFLIGHT_SHMFD)) & 1n, "offered");
      const got = await fe.getInflightFd(1, 128);
      assert.equal(got.description.numQueues, 1);
      assert.equal(got.description.queueSize, 128);
      assert.equal(got.description.mmapSize, inflightQueueBytes(128));
      fd = got.fd;
      size = got.description.mmapSize;
      // As QEMU does: hand it straight back.
      await fe.setInflightFd(fd, got.description);
    },
  }, async ({ blk, file, events }) => {
    const data = randomBytes(256 * 1024);
    for (let i = 0; i < 4; i++) {
      assert.equal(await blk.write(i * 128, data.subarray(i * 65536, (i + 1) * 65536)), 0);
    }
    assert.deepEqual(await fileRange(file, 0, data.length), data);
    // The frontend's view of the region: initialized, nothing in flight, used_idx caught up.
    const m = mmap(fd, size);
    try {
      const v = new DataView(m.buffer);
      assert.equal(v.getUint16(8, true), INFLIGHT_VERSION);
      assert.equal(v.getUint16(10, true), 128);
      assert.equal(v.getUint16(14, true), 4, "used_idx after 4 requests");
      for (let i = 0; i < 128; i++) assert.equal(v.getUint8(16 + 16 * i), 0, `head ${i} clear`);
    } finally {
      m.unmap();
    }
    assert.ok(events.some((e) => /inflight region taken from the frontend/.test(e.message)));
  });
  close(fd);
});

Deno.test("blk: --inflight false withholds INFLIGHT_SHMFD and refuses GET_INFLIGHT_FD", async () => {
  const done = new Error("checked");
  await assert.rejects(
    withBlk({
      options: { inflight: "false" },
      beforeStart: async (fe) => {
        const offered = await fe.getProtocolFeatures();
        assert.equal((offered >> BigInt(ProtocolFeatureBit.INFLIGHT_SHMFD)) & 1n, 0n);
        // A request with a reply cannot be refused with an ack: the session ends.
        await assert.rejects(fe.getInflightFd(1, 128), /closed the connection/);
        throw done;
      },
    }, () => Promise.resolve()),
    (e) => e === done,
  );
});

Deno.test("blk: a hostile SET_INFLIGHT_FD is refused with the reason, and the device goes on", async () => {
  const fd = memfdCreate("small-inflight", { allowSealing: true });
  try {
    ftruncate(fd, 64);
    await withBlk({
      beforeStart: async (fe) => {
        await fe.handshake(); // REPLY_ACK, so a refusal is an answer
        const shape = { mmapSize: 64, mmapOffset: 0, numQueues: 1, queueSize: 128 };
        await assert.rejects(fe.setInflightFd(fd, shape), /refused/);
        await assert.rejects(
          fe.setInflightFd(fd, { ...shape, mmapSize: inflightQueueBytes(128) }),
          /refused/,
        );
      },
    }, async ({ blk, events }) => {
      const warned = events.filter((e) => /SET_INFLIGHT_FD refused/.test(e.message));
      assert.match(warned[0]?.message ?? "", /mmap size 64 is less than the 2112 bytes/);
      assert.match(warned[1]?.message ?? "", /only 64 bytes long/);
      assert.equal(await blk.write(0, new Uint8Array(512).fill(7)), 0, "the device serves");
    });
  } finally {
    close(fd);
  }
});
