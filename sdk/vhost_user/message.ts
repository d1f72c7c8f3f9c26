/**
 * The vhost-user wire codec, shared by both ends (the backend session and the
 * TypeScript frontend): the 12-byte header and an `encodeX`/`decodeX` pair
 * for every payload the SDK sends or receives, each pair with the same field
 * names. Layouts follow QEMU's `docs/interop/vhost-user.rst` ("Message
 * Specification"); their sizes live in `uapi/vhost_user.ts`. All fields are
 * little-endian.
 *
 * Every decoder checks the payload size first and throws a
 * {@linkcode ProtocolError} naming the request and what was wrong.
 *
 * @module
 */

import { ProtocolError } from "../core/errors.ts";
import type { VringAddr, VringState } from "../core/device.ts";
import type { MemoryRegionSpec } from "../memory/guest_memory.ts";
import {
  CONFIG_HEADER_SIZE,
  frontendRequestName,
  HEADER_SIZE,
  HeaderFlag,
  INFLIGHT_DESCRIPTION_FIELDS_SIZE,
  INFLIGHT_DESCRIPTION_SIZE,
  LOG_DESCRIPTION_SIZE,
  MAX_CONFIG_SIZE,
  MAX_MEM_TABLE_REGIONS,
  MEM_REGION_SIZE,
  MEM_REGIONS_OFFSET,
  U64_SIZE,
  VRING_ADDR_SIZE,
  VRING_AREA_SIZE,
  VRING_INDEX_MASK,
  VRING_NOFD_FLAG,
  VRING_STATE_SIZE,
} from "../uapi/vhost_user.ts";

/** A message as read from the socket. */
export interface VhostUserMessage {
  /** Request code. */
  request: number;
  /** Header flags. */
  flags: number;
  /** Payload bytes (exactly the header's size). */
  payload: Uint8Array;
  /** File descriptors that came with it; the handler owns them. */
  fds: number[];
}

/** The message header ("Header": request, flags, size; `u32` each). */
export interface MessageHeader {
  /** Request code. */
  request: number;
  /** Header flags ({@linkcode HeaderFlag}). */
  flags: number;
  /** Payload size in bytes. */
  size: number;
}

/**
 * A ring's eventfd request payload (`SET_VRING_KICK/CALL/ERR`, "A single
 * 64-bit integer"): the ring index in bits 0-7, and bit 8 set when no fd
 * follows.
 */
export interface VringFileIndex {
  /** Ring index. */
  index: number;
  /** No fd comes with the message (polling mode, or no eventfd). */
  noFd: boolean;
}

/**
 * A config space payload ("Virtio device config space": offset, size, flags,
 * then `size` bytes), as `GET_CONFIG`/`SET_CONFIG` carry it.
 */
export interface ConfigPayload {
  /** Offset into the device config space. */
  offset: number;
  /** Number of config bytes. */
  size: number;
  /** `VHOST_USER_CONFIG_*` flags. */
  flags: number;
  /** The config bytes (`size` of them). */
  data: Uint8Array;
}

/**
 * A host notifier area ("Vring area description", `VhostUserVringArea`) of
 * `VRING_HOST_NOTIFIER_MSG`: where in the fd that comes with it ring
 * `index`'s doorbell lives, or, with `noFd`, that the ring has none.
 */
export interface VringArea {
  /** Ring index (bits 0-7 of the first `u64`). */
  index: number;
  /** No fd comes with the message: the area is withdrawn (bit 8). */
  noFd: boolean;
  /** Size of the area in bytes. */
  size: number;
  /** Offset of the area within the fd. */
  offset: number;
}

function view(m: VhostUserMessage): DataView {
  return new DataView(m.payload.buffer, m.payload.byteOffset, m.payload.byteLength);
}

/** A zeroed payload of `size` bytes and a view of it. */
function payload(size: number): [Uint8Array, DataView] {
  const b = new Uint8Array(size);
  return [b, new DataView(b.buffer)];
}

/** Decode a header; the caller checks `size` against its limit. */
export function decodeHeader(b: Uint8Array): MessageHeader {
  if (b.length < HEADER_SIZE) {
    throw new ProtocolError(`header is ${b.length} bytes, expected ${HEADER_SIZE}`);
  }
  const v = new DataView(b.buffer, b.byteOffset, HEADER_SIZE);
  return { request: v.getUint32(0, true), flags: v.getUint32(4, true), size: v.getUint32(8, true) };
}

