/**
 * The guest memory table: the regions a vhost-user frontend shares with
 * `SET_MEM_TABLE` / `ADD_MEM_REG`, mapped into this process. Each region is a
 * range of guest-physical addresses (GPA), the frontend's virtual address of
 * the same bytes (UVA), and the file descriptor that backs them.
 *
 * Everything the frontend sends is hostile input. Every translation checks
 * that the whole range `[address, address + length)` lies inside a single
 * region; a range that runs past a region's end, even into an adjacent
 * region, is refused with a {@linkcode GuestMemoryError} naming the address,
 * the length and the reason.
 *
 * A region's file must be a regular file (a memfd, a hugetlbfs or tmpfs
 * file) at least `mmapOffset + size` bytes long: touching a page past the
 * end of a shared file raises SIGBUS, which kills the process. A frontend
 * that shrinks the file after the table was accepted could do exactly that,
 * so by default a region's file must be unable to shrink: a memfd sealed
 * with `F_SEAL_SHRINK` (QEMU's `memory-backend-memfd` seals by default), or
 * one that still accepts seals, which the table then adds itself. Files that
 * can never be sealed (DPDK's memfds, hugetlbfs and disk files) are refused
 * unless the caller opts in with `allowUnsealed`, trusting that frontend not
 * to shrink its memory (see docs/security.md).
 *
 * Address space is finite (47 bits on x86-64) and shared with the
 * JavaScript engine, which aborts the process when it cannot reserve more.
 * Each region maps only the pages that hold it (from the page containing
 * `mmapOffset`), a table maps at most {@linkcode MapOptions.maxBytes}
 * bytes, and the process as a whole at most
 * {@linkcode PROCESS_MAPPED_BYTES_LIMIT}.
 *
 * Ownership of mappings: each mapped file is reference-counted. A table made
 * by {@linkcode GuestMemory.map} holds one reference per region;
 * {@linkcode GuestMemory.with} and {@linkcode GuestMemory.without} return a
 * new table that takes its own reference on every region it keeps. So the
 * old and the new table stay independently valid, and each must be closed:
 * a mapping is unmapped when the last table holding it is closed. The usual
 * sequence, `next = old.with(r); old.close()`, therefore keeps the shared
 * regions mapped, and `next = old.without(gpa, size); old.close()` unmaps
 * exactly the removed one.
 *
 * @module
 */

import {
  addSeals,
  describeFd,
  F_SEAL_SEAL,
  F_SEAL_SHRINK,
  fstat,
  getSeals,
  MAP_SHARED,
  type Mapping,
  mmap,
  pageSize,
  pointerOf,
  PROT_READ,
  PROT_WRITE,
  S_IFMT,
  S_IFREG,
  viewOf,
} from "../sys/mod.ts";
import { hex } from "../uapi/hex.ts";
import { IotlbView, type SharedIotlb } from "./iotlb.ts";

/** Default {@linkcode MapOptions.maxBytes}: 4 TiB of guest memory per table. */
export const DEFAULT_TABLE_BYTES_LIMIT = 4 * 2 ** 40;
/**
 * Guest memory the whole process maps at most, over every table of every
 * device: 64 TiB, half the x86-64 user address space, leaving the rest to
 * the JavaScript engine, Workers and libraries.
 */
export const PROCESS_MAPPED_BYTES_LIMIT = 64 * 2 ** 40;

let processMappedBytes = 0;

/** Bytes of guest memory this process has mapped now, over every table. */
export function mappedGuestBytes(): number {
  return processMappedBytes;
}

/** Options of {@linkcode GuestMemory.map} and {@linkcode GuestMemory.with}. */
export interface MapOptions {
  /**
   * Accept region files that can shrink (memfds made without
   * `MFD_ALLOW_SEALING`, hugetlbfs and disk files). A frontend that then
   * shrinks its file kills this process with SIGBUS: opt in only for
   * frontends you trust (default false).
   */
  allowUnsealed?: boolean;
  /** Largest total size of the table's regions (default {@linkcode DEFAULT_TABLE_BYTES_LIMIT}). */
  maxBytes?: number;
}

