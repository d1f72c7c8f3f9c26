/**
 * Doorbells: a kick relayed by a single store, with no hop to the main
 * thread. A hardware driver whose device is notified by writing a register
 * (virtio-pci: a 16-bit store of the queue index at the queue's notify
 * address, virtio 1.2 §4.1.4.4 and §4.1.5.2) hands the SDK that register as
 * a {@linkcode Doorbell}; the kick relay's Worker then rings it itself as
 * soon as it drains the frontend's kick, instead of posting the kick to the
 * main thread for `ops.notify(q)`.
 *
 * @module
 */

import { viewOf } from "../sys/mod.ts";

/**
 * A register to store to when the frontend kicks a ring: `value` is written
 * at `address` as one store of `width` bytes.
 *
 * Lifetime contract: the memory at `address` must stay mapped until every
 * kick relay told about it has stopped (its `stop()` resolved): the relay's
 * Worker stores there from its own thread at any time before that, and a
 * store into an unmapped page kills the process. The device core stops the
 * relay before it calls the driver's `stop` or `close`, so a doorbell in a
 * BAR the driver maps for its whole lifetime (and unmaps in `close`) is safe.
 *
 * @example A virtio-pci notify register in a mapped BAR
 * ```ts
 * import type { Doorbell } from "./doorbell.ts";
 * declare const bar: { address: number }; // a Mapping of the notify BAR
 * declare const notifyOffset: number; // cap.offset + queue_notify_off * multiplier
 * const q = 0;
 * const doorbell: Doorbell = { address: bar.address + notifyOffset, width: 2, value: q };
 * ```
 */
export interface Doorbell {
  /**
   * Where to store: an address in this process's address space, e.g.
   * `Mapping.address` of a mapped BAR plus the register's offset. Must be
   * a multiple of `width` (MMIO registers take naturally aligned accesses
   * only; virtio 1.2 §4.1.3.1).
   */
  address: number;
  /**
   * Bytes per store. 2 for a virtio-pci queue notify register (the driver
   * writes the 16-bit queue index, virtio 1.2 §4.1.4.4, §4.1.5.2); 4 for a
   * 32-bit doorbell such as the notification-data layout that
   * `VIRTIO_F_NOTIFICATION_DATA` selects (§4.1.5.2, §2.9). The store is a
   * single access of exactly this width: devices ignore byte-wise writes to
   * wider registers.
   */
  width: 2 | 4;
  /**
   * What to store: for virtio-pci notify the queue index, or the queue's
   * `queue_notify_data` when `VIRTIO_F_NOTIF_CONFIG_DATA` was negotiated
   * (§4.1.4.4); for a 32-bit doorbell the notification data. It is fixed:
   * a device that wants the current available index in the notification
   * (`next_off` of §2.9) needs `ops.notify` instead.
   */
  value: number;
}

/**
 * Refuse a doorbell that cannot be stored safely: an address that is not a
 * positive integer, a width other than 2 or 4, an address not aligned to
 * the width, or a value that does not fit in the width.
 *
 * @param queue The ring the doorbell belongs to, named in the error.
 * @throws RangeError naming the ring and the field that is wrong.
 *
 * @example
 * ```ts
 * import { checkDoorbell } from "./doorbell.ts";
 * checkDoorbell({ address: 0x7f0000001000, width: 2, value: 0 }, 0); // fine
 * // checkDoorbell({ address: 0x7f0000001001, width: 2, value: 0 }, 0) throws:
 * // RangeError: doorbell of ring 0: address 0x7f0000001001 is not aligned to its width 2
 * ```
 */
export function checkDoorbell(d: Doorbell, queue: number): void {
  const what = `doorbell of ring ${queue}`;
  if (d === null || typeof d !== "object") {
    throw new RangeError(`${what}: expected { address, width, value }, got ${d}`);
  }
  const { address, width, value } = d;
  if (width !== 2 && width !== 4) {
    throw new RangeError(`${what}: width ${width} is not 2 or 4 (bytes)`);
  }
  if (!Number.isSafeInteger(address) || address <= 0) {
    throw new RangeError(`${what}: address ${address} is not a valid address`);
  }
  if (address % width !== 0) {
    throw new RangeError(
      `${what}: address 0x${address.toString(16)} is not aligned to its width ${width}`,
    );
  }
  const max = width === 2 ? 0xffff : 0xffffffff;
  if (!Number.isInteger(value) || value < 0 || value > max) {
    throw new RangeError(`${what}: value ${value} does not fit in ${width} bytes (0..${max})`);
  }
}

/**
 * Build the store routine of a doorbell: the view over its register is made
 * once, each call is one store of `width` bytes (a `Uint16Array` or
 * `Uint32Array` element write, which compiles to a single 16- or 32-bit
 * store). Works in any thread: the view is rebuilt from the address, so a
 * Worker can ring a register the main thread mapped.
 *
 * @param queue The ring the doorbell belongs to (for the error message).
 * @throws RangeError when the doorbell is malformed (see {@linkcode checkDoorbell}).
 *
 * @example
 * ```ts
 * import { mmapAnonymous } from "../sys/mod.ts";
 * import { doorbellRinger } from "./doorbell.ts";
 * using page = mmapAnonymous(4096);
 * const ring = doorbellRinger({ address: page.address + 4, width: 2, value: 3 }, 3);
 * ring();
 * new Uint16Array(page.buffer)[2]; // 3
 * ```
 */
export function doorbellRinger(d: Doorbell, queue: number): () => void {
  checkDoorbell(d, queue);
  const value = d.value;
  if (d.width === 2) {
    const reg = new Uint16Array(viewOf(d.address, 2));
    return () => {
      reg[0] = value;
    };
  }
  const reg = new Uint32Array(viewOf(d.address, 4));
  return () => {
    reg[0] = value;
  };
}
