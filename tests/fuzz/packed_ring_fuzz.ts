/**
 * Fuzz target `packed-ring`: the device side of a packed virtqueue
 * (`PackedQueue`, virtio 1.2 §2.8) over arbitrary guest memory (1 to 4
 * JavaScript-buffer regions with gaps, or adjacent) and arbitrary ring
 * contents: 16-byte descriptors (address, length, buffer ID, flags), mostly
 * available for the lap the device reaches them in so that chains, chains
 * across the ring's end and indirect tables (inside and outside memory,
 * nested) get walked; driver and device event suppression areas; any start
 * position and wrap counters; `EVENT_IDX` and `INDIRECT_DESC` negotiated or
 * not. The device runs arbitrary sequences of `pop`, `popWritable`,
 * `pushUsed` (of buffer IDs it holds and, sometimes, IDs it does not),
 * `pushUsedInOrder`, `publishUsed`, `needsNotify`, notification toggles,
 * `available` and `position`, while the "driver" rewrites descriptors under
 * it, including making an ID available again while the device holds it.
 *
 * The invariants are the ones a software device relies on when the guest
 * is hostile:
 *
 * - `pop` returns true with a chain whose every segment lies inside one
 *   region, or false with an empty chain (and then the descriptor at the
 *   device's position is not available, §2.8.1), or throws
 *   `DescriptorChainError` (counted in `errors` and `byKind[kind]`); never
 *   any other exception. The walk terminates (a guarded chain throws if the
 *   walker goes past twice the ring size plus one descriptors).
 * - A pop that takes or refuses a chain moves the available position over
 *   1 to `num` available descriptors, each but the last with `NEXT`
 *   (§2.8.6); the chain's buffer ID is the last one's, and the error's
 *   `head` is that ID when it is below the queue size and not held, else -1.
 *   A returned chain took exactly as many ring descriptors as it walked
 *   (one for an indirect table).
 * - An indirect table (§2.8.7, §2.8.19) is walked only with
 *   `INDIRECT_DESC`, from a lone `INDIRECT` descriptor, when it is a
 *   positive multiple of 16 bytes inside one region, entry by entry, and
 *   never when an entry is itself `INDIRECT`; without a table, no
 *   descriptor taken has `INDIRECT`.
 * - `popWritable` never throws; it takes at most `max` consecutive
 *   available one-descriptor writable chains, each as its descriptor says
 *   (ID, address, length), inside its region, at least `minLength` bytes,
 *   its ID not in flight before. (Where it stops early is its own choice:
 *   `pop` takes the rest.)
 * - The device never holds the same buffer ID twice: after every operation
 *   the IDs the model says the device holds are exactly those with
 *   `descriptorsOf(id) > 0`, each with the ring descriptors its chain took;
 *   neither pop hands out an ID the model says is held (such an ID made
 *   available again is refused as `bad-index`, head -1).
 * - `pushUsed`/`pushUsedInOrder` of held IDs never throw and move the used
 *   position over the ring descriptors the buffers took (§2.8.8 for the
 *   in-order batch); of IDs not held they throw RangeError and change
 *   nothing.
 * - `publishUsed` makes every used descriptor pushed since the last publish
 *   visible: its ID, its length, and `AVAIL` and `USED` both equal to the
 *   device's wrap counter when it was pushed (§2.8.1), where no hostile
 *   write to the ring came in between.
 * - `needsNotify` follows the driver's event suppression (§2.8.10): never
 *   with `DISABLE`; always with `ENABLE`, or `DESC` without `EVENT_IDX`;
 *   with `DESC` and `EVENT_IDX`, exactly when the used descriptors written
 *   since the last call (fewer than a ring's worth) cover the event offset.
 * - `enableNotifications`/`disableNotifications` write the device's event
 *   flags; `enableNotifications` and `available` say whether the
 *   descriptor at the device's position is available.
 * - `position()` stays a valid position (indexes below `num`) that
 *   `lastAvailIdx`, `usedIdx` and `availBefore` encode; the used position is
 *   where the model's used descriptors put it.
 *
 * @module
 */

import {
  DESCRIPTOR_CHAIN_ERROR_KINDS,
  DescriptorChainError,
  type DescriptorChainErrorKind,
  encodePackedIndex,
  GuestMemory,
  PackedQueue,
  RING_EVENT_FLAGS_DESC,
  RING_EVENT_FLAGS_DISABLE,
  RING_EVENT_FLAGS_ENABLE,
  type SplitQueueCounters,
  VIRTQ_DESC_F_AVAIL,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_USED,
  VIRTQ_DESC_F_WRITE,
  WritableBuffers,
} from "@vhost-mdev/sdk";
import {
  type AddrChoice,
  addrChoiceArb,
  descLenArb,
  describeError,
  fc,
  flagBitsArb,
  type FuzzOptions,
  type FuzzReport,
  InvariantBroken,
  type RingRegion,
  ringRegionsArb,
  runCheck,
} from "./arbitraries.ts";
import { chainProblem, guardedChain, resolveAddress, writeMemory } from "./ring_fuzz.ts";

// ---------------------------------------------------------------------------
// Cases

/** A buffer ID as an operation names it: one the device holds, one it does not, or any number. */
export type IdChoice =
  | {
    /** The n-th (modulo their count) of the IDs the device holds, in the order it took them. */
    held: number;
  }
  | {
    /** The n-th (modulo their count) of the IDs below the queue size the device does not hold. */
    free: number;
  }
  | {
    /** This number (for a descriptor: its low 16 bits). */
    raw: number;
  };

/** A descriptor's buffer ID: as {@linkcode IdChoice}, or its slot's index (unique, as a simple driver numbers them). */
export type DescIdChoice = IdChoice | { slot: true };

/**
 * Which lap a descriptor's `AVAIL`/`USED` flags are for (§2.8.1): `fresh`,
 * available in the lap the device reaches its slot in; `stale`, the other
 * lap's; `used`, both set; `none`, neither. Only `fresh` is available.
 */
export type WrapChoice = "fresh" | "stale" | "used" | "none";

/** One descriptor of the ring as generated. */
export interface PackedDescChoice {
  /** Where its buffer (or indirect table) is. */
  addr: AddrChoice;
  /** `len`; for an indirect descriptor, usually its table's size. */
  len: number;
  /** Buffer ID (the last descriptor of a chain carries the chain's). */
  id: DescIdChoice;
  /** `NEXT`/`WRITE`/`INDIRECT` (sometimes garbage); `AVAIL` and `USED` come from `wrap`. */
  flags: number;
  /** Its wrap flags. */
  wrap: WrapChoice;
  /** For an indirect descriptor: use the table's exact byte length. */
  exactTableLen: boolean;
  /** Moved (or shortened) to lie inside the region it starts in, unless placed across an edge on purpose. */
  fit: boolean;
}

/** One descriptor of an indirect table (§2.8.19: only `WRITE` counts, the ID is ignored). */
export interface PackedTableEntry {
  /** Where its buffer is. */
  addr: AddrChoice;
  /** `len`. */
  len: number;
  /** Buffer ID field (reserved). */
  id: number;
  /** Flags: mostly none or `WRITE`, sometimes `INDIRECT` (nested), sometimes garbage. */
  flags: number;
  /** As {@linkcode PackedDescChoice.fit}. */
  fit: boolean;
}