/** A translation or a table was refused; the message says what and why. */
export class GuestMemoryError extends Error {
  /**
   * Make the error.
   *
   * @param message What was asked (address, length) and why it failed.
   */
  constructor(message: string) {
    super(message);
    this.name = "GuestMemoryError";
  }
}

/** One region of a vhost-user memory table, as the frontend sent it. */
export interface MemoryRegionSpec {
  /** Guest-physical address of the first byte. */
  gpa: number;
  /** Size in bytes. */
  size: number;
  /** The frontend's virtual address of the first byte. */
  uva: number;
  /** Offset of the first byte within `fd` (need not be page aligned). */
  mmapOffset: number;
  /** File descriptor backing the region; the table does not close it. */
  fd: number;
}

/**
 * A region already mapped in this process, described so that it can be
 * posted to a Worker (structured-cloneable) and viewed there with
 * {@linkcode GuestMemory.fromShared}.
 */
export interface SharedRegion {
  /** Guest-physical address of the first byte. */
  gpa: number;
  /** Size in bytes. */
  size: number;
  /** The frontend's virtual address of the first byte. */
  uva: number;
  /** Host address of the first byte in this process. */
  address: number;
}

/** One region of a {@linkcode GuestMemory}. */
export interface GuestRegion {
  /** Guest-physical address of the first byte. */
  readonly gpa: number;
  /** Size in bytes. */
  readonly size: number;
  /** The frontend's virtual address of the first byte. */
  readonly uva: number;
  /**
   * Host address of the first byte in this process (for VFIO DMA mapping).
   * For regions over JavaScript buffers it is computed on first use.
   */
  readonly address: number;
  /** The region's bytes. */
  readonly bytes: Uint8Array;
  /** A DataView over {@linkcode GuestRegion.bytes} (little-endian fields). */
  readonly view: DataView;
}

/**
 * A mapped file shared by every table and lease that holds one of its
 * regions; unmapped when the last of them lets go.
 */
class SharedMapping {
  #refs = 1;
  constructor(readonly mapping: Mapping) {
    processMappedBytes += mapping.length;
  }

  retain(): void {
    this.#refs++;
  }

  release(): void {
    if (--this.#refs === 0) {
      processMappedBytes -= this.mapping.length;
      this.mapping.unmap();
    }
  }
}

/** Which file backs a region, and where: two specs with equal backings map the same bytes. */
interface Backing {
  dev: number;
  ino: number;
  mmapOffset: number;
}

class Region implements GuestRegion {
  readonly view: DataView;
  #address: number;

  constructor(
    readonly gpa: number,
    readonly size: number,
    readonly uva: number,
    readonly bytes: Uint8Array,
    address: number,
    readonly mapping: SharedMapping | null,
    readonly shareable: boolean,
    readonly backing: Backing | null = null,
  ) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.#address = address;
  }

  get address(): number {
    if (this.#address < 0) this.#address = pointerOf(this.bytes);
    return this.#address;
  }
}

const MAX = Number.MAX_SAFE_INTEGER;

function isAddress(n: unknown): n is number {
  return typeof n === "number" && Number.isSafeInteger(n) && n >= 0;
}

function describeRegion(r: { gpa: number; size: number; uva: number }, i: number): string {
  return `region ${i} (gpa ${hex(r.gpa)}-${hex(r.gpa + r.size)}, uva ${hex(r.uva)}-${
    hex(r.uva + r.size)
  })`;
}

/**
 * Check a list of regions: positive sizes, safe addresses, no two regions
 * overlapping in guest-physical or in frontend-virtual space.
 */
function validate(list: readonly { gpa: number; size: number; uva: number }[]): void {
  list.forEach(checkRegion);
  for (let i = 0; i < list.length; i++) {
    for (let j = i + 1; j < list.length; j++) checkDisjoint(list, i, j);
  }
}

/** Check `list[last]` against the regions before it (adding one region costs O(n), not O(n²)). */
function validateLast(list: readonly { gpa: number; size: number; uva: number }[]): void {
  const last = list.length - 1;
  checkRegion(list[last], last);
  for (let i = 0; i < last; i++) checkDisjoint(list, i, last);
}

