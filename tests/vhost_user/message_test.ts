// The wire codec both ends use: every encode/decode pair round-trips, the
// bytes match the layouts of vhost-user.rst ("Message Specification"), and
// every decoder's size check rejects a payload one byte short.

import assert from "node:assert/strict";
import { type MemoryRegionSpec, ProtocolError, type VringAddr } from "@vhost-mdev/sdk";
import {
  type ConfigPayload,
  decodeConfig,
  decodeHeader,
  decodeMemTable,
  decodeSingleRegion,
  decodeU64,
  decodeVringAddr,
  decodeVringArea,
  decodeVringFileIndex,
  decodeVringState,
  encodeConfig,
  encodeHeader,
  encodeMemTable,
  encodeMessage,
  encodeSingleRegion,
  encodeU64,
  encodeVringAddr,
  encodeVringArea,
  encodeVringFileIndex,
  encodeVringState,
  FrontendRequest,
  HeaderFlag,
  type VhostUserMessage,
} from "@vhost-mdev/sdk/vhost-user";

const R = FrontendRequest;

/** `payload` as a frontend request `request`, carrying `fds`. */
function message(request: number, payload: Uint8Array, fds: number[] = []): VhostUserMessage {
  return { request, flags: HeaderFlag.VERSION, payload, fds };
}

/** The same message without its last payload byte. */
function oneShort(m: VhostUserMessage): VhostUserMessage {
  return { ...m, payload: m.payload.subarray(0, m.payload.length - 1) };
}

const region: MemoryRegionSpec = {
  gpa: 0x1_0000_0000,
  size: 0x20_0000,
  uva: 0x7f00_1234_5000,
  mmapOffset: 0x1000,
  fd: 9,
};

const addr: VringAddr = {
  index: 3,
  flags: 1,
  desc: 0x7f00_0000_1000,
  used: 0x7f00_0000_3000,
  avail: 0x7f00_0000_2000,
  log: 0x4000,
};

const config: ConfigPayload = {
  offset: 6,
  size: 4,
  flags: 1,
  data: new Uint8Array([1, 2, 3, 4]),
};

/** Each pair: a message built by the encoder, and the value it must decode to. */
const cases: {
  name: string;
  m: VhostUserMessage;
  decode: (m: VhostUserMessage) => unknown;
  value: unknown;
}[] = [
  {
    name: "u64",
    m: message(R.SET_FEATURES, encodeU64(0x1_0000_0000_0003n)),
    decode: decodeU64,
    value: 0x1_0000_0000_0003n,
  },
  {
    name: "vring file index",
    m: message(R.SET_VRING_CALL, encodeVringFileIndex({ index: 5, noFd: true })),
    decode: decodeVringFileIndex,
    value: { index: 5, noFd: true },
  },
  {
    name: "vhost_vring_state",
    m: message(R.SET_VRING_NUM, encodeVringState({ index: 1, num: 256 })),
    decode: decodeVringState,
    value: { index: 1, num: 256 },
  },
  {
    name: "vhost_vring_addr",
    m: message(R.SET_VRING_ADDR, encodeVringAddr(addr)),
    decode: decodeVringAddr,
    value: addr,
  },
  {
    name: "memory table",
    m: message(
      R.SET_MEM_TABLE,
      encodeMemTable([region, { ...region, gpa: 0, fd: 10 }]),
      [region.fd, 10],
    ),
    decode: decodeMemTable,
    value: [region, { ...region, gpa: 0, fd: 10 }],
  },
  {
    name: "single memory region",
    m: message(R.ADD_MEM_REG, encodeSingleRegion(region), [region.fd]),
    decode: (m) => decodeSingleRegion(m, m.fds[0]),
    value: region,
  },
  {
    name: "config",
    m: message(R.SET_CONFIG, encodeConfig(config)),
    decode: decodeConfig,
    value: config,
  },
  {
    name: "vring area",
    m: message(3, encodeVringArea({ index: 1, noFd: false, size: 4096, offset: 8192 })),
    decode: decodeVringArea,
    value: { index: 1, noFd: false, size: 4096, offset: 8192 },
  },
];

for (const c of cases) {
  Deno.test(`codec: ${c.name} round-trips`, () => {
    assert.deepEqual(c.decode(c.m), c.value);
  });
  Deno.test(`codec: ${c.name} one byte short is a ProtocolError`, () => {
    assert.throws(() => c.decode(oneShort(c.m)), ProtocolError);
  });
}

