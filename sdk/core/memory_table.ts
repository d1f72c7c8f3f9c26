/**
 * The frontend's memory table as a device keeps it: the mapped
 * {@linkcode GuestMemory}, whether a table was set at all, the slot limit
 * of `ADD_MEM_REG`, and how often each region was added (QEMU sends the
 * same region once per queue pair, one vhost device each on the same
 * connection: a repeat is counted, not mapped again). Replacing the table
 * closes the old one; mappings a Worker leased stay until it lets go.
 *
 * @module
 */

import { GuestMemory, type MapOptions, type MemoryRegionSpec } from "../memory/guest_memory.ts";
import { MAX_MEM_SLOTS } from "../uapi/vhost_user.ts";
import { RequestRefused } from "./errors.ts";
import { hex } from "../uapi/hex.ts";

/** The mapped table, its bookkeeping, and the options every mapping takes. */
export class MemoryTable {
  #memory: GuestMemory = GuestMemory.empty();
  #set = false;
  #refs = new Map<string, number>();
  readonly #options: MapOptions;

  /**
   * An empty table.
   *
   * @param options How regions are mapped (seal policy, size limit).
   */
  constructor(options: MapOptions) {
    this.#options = options;
  }

  /** The current table. */
  get memory(): GuestMemory {
    return this.#memory;
  }

  /** Whether the frontend has set a table (`SET_MEM_TABLE` or `ADD_MEM_REG`). */
  get isSet(): boolean {
    return this.#set;
  }

  /**
   * `SET_MEM_TABLE`: `regions` mapped as a new table, not yet in use
   * (regions the current table maps identically keep their mappings).
   * {@linkcode MemoryTable.commit} makes it the table.
   */
  planReplace(regions: readonly MemoryRegionSpec[]): GuestMemory {
    return GuestMemory.map(regions, this.#options, this.#memory);
  }

  /**
   * Count `region` when it repeats one already in the table (same
   * addresses, same file at the same offset); true when it did.
   */
  countRepeat(region: MemoryRegionSpec): boolean {
    if (this.#memory.findIdentical(region) < 0) return false;
    const key = `${region.gpa}:${region.size}`;
    this.#refs.set(key, (this.#refs.get(key) ?? 1) + 1);
    return true;
  }

  /**
   * Refuse a new region when every slot is taken.
   *
   * @throws RequestRefused naming the limit.
   */
  checkSlot(region: MemoryRegionSpec): void {
    if (this.#memory.regions.length >= MAX_MEM_SLOTS) {
      throw new RequestRefused(
        `ADD_MEM_REG gpa ${hex(region.gpa)}: all ${MAX_MEM_SLOTS} memory slots are in use ` +
          `(GET_MAX_MEM_SLOTS); remove a region first`,
      );
    }
  }

  /** `ADD_MEM_REG` of a new region (after {@linkcode MemoryTable.checkSlot}), not yet in use. */
  planAdd(region: MemoryRegionSpec): GuestMemory {
    return this.#memory.with(region, this.#options);
  }

  /** Drop one count of a repeated region; true when the region stays (more counts left). */
  dropRepeat(gpa: number, size: number): boolean {
    const key = `${gpa}:${size}`;
    const refs = this.#refs.get(key) ?? 1;
    if (refs > 1) {
      this.#refs.set(key, refs - 1);
      return true;
    }
    this.#refs.delete(key);
    return false;
  }

  /** `REM_MEM_REG`: the table without the region at `gpa` of `size` bytes, not yet in use. */
  planRemove(gpa: number, size: number): GuestMemory {
    return this.#memory.without(gpa, size);
  }

  /** Make `next` (from a `plan` method) the table; the old one is closed. */
  commit(next: GuestMemory): void {
    this.#swap(next);
    this.#set = true;
  }

  /** Forget the table (device reset). */
  clear(): void {
    this.#swap(GuestMemory.empty());
    this.#set = false;
  }

  /** Release the mappings for good (device closed). */
  close(): void {
    this.#memory.close();
  }

  #swap(next: GuestMemory): void {
    if (next.regions.length === 0) this.#refs.clear();
    const old = this.#memory;
    this.#memory = next;
    old.close();
  }
}