function checkRegion(r: { gpa: number; size: number; uva: number }, i: number): void {
  for (const key of ["gpa", "size", "uva"] as const) {
    if (!isAddress(r[key])) {
      throw new GuestMemoryError(
        `region ${i}: ${key} ${r[key]} is not a non-negative safe integer`,
      );
    }
  }
  if (r.size === 0) throw new GuestMemoryError(`region ${i} (gpa ${hex(r.gpa)}): size is 0`);
  if (r.gpa + r.size > MAX || r.uva + r.size > MAX) {
    throw new GuestMemoryError(
      `region ${i} (gpa ${hex(r.gpa)}, uva ${hex(r.uva)}, size ${hex(r.size)}) ends beyond 2^53`,
    );
  }
}

function checkDisjoint(
  list: readonly { gpa: number; size: number; uva: number }[],
  i: number,
  j: number,
): void {
  const a = list[i], b = list[j];
  if (a.gpa < b.gpa + b.size && b.gpa < a.gpa + a.size) {
    throw new GuestMemoryError(
      `${describeRegion(b, j)} overlaps ${describeRegion(a, i)} in guest-physical space`,
    );
  }
  if (a.uva < b.uva + b.size && b.uva < a.uva + a.size) {
    throw new GuestMemoryError(
      `${describeRegion(b, j)} overlaps ${describeRegion(a, i)} in frontend address space`,
    );
  }
}

/** What `fd` is, for messages ("fd 9 (/memfd:x (deleted))"); never throws. */
function nameOf(fd: number): string {
  try {
    return describeFd(fd);
  } catch {
    return "unknown file";
  }
}

/** Total bytes of `list`, refused above `limit`. */
function checkTotal(list: readonly { size: number }[], limit: number): void {
  const total = list.reduce((sum, r) => sum + r.size, 0);
  if (total > limit) {
    throw new GuestMemoryError(
      `the table's regions total ${hex(total)} bytes, more than this device's limit of ` +
        `${hex(limit)}; raise the limit (maxMemoryBytes) if the guest really is that large`,
    );
  }
}

/**
 * Make sure the file under a region cannot shrink while mapped (see the
 * module documentation), sealing it where it still accepts seals.
 */
function checkCannotShrink(fd: number, where: string, allowUnsealed: boolean): void {
  const seals = getSeals(fd);
  if (seals !== null && (seals & F_SEAL_SHRINK) !== 0) return;
  if (seals !== null && (seals & F_SEAL_SEAL) === 0) {
    addSeals(fd, F_SEAL_SHRINK);
    return;
  }
  if (allowUnsealed) return;
  const what = seals === null ? "a file that cannot be sealed" : "a memfd that cannot be sealed";
  throw new GuestMemoryError(
    `${where}: fd ${fd} (${nameOf(fd)}) is ${what}, so the frontend could shrink it and ` +
      `kill this process (SIGBUS); the SDK takes memory sealed with F_SEAL_SHRINK: use QEMU's ` +
      `memory-backend-memfd (sealed by default) or a memfd made with MFD_ALLOW_SEALING, or ` +
      `start the backend with --allow-unsealed-memory (allowUnsealedMemory) to trust this ` +
      `frontend (DPDK virtio_user needs it)`,
  );
}

/**
 * Check that `fd` may be mapped shared for its first `needed` bytes without
 * risking SIGBUS: touching a page of a shared file beyond its end raises
 * SIGBUS and kills the process, so the file must be a regular one (memfd,
 * hugetlbfs), long enough, and unable to shrink (sealed here where it still
 * accepts seals). Guest memory regions and the dirty log both go through it.
 *
 * Returns the file's status.
 *
 * @throws GuestMemoryError naming `where`, the fd and what is wrong with it.
 */
export function checkMemoryFile(
  fd: number,
  needed: number,
  where: string,
  allowUnsealed: boolean,
): ReturnType<typeof fstat> {
  const st = fstat(fd);
  if ((st.mode & S_IFMT) !== S_IFREG) {
    throw new GuestMemoryError(
      `${where}: fd ${fd} (${nameOf(fd)}) is not a memory file; send a memfd or a ` +
        `hugetlbfs file`,
    );
  }
  if (st.size < needed) {
    throw new GuestMemoryError(
      `${where}: fd ${fd} is only ${st.size} bytes long; ${where} needs ${needed}`,
    );
  }
  checkCannotShrink(fd, where, allowUnsealed);
  return st;
}

