/**
 * Inflight I/O tracking (vhost-user `INFLIGHT_SHMFD`, QEMU's
 * docs/interop/vhost-user.rst, "Inflight I/O tracking"), split rings: a
 * shared memory region in which the backend marks every descriptor head it
 * took from the available ring and clears it once the head is on the used
 * ring. The frontend keeps the region (`GET_INFLIGHT_FD` made it) and hands
 * it back with `SET_INFLIGHT_FD` to a backend that restarted after a crash,
 * which then resubmits the heads still marked, in the order it took them,
 * so the guest never sees the crash.
 *
 * The region holds one queue region per ring, each
 * {@linkcode inflightQueueBytes} long (64-byte aligned), laid out as the
 * spec's `QueueRegionSplit`:
 *
 * ```
 * u64 features; u16 version; u16 desc_num; u16 last_batch_head; u16 used_idx;
 * DescStateSplit desc[desc_num]: u8 inflight; u8 padding[5]; u16 next; u64 counter;
 * ```
 *
 * A region the frontend sends is hostile input: its size, version and
 * `desc_num` are checked before it is used ({@linkcode InflightRegion.map},
 * {@linkcode InflightQueue.recover}), and links of the last-batch list
 * that point outside the ring are ignored and counted.
 *
 * @module
 */

import {
  addSeals,
  close,
  F_SEAL_GROW,
  F_SEAL_SEAL,
  F_SEAL_SHRINK,
  ftruncate,
  MAP_SHARED,
  type Mapping,
  memfdCreate,
  mmap,
  PROT_READ,
  PROT_WRITE,
  viewOf,
} from "../sys/mod.ts";
import { checkMemoryFile } from "../memory/guest_memory.ts";
import { RequestRefused } from "./errors.ts";

/** The region version this backend writes and reads (`version`; 0 = not yet initialized). */
export const INFLIGHT_VERSION = 1;
/** Alignment of each ring's queue region, in bytes. */
export const INFLIGHT_ALIGNMENT = 64;
/** Bytes of a queue region's header (features, version, desc_num, last_batch_head, used_idx). */
export const INFLIGHT_HEADER_SIZE = 16;
/** Bytes of one `DescStateSplit` entry. */
export const INFLIGHT_DESC_SIZE = 16;
/** Largest ring an inflight region tracks (the split ring limit). */
const MAX_QUEUE_SIZE = 32768;

/** Bytes of one ring's queue region for rings of `queueSize` descriptors. */
export function inflightQueueBytes(queueSize: number): number {
  const raw = INFLIGHT_HEADER_SIZE + INFLIGHT_DESC_SIZE * queueSize;
  return Math.ceil(raw / INFLIGHT_ALIGNMENT) * INFLIGHT_ALIGNMENT;
}

/** What the region is: its size and shape ("Inflight description"). */
export interface InflightShape {
  /** Bytes of the region. */
  mmapSize: number;
  /** Where the region starts in its fd. */
  mmapOffset: number;
  /** Rings it tracks. */
  numQueues: number;
  /** Descriptors per ring. */
  queueSize: number;
}

/** One ring's queue region, described for a Worker ({@linkcode InflightQueue.fromShared}). */
export interface SharedInflightQueue {
  /** Host address of the queue region's first byte. */
  address: number;
  /** Bytes of the queue region. */
  size: number;
  /** Descriptors of the ring the region tracks (`desc_num`). */
  queueSize: number;
}

function checkShape(numQueues: number, queueSize: number, maxQueues: number, what: string) {
  if (!Number.isInteger(numQueues) || numQueues < 1 || numQueues > maxQueues) {
    throw new RequestRefused(
      `${what}: ${numQueues} queues is not in 1..${maxQueues} (the device's rings)`,
    );
  }
  if (
    !Number.isInteger(queueSize) || queueSize < 1 || queueSize > MAX_QUEUE_SIZE ||
    (queueSize & (queueSize - 1)) !== 0
  ) {
    throw new RequestRefused(
      `${what}: queue size ${queueSize} is not a power of two up to ${MAX_QUEUE_SIZE}`,
    );
  }
}

/**
 * The inflight region of a device, mapped. Made by the backend for
 * `GET_INFLIGHT_FD` ({@linkcode InflightRegion.create}) or taken from the
 * frontend's `SET_INFLIGHT_FD` ({@linkcode InflightRegion.map}). Workers
 * that mark it hold a lease; it is unmapped once closed and every lease is
 * released.
 */
