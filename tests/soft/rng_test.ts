// The virtio-rng example (examples/rng.ts), a device written with the
// software-device kit, served over a real vhost-user socket and driven by
// the test kit's generic guest: requests served with random bytes, counted,
// positions kept across GET_VRING_BASE and suspend/resume, malformed chains
// returned with length 0, and every fd the kit took given back.

import assert from "node:assert/strict";
import { IotlbAccess, VirtioStatus } from "@vhost-mdev/sdk";
import { until, type VirtioGuest } from "@vhost-mdev/testing";
import { driver } from "../../examples/rng.ts";
import { settledFdCount } from "../support/peers.ts";
import { type SoftRig, takeUsed, withDevice } from "./rig.ts";

/** One device-writable buffer per size, posted on ring 0 under tokens `first`, `first + 1`, ... */
function post(guest: VirtioGuest, sizes: readonly number[], first: number): Map<number, number> {
  const at = new Map<number, number>();
  sizes.forEach((size, i) => {
    const gpa = guest.allocate(size);
    assert.ok(guest.queue(0).addBuffer(gpa, size, true, first + i));
    at.set(first + i, gpa);
  });
  return at;
}

function stats(rig: SoftRig) {
  return rig.device.description.ops.stats!()[0];
}

/** Nothing comes back on ring 0 for `ms`. */
async function quiet(guest: VirtioGuest, ms = 200): Promise<void> {
  await new Promise((r) => setTimeout(r, ms));
  assert.equal(guest.queue(0).nextUsed(), false, "nothing was served while the ring stopped");
}

Deno.test("rng: each device-writable buffer comes back full of random bytes, counted", async () => {
  await withDevice(driver, async (rig) => {
    const { guest, fe } = rig;
    const ring = guest.queue(0);
    // Made available before the device started, and never kicked: the
    // device takes what is available when it starts, kick or not.
    const sizes = [1, 16, 64, 1000, 4096, 70000];
    const early = post(guest, sizes.slice(0, 3), 0);
    ring.publish();
    await guest.activate();
    const first = await takeUsed(guest, 3);
    const late = post(guest, sizes.slice(3), 3);
    // One request spanning two descriptors.
    const a = guest.allocate(100), b = guest.allocate(300);
    assert.ok(ring.add([{ gpa: a, len: 100, write: true }, { gpa: b, len: 300, write: true }], 9));
    guest.publish(0);
    const second = await takeUsed(guest, 4);

    const buffers = new Map([...early, ...late]);
    const lens = new Map([...first, ...second]);
    for (const [token, gpa] of buffers) {
      assert.equal(lens.get(token), sizes[token], `used len of the ${sizes[token]}-byte buffer`);
      if (sizes[token] >= 16) {
        const bytes = fe.memory.bytes(gpa, sizes[token]);
        assert.ok(bytes.some((x) => x !== 0), `buffer ${token} holds random bytes`);
      }
    }
    assert.equal(lens.get(9), 400, "the two-descriptor request is filled across both");
    assert.ok(fe.memory.bytes(a, 100).some((x) => x !== 0), "first descriptor filled");
    assert.ok(fe.memory.bytes(b + 200, 100).some((x) => x !== 0), "second descriptor filled");
    const heads = [...buffers.entries()].filter(([t]) => sizes[t] >= 16)
      .map(([, gpa]) => fe.memory.bytes(gpa, 16).join(","));
    assert.equal(new Set(heads).size, heads.length, "no two buffers got the same bytes");

    const total = sizes.reduce((s, n) => s + n, 0) + 400;
    assert.deepEqual(stats(rig), { queue: 0, requests: 7, bytes: total, errors: 0 });
    assert.ok(guest.calls(0) >= 1, "the device interrupted the guest");
    await guest.stop();
  });
});

Deno.test("rng: GET_VRING_BASE stops the ring mid-way; it restarts from the base it returned", async () => {
  await withDevice(driver, async (rig) => {
    const { guest, fe } = rig;
    await guest.activate();
    post(guest, [32, 32, 32, 32], 0);
    guest.publish(0);
    await takeUsed(guest, 4);
    const base = await fe.getVringBase(0);
    assert.equal(base, 4, "the device's next available index");

    // Made available and kicked while the ring is stopped: not served.
    post(guest, [64, 64, 64], 4);
    guest.queue(0).publish();
    guest.kick(0);
    await quiet(guest);
    assert.equal(stats(rig).requests, 4);

    await fe.setVringBase(0, base);
    await fe.setVringKick(0, fe.kickFd(0));
    const after = await takeUsed(guest, 3);
    assert.deepEqual([...after.keys()].sort(), [4, 5, 6], "each request served once");
    post(guest, [8], 7);
    guest.publish(0);
    assert.deepEqual([...(await takeUsed(guest, 1)).entries()], [[7, 8]]);
    assert.equal(guest.queue(0).lastUsedIdx, 8, "the used index went on from where it stopped");
    assert.equal(stats(rig).requests, 8, "nothing served twice");
    assert.equal(stats(rig).bytes, 4 * 32 + 3 * 64 + 8);
    assert.deepEqual(await guest.stop(), [8]);
  });
});

