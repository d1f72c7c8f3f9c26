// The sim device over packed rings (virtio 1.2 §2.8), in process under the
// real device core: the same guarantees as over split rings, in every mode,
// with one and two queue pairs, through many turns of the ring (the wrap
// counters), and across stop and start.

import assert from "node:assert/strict";
import {
  bit,
  hasBit,
  type PackedQueueDriver,
  VirtioFeatureBit,
  VirtioNetFeatureBit,
} from "@vhost-mdev/sdk";
import { buildIcmpEcho, parseIcmpEcho } from "@vhost-mdev/testing";
import { SimRig } from "./rig.ts";

function pattern(size: number, seed: number): Uint8Array {
  const f = new Uint8Array(size);
  for (let i = 0; i < size; i++) f[i] = (i * 11 + seed * 5) & 0xff;
  return f;
}

async function withPackedRig(
  options: Parameters<typeof SimRig.create>[0],
  fn: (rig: SimRig) => Promise<void>,
): Promise<void> {
  const rig = await SimRig.create({ ...options, packed: true });
  try {
    await rig.harness.start();
    assert.ok(hasBit(rig.features, VirtioFeatureBit.RING_PACKED), "RING_PACKED acked");
    assert.equal(rig.rings[0].queue.packed, true);
    await fn(rig);
  } finally {
    await rig.harness.stop();
    await rig.close();
  }
}

for (const mrg of [false, true]) {
  for (const queues of [1, 2]) {
    Deno.test(`packed loopback: frames come back byte-identical (mrg_rxbuf=${mrg}, ${queues} pair(s)), around the ring many times`, async () => {
      const refuse = mrg ? 0n : bit(VirtioNetFeatureBit.MRG_RXBUF);
      // A small odd-sized ring, so 200 frames wrap it many times, mid-chain too.
      await withPackedRig({ queues, refuse, ringSize: 24 }, async (rig) => {
        const sizes = Array.from({ length: 10 }, (_, i) => 60 + 97 * i);
        // Exactly the buffers the frames take, so the ring never overfills.
        const buffers = sizes.reduce((n, z) => n + (mrg ? Math.ceil((12 + z) / 512) : 1), 0);
        for (let round = 0; round < 10; round++) {
          for (let p = 0; p < queues; p++) rig.postRx(p, buffers, mrg ? 512 : 12 + 1514);
          const sent: Uint8Array[][] = [];
          for (let p = 0; p < queues; p++) {
            sent.push(sizes.map((z, i) => pattern(z, round * 31 + p + i)));
            sent[p].forEach((f, i) => rig.send(p, f, undefined, i % 3 === 1));
          }
          for (let p = 0; p < queues; p++) {
            const got = await rig.receive(p, 10);
            assert.deepEqual(got.map((r) => r.frame), sent[p], `round ${round}, pair ${p}`);
            await rig.used(2 * p + 1, 10);
          }
        }
        const s = rig.device.stats();
        for (let p = 0; p < queues; p++) {
          assert.equal(s[2 * p + 1].packets, 100);
          assert.equal(s[2 * p].packets, 100);
          assert.equal(s[2 * p].errors + s[2 * p + 1].errors, 0);
        }
        assert.deepEqual(rig.warnings, []);
      });
    });
  }
}

Deno.test("packed responder: echo requests get byte-correct replies", async () => {
  await withPackedRig({ options: { mode: "responder", ip: "10.9.0.1" } }, async (rig) => {
    rig.postRx(0, 16, 2048);
    const guest = "52:54:00:aa:bb:cc", device = "52:54:00:12:34:56";
    for (let seq = 0; seq < 8; seq++) {
      rig.send(
        0,
        buildIcmpEcho({
          type: "request",
          dstMac: device,
          srcMac: guest,
          srcIp: "10.9.0.2",
          dstIp: "10.9.0.1",
          id: 77,
          seq,
          data: pattern(56, seq),
        }),
      );
    }
    const got = await rig.receive(0, 8);
    got.forEach((r, seq) => {
      const e = parseIcmpEcho(r.frame);
      assert.equal(e.type, "reply");
      assert.equal(e.seq, seq);
      assert.deepEqual(e.data, pattern(56, seq));
    });
  });
});