/**
 * Map one region's pages: from the page that holds `mmapOffset` to the page
 * that holds its last byte, viewed at the offset's place in that page.
 */
function mapRegion(spec: MemoryRegionSpec, index: number, options: MapOptions): Region {
  const { gpa, size, uva, mmapOffset, fd } = spec;
  const where = `region ${index} (gpa ${hex(gpa)}, size ${hex(size)}, mmap offset ${
    hex(mmapOffset)
  })`;
  if (!isAddress(mmapOffset) || mmapOffset + size > MAX) {
    throw new GuestMemoryError(`${where}: mmap offset ${mmapOffset} is invalid`);
  }
  if (!Number.isInteger(fd) || fd < 0) {
    throw new GuestMemoryError(`${where}: fd ${fd} is invalid`);
  }
  const st = checkMemoryFile(fd, mmapOffset + size, where, options.allowUnsealed ?? false);
  const page = pageSize();
  const skip = mmapOffset % page;
  const length = skip + size;
  if (processMappedBytes + length > PROCESS_MAPPED_BYTES_LIMIT) {
    throw new GuestMemoryError(
      `${where}: mapping ${hex(length)} more bytes would take this process past its ` +
        `${hex(PROCESS_MAPPED_BYTES_LIMIT)}-byte limit of guest memory (${
          hex(processMappedBytes)
        } mapped now)`,
    );
  }
  const mapping = mmap(fd, length, {
    offset: mmapOffset - skip,
    prot: PROT_READ | PROT_WRITE,
    flags: MAP_SHARED,
  });
  const bytes = new Uint8Array(mapping.buffer, skip, size);
  return new Region(
    gpa,
    size,
    uva,
    bytes,
    mapping.address + skip,
    new SharedMapping(mapping),
    true,
    { dev: st.dev, ino: st.ino, mmapOffset },
  );
}

/**
 * Guest memory regions kept mapped for a user on another thread (a datapath
 * Worker): the mappings stay until {@linkcode MemoryLease.release}, even
 * after every table holding them was closed. Release only once that thread
 * has confirmed it no longer touches them.
 */
export interface MemoryLease {
  /** The regions, to post to the Worker and view with {@linkcode GuestMemory.fromShared}. */
  readonly regions: SharedRegion[];
  /**
   * The device IOTLB when the device sits behind a vIOMMU, else null: post
   * it with the regions (`GuestMemory.fromShared(regions, iotlb)`), so the
   * Worker translates buffer addresses (IOVAs) through it.
   */
  readonly iotlb: SharedIotlb | null;
  /** Let the mappings go (unmapped if no table or other lease holds them). Idempotent. */
  release(): void;
}

/** Why {@linkcode GuestMemory.translate} found no region. */
export const TranslationFault = {
  /** It did. */
  NONE: 0,
  /** The address is not inside guest memory (or the IOTLB maps it outside). */
  OUTSIDE: 1,
  /** Behind a vIOMMU: no IOTLB entry maps the address (ask the frontend: a miss). */
  MISS: 2,
  /** Behind a vIOMMU: the entry does not permit the access (a write to a read-only mapping). */
  DENIED: 3,
} as const;

/**
 * The guest's memory as this process sees it: guest-physical and frontend
 * virtual ranges, each region a view of bytes. Immutable: a new table is a
 * new object. See the module documentation for who unmaps what.
 *
 * @example Translate and access guest memory
 * ```ts
 * import { GuestMemory } from "@vhost-mdev/sdk";
 *
 * const memory = GuestMemory.fromBuffers([
 *   { gpa: 0x10000, uva: 0x7f0000000000, bytes: new Uint8Array(0x4000) },
 * ]);
 * const gpa = memory.uvaToGpa(0x7f0000001000, 16); // 0x11000
 * memory.bytes(gpa, 4).set([1, 2, 3, 4]);
 * memory.close();
 * ```
 */
