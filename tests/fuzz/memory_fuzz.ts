/**
 * Fuzz target `memory`: guest memory tables over real files. A case opens
 * 1 to 4 files (memfds of every size from 0 to a sparse 2^45 + 1 MiB,
 * sealed or not, and now and then a disk file, a pipe, an eventfd,
 * /dev/zero or an O_PATH handle), maps a table of random regions
 * (overlapping, empty, beyond 2^53, unaligned or huge mmap offsets), then
 * derives tables with `with`/`without`, takes leases, closes some, and
 * probes all of them with `find`, `bytes`, `hostAddress` and `uvaToGpa`.
 * Tables are made with `allowUnsealed` on or off and with or without a
 * `maxBytes` limit.
 *
 * Invariants:
 *
 * - Only `GuestMemoryError` or `SysError` escapes.
 * - Every successful translation lies inside exactly the region the
 *   addresses say, and the region's host range is mapped in
 *   /proc/self/maps; reading and writing its first and last byte does not
 *   fault (a fault would kill the process: the check before touching
 *   refuses a region that runs past the end of its file).
 * - A refused translation has no region that holds it.
 * - A lease keeps its regions mapped after its table is closed.
 * - After every table is closed and every lease released, the process has
 *   as many file mappings as before the case (and the SDK counts as many
 *   mapped guest bytes), and as many fds once the case's files are closed.
 * - When the SDK enforces sealing (detected at start), a table accepted
 *   without `allowUnsealed` only holds memfds sealed against shrinking.
 *
 * @module
 */

import {
  GuestMemory,
  GuestMemoryError,
  type GuestRegion,
  type MapOptions,
  mappedGuestBytes,
  type MemoryLease,
  type MemoryRegionSpec,
} from "@vhost-mdev/sdk";
import {
  close,
  fcntl,
  fstat,
  ftruncate,
  memfdCreate,
  openFdCount,
  S_IFMT,
  S_IFREG,
  SysError,
} from "@vhost-mdev/sdk/sys";
import {
  describeError,
  F_GET_SEALS,
  fc,
  FdPool,
  type FdSpec,
  type FuzzOptions,
  type FuzzReport,
  InvariantBroken,
  type MemoryCase,
  memoryCaseArb,
  type MemRegionChoice,
  NAME_PREFIX,
  runProperty,
  Seal,
} from "./arbitraries.ts";

/** A translation asked of a table. */
export interface Query {
  /** Which address space the address is in. */
  space: "gpa" | "uva";
  /** The address. */
  address: number;
  /** Bytes from it. */
  length: number;
}

/** What a table answered. */
export type Answer =
  | { call: "find"; index: number }
  | { call: "bytes"; bytes: Uint8Array }
  | { call: "hostAddress"; address: number }
  | { call: "uvaToGpa"; gpa: number };

function isAddress(n: number): boolean {
  return Number.isSafeInteger(n) && n >= 0;
}

/** The region whose `space` range holds all of `[address, address + length)`, or -1 (the oracle). */
export function holder(regions: readonly GuestRegion[], q: Query): number {
  if (!isAddress(q.address) || !isAddress(q.length)) return -1;
  return regions.findIndex((r) => {
    const base = r[q.space];
    const off = q.address - base;
    return off >= 0 && off < r.size && q.length <= r.size - off;
  });
}

/**
 * Why `answer` to `q` is wrong for a table of `regions`, or null. A
 * translation must land in the one region that holds the whole range, at
 * the right offset, with the right length.
 */
