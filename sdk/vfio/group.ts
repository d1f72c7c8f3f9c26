/**
 * A VFIO group (`/dev/vfio/N`): the unit of isolation the IOMMU can give.
 * It is viable only when every device in it is bound to a VFIO driver (or
 * to none); it is attached to a container, and then hands out device fds.
 *
 * @module
 */

import { close, ioctl } from "../sys/mod.ts";
import { VfioGroupStatus, VfioIoctl } from "../uapi/vfio.ts";
import type { VfioContainer } from "./container.ts";
import { VfioError } from "./errors.ts";

/** An open VFIO group. */
export class VfioGroup {
  /** The group fd. */
  readonly fd: number;
  /** IOMMU group number. */
  readonly number: number;
  #container: VfioContainer | null = null;
  #closed = false;

  /** Adopt an open group fd (owned from now on). */
  constructor(fd: number, number: number) {
    this.fd = fd;
    this.number = number;
  }

  /** `VFIO_GROUP_GET_STATUS`. */
  status(): { viable: boolean; containerSet: boolean } {
    const buf = new Uint8Array(VfioGroupStatus.SIZE);
    const v = new DataView(buf.buffer);
    v.setUint32(VfioGroupStatus.ARGSZ, VfioGroupStatus.SIZE, true);
    ioctl(this.fd, VfioIoctl.GROUP_GET_STATUS, buf);
    const flags = v.getUint32(VfioGroupStatus.FLAGS, true);
    return {
      viable: (flags & VfioGroupStatus.FLAG_VIABLE) !== 0,
      containerSet: (flags & VfioGroupStatus.FLAG_CONTAINER_SET) !== 0,
    };
  }

  /** `VFIO_GROUP_SET_CONTAINER`: attach to `container` (the argument is a pointer to its fd). */
  setContainer(container: VfioContainer): void {
    const arg = new Uint8Array(4);
    new DataView(arg.buffer).setInt32(0, container.fd, true);
    ioctl(this.fd, VfioIoctl.GROUP_SET_CONTAINER, arg);
    this.#container = container;
  }

  /**
   * `VFIO_GROUP_GET_DEVICE_FD` for device `name` (its PCI address).
   *
   * @throws VfioError when the kernel refuses (the device is not in this
   *   group, or is already open elsewhere).
   */
  deviceFd(name: string): number {
    const arg = new TextEncoder().encode(name + "\0");
    try {
      return ioctl(this.fd, VfioIoctl.GROUP_GET_DEVICE_FD, arg);
    } catch (e) {
      const busy = e instanceof Error && /EBUSY/.test(e.message);
      throw new VfioError(
        busy ? "busy" : "kernel",
        busy
          ? `VFIO device ${name} is already open in another process (or this one)`
          : `VFIO_GROUP_GET_DEVICE_FD ${name} on group ${this.number} failed: ${
            e instanceof Error ? e.message : e
          }`,
        { cause: e },
      );
    }
  }

  /** Detach from the container and close. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#container) {
      try {
        ioctl(this.fd, VfioIoctl.GROUP_UNSET_CONTAINER);
      } catch {
        // Closing the fd detaches the group as well.
      }
      this.#container = null;
    }
    close(this.fd);
  }
}
