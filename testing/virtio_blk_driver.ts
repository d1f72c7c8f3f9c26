/**
 * A minimal virtio-blk guest driver over a {@linkcode VhostUserFrontend}:
 * what a Linux guest's virtio_blk does to a vhost-user backend (virtio 1.2
 * §5.2), small enough to read. It negotiates features, reads the whole
 * config space, lays out its request queues on a {@linkcode VirtioGuest},
 * and submits requests (read, write, flush, get-id, discard, write-zeroes,
 * or any raw type) whose status it awaits, with many in flight per queue.
 *
 * Each request is a chain of the 16-byte header (device-readable), the data
 * (device-readable for writes, device-writable for reads) and the status
 * byte (device-writable, last), in a slot of guest memory of its own: a
 * queue holds up to `ringSize / 3` requests at once; more wait for a slot.
 *
 * @example Write a sector, read it back
 * ```ts
 * import { VhostUserFrontend, VirtioBlkDriver } from "@vhost-mdev/testing";
 * import { VirtioBlkStatus } from "@vhost-mdev/sdk";
 *
 * const fe = await VhostUserFrontend.connect("/tmp/vhost-blk.sock");
 * const blk = await VirtioBlkDriver.start(fe, { queues: 1 });
 * const data = crypto.getRandomValues(new Uint8Array(512));
 * console.log(await blk.write(0, data) === VirtioBlkStatus.OK);
 * const { status, data: back } = await blk.read(0, 512);
 * await blk.stop();
 * fe.close();
 * ```
 *
 * @module
 */

import {
  bit,
  VIRTIO_BLK_DISCARD_SEGMENT_SIZE,
  VIRTIO_BLK_ID_BYTES,
  VIRTIO_BLK_REQ_HEADER_SIZE,
  VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
  VirtioBlkConfig,
  VirtioBlkFeatureBit,
  VirtioBlkRequestType,
  VirtioFeatureBit,
} from "@vhost-mdev/sdk";
import { BLK_CONFIG_SIZE } from "@vhost-mdev/sdk/blk";
import type { VhostUserFrontend } from "./vhost_user_frontend.ts";
import { VirtioGuest } from "./virtio_guest.ts";

/** Options of {@linkcode VirtioBlkDriver.start}. */
export interface VirtioBlkDriverOptions {
  /** Request queues (default 1); more than one needs `VIRTIO_BLK_F_MQ`. */
  queues?: number;
  /** Descriptors per ring, a power of two (default 128). */
  ringSize?: number;
  /** Most data bytes of one request (default 64 KiB). */
  maxRequestBytes?: number;
  /** Negotiate `VIRTIO_F_EVENT_IDX` when offered (default true). */
  eventIdx?: boolean;
  /** How long a request may take before it is given up on, in ms (default 10000). */
  timeoutMs?: number;
}

/** A request as {@linkcode VirtioBlkDriver.submit} sends it. */
export interface BlkRequest {
  /** `type` (a `VirtioBlkRequestType`, or any number to test the device). */
  type: number;
  /** `sector` (default 0); a bigint reaches all 64 bits. */
  sector?: number | bigint;
  /** Device-readable data after the header. */
  out?: Uint8Array;
  /** Bytes of device-writable data before the status byte (default 0). */
  inBytes?: number;
  /**
   * Bytes of the header to hand over (default 16): fewer makes a malformed
   * request, to test the device.
   */
  headerBytes?: number;
  /** Leave out the status byte (a malformed request, to test the device). */
  noStatus?: boolean;
  /** Ring to submit on (default 0). */
  queue?: number;
}

/** What came back for one request. */
export interface BlkCompletion {
  /**
   * The status byte (`VirtioBlkStatus`); -1 when the device left it as the
   * driver put it (0xff), or the request had none.
   */
  status: number;
  /** The used length the device reported. */
  usedLength: number;
  /** A copy of the device-writable data (`inBytes` of them). */
  data: Uint8Array;
}

/** One sector range of a discard or write-zeroes request. */
export interface BlkRange {
  /** First sector. */
  sector: number;
  /** Sectors. */
  sectors: number;
  /** `VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP` (write-zeroes only). */
  unmap?: boolean;
  /** Raw flags, overriding `unmap` (to test the device). */
  flags?: number;
}

