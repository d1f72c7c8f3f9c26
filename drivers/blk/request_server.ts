/**
 * Serving virtio-blk requests (virtio 1.2 §5.2.6) from one ring: parse the
 * 16-byte header, check everything the guest controls, do the I/O on the
 * ring's own {@linkcode BlockFile}, and write the status byte.
 *
 * A request is laid out as device-readable header (`le32 type, le32
 * reserved, le64 sector`), then data (device-readable for `OUT`, `DISCARD`
 * and `WRITE_ZEROES`, device-writable for `IN` and `GET_ID`), then the
 * device-writable status byte, which is always the last writable byte.
 * Every request is answered with a status when there is a writable byte to
 * put it in:
 *
 * - `OK`, or `IOERR` for an I/O error, sectors outside the device, a length
 *   that is not whole sectors or blocks, a header shorter than 16 bytes, or
 *   a write to a read-only device;
 * - `UNSUPP` for an unknown type or flag (§5.2.6.1).
 *
 * Each refused request is counted in the ring's `errors` and reported
 * (`request.countError`); the ring goes on. A chain with no writable byte
 * cannot be answered: it goes back with used length 0, also counted.
 *
 * @module
 */

import {
  VIRTIO_BLK_DISCARD_SEGMENT_SIZE,
  VIRTIO_BLK_ID_BYTES,
  VIRTIO_BLK_REQ_HEADER_SIZE,
  VIRTIO_BLK_SECTOR_SIZE,
  VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
  VirtioBlkRequestType,
  VirtioBlkStatus,
} from "@vhost-mdev/sdk";
import { SysError } from "@vhost-mdev/sdk/sys";
import type { SoftRequest } from "@vhost-mdev/sdk/soft";
import { type BlockFile, BOUNCE_BYTES } from "./block_file.ts";
import { BLK_LIMITS } from "./limits.ts";

/** What a ring's request server needs to know about its device. */
export interface BlkServerConfig {
  /** Capacity in 512-byte sectors, as the config space says. */
  capacitySectors: number;
  /** Logical block size in bytes. */
  blockSize: number;
  /** Refuse writes. */
  readonly: boolean;
  /** The ID string for `GET_ID`. */
  serial: string;
}

/** A request refused with `status`, for `reason`. */
class Refusal {
  constructor(readonly status: number, readonly reason: string) {}
}

const T = VirtioBlkRequestType;
const S = VirtioBlkStatus;
const SECTOR = VIRTIO_BLK_SECTOR_SIZE;

