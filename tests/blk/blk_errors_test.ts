// What the blk device answers to requests it must refuse (virtio 1.2
// §5.2.6): writes to a read-only device and sectors outside the device get
// IOERR, unknown types and flags UNSUPP, malformed layouts are refused; each
// is counted in the ring's errors, and the device keeps serving. A backing
// file that runs out of space fails only the writes that do not fit, while
// another device goes on.

import assert from "node:assert/strict";
import {
  bit,
  hasBit,
  VirtioBlkFeatureBit,
  VirtioBlkRequestType,
  VirtioBlkStatus,
} from "@vhost-mdev/sdk";
import { fileRange, randomBytes, totals, withBlk } from "./rig.ts";

const { OK, IOERR, UNSUPP } = VirtioBlkStatus;
const T = VirtioBlkRequestType;
const MiB = 1 << 20;

Deno.test("blk: a read-only device offers RO, refuses OUT, DISCARD and WRITE_ZEROES with IOERR, and still reads", async () => {
  const dir = await Deno.makeTempDir({ prefix: "blk_test" });
  try {
    const content = randomBytes(MiB);
    await Deno.writeFile(`${dir}/ro.img`, content);
    await Deno.chmod(`${dir}/ro.img`, 0o444);
    await withBlk(
      { file: `${dir}/ro.img`, options: { readonly: "true" } },
      async ({ blk, device }) => {
        assert.ok(hasBit(blk.features, VirtioBlkFeatureBit.RO));
        assert.equal(blk.features & bit(VirtioBlkFeatureBit.DISCARD), 0n);
        assert.equal(await blk.write(0, randomBytes(4096)), IOERR);
        assert.equal(await blk.discard([{ sector: 0, sectors: 8 }]), IOERR);
        assert.equal(await blk.writeZeroes([{ sector: 0, sectors: 8 }]), IOERR);
        assert.deepEqual(totals(device), { requests: 0, errors: 3 });
        const r = await blk.read(0, 4096);
        assert.equal(r.status, OK);
        assert.deepEqual(r.data, content.subarray(0, 4096));
        assert.equal(await blk.flush(), OK);
        assert.deepEqual(totals(device), { requests: 2, errors: 3 });
      },
    );
    assert.deepEqual(await Deno.readFile(`${dir}/ro.img`), content, "the file is unchanged");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("blk: sectors outside the device get IOERR, in reads, writes, discards and write-zeroes", async () => {
  await withBlk({ sizeBytes: MiB }, async ({ blk, device, file }) => {
    const last = Number(blk.capacity) - 1;
    assert.equal(last, 2047);
    assert.equal((await blk.read(last, 1024)).status, IOERR, "one sector past the end");
    assert.equal((await blk.read(last + 1, 512)).status, IOERR, "starting at the end");
    assert.equal((await blk.read((1n << 64n) - 1n, 512)).status, IOERR, "sector 2^64 - 1");
    assert.equal((await blk.read(1n << 53n, 512)).status, IOERR, "sector 2^53");
    assert.equal(await blk.write(last, new Uint8Array(1024).fill(7)), IOERR);
    assert.equal(await blk.discard([{ sector: 2000, sectors: 100 }]), IOERR);
    assert.equal(
      await blk.writeZeroes([{ sector: 0, sectors: 8 }, { sector: last, sectors: 2 }]),
      IOERR,
    );
    assert.deepEqual(totals(device), { requests: 0, errors: 7 });
    // Nothing was written by the refused requests, and the last sector still works.
    assert.deepEqual(await fileRange(file, 0, MiB), new Uint8Array(MiB));
    const tail = randomBytes(512);
    assert.equal(await blk.write(last, tail), OK);
    assert.deepEqual((await blk.read(last, 512)).data, tail);
    assert.deepEqual(totals(device), { requests: 2, errors: 7 });
  });
});

Deno.test("blk: unknown types and flags get UNSUPP; malformed layouts and lengths are refused and counted; the ring goes on", async () => {
  await withBlk({}, async ({ blk, device, events }) => {
    const unknown = await blk.submit({ type: 99, inBytes: 512 });
    assert.equal(unknown.status, UNSUPP);
    assert.equal(unknown.usedLength, 513, "answered with the whole writable area");
    assert.equal((await blk.submit({ type: T.GET_LIFETIME, inBytes: 8 })).status, UNSUPP);
    // DISCARD takes no flags; WRITE_ZEROES only UNMAP.
    assert.equal(await blk.discard([{ sector: 0, sectors: 8, flags: 1 }]), UNSUPP);
    assert.equal(await blk.writeZeroes([{ sector: 0, sectors: 8, flags: 2 }]), UNSUPP);
    // A header shorter than 16 bytes, a data length that is not whole sectors,
    // discard data that is not whole segments.
    assert.equal((await blk.submit({ type: T.IN, headerBytes: 8, inBytes: 512 })).status, IOERR);
    assert.equal((await blk.submit({ type: T.IN, inBytes: 100 })).status, IOERR);
    assert.equal((await blk.submit({ type: T.OUT, out: new Uint8Array(700) })).status, IOERR);
    assert.equal((await blk.submit({ type: T.DISCARD, out: new Uint8Array(20) })).status, IOERR);
    assert.equal((await blk.submit({ type: T.DISCARD })).status, IOERR, "no segments at all");
    // No status byte: nothing to answer in, given back with used length 0.
    const mute = await blk.submit({ type: T.OUT, out: new Uint8Array(512), noStatus: true });
    assert.deepEqual([mute.status, mute.usedLength], [-1, 0]);
    assert.deepEqual(totals(device), { requests: 0, errors: 10 });
    const reports = events.filter((e) => e.type === "error" || e.type === "warn");
    assert.ok(
      reports.some((e) => /unknown request type 99/.test(e.message)),
      `the refusals were reported: ${reports.map((e) => e.message).join("; ")}`,
    );
    // The device keeps serving.
    const data = randomBytes(4096);
    assert.equal(await blk.write(8, data), OK);
    assert.deepEqual((await blk.read(8, 4096)).data, data);
    assert.deepEqual(totals(device), { requests: 2, errors: 10 });
  });
});
