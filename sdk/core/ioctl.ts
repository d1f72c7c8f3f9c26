/**
 * The RFC's ioctl interface, as an adapter: `vhost_mdev_ioctl` took the
 * vhost ioctl set plus `VHOST_MDEV_SET_STATE` on the device fd; here each
 * request number maps onto the device's named request method. Embedders and
 * tests that think in ioctls use `VhostMdevDevice.ioctl`; the vhost-user
 * session calls the named methods directly.
 *
 * @module
 */

import type { MemoryRegionSpec } from "../memory/guest_memory.ts";
import { VhostIoctl } from "../uapi/vhost.ts";
import type { VhostMdevDevice, VringAddr, VringFile, VringState } from "./device.ts";
import { ProtocolError } from "./errors.ts";

/** Argument types of `VhostMdevDevice.ioctl`, by request. */
export interface IoctlArgs {
  /** `VHOST_GET_FEATURES` argument. */
  [VhostIoctl.GET_FEATURES]: undefined;
  /** `VHOST_SET_FEATURES` argument. */
  [VhostIoctl.SET_FEATURES]: bigint;
  /** `VHOST_SET_OWNER` argument. */
  [VhostIoctl.SET_OWNER]: undefined;
  /** `VHOST_RESET_OWNER` argument. */
  [VhostIoctl.RESET_OWNER]: undefined;
  /** `VHOST_SET_MEM_TABLE` argument. */
  [VhostIoctl.SET_MEM_TABLE]: readonly MemoryRegionSpec[];
  /** `VHOST_SET_VRING_NUM` argument. */
  [VhostIoctl.SET_VRING_NUM]: VringState;
  /** `VHOST_SET_VRING_ADDR` argument. */
  [VhostIoctl.SET_VRING_ADDR]: VringAddr;
  /** `VHOST_SET_VRING_BASE` argument. */
  [VhostIoctl.SET_VRING_BASE]: VringState;
  /** `VHOST_GET_VRING_BASE` argument. */
  [VhostIoctl.GET_VRING_BASE]: { index: number };
  /** `VHOST_SET_VRING_KICK` argument. */
  [VhostIoctl.SET_VRING_KICK]: VringFile;
  /** `VHOST_SET_VRING_CALL` argument. */
  [VhostIoctl.SET_VRING_CALL]: VringFile;
  /** `VHOST_SET_VRING_ERR` argument. */
  [VhostIoctl.SET_VRING_ERR]: VringFile;
  /** `VHOST_MDEV_SET_STATE` argument. */
  [VhostIoctl.MDEV_SET_STATE]: number;
}

/** Result types of `VhostMdevDevice.ioctl`, by request. */
export interface IoctlResults {
  /** `VHOST_GET_FEATURES` result. */
  [VhostIoctl.GET_FEATURES]: bigint;
  /** `VHOST_SET_FEATURES` result. */
  [VhostIoctl.SET_FEATURES]: void;
  /** `VHOST_SET_OWNER` result. */
  [VhostIoctl.SET_OWNER]: void;
  /** `VHOST_RESET_OWNER` result. */
  [VhostIoctl.RESET_OWNER]: void;
  /** `VHOST_SET_MEM_TABLE` result. */
  [VhostIoctl.SET_MEM_TABLE]: void;
  /** `VHOST_SET_VRING_NUM` result. */
  [VhostIoctl.SET_VRING_NUM]: void;
  /** `VHOST_SET_VRING_ADDR` result. */
  [VhostIoctl.SET_VRING_ADDR]: void;
  /** `VHOST_SET_VRING_BASE` result. */
  [VhostIoctl.SET_VRING_BASE]: void;
  /** `VHOST_GET_VRING_BASE` result. */
  [VhostIoctl.GET_VRING_BASE]: VringState;
  /** `VHOST_SET_VRING_KICK` result. */
  [VhostIoctl.SET_VRING_KICK]: void;
  /** `VHOST_SET_VRING_CALL` result. */
  [VhostIoctl.SET_VRING_CALL]: void;
  /** `VHOST_SET_VRING_ERR` result. */
  [VhostIoctl.SET_VRING_ERR]: void;
  /** `VHOST_MDEV_SET_STATE` result. */
  [VhostIoctl.MDEV_SET_STATE]: void;
}

/**
 * Run ioctl `request` with `arg` on `device` through its named request
 * methods.
 *
 * @throws ProtocolError for an unknown request or malformed argument;
 *   RequestRefused when the device refuses.
 */
export function vhostIoctl(
  device: VhostMdevDevice,
  request: number,
  arg: unknown,
): Promise<unknown> {
  switch (request) {
    case VhostIoctl.GET_FEATURES:
      return Promise.resolve(device.getFeatures());
    case VhostIoctl.SET_FEATURES:
      return device.setFeatures(arg as bigint);
    case VhostIoctl.SET_OWNER:
      return Promise.resolve();
    case VhostIoctl.RESET_OWNER:
      return device.reset();
    case VhostIoctl.SET_MEM_TABLE:
      return device.setMemTable(arg as readonly MemoryRegionSpec[]);
    case VhostIoctl.SET_VRING_NUM: {
      const { index, num } = arg as VringState;
      return device.setVringNum(index, num);
    }
    case VhostIoctl.SET_VRING_ADDR:
      return device.setVringAddr(arg as VringAddr);
    case VhostIoctl.SET_VRING_BASE: {
      const { index, num } = arg as VringState;
      return device.setVringBase(index, num);
    }
    case VhostIoctl.GET_VRING_BASE:
      return device.getVringBase((arg as { index: number }).index);
    case VhostIoctl.SET_VRING_KICK: {
      const { index, fd } = arg as VringFile;
      return device.setVringKick(index, fd);
    }
    case VhostIoctl.SET_VRING_CALL: {
      const { index, fd } = arg as VringFile;
      return device.setVringCall(index, fd);
    }
    case VhostIoctl.SET_VRING_ERR: {
      const { index, fd } = arg as VringFile;
      return device.setVringErr(index, fd);
    }
    case VhostIoctl.MDEV_SET_STATE:
      return device.setState(arg as number);
    default:
      return Promise.reject(
        new ProtocolError(`unknown vhost ioctl request 0x${request.toString(16)}`),
      );
  }
}
