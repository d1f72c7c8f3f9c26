/**
 * Fuzz target `ring`: the device side of a split virtqueue over arbitrary
 * guest memory (1 to 4 JavaScript-buffer regions with gaps, or adjacent)
 * and arbitrary ring contents (descriptor tables, indirect tables, avail
 * ring entries and index), driven through arbitrary sequences of `pop`,
 * `pushUsed`, `publishUsed`, `needsNotify` and notification toggles while
 * the "driver" rewrites the ring under it.
 *
 * The invariants are the ones a software device relies on when the guest
 * is hostile:
 *
 * - `pop` returns a chain whose every segment lies inside one region, or
 *   false with an empty chain, or throws `DescriptorChainError` (counted);
 *   never any other exception.
 * - A chain has at most `maxChainLength` buffer descriptors plus the
 *   indirect descriptor, and so a bounded number of segments; the walk
 *   terminates (a guarded chain throws if the walker goes past twice the
 *   ring size plus one, which the virtio rules never allow).
 * - Copying the whole chain in and out touches only those segments.
 *
 * @module
 */

import {
  DESCRIPTOR_CHAIN_ERROR_KINDS,
  DescriptorChain,
  DescriptorChainError,
  GuestMemory,
  SplitQueue,
  type SplitQueueCounters,
} from "@vhost-mdev/sdk";
import {
  type AddrChoice,
  type DescChoice,
  describeError,
  type FuzzOptions,
  type FuzzReport,
  InvariantBroken,
  type RingCase,
  ringCaseArb,
  runCheck,
} from "./arbitraries.ts";

/** The walker went further than any valid or invalid chain allows: it would not have stopped. */
class RunawayWalk extends Error {
  constructor(message: string) {
    super(message);
    this.name = "RunawayWalk";
  }
}

/** A region as the checks see it. */
export interface RegionBounds {
  /** Guest-physical address. */
  readonly gpa: number;
  /** Bytes. */
  readonly size: number;
}

/** What a valid chain may hold for a queue. */
export interface ChainLimits {
  /** Queue size. */
  num: number;
  /** Most buffer descriptors per chain. */
  maxChain: number;
}

/**
 * Why a chain that `pop` returned is not valid, or null. Every segment must
 * be non-empty and inside its region, with its address matching its region
 * offset; readable segments come first and the byte totals add up; the
 * descriptor and segment counts respect the queue's limits.
 */
export function chainProblem(
  regions: readonly RegionBounds[],
  chain: DescriptorChain,
  limits: ChainLimits,
): string | null {
  const { num, maxChain } = limits;
  if (!Number.isInteger(chain.head) || chain.head < 0 || chain.head >= num) {
    return `head ${chain.head} is not a descriptor index below ${num}`;
  }
  if (chain.descriptors < 1 || chain.descriptors > maxChain + 1) {
    return `chain walked ${chain.descriptors} descriptors; at most ${maxChain} buffers and one indirect`;
  }
  if (chain.count < 0 || chain.count > maxChain * regions.length) {
    return `chain has ${chain.count} segments; at most ${maxChain * regions.length} fit the limits`;
  }
  if (chain.readable < 0 || chain.readable > chain.count) {
    return `readable ${chain.readable} is not in 0..${chain.count}`;
  }
  let readable = 0, writable = 0;
  for (let s = 0; s < chain.count; s++) {
    const r = chain.regions[s], len = chain.lengths[s], off = chain.offsets[s];
    const region = regions[r];
    const what = `segment ${s} (region ${r}, offset ${off}, length ${len})`;
    if (region === undefined) return `${what}: no such region`;
    if (!(len > 0)) return `${what}: empty segment`;
    if (!Number.isSafeInteger(off) || off < 0 || off + len > region.size) {
      return `${what}: outside region ${r} of ${region.size} bytes`;
    }
    if (chain.addresses[s] !== region.gpa + off) {
      return `${what}: address ${chain.addresses[s]} is not region gpa ${region.gpa} + offset`;
    }
    if (s < chain.readable) readable += len;
    else writable += len;
  }
  if (readable !== chain.readableBytes || writable !== chain.writableBytes) {
    return `byte totals ${chain.readableBytes}/${chain.writableBytes} disagree with the segments ` +
      `(${readable}/${writable})`;
  }
  return null;
}