export function translationProblem(
  regions: readonly GuestRegion[],
  q: Query,
  answer: Answer,
): string | null {
  const what = `${answer.call}(${q.space} ${q.address}, ${q.length})`;
  const i = holder(regions, q);
  if (answer.call === "find") {
    if (answer.index === -1) {
      return i === -1 ? null : `${what} = -1, but region ${i} holds the range`;
    }
    const r = regions[answer.index];
    if (r === undefined) return `${what} = ${answer.index}: no such region`;
    const off = q.address - r.gpa;
    // Non-integer lengths have no oracle answer; a region found must still hold the range.
    if (!(off >= 0 && off < r.size && q.length >= 0 && q.length <= r.size - off)) {
      return `${what} = ${answer.index}, which does not hold the range`;
    }
    return i === -1 || i === answer.index
      ? null
      : `${what} = ${answer.index}, the oracle says ${i}`;
  }
  if (i === -1) return `${what} succeeded, but no region holds the range`;
  const r = regions[i];
  const off = q.address - r[q.space];
  switch (answer.call) {
    case "bytes": {
      const b = answer.bytes;
      if (b.length !== q.length) return `${what}: ${b.length} bytes`;
      if (b.buffer !== r.bytes.buffer || b.byteOffset !== r.bytes.byteOffset + off) {
        return `${what}: view at byte ${b.byteOffset} is not region ${i}'s byte ${off}`;
      }
      return null;
    }
    case "hostAddress":
      return answer.address === r.address + off
        ? null
        : `${what} = ${answer.address}, region ${i} has it at ${r.address + off}`;
    case "uvaToGpa":
      return answer.gpa === r.gpa + off ? null : `${what} = ${answer.gpa}, expected ${r.gpa + off}`;
  }
}

/** File mappings this fuzzing can cause: memfds (ours and any other), our disk files, /dev/zero. */
export function guestMappingCount(): number {
  return Deno.readTextFileSync("/proc/self/maps").split("\n").filter((l) =>
    l.includes("memfd:") || l.includes(NAME_PREFIX) || l.includes("/dev/zero")
  ).length;
}

/** Mapped address ranges of this process. */
function mappedRanges(): [number, number][] {
  return Deno.readTextFileSync("/proc/self/maps").split("\n").filter((l) => l).map((l) => {
    const [a, b] = l.split(" ")[0].split("-");
    return [parseInt(a, 16), parseInt(b, 16)];
  });
}

/** Whether `[start, end)` is covered by mappings with no hole. */
function covered(ranges: [number, number][], start: number, end: number): boolean {
  let at = start;
  for (const [a, b] of ranges) {
    if (a <= at && at < b) at = b;
    if (at >= end) return true;
  }
  return at >= end;
}

/**
 * Whether this SDK refuses a memfd that can never be sealed unless the
 * caller allows unsealed memory (the hardening in progress when this was
 * written); decides whether the sealing invariant is checked.
 */
export function sdkEnforcesSealing(): boolean {
  const fd = memfdCreate(`${NAME_PREFIX}-probe`);
  try {
    ftruncate(fd, 4096);
    GuestMemory.map([{ gpa: 0, size: 4096, uva: 0, mmapOffset: 0, fd }]).close();
    return false;
  } catch (e) {
    if (e instanceof GuestMemoryError) return true;
    throw e;
  } finally {
    close(fd);
  }
}

/** A file of the case, opened. */
interface CaseFile {
  spec: FdSpec;
  fd: number;
  size: number;
}

/** A region spec, resolved against the case's files. */
interface Resolved extends MemoryRegionSpec {
  file: CaseFile;
}

function resolveRegion(files: CaseFile[], c: MemRegionChoice): Resolved {
  const file = files[c.file % files.length];
  const size0 = typeof c.size === "number" ? c.size : 0;
  let mmapOffset: number;
  if (c.mmapOffset === "end") mmapOffset = Math.max(0, file.size - Math.max(size0, 4096));
  else if (c.mmapOffset === "last-page") mmapOffset = Math.max(0, file.size - 4096);
  else mmapOffset = c.mmapOffset;
  let size: number;
  if (typeof c.size === "number") size = c.size;
  else if (file.size <= mmapOffset) size = 4096; // no rest: a page (refused for a file this short)
  else size = file.size - mmapOffset + (c.size === "rest+1" ? 1 : 0);
  return { gpa: c.gpa, size, uva: c.uva, mmapOffset, fd: file.fd, file };
}