/** Encode a header. */
export function encodeHeader(h: MessageHeader): Uint8Array {
  const [b, v] = payload(HEADER_SIZE);
  v.setUint32(0, h.request, true);
  v.setUint32(4, h.flags, true);
  v.setUint32(8, h.size, true);
  return b;
}

/** Encode a message: header followed by `payload`. */
export function encodeMessage(request: number, flags: number, payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(HEADER_SIZE + payload.length);
  out.set(encodeHeader({ request, flags, size: payload.length }));
  out.set(payload, HEADER_SIZE);
  return out;
}

/** A reply to `request` with `payload`. */
export function encodeReply(request: number, payload: Uint8Array): Uint8Array {
  return encodeMessage(request, HeaderFlag.VERSION | HeaderFlag.REPLY, payload);
}

/** Require the payload to be `size` bytes (or at least, with `atLeast`). */
export function expectSize(m: VhostUserMessage, size: number, atLeast = false): void {
  const n = m.payload.length;
  if (atLeast ? n < size : n !== size) {
    throw new ProtocolError(
      `${frontendRequestName(m.request)}: payload is ${n} bytes, expected ${
        atLeast ? "at least " : ""
      }${size}`,
    );
  }
}

/** Require exactly `count` fds. */
export function expectFds(m: VhostUserMessage, count: number): void {
  if (m.fds.length !== count) {
    throw new ProtocolError(
      `${frontendRequestName(m.request)}: carries ${m.fds.length} fd(s), expected ${count}`,
    );
  }
}

/**
 * A `u64` value as a safe number, or a ProtocolError naming `what` and the
 * request (`name`, or the frontend request of `m`).
 */
function safe(
  v: DataView,
  offset: number,
  m: VhostUserMessage,
  what: string,
  name?: string,
): number {
  const x = v.getBigUint64(offset, true);
  if (x > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new ProtocolError(
      `${name ?? frontendRequestName(m.request)}: ${what} 0x${x.toString(16)} is beyond 2^53`,
    );
  }
  return Number(x);
}

/** Encode a `u64` payload ("A single 64-bit integer"). */
export function encodeU64(value: bigint | number): Uint8Array {
  const [b, v] = payload(U64_SIZE);
  v.setBigUint64(0, BigInt(value), true);
  return b;
}

/** Decode a `u64` payload ("A single 64-bit integer"). */
export function decodeU64(m: VhostUserMessage): bigint {
  expectSize(m, U64_SIZE);
  return view(m).getBigUint64(0, true);
}

/** Encode the `u64` payload of `SET_VRING_KICK/CALL/ERR`. */
export function encodeVringFileIndex(f: VringFileIndex): Uint8Array {
  return encodeU64(f.index | (f.noFd ? VRING_NOFD_FLAG : 0));
}

/** Decode the `u64` payload of `SET_VRING_KICK/CALL/ERR`; bits above 8 are ignored. */
export function decodeVringFileIndex(m: VhostUserMessage): VringFileIndex {
  const v = Number(decodeU64(m) & 0xffffn);
  return { index: v & VRING_INDEX_MASK, noFd: (v & VRING_NOFD_FLAG) !== 0 };
}

/** Encode a `vhost_vring_state` payload ("A vring state description"). */
export function encodeVringState(s: VringState): Uint8Array {
  const [b, v] = payload(VRING_STATE_SIZE);
  v.setUint32(0, s.index, true);
  v.setUint32(4, s.num, true);
  return b;
}

/** Decode a `vhost_vring_state` payload ("A vring state description"). */
export function decodeVringState(m: VhostUserMessage): VringState {
  expectSize(m, VRING_STATE_SIZE);
  const v = view(m);
  return { index: v.getUint32(0, true), num: v.getUint32(4, true) };
}

/** Encode a `vhost_vring_addr` payload ("A vring address description"). */
export function encodeVringAddr(a: VringAddr): Uint8Array {
  const [b, v] = payload(VRING_ADDR_SIZE);
  v.setUint32(0, a.index, true);
  v.setUint32(4, a.flags, true);
  v.setBigUint64(8, BigInt(a.desc), true);
  v.setBigUint64(16, BigInt(a.used), true);
  v.setBigUint64(24, BigInt(a.avail), true);
  v.setBigUint64(32, BigInt(a.log), true);
  return b;
}

/** Decode a `vhost_vring_addr` payload ("A vring address description"). */
export function decodeVringAddr(m: VhostUserMessage): VringAddr {
  expectSize(m, VRING_ADDR_SIZE);
  const v = view(m);
  return {
    index: v.getUint32(0, true),
    flags: v.getUint32(4, true),
    desc: safe(v, 8, m, "descriptor table address"),
    used: safe(v, 16, m, "used ring address"),
    avail: safe(v, 24, m, "available ring address"),
    log: safe(v, 32, m, "log address"),
  };
}