/** An event suppression area's contents (§2.8.10). */
export interface EventChoice {
  /** Descriptor ring offset (bits 0-14 of `off_wrap`), or with `ahead` descriptors past the device's used position. */
  off: number;
  /** Wrap counter (bit 15 of `off_wrap`); with `ahead`, the lap's. */
  wrap: boolean;
  /** `off` is relative to the used position, as a driver asks to hear of its next used buffers. */
  ahead: boolean;
  /** `flags`: ENABLE, DISABLE, DESC, reserved, or garbage in the upper bits. */
  flags: number;
}

/** An operation of the device, or of the driver under it. */
export type PackedOp =
  | { op: "pop" }
  /** `minLength` as given, or the length of the descriptor at the device's position plus `near`. */
  | { op: "pop-writable"; at: number; max: number; minLength: number | { near: number } }
  | { op: "push"; id: IdChoice; len: number }
  /** `ids` as chosen, or the first `first` IDs held (a batch as `VIRTIO_F_IN_ORDER` returns it). */
  | { op: "push-in-order"; ids: IdChoice[] | { first: number }; count: number | "all"; len: number }
  | { op: "publish" }
  | { op: "notify" }
  | { op: "enable" }
  | { op: "disable" }
  | { op: "available" }
  | { op: "position"; back: number }
  /** The driver writes descriptors at the device's position plus `ahead` (linked: one chain). */
  | { op: "desc"; ahead: number; descs: PackedDescChoice[]; linked: boolean }
  | { op: "driver-event"; event: EventChoice };

/** A packed ring over arbitrary memory and contents, and what the device does with it. */
export interface PackedRingCase {
  /** 1 to 4 regions sorted by address, with gaps (0 = adjacent). */
  regions: RingRegion[];
  /** Queue size (need not be a power of two). */
  num: number;
  /** Region holding the ring, and byte offsets of its three areas (aligned unless misplaced on purpose). */
  ring: { region: number; desc: number; driver: number; device: number };
  /** Descriptor ring contents. */
  descriptors: PackedDescChoice[];
  /** Indirect tables written into memory (before the ring, which wins where they overlap). */
  tables: { at: AddrChoice; entries: PackedTableEntry[]; sorted: boolean; fit: boolean }[];
  /** The driver event suppression area. */
  driverEvent: EventChoice;
  /** Where the device starts: indexes (valid or not) and wrap counters. */
  position: { availIdx: number; availWrap: boolean; usedIdx: number; usedWrap: boolean };
  /** Queue options. */
  options: { eventIdx: boolean; indirect: boolean; maxChainLength?: number };
  /** What the device and the driver do. */
  ops: PackedOp[];
}

const BOTH = VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED;

/** Bytes the ring's three areas need for a queue of `num`, with room for skew and gaps. */
function packedRingBytes(num: number): number {
  return 16 * num + 128;
}

const wrapArb: fc.Arbitrary<WrapChoice> = fc.oneof(
  { arbitrary: fc.constant("fresh" as const), weight: 12 },
  { arbitrary: fc.constantFrom("stale" as const, "used" as const, "none" as const), weight: 2 },
);

/** `heldWeight`: how often (in 11) the ID is one the device holds, made available again. */
function descIdArb(num: number, heldWeight: number): fc.Arbitrary<DescIdChoice> {
  return fc.oneof(
    { arbitrary: fc.constant({ slot: true as const }), weight: 8 - heldWeight },
    { arbitrary: fc.record({ free: fc.nat(63) }), weight: 2 },
    { arbitrary: fc.record({ held: fc.nat(63) }), weight: heldWeight },
    {
      arbitrary: fc.record({
        raw: fc.oneof(fc.constantFrom(num, num + 1, 0x7fff, 0x8000, 0xffff), fc.nat(0xffff)),
      }),
      weight: 1,
    },
  );
}

function pushIdArb(num: number): fc.Arbitrary<IdChoice> {
  return fc.oneof(
    { arbitrary: fc.record({ held: fc.nat(63) }), weight: 8 },
    { arbitrary: fc.record({ free: fc.nat(63) }), weight: 1 },
    {
      arbitrary: fc.record({
        raw: fc.constantFrom(-1, -0, num, 0xffff, 0.5, Number.NaN, 2 ** 32),
      }),
      weight: 1,
    },
  );
}

/** A receive ring's descriptors are mostly single device-writable buffers. */
type Style = "mixed" | "rx";

/** A buffer descriptor's flags: NEXT and WRITE, or (rx) WRITE alone; rarely anything (INDIRECT included). */
function descFlagsArb(style: Style): fc.Arbitrary<number> {
  return fc.oneof(
    {
      arbitrary: style === "rx" ? fc.constant(VIRTQ_DESC_F_WRITE) : fc.constantFrom(
        0,
        VIRTQ_DESC_F_NEXT,
        VIRTQ_DESC_F_WRITE,
        VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE,
      ),
      weight: 8,
    },
    { arbitrary: flagBitsArb, weight: 1 },
  );
}

/** Where a buffer is: half the time at the start, inside or at the tail of a region; else anywhere. */
function bufferAddrArb(tables: number): fc.Arbitrary<AddrChoice> {
  return fc.oneof(
    {
      arbitrary: fc.record({
        region: fc.nat(3),
        where: fc.constantFrom("start" as const, "inside" as const, "tail" as const),
        offset: fc.nat(),
      }),
      weight: 1,
    },
    { arbitrary: addrChoiceArb(tables), weight: 1 },
  );
}

const fitArb: fc.Arbitrary<boolean> = fc.oneof(
  { arbitrary: fc.constant(true), weight: 6 },
  { arbitrary: fc.constant(false), weight: 1 },
);

/**
 * A ring descriptor: mostly a buffer; with indirect tables, sometimes an
 * indirect descriptor (`INDIRECT` alone, usually) pointing at one of them
 * (§2.8.19), so that whole tables get walked.
 */
function packedDescArb(
  num: number,
  tables: number,
  style: Style,
  heldWeight = 2,
): fc.Arbitrary<PackedDescChoice> {
  const buffer = fc.record({
    addr: bufferAddrArb(tables),
    len: descLenArb,
    id: descIdArb(num, heldWeight),
    flags: descFlagsArb(style),
    wrap: wrapArb,
    exactTableLen: fc.oneof(
      { arbitrary: fc.constant(true), weight: 4 },
      { arbitrary: fc.constant(false), weight: 1 },
    ),
    fit: fitArb,
  });
  if (tables === 0) return buffer;
  const indirect = fc.record({
    addr: fc.record({ table: fc.nat(tables - 1) }),
    len: descLenArb,
    id: descIdArb(num, heldWeight),
    flags: fc.oneof(
      { arbitrary: fc.constant(VIRTQ_DESC_F_INDIRECT), weight: 6 },
      { arbitrary: flagBitsArb.map((f) => f | VIRTQ_DESC_F_INDIRECT), weight: 1 },
    ),
    wrap: wrapArb,
    exactTableLen: fc.oneof(
      { arbitrary: fc.constant(true), weight: 8 },
      { arbitrary: fc.constant(false), weight: 1 },
    ),
    fit: fc.constant(false),
  });
  return fc.oneof({ arbitrary: buffer, weight: 5 }, { arbitrary: indirect, weight: 1 });
}