/** The features the driver takes when the device offers them. */
const BLK_FEATURES = [
  VirtioBlkFeatureBit.SIZE_MAX,
  VirtioBlkFeatureBit.SEG_MAX,
  VirtioBlkFeatureBit.RO,
  VirtioBlkFeatureBit.BLK_SIZE,
  VirtioBlkFeatureBit.FLUSH,
  VirtioBlkFeatureBit.TOPOLOGY,
  VirtioBlkFeatureBit.MQ,
  VirtioBlkFeatureBit.DISCARD,
  VirtioBlkFeatureBit.WRITE_ZEROES,
].reduce((f, b) => f | bit(b), 0n);

/** Descriptors per request: header, data, status. */
const DESCRIPTORS_PER_REQUEST = 3;

interface Slot {
  /** Guest-physical address of the header; the status byte follows it, then the data. */
  gpa: number;
  resolve: ((c: BlkCompletion) => void) | null;
  /** Where the device-writable data of the request in the slot starts. */
  inGpa: number;
  inBytes: number;
}

interface Queue {
  slots: Slot[];
  free: number[];
  waiting: (() => void)[];
  inFlight: number;
}

/** A virtio-blk driver instance bound to one frontend connection. */
export class VirtioBlkDriver {
  /** The frontend it drives. */
  readonly frontend: VhostUserFrontend;
  /** The generic guest underneath: features, rings, interrupts. */
  readonly guest: VirtioGuest;
  /** Features acknowledged. */
  readonly features: bigint;
  /** The whole config space, `struct virtio_blk_config` (virtio 1.2 §5.2.4). */
  readonly config: Uint8Array;
  /** Capacity in 512-byte sectors. */
  readonly capacity: bigint;
  /** Most data bytes of one request. */
  readonly maxRequestBytes: number;
  readonly #queues: Queue[];
  readonly #timeoutMs: number;
  #reaping = false;
  #failure: Error | null = null;