/** Write one memory region ("Memory region description") at `offset`; its fd travels apart. */
function encodeRegion(v: DataView, offset: number, r: MemoryRegionSpec): void {
  v.setBigUint64(offset, BigInt(r.gpa), true);
  v.setBigUint64(offset + 8, BigInt(r.size), true);
  v.setBigUint64(offset + 16, BigInt(r.uva), true);
  v.setBigUint64(offset + 24, BigInt(r.mmapOffset), true);
}

/** Decode one memory region ("Memory region description") at `offset`, attaching `fd`. */
function decodeRegion(v: DataView, offset: number, m: VhostUserMessage, fd: number) {
  return {
    gpa: safe(v, offset, m, "guest physical address"),
    size: safe(v, offset + 8, m, "region size"),
    uva: safe(v, offset + 16, m, "frontend address"),
    mmapOffset: safe(v, offset + 24, m, "mmap offset"),
    fd,
  };
}

/**
 * Encode `SET_MEM_TABLE` ("Multiple Memory regions description"). The
 * regions' fds go with the message, in the same order (`regions.map((r) => r.fd)`).
 *
 * @throws RangeError when there are no regions or more than {@linkcode MAX_MEM_TABLE_REGIONS}.
 */
export function encodeMemTable(regions: readonly MemoryRegionSpec[]): Uint8Array {
  const n = regions.length;
  if (n === 0 || n > MAX_MEM_TABLE_REGIONS) {
    throw new RangeError(
      `SET_MEM_TABLE: ${n} regions; a table holds 1 to ${MAX_MEM_TABLE_REGIONS}`,
    );
  }
  const [b, v] = payload(MEM_REGIONS_OFFSET + n * MEM_REGION_SIZE);
  v.setUint32(0, n, true);
  regions.forEach((r, i) => encodeRegion(v, MEM_REGIONS_OFFSET + i * MEM_REGION_SIZE, r));
  return b;
}

/** Decode `SET_MEM_TABLE`: regions paired with the message's fds, one each. */
export function decodeMemTable(m: VhostUserMessage): MemoryRegionSpec[] {
  expectSize(m, MEM_REGIONS_OFFSET, true);
  const v = view(m);
  const n = v.getUint32(0, true);
  if (n === 0 || n > MAX_MEM_TABLE_REGIONS) {
    throw new ProtocolError(
      `SET_MEM_TABLE: ${n} regions; a table holds 1 to ${MAX_MEM_TABLE_REGIONS}`,
    );
  }
  const need = MEM_REGIONS_OFFSET + n * MEM_REGION_SIZE;
  if (m.payload.length < need) {
    throw new ProtocolError(
      `SET_MEM_TABLE: ${n} regions need ${need} payload bytes, got ${m.payload.length}`,
    );
  }
  if (m.fds.length !== n) {
    throw new ProtocolError(`SET_MEM_TABLE: ${n} regions but ${m.fds.length} fd(s)`);
  }
  const out: MemoryRegionSpec[] = [];
  for (let i = 0; i < n; i++) {
    out.push(decodeRegion(v, MEM_REGIONS_OFFSET + i * MEM_REGION_SIZE, m, m.fds[i]));
  }
  return out;
}

/**
 * Encode `ADD_MEM_REG` / `REM_MEM_REG` ("Single memory region description"):
 * 8 bytes of padding, then the region. Its fd goes with the message.
 */
export function encodeSingleRegion(r: MemoryRegionSpec): Uint8Array {
  const [b, v] = payload(MEM_REGIONS_OFFSET + MEM_REGION_SIZE);
  encodeRegion(v, MEM_REGIONS_OFFSET, r);
  return b;
}

/** Decode `ADD_MEM_REG` / `REM_MEM_REG`: one region after 8 bytes of padding, attaching `fd`. */
export function decodeSingleRegion(m: VhostUserMessage, fd: number): MemoryRegionSpec {
  expectSize(m, MEM_REGIONS_OFFSET + MEM_REGION_SIZE);
  return decodeRegion(view(m), MEM_REGIONS_OFFSET, m, fd);
}

/**
 * Encode a config payload (`GET_CONFIG`/`SET_CONFIG`, "Virtio device config
 * space"): the header, then `c.data`.
 *
 * @throws RangeError when `c.data` is not `c.size` bytes.
 */
