import assert from "node:assert/strict";
import { bit, VirtioFeatureBit, VirtioNetFeatureBit } from "@vhost-mdev/sdk";
import {
  netHeaderSize,
  netHeaderSizeFor,
  readCsumOffset,
  readCsumStart,
  readNumBuffers,
  VirtioNetHdr,
  writeNumBuffers,
} from "@vhost-mdev/sdk/net";

Deno.test("header: 12 bytes with VERSION_1 or MRG_RXBUF, else the legacy 10", () => {
  assert.equal(netHeaderSize(0n), 10);
  assert.equal(netHeaderSize(bit(VirtioFeatureBit.VERSION_1)), 12);
  assert.equal(netHeaderSize(bit(VirtioNetFeatureBit.MRG_RXBUF)), 12);
  assert.equal(
    netHeaderSize(bit(VirtioFeatureBit.VERSION_1) | bit(VirtioNetFeatureBit.MRG_RXBUF)),
    12,
  );
  assert.equal(netHeaderSize(bit(VirtioNetFeatureBit.CSUM)), 10);
  assert.deepEqual(
    [netHeaderSizeFor(false, false), netHeaderSizeFor(true, false), netHeaderSizeFor(false, true)],
    [10, 12, 12],
  );
});

Deno.test("header: num_buffers is le16 at offset 10, relative to the header's offset", () => {
  const buf = new Uint8Array(20).fill(0xee);
  writeNumBuffers(buf, 4, 0x1234);
  assert.deepEqual([...buf.subarray(14, 16)], [0x34, 0x12]);
  assert.equal(readNumBuffers(buf, 4), 0x1234);
  assert.equal(buf[13], 0xee, "bytes before the field untouched");
  assert.equal(buf[16], 0xee, "bytes after the field untouched");
  writeNumBuffers(buf, 4, 1);
  assert.equal(readNumBuffers(buf, 4), 1);
  writeNumBuffers(buf, 4, 0xffff);
  assert.equal(readNumBuffers(buf, 4), 0xffff);
});

Deno.test("header: csum_start and csum_offset are le16 at offsets 6 and 8", () => {
  const hdr = new Uint8Array(12);
  hdr[VirtioNetHdr.CSUM_START] = 0x22;
  hdr[VirtioNetHdr.CSUM_START + 1] = 0x01;
  hdr[VirtioNetHdr.CSUM_OFFSET] = 6;
  assert.equal(readCsumStart(hdr, 0), 0x0122);
  assert.equal(readCsumOffset(hdr, 0), 6);
  assert.deepEqual(
    [
      VirtioNetHdr.FLAGS,
      VirtioNetHdr.GSO_TYPE,
      VirtioNetHdr.HDR_LEN,
      VirtioNetHdr.GSO_SIZE,
      VirtioNetHdr.CSUM_START,
      VirtioNetHdr.CSUM_OFFSET,
      VirtioNetHdr.NUM_BUFFERS,
    ],
    [0, 1, 2, 4, 6, 8, 10],
  );
});