Deno.test("packed sink and source: counted, and source frames fill every buffer", async () => {
  await withPackedRig({ options: { mode: "sink" } }, async (rig) => {
    for (let i = 0; i < 30; i++) rig.send(0, pattern(100, i));
    await rig.used(1, 30);
    assert.equal(rig.device.stats()[1].packets, 30);
  });
  await withPackedRig({ options: { mode: "source", "frame-size": "128" } }, async (rig) => {
    rig.postRx(0, 40, 2048);
    const got = await rig.receive(0, 40);
    assert.ok(got.every((r) => r.frame.length === 128));
  });
});

Deno.test("packed: stop reports positions with wrap counters and a restart resumes there", async () => {
  const rig = await SimRig.create({ packed: true, ringSize: 8 });
  const base = async (q: number) => (await rig.device.getVringBase(q)).num;
  try {
    await rig.harness.start();
    // 11 single-descriptor frames through a ring of 8: both sides wrapped once.
    for (let i = 0; i < 11; i++) {
      rig.postRx(0, 1, 2048);
      rig.send(0, pattern(70, i));
      await rig.receive(0, 1);
      await rig.used(1, 1);
    }
    await rig.harness.stop();
    // Position 3, wrap counter 0 (bit 15 clear), for both available and used (bits 16-31).
    const expect = 3 | (3 << 16);
    assert.equal(await base(0), expect);
    assert.equal(await base(1), expect);
  } finally {
    await rig.harness.stop();
    await rig.close();
  }
});

Deno.test("packed: a held transmit frame is given back at stop, its descriptors included", async () => {
  await withPackedRig({}, async (rig) => {
    // Two-descriptor chains (header, frame) with no receive buffers: the first is held.
    for (let i = 0; i < 3; i++) rig.send(0, pattern(70, i), undefined, true);
    await new Promise((r) => setTimeout(r, 50));
    await rig.harness.stop();
    const b = (await rig.device.getVringBase(1)).num;
    // Not consumed: position 0 with wrap counter 1, both sides.
    assert.equal(b, (0x8000 | (0x8000 << 16)) >>> 0);
  });
});

Deno.test("packed hostile: a receive buffer made available again while the device holds it is refused; the frame completes", async () => {
  // Without IN_ORDER: an in-order driver would take the refused buffer as used with the next one.
  await withPackedRig({ ringSize: 16, refuse: bit(VirtioFeatureBit.IN_ORDER) }, async (rig) => {
    const rx = rig.rings[0], driver = rx.queue as PackedQueueDriver;
    // A descriptor's buffer ID: bytes 12-13, little-endian.
    const idBytes = (slot: number) => rig.memory.bytes(rx.layout.descAddr + 16 * slot + 12, 2);
    // Buffer 1, then a second whose ID the guest overwrites with buffer 1's before publishing.
    const first = driver.availIdx & 0x7fff, gpa = rig.alloc(512);
    assert.ok(driver.add([{ gpa, len: 512, write: true }], gpa));
    const held = idBytes(first)[0] | (idBytes(first)[1] << 8);
    const dup = driver.availIdx & 0x7fff, dupGpa = rig.alloc(512);
    assert.ok(driver.add([{ gpa: dupGpa, len: 512, write: true }], dupGpa));
    idBytes(dup).set(idBytes(first));
    driver.publish();
    rig.kickIfNeeded(0);
    // A 1000-byte frame takes buffer 1, is refused the duplicate, and waits for another buffer.
    const frame = pattern(1000, 7);
    rig.send(0, frame);
    const at = Date.now();
    while (rig.device.stats()[0].errors === 0 && Date.now() - at < 5000) {
      await new Promise((r) => setTimeout(r, 10));
    }
    assert.equal(rig.device.stats()[0].errors, 1, "the duplicate counted once");
    rig.postRx(0, 1, 2048);
    const [got] = await rig.receive(0, 1);
    assert.equal(got.buffers, 2, "the held buffer and the new one");
    assert.deepEqual(got.frame, frame);
    assert.match(rig.warnings.join("\n"), new RegExp(`buffer ID ${held} is already in flight`));
    // The ring serves on.
    rig.postRx(0, 2, 2048);
    rig.send(0, pattern(60, 8));
    const [next] = await rig.receive(0, 1);
    assert.deepEqual(next.frame, pattern(60, 8));
  });
});