export function encodeConfig(c: ConfigPayload): Uint8Array {
  if (c.data.length !== c.size) {
    throw new RangeError(`config payload: ${c.data.length} data bytes, size says ${c.size}`);
  }
  const [b, v] = payload(CONFIG_HEADER_SIZE + c.size);
  v.setUint32(0, c.offset, true);
  v.setUint32(4, c.size, true);
  v.setUint32(8, c.flags, true);
  b.set(c.data, CONFIG_HEADER_SIZE);
  return b;
}

/**
 * Decode a config payload (`GET_CONFIG`/`SET_CONFIG`, "Virtio device config
 * space"). `data` is a view of the message's payload.
 */
export function decodeConfig(m: VhostUserMessage): ConfigPayload {
  expectSize(m, CONFIG_HEADER_SIZE, true);
  const v = view(m);
  const offset = v.getUint32(0, true), size = v.getUint32(4, true), flags = v.getUint32(8, true);
  if (size > MAX_CONFIG_SIZE || offset > MAX_CONFIG_SIZE || offset + size > MAX_CONFIG_SIZE) {
    throw new ProtocolError(
      `${frontendRequestName(m.request)}: offset ${offset} size ${size} exceed ${MAX_CONFIG_SIZE}`,
    );
  }
  if (m.payload.length < CONFIG_HEADER_SIZE + size) {
    throw new ProtocolError(
      `${frontendRequestName(m.request)}: ${size} config bytes announced, ` +
        `${m.payload.length - CONFIG_HEADER_SIZE} present`,
    );
  }
  return {
    offset,
    size,
    flags,
    data: m.payload.subarray(CONFIG_HEADER_SIZE, CONFIG_HEADER_SIZE + size),
  };
}

/** Encode a `VRING_HOST_NOTIFIER_MSG` payload ("Vring area description"). */
export function encodeVringArea(a: VringArea): Uint8Array {
  const [b, v] = payload(VRING_AREA_SIZE);
  v.setBigUint64(0, BigInt(a.index | (a.noFd ? VRING_NOFD_FLAG : 0)), true);
  v.setBigUint64(8, BigInt(a.size), true);
  v.setBigUint64(16, BigInt(a.offset), true);
  return b;
}

/**
 * Decode a `VRING_HOST_NOTIFIER_MSG` payload ("Vring area description");
 * bits of the first `u64` above bit 8 are ignored.
 */
export function decodeVringArea(m: VhostUserMessage): VringArea {
  // A backend request: its code would name the wrong frontend request.
  const name = "VRING_HOST_NOTIFIER_MSG";
  if (m.payload.length !== VRING_AREA_SIZE) {
    throw new ProtocolError(
      `${name}: payload is ${m.payload.length} bytes, expected ${VRING_AREA_SIZE}`,
    );
  }
  const v = view(m);
  const u = Number(v.getBigUint64(0, true) & 0xffffn);
  return {
    index: u & VRING_INDEX_MASK,
    noFd: (u & VRING_NOFD_FLAG) !== 0,
    size: safe(v, 8, m, "area size", name),
    offset: safe(v, 16, m, "area offset", name),
  };
}

/** A dirty log payload ("Log description", `SET_LOG_BASE`): the fd's bytes to map. */
export interface LogDescription {
  /** Size of the log in bytes (`mmap_size`). */
  size: number;
  /** Where the log starts in the fd (`mmap_offset`). */
  offset: number;
}

/** Encode the "Log description" payload of `SET_LOG_BASE`. */
export function encodeLogDescription(l: LogDescription): Uint8Array {
  const [b, v] = payload(LOG_DESCRIPTION_SIZE);
  v.setBigUint64(0, BigInt(l.size), true);
  v.setBigUint64(8, BigInt(l.offset), true);
  return b;
}

/** Decode the "Log description" payload of `SET_LOG_BASE`. */
export function decodeLogDescription(m: VhostUserMessage): LogDescription {
  expectSize(m, LOG_DESCRIPTION_SIZE);
  const v = view(m);
  return { size: safe(v, 0, m, "log size"), offset: safe(v, 8, m, "log offset") };
}

/**
 * An "Inflight description" (`GET_INFLIGHT_FD`, `SET_INFLIGHT_FD`): the
 * region that tracks in-flight requests, as `mmapSize` bytes at
 * `mmapOffset` of the fd the message carries, for `numQueues` rings of
 * `queueSize` descriptors. In `GET_INFLIGHT_FD` from the frontend only the
 * queue count and size mean something.
 */