/**
 * A chain that throws `RunawayWalk` once the walker exceeds
 * `descriptorLimit` descriptors or `segmentLimit` segments: a walk that
 * would not have stopped fails the case instead of hanging it.
 */
export function guardedChain(descriptorLimit: number, segmentLimit: number): DescriptorChain {
  const chain = new DescriptorChain(4);
  let walked = 0;
  // `descriptors` is an own field: replacing it with an accessor sees every step of the walk.
  Object.defineProperty(chain, "descriptors", {
    get: () => walked,
    set: (v: number) => {
      if (v > descriptorLimit) {
        throw new RunawayWalk(`walker passed ${descriptorLimit} descriptors without stopping`);
      }
      walked = v;
    },
  });
  const add = chain.addSegment.bind(chain);
  chain.addSegment = (gpa, length, region, offset, writable) => {
    if (chain.count >= segmentLimit) {
      throw new RunawayWalk(`walker added more than ${segmentLimit} segments`);
    }
    add(gpa, length, region, offset, writable);
  };
  return chain;
}

/** Memory and views built from a case. */
interface Built {
  memory: GuestMemory;
  bytes: Uint8Array[];
  descAddr: number;
  availAddr: number;
  usedAddr: number;
  tableAddr: bigint[];
}

/**
 * Write `data` at guest-physical `gpa` into the regions' buffers (`b.bytes`,
 * one per region): what falls inside regions is written, the rest of a
 * hostile table is simply not there.
 */
export function writeMemory(
  b: { readonly bytes: readonly Uint8Array[] },
  regions: readonly RegionBounds[],
  gpa: bigint,
  data: Uint8Array,
): void {
  regions.forEach((r, i) => {
    const start = BigInt(r.gpa), end = BigInt(r.gpa + r.size);
    const from = gpa > start ? gpa : start;
    const to = gpa + BigInt(data.length) < end ? gpa + BigInt(data.length) : end;
    if (from >= to) return;
    b.bytes[i].set(data.subarray(Number(from - gpa), Number(to - gpa)), Number(from - start));
  });
}

/**
 * The 64-bit address an {@linkcode AddrChoice} stands for, for a buffer of
 * `len` bytes: relative to one of the case's regions, one of the indirect
 * tables at `tables` (0 when there is none), or raw.
 */
export function resolveAddress(
  c: { readonly regions: readonly RegionBounds[] },
  choice: AddrChoice,
  len: number,
  tables: readonly bigint[],
): bigint {
  if ("raw" in choice) return choice.raw;
  if ("table" in choice) return tables[choice.table % tables.length] ?? 0n;
  const r = c.regions[choice.region % c.regions.length];
  const end = r.gpa + r.size;
  switch (choice.where) {
    case "start":
      return BigInt(r.gpa);
    case "inside":
      return BigInt(r.gpa + choice.offset % r.size);
    case "tail":
      return BigInt(end - Math.min(len, r.size));
    case "straddle":
      return BigInt(end - Math.max(1, Math.floor(len / 2)));
    case "past":
      return BigInt(end);
    case "before":
      return r.gpa === 0 ? 2n ** 64n - 1n : BigInt(r.gpa - 1);
  }
}

function encodeDesc(
  c: RingCase,
  d: DescChoice,
  tables: readonly bigint[],
  tableLens: readonly number[],
): Uint8Array {
  const b = new Uint8Array(16);
  const v = new DataView(b.buffer);
  let len = d.len;
  if ("table" in d.addr && d.exactTableLen && tableLens.length) {
    len = tableLens[d.addr.table % tableLens.length];
  }
  v.setBigUint64(0, BigInt.asUintN(64, resolveAddress(c, d.addr, len, tables)), true);
  v.setUint32(8, len >>> 0, true);
  v.setUint16(12, d.flags & 0xffff, true);
  v.setUint16(14, d.next & 0xffff, true);
  return b;
}

