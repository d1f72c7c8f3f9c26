// The IOTLB_MSG payload (`struct vhost_iotlb_msg`): it round-trips with its
// 64-bit fields as bigints up to 2^64 - 1, the bytes follow the kernel's
// layout, and a decoder takes the 26 bytes of fields up to the padded 32 but
// refuses anything shorter or longer with a ProtocolError.

import assert from "node:assert/strict";
import { ProtocolError } from "../../sdk/core/errors.ts";
import {
  decodeIotlbMessage,
  encodeIotlbMessage,
  IOTLB_MSG_SIZE,
  type IotlbMessage,
  type VhostUserMessage,
} from "../../sdk/vhost_user/message.ts";
import { IotlbAccess, IotlbMessageType } from "../../sdk/uapi/vhost.ts";
import { BackendRequest, FrontendRequest, HeaderFlag } from "../../sdk/uapi/vhost_user.ts";

const U64_MAX = 2n ** 64n - 1n;

/** `payload` as a frontend `IOTLB_MSG`. */
function message(payload: Uint8Array): VhostUserMessage {
  return { request: FrontendRequest.IOTLB_MSG, flags: HeaderFlag.VERSION, payload, fds: [] };
}

const update: IotlbMessage = {
  iova: 0x1000n,
  size: 0x2000n,
  uaddr: 0x7f00_1234_5000n,
  perm: IotlbAccess.READ_WRITE,
  type: IotlbMessageType.UPDATE,
};

Deno.test("IOTLB message: an update encodes to the 32-byte vhost_iotlb_msg layout and back", () => {
  const b = encodeIotlbMessage(update);
  assert.equal(IOTLB_MSG_SIZE, 32);
  assert.equal(b.length, IOTLB_MSG_SIZE);
  assert.deepEqual(
    [...b],
    [
      ...[0x00, 0x10, 0, 0, 0, 0, 0, 0], // iova, little-endian
      ...[0x00, 0x20, 0, 0, 0, 0, 0, 0], // size
      ...[0x00, 0x50, 0x34, 0x12, 0x00, 0x7f, 0, 0], // uaddr
      3, // perm
      2, // type
      ...[0, 0, 0, 0, 0, 0], // padding
    ],
  );
  assert.deepEqual(decodeIotlbMessage(message(b)), update);
});

Deno.test("IOTLB message: 64-bit fields round-trip up to 2^64 - 1 as exact bigints", () => {
  const invalidateAll: IotlbMessage = {
    iova: 0n,
    size: U64_MAX,
    uaddr: 0n,
    perm: IotlbAccess.NONE,
    type: IotlbMessageType.INVALIDATE,
  };
  const b = encodeIotlbMessage(invalidateAll);
  assert.deepEqual([...b.subarray(8, 16)], [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
  const back = decodeIotlbMessage(message(b));
  assert.deepEqual(back, invalidateAll);
  assert.equal(back.size, 18446744073709551615n);

  const high: IotlbMessage = {
    iova: U64_MAX - 0xfffn,
    size: 0x1000n,
    uaddr: 2n ** 63n + 5n,
    perm: IotlbAccess.WRITE,
    type: IotlbMessageType.UPDATE,
  };
  assert.deepEqual(decodeIotlbMessage(message(encodeIotlbMessage(high))), high);

  const miss: IotlbMessage = {
    iova: 0xdead_b000n,
    size: 0n,
    uaddr: 0n,
    perm: IotlbAccess.READ,
    type: IotlbMessageType.MISS,
  };
  assert.deepEqual(
    decodeIotlbMessage({ ...message(encodeIotlbMessage(miss)), request: BackendRequest.IOTLB_MSG }),
    miss,
    "the backend's miss on its own channel",
  );
});

Deno.test("IOTLB message: a 26-byte payload (the fields without padding) decodes", () => {
  const b = encodeIotlbMessage(update);
  assert.deepEqual(decodeIotlbMessage(message(b.slice(0, 26))), update);
  // Any length from the fields to the padded struct, at any offset in a larger buffer.
  for (let n = 26; n <= IOTLB_MSG_SIZE; n++) {
    const wire = new Uint8Array(12 + n);
    wire.set(b.subarray(0, n), 12);
    assert.deepEqual(decodeIotlbMessage(message(wire.subarray(12))), update, `${n} bytes`);
  }
});

Deno.test("IOTLB message: a 25-byte or a 40-byte payload is a ProtocolError naming the request", () => {
  const b = encodeIotlbMessage(update);
  assert.throws(() => decodeIotlbMessage(message(b.slice(0, 25))), (e: unknown) => {
    assert.ok(e instanceof ProtocolError, `expected ProtocolError, got ${e}`);
    assert.match(e.message, /IOTLB_MSG/);
    assert.match(e.message, /25 bytes, expected at least 26/);
    return true;
  });
  const long = new Uint8Array(40);
  long.set(b);
  assert.throws(() => decodeIotlbMessage(message(long)), (e: unknown) => {
    assert.ok(e instanceof ProtocolError, `expected ProtocolError, got ${e}`);
    assert.match(e.message, /IOTLB_MSG/);
    assert.match(e.message, /40-byte payload/);
    return true;
  });
  for (const n of [0, 1, 8, 24, 33, 64]) {
    assert.throws(
      () => decodeIotlbMessage(message(new Uint8Array(n))),
      ProtocolError,
      `${n} bytes`,
    );
  }
});