export class GuestMemory {
  /** The regions, in the order the frontend listed them. */
  readonly regions: readonly GuestRegion[];
  readonly #regions: Region[];
  readonly #start: Float64Array;
  readonly #size: Float64Array;
  readonly #uva: Float64Array;
  #count: number;
  #last = 0;
  #lastUva = 0;
  #closed = false;
  #iotlb: IotlbView | null = null;
  /**
   * After {@linkcode GuestMemory.translate} found a region: the byte offset
   * of the address within it.
   */
  offset = 0;
  /**
   * After {@linkcode GuestMemory.translate} found a region: how many bytes
   * from the address on are mapped contiguously there (at most the length
   * asked for).
   */
  span = 0;
  /**
   * After {@linkcode GuestMemory.translate} returned -1: why
   * ({@linkcode TranslationFault}).
   */
  fault: number = TranslationFault.NONE;
  /** After a {@linkcode TranslationFault.MISS}: the address without a translation. */
  missAddress = 0;
  /** After a {@linkcode TranslationFault.MISS}: the access it was wanted for. */
  missPerm = 0;

  private constructor(regions: Region[]) {
    this.#regions = regions;
    this.regions = regions;
    this.#count = regions.length;
    this.#start = new Float64Array(regions.map((r) => r.gpa));
    this.#size = new Float64Array(regions.map((r) => r.size));
    this.#uva = new Float64Array(regions.map((r) => r.uva));
  }

  /** A table with no regions (before `SET_MEM_TABLE`). */
  static empty(): GuestMemory {
    return new GuestMemory([]);
  }

  /**
   * Map each region's fd (`MAP_SHARED`, read-write, the pages from the one
   * holding `mmapOffset`) and view it at `mmapOffset`. The fds are not
   * closed (the caller owns them; a mapping stays valid after its fd is
   * closed). Regions `previous` already maps identically (same addresses,
   * same file at the same offset) share its mapping instead, so their host
   * addresses stay: a new table from a frontend that changed one region
   * leaves the others where they were.
   *
   * @throws GuestMemoryError for a zero size, an address or end beyond 2^53,
   *   regions overlapping in guest-physical or frontend space, a file that
   *   is not a regular file, is shorter than the region or can shrink (see
   *   {@linkcode MapOptions.allowUnsealed}), or a table or process over its
   *   size limit; SysError when `mmap` fails. Whatever was mapped before the
   *   failure is unmapped.
   */
  static map(
    regions: readonly MemoryRegionSpec[],
    options: MapOptions = {},
    previous?: GuestMemory,
  ): GuestMemory {
    validate(regions);
    checkTotal(regions, options.maxBytes ?? DEFAULT_TABLE_BYTES_LIMIT);
    const mapped: Region[] = [];
    try {
      regions.forEach((spec, i) => {
        // A region `previous` maps already (same addresses, same file at the
        // same offset) keeps its mapping: its host address does not move.
        const same = previous && !previous.#closed ? previous.findIdentical(spec) : -1;
        if (same >= 0) {
          const r = previous!.#regions[same];
          r.mapping?.retain();
          mapped.push(r);
        } else {
          mapped.push(mapRegion(spec, i, options));
        }
      });
    } catch (e) {
      for (const r of mapped) r.mapping?.release();
      throw e;
    }
    return new GuestMemory(mapped);
  }

  /**
   * Views of regions mapped elsewhere in this process (by a table on another
   * thread, see {@linkcode GuestMemory.share}). Owns nothing: `close()`
   * unmaps nothing, and the owner must outlive every user of these views.
   */
  static fromShared(
    regions: readonly SharedRegion[],
    iotlb: SharedIotlb | null = null,
  ): GuestMemory {
    validate(regions);
    const memory = new GuestMemory(
      regions.map((r) =>
        new Region(
          r.gpa,
          r.size,
          r.uva,
          new Uint8Array(viewOf(r.address, r.size)),
          r.address,
          null,
          true,
        )
      ),
    );
    if (iotlb !== null) memory.#iotlb = new IotlbView(iotlb);
    return memory;
  }