/** Lay the case's memory out: indirect tables first, then the ring (which wins where they overlap). */
function build(c: RingCase): Built {
  const bytes = c.regions.map((r) => new Uint8Array(r.size));
  const memory = GuestMemory.fromBuffers(
    c.regions.map((r, i) => ({ gpa: r.gpa, bytes: bytes[i] })),
  );
  const home = c.regions[c.ring.region];
  const b: Built = {
    memory,
    bytes,
    descAddr: home.gpa + c.ring.desc,
    availAddr: home.gpa + c.ring.avail,
    usedAddr: home.gpa + c.ring.used,
    tableAddr: [],
  };
  const tableLens = c.tables.map((t) => t.entries.length * 16);
  b.tableAddr = c.tables.map((t, i) => resolveAddress(c, t.at, tableLens[i], []));
  c.tables.forEach((t, i) => {
    const data = new Uint8Array(tableLens[i]);
    t.entries.forEach((d, j) => data.set(encodeDesc(c, d, [], []), j * 16));
    writeMemory(b, c.regions, b.tableAddr[i], data);
  });
  const descs = new Uint8Array(16 * c.num);
  c.descriptors.forEach((d, i) => descs.set(encodeDesc(c, d, b.tableAddr, tableLens), i * 16));
  writeMemory(b, c.regions, BigInt(b.descAddr), descs);
  const avail = new Uint8Array(6 + 2 * c.num);
  const av = new DataView(avail.buffer);
  av.setUint16(0, c.avail.flags, true);
  av.setUint16(2, (c.options.lastAvailIdx + c.avail.idxDelta) & 0xffff, true);
  c.avail.ring.forEach((h, i) => av.setUint16(4 + 2 * i, h, true));
  av.setUint16(4 + 2 * c.num, c.avail.usedEvent, true);
  writeMemory(b, c.regions, BigInt(b.availAddr), avail);
  const used = new Uint8Array(4);
  new DataView(used.buffer).setUint16(2, c.usedIdx, true);
  writeMemory(b, c.regions, BigInt(b.usedAddr), used);
  return b;
}

function u16At(b: Built, regions: readonly RegionBounds[], gpa: number, value: number) {
  const data = new Uint8Array(2);
  new DataView(data.buffer).setUint16(0, value & 0xffff, true);
  writeMemory(b, regions, BigInt(gpa), data);
}

/**
 * Check one ring case; throws {@linkcode InvariantBroken} naming the
 * operation and what went wrong. Returns the queue's counters (what the
 * case exercised), or null when the ring was refused at construction.
 */
