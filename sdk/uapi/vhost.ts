/**
 * The kernel vhost ioctl set (`linux/vhost.h`) plus the RFC's
 * `VHOST_MDEV_SET_STATE`. The SDK's in-process entry point
 * (`VhostMdevDevice.ioctl`) takes these same request numbers, so code written
 * against `/dev/vhost-*` ioctls maps one to one.
 *
 * @module
 */

/**
 * vhost ioctl request numbers (x86-64 encodings of `_IO`/`_IOR`/`_IOW` on
 * type `0xaf`, as in `linux/vhost.h`).
 */
export const VhostIoctl = {
  GET_FEATURES: 0x8008af00,
  SET_FEATURES: 0x4008af00,
  SET_OWNER: 0x0000af01,
  RESET_OWNER: 0x0000af02,
  SET_MEM_TABLE: 0x4008af03,
  SET_LOG_BASE: 0x4008af04,
  SET_LOG_FD: 0x4004af07,
  SET_VRING_NUM: 0x4008af10,
  SET_VRING_ADDR: 0x4028af11,
  SET_VRING_BASE: 0x4008af12,
  GET_VRING_BASE: 0xc008af12,
  SET_VRING_KICK: 0x4008af20,
  SET_VRING_CALL: 0x4008af21,
  SET_VRING_ERR: 0x4008af22,
  /** The RFC's state switch: argument is a {@linkcode VhostMdevState}. */
  MDEV_SET_STATE: 0x4008af70,
} as const;

/** Encode an ioctl number as `<asm-generic/ioctl.h>` does (dir 0 none, 1 write, 2 read). */
export function ioctlNumber(dir: number, type: number, nr: number, size: number): number {
  return ((dir << 30) | (size << 16) | (type << 8) | nr) >>> 0;
}

/** States of `VHOST_MDEV_SET_STATE`. */
export const VhostMdevState = {
  STOPPED: 0,
  RUNNING: 1,
} as const;

/** `struct vhost_iotlb_msg.type` (`linux/vhost_types.h`): what an IOTLB message says. */
export const IotlbMessageType = {
  /** Backend to frontend: the device needs a translation for `iova`. */
  MISS: 1,
  /** Frontend to backend: a translation. */
  UPDATE: 2,
  /** Frontend to backend: take back the translations of a range. */
  INVALIDATE: 3,
  /** An access the translation does not permit (not sent by the SDK). */
  ACCESS_FAIL: 4,
} as const;

/** Access rights of an IOTLB entry (`VHOST_ACCESS_*` of `struct vhost_iotlb_msg.perm`). */
export const IotlbAccess = {
  /** No access. */
  NONE: 0,
  /** The device may read (`VHOST_ACCESS_RO`). */
  READ: 1,
  /** The device may write (`VHOST_ACCESS_WO`). */
  WRITE: 2,
  /** Both (`VHOST_ACCESS_RW`). */
  READ_WRITE: 3,
} as const;