  private constructor(
    guest: VirtioGuest,
    config: Uint8Array,
    queues: number,
    maxRequestBytes: number,
    timeoutMs: number,
  ) {
    this.frontend = guest.frontend;
    this.guest = guest;
    this.features = guest.features;
    this.config = config;
    this.capacity = new DataView(config.buffer, config.byteOffset).getBigUint64(
      VirtioBlkConfig.CAPACITY,
      true,
    );
    this.maxRequestBytes = maxRequestBytes;
    this.#timeoutMs = timeoutMs;
    const perQueue = Math.floor(guest.ringSize / DESCRIPTORS_PER_REQUEST);
    const slotBytes = Math.ceil((VIRTIO_BLK_REQ_HEADER_SIZE + 1 + maxRequestBytes) / 64) * 64;
    this.#queues = [];
    for (let q = 0; q < queues; q++) {
      const base = guest.allocate(perQueue * slotBytes);
      const slots = Array.from({ length: perQueue }, (_, i) => ({
        gpa: base + i * slotBytes,
        resolve: null,
        inGpa: 0,
        inBytes: 0,
      }));
      this.#queues.push({
        slots,
        free: slots.map((_, i) => i).reverse(),
        waiting: [],
        inFlight: 0,
      });
    }
  }

  /**
   * Bring the device up: features (the blk ones it offers, `MQ` required
   * for more than one queue), the whole config space with `GET_CONFIG`, the
   * rings, then DRIVER_OK.
   *
   * @throws Error naming the missing feature or the failed request.
   */
  static async start(
    frontend: VhostUserFrontend,
    options: VirtioBlkDriverOptions = {},
  ): Promise<VirtioBlkDriver> {
    const queues = options.queues ?? 1;
    const maxRequestBytes = options.maxRequestBytes ?? 64 * 1024;
    if (!Number.isInteger(queues) || queues < 1 || queues > 256) {
      throw new RangeError(`queues ${queues} is not within 1..256`);
    }
    if (!Number.isInteger(maxRequestBytes) || maxRequestBytes < 512) {
      throw new RangeError(`maxRequestBytes ${maxRequestBytes} is not an integer >= 512`);
    }
    const guest = await VirtioGuest.setup(frontend, {
      queues,
      ringSize: options.ringSize ?? 128,
      required: queues > 1 ? bit(VirtioBlkFeatureBit.MQ) : 0n,
      optional: BLK_FEATURES |
        (options.eventIdx === false ? 0n : bit(VirtioFeatureBit.EVENT_IDX)),
    });
    const config = await frontend.getConfig(0, BLK_CONFIG_SIZE);
    const driver = new VirtioBlkDriver(
      guest,
      config,
      queues,
      maxRequestBytes,
      options.timeoutMs ?? 10000,
    );
    await guest.activate();
    return driver;
  }

  /** Requests submitted on queue `q` and not yet completed. */
  inFlight(q = 0): number {
    return this.#queue(q).inFlight;
  }

  /**
   * Submit one request and resolve with its completion (waiting for a free
   * slot first when all are in flight).
   *
   * @throws RangeError for data larger than `maxRequestBytes`; Error when
   *   the device does not complete it within the timeout.
   */
  async submit(request: BlkRequest): Promise<BlkCompletion> {
    const q = request.queue ?? 0;
    const queue = this.#queue(q);
    const out = request.out ?? new Uint8Array(0);
    const inBytes = request.inBytes ?? 0;
    const headerBytes = request.headerBytes ?? VIRTIO_BLK_REQ_HEADER_SIZE;
    if (out.length + inBytes > this.maxRequestBytes) {
      throw new RangeError(
        `request of ${out.length + inBytes} data bytes is larger than ${this.maxRequestBytes}`,
      );
    }
    if (!(headerBytes >= 1 && headerBytes <= VIRTIO_BLK_REQ_HEADER_SIZE)) {
      throw new RangeError(`headerBytes ${headerBytes} is not in 1..16`);
    }
    if (this.#failure) throw this.#failure;
    while (queue.free.length === 0) {
      await new Promise<void>((resolve) => queue.waiting.push(resolve));
    }
    const index = queue.free.pop()!;
    const slot = queue.slots[index];
    const mem = this.frontend.memory;
    const header = mem.bytes(slot.gpa, VIRTIO_BLK_REQ_HEADER_SIZE);
    const view = new DataView(header.buffer, header.byteOffset, header.byteLength);
    view.setUint32(0, request.type >>> 0, true);
    view.setUint32(4, 0, true);
    view.setBigUint64(8, BigInt(request.sector ?? 0), true);
    const statusGpa = slot.gpa + VIRTIO_BLK_REQ_HEADER_SIZE;
    const dataGpa = statusGpa + 1;
    mem.bytes(statusGpa, 1)[0] = 0xff;
    const segments = [{ gpa: slot.gpa, len: headerBytes, write: false }];
    if (out.length > 0) {
      mem.bytes(dataGpa, out.length).set(out);
      segments.push({ gpa: dataGpa, len: out.length, write: false });
    }
    if (inBytes > 0) {
      mem.bytes(dataGpa + out.length, inBytes).fill(0);
      segments.push({ gpa: dataGpa + out.length, len: inBytes, write: true });
    }
    if (!request.noStatus) segments.push({ gpa: statusGpa, len: 1, write: true });
    const done = new Promise<BlkCompletion>((resolve) => {
      slot.resolve = resolve;
      slot.inGpa = dataGpa + out.length;
      slot.inBytes = inBytes;
    });
    const ring = this.guest.queue(q);
    if (!ring.add(segments, index)) {
      queue.free.push(index);
      throw new Error(`queue ${q}: no free descriptors for a ${segments.length}-segment request`);
    }
    queue.inFlight++;
    this.guest.publish(q);
    this.#reap();
    const timeout = this.#timeoutMs;
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      return await Promise.race([
        done,
        new Promise<never>((_, reject) =>
          timer = setTimeout(
            () =>
              reject(
                new Error(
                  `virtio-blk: request type ${request.type} on queue ${q} not completed ` +
                    `within ${timeout} ms`,
                ),
              ),
            timeout,
          )
        ),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Read `bytes` (whole sectors) from `sector`. */
  async read(
    sector: number | bigint,
    bytes: number,
    queue = 0,
  ): Promise<{ status: number; data: Uint8Array }> {
    const c = await this.submit({ type: VirtioBlkRequestType.IN, sector, inBytes: bytes, queue });
    return { status: c.status, data: c.data };
  }

  /** Write `data` (whole sectors) at `sector`; resolves with the status. */
  async write(sector: number | bigint, data: Uint8Array, queue = 0): Promise<number> {
    return (await this.submit({ type: VirtioBlkRequestType.OUT, sector, out: data, queue })).status;
  }

  /** Flush the device's write cache; resolves with the status. */
  async flush(queue = 0): Promise<number> {
    return (await this.submit({ type: VirtioBlkRequestType.FLUSH, queue })).status;
  }

  /** The device ID string (NUL padding removed) and the status. */
  async getId(queue = 0): Promise<{ status: number; id: string }> {
    const c = await this.submit({
      type: VirtioBlkRequestType.GET_ID,
      inBytes: VIRTIO_BLK_ID_BYTES,
      queue,
    });
    const end = c.data.indexOf(0);
    return {
      status: c.status,
      id: new TextDecoder().decode(end < 0 ? c.data : c.data.subarray(0, end)),
    };
  }

  /** Discard `ranges`; resolves with the status. */
  async discard(ranges: readonly BlkRange[], queue = 0): Promise<number> {
    const out = segmentsOf(ranges);
    return (await this.submit({ type: VirtioBlkRequestType.DISCARD, out, queue })).status;
  }

  /** Write zeroes over `ranges`; resolves with the status. */
  async writeZeroes(ranges: readonly BlkRange[], queue = 0): Promise<number> {
    const out = segmentsOf(ranges);
    return (await this.submit({ type: VirtioBlkRequestType.WRITE_ZEROES, out, queue })).status;
  }

  /**
   * Stop like a guest driver unloading (see {@linkcode VirtioGuest.stop});
   * requests still in flight are left behind.
   */
  async stop(): Promise<void> {
    await this.guest.stop();
  }

  #queue(q: number): Queue {
    const queue = this.#queues[q];
    if (!queue) throw new RangeError(`queue ${q} is not within 0..${this.#queues.length - 1}`);
    return queue;
  }

  /** Take completions off every ring while requests are in flight. */
  async #reap(): Promise<void> {
    if (this.#reaping) return;
    this.#reaping = true;
    try {
      for (;;) {
        const busy = [];
        for (let q = 0; q < this.#queues.length; q++) {
          if (this.#queues[q].inFlight > 0) busy.push(q);
        }
        if (busy.length === 0) return;
        try {
          await this.guest.waitUsed(busy, 200);
        } catch {
          // Nothing within the slice: look again (each request has its own timeout).
          if (this.guest.frontend.closed) return;
          continue;
        }
        for (const q of busy) this.#complete(q);
      }
    } catch (e) {
      this.#failure = e instanceof Error ? e : new Error(String(e));
    } finally {
      this.#reaping = false;
    }
  }

  #complete(q: number): void {
    const queue = this.#queues[q];
    const ring = this.guest.queue(q);
    const mem = this.frontend.memory;
    while (ring.nextUsed()) {
      const index = ring.usedToken;
      const slot = queue.slots[index];
      const statusGpa = slot.gpa + VIRTIO_BLK_REQ_HEADER_SIZE;
      const status = mem.bytes(statusGpa, 1)[0];
      const data = slot.inBytes > 0
        ? mem.bytes(slot.inGpa, slot.inBytes).slice()
        : new Uint8Array(0);
      const resolve = slot.resolve;
      slot.resolve = null;
      queue.inFlight--;
      queue.free.push(index);
      queue.waiting.shift()?.();
      resolve?.({ status: status === 0xff ? -1 : status, usedLength: ring.usedLen, data });
    }
  }
}

/** `struct virtio_blk_discard_write_zeroes` segments for `ranges`. */
function segmentsOf(ranges: readonly BlkRange[]): Uint8Array {
  const size = VIRTIO_BLK_DISCARD_SEGMENT_SIZE;
  const out = new Uint8Array(ranges.length * size);
  const v = new DataView(out.buffer);
  ranges.forEach((r, i) => {
    v.setBigUint64(i * size, BigInt(r.sector), true);
    v.setUint32(i * size + 8, r.sectors, true);
    v.setUint32(
      i * size + 12,
      r.flags ?? (r.unmap ? VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP : 0),
      true,
    );
  });
  return out;
}