const tableEntryArb: fc.Arbitrary<PackedTableEntry> = fc.record({
  addr: bufferAddrArb(0),
  len: descLenArb,
  id: fc.nat(0xffff),
  flags: fc.oneof(
    { arbitrary: fc.constantFrom(0, VIRTQ_DESC_F_WRITE), weight: 16 },
    { arbitrary: fc.constant(VIRTQ_DESC_F_INDIRECT), weight: 1 },
    { arbitrary: fc.nat(0xffff), weight: 1 },
  ),
  fit: fitArb,
});

function eventArb(num: number): fc.Arbitrary<EventChoice> {
  return fc.record({
    off: fc.oneof({ arbitrary: fc.nat(num - 1), weight: 4 }, {
      arbitrary: fc.nat(0x7fff),
      weight: 1,
    }),
    wrap: fc.boolean(),
    ahead: fc.oneof({ arbitrary: fc.constant(true), weight: 2 }, {
      arbitrary: fc.constant(false),
      weight: 1,
    }),
    flags: fc.oneof(
      {
        arbitrary: fc.constantFrom(
          RING_EVENT_FLAGS_ENABLE,
          RING_EVENT_FLAGS_DISABLE,
          RING_EVENT_FLAGS_DESC,
          RING_EVENT_FLAGS_DESC,
          3,
        ),
        weight: 6,
      },
      { arbitrary: fc.nat(0xffff), weight: 1 },
    ),
  });
}

const usedLenArb: fc.Arbitrary<number> = fc.oneof(fc.nat(4096), fc.constant(0xffffffff));

function packedOpArb(num: number, tables: number, style: Style): fc.Arbitrary<PackedOp> {
  return fc.oneof(
    { arbitrary: fc.constant({ op: "pop" as const }), weight: 10 },
    {
      arbitrary: fc.record({
        op: fc.constant("pop-writable" as const),
        at: fc.nat(8),
        max: fc.oneof(fc.constant(num), fc.nat(num)),
        minLength: fc.oneof(
          { arbitrary: fc.constantFrom(0, 1, 14, 64, 1500), weight: 3 },
          { arbitrary: fc.nat(300), weight: 1 },
          { arbitrary: fc.record({ near: fc.constantFrom(-1, 0, 1) }), weight: 2 },
        ),
      }),
      weight: 5,
    },
    {
      arbitrary: fc.record({
        op: fc.constant("push" as const),
        id: pushIdArb(num),
        len: usedLenArb,
      }),
      weight: 6,
    },
    {
      arbitrary: fc.record({
        op: fc.constant("push-in-order" as const),
        ids: fc.oneof(
          { arbitrary: fc.record({ first: fc.integer({ min: 1, max: 4 }) }), weight: 3 },
          { arbitrary: fc.array(pushIdArb(num), { minLength: 1, maxLength: 5 }), weight: 1 },
        ),
        count: fc.oneof(
          { arbitrary: fc.constant("all" as const), weight: 4 },
          { arbitrary: fc.constantFrom(0, 1, 2, num + 1, 1.5), weight: 1 },
        ),
        len: usedLenArb,
      }),
      weight: 2,
    },
    { arbitrary: fc.constant({ op: "publish" as const }), weight: 4 },
    { arbitrary: fc.constant({ op: "notify" as const }), weight: 3 },
    { arbitrary: fc.constant({ op: "enable" as const }), weight: 2 },
    { arbitrary: fc.constant({ op: "disable" as const }), weight: 2 },
    { arbitrary: fc.constant({ op: "available" as const }), weight: 1 },
    {
      arbitrary: fc.record({ op: fc.constant("position" as const), back: fc.nat(num) }),
      weight: 1,
    },
    {
      arbitrary: fc.record({
        op: fc.constant("desc" as const),
        ahead: fc.oneof({ arbitrary: fc.constant(0), weight: 6 }, {
          arbitrary: fc.nat(num - 1),
          weight: 3,
        }),
        descs: fc.array(
          fc.oneof(packedDescArb(num, tables, style, 3), packedDescArb(num, tables, "rx", 3)),
          { minLength: 1, maxLength: 4 },
        ),
        linked: fc.oneof({ arbitrary: fc.constant(true), weight: 2 }, {
          arbitrary: fc.constant(false),
          weight: 1,
        }),
      }),
      weight: 6,
    },
    {
      arbitrary: fc.record({ op: fc.constant("driver-event" as const), event: eventArb(num) }),
      weight: 2,
    },
  );
}

/** Mostly `valid`, rarely one of `invalid` (which the constructor must refuse). */
function mostly<T>(valid: fc.Arbitrary<T>, ...invalid: T[]): fc.Arbitrary<T> {
  return fc.oneof({ arbitrary: valid, weight: 60 }, {
    arbitrary: fc.constantFrom(...invalid),
    weight: 1,
  });
}

/** A packed ring case: memory, ring placement and contents, start, options, and operations. */
export const packedRingCaseArb: fc.Arbitrary<PackedRingCase> = fc.record({
  num: fc.constantFrom(1, 2, 3, 4, 7, 8, 8, 16, 16, 64, 256),
  count: fc.integer({ min: 1, max: 4 }),
  tables: fc.nat(3),
  style: fc.constantFrom<Style>("mixed", "mixed", "rx"),
}).chain(({ num, count, tables, style }) =>
  fc.record({
    regions: ringRegionsArb(count, packedRingBytes(num)),
    skew: fc.nat(4),
    gaps: fc.tuple(fc.nat(3), fc.nat(3)),
    misplaced: mostly(
      fc.constant("none" as const),
      "desc" as const,
      "driver" as const,
      "device" as const,
    ),
    descriptors: fc.array(packedDescArb(num, tables, style), { minLength: num, maxLength: num }),
    tables: fc.array(
      fc.record({
        at: addrChoiceArb(0),
        entries: fc.oneof(
          { arbitrary: fc.array(tableEntryArb, { minLength: 1, maxLength: 4 }), weight: 3 },
          {
            arbitrary: fc.array(tableEntryArb, { minLength: 1, maxLength: Math.min(num + 2, 34) }),
            weight: 1,
          },
        ),
        sorted: fc.oneof(
          { arbitrary: fc.constant(true), weight: 3 },
          { arbitrary: fc.constant(false), weight: 1 },
        ),
        fit: fitArb,
      }),
      { minLength: tables, maxLength: tables },
    ),
    driverEvent: eventArb(num),
    position: fc.record({
      availIdx: mostly(fc.nat(num - 1), num, -1, 0.5),
      availWrap: fc.boolean(),
      // Mostly where the available position is: a fresh ring, or one resumed at rest.
      used: fc.oneof(
        { arbitrary: fc.constant(null), weight: 4 },
        {
          arbitrary: fc.record({ idx: mostly(fc.nat(num - 1), num, 0x8000), wrap: fc.boolean() }),
          weight: 2,
        },
      ),
    }),
    options: fc.record({
      eventIdx: fc.boolean(),
      indirect: fc.oneof({ arbitrary: fc.constant(true), weight: 2 }, {
        arbitrary: fc.constant(false),
        weight: 1,
      }),
      maxChainLength: mostly(
        fc.option(fc.integer({ min: 1, max: num }), { nil: undefined }),
        0,
        num + 1,
        1.5,
      ),
    }),
    ops: fc.array(packedOpArb(num, tables, style), { minLength: 1, maxLength: 50 }),
  }).map(({ regions: { regions, ringRegion }, skew, gaps, misplaced, position, ...rest }) => {
    // Descriptor ring (16-byte aligned), then the driver and device event areas (4-byte aligned).
    const desc = skew * 16 + (misplaced === "desc" ? 8 : 0);
    const driver = Math.ceil((desc + 16 * num) / 4) * 4 + 4 * gaps[0] +
      (misplaced === "driver" ? 2 : 0);
    const device = Math.ceil((driver + 4) / 4) * 4 + 4 * gaps[1] +
      (misplaced === "device" ? 2 : 0);
    const { availIdx, availWrap, used } = position;
    return {
      num,
      regions,
      ring: { region: ringRegion, desc, driver, device },
      position: {
        availIdx,
        availWrap,
        usedIdx: used === null ? availIdx : used.idx,
        usedWrap: used === null ? availWrap : used.wrap,
      },
      ...rest,
    };
  })
);

