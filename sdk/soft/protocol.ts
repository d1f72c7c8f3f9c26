/**
 * What the kit's main thread and a ring's Worker say to each other, and the
 * layout of the SharedArrayBuffers they share: the device's counters (read
 * by `ops.stats()` without a message) and one ring's control words (a stop
 * flag and where the ring got to).
 *
 * @module
 */

import type { SharedRegion } from "../memory/guest_memory.ts";
import type { SharedIotlb } from "../memory/iotlb.ts";
import type { SharedDirtyLog } from "../memory/dirty_log.ts";
import type { RingPosition } from "../ops.ts";
import { decodeRingIndex } from "../virtqueue/queue.ts";
import type { SharedInflightQueue } from "../core/inflight.ts";
import { RUN_STOP } from "./worker_run.ts";

/** Counters per ring in the stats buffer (one Float64 each). */
export const STAT_FIELDS = 3;
/** Index of a ring's requests counter (chains completed). */
export const STAT_REQUESTS = 0;
/** Index of a ring's bytes counter (device-readable bytes plus used lengths). */
export const STAT_BYTES = 1;
/** Index of a ring's errors counter (malformed chains and failed requests). */
export const STAT_ERRORS = 2;

/** Int32 control word set to 1 to stop the Worker (the one `WorkerRun.stop` sets). */
export const CONTROL_STOP: number = RUN_STOP;
/** Int32 control word: the ring's next available index (16 bits). */
export const CONTROL_AVAIL = 1;
/** Int32 control word: the ring's next used index (16 bits). */
export const CONTROL_USED = 2;
/** Int32 words in a ring's control buffer. */
export const CONTROL_WORDS = 3;

/** The message that starts a ring's Worker. */
export interface QueueSetup {
  /** Ring index. */
  queue: number;
  /** Descriptors. */
  num: number;
  /** Descriptor table, guest-physical. */
  descAddr: number;
  /** Available ring, guest-physical. */
  availAddr: number;
  /** Used ring, guest-physical. */
  usedAddr: number;
  /**
   * Next available index to process (virtio 1.2 §2.7.6). The next used
   * index is `used.idx` as found in memory: every chain the ring took was
   * completed and published before it stopped.
   */
  availIdx: number;
  /**
   * Where the ring goes on from, with the wrap counters a packed ring
   * (`VIRTIO_F_RING_PACKED` in `features`) needs.
   */
  position: RingPosition;
  /** The Worker's own duplicate of the kick eventfd, or -1 (then it polls every millisecond). */
  kickFd: number;
  /** The Worker's own duplicate of the call eventfd, or -1 (no interrupts). */
  callFd: number;
  /** Eventfd written once to wake the Worker for stopping (never read). */
  stopFd: number;
  /** The guest memory table, leased by the main thread. */
  memory: SharedRegion[];
  /** The device IOTLB buffer addresses translate through (behind a vIOMMU), or null. */
  iotlb: SharedIotlb | null;
  /** Features the frontend acknowledged. */
  features: bigint;
  /** The device's options (`ProbeParams.options` with the declared defaults). */
  options: Record<string, string>;
  /** Counters, {@linkcode STAT_FIELDS} Float64 per ring, for the whole device. */
  stats: SharedArrayBuffer;
  /** This ring's control words ({@linkcode CONTROL_WORDS} Int32). */
  control: SharedArrayBuffer;
  /** The dirty log to mark guest writes in while a migration logs, or null. */
  log: SharedDirtyLog | null;
  /**
   * The ring's queue region of the inflight region (`INFLIGHT_SHMFD`), or
   * null: the Worker marks the heads it takes and completes there, and
   * resubmits the ones a previous backend left marked before taking new ones.
   */
  inflight: SharedInflightQueue | null;
}

/** What a Worker posts. */
export type QueueMessage =
  | { type: "ready" }
  | { type: "ring-error"; message: string }
  | { type: "info"; message: string }
  | { type: "fatal"; message: string }
  | { type: "stopped" };

/** Where a ring stopped, from its control words (each an `encodeRingIndex`). */
export function decodePosition(avail: number, used: number, packed: boolean): RingPosition {
  const a = decodeRingIndex(avail, packed), u = decodeRingIndex(used, packed);
  return { availIdx: a.idx, availWrap: a.wrap, usedIdx: u.idx, usedWrap: u.wrap };
}
