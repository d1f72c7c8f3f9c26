/**
 * What a software device needs of a virtqueue, whichever its layout: the
 * {@linkcode Virtqueue} interface that {@linkcode SplitQueue} and
 * {@linkcode PackedQueue} both implement, and {@linkcode openVirtqueue},
 * which makes the one the frontend negotiated (`VIRTIO_F_RING_PACKED`).
 * A device written against it gets packed rings for free. The driver
 * sides share {@linkcode VirtqueueDriver} the same way.
 *
 * @module
 */

import type { GuestMemory } from "../memory/guest_memory.ts";
import type { DirtyLog } from "../memory/dirty_log.ts";
import type { RingPosition } from "../ops.ts";
import type { DescriptorChain, WritableBuffers } from "./descriptor.ts";
import { SplitQueue, type SplitQueueCounters } from "./split_queue.ts";
import { PackedQueue } from "./packed_queue.ts";
import { encodePackedIndex } from "./packed_layout.ts";
import type { UsedBuffer } from "./split_driver.ts";

/**
 * One side of a ring's position as a 16-bit index, the form `SET_VRING_BASE`
 * carries per side and the SDK's datapaths keep in their control words:
 * a split ring's index, or a packed ring's position with its wrap counter in
 * bit 15 ({@linkcode encodePackedIndex}).
 */
export function encodeRingIndex(idx: number, wrap: boolean, packed: boolean): number {
  return packed ? encodePackedIndex(idx, wrap) : idx & 0xffff;
}

/**
 * The position and wrap counter a 16-bit index stands for (see
 * {@linkcode encodeRingIndex}); a split ring's wrap counter is always true.
 */
export function decodeRingIndex(word: number, packed: boolean): { idx: number; wrap: boolean } {
  return packed
    ? { idx: word & 0x7fff, wrap: (word & 0x8000) !== 0 }
    : { idx: word & 0xffff, wrap: true };
}

/** The device side of a virtqueue, split or packed. */
export interface Virtqueue {
  /** The ring's size. */
  readonly num: number;
  /** Whether the ring is packed. */
  readonly packed: boolean;
  /** What the queue has seen. */
  readonly counters: SplitQueueCounters;
  /** The memory the queue reads. */
  readonly memory: GuestMemory;
  /**
   * Next available index as `GET_VRING_BASE` carries it (split: the 16-bit
   * index; packed: the position with the wrap counter in bit 15).
   */
  readonly lastAvailIdx: number;
  /** Next used index, encoded the same way. */
  readonly usedIdx: number;
  /** Where the queue is: positions and wrap counters (split: wraps true). */
  position(): RingPosition;
  /** `lastAvailIdx` as it was `descriptors` ring descriptors ago (to give chains back). */
  availBefore(descriptors: number): number;
  /** Ring descriptors chain `head` took (split: 1, one available entry). */
  descriptorsOf(head: number): number;
  /** Start or stop marking writes in a dirty log. */
  setLog(log: DirtyLog | null): void;
  /** Take the next available chain; false when there is none. */
  pop(chain: DescriptorChain): boolean;
  /**
   * Take, into `out` from index `at`, up to `max` available chains that are
   * each one device-writable descriptor of at least `minLength` bytes inside
   * one region of guest memory; returns how many. Stops at the first chain
   * that is anything else and leaves it for `pop`, which checks it and
   * reports what is wrong. Never throws; takes nothing behind a vIOMMU.
   */
  popWritable(out: WritableBuffers, at: number, max: number, minLength: number): number;
  /** Copy the chain's readable bytes to `dst`. */
  readChain(chain: DescriptorChain, dst: Uint8Array, offset?: number): number;
  /** Copy `src` into the chain's writable buffers. */
  writeChain(chain: DescriptorChain, src: Uint8Array, offset?: number): number;
  /** Return chain `head` with `len` bytes written (visible at `publishUsed`). */
  pushUsed(head: number, len: number): void;
  /**
   * With `VIRTIO_F_IN_ORDER`: return `heads[0, count)`, the chains taken
   * first among those held, in the order taken, with one used entry (the
   * last head, `len` bytes written); the driver takes the others as used
   * too (virtio 1.2, "In-order use of descriptors", split and packed). Visible at `publishUsed`.
   */
  pushUsedInOrder(heads: ArrayLike<number>, count: number, len: number): void;
  /** Make the pushed used entries visible to the driver. */
  publishUsed(): void;
  /** Whether to interrupt the driver for what was published. */
  needsNotify(): boolean;
  /** Ask the driver not to kick. */
  disableNotifications(): void;
  /** Ask the driver to kick; true when work is already there. */
  enableNotifications(): boolean;
}