Deno.test("rng: malformed chains come back with length 0, counted, and the ring keeps serving", async () => {
  await withDevice(driver, async (rig) => {
    const { guest, fe, events } = rig;
    const ring = guest.queue(0);
    await guest.activate();
    // Device-readable only: not a virtio-rng request (virtio 1.2 §5.4.6.1).
    assert.ok(ring.addBuffer(guest.allocate(64), 64, false, 1));
    // A buffer outside guest memory (virtio 1.2 §2.7.5).
    assert.ok(ring.addBuffer(fe.memoryGpa + fe.memorySize + 0x1000, 64, true, 2));
    // A head that is no descriptor: nothing can be returned for it.
    ring.addRaw(1000, 3);
    post(guest, [32], 4);
    guest.publish(0);
    const got = await takeUsed(guest, 3);
    assert.deepEqual([...got.entries()].sort((x, y) => x[0] - y[0]), [[1, 0], [2, 0], [4, 32]]);
    assert.deepEqual(stats(rig), { queue: 0, requests: 1, bytes: 32, errors: 3 });
    await until(
      "three ring errors reported",
      () => events.filter((e) => e.type === "error" && e.fields?.queue === 0).length === 3,
    );
    const errors = events.filter((e) => e.type === "error").map((e) => e.message).join("\n");
    assert.match(errors, /device-writable only; this one has 64 readable/);
    assert.match(errors, /out-of-bounds/);
    assert.match(errors, /bad-index/);
    assert.equal(rig.device.status & VirtioStatus.NEEDS_RESET, 0, "no reset needed");

    post(guest, [16], 5);
    guest.publish(0);
    assert.deepEqual([...(await takeUsed(guest, 1)).entries()], [[5, 16]]);
    // Five chains taken, four returned: the position keeps both indexes.
    assert.deepEqual(await guest.stop(), [5]);
    assert.deepEqual(rig.device.description.ops.getVringState(0), {
      availIdx: 5,
      usedIdx: 4,
      availWrap: true,
      usedWrap: true,
    });
  });
});

Deno.test("rng: suspend keeps the position and serves nothing; resume goes on", async () => {
  await withDevice(driver, async (rig) => {
    const { guest, device } = rig;
    await guest.activate();
    post(guest, [10, 20], 0);
    guest.publish(0);
    await takeUsed(guest, 2);
    await device.suspend();
    post(guest, [30, 40], 2);
    guest.queue(0).publish();
    guest.kick(0);
    await quiet(guest);
    await device.resume();
    const got = await takeUsed(guest, 2);
    assert.deepEqual([...got.entries()].sort(), [[2, 30], [3, 40]]);
    assert.equal(stats(rig).requests, 4);
    await guest.stop();
  });
});

Deno.test("rng: stopping a ring confirms and releases its fds; none are left after close", async () => {
  const before = await settledFdCount();
  await withDevice(driver, async (rig) => {
    const { guest, fe } = rig;
    await guest.activate();
    const counts: number[] = [];
    for (let cycle = 0; cycle < 4; cycle++) {
      post(guest, [32], cycle);
      guest.publish(0);
      await takeUsed(guest, 1);
      const base = await fe.getVringBase(0);
      counts.push(await settledFdCount());
      await fe.setVringBase(0, base);
      await fe.setVringKick(0, fe.kickFd(0));
    }
    assert.equal(new Set(counts).size, 1, `fds after each stop: ${counts.join(", ")}`);
    await guest.stop();
  });
  assert.equal(await settledFdCount({ target: before }), before, "fds after close");
});

Deno.test("rng behind a vIOMMU: buffers at IOVAs are filled through the device IOTLB; a read-only one is never written", async () => {
  await withDevice(
    driver,
    async (rig) => {
      const { guest, fe, device, events } = rig;
      await guest.activate();
      const sizes = [64, 4096, 9000];
      const at = post(guest, sizes, 0);
      guest.publish(0);
      const lens = await takeUsed(guest, 3);
      for (const [token, gpa] of at) {
        assert.equal(lens.get(token), sizes[token], `used len of buffer ${token}`);
        assert.ok(
          fe.memory.bytes(gpa, sizes[token]).some((x) => x !== 0),
          `buffer ${token} filled`,
        );
      }
      // Every translation the device has came from a miss the frontend answered.
      const io = fe.iommu!.counters;
      const s = device.deviceStats();
      assert.ok(s.iotlb_misses > 0, `the device asked for translations (${s.iotlb_misses})`);
      assert.equal(s.iotlb_misses, io.missesReceived);
      assert.equal(s.iotlb_updates, io.updatesSent);

      // The guest makes one page read-only for the device and posts it as writable.
      const page = guest.allocate(4096);
      const bytes = fe.memory.bytes(page, 4096);
      bytes.fill(0xa5);
      await fe.iommu!.map(guest.deviceAddress(page), page, 4096, IotlbAccess.READ);
      assert.ok(guest.queue(0).addBuffer(page, 4096, true, 10));
      guest.publish(0);
      const refused = await takeUsed(guest, 1);
      assert.equal(refused.get(10), 0, "returned unused");
      assert.ok(bytes.every((x) => x === 0xa5), "not one byte of the read-only page was written");
      await until("the refused request counted", () => stats(rig).errors === 1);
      assert.ok(
        events.some((e) => e.message.includes("access-denied")),
        "the ring reported access-denied",
      );
      assert.equal(stats(rig).requests, 3);
      await guest.stop();
    },
    {},
    64,
    true,
  );
});
