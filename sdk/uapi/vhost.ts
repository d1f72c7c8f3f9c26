/**
 * The kernel vhost ioctl set (`linux/vhost.h`) plus the RFC's
 * `VHOST_MDEV_SET_STATE`. The SDK's in-process entry point
 * (`VhostMdevDevice.ioctl`) takes these same request numbers, so code written
 * against `/dev/vhost-*` ioctls maps one to one.
 *
 * @module
 */

const VHOST_VIRTIO = 0xaf;
const NONE = 0, WRITE = 1, READ = 2;

function ioc(dir: number, nr: number, size: number): number {
  return ((dir << 30) | (size << 16) | (VHOST_VIRTIO << 8) | nr) >>> 0;
}

/** vhost ioctl request numbers (x86-64 encodings). */
export const VhostIoctl = {
  GET_FEATURES: ioc(READ, 0x00, 8),
  SET_FEATURES: ioc(WRITE, 0x00, 8),
  SET_OWNER: ioc(NONE, 0x01, 0),
  RESET_OWNER: ioc(NONE, 0x02, 0),
  SET_MEM_TABLE: ioc(WRITE, 0x03, 8),
  SET_LOG_BASE: ioc(WRITE, 0x04, 8),
  SET_LOG_FD: ioc(WRITE, 0x07, 4),
  SET_VRING_NUM: ioc(WRITE, 0x10, 8),
  SET_VRING_ADDR: ioc(WRITE, 0x11, 40),
  SET_VRING_BASE: ioc(WRITE, 0x12, 8),
  GET_VRING_BASE: ioc(READ | WRITE, 0x12, 8),
  SET_VRING_KICK: ioc(WRITE, 0x20, 8),
  SET_VRING_CALL: ioc(WRITE, 0x21, 8),
  SET_VRING_ERR: ioc(WRITE, 0x22, 8),
  /** The RFC's state switch: argument is a {@linkcode VhostMdevState}. */
  MDEV_SET_STATE: ioc(WRITE, 0x70, 8),
} as const;

/** States of `VHOST_MDEV_SET_STATE`. */
export const VhostMdevState = {
  STOPPED: 0,
  RUNNING: 1,
} as const;