/** What {@linkcode openVirtqueue} needs besides memory and layout. */
export interface VirtqueueOptions {
  /** `VIRTIO_F_RING_PACKED` was negotiated. */
  packed: boolean;
  /** Where the ring goes on from (`VringInfo.state`, or where it stopped). */
  position: RingPosition;
  /** `VIRTIO_F_EVENT_IDX` was negotiated. */
  eventIdx: boolean;
  /** `VIRTIO_F_INDIRECT_DESC` was negotiated. */
  indirect: boolean;
  /** Most buffer descriptors per chain (default: the queue size). */
  maxChainLength?: number;
  /** Dirty log to mark writes in. */
  log?: DirtyLog | null;
  /**
   * Split rings: the next used index (default: `used.idx` in memory, as a
   * resumed device continues from what the driver saw).
   */
  splitUsedIdx?: number;
}

/**
 * The device side of ring `layout` (a `VringInfo` will do) in the layout
 * negotiated.
 *
 * @throws RangeError for a layout that is not inside guest memory or
 *   misaligned, or a position out of range.
 *
 * @example
 * ```ts
 * import { type DeviceContext, hasBit, openVirtqueue, VirtioFeatureBit } from "@vhost-mdev/sdk";
 * declare const ctx: DeviceContext;
 * const f = ctx.ackedFeatures;
 * const queue = openVirtqueue(ctx.memory, ctx.vring(0), {
 *   packed: hasBit(f, VirtioFeatureBit.RING_PACKED),
 *   position: ctx.vring(0).state,
 *   eventIdx: hasBit(f, VirtioFeatureBit.EVENT_IDX),
 *   indirect: hasBit(f, VirtioFeatureBit.INDIRECT_DESC),
 * });
 * console.log(queue.packed);
 * ```
 */
export function openVirtqueue(
  memory: GuestMemory,
  layout: { num: number; descAddr: number; availAddr: number; usedAddr: number },
  options: VirtqueueOptions,
): Virtqueue {
  if (options.packed) {
    return new PackedQueue(memory, layout, {
      position: options.position,
      eventIdx: options.eventIdx,
      indirect: options.indirect,
      maxChainLength: options.maxChainLength,
      log: options.log,
    });
  }
  return new SplitQueue(memory, layout, {
    lastAvailIdx: options.position.availIdx,
    usedIdx: options.splitUsedIdx,
    eventIdx: options.eventIdx,
    indirect: options.indirect,
    maxChainLength: options.maxChainLength,
    log: options.log,
  });
}

/**
 * The driver side of a virtqueue, split or packed: what a guest (the test
 * kit's, or a test) needs to hand buffers to a device and take them back.
 * {@linkcode SplitQueueDriver} and {@linkcode PackedQueueDriver} implement it.
 */
export interface VirtqueueDriver {
  /** The ring's size. */
  readonly num: number;
  /** Whether the ring is packed. */
  readonly packed: boolean;
  /** Descriptors free to add. */
  freeCount(): number;
  /** Add a chain (device-readable segments first) under `token`; false when full. */
  add(segments: readonly { gpa: number; len: number; write: boolean }[], token: number): boolean;
  /** Add one buffer; false when full. */
  addBuffer(gpa: number, len: number, write: boolean, token: number): boolean;
  /** Make the added chains visible to the device. */
  publish(): void;
  /** Whether the device wants a kick for what was published since the last call. */
  kickNeeded(): boolean;
  /** Take the next used chain (then read `usedToken`, `usedLen`); false when none. */
  nextUsed(): boolean;
  /** Token of the chain the last `nextUsed` took. */
  readonly usedToken: number;
  /** Bytes the device wrote into it. */
  readonly usedLen: number;
  /** The next used chain, or null. */
  takeUsed(): UsedBuffer | null;
  /** Ask for an interrupt on the next used chain; true when some wait already. */
  enableInterrupts(): boolean;
  /** Ask the device not to interrupt (a hint). */
  disableInterrupts(): void;
}
