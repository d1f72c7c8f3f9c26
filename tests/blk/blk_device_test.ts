// The blk driver served over a real vhost-user socket to the test kit's
// frontend and virtio-blk guest driver (virtio 1.2 §5.2): data written reads
// back byte for byte and lands in the backing file, flush, get-id, discard,
// write-zeroes, the config space, several queues with many requests in
// flight, and O_DIRECT.

import assert from "node:assert/strict";
import {
  bit,
  hasBit,
  VirtioBlkConfig,
  VirtioBlkFeatureBit,
  VirtioBlkStatus,
} from "@vhost-mdev/sdk";
import { fileRange, randomBytes, totals, withBlk } from "./rig.ts";

const OK = VirtioBlkStatus.OK;
const MiB = 1 << 20;

Deno.test("blk: random data written on two queues with 48 requests in flight reads back identical, and the host finds it in the file", async () => {
  await withBlk({ queues: 2, sizeBytes: 8 * MiB }, async ({ blk, file, device }) => {
    assert.equal(blk.capacity, BigInt(8 * MiB / 512));
    const chunk = 64 * 1024;
    const count = 48;
    const data = randomBytes(count * chunk);
    // Every request at once, spread over both queues and out of order.
    const order = [...Array(count).keys()].sort(() => Math.random() - 0.5);
    const writes = order.map((i) =>
      blk.write(i * chunk / 512, data.subarray(i * chunk, (i + 1) * chunk), i % 2)
    );
    assert.ok(blk.inFlight(0) + blk.inFlight(1) > 2, "several requests were in flight at once");
    assert.deepEqual(await Promise.all(writes), Array(count).fill(OK));
    const reads = await Promise.all(
      order.map((i) => blk.read(i * chunk / 512, chunk, (i + 1) % 2).then((r) => ({ i, ...r }))),
    );
    for (const r of reads) {
      assert.equal(r.status, OK);
      assert.ok(
        r.data.every((b, k) => b === data[r.i * chunk + k]),
        `chunk ${r.i} reads back as written`,
      );
    }
    assert.equal(await blk.flush(), OK);
    assert.deepEqual(await fileRange(file, 0, data.length), data, "the backing file holds it");
    const stats = device.stats();
    assert.equal(stats.length, 2);
    assert.ok(stats.every((s) => (s.requests ?? 0) > 0), "both rings served requests");
    assert.deepEqual(totals(device), { requests: 2 * count + 1, errors: 0 });
  });
});