export class InflightRegion {
  /** Rings the region tracks. */
  readonly numQueues: number;
  /** Descriptors per ring. */
  readonly queueSize: number;
  readonly #mapping: Mapping;
  /** Where the region starts in the mapping. */
  readonly #offset: number;
  #leases = 0;
  #closed = false;

  private constructor(mapping: Mapping, offset: number, numQueues: number, queueSize: number) {
    this.#mapping = mapping;
    this.#offset = offset;
    this.numQueues = numQueues;
    this.queueSize = queueSize;
  }

  /**
   * A new zeroed region for `numQueues` rings of `queueSize` descriptors in
   * a sealed memfd (it can neither grow nor shrink). Returns the region and
   * the memfd, which the caller sends to the frontend and then closes.
   *
   * @throws RequestRefused for a queue count outside 1..`maxQueues` or a
   *   queue size that is not a power of two up to 32768; SysError when the
   *   memfd cannot be made.
   */
  static create(
    numQueues: number,
    queueSize: number,
    maxQueues: number,
  ): { region: InflightRegion; fd: number; shape: InflightShape } {
    checkShape(numQueues, queueSize, maxQueues, "GET_INFLIGHT_FD");
    const size = inflightQueueBytes(queueSize) * numQueues;
    const fd = memfdCreate("vhost-inflight", { allowSealing: true });
    try {
      ftruncate(fd, size);
      addSeals(fd, F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL);
      const mapping = mmap(fd, size, { prot: PROT_READ | PROT_WRITE, flags: MAP_SHARED });
      return {
        region: new InflightRegion(mapping, 0, numQueues, queueSize),
        fd,
        shape: { mmapSize: size, mmapOffset: 0, numQueues, queueSize },
      };
    } catch (e) {
      close(fd);
      throw e;
    }
  }

  /**
   * Map the region the frontend sent with `SET_INFLIGHT_FD` and check it:
   * its size must hold `numQueues` queue regions of `queueSize`, the file
   * must hold it and be unable to shrink, and each queue region must be
   * uninitialized (version 0) or of version {@linkcode INFLIGHT_VERSION}
   * with `desc_num` equal to `queueSize`. The fd stays the caller's.
   *
   * @throws RequestRefused for a region that fails a check (the message
   *   says which); GuestMemoryError for a file that is too short or could
   *   shrink; SysError when `mmap` fails.
   */
  static map(
    fd: number,
    shape: InflightShape,
    options: { maxQueues: number; allowUnsealed?: boolean },
  ): InflightRegion {
    const what = "SET_INFLIGHT_FD";
    checkShape(shape.numQueues, shape.queueSize, options.maxQueues, what);
    const need = inflightQueueBytes(shape.queueSize) * shape.numQueues;
    if (!Number.isSafeInteger(shape.mmapSize) || shape.mmapSize < need) {
      throw new RequestRefused(
        `${what}: mmap size ${shape.mmapSize} is less than the ${need} bytes of ` +
          `${shape.numQueues} queue region(s) of ${shape.queueSize} descriptors`,
      );
    }
    if (shape.mmapSize > need + INFLIGHT_ALIGNMENT * shape.numQueues) {
      throw new RequestRefused(
        `${what}: mmap size ${shape.mmapSize} is larger than the ${need} bytes this ` +
          `backend lays out for ${shape.numQueues} queue(s) of ${shape.queueSize}`,
      );
    }
    const offset = shape.mmapOffset;
    if (!Number.isSafeInteger(offset) || offset < 0 || offset > 1 << 30) {
      throw new RequestRefused(`${what}: mmap offset ${offset} is invalid`);
    }
    checkMemoryFile(fd, offset + need, "inflight region", options.allowUnsealed ?? false);
    const mapping = mmap(fd, offset + need, { prot: PROT_READ | PROT_WRITE, flags: MAP_SHARED });
    const region = new InflightRegion(mapping, offset, shape.numQueues, shape.queueSize);
    try {
      for (let q = 0; q < shape.numQueues; q++) {
        const header = new DataView(
          mapping.buffer,
          offset + q * inflightQueueBytes(shape.queueSize),
        );
        const version = header.getUint16(8, true);
        const descNum = header.getUint16(10, true);
        if (version !== 0 && version !== INFLIGHT_VERSION) {
          throw new RequestRefused(
            `${what}: queue ${q} of the region has version ${version}; this backend reads ` +
              `version ${INFLIGHT_VERSION}`,
          );
        }
        if (version !== 0 && descNum !== shape.queueSize) {
          throw new RequestRefused(
            `${what}: queue ${q} of the region tracks ${descNum} descriptors, not the ` +
              `${shape.queueSize} of its description`,
          );
        }
      }
    } catch (e) {
      mapping.unmap();
      throw e;
    }
    return region;
  }

