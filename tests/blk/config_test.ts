// The virtio-blk config space builder against the layout of virtio 1.2
// §5.2.4: every field at its offset, little-endian, 60 bytes in all.

import assert from "node:assert/strict";
import { bit, VirtioBlkConfig, VirtioBlkFeatureBit } from "@vhost-mdev/sdk";
import { BLK_CONFIG_SIZE, blkConfig, blkConfigFeatures } from "@vhost-mdev/sdk/blk";

const FULL = {
  capacitySectors: 0x0102030405060708n,
  sizeMax: 0x11121314,
  segMax: 0x21222324,
  geometry: { cylinders: 0x3132, heads: 0x33, sectors: 0x34 },
  blkSize: 4096,
  topology: { physicalBlockExp: 3, alignmentOffset: 1, minIoSize: 0x4142, optIoSize: 0x51525354 },
  writeback: true,
  numQueues: 0x0304,
  maxDiscardSectors: 0x61626364,
  maxDiscardSeg: 0x71727374,
  discardSectorAlignment: 0x81828384,
  maxWriteZeroesSectors: 0x91929394,
  maxWriteZeroesSeg: 0xa1a2a3a4,
  writeZeroesMayUnmap: true,
};

Deno.test("blkConfig: every field of struct virtio_blk_config at its offset, little-endian", () => {
  const c = blkConfig(FULL);
  assert.equal(c.length, 60);
  assert.equal(BLK_CONFIG_SIZE, 60);
  const at = (offset: number, ...bytes: number[]) =>
    assert.deepEqual([...c.subarray(offset, offset + bytes.length)], bytes, `offset ${offset}`);
  at(0, 0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01); // capacity le64
  at(8, 0x14, 0x13, 0x12, 0x11); // size_max
  at(12, 0x24, 0x23, 0x22, 0x21); // seg_max
  at(16, 0x32, 0x31, 0x33, 0x34); // geometry: cylinders le16, heads, sectors
  at(20, 0x00, 0x10, 0x00, 0x00); // blk_size 4096
  at(24, 3, 1, 0x42, 0x41, 0x54, 0x53, 0x52, 0x51); // topology
  at(32, 1, 0); // writeback, unused0
  at(34, 0x04, 0x03); // num_queues
  at(36, 0x64, 0x63, 0x62, 0x61); // max_discard_sectors
  at(40, 0x74, 0x73, 0x72, 0x71); // max_discard_seg
  at(44, 0x84, 0x83, 0x82, 0x81); // discard_sector_alignment
  at(48, 0x94, 0x93, 0x92, 0x91); // max_write_zeroes_sectors
  at(52, 0xa4, 0xa3, 0xa2, 0xa1); // max_write_zeroes_seg
  at(56, 1, 0, 0, 0); // write_zeroes_may_unmap, unused1[3]
});

Deno.test("blkConfig: the offsets in @vhost-mdev/sdk are the ones written", () => {
  const c = blkConfig(FULL);
  const v = new DataView(c.buffer);
  const O = VirtioBlkConfig;
  assert.equal(v.getBigUint64(O.CAPACITY, true), FULL.capacitySectors);
  assert.equal(v.getUint32(O.BLK_SIZE, true), 4096);
  assert.equal(v.getUint16(O.NUM_QUEUES, true), FULL.numQueues);
  assert.equal(v.getUint16(O.MIN_IO_SIZE, true), 0x4142);
  assert.equal(v.getUint8(O.WRITE_ZEROES_MAY_UNMAP), 1);
  assert.equal(O.SIZE, 60);
});

Deno.test("blkConfig: only the capacity given, everything else reads zero", () => {
  const c = blkConfig({ capacitySectors: 2048 });
  assert.deepEqual([...c.subarray(0, 8)], [0, 8, 0, 0, 0, 0, 0, 0]);
  assert.ok(c.subarray(8).every((b) => b === 0));
});

Deno.test("blkConfig: fields out of range are refused, naming them", () => {
  assert.throws(() => blkConfig({ capacitySectors: -1 }), /capacitySectors -1/);
  assert.throws(() => blkConfig({ capacitySectors: 1n << 64n }), /not a u64/);
  assert.throws(() => blkConfig({ capacitySectors: 1, blkSize: 1000 }), /power of two >= 512/);
  assert.throws(() => blkConfig({ capacitySectors: 1, numQueues: 65536 }), /numQueues 65536/);
  assert.throws(
    () => blkConfig({ capacitySectors: 1, geometry: { cylinders: 1, heads: 256, sectors: 1 } }),
    /geometry\.heads 256/,
  );
  assert.throws(() => blkConfig({ capacitySectors: 1, segMax: 1.5 }), RangeError);
});

Deno.test("blkConfigFeatures: the bits that make the given fields valid", () => {
  const F = VirtioBlkFeatureBit;
  assert.equal(blkConfigFeatures({ capacitySectors: 8 }), 0n);
  assert.equal(blkConfigFeatures({ capacitySectors: 8, numQueues: 1 }), 0n, "MQ only for > 1");
  assert.equal(
    blkConfigFeatures(FULL),
    [
      F.SIZE_MAX,
      F.SEG_MAX,
      F.GEOMETRY,
      F.BLK_SIZE,
      F.TOPOLOGY,
      F.CONFIG_WCE,
      F.MQ,
      F.DISCARD,
      F.WRITE_ZEROES,
    ].reduce((m, b) => m | bit(b), 0n),
  );
});
