/**
 * vhost-user framing: the 12-byte header and the payload layouts the SDK
 * decodes. Every decoder checks the payload size first and throws a
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
  MAX_CONFIG_SIZE,
  MAX_MEM_TABLE_REGIONS,
  MEM_REGION_SIZE,
  VRING_ADDR_SIZE,
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

/** Decode a header; the caller checks `size` against its limit. */
export function decodeHeader(b: Uint8Array): { request: number; flags: number; size: number } {
  const v = new DataView(b.buffer, b.byteOffset, HEADER_SIZE);
  return { request: v.getUint32(0, true), flags: v.getUint32(4, true), size: v.getUint32(8, true) };
}

/** Encode a message: header followed by `payload`. */
export function encodeMessage(request: number, flags: number, payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(HEADER_SIZE + payload.length);
  const v = new DataView(out.buffer);
  v.setUint32(0, request, true);
  v.setUint32(4, flags, true);
  v.setUint32(8, payload.length, true);
  out.set(payload, HEADER_SIZE);
  return out;
}

/** A reply to `request` with `payload`. */
export function encodeReply(request: number, payload: Uint8Array): Uint8Array {
  return encodeMessage(request, HeaderFlag.VERSION | HeaderFlag.REPLY, payload);
}

/** A `u64` payload. */
export function u64Payload(value: bigint | number): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(value), true);
  return b;
}

function view(m: VhostUserMessage): DataView {
  return new DataView(m.payload.buffer, m.payload.byteOffset, m.payload.byteLength);
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

/** A `u64` value as a safe number, or a ProtocolError naming `what`. */
function safe(v: DataView, offset: number, m: VhostUserMessage, what: string): number {
  const x = v.getBigUint64(offset, true);
  if (x > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new ProtocolError(
      `${frontendRequestName(m.request)}: ${what} 0x${x.toString(16)} is beyond 2^53`,
    );
  }
  return Number(x);
}

/** Decode a `u64` payload. */
export function decodeU64(m: VhostUserMessage): bigint {
  expectSize(m, 8);
  return view(m).getBigUint64(0, true);
}

/** Decode a `vhost_vring_state` payload. */
export function decodeVringState(m: VhostUserMessage): VringState {
  expectSize(m, VRING_STATE_SIZE);
  const v = view(m);
  return { index: v.getUint32(0, true), num: v.getUint32(4, true) };
}

/** Encode a `vhost_vring_state` payload. */
export function encodeVringState(s: VringState): Uint8Array {
  const b = new Uint8Array(VRING_STATE_SIZE);
  const v = new DataView(b.buffer);
  v.setUint32(0, s.index, true);
  v.setUint32(4, s.num, true);
  return b;
}

/** Decode a `vhost_vring_addr` payload. */
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

/** Decode one memory region at `offset`, attaching `fd`. */
function decodeRegion(v: DataView, offset: number, m: VhostUserMessage, fd: number) {
  return {
    gpa: safe(v, offset, m, "guest physical address"),
    size: safe(v, offset + 8, m, "region size"),
    uva: safe(v, offset + 16, m, "frontend address"),
    mmapOffset: safe(v, offset + 24, m, "mmap offset"),
    fd,
  };
}

/** Decode `SET_MEM_TABLE`: regions paired with the message's fds, one each. */
export function decodeMemTable(m: VhostUserMessage): MemoryRegionSpec[] {
  expectSize(m, 8, true);
  const v = view(m);
  const n = v.getUint32(0, true);
  if (n === 0 || n > MAX_MEM_TABLE_REGIONS) {
    throw new ProtocolError(
      `SET_MEM_TABLE: ${n} regions; a table holds 1 to ${MAX_MEM_TABLE_REGIONS}`,
    );
  }
  const need = 8 + n * MEM_REGION_SIZE;
  if (m.payload.length < need) {
    throw new ProtocolError(
      `SET_MEM_TABLE: ${n} regions need ${need} payload bytes, got ${m.payload.length}`,
    );
  }
  if (m.fds.length !== n) {
    throw new ProtocolError(`SET_MEM_TABLE: ${n} regions but ${m.fds.length} fd(s)`);
  }
  const out: MemoryRegionSpec[] = [];
  for (let i = 0; i < n; i++) out.push(decodeRegion(v, 8 + i * MEM_REGION_SIZE, m, m.fds[i]));
  return out;
}

/** Decode `ADD_MEM_REG` / `REM_MEM_REG`: one region after 8 bytes of padding. */
export function decodeSingleRegion(m: VhostUserMessage, fd: number): MemoryRegionSpec {
  expectSize(m, 8 + MEM_REGION_SIZE);
  return decodeRegion(view(m), 8, m, fd);
}

/** Decode a config payload header (`GET_CONFIG`/`SET_CONFIG`). */
export function decodeConfig(
  m: VhostUserMessage,
): { offset: number; size: number; flags: number; data: Uint8Array } {
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

/** Encode a config payload. */
export function encodeConfig(offset: number, flags: number, data: Uint8Array): Uint8Array {
  const b = new Uint8Array(CONFIG_HEADER_SIZE + data.length);
  const v = new DataView(b.buffer);
  v.setUint32(0, offset, true);
  v.setUint32(4, data.length, true);
  v.setUint32(8, flags, true);
  b.set(data, CONFIG_HEADER_SIZE);
  return b;
}