// ---------------------------------------------------------------------------
// Checks

/**
 * Error kinds a packed ring without a vIOMMU can raise: all but a split
 * ring's (`loop`, `bad-avail-idx`) and an IOTLB's (`access-denied`, `unmapped`).
 */
const PACKED_KINDS: readonly DescriptorChainErrorKind[] = DESCRIPTOR_CHAIN_ERROR_KINDS.filter(
  (k) => !["loop", "bad-avail-idx", "access-denied", "unmapped"].includes(k),
);

/** Memory and views built from a case. */
interface Built {
  memory: GuestMemory;
  bytes: Uint8Array[];
  /** The descriptor ring, 16 bytes a descriptor. */
  ring: DataView;
  driverEvent: DataView;
  deviceEvent: DataView;
  descAddr: number;
  driverAddr: number;
  deviceAddr: number;
  tableAddr: bigint[];
  tableLens: number[];
}

/** A used descriptor pushed and not yet published: where, what, and the wrap counter then. */
interface Pushed {
  slot: number;
  id: number;
  len: number;
  wrap: boolean;
}

/** A packed queue under test, the model of what it holds, and the memory it runs over. */
class Harness {
  readonly c: PackedRingCase;
  readonly b: Built;
  readonly num: number;
  readonly regions: readonly { gpa: number; size: number }[];
  /** Buffer IDs the device holds, in the order taken, with the ring descriptors each took. */
  readonly held = new Map<number, number>();

  constructor(c: PackedRingCase) {
    this.c = c;
    this.num = c.num;
    const bytes = c.regions.map((r) => new Uint8Array(r.size));
    const memory = GuestMemory.fromBuffers(
      c.regions.map((r, i) => ({ gpa: r.gpa, bytes: bytes[i] })),
    );
    this.regions = memory.regions;
    const home = c.regions[c.ring.region], homeBytes = bytes[c.ring.region];
    const view = (offset: number, length: number) =>
      new DataView(homeBytes.buffer, homeBytes.byteOffset + offset, length);
    this.b = {
      memory,
      bytes,
      ring: view(c.ring.desc, 16 * c.num),
      driverEvent: view(c.ring.driver, 4),
      deviceEvent: view(c.ring.device, 4),
      descAddr: home.gpa + c.ring.desc,
      driverAddr: home.gpa + c.ring.driver,
      deviceAddr: home.gpa + c.ring.device,
      tableAddr: [],
      tableLens: c.tables.map((t) => t.entries.length * 16),
    };
    const b = this.b;
    b.tableAddr = c.tables.map((t, i) =>
      this.fitted(t.at, resolveAddress(c, t.at, b.tableLens[i], []), b.tableLens[i], t.fit).addr
    );
    c.tables.forEach((t, i) => {
      const entries = t.sorted
        ? [...t.entries].sort((x, y) =>
          (x.flags & VIRTQ_DESC_F_WRITE) - (y.flags & VIRTQ_DESC_F_WRITE)
        )
        : t.entries;
      const data = new Uint8Array(b.tableLens[i]);
      const v = new DataView(data.buffer);
      entries.forEach((e, j) => {
        const { addr, len } = this.fitted(
          e.addr,
          resolveAddress(c, e.addr, e.len, []),
          e.len,
          e.fit,
        );
        v.setBigUint64(16 * j, BigInt.asUintN(64, addr), true);
        v.setUint32(16 * j + 8, len >>> 0, true);
        v.setUint16(16 * j + 12, e.id, true);
        v.setUint16(16 * j + 14, e.flags, true);
      });
      writeMemory(b, this.regions, b.tableAddr[i], data);
    });
    // A descriptor at or after the start is in the device's first lap, one before it in its second.
    const p = c.position;
    c.descriptors.forEach((d, i) => {
      const fresh = i >= p.availIdx ? p.availWrap : !p.availWrap;
      this.writeDesc(i, d, fresh, this.descId(d.id, i), null);
    });
    this.setEvent(c.driverEvent, this.lin(p.usedIdx, p.usedWrap));
  }

  /** Position `idx` with wrap counter `wrap` on the cycle of two laps: the wrap counter flips each lap. */
  lin(idx: number, wrap: boolean): number {
    return idx + (wrap ? 0 : this.num);
  }

  /** Slot and wrap counter of position `l` on the two-lap cycle. */
  at(l: number): { slot: number; wrap: boolean } {
    const m = ((l % (2 * this.num)) + 2 * this.num) % (2 * this.num);
    return { slot: m % this.num, wrap: m < this.num };
  }

  /** Steps from `from` to `to` on the two-lap cycle. */
  steps(from: number, to: number): number {
    return (((to - from) % (2 * this.num)) + 2 * this.num) % (2 * this.num);
  }

  /** Descriptor `slot`'s flags, as the ring holds them now. */
  flags(slot: number): number {
    return this.b.ring.getUint16(16 * slot + 14, true);
  }

  /** Descriptor `slot`'s buffer ID. */
  id(slot: number): number {
    return this.b.ring.getUint16(16 * slot + 12, true);
  }

  /** Descriptor `slot`'s length. */
  len(slot: number): number {
    return this.b.ring.getUint32(16 * slot + 8, true);
  }

  /** Descriptor `slot`'s 64-bit address. */
  addr(slot: number): bigint {
    return this.b.ring.getBigUint64(16 * slot, true);
  }

  /** Whether the descriptor at two-lap position `l` is available (§2.8.1). */
  isAvailable(l: number): boolean {
    const { slot, wrap } = this.at(l);
    const f = this.flags(slot);
    return ((f & VIRTQ_DESC_F_AVAIL) !== 0) === wrap && ((f & VIRTQ_DESC_F_USED) !== 0) !== wrap;
  }