function expectedError(e: unknown): boolean {
  return e instanceof GuestMemoryError || e instanceof SysError;
}

/** What the checks need to know about a new table. */
interface CheckContext {
  enforcesSealing: boolean;
  allowUnsealed: boolean;
  /** The spec each region was mapped from (regions are shared by derived tables). */
  specs: WeakMap<GuestRegion, Resolved>;
}

const key = (r: { gpa: number; size: number; uva: number }) => `${r.gpa}:${r.size}:${r.uva}`;

/**
 * Check a table just made from `added` (the specs it mapped, its last
 * regions; the others it shares with the table it came from): regions
 * mapped, within their files, sealed when required.
 */
function checkNewTable(
  table: GuestMemory,
  added: readonly Resolved[],
  ctx: CheckContext,
  what: string,
): void {
  const fresh = table.regions.slice(table.regions.length - added.length);
  fresh.forEach((r, i) => ctx.specs.set(r, added[i]));
  const ranges = mappedRanges();
  table.regions.forEach((r, i) => {
    const spec = ctx.specs.get(r);
    if (!spec) throw new InvariantBroken(`${what}: region ${i} (${key(r)}) was never asked for`);
    if (r.bytes.length !== r.size) {
      throw new InvariantBroken(`${what}: region ${i} views ${r.bytes.length} of ${r.size} bytes`);
    }
    if (!covered(ranges, r.address, r.address + r.size)) {
      throw new InvariantBroken(
        `${what}: region ${i} host range 0x${r.address.toString(16)}+${r.size} is not mapped`,
      );
    }
    const st = fstat(spec.fd);
    const regular = (st.mode & S_IFMT) === S_IFREG;
    if (regular && st.size < spec.mmapOffset + spec.size) {
      // Touching the tail would raise SIGBUS; the table must not exist.
      throw new InvariantBroken(
        `${what}: region ${i} needs ${spec.mmapOffset + spec.size} bytes of a ${st.size}-byte file`,
      );
    }
    if (ctx.enforcesSealing) {
      if (!regular) {
        throw new InvariantBroken(
          `${what}: region ${i} is backed by a ${spec.file.spec.kind}, not a regular file`,
        );
      }
      if (!ctx.allowUnsealed) {
        let seals = 0;
        try {
          seals = fcntl(spec.fd, F_GET_SEALS);
        } catch {
          seals = 0;
        }
        if ((seals & Seal.SHRINK) === 0) {
          throw new InvariantBroken(
            `${what}: region ${i}'s ${spec.file.spec.kind} can still shrink (seals 0x${
              seals.toString(16)
            })`,
          );
        }
      }
    }
    touch(r.bytes);
  });
}

/** Read and write back the first and last byte: a view past its mapping would fault here. */
function touch(b: Uint8Array): void {
  if (b.length === 0) return;
  const first = b[0], last = b[b.length - 1];
  b[0] = first;
  b[b.length - 1] = last;
}

/** What a case exercised. */
export interface MemoryCaseStats {
  /** Tables made (map, with, without), not counting the empty one. */
  tables: number;
  /** Translations answered (not refused). */
  translations: number;
}