export interface InflightDescription {
  /** Bytes of the region (`mmap_size`). */
  mmapSize: number;
  /** Where the region starts in the fd (`mmap_offset`). */
  mmapOffset: number;
  /** Rings the region tracks (`num_queues`). */
  numQueues: number;
  /** Descriptors per ring (`queue_size`). */
  queueSize: number;
}

/** Encode an "Inflight description" payload (24 bytes, the padded C struct). */
export function encodeInflightDescription(d: InflightDescription): Uint8Array {
  const [b, v] = payload(INFLIGHT_DESCRIPTION_SIZE);
  v.setBigUint64(0, BigInt(d.mmapSize), true);
  v.setBigUint64(8, BigInt(d.mmapOffset), true);
  v.setUint16(16, d.numQueues, true);
  v.setUint16(18, d.queueSize, true);
  return b;
}

/**
 * Decode an "Inflight description" payload: 24 bytes (what QEMU sends), or
 * the 20 bytes of its fields without padding.
 */
export function decodeInflightDescription(m: VhostUserMessage): InflightDescription {
  const n = m.payload.length;
  if (n !== INFLIGHT_DESCRIPTION_SIZE && n !== INFLIGHT_DESCRIPTION_FIELDS_SIZE) {
    throw new ProtocolError(
      `${frontendRequestName(m.request)}: payload is ${n} bytes, expected ` +
        `${INFLIGHT_DESCRIPTION_SIZE} (or ${INFLIGHT_DESCRIPTION_FIELDS_SIZE} without padding)`,
    );
  }
  const v = view(m);
  return {
    mmapSize: safe(v, 0, m, "mmap size"),
    mmapOffset: safe(v, 8, m, "mmap offset"),
    numQueues: v.getUint16(16, true),
    queueSize: v.getUint16(18, true),
  };
}

/** Encode the `u64` payload of `SEND_RARP`: the guest's MAC in its first 6 bytes. */
export function encodeRarpMac(mac: Uint8Array): Uint8Array {
  if (mac.length !== 6) throw new RangeError(`a MAC address is 6 bytes, not ${mac.length}`);
  const [b] = payload(U64_SIZE);
  b.set(mac);
  return b;
}

/** Decode the `u64` payload of `SEND_RARP`: the guest's MAC (its first 6 bytes). */
export function decodeRarpMac(m: VhostUserMessage): Uint8Array {
  expectSize(m, U64_SIZE);
  return m.payload.slice(0, 6);
}

/** Bytes of the IOTLB payload as QEMU and DPDK send it (`struct vhost_iotlb_msg`, padded). */
export const IOTLB_MSG_SIZE = 32;
/** Bytes of the payload's fields; a shorter message is malformed. */
const IOTLB_MSG_FIELDS = 26;

/** `IOTLB_MSG` payload ("IOTLB message", `struct vhost_iotlb_msg`). */
export interface IotlbMessage {
  /** I/O virtual address. */
  iova: bigint;
  /** Bytes. */
  size: bigint;
  /** The frontend's virtual address (updates). */
  uaddr: bigint;
  /** `VHOST_ACCESS_*` bits (`IotlbAccess`). */
  perm: number;
  /** `IotlbMessageType`. */
  type: number;
}

/** Encode an IOTLB message (either direction: `IOTLB_MSG` requests on both channels). */
export function encodeIotlbMessage(msg: IotlbMessage): Uint8Array {
  const [b, v] = payload(IOTLB_MSG_SIZE);
  v.setBigUint64(0, msg.iova, true);
  v.setBigUint64(8, msg.size, true);
  v.setBigUint64(16, msg.uaddr, true);
  v.setUint8(24, msg.perm);
  v.setUint8(25, msg.type);
  return b;
}

/**
 * Decode an IOTLB message. The 64-bit fields stay bigints: an invalidation
 * may reach the end of the 64-bit space, and the caller decides what is
 * beyond its reach.
 */
export function decodeIotlbMessage(m: VhostUserMessage): IotlbMessage {
  expectSize(m, IOTLB_MSG_FIELDS, true);
  if (m.payload.length > IOTLB_MSG_SIZE) {
    throw new ProtocolError(
      `${frontendRequestName(m.request)}: ${m.payload.length}-byte payload, an IOTLB message ` +
        `has ${IOTLB_MSG_SIZE}`,
    );
  }
  const v = view(m);
  return {
    iova: v.getBigUint64(0, true),
    size: v.getBigUint64(8, true),
    uaddr: v.getBigUint64(16, true),
    perm: v.getUint8(24),
    type: v.getUint8(25),
  };
}