  /**
   * Whether the descriptor at `l` is what `popWritable` takes: available,
   * one device-writable descriptor (no `NEXT`, no `INDIRECT`), its ID below
   * the queue size and not held, non-empty and at least `minLength` bytes,
   * inside one region.
   */
  simpleWritable(l: number, minLength: number): string | null {
    const { slot, wrap } = this.at(l);
    const f = this.flags(slot), id = this.id(slot), len = this.len(slot);
    const mask = BOTH | VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_WRITE;
    const want = (wrap ? VIRTQ_DESC_F_AVAIL : VIRTQ_DESC_F_USED) | VIRTQ_DESC_F_WRITE;
    if ((f & mask) !== want) return `flags 0x${f.toString(16)}`;
    if (id >= this.num) return `ID ${id} out of range`;
    if (this.held.has(id)) return `ID ${id} held`;
    if (len === 0 || len < minLength) return `length ${len}`;
    const a = this.addr(slot);
    const inside = this.regions.some((r) =>
      a >= BigInt(r.gpa) && a + BigInt(len) <= BigInt(r.gpa) + BigInt(r.size)
    );
    return inside ? null : `buffer 0x${a.toString(16)} + ${len} not inside one region`;
  }

  /**
   * With `fit`, a buffer placed at a region's start, inside it or at its
   * tail, moved back or shortened to lie inside that region (so that
   * chains get past their first descriptor); otherwise as it is.
   */
  fitted(
    choice: AddrChoice,
    addr: bigint,
    len: number,
    fit: boolean,
  ): { addr: bigint; len: number } {
    if (!fit || !("region" in choice) || !["start", "inside", "tail"].includes(choice.where)) {
      return { addr, len };
    }
    const r = this.regions.find((r) => addr >= BigInt(r.gpa) && addr < BigInt(r.gpa + r.size));
    if (r === undefined) return { addr, len };
    const end = BigInt(r.gpa + r.size);
    if (addr + BigInt(len) <= end) return { addr, len };
    if (len <= r.size) return { addr: end - BigInt(len), len };
    return { addr: BigInt(r.gpa), len: r.size };
  }

  /** Resolve a descriptor's ID choice against what the device holds now. */
  descId(choice: DescIdChoice, slot: number): number {
    if ("slot" in choice) return slot;
    return this.pickId(choice) ?? slot;
  }

  /** The ID an {@linkcode IdChoice} names; null when it names a held or free ID and there is none. */
  pickId(choice: IdChoice): number | null {
    if ("raw" in choice) return choice.raw;
    if ("held" in choice) {
      const ids = [...this.held.keys()];
      return ids.length ? ids[choice.held % ids.length] : null;
    }
    const free: number[] = [];
    for (let id = 0; id < this.num; id++) if (!this.held.has(id)) free.push(id);
    return free.length ? free[choice.free % free.length] : null;
  }

  /** Write descriptor `d` at `slot`, available for the lap with wrap counter `fresh`; `next` forces `NEXT` on or off. */
  writeDesc(slot: number, d: PackedDescChoice, fresh: boolean, id: number, next: boolean | null) {
    const { ring, tableAddr, tableLens } = this.b;
    let len = d.len;
    if ("table" in d.addr && d.exactTableLen && tableLens.length) {
      len = tableLens[d.addr.table % tableLens.length];
    }
    const fitted = this.fitted(d.addr, resolveAddress(this.c, d.addr, len, tableAddr), len, d.fit);
    const addr = fitted.addr;
    len = fitted.len;
    const wrapBits = {
      fresh: fresh ? VIRTQ_DESC_F_AVAIL : VIRTQ_DESC_F_USED,
      stale: fresh ? VIRTQ_DESC_F_USED : VIRTQ_DESC_F_AVAIL,
      used: BOTH,
      none: 0,
    }[d.wrap];
    let flags = (d.flags & ~BOTH & 0xffff) | wrapBits;
    if (next !== null) flags = next ? flags | VIRTQ_DESC_F_NEXT : flags & ~VIRTQ_DESC_F_NEXT;
    ring.setBigUint64(16 * slot, BigInt.asUintN(64, addr), true);
    ring.setUint32(16 * slot + 8, len >>> 0, true);
    ring.setUint16(16 * slot + 12, id & 0xffff, true);
    ring.setUint16(16 * slot + 14, flags, true);
  }

  /** Write the driver event area; `usedLin` is the device's used position (for `ahead`). */
  setEvent(e: EventChoice, usedLin: number) {
    const { slot, wrap } = e.ahead ? this.at(usedLin + e.off) : { slot: e.off, wrap: e.wrap };
    this.b.driverEvent.setUint16(0, (slot & 0x7fff) | (wrap ? 0x8000 : 0), true);
    this.b.driverEvent.setUint16(2, e.flags & 0xffff, true);
  }

  /** The u16 at guest-physical `gpa`, or null when no region holds it. */
  u16(gpa: bigint): number | null {
    const r = this.regions.findIndex((r) =>
      gpa >= BigInt(r.gpa) && gpa + 2n <= BigInt(r.gpa) + BigInt(r.size)
    );
    if (r < 0) return null;
    const bytes = this.b.bytes[r], at = Number(gpa - BigInt(this.regions[r].gpa));
    return bytes[at] | bytes[at + 1] << 8;
  }

  /** Whether guest-physical bytes `[gpa, gpa + len)` touch the descriptor ring. */
  touchesRing(gpa: number, len: number): boolean {
    return gpa < this.b.descAddr + 16 * this.num && gpa + len > this.b.descAddr;
  }
}

/**
 * Check one packed ring case; throws {@linkcode InvariantBroken} naming the
 * operation and what went wrong. Returns the queue's counters (what the
 * case exercised), or null when the ring was refused at construction.
 */