Deno.test("codec: header round-trips and a short one is a ProtocolError", () => {
  const h = { request: R.GET_CONFIG, flags: HeaderFlag.VERSION | HeaderFlag.REPLY, size: 20 };
  assert.deepEqual(decodeHeader(encodeHeader(h)), h);
  assert.deepEqual(decodeHeader(encodeMessage(h.request, h.flags, new Uint8Array(20))), h);
  assert.throws(() => decodeHeader(encodeHeader(h).subarray(0, 11)), ProtocolError);
});

Deno.test("codec: bytes follow the spec's layouts (little-endian)", () => {
  assert.deepEqual([...encodeHeader({ request: 5, flags: 9, size: 40 })], [
    ...[5, 0, 0, 0],
    ...[9, 0, 0, 0],
    ...[40, 0, 0, 0],
  ]);
  assert.deepEqual([...encodeVringState({ index: 1, num: 0x102 })], [1, 0, 0, 0, 2, 1, 0, 0]);
  assert.deepEqual([...encodeVringFileIndex({ index: 2, noFd: true })], [2, 1, 0, 0, 0, 0, 0, 0]);
  const a = encodeVringAddr({ index: 1, flags: 1, desc: 0x10, used: 0x30, avail: 0x20, log: 0x40 });
  assert.equal(a.length, 40);
  assert.deepEqual([a[0], a[4], a[8], a[16], a[24], a[32]], [1, 1, 0x10, 0x30, 0x20, 0x40]);
  const t = encodeMemTable([{ gpa: 0x10, size: 0x20, uva: 0x30, mmapOffset: 0x40, fd: 7 }]);
  assert.equal(t.length, 8 + 32);
  assert.deepEqual([t[0], t[8], t[16], t[24], t[32]], [1, 0x10, 0x20, 0x30, 0x40]);
  const s = encodeSingleRegion({ gpa: 0x10, size: 0x20, uva: 0x30, mmapOffset: 0x40, fd: 7 });
  assert.equal(s.length, 8 + 32);
  assert.deepEqual([...s.subarray(0, 8)], [0, 0, 0, 0, 0, 0, 0, 0]);
  assert.deepEqual([s[8], s[16], s[24], s[32]], [0x10, 0x20, 0x30, 0x40]);
  assert.deepEqual([
    ...encodeConfig({ offset: 4, size: 2, flags: 1, data: new Uint8Array([7, 8]) }),
  ], [
    ...[4, 0, 0, 0],
    ...[2, 0, 0, 0],
    ...[1, 0, 0, 0],
    7,
    8,
  ]);
  const v = encodeVringArea({ index: 1, noFd: true, size: 0x1000, offset: 0x2000 });
  assert.equal(v.length, 24);
  assert.deepEqual([v[0], v[1], v[9], v[17]], [1, 1, 0x10, 0x20]);
});

Deno.test("codec: decoders keep their checks, encoders refuse what they cannot carry", () => {
  // A value beyond 2^53 in an address field.
  const far = encodeVringAddr(addr);
  new DataView(far.buffer).setBigUint64(8, 1n << 60n, true);
  assert.throws(
    () => decodeVringAddr(message(R.SET_VRING_ADDR, far)),
    (e) =>
      e instanceof ProtocolError &&
      e.message === "SET_VRING_ADDR: descriptor table address 0x1000000000000000 is beyond 2^53",
  );
  // A table whose regions and fds disagree.
  assert.throws(
    () => decodeMemTable(message(R.SET_MEM_TABLE, encodeMemTable([region]), [])),
    /SET_MEM_TABLE: 1 regions but 0 fd\(s\)/,
  );
  // A wrong-size u64 names the request.
  assert.throws(
    () => decodeU64(message(R.SET_FEATURES, new Uint8Array(9))),
    (e) =>
      e instanceof ProtocolError && e.message === "SET_FEATURES: payload is 9 bytes, expected 8",
  );
  // Config beyond the 256-byte space.
  assert.throws(
    () => decodeConfig(message(R.GET_CONFIG, encodeConfig({ ...config, offset: 255 }))),
    /GET_CONFIG: offset 255 size 4 exceed 256/,
  );
  // A vring area names the backend request, not the frontend one sharing its code.
  assert.throws(
    () => decodeVringArea(message(3, new Uint8Array(8))),
    (e) =>
      e instanceof ProtocolError &&
      e.message === "VRING_HOST_NOTIFIER_MSG: payload is 8 bytes, expected 24",
  );
  assert.throws(() => encodeMemTable([]), RangeError);
  assert.throws(() => encodeMemTable(Array(9).fill(region)), RangeError);
  assert.throws(() => encodeConfig({ ...config, size: 5 }), RangeError);
});
