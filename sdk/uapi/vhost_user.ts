/**
 * The vhost-user protocol's numbers and wire layouts (QEMU's
 * `docs/interop/vhost-user.rst`): request codes both ways, protocol feature
 * bits, header flags, and the payload sizes the SDK checks messages against.
 * All fields are little-endian.
 *
 * @module
 */

/** Requests a frontend sends to the backend. */
export const FrontendRequest = {
  GET_FEATURES: 1,
  SET_FEATURES: 2,
  SET_OWNER: 3,
  RESET_OWNER: 4,
  SET_MEM_TABLE: 5,
  SET_LOG_BASE: 6,
  SET_LOG_FD: 7,
  SET_VRING_NUM: 8,
  SET_VRING_ADDR: 9,
  SET_VRING_BASE: 10,
  GET_VRING_BASE: 11,
  SET_VRING_KICK: 12,
  SET_VRING_CALL: 13,
  SET_VRING_ERR: 14,
  GET_PROTOCOL_FEATURES: 15,
  SET_PROTOCOL_FEATURES: 16,
  GET_QUEUE_NUM: 17,
  SET_VRING_ENABLE: 18,
  SEND_RARP: 19,
  NET_SET_MTU: 20,
  SET_BACKEND_REQ_FD: 21,
  IOTLB_MSG: 22,
  SET_VRING_ENDIAN: 23,
  GET_CONFIG: 24,
  SET_CONFIG: 25,
  CREATE_CRYPTO_SESSION: 26,
  CLOSE_CRYPTO_SESSION: 27,
  POSTCOPY_ADVISE: 28,
  POSTCOPY_LISTEN: 29,
  POSTCOPY_END: 30,
  GET_INFLIGHT_FD: 31,
  SET_INFLIGHT_FD: 32,
  GPU_SET_SOCKET: 33,
  RESET_DEVICE: 34,
  VRING_KICK: 35,
  GET_MAX_MEM_SLOTS: 36,
  ADD_MEM_REG: 37,
  REM_MEM_REG: 38,
  SET_STATUS: 39,
  GET_STATUS: 40,
  GET_SHARED_OBJECT: 41,
  SET_DEVICE_STATE_FD: 42,
  CHECK_DEVICE_STATE: 43,
} as const;

/** Requests the backend sends on the backend channel (`SET_BACKEND_REQ_FD`). */
export const BackendRequest = {
  IOTLB_MSG: 1,
  CONFIG_CHANGE_MSG: 2,
  VRING_HOST_NOTIFIER_MSG: 3,
  VRING_CALL: 4,
  VRING_ERR: 5,
  SHARED_OBJECT_ADD: 6,
  SHARED_OBJECT_REMOVE: 7,
  SHARED_OBJECT_LOOKUP: 8,
} as const;

/** Protocol feature bit numbers (`GET_PROTOCOL_FEATURES`). */
export const ProtocolFeatureBit = {
  MQ: 0,
  LOG_SHMFD: 1,
  RARP: 2,
  REPLY_ACK: 3,
  NET_MTU: 4,
  BACKEND_REQ: 5,
  CROSS_ENDIAN: 6,
  CRYPTO_SESSION: 7,
  PAGEFAULT: 8,
  CONFIG: 9,
  BACKEND_SEND_FD: 10,
  HOST_NOTIFIER: 11,
  INFLIGHT_SHMFD: 12,
  RESET_DEVICE: 13,
  INBAND_NOTIFICATIONS: 14,
  CONFIGURE_MEM_SLOTS: 15,
  STATUS: 16,
  XEN_MMAP: 17,
  SHARED_OBJECT: 18,
  DEVICE_STATE: 19,
} as const;

/** Header flag bits. */
export const HeaderFlag = {
  /** Protocol version 1 in bits 0-1. */
  VERSION: 0x1,
  VERSION_MASK: 0x3,
  /** This message is a reply. */
  REPLY: 0x4,
  /** The sender wants a reply (`REPLY_ACK`). */
  NEED_REPLY: 0x8,
} as const;

/** Size of the message header: request, flags, size (u32 each). */
export const HEADER_SIZE = 12;
/** Largest payload the SDK accepts; bigger sizes fail the session. */
export const MAX_PAYLOAD_SIZE = 4096;
/** Most file descriptors one message may carry. */
export const MAX_FDS = 32;
/** Regions in one `SET_MEM_TABLE` message. */
export const MAX_MEM_TABLE_REGIONS = 8;
/** Memory slots offered with `CONFIGURE_MEM_SLOTS`. */
export const MAX_MEM_SLOTS = 32;
/** Size of one memory region on the wire (gpa, size, uva, mmap offset). */
export const MEM_REGION_SIZE = 32;
/**
 * Bytes before the regions of a memory table (`u32` count, `u32` padding) and
 * before the one region of `ADD_MEM_REG`/`REM_MEM_REG` (`u64` padding).
 */
export const MEM_REGIONS_OFFSET = 8;
/** Bytes of a `u64` payload. */
export const U64_SIZE = 8;
/** `u64` payloads of SET_VRING_KICK/CALL/ERR: ring index mask. */
export const VRING_INDEX_MASK = 0xff;
/** `u64` payloads of SET_VRING_KICK/CALL/ERR: no fd follows (polling mode). */
export const VRING_NOFD_FLAG = 0x100;
/** `SET_VRING_ADDR` flags: log the used ring. */
export const VRING_F_LOG = 0x1;
/** Bytes of a `vhost_vring_addr` payload. */
export const VRING_ADDR_SIZE = 40;
/** Bytes of a `vhost_vring_state` payload. */
export const VRING_STATE_SIZE = 8;
/** Bytes of a config payload header (offset, size, flags) before the data. */
export const CONFIG_HEADER_SIZE = 12;
/** Largest config space the protocol carries. */
export const MAX_CONFIG_SIZE = 256;
/** Bytes of a `VhostUserVringArea` payload (index and flags, size, offset; u64 each). */
export const VRING_AREA_SIZE = 24;
/** Size of the "Log description" payload of `SET_LOG_BASE` (`mmap_size`, `mmap_offset`). */
export const LOG_DESCRIPTION_SIZE = 16;

/**
 * Bytes of an "Inflight description" payload (`GET_INFLIGHT_FD`,
 * `SET_INFLIGHT_FD`): `u64` mmap size, `u64` mmap offset, `u16` queue count,
 * `u16` queue size, padded to 24 as QEMU and libvhost-user send it (the C
 * struct's size).
 */
export const INFLIGHT_DESCRIPTION_SIZE = 24;
/** Bytes of the "Inflight description" fields without the trailing padding. */
export const INFLIGHT_DESCRIPTION_FIELDS_SIZE = 20;

/** Name of a frontend request code, for logs (`SET_MEM_TABLE`, or `request 99`). */
export function frontendRequestName(code: number): string {
  for (const [k, v] of Object.entries(FrontendRequest)) if (v === code) return k;
  return `request ${code}`;
}
