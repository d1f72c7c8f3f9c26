/**
 * What the device's main thread and its datapath Workers say to each other,
 * and the layout of the two SharedArrayBuffers they share: the counters,
 * which `ops.stats()` reads without messaging, and the control words (a
 * stop flag and each ring's next available index).
 *
 * @module
 */

import {
  decodeRingIndex,
  encodeRingIndex,
  type RingPosition,
  type SharedDirtyLog,
  type SharedIotlb,
  type SharedRegion,
} from "@vhost-mdev/sdk";
import type { SimMode } from "./options.ts";

/** Counters per ring in the stats buffer (Float64 each). */
export const STAT_FIELDS = 4;
/** Index of the packets counter of a ring. */
export const STAT_PACKETS = 0;
/** Index of the bytes counter (frame bytes, virtio-net header excluded). */
export const STAT_BYTES = 1;
/** Index of the drops counter. */
export const STAT_DROPS = 2;
/** Index of the errors counter (hostile chains and malformed headers). */
export const STAT_ERRORS = 3;

/** Int32 word of the control buffer set to 1 to stop the Worker (`RUN_STOP`, set by `WorkerRun.stop`). */
export const CONTROL_STOP = 0;
/**
 * Int32 word of the control buffer holding ring `q`'s next available index
 * (packed rings: position and wrap counter in bit 15): `CONTROL_BASES + q`.
 */
export const CONTROL_BASES = 1;

/** One ring as a Worker gets it (guest-physical addresses, fds owned by the SDK core). */
export interface RingSetup {
  /** Ring index. */
  index: number;
  /** Descriptors. */
  num: number;
  /** Descriptor table GPA. */
  descAddr: number;
  /** Available ring GPA. */
  availAddr: number;
  /** Used ring GPA. */
  usedAddr: number;
  /** Where the ring goes on from (next available and used, wrap counters). */
  position: RingPosition;
  /** Kick eventfd, or -1 (then the Worker polls the ring every millisecond). */
  kickFd: number;
  /** Call eventfd, or -1 (no interrupts). */
  callFd: number;
}

/** Negotiated features that shape the datapath. */
export interface DatapathFeatures {
  /** `VIRTIO_F_EVENT_IDX`. */
  eventIdx: boolean;
  /** `VIRTIO_F_INDIRECT_DESC`. */
  indirect: boolean;
  /** `VIRTIO_NET_F_MRG_RXBUF`. */
  mrgRxbuf: boolean;
  /** `VIRTIO_F_VERSION_1` (12-byte header even without `MRG_RXBUF`). */
  version1: boolean;
  /** `VIRTIO_NET_F_CSUM`: transmitted frames may carry a partial checksum. */
  csum: boolean;
  /** `VIRTIO_NET_F_GUEST_CSUM`: received frames may carry a partial checksum. */
  guestCsum: boolean;
  /** `VIRTIO_F_RING_PACKED`: the rings are packed (virtio 1.2 §2.8). */
  packed: boolean;
  /**
   * `VIRTIO_F_IN_ORDER` negotiated and the `batch-used` option on: the sink
   * returns each run of transmit chains with one used entry (absent: false).
   */
  inOrder?: boolean;
}

/** The message that starts a Worker: one queue pair. */
export interface DatapathSetup {
  /** Queue pair index. */
  pair: number;
  /** What to do with frames. */
  mode: SimMode;
  /** Receive ring `2 * pair`, or null when it is not running. */
  rx: RingSetup | null;
  /** Transmit ring `2 * pair + 1`, or null when it is not running. */
  tx: RingSetup | null;
  /** The guest memory table, mapped by the main thread. */
  memory: SharedRegion[];
  /** The device IOTLB buffer addresses translate through (behind a vIOMMU), or null. */
  iotlb: SharedIotlb | null;
  /** What was negotiated. */
  features: DatapathFeatures;
  /** The NIC's MAC. */
  mac: Uint8Array;
  /** The responder's IPv4 address. */
  ip: Uint8Array;
  /** Source mode's frame size. */
  frameSize: number;
  /** Counters, {@linkcode STAT_FIELDS} Float64 per ring. */
  stats: SharedArrayBuffer;
  /** Control words (Int32): stop flag and ring bases. */
  control: SharedArrayBuffer;
  /** Eventfd written once to wake every Worker for stopping (never read). */
  stopFd: number;
  /** The dirty log to mark every guest write in (live migration), or null. */
  log: SharedDirtyLog | null;
  /** Whether delivered frames are marked in the log (`false`: deliberately broken). */
  logBuffers: boolean;
}

/** What a Worker posts. */
export type DatapathMessage =
  | { type: "ready"; pair: number }
  | { type: "warn"; pair: number; message: string }
  | { type: "fatal"; pair: number; message: string; ring?: number }
  | { type: "stopped"; pair: number; rxBase: number; txBase: number };

/**
 * A ring's next available index as its control word holds it: the 16-bit
 * index of a split ring, or a packed ring's position with its wrap counter
 * in bit 15.
 */
export function encodeBase(position: RingPosition, packed: boolean): number {
  return encodeRingIndex(position.availIdx, position.availWrap, packed);
}

/**
 * Where a ring stopped, from its control word. The datapath completes chains
 * in order and gives back the ones it had not completed, so the used
 * position is the available one.
 */
export function decodeBase(word: number, packed: boolean): RingPosition {
  const { idx, wrap } = decodeRingIndex(word, packed);
  return { availIdx: idx, usedIdx: idx, availWrap: wrap, usedWrap: wrap };
}