function probe(table: GuestMemory, q: Query, at: string, stats: MemoryCaseStats): void {
  const regions = table.closed ? [] : table.regions;
  const check = (answer: Answer) => {
    const problem = translationProblem(regions, q, answer);
    if (problem) throw new InvariantBroken(`${at}: ${problem}`);
  };
  const gpaQuery: Query = { ...q, space: "gpa" };
  const findProblem = translationProblem(regions, gpaQuery, {
    call: "find",
    index: table.find(q.address, q.length),
  });
  if (findProblem) throw new InvariantBroken(`${at}: ${findProblem}`);
  const attempt = (call: string, fn: () => Answer) => {
    let answer: Answer;
    try {
      answer = fn();
    } catch (e) {
      if (!(e instanceof GuestMemoryError)) {
        throw new InvariantBroken(`${at}: ${call} threw ${describeError(e)}`);
      }
      // Refused: no region may hold a range that is a valid request of this space.
      const i = holder(regions, q);
      if (i !== -1) {
        throw new InvariantBroken(`${at}: ${call} refused a range region ${i} holds: ${e.message}`);
      }
      return;
    }
    check(answer);
    stats.translations++;
    if (answer.call === "bytes") touch(answer.bytes);
  };
  if (q.space === "gpa") {
    attempt("bytes", () => ({ call: "bytes", bytes: table.bytes(q.address, q.length) }));
    attempt(
      "hostAddress",
      () => ({ call: "hostAddress", address: table.hostAddress(q.address, q.length) }),
    );
  } else {
    attempt("uvaToGpa", () => ({ call: "uvaToGpa", gpa: table.uvaToGpa(q.address, q.length) }));
  }
}

function queryOf(
  table: GuestMemory,
  op: Extract<MemoryCase["ops"][number], { op: "probe" }>,
): Query {
  const regions = table.closed ? [] : table.regions;
  const r = regions.length ? regions[op.region % regions.length] : undefined;
  if (!r || op.where === "raw") return { space: op.space, address: op.offset, length: op.length };
  const base = r[op.space], end = base + r.size;
  const len = Number.isSafeInteger(op.length) && op.length >= 0 ? op.length : 1;
  const address = {
    start: base,
    inside: base + op.offset % r.size,
    tail: end - Math.min(len, r.size),
    straddle: end - Math.max(1, Math.floor(len / 2)),
    past: end,
    before: base - 1,
  }[op.where];
  return { space: op.space, address, length: op.length };
}

/**
 * Check one memory case; throws {@linkcode InvariantBroken}. The caller
 * checks mappings and fds against its baseline afterwards.
 */
