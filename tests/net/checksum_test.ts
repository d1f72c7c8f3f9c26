import assert from "node:assert/strict";
import {
  completeChecksum,
  internetChecksum,
  onesComplementSum,
  storeInternetChecksum,
} from "@vhost-mdev/sdk/net";

// RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2 (checksum 220d).
const RFC1071 = new Uint8Array([0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]);

// An IPv4 header (RFC 791) whose checksum is b861.
const IPV4_HEADER = new Uint8Array([
  0x45,
  0x00,
  0x00,
  0x73,
  0x00,
  0x00,
  0x40,
  0x00,
  0x40,
  0x11,
  0x00,
  0x00,
  0xc0,
  0xa8,
  0x00,
  0x01,
  0xc0,
  0xa8,
  0x00,
  0xc7,
]);

Deno.test("checksum: RFC 1071's example and a known IPv4 header", () => {
  assert.equal(onesComplementSum(RFC1071, 0, RFC1071.length), 0xddf2);
  assert.equal(internetChecksum(RFC1071), 0x220d);
  assert.equal(internetChecksum(IPV4_HEADER), 0xb861);
  const withSum = IPV4_HEADER.slice();
  withSum[10] = 0xb8;
  withSum[11] = 0x61;
  assert.equal(internetChecksum(withSum), 0, "over a correct checksum it is 0");
});

Deno.test("checksum: a range of a larger buffer, an odd length, an initial sum", () => {
  const buf = new Uint8Array(3 + RFC1071.length + 5).fill(0xab);
  buf.set(RFC1071, 3);
  assert.equal(internetChecksum(buf, 3, RFC1071.length), 0x220d);
  assert.equal(internetChecksum(new Uint8Array([0x12])), ~0x1200 & 0xffff, "odd byte padded");
  assert.equal(internetChecksum(new Uint8Array([0xff, 0x12, 0x34]), 1, 1), ~0x1200 & 0xffff);
  // Summing in two pieces equals summing at once (the pseudo-header way).
  const first = onesComplementSum(RFC1071, 0, 4);
  assert.equal(internetChecksum(RFC1071, 4, 4, first), 0x220d);
  assert.equal(internetChecksum(new Uint8Array(0)), 0xffff);
});

Deno.test("checksum: storeInternetChecksum zeroes the field first and stores big-endian", () => {
  const hdr = IPV4_HEADER.slice();
  hdr[10] = hdr[11] = 0x55; // stale checksum
  storeInternetChecksum(hdr, 0, hdr.length, 10);
  assert.deepEqual([hdr[10], hdr[11]], [0xb8, 0x61]);
});

Deno.test("checksum: completeChecksum finishes a partial checksum (virtio 1.2 §5.1.6.2)", () => {
  // A frame at offset 2 of a buffer: 4 bytes, then the checksummed part
  // (field at its offset 2 holding a pseudo-header sum of 0x0102).
  const buf = new Uint8Array([9, 9, 0xaa, 0xbb, 0xcc, 0xdd, 0x00, 0x11, 0x01, 0x02, 0x00, 0x33]);
  assert.equal(completeChecksum(buf, 2, 10, 4, 2), true);
  const expected = ~onesComplementSum(new Uint8Array([0x00, 0x11, 0x01, 0x02, 0x00, 0x33]), 0, 6) &
    0xffff;
  assert.deepEqual([buf[8], buf[9]], [expected >> 8, expected & 0xff]);
  // Verified as a receiver does: with the pseudo-header sum added back.
  assert.equal(internetChecksum(buf, 6, 6, 0x0102), 0);
  const before = buf.slice();
  assert.equal(completeChecksum(buf, 2, 10, 4, 5), false, "field beyond the frame");
  assert.deepEqual(buf, before);
});