  /** Whether the region was closed (it may stay mapped for leases). */
  get closed(): boolean {
    return this.#closed;
  }

  /** Ring `q`'s queue region for a Worker, or null when the region does not track ring `q`. */
  queue(q: number): SharedInflightQueue | null {
    if (this.#mapping.closed) throw new RangeError("the inflight region is unmapped");
    if (!Number.isInteger(q) || q < 0 || q >= this.numQueues) return null;
    const size = inflightQueueBytes(this.queueSize);
    return {
      address: this.#mapping.address + this.#offset + q * size,
      size,
      queueSize: this.queueSize,
    };
  }

  /**
   * Keep the region mapped for a Worker until the returned function is
   * called (idempotent).
   *
   * @throws RangeError when the region is already closed.
   */
  lease(): () => void {
    if (this.#closed) throw new RangeError("the inflight region is closed");
    this.#leases++;
    let held = true;
    return () => {
      if (!held) return;
      held = false;
      this.#leases--;
      this.#unmapIfDone();
    };
  }

  /** Stop using the region: unmapped now, or when the last lease is released. Idempotent. */
  close(): void {
    this.#closed = true;
    this.#unmapIfDone();
  }

  #unmapIfDone(): void {
    if (this.#closed && this.#leases === 0) this.#mapping.unmap();
  }
}

/** What {@linkcode InflightQueue.recover} found in a ring's queue region. */
export interface InflightRecovery {
  /** The region was uninitialized (version 0) and is now initialized: nothing to resubmit. */
  initialized: boolean;
  /** Heads still in flight, in the order they were taken (by `counter`). */
  resubmit: number[];
  /**
   * Where the ring's next available index is: `used.idx` plus the heads in
   * flight, or null for a region just initialized (keep the frontend's base).
   */
  lastAvailIdx: number | null;
  /** Entries of the last batch cleared because `used.idx` had moved past `used_idx`. */
  cleared: number;
  /** Links of the last-batch list that pointed outside the ring (ignored). */
  badLinks: number;
  /** Entries whose `inflight` byte was neither 0 nor 1 (taken as in flight). */
  oddFlags: number;
}

/**
 * One ring's queue region, used by the Worker that serves the ring. The
 * order of stores follows the spec: a head is stamped with its `counter`
 * before it is marked in flight; used heads are linked into the last-batch
 * list before `used.idx` is published, and unmarked (then `used_idx`
 * updated) after.
 *
 * @example
 * ```ts
 * import { InflightQueue } from "@vhost-mdev/sdk";
 * const q = new InflightQueue(new ArrayBuffer(16 + 16 * 8), 8);
 * q.recover(0); // initializes the region
 * q.begin(3); // head 3 taken from the available ring
 * q.complete(3); // put on the used ring
 * q.published(1); // used.idx is now 1
 * ```
 */
export class InflightQueue {
  /** Descriptors of the ring. */
  readonly queueSize: number;
  readonly #u8: Uint8Array;
  readonly #u16: Uint16Array;
  readonly #u32: Uint32Array;
  /** Heads put on the used ring since the last publication. */
  readonly #batch: Uint16Array;
  #batchLength = 0;
  #counter = 0;

  /**
   * View a queue region of `queueSize` descriptors in `buffer`.
   *
   * @throws RangeError when the buffer is too small for the ring.
   */
  constructor(buffer: ArrayBuffer, queueSize: number) {
    if (buffer.byteLength < INFLIGHT_HEADER_SIZE + INFLIGHT_DESC_SIZE * queueSize) {
      throw new RangeError(
        `an inflight queue region of ${buffer.byteLength} bytes cannot track ${queueSize} ` +
          `descriptors`,
      );
    }
    this.queueSize = queueSize;
    this.#u8 = new Uint8Array(buffer);
    this.#u16 = new Uint16Array(buffer, 0, buffer.byteLength >> 1);
    this.#u32 = new Uint32Array(buffer, 0, buffer.byteLength >> 2);
    this.#batch = new Uint16Array(queueSize);
  }

  /** View ring's queue region mapped elsewhere in this process (a Worker's view). */
  static fromShared(shared: SharedInflightQueue): InflightQueue {
    return new InflightQueue(viewOf(shared.address, shared.size), shared.queueSize);
  }

  /** Whether head `i` is marked in flight. */
  isInflight(i: number): boolean {
    return this.#u8[INFLIGHT_HEADER_SIZE + INFLIGHT_DESC_SIZE * i] !== 0;
  }

  /** The region's `used_idx`. */
  get usedIdx(): number {
    return this.#u16[7];
  }

  /**
   * Take the region over when a ring starts, `usedIdx` being the used
   * ring's `idx` in guest memory. An uninitialized region (version 0) is
   * initialized. Otherwise the spec's reconnect steps: when `used_idx`
   * differs from `usedIdx` the last batch reached the used ring but was not
   * unmarked, so its entries are unmarked; the heads still marked are
   * returned in the order they were taken, to be resubmitted before new
   * ones.
   *
   * @throws RangeError when `desc_num` is not the ring's size or the
   *   version is unknown (the region belongs to another ring or backend).
   */
  recover(usedIdx: number): InflightRecovery {
    const u8 = this.#u8, u16 = this.#u16;
    const version = u16[4], descNum = u16[5];
    this.#batchLength = 0;
    if (version === 0) {
      u8.fill(0, 0, INFLIGHT_HEADER_SIZE + INFLIGHT_DESC_SIZE * this.queueSize);
      u16[5] = this.queueSize;
      u16[7] = usedIdx;
      Atomics.store(u16, 4, INFLIGHT_VERSION);
      this.#counter = 0;
      return {
        initialized: true,
        resubmit: [],
        lastAvailIdx: null,
        cleared: 0,
        badLinks: 0,
        oddFlags: 0,
      };
    }
    if (version !== INFLIGHT_VERSION) {
      throw new RangeError(
        `the inflight region has version ${version}; this backend reads ${INFLIGHT_VERSION}`,
      );
    }
    if (descNum !== this.queueSize) {
      throw new RangeError(
        `the inflight region tracks ${descNum} descriptors but the ring has ${this.queueSize}`,
      );
    }
    let cleared = 0, badLinks = 0, oddFlags = 0;
    const lastUsed = u16[7];
    if (lastUsed !== usedIdx) {
      // The last batch is on the used ring: its entries are done.
      const n = Math.min((usedIdx - lastUsed) & 0xffff, this.queueSize);
      let head = u16[6];
      for (let k = 0; k < n; k++) {
        if (head >= this.queueSize) {
          badLinks++;
          break;
        }
        u8[INFLIGHT_HEADER_SIZE + INFLIGHT_DESC_SIZE * head] = 0;
        cleared++;
        head = u16[(INFLIGHT_HEADER_SIZE + INFLIGHT_DESC_SIZE * head + 6) >> 1];
      }
      Atomics.store(u16, 7, usedIdx);
    }
    const found: { head: number; counter: number }[] = [];
    let max = -1;
    for (let i = 0; i < this.queueSize; i++) {
      const at = INFLIGHT_HEADER_SIZE + INFLIGHT_DESC_SIZE * i;
      const counter = this.#u32[(at + 8) >> 2] + this.#u32[(at + 12) >> 2] * 2 ** 32;
      if (counter > max) max = counter;
      const flag = u8[at];
      if (flag === 0) continue;
      if (flag !== 1) oddFlags++;
      found.push({ head: i, counter });
    }
    found.sort((a, b) => a.counter - b.counter || a.head - b.head);
    this.#counter = max + 1;
    return {
      initialized: false,
      resubmit: found.map((f) => f.head),
      lastAvailIdx: (usedIdx + found.length) & 0xffff,
      cleared,
      badLinks,
      oddFlags,
    };
  }

  /** Head `head` was taken from the available ring: stamp its order, mark it in flight. */
  begin(head: number): void {
    const at = INFLIGHT_HEADER_SIZE + INFLIGHT_DESC_SIZE * head;
    const c = this.#counter++;
    this.#u32[(at + 8) >> 2] = c >>> 0;
    this.#u32[(at + 12) >> 2] = Math.floor(c / 2 ** 32);
    Atomics.store(this.#u8, at, 1);
  }

  /** Head `head` was put on the used ring (not yet published): link it into the last batch. */
  complete(head: number): void {
    const u16 = this.#u16;
    u16[(INFLIGHT_HEADER_SIZE + INFLIGHT_DESC_SIZE * head + 6) >> 1] = u16[6];
    Atomics.store(u16, 6, head);
    this.#batch[this.#batchLength++] = head;
  }

  /** `used.idx` was published as `usedIdx`: unmark the batch, then record `used_idx`. */
  published(usedIdx: number): void {
    const u8 = this.#u8, batch = this.#batch;
    for (let k = 0; k < this.#batchLength; k++) {
      Atomics.store(u8, INFLIGHT_HEADER_SIZE + INFLIGHT_DESC_SIZE * batch[k], 0);
    }
    this.#batchLength = 0;
    Atomics.store(this.#u16, 7, usedIdx);
  }
}