export function checkPackedRingCase(c: PackedRingCase): SplitQueueCounters | null {
  const h = new Harness(c);
  const { b, num, regions, held } = h;
  const p = c.position;
  const misplaced = c.ring.desc % 16 !== 0 || c.ring.driver % 4 !== 0 || c.ring.device % 4 !== 0;
  const badIndex = (v: number) => !(Number.isInteger(v) && v >= 0 && v < num);
  const maxChain = c.options.maxChainLength ?? num;
  const refuse = misplaced
    ? "a misaligned ring"
    : badIndex(p.availIdx) || badIndex(p.usedIdx)
    ? `position ${p.availIdx}/${p.usedIdx} in a ring of ${num}`
    : !(Number.isInteger(maxChain) && maxChain >= 1 && maxChain <= num)
    ? `maxChainLength ${maxChain}`
    : null;
  let q: PackedQueue;
  try {
    q = new PackedQueue(b.memory, {
      num,
      descAddr: b.descAddr,
      availAddr: b.driverAddr,
      usedAddr: b.deviceAddr,
    }, {
      position: p,
      eventIdx: c.options.eventIdx,
      indirect: c.options.indirect,
      maxChainLength: c.options.maxChainLength,
    });
  } catch (e) {
    // The constructor documents RangeError for a bad layout, position or limit, and only that.
    if (e instanceof RangeError && refuse !== null) return null;
    throw new InvariantBroken(`PackedQueue constructor: ${describeError(e)}`);
  }
  if (refuse !== null) throw new InvariantBroken(`PackedQueue accepted ${refuse}`);
  if (b.deviceEvent.getUint16(2, true) !== RING_EVENT_FLAGS_ENABLE) {
    throw new InvariantBroken("the device event area does not say ENABLE after construction");
  }
  const limits = { num, maxChain };
  const chain = guardedChain(2 * num + 2, (2 * num + 2) * regions.length);
  const out = new WritableBuffers(num + 8);
  const readBuf = new Uint8Array(1 << 16);
  const writeBuf = new Uint8Array(1 << 16).fill(0xa5);
  // The used position as the model has it, on the two-lap cycle.
  let usedLin = h.lin(p.usedIdx, p.usedWrap);
  // Pushed since the last publish, and the slots something else wrote since their push.
  let batch: Pushed[] = [];
  const dirty = new Set<number>();
  let allDirty = false;
  // The used position at the last needsNotify (null: none yet), and descriptors used since.
  let notified: number | null = null;
  let progress = 0;

  const availLin = () => {
    const pos = q.position();
    return h.lin(pos.availIdx, pos.availWrap);
  };
  const kindsOf = () => ({ ...q.counters.byKind });

  /** What holds after every operation: a valid position, and the in-flight table equal to the model. */
  const checkState = (at: string) => {
    const pos = q.position();
    if (badIndex(pos.availIdx) || badIndex(pos.usedIdx)) {
      throw new InvariantBroken(`${at}: position ${JSON.stringify(pos)} in a ring of ${num}`);
    }
    if (typeof pos.availWrap !== "boolean" || typeof pos.usedWrap !== "boolean") {
      throw new InvariantBroken(`${at}: wrap counters ${JSON.stringify(pos)}`);
    }
    if (
      q.lastAvailIdx !== encodePackedIndex(pos.availIdx, pos.availWrap) ||
      q.usedIdx !== encodePackedIndex(pos.usedIdx, pos.usedWrap)
    ) {
      throw new InvariantBroken(
        `${at}: lastAvailIdx 0x${q.lastAvailIdx.toString(16)}/usedIdx 0x${
          q.usedIdx.toString(16)
        } do not encode ${JSON.stringify(pos)}`,
      );
    }
    if (h.lin(pos.usedIdx, pos.usedWrap) !== usedLin) {
      const want = h.at(usedLin);
      throw new InvariantBroken(
        `${at}: used position ${pos.usedIdx} wrap ${pos.usedWrap}, expected ${want.slot} wrap ${want.wrap}`,
      );
    }
    for (let id = 0; id < num; id++) {
      const has = q.descriptorsOf(id), want = held.get(id) ?? 0;
      if (has !== want) {
        throw new InvariantBroken(
          `${at}: descriptorsOf(${id}) is ${has}, the device ${
            want ? `holds it with ${want} descriptors` : "does not hold it"
          }`,
        );
      }
    }
  };

  /** Account a used descriptor just pushed, for `descriptors` ring slots. */
  const pushed = (e: Pushed, descriptors: number) => {
    batch.push(e);
    dirty.delete(e.slot);
    usedLin = (usedLin + descriptors) % (2 * num);
    progress += descriptors;
  };

  const pop = (at: string) => {
    const l0 = availLin();
    const availableNow = h.isAvailable(l0);
    const errors = q.counters.errors, chains = q.counters.chains, kinds = kindsOf();
    let got = false;
    let err: DescriptorChainError | null = null;
    try {
      got = q.pop(chain);
    } catch (e) {
      if (!(e instanceof DescriptorChainError)) {
        throw new InvariantBroken(`${at}: pop threw ${describeError(e)}`);
      }
      err = e;
    }
    const adv = h.steps(l0, availLin());
    if (err === null && !got) {
      if (adv !== 0) throw new InvariantBroken(`${at}: pop returned false and moved ${adv}`);
      if (availableNow) {
        throw new InvariantBroken(
          `${at}: descriptor ${h.at(l0).slot} is available but pop returned false`,
        );
      }
      if (chain.count !== 0) {
        throw new InvariantBroken(`${at}: empty pop left ${chain.count} segments`);
      }
      if (q.counters.errors !== errors || q.counters.chains !== chains) {
        throw new InvariantBroken(`${at}: empty pop changed the counters`);
      }
      return;
    }
    const what = err === null ? "pop" : `pop (${err.kind})`;
    if (!availableNow) {
      throw new InvariantBroken(
        `${at}: ${what} took descriptor ${h.at(l0).slot}, which is not available (flags 0x${
          h.flags(h.at(l0).slot).toString(16)
        })`,
      );
    }
    if (adv < 1 || adv > num) {
      throw new InvariantBroken(`${at}: ${what} moved the available position ${adv}`);
    }
    // The run taken: available descriptors, each but the last continued by NEXT (§2.8.6).
    for (let j = 0; j < adv; j++) {
      const { slot } = h.at(l0 + j);
      if (!h.isAvailable(l0 + j)) {
        throw new InvariantBroken(`${at}: ${what} took descriptor ${slot}, not available`);
      }
      if (j < adv - 1 && (h.flags(slot) & VIRTQ_DESC_F_NEXT) === 0) {
        throw new InvariantBroken(
          `${at}: ${what} went past descriptor ${slot}, which has no NEXT`,
        );
      }
    }
    const last = h.at(l0 + adv - 1).slot;
    const lastNext = (h.flags(last) & VIRTQ_DESC_F_NEXT) !== 0;
    if (lastNext && adv < num && h.isAvailable(l0 + adv)) {
      throw new InvariantBroken(
        `${at}: ${what} stopped after descriptor ${last}, whose NEXT leads to an available one`,
      );
    }
    const id = h.id(last);
    const idProblem = id >= num
      ? `is not below ${num}`
      : held.has(id)
      ? "is held by the device"
      : null;
    if (err !== null) {
      if (!PACKED_KINDS.includes(err.kind)) {
        throw new InvariantBroken(`${at}: error kind ${err.kind} on a packed ring`);
      }
      if (q.counters.errors !== errors + 1 || q.counters.byKind[err.kind] !== kinds[err.kind] + 1) {
        throw new InvariantBroken(
          `${at}: ${err.kind} was counted ${q.counters.errors - errors} times (by kind ${
            q.counters.byKind[err.kind] - kinds[err.kind]
          })`,
        );
      }
      if (q.counters.chains !== chains) throw new InvariantBroken(`${at}: a failed chain counted`);
      if (chain.count !== 0) {
        throw new InvariantBroken(`${at}: failed chain kept ${chain.count} segments`);
      }
      const bound = err.inIndirectTable ? maxChain : num;
      if (!(err.descriptor >= 0 && err.descriptor < bound)) {
        throw new InvariantBroken(`${at}: ${err.kind} names descriptor ${err.descriptor}`);
      }
      const head = idProblem === null ? id : -1;
      if (err.head !== head) {
        throw new InvariantBroken(
          `${at}: ${err.kind} with head ${err.head}; the chain's ID ${id} ${
            idProblem ?? "is valid"
          }, so the head must be ${head}`,
        );
      }
      if (head >= 0) held.set(head, adv);
      return;
    }
    if (lastNext) {
      throw new InvariantBroken(
        `${at}: pop returned a chain ending in descriptor ${last} with NEXT`,
      );
    }
    if (idProblem !== null) {
      throw new InvariantBroken(`${at}: pop returned buffer ID ${id}, which ${idProblem}`);
    }
    if (chain.head !== id) {
      throw new InvariantBroken(
        `${at}: chain head ${chain.head}, the last descriptor's ID is ${id}`,
      );
    }
    if (q.counters.chains !== chains + 1 || q.counters.errors !== errors) {
      throw new InvariantBroken(`${at}: a chain was not counted once`);
    }
    const problem = chainProblem(regions, chain, limits);
    if (problem) throw new InvariantBroken(`${at}: ${problem}`);
    const ringDescriptors = chain.indirect ? 1 : chain.descriptors;
    if (adv !== ringDescriptors) {
      throw new InvariantBroken(
        `${at}: the chain walked ${chain.descriptors} descriptors${
          chain.indirect ? " (indirect)" : ""
        } but took ${adv} of the ring`,
      );
    }
    const tableProblem = indirectProblem(l0, adv);
    if (tableProblem) throw new InvariantBroken(`${at}: ${tableProblem}`);
    held.set(id, adv);
    try {
      const n = q.readChain(chain, readBuf);
      if (n !== Math.min(chain.readableBytes, readBuf.length)) {
        throw new InvariantBroken(`${at}: readChain copied ${n} of ${chain.readableBytes} bytes`);
      }
      const w = q.writeChain(chain, writeBuf);
      if (w !== Math.min(chain.writableBytes, writeBuf.length)) {
        throw new InvariantBroken(`${at}: writeChain wrote ${w} of ${chain.writableBytes} bytes`);
      }
    } catch (e) {
      if (e instanceof InvariantBroken) throw e;
      throw new InvariantBroken(`${at}: copying the chain threw ${describeError(e)}`);
    }
    // A hostile chain may lie over the ring: what it wrote there is not the device's.
    for (let s = chain.readable; s < chain.count; s++) {
      if (h.touchesRing(chain.addresses[s], chain.lengths[s])) allDirty = true;
    }
  };

  /**
   * Why a chain returned from the `adv` ring descriptors at `l0` breaks the
   * indirect rules (§2.8.7, §2.8.19), or null: a table only with `INDIRECT_DESC`,
   * from a lone `INDIRECT` descriptor, a positive multiple of 16 bytes inside
   * one region, every entry walked and none of them `INDIRECT`; without a
   * table, no descriptor taken has `INDIRECT`.
   */
  const indirectProblem = (l0: number, adv: number): string | null => {
    if (!chain.indirect) {
      for (let j = 0; j < adv; j++) {
        const { slot } = h.at(l0 + j);
        if ((h.flags(slot) & VIRTQ_DESC_F_INDIRECT) !== 0) {
          return `descriptor ${slot} has INDIRECT, and the chain has no indirect table`;
        }
      }
      return null;
    }
    const { slot } = h.at(l0);
    if (!c.options.indirect) return "an indirect table was walked without INDIRECT_DESC";
    if ((h.flags(slot) & VIRTQ_DESC_F_INDIRECT) === 0) {
      return `the chain is indirect, descriptor ${slot} has no INDIRECT`;
    }
    const len = h.len(slot), addr = h.addr(slot);
    if (len === 0 || len % 16 !== 0) return `indirect table of ${len} bytes was walked`;
    const entries = len / 16;
    if (chain.descriptors !== 1 + entries) {
      return `walked ${chain.descriptors - 1} entries of an indirect table of ${entries}`;
    }
    const inside = regions.some((r) =>
      addr >= BigInt(r.gpa) && addr + BigInt(len) <= BigInt(r.gpa) + BigInt(r.size)
    );
    if (!inside) return `indirect table at 0x${addr.toString(16)} is not inside one region`;
    for (let j = 0; j < entries; j++) {
      const flags = h.u16(addr + BigInt(16 * j + 14))!;
      if ((flags & VIRTQ_DESC_F_INDIRECT) !== 0) {
        return `indirect table entry ${j} has INDIRECT (a nested table) and was taken`;
      }
    }
    return null;
  };

  const popWritable = (at: string, op: Extract<PackedOp, { op: "pop-writable" }>) => {
    const l0 = availLin();
    const chains = q.counters.chains, errors = q.counters.errors;
    const minLength = typeof op.minLength === "number"
      ? op.minLength
      : Math.max(0, h.len(h.at(l0).slot) + op.minLength.near);
    let n: number;
    try {
      n = q.popWritable(out, op.at, op.max, minLength);
    } catch (e) {
      throw new InvariantBroken(`${at}: popWritable threw ${describeError(e)}`);
    }
    if (!Number.isInteger(n) || n < 0 || n > op.max) {
      throw new InvariantBroken(`${at}: popWritable returned ${n} (max ${op.max})`);
    }
    const adv = h.steps(l0, availLin());
    if (adv !== n) throw new InvariantBroken(`${at}: popWritable took ${n} and moved ${adv}`);
    if (q.counters.chains !== chains + n || q.counters.errors !== errors) {
      throw new InvariantBroken(`${at}: popWritable's ${n} chains were not counted`);
    }
    for (let k = 0; k < n; k++) {
      const { slot } = h.at(l0 + k);
      const why = h.simpleWritable(l0 + k, minLength);
      if (why !== null) {
        throw new InvariantBroken(
          `${at}: popWritable took descriptor ${slot}, not a buffer it may take: ${why}`,
        );
      }
      const i = op.at + k, id = h.id(slot), len = h.len(slot);
      const r = out.regions[i], off = out.offsets[i], region = regions[r];
      if (out.ids[i] !== id || out.lengths[i] !== len) {
        throw new InvariantBroken(
          `${at}: buffer ${k} is ID ${out.ids[i]} of ${out.lengths[i]} bytes, descriptor ${slot} ` +
            `says ID ${id} of ${len}`,
        );
      }
      if (region === undefined || !(off >= 0) || off + len > region.size) {
        throw new InvariantBroken(
          `${at}: buffer ${k} (region ${r}, offset ${off}, length ${len}) is outside its region`,
        );
      }
      if (BigInt(region.gpa + off) !== h.addr(slot)) {
        throw new InvariantBroken(
          `${at}: buffer ${k} is at 0x${(region.gpa + off).toString(16)}, descriptor ${slot} ` +
            `says 0x${h.addr(slot).toString(16)}`,
        );
      }
      held.set(id, 1);
    }
  };

  /** Whether `id` is a buffer the device holds. */
  const holds = (id: number) => Number.isInteger(id) && id >= 0 && id < num && held.has(id);

  const push = (at: string, op: Extract<PackedOp, { op: "push" }>) => {
    const id = h.pickId(op.id);
    if (id === null) return;
    const before = q.position(), used = q.counters.used;
    const valid = holds(id);
    try {
      q.pushUsed(id, op.len);
    } catch (e) {
      if (e instanceof RangeError && !valid) {
        if (q.counters.used !== used || h.lin(before.usedIdx, before.usedWrap) !== usedLin) {
          throw new InvariantBroken(`${at}: the refused pushUsed(${id}) changed the queue`);
        }
        return;
      }
      throw new InvariantBroken(`${at}: pushUsed(${id}) threw ${describeError(e)}`);
    }
    if (!valid) throw new InvariantBroken(`${at}: pushUsed accepted ID ${id}, not held`);
    if (q.counters.used !== used + 1) throw new InvariantBroken(`${at}: push not counted`);
    const descriptors = held.get(id)!;
    held.delete(id);
    pushed({ slot: before.usedIdx, id, len: op.len >>> 0, wrap: before.usedWrap }, descriptors);
  };

  const pushInOrder = (at: string, op: Extract<PackedOp, { op: "push-in-order" }>) => {
    const ids = "first" in op.ids
      ? [...held.keys()].slice(0, op.ids.first)
      : op.ids.map((choice) => h.pickId(choice) ?? num);
    if (ids.length === 0) return;
    const count = op.count === "all" ? ids.length : op.count;
    const before = q.position(), used = q.counters.used;
    const batchIds = ids.slice(0, Math.max(0, Math.min(count, ids.length)));
    const valid = Number.isInteger(count) && count >= 1 && count <= num && count <= ids.length &&
      batchIds.every(holds) && new Set(batchIds).size === batchIds.length;
    try {
      q.pushUsedInOrder(ids, count, op.len);
    } catch (e) {
      if (e instanceof RangeError && !valid) {
        if (q.counters.used !== used || h.lin(before.usedIdx, before.usedWrap) !== usedLin) {
          throw new InvariantBroken(`${at}: the refused pushUsedInOrder changed the queue`);
        }
        return;
      }
      throw new InvariantBroken(
        `${at}: pushUsedInOrder([${ids}], ${count}) threw ${describeError(e)}`,
      );
    }
    if (!valid) {
      throw new InvariantBroken(`${at}: pushUsedInOrder accepted [${ids}], count ${count}`);
    }
    if (q.counters.used !== used + count) throw new InvariantBroken(`${at}: batch not counted`);
    let descriptors = 0;
    for (const id of batchIds) {
      descriptors += held.get(id)!;
      held.delete(id);
    }
    const last = batchIds[count - 1];
    pushed(
      { slot: before.usedIdx, id: last, len: op.len >>> 0, wrap: before.usedWrap },
      descriptors,
    );
  };

  const publish = (at: string) => {
    q.publishUsed();
    const times = new Map<number, number>();
    for (const e of batch) times.set(e.slot, (times.get(e.slot) ?? 0) + 1);
    for (const e of batch) {
      // Only what nothing else wrote since: a hostile chain over the ring, the driver, a later lap.
      if (allDirty || dirty.has(e.slot) || times.get(e.slot)! > 1) continue;
      const id = h.id(e.slot), len = h.len(e.slot), flags = h.flags(e.slot);
      if (id !== e.id || len !== e.len || (flags & BOTH) !== (e.wrap ? BOTH : 0)) {
        throw new InvariantBroken(
          `${at}: used descriptor ${e.slot} reads ID ${id}, length ${len}, flags 0x${
            flags.toString(16)
          }; pushed ID ${e.id}, length ${e.len}, wrap counter ${e.wrap ? 1 : 0}`,
        );
      }
    }
    batch = [];
    dirty.clear();
    allDirty = false;
  };

  const notify = (at: string) => {
    const offWrap = b.driverEvent.getUint16(0, true);
    const flags = b.driverEvent.getUint16(2, true) & 0x3;
    const notifications = q.counters.notifications, suppressed = q.counters.suppressed;
    const got = q.needsNotify();
    if (typeof got !== "boolean") throw new InvariantBroken(`${at}: not a boolean`);
    if (
      q.counters.notifications !== notifications + (got ? 1 : 0) ||
      q.counters.suppressed !== suppressed + (got ? 0 : 1)
    ) {
      throw new InvariantBroken(`${at}: needsNotify's answer was not counted once`);
    }
    let want: boolean | null = null, why = "";
    if (flags === RING_EVENT_FLAGS_DISABLE) {
      want = false;
      why = "the driver's flags say DISABLE";
    } else if (flags === RING_EVENT_FLAGS_ENABLE) {
      want = true;
      why = "the driver's flags say ENABLE";
    } else if (flags === RING_EVENT_FLAGS_DESC && !c.options.eventIdx) {
      want = true;
      why = "DESC without EVENT_IDX";
    } else if (
      flags === RING_EVENT_FLAGS_DESC && notified !== null && progress >= 1 && progress < num &&
      (offWrap & 0x7fff) < num
    ) {
      // Used descriptors went at positions [notified, notified + progress) of the two-lap cycle.
      const event = h.lin(offWrap & 0x7fff, (offWrap & 0x8000) !== 0);
      want = h.steps(notified, event) < progress;
      why = `DESC at ${offWrap & 0x7fff} wrap ${offWrap >> 15}, used went from ${
        h.at(notified).slot
      } over ${progress}`;
    }
    if (want !== null && got !== want) {
      throw new InvariantBroken(`${at}: needsNotify said ${got}: ${why}`);
    }
    notified = usedLin;
    progress = 0;
  };

  c.ops.forEach((op, step) => {
    const at = `op ${step} (${op.op})`;
    switch (op.op) {
      case "pop":
        pop(at);
        break;
      case "pop-writable":
        popWritable(at, op);
        break;
      case "push":
        push(at, op);
        break;
      case "push-in-order":
        pushInOrder(at, op);
        break;
      case "publish":
        publish(at);
        break;
      case "notify":
        notify(at);
        break;
      case "enable": {
        const want = h.isAvailable(availLin());
        const got = q.enableNotifications();
        if (got !== want) throw new InvariantBroken(`${at}: said ${got}, available is ${want}`);
        if (b.deviceEvent.getUint16(2, true) !== RING_EVENT_FLAGS_ENABLE) {
          throw new InvariantBroken(`${at}: the device event flags do not say ENABLE`);
        }
        break;
      }
      case "disable":
        q.disableNotifications();
        if (b.deviceEvent.getUint16(2, true) !== RING_EVENT_FLAGS_DISABLE) {
          throw new InvariantBroken(`${at}: the device event flags do not say DISABLE`);
        }
        break;
      case "available": {
        const want = h.isAvailable(availLin()) ? 1 : 0;
        const got = q.available();
        if (got !== want) throw new InvariantBroken(`${at}: said ${got}, expected ${want}`);
        break;
      }
      case "position": {
        const { slot, wrap } = h.at(availLin() - op.back);
        const got = q.availBefore(op.back), want = encodePackedIndex(slot, wrap);
        if (got !== want) {
          throw new InvariantBroken(
            `${at}: availBefore(${op.back}) is 0x${got.toString(16)}, expected 0x${
              want.toString(16)
            }`,
          );
        }
        break;
      }
      case "desc": {
        // Written last to first, as a driver publishes a chain (its head's flags last).
        const l0 = availLin() + op.ahead;
        for (let j = op.descs.length - 1; j >= 0; j--) {
          const d = op.descs[j];
          const { slot, wrap } = h.at(l0 + j);
          const next = op.linked ? j < op.descs.length - 1 : null;
          h.writeDesc(slot, d, wrap, h.descId(d.id, slot), next);
          dirty.add(slot);
        }
        break;
      }
      case "driver-event":
        h.setEvent(op.event, usedLin);
        break;
    }
    checkState(at);
  });
  return q.counters;
}

/** Run the packed-ring target: random packed rings and operations, for `numRuns` cases or `seconds`. */
export function fuzzPackedRing(options: FuzzOptions): Promise<FuzzReport> {
  return runCheck("packed-ring", packedRingCaseArb, checkPackedRingCase, options);
}