  /**
   * Regions over JavaScript buffers (unit tests, a frontend's own memory).
   * `uva` defaults to `gpa`. The buffers are used, not copied. Such a table
   * cannot be shared with Workers by address.
   */
  static fromBuffers(
    regions: readonly { gpa: number; uva?: number; bytes: Uint8Array }[],
  ): GuestMemory {
    const list = regions.map((r) => ({
      gpa: r.gpa,
      uva: r.uva ?? r.gpa,
      size: r.bytes.length,
      bytes: r.bytes,
    }));
    validate(list);
    return new GuestMemory(
      list.map((r) => new Region(r.gpa, r.size, r.uva, r.bytes, -1, null, false)),
    );
  }

  /** Whether {@linkcode GuestMemory.close} ran. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Describe the regions so that a Worker can view them with
   * {@linkcode GuestMemory.fromShared}. This table must stay open while the
   * Worker uses them.
   *
   * @throws GuestMemoryError for a closed table or regions over JavaScript
   *   buffers (their memory may move or be collected).
   */
  share(): SharedRegion[] {
    if (this.#closed) throw new GuestMemoryError("cannot share a closed memory table");
    return this.#regions.map((r, i) => {
      if (!r.shareable) {
        throw new GuestMemoryError(
          `${describeRegion(r, i)} is a JavaScript buffer and cannot be shared`,
        );
      }
      return { gpa: r.gpa, size: r.size, uva: r.uva, address: r.address };
    });
  }

  /**
   * Keep this table's mappings for a user on another thread until the
   * returned lease is released, whatever happens to the table meanwhile.
   *
   * @throws GuestMemoryError like {@linkcode GuestMemory.share}.
   */
  lease(): MemoryLease {
    const regions = this.share();
    const held = this.#regions.map((r) => r.mapping).filter((m) => m !== null);
    for (const m of held) m.retain();
    let released = false;
    return {
      regions,
      iotlb: this.#iotlb?.shared ?? null,
      release() {
        if (released) return;
        released = true;
        for (const m of held) m.release();
      },
    };
  }

  /**
   * Index of a region with exactly this address, size and frontend address,
   * mapped from the same file at the same offset (a frontend repeating an
   * `ADD_MEM_REG`), or -1.
   */
  findIdentical(region: MemoryRegionSpec): number {
    const { gpa, size, uva } = region;
    const i = this.#regions.findIndex((r) => r.gpa === gpa && r.size === size && r.uva === uva);
    const backing = i >= 0 ? this.#regions[i].backing : null;
    if (backing === null || backing.mmapOffset !== region.mmapOffset) return -1;
    try {
      const st = fstat(region.fd);
      return st.dev === backing.dev && st.ino === backing.ino ? i : -1;
    } catch {
      return -1;
    }
  }

  /**
   * A new table with this table's regions plus `region` (`ADD_MEM_REG`),
   * mapped like {@linkcode GuestMemory.map}. The new table takes its own
   * reference on the regions it shares with this one; both must be closed.
   * Costs O(regions), not more.
   *
   * @throws GuestMemoryError when the region is invalid or overlaps one of
   *   this table's regions; nothing is mapped then.
   */
  with(region: MemoryRegionSpec, options: MapOptions = {}): GuestMemory {
    this.#checkOpen("add a region to");
    const list = [...this.#regions, region];
    validateLast(list);
    checkTotal(list, options.maxBytes ?? DEFAULT_TABLE_BYTES_LIMIT);
    const added = mapRegion(region, this.#regions.length, options);
    for (const r of this.#regions) r.mapping?.retain();
    return new GuestMemory([...this.#regions, added]);
  }

  /**
   * A new table without the region at exactly `gpa` of exactly `size` bytes
   * (`REM_MEM_REG`). The new table references the remaining regions; the
   * removed one stays mapped until this table is closed.
   *
   * @throws GuestMemoryError when no region has that address and size.
   */
  without(gpa: number, size: number): GuestMemory {
    this.#checkOpen("remove a region from");
    const index = this.#regions.findIndex((r) => r.gpa === gpa && r.size === size);
    if (index < 0) {
      throw new GuestMemoryError(
        `no region at gpa ${hex(gpa)} with size ${hex(size)} to remove (the table has ` +
          (this.#regions.map(describeRegion).join(", ") || "no regions") + ")",
      );
    }
    const kept = this.#regions.filter((_, i) => i !== index);
    for (const r of kept) r.mapping?.retain();
    return new GuestMemory(kept);
  }

  /**
   * The device IOTLB buffer addresses translate through (a device behind a
   * vIOMMU, `VIRTIO_F_ACCESS_PLATFORM`), or null: then they are
   * guest-physical.
   */
  get iotlb(): IotlbView | null {
    return this.#iotlb;
  }

  /**
   * Make buffer addresses translate through `iotlb` (or, with null, be
   * guest-physical again). The device core does this when the frontend
   * acknowledges `VIRTIO_F_ACCESS_PLATFORM`; leases taken afterwards carry
   * the IOTLB to Workers.
   */
  useIotlb(iotlb: IotlbView | null): void {
    this.#iotlb = iotlb;
  }

  /**
   * Translate a device address (an IOVA behind a vIOMMU, else
   * guest-physical) for an access of `perm` ({@linkcode IotlbAccess} bits):
   * the index of the region holding its first byte, with
   * {@linkcode GuestMemory.offset} and {@linkcode GuestMemory.span} set; or
   * -1 with {@linkcode GuestMemory.fault} saying why. A range that goes on
   * past what one region (or one IOTLB entry) maps has a `span` below
   * `length`: translate the rest from `address + span`. Datapath lookup:
   * no allocation, no exception. Without an IOTLB, `perm` is not checked
   * (guest memory is all read-write).
   */
  translate(address: number, length: number, perm: number): number {
    const iotlb = this.#iotlb;
    if (iotlb === null) {
      const r = this.find(address, 0);
      if (r < 0) {
        this.fault = TranslationFault.OUTSIDE;
        return -1;
      }
      const offset = address - this.#start[r];
      const room = this.#size[r] - offset;
      this.offset = offset;
      this.span = length < room ? length : room;
      return r;
    }
    const uva = iotlb.translate(address, perm);
    if (uva < 0) return this.#iotlbFault(uva === -1 ? address : -1, perm);
    const entrySpan = iotlb.span;
    const r = this.findUva(uva, 0);
    if (r < 0) {
      this.fault = TranslationFault.OUTSIDE;
      return -1;
    }
    const offset = uva - this.#uva[r];
    let span = this.#size[r] - offset;
    if (entrySpan < span) span = entrySpan;
    this.offset = offset;
    this.span = length < span ? length : span;
    return r;
  }

  /**
   * {@linkcode GuestMemory.translate} for a range that must be one host
   * range (an indirect table): the region index when all of
   * `[address, address + length)` maps, with `perm`, to consecutive bytes
   * of one region (across adjacent IOTLB entries too), with
   * {@linkcode GuestMemory.offset} set and `span` = `length`; else -1 with
   * {@linkcode GuestMemory.fault} set (`OUTSIDE` also for a range that is
   * mapped but not contiguous).
   */
  translateWhole(address: number, length: number, perm: number): number {
    const iotlb = this.#iotlb;
    let r: number, offset: number;
    if (iotlb === null) {
      r = this.find(address, length);
      offset = r < 0 ? 0 : address - this.#start[r];
    } else {
      const uva = iotlb.translateRange(address, length, perm);
      if (uva < 0) return this.#iotlbFault(uva === -1 ? iotlb.missAt : -1, perm, uva === -1);
      r = this.findUva(uva, length);
      offset = r < 0 ? 0 : uva - this.#uva[r];
    }
    if (r < 0) {
      this.fault = TranslationFault.OUTSIDE;
      return -1;
    }
    this.offset = offset;
    this.span = length;
    return r;
  }

  /**
   * A translation the IOTLB refused: a miss at `missAt` (>= 0), else
   * refused access, or (`mapped`) a range mapped but not contiguously.
   * Returns -1.
   */
  #iotlbFault(missAt: number, perm: number, mapped = false): -1 {
    if (missAt >= 0) {
      this.fault = TranslationFault.MISS;
      this.missAddress = missAt;
      this.missPerm = perm;
    } else {
      this.fault = mapped ? TranslationFault.OUTSIDE : TranslationFault.DENIED;
    }
    return -1;
  }

  /**
   * Index of the region holding all of `[uva, uva + length)` in the
   * frontend's address space, or -1; allocation-free, like
   * {@linkcode GuestMemory.find}. (Written out as `find` is: with one
   * helper shared by the two, the ring pop path stopped being inlined and
   * slowed down.)
   */
  findUva(uva: number, length: number): number {
    const start = this.#uva, size = this.#size;
    let i = this.#lastUva;
    if (i < this.#count) {
      const off = uva - start[i];
      if (off >= 0 && off < size[i] && length >= 0 && length <= size[i] - off) return i;
    }
    for (i = 0; i < this.#count; i++) {
      const off = uva - start[i];
      if (off >= 0 && off < size[i] && length >= 0 && length <= size[i] - off) {
        this.#lastUva = i;
        return i;
      }
    }
    return -1;
  }

  /**
   * Index of the region holding all of `[gpa, gpa + length)`, or -1. Datapath
   * lookup: no allocation, no exception. A range that runs past a region's
   * end, even into an adjacent region, is -1. `length` may be 0 (then `gpa`
   * must be inside a region).
   */
  find(gpa: number, length: number): number {
    const start = this.#start, size = this.#size;
    let i = this.#last;
    if (i < this.#count) {
      const off = gpa - start[i];
      if (off >= 0 && off < size[i] && length >= 0 && length <= size[i] - off) return i;
    }
    for (i = 0; i < this.#count; i++) {
      const off = gpa - start[i];
      if (off >= 0 && off < size[i] && length >= 0 && length <= size[i] - off) {
        this.#last = i;
        return i;
      }
    }
    return -1;
  }

  /**
   * Translate a frontend virtual address range to guest-physical (for the
   * ring addresses of `SET_VRING_ADDR`).
   *
   * @throws GuestMemoryError when the range is not inside one region.
   */
  uvaToGpa(uva: number, length: number): number {
    const { region, offset } = this.#locate("uva", uva, length);
    return region.gpa + offset;
  }

  /**
   * The guest's bytes `[gpa, gpa + length)` (a view, not a copy).
   *
   * @throws GuestMemoryError when the range is not inside one region.
   */
  bytes(gpa: number, length: number): Uint8Array {
    const { region, offset } = this.#locate("gpa", gpa, length);
    return region.bytes.subarray(offset, offset + length);
  }

  /**
   * Host address of guest-physical `gpa` (for VFIO DMA mapping).
   *
   * @throws GuestMemoryError when `[gpa, gpa + length)` is not inside one region.
   */
  hostAddress(gpa: number, length: number): number {
    const { region, offset } = this.#locate("gpa", gpa, length);
    return region.address + offset;
  }

  /** Release this table's references; unmaps mappings no other table holds. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#count = 0;
    for (const r of this.#regions) r.mapping?.release();
  }

  #checkOpen(what: string): void {
    if (this.#closed) throw new GuestMemoryError(`cannot ${what} a closed memory table`);
  }

  /** Find the region of a range in one address space, or explain why there is none. */
  #locate(
    space: "gpa" | "uva",
    address: number,
    length: number,
  ): { region: Region; offset: number } {
    const what = `${space} ${hex(address)} length ${length}`;
    if (!isAddress(address)) {
      throw new GuestMemoryError(`${what}: address is not a non-negative safe integer`);
    }
    if (!isAddress(length)) {
      throw new GuestMemoryError(`${what}: length is not a non-negative safe integer`);
    }
    if (this.#closed) throw new GuestMemoryError(`${what}: the memory table is closed`);
    const base = (r: Region) => space === "gpa" ? r.gpa : r.uva;
    const regions = this.#regions;
    const i = regions.findIndex((r) => address >= base(r) && address - base(r) < r.size);
    if (i < 0) {
      throw new GuestMemoryError(
        `${what}: not inside any region (` +
          (regions.length ? regions.map(describeRegion).join(", ") : "the table is empty") + ")",
      );
    }
    const region = regions[i];
    const offset = address - base(region);
    if (length > region.size - offset) {
      const end = base(region) + region.size;
      const next = regions.findIndex((r) => base(r) === end);
      const past = offset + length - region.size;
      throw new GuestMemoryError(
        `${what}: ends ${past} byte(s) past the end of ${describeRegion(region, i)}` +
          (next >= 0
            ? `, crossing into region ${next}; an access must stay inside one region`
            : ""),
      );
    }
    return { region, offset };
  }
}
