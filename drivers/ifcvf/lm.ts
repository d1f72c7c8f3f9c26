/**
 * The IFC VF's live-migration BAR (BAR 4), as the Linux and DPDK ifcvf
 * drivers use it: from offset 0x20 the ring state of each queue, one 32-bit
 * word holding `last_avail_idx` (bits 0-15) and `last_used_idx` (bits
 * 16-31). For the net device the words of a queue pair share a 0x40-byte
 * block (queue q at `0x20 + (q / 2) * 0x40 + (q % 2) * 4`); for the block
 * device each queue has its own block (`0x20 + q * 0x40`), as DPDK reads it.
 *
 * Before DRIVER_OK the driver writes the state a ring resumes from; after
 * the device stopped it reads where the ring got to.
 *
 * Dirty logging (live migration): the first block holds the logging
 * control word (offset 0x0) and the bounds of the log as the device sees it
 * through the IOMMU (IOVA of its start at 0x10/0x14, of its end at
 * 0x18/0x1c, low and high halves). With logging on, the VF sets the log bit
 * of every page it writes by DMA into guest buffers; the driver maps the
 * log at {@linkcode IFCVF_LOG_IOVA}, as the Linux and DPDK drivers do.
 *
 * @module
 */

import type { MmioAccessor } from "@vhost-mdev/sdk/pci";

/** Offset of the first ring state word. */
export const LM_RING_STATE_OFFSET = 0x20;
/** Bytes per block of ring state. */
export const LM_CFG_SIZE = 0x40;
/** The BAR that holds the live-migration registers. */
export const LM_BAR = 4;
/** Logging control word: {@linkcode LM_LOGGING_DISABLE} or {@linkcode LM_LOGGING_ENABLE_VF}. */
export const LM_LOGGING_CTRL = 0x0;
/** Low 32 bits of the log's first byte (IOVA). */
export const LM_BASE_ADDR_LOW = 0x10;
/** High 32 bits of the log's first byte (IOVA). */
export const LM_BASE_ADDR_HIGH = 0x14;
/** Low 32 bits of the log's end (IOVA of the byte after it). */
export const LM_END_ADDR_LOW = 0x18;
/** High 32 bits of the log's end. */
export const LM_END_ADDR_HIGH = 0x1c;
/** Logging off. */
export const LM_LOGGING_DISABLE = 0;
/** The VF logs its own DMA writes. */
export const LM_LOGGING_ENABLE_VF = 1;
/** Where the driver maps the dirty log for the device to write (2^44, past any guest memory). */
export const IFCVF_LOG_IOVA = 0x1000_0000_0000;

/** A ring's progress as the device keeps it. */
export interface RingState {
  /** Next available index the device will process. */
  lastAvail: number;
  /** Next used index the device will write. */
  lastUsed: number;
}

/** Ring state access through the LM BAR. */
export class IfcvfLiveMigration {
  readonly #bar: MmioAccessor;
  readonly #kind: "net" | "blk";

  /** Use `bar` (BAR 4 mapped) of a `kind` device. */
  constructor(bar: MmioAccessor, kind: "net" | "blk") {
    this.#bar = bar;
    this.#kind = kind;
  }

  /** Offset of queue `q`'s ring state word. */
  offset(q: number): number {
    return this.#kind === "net"
      ? LM_RING_STATE_OFFSET + Math.floor(q / 2) * LM_CFG_SIZE + (q % 2) * 4
      : LM_RING_STATE_OFFSET + q * LM_CFG_SIZE;
  }

  /** Read queue `q`'s state (one 32-bit load). */
  read(q: number): RingState {
    const word = this.#bar.read32(this.offset(q));
    return { lastAvail: word & 0xffff, lastUsed: word >>> 16 };
  }

  /**
   * Have the VF log its DMA writes into the log at IOVA `base`, `size`
   * bytes long (the bounds first, then the control word).
   */
  enableLogging(base: number, size: number): void {
    const end = base + size;
    this.#bar.write32(LM_BASE_ADDR_LOW, base % 2 ** 32);
    this.#bar.write32(LM_BASE_ADDR_HIGH, Math.floor(base / 2 ** 32));
    this.#bar.write32(LM_END_ADDR_LOW, end % 2 ** 32);
    this.#bar.write32(LM_END_ADDR_HIGH, Math.floor(end / 2 ** 32));
    this.#bar.write32(LM_LOGGING_CTRL, LM_LOGGING_ENABLE_VF);
  }

  /** Stop the VF logging. */
  disableLogging(): void {
    this.#bar.write32(LM_LOGGING_CTRL, LM_LOGGING_DISABLE);
  }

  /** Write queue `q`'s state (one 32-bit store), before the queue starts. */
  write(q: number, state: RingState): void {
    this.#bar.write32(this.offset(q), ((state.lastAvail & 0xffff) | (state.lastUsed << 16)) >>> 0);
  }
}