export function checkRingCase(c: RingCase): SplitQueueCounters | null {
  const b = build(c);
  const regions = b.memory.regions;
  const misaligned = c.ring.desc % 16 !== 0 || c.ring.avail % 2 !== 0 || c.ring.used % 4 !== 0;
  let q: SplitQueue;
  try {
    q = new SplitQueue(b.memory, {
      num: c.num,
      descAddr: b.descAddr,
      availAddr: b.availAddr,
      usedAddr: b.usedAddr,
    }, {
      lastAvailIdx: c.options.lastAvailIdx,
      eventIdx: c.options.eventIdx,
      indirect: c.options.indirect,
      maxChainLength: c.options.maxChainLength,
    });
  } catch (e) {
    // The constructor documents RangeError for a misplaced ring, and only that.
    if (e instanceof RangeError && misaligned) return null;
    throw new InvariantBroken(`SplitQueue constructor: ${describeError(e)}`);
  }
  if (misaligned) throw new InvariantBroken("SplitQueue accepted a misaligned ring");
  const maxChain = c.options.maxChainLength ?? c.num;
  const limits = { num: c.num, maxChain };
  const chain = guardedChain(2 * c.num + 2, (2 * c.num + 2) * regions.length);
  const readBuf = new Uint8Array(1 << 16);
  const writeBuf = new Uint8Array(1 << 16).fill(0xa5);
  let lastHead = -1;
  // Pushed but not yet published: publishUsed writes used.idx only then.
  let pending = false;
  c.ops.forEach((op, step) => {
    const at = `op ${step} (${op.op})`;
    switch (op.op) {
      case "pop": {
        const errors = q.counters.errors, chains = q.counters.chains;
        let got: boolean;
        try {
          got = q.pop(chain);
        } catch (e) {
          if (!(e instanceof DescriptorChainError)) {
            throw new InvariantBroken(`${at}: pop threw ${describeError(e)}`);
          }
          if (!DESCRIPTOR_CHAIN_ERROR_KINDS.includes(e.kind)) {
            throw new InvariantBroken(`${at}: unknown error kind ${e.kind}`);
          }
          if (q.counters.errors !== errors + 1) {
            throw new InvariantBroken(
              `${at}: ${e.kind} was counted ${q.counters.errors - errors} times`,
            );
          }
          if (chain.count !== 0) {
            throw new InvariantBroken(`${at}: failed chain kept ${chain.count} segments`);
          }
          if (e.head === -1 && e.kind !== "bad-index" && e.kind !== "bad-avail-idx") {
            throw new InvariantBroken(`${at}: ${e.kind} without a head`);
          }
          if (e.head !== -1 && !(e.head >= 0 && e.head < c.num)) {
            throw new InvariantBroken(`${at}: error head ${e.head} out of range`);
          }
          if (e.head >= 0) lastHead = e.head;
          return;
        }
        if (!got) {
          if (chain.count !== 0) {
            throw new InvariantBroken(`${at}: empty pop left ${chain.count} segments`);
          }
          return;
        }
        if (q.counters.chains !== chains + 1) throw new InvariantBroken(`${at}: chain not counted`);
        const problem = chainProblem(regions, chain, limits);
        if (problem) throw new InvariantBroken(`${at}: ${problem}`);
        lastHead = chain.head;
        try {
          const n = q.readChain(chain, readBuf);
          if (n !== Math.min(chain.readableBytes, readBuf.length)) {
            throw new InvariantBroken(
              `${at}: readChain copied ${n} of ${chain.readableBytes} bytes`,
            );
          }
          const w = q.writeChain(chain, writeBuf);
          if (w !== Math.min(chain.writableBytes, writeBuf.length)) {
            throw new InvariantBroken(
              `${at}: writeChain wrote ${w} of ${chain.writableBytes} bytes`,
            );
          }
        } catch (e) {
          if (e instanceof InvariantBroken) throw e;
          throw new InvariantBroken(`${at}: copying the chain threw ${describeError(e)}`);
        }
        return;
      }
      case "push": {
        const head = op.head === "last" ? lastHead : op.head;
        if (op.head === "last" && head < 0) return;
        const valid = Number.isInteger(head) && head >= 0 && head < c.num;
        try {
          q.pushUsed(head, op.len);
        } catch (e) {
          if (e instanceof RangeError && !valid) return;
          throw new InvariantBroken(`${at}: pushUsed(${head}) threw ${describeError(e)}`);
        }
        if (!valid) throw new InvariantBroken(`${at}: pushUsed accepted head ${head}`);
        pending = true;
        return;
      }
      case "publish": {
        q.publishUsed();
        if (!pending) return;
        pending = false;
        // Chains may overlap the used ring (a hostile guest), so only the store just made is checked.
        const home = b.bytes[c.ring.region];
        const idx = new DataView(home.buffer).getUint16(c.ring.used + 2, true);
        if (idx !== q.usedIdx) {
          throw new InvariantBroken(`${at}: used.idx ${idx}, queue says ${q.usedIdx}`);
        }
        return;
      }
      case "notify":
        if (typeof q.needsNotify() !== "boolean") throw new InvariantBroken(`${at}: not a boolean`);
        return;
      case "enable":
        if (typeof q.enableNotifications() !== "boolean") {
          throw new InvariantBroken(`${at}: not a boolean`);
        }
        return;
      case "disable":
        q.disableNotifications();
        return;
      case "avail-idx":
        u16At(b, regions, b.availAddr + 2, q.lastAvailIdx + op.delta);
        return;
      case "avail-entry":
        u16At(b, regions, b.availAddr + 4 + 2 * op.slot, op.head);
        return;
      case "desc":
        writeMemory(
          b,
          regions,
          BigInt(b.descAddr + 16 * op.index),
          encodeDesc(c, op.desc, b.tableAddr, c.tables.map((t) => t.entries.length * 16)),
        );
        return;
    }
  });
  return q.counters;
}

/** Run the ring target: random rings and operations, for `numRuns` cases or `seconds`. */
export function fuzzRing(options: FuzzOptions): Promise<FuzzReport> {
  return runCheck("ring", ringCaseArb, checkRingCase, options);
}
