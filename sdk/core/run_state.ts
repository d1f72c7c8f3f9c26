/**
 * When a device runs. The RFC switched STOPPED/RUNNING on an explicit
 * `VHOST_MDEV_SET_STATE`; a vhost-user frontend sends no such message, so
 * the state is derived from the configuration (see docs/design.md, "When
 * the device runs"). Pure functions of the device's state, kept apart from
 * the code that acts on them.
 *
 * @module
 */

import { VirtioStatus } from "../uapi/virtio.ts";
import type { RingState } from "./ring.ts";

/** What readiness depends on. */
export interface Configuration {
  /** The device was closed. */
  closed: boolean;
  /** `SET_FEATURES` was received. */
  featuresSet: boolean;
  /** A memory table was set. */
  memorySet: boolean;
  /** Every ring's state. */
  rings: readonly RingState[];
  /**
   * The driver starts and stops single rings: the device runs the rings
   * that are ready and starts the others as they become ready. Otherwise it
   * waits until every enabled ring is ready, so it starts once.
   */
  perRing: boolean;
}

/** What the decision to run depends on, beyond the configuration. */
export interface RunConditions extends Configuration {
  /** Stopped by `GET_VRING_BASE` or a disabled ring, until a ring is enabled or kicked. */
  parked: boolean;
  /** The frontend uses `SET_STATUS` (then `DRIVER_OK` is needed). */
  statusDriven: boolean;
  /** The last status set. */
  status: number;
}

/**
 * Why the device cannot run, or `null` when it can: features and memory
 * set, at least one ring enabled, and every enabled ring (with per-ring
 * ops: one enabled ring) with size, addresses inside the memory table and a
 * kick.
 */
export function notReadyReason(c: Configuration): string | null {
  if (c.closed) return "the device is closed";
  if (!c.featuresSet) return "features were not set";
  if (!c.memorySet) return "there is no memory table";
  const enabled = c.rings.filter((r) => r.enabled);
  if (enabled.length === 0) return "no ring is enabled";
  const bad = enabled.find((r) => !r.ready);
  if (!bad || (c.perRing && enabled.some((r) => r.ready))) return null;
  return `ring ${bad.index} is enabled but lacks size, addresses or kick fd`;
}

/** Whether the device should be running now. */
export function shouldRun(c: RunConditions): boolean {
  const statusOk = !c.statusDriven || (c.status & VirtioStatus.DRIVER_OK) !== 0;
  return !c.parked && statusOk && notReadyReason(c) === null;
}