/** Serves one ring's requests on one {@linkcode BlockFile}. */
export class BlkRequestServer {
  readonly #file: BlockFile;
  readonly #config: BlkServerConfig;
  readonly #header = new Uint8Array(VIRTIO_BLK_REQ_HEADER_SIZE);
  readonly #headerView = new DataView(this.#header.buffer);
  readonly #status = new Uint8Array(1);
  readonly #id = new Uint8Array(VIRTIO_BLK_ID_BYTES);
  readonly #segments = new Uint8Array(
    VIRTIO_BLK_DISCARD_SEGMENT_SIZE *
      Math.max(BLK_LIMITS.maxDiscardSeg, BLK_LIMITS.maxWriteZeroesSeg),
  );
  readonly #segmentView = new DataView(this.#segments.buffer);

  /** Serve requests on `file` for a device described by `config`. */
  constructor(file: BlockFile, config: BlkServerConfig) {
    this.#file = file;
    this.#config = config;
    this.#id.set(new TextEncoder().encode(config.serial).subarray(0, VIRTIO_BLK_ID_BYTES));
  }

  /**
   * Serve one request; returns the used length (all its writable bytes,
   * the status byte last).
   *
   * @throws Error for a chain without a device-writable byte for the status.
   */
  serve(request: SoftRequest): number {
    const writable = request.writable;
    if (writable < 1) {
      throw new Error(
        `virtio-blk request with ${request.readableBytes} readable and no device-writable ` +
          `bytes: no status byte to answer in (virtio 1.2 §5.2.6)`,
      );
    }
    let status: number = S.OK;
    try {
      this.#handle(request);
    } catch (e) {
      if (e instanceof Refusal) {
        status = e.status;
        request.countError(e.reason);
      } else if (e instanceof SysError) {
        status = S.IOERR;
        request.countError(`I/O error: ${e.message}`);
      } else {
        throw e;
      }
    }
    this.#status[0] = status;
    request.write(this.#status, writable - 1);
    return writable;
  }

  #handle(request: SoftRequest): void {
    if (request.readableBytes < VIRTIO_BLK_REQ_HEADER_SIZE) {
      throw new Refusal(
        S.IOERR,
        `the header has ${request.readableBytes} device-readable bytes; it needs ` +
          `${VIRTIO_BLK_REQ_HEADER_SIZE} (virtio 1.2 §5.2.6)`,
      );
    }
    request.read(this.#header, 0);
    const type = this.#headerView.getUint32(0, true);
    const sector = this.#headerView.getBigUint64(8, true);
    const dataOut = request.readableBytes - VIRTIO_BLK_REQ_HEADER_SIZE;
    const dataIn = request.writable - 1;
    switch (type) {
      case T.IN:
        return this.#read(request, sector, dataIn);
      case T.OUT:
        this.#writable("OUT");
        return this.#write(request, sector, dataOut);
      case T.FLUSH:
        return this.#file.flush();
      case T.GET_ID:
        request.write(this.#id.subarray(0, Math.min(VIRTIO_BLK_ID_BYTES, dataIn)), 0);
        return;
      case T.DISCARD:
        this.#writable("DISCARD");
        return this.#ranges(request, dataOut, false);
      case T.WRITE_ZEROES:
        this.#writable("WRITE_ZEROES");
        return this.#ranges(request, dataOut, true);
      default:
        throw new Refusal(S.UNSUPP, `unknown request type ${type} (virtio 1.2 §5.2.6)`);
    }
  }

  #writable(what: string): void {
    if (this.#config.readonly) {
      throw new Refusal(S.IOERR, `${what} on a read-only device (VIRTIO_BLK_F_RO)`);
    }
  }

  /** The byte offset of `bytes` at `sector`, after checking they lie in the device and align. */
  #range(sector: bigint, bytes: number, what: string): number {
    const { capacitySectors, blockSize } = this.#config;
    if (bytes % SECTOR !== 0) {
      throw new Refusal(S.IOERR, `${what} of ${bytes} bytes is not whole 512-byte sectors`);
    }
    const count = bytes / SECTOR;
    if (sector > BigInt(capacitySectors) || Number(sector) + count > capacitySectors) {
      throw new Refusal(
        S.IOERR,
        `${what} of ${count} sectors at sector ${sector} is outside the device ` +
          `(${capacitySectors} sectors)`,
      );
    }
    const offset = Number(sector) * SECTOR;
    if (offset % blockSize !== 0 || bytes % blockSize !== 0) {
      throw new Refusal(
        S.IOERR,
        `${what} of ${bytes} bytes at sector ${sector} is not aligned to the ` +
          `${blockSize}-byte block size`,
      );
    }
    return offset;
  }

  /** `IN`: file to the writable data buffers, a bounce buffer at a time. */
  #read(request: SoftRequest, sector: bigint, bytes: number): void {
    const offset = this.#range(sector, bytes, "IN");
    for (let at = 0; at < bytes; at += BOUNCE_BYTES) {
      const n = Math.min(BOUNCE_BYTES, bytes - at);
      request.write(this.#file.readInto(offset + at, n), at);
    }
  }

  /** `OUT`: the readable data buffers to the file, a bounce buffer at a time. */
  #write(request: SoftRequest, sector: bigint, bytes: number): void {
    const offset = this.#range(sector, bytes, "OUT");
    const bounce = this.#file.bounce;
    for (let at = 0; at < bytes; at += BOUNCE_BYTES) {
      const n = Math.min(BOUNCE_BYTES, bytes - at);
      request.read(bounce.subarray(0, n), VIRTIO_BLK_REQ_HEADER_SIZE + at);
      this.#file.writeFrom(offset + at, n);
    }
  }

  /**
   * `DISCARD` and `WRITE_ZEROES`: `struct virtio_blk_discard_write_zeroes`
   * segments (virtio 1.2 §5.2.6), all checked before any is done.
   */
  #ranges(request: SoftRequest, bytes: number, zeroes: boolean): void {
    const what = zeroes ? "WRITE_ZEROES" : "DISCARD";
    const maxSeg = zeroes ? BLK_LIMITS.maxWriteZeroesSeg : BLK_LIMITS.maxDiscardSeg;
    const maxSectors = zeroes ? BLK_LIMITS.maxWriteZeroesSectors : BLK_LIMITS.maxDiscardSectors;
    const size = VIRTIO_BLK_DISCARD_SEGMENT_SIZE;
    if (bytes === 0 || bytes % size !== 0) {
      throw new Refusal(
        S.IOERR,
        `${what} data of ${bytes} bytes is not whole ${size}-byte segments`,
      );
    }
    const count = bytes / size;
    if (count > maxSeg) {
      throw new Refusal(S.IOERR, `${what} with ${count} segments, more than the ${maxSeg} allowed`);
    }
    const view = this.#segmentView;
    request.read(this.#segments.subarray(0, bytes), VIRTIO_BLK_REQ_HEADER_SIZE);
    for (let i = 0; i < count; i++) {
      const at = i * size;
      const sectors = view.getUint32(at + 8, true);
      const flags = view.getUint32(at + 12, true);
      // Discard takes no flags; write-zeroes only UNMAP (§5.2.6.1).
      const known = zeroes ? VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP : 0;
      if ((flags & ~known) !== 0) {
        throw new Refusal(
          S.UNSUPP,
          `${what} segment ${i} has unsupported flags 0x${flags.toString(16)}`,
        );
      }
      if (sectors > maxSectors) {
        throw new Refusal(
          S.IOERR,
          `${what} segment ${i} of ${sectors} sectors, more than the ${maxSectors} allowed`,
        );
      }
      this.#range(view.getBigUint64(at, true), sectors * SECTOR, `${what} segment ${i}`);
    }
    for (let i = 0; i < count; i++) {
      const at = i * size;
      const offset = Number(view.getBigUint64(at, true)) * SECTOR;
      const length = view.getUint32(at + 8, true) * SECTOR;
      if (length === 0) continue;
      if (zeroes) {
        const unmap = (view.getUint32(at + 12, true) & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) !== 0;
        this.#file.writeZeroes(offset, length, unmap);
      } else {
        this.#file.discard(offset, length);
      }
    }
  }
}