Deno.test("blk: data the host wrote into the backing file reads back through the device", async () => {
  const dir = await Deno.makeTempDir({ prefix: "blk_test" });
  try {
    const content = randomBytes(MiB);
    await Deno.writeFile(`${dir}/host.img`, content);
    await withBlk({ file: `${dir}/host.img` }, async ({ blk }) => {
      assert.equal(blk.capacity, 2048n);
      const { status, data } = await blk.read(1000, 24 * 512);
      assert.equal(status, OK);
      assert.deepEqual(data, content.subarray(1000 * 512, 1024 * 512));
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("blk: GET_ID returns the serial (or the file's name), FLUSH succeeds", async () => {
  await withBlk({ options: { serial: "vhost-mdev-disk-0001" } }, async ({ blk, device }) => {
    assert.deepEqual(await blk.getId(), { status: OK, id: "vhost-mdev-disk-0001" });
    assert.equal(await blk.flush(), OK);
    assert.deepEqual(totals(device), { requests: 2, errors: 0 });
  });
  await withBlk({}, async ({ blk }) => {
    assert.deepEqual(await blk.getId(), { status: OK, id: "disk.img" });
  });
});

Deno.test("blk: DISCARD and WRITE_ZEROES (with and without UNMAP) zero their ranges and nothing else", async () => {
  await withBlk({ sizeBytes: 2 * MiB }, async ({ blk, file }) => {
    const data = randomBytes(MiB);
    for (let at = 0; at < MiB; at += 64 * 1024) {
      assert.equal(await blk.write(at / 512, data.subarray(at, at + 64 * 1024)), OK);
    }
    // Sectors 8..23 discarded, 64..71 and 200..327 zeroed with UNMAP, 1000..1015 without.
    assert.equal(await blk.discard([{ sector: 8, sectors: 16 }]), OK);
    assert.equal(
      await blk.writeZeroes([{ sector: 64, sectors: 8, unmap: true }, {
        sector: 200,
        sectors: 128,
        unmap: true,
      }]),
      OK,
    );
    assert.equal(await blk.writeZeroes([{ sector: 1000, sectors: 16 }]), OK);
    const expected = data.slice();
    for (const [s, n] of [[8, 16], [64, 8], [200, 128], [1000, 16]]) {
      expected.fill(0, s * 512, (s + n) * 512);
    }
    assert.deepEqual(await fileRange(file, 0, MiB), expected, "the file as the host reads it");
    const back = await blk.read(0, 64 * 1024);
    assert.equal(back.status, OK);
    assert.deepEqual(back.data, expected.subarray(0, 64 * 1024));
  });
});

Deno.test("blk: the config space is the whole struct virtio_blk_config, with the features for its fields", async () => {
  await withBlk(
    { queues: 3, sizeBytes: 3 * MiB + 1000, options: { "block-size": "4096" } },
    async ({ blk }) => {
      const c = new DataView(blk.config.buffer, blk.config.byteOffset);
      assert.equal(blk.config.length, 60);
      assert.equal(c.getBigUint64(VirtioBlkConfig.CAPACITY, true), BigInt(3 * MiB / 512));
      assert.equal(c.getUint32(VirtioBlkConfig.BLK_SIZE, true), 4096);
      assert.equal(c.getUint16(VirtioBlkConfig.NUM_QUEUES, true), 3);
      assert.ok(c.getUint32(VirtioBlkConfig.SEG_MAX, true) > 0);
      assert.ok(c.getUint32(VirtioBlkConfig.SIZE_MAX, true) > 0);
      assert.equal(c.getUint32(VirtioBlkConfig.DISCARD_SECTOR_ALIGNMENT, true), 8);
      assert.ok(c.getUint32(VirtioBlkConfig.MAX_WRITE_ZEROES_SECTORS, true) > 0);
      assert.equal(c.getUint8(VirtioBlkConfig.WRITE_ZEROES_MAY_UNMAP), 1);
      const F = VirtioBlkFeatureBit;
      for (const b of [F.SEG_MAX, F.SIZE_MAX, F.BLK_SIZE, F.TOPOLOGY, F.FLUSH, F.MQ, F.DISCARD]) {
        assert.ok(hasBit(blk.features, b), `feature bit ${b} negotiated`);
      }
      assert.ok(hasBit(blk.features, F.WRITE_ZEROES));
      assert.equal(blk.features & bit(F.RO), 0n, "a writable device does not offer RO");
      // A 512-byte write is not a whole 4096-byte block: IOERR.
      assert.equal(await blk.write(8, new Uint8Array(512)), VirtioBlkStatus.IOERR);
      assert.equal(await blk.write(8, new Uint8Array(4096), 2), OK);
    },
  );
});

Deno.test("blk: with O_DIRECT, data written reads back and is in the file", async () => {
  const guest = { maxRequestBytes: MiB, ringSize: 16 };
  await withBlk({ options: { direct: "true" }, guest }, async ({ blk, file }) => {
    const data = randomBytes(3 * MiB / 2);
    const half = data.length / 2;
    assert.equal(await blk.write(16, data.subarray(0, half)), OK);
    assert.equal(await blk.write(16 + half / 512, data.subarray(half)), OK);
    const a = await blk.read(16, half), b = await blk.read(16 + half / 512, half);
    assert.equal(a.status, OK);
    assert.deepEqual([...a.data.subarray(0, 64)], [...data.subarray(0, 64)]);
    assert.deepEqual(a.data, data.subarray(0, half));
    assert.deepEqual(b.data, data.subarray(half));
    assert.deepEqual(await fileRange(file, 16 * 512, data.length), data);
  });
});