export function checkMemoryCase(c: MemoryCase, enforcesSealing: boolean): MemoryCaseStats {
  const stats: MemoryCaseStats = { tables: 0, translations: 0 };
  const pool = new FdPool();
  const tables: GuestMemory[] = [GuestMemory.empty()];
  const leases: MemoryLease[] = [];
  const options: MapOptions = { allowUnsealed: c.allowUnsealed, maxBytes: c.maxBytes };
  try {
    const files: CaseFile[] = c.files.map((spec) => ({ spec, ...pool.make(spec) }));
    const ctx: CheckContext = {
      enforcesSealing,
      allowUnsealed: c.allowUnsealed,
      specs: new WeakMap(),
    };
    const first = c.regions.map((r) => resolveRegion(files, r));
    try {
      const t = GuestMemory.map(first, options);
      tables.push(t);
      stats.tables++;
      checkNewTable(t, first, ctx, "map");
    } catch (e) {
      if (e instanceof InvariantBroken) throw e;
      if (!expectedError(e)) throw new InvariantBroken(`map threw ${describeError(e)}`);
    }
    c.ops.forEach((op, step) => {
      // Counted from the newest table, so that small (and shrunk) indexes hit real tables.
      const index = tables.length - 1 - op.table % tables.length;
      const table = tables[index];
      const at = `op ${step} (${op.op} on table ${index})`;
      switch (op.op) {
        case "probe":
          probe(table, queryOf(table, op), at, stats);
          return;
        case "with": {
          const r = resolveRegion(files, op.region);
          try {
            const t = table.with(r, options);
            tables.push(t);
            stats.tables++;
            checkNewTable(t, [r], ctx, at);
          } catch (e) {
            if (e instanceof InvariantBroken) throw e;
            if (!expectedError(e)) {
              throw new InvariantBroken(`${at}: with threw ${describeError(e)}`);
            }
            if (table.closed && !(e instanceof GuestMemoryError)) {
              throw new InvariantBroken(
                `${at}: with on a closed table threw ${describeError(e)}`,
              );
            }
          }
          return;
        }
        case "without": {
          const regions = table.closed ? [] : table.regions;
          const r = regions[op.pick % Math.max(1, regions.length)];
          const gpa = r ? r.gpa : op.pick * 4096,
            size = r ? (op.exact ? r.size : r.size + 1) : 4096;
          try {
            const t = table.without(gpa, size);
            tables.push(t);
            stats.tables++;
            if (!r || !op.exact) {
              throw new InvariantBroken(`${at}: removed a region that is not in the table`);
            }
            if (t.regions.length !== regions.length - 1) {
              throw new InvariantBroken(
                `${at}: ${t.regions.length} regions left of ${regions.length}`,
              );
            }
          } catch (e) {
            if (e instanceof InvariantBroken) throw e;
            if (!(e instanceof GuestMemoryError)) {
              throw new InvariantBroken(`${at}: without threw ${describeError(e)}`);
            }
            if (r && op.exact && !table.closed) {
              throw new InvariantBroken(`${at}: refused to remove region ${key(r)}`);
            }
          }
          return;
        }
        case "lease": {
          // A lease keeps the mappings after the table closes, until released.
          let lease: MemoryLease;
          try {
            lease = table.lease();
          } catch (e) {
            if (e instanceof GuestMemoryError && table.closed) return;
            throw new InvariantBroken(`${at}: lease threw ${describeError(e)}`);
          }
          leases.push(lease);
          table.close();
          const ranges = mappedRanges();
          for (const r of lease.regions) {
            if (!covered(ranges, r.address, r.address + r.size)) {
              throw new InvariantBroken(`${at}: leased region at gpa ${r.gpa} was unmapped`);
            }
          }
          return;
        }
        case "close":
          table.close();
          if (table.find(0, 0) !== -1 || table.regions.some((r) => table.find(r.gpa, 1) !== -1)) {
            throw new InvariantBroken(`${at}: a closed table still translates`);
          }
          return;
      }
    });
  } finally {
    for (const t of tables) t.close();
    for (const l of leases) l.release();
    pool.closeAll();
  }
  return stats;
}

/** Run the memory target: random tables over real files, for `numRuns` cases or `seconds`. */
export async function fuzzMemory(options: FuzzOptions): Promise<FuzzReport> {
  const enforcesSealing = sdkEnforcesSealing();
  const notes = enforcesSealing
    ? ["sealing enforced by the SDK: accepted memfds must be sealed against shrinking"]
    : ["the SDK accepts unsealable memfds: sealing invariant not checked"];
  const mapsBefore = guestMappingCount();
  const fdsBefore = openFdCount();
  const bytesBefore = mappedGuestBytes();
  let runs = 0;
  const property = fc.property(memoryCaseArb, (c) => {
    options.progress?.(++runs);
    try {
      checkMemoryCase(c, enforcesSealing);
    } catch (e) {
      if (e instanceof InvariantBroken) throw e;
      throw new InvariantBroken(`case threw ${describeError(e)}`);
    }
    const maps = guestMappingCount(), fds = openFdCount(), bytes = mappedGuestBytes();
    if (bytes !== bytesBefore) {
      throw new InvariantBroken(`the SDK counts ${bytes - bytesBefore} guest bytes still mapped`);
    }
    if (maps !== mapsBefore) {
      throw new InvariantBroken(
        `${maps - mapsBefore} file mapping(s) left after closing every table`,
      );
    }
    if (fds !== fdsBefore) {
      throw new InvariantBroken(`${fds - fdsBefore} fd(s) left after closing the case's files`);
    }
  });
  return await runProperty("memory", property, options, notes);
}
