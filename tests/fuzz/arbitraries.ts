/**
 * What the fuzz targets share: the report every target returns and the one
 * way a property is run (so every target replays the same way from a seed
 * and a path), real file descriptors of every kind a frontend can pass, and
 * the fast-check arbitraries for vhost-user sessions, split rings (whose
 * regions, addresses, flags and lengths the packed ring target shares) and
 * memory tables.
 *
 * Values are biased towards edges (0, 1, page and 2^32 boundaries, 2^45,
 * 2^53, 2^64 - 1) because that is where decoders and bounds checks break;
 * uniform random numbers almost never land there.
 *
 * @module
 */

// The one place fast-check is imported (mapped in the root deno.json, which
// no published package uses); the targets take it from here.
import fc from "fast-check";
import { bit, VirtioFeatureBit, VirtioNetFeatureBit } from "@vhost-mdev/sdk";
import {
  encodeU64,
  encodeVringState,
  FrontendRequest,
  HeaderFlag,
  OFFERED_PROTOCOL_FEATURES,
} from "@vhost-mdev/sdk/vhost-user";
import {
  bindUnix,
  close,
  eventfd,
  fcntl,
  ftruncate,
  memfdCreate,
  O_CLOEXEC,
  O_RDONLY,
  O_RDWR,
  open,
  socketPair,
  unixSocket,
  write,
} from "@vhost-mdev/sdk/sys";

/** fast-check, for the targets and tests (see the import above). */
export { fc };

// ---------------------------------------------------------------------------
// Reports

/** What one fuzz target did. */
export interface FuzzReport {
  /** Target name: `session`, `ring`, `packed-ring` or `memory`. */
  target: string;
  /** Cases run (including a failing one). */
  runs: number;
  /** Seed the cases were generated from. */
  seed: number;
  /** Properties that failed: 0 or 1 (a target stops at its first failure). */
  failures: number;
  /** The failing case, shrunk as far as time allowed, as fast-check prints it. */
  counterexample?: string;
  /** fast-check path of the failing case: replays it with the same seed. */
  path?: string;
  /** What the failing case broke. */
  error?: string;
  /** Facts about this run worth printing (invariants skipped and why). */
  notes?: string[];
}

/** An invariant did not hold; the message says which and with what values. */
export class InvariantBroken extends Error {
  /**
   * Make the error.
   *
   * @param message The invariant and the values that broke it.
   */
  constructor(message: string) {
    super(message);
    this.name = "InvariantBroken";
  }
}

/** An exception as a report names it: class, message, and the three frames it came from. */
export function describeError(e: unknown): string {
  if (!(e instanceof Error)) return String(e);
  const where = (e.stack ?? "").split("\n").slice(1, 4).map((l) => l.trim()).join(" < ");
  return `${e.name}: ${e.message} (${where})`;
}

/** Options every target takes. */
export interface FuzzOptions {
  /** Seed of the case generator. */
  seed: number;
  /** Cases to run at most (default 100 without `seconds`, unbounded with it). */
  numRuns?: number;
  /** Stop generating cases (and shrinking) after this many seconds. */
  seconds?: number;
  /** Replay from this fast-check path (printed by a failing run). */
  path?: string;
  /** Told the number of cases run so far, after each case. */
  progress?: (runs: number) => void;
}

/** Most cases a time-bounded target runs: in effect, until the time is up. */
const UNBOUNDED_RUNS = 2 ** 31 - 1;

/** Longest counterexample kept in a report (a session script can be long). */
const MAX_COUNTEREXAMPLE = 20000;

/**
 * Run target `target`: `check` on generated cases of `arb`. Anything the
 * check throws but an {@linkcode InvariantBroken} becomes one that names
 * it, so every failure is reported with its case and replay path.
 */
export function runCheck<T>(
  target: string,
  arb: fc.Arbitrary<T>,
  check: (c: T) => unknown,
  options: FuzzOptions,
): Promise<FuzzReport> {
  let runs = 0;
  const property = fc.property(arb, (c) => {
    options.progress?.(++runs);
    try {
      check(c);
    } catch (e) {
      if (e instanceof InvariantBroken) throw e;
      throw new InvariantBroken(`case setup or check threw ${describeError(e)}`);
    }
  });
  return runProperty(target, property, options);
}

/**
 * Run `property` the way every target does and say what happened. A case
 * fails by throwing; the thrown message is the report's `error`.
 */
export async function runProperty<T>(
  target: string,
  property: fc.IAsyncProperty<[T]> | fc.IProperty<[T]>,
  options: FuzzOptions,
  notes: string[] = [],
): Promise<FuzzReport> {
  const numRuns = options.numRuns ?? (options.seconds === undefined ? 100 : UNBOUNDED_RUNS);
  const details = await fc.check(property as fc.IAsyncProperty<[T]>, {
    seed: options.seed,
    numRuns,
    path: options.path,
    interruptAfterTimeLimit: options.seconds === undefined ? undefined : options.seconds * 1000,
  });
  const report: FuzzReport = {
    target,
    runs: details.numRuns,
    seed: details.seed,
    failures: details.failed ? 1 : 0,
  };
  if (notes.length) report.notes = notes;
  if (details.failed && details.counterexample !== null) {
    const text = fc.stringify(details.counterexample[0]);
    report.counterexample = text.length > MAX_COUNTEREXAMPLE
      ? text.slice(0, MAX_COUNTEREXAMPLE) + ` … (${text.length} characters)`
      : text;
    report.path = details.counterexamplePath ?? undefined;
    const e = details.errorInstance;
    report.error = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
  } else if (details.failed) {
    report.error = "fast-check gave up (too many skipped cases)";
  }
  return report;
}

// ---------------------------------------------------------------------------
// Numbers

/** Largest safe integer: the SDK's bound on every address and size. */
export const MAX = Number.MAX_SAFE_INTEGER;
/** A sparse memfd's interesting offset: far beyond RAM, well inside the 47-bit address space. */
export const SPARSE = 2 ** 45;
/** Size of the sparse memfds: a little past {@linkcode SPARSE}. */
export const SPARSE_FILE_SIZE = SPARSE + 2 ** 20;
/** Every memfd the targets make is named with this prefix, to find its mappings. */
export const NAME_PREFIX = "vhost-fuzz";

const U64_MAX = 2n ** 64n - 1n;

/** A u64 biased to the values decoders get wrong. */
export const u64Arb: fc.Arbitrary<bigint> = fc.oneof(
  {
    arbitrary: fc.constantFrom(
      0n,
      1n,
      0xffn,
      0x100n,
      0x1ffn,
      0xfffn,
      0x1000n,
      2n ** 32n - 1n,
      2n ** 32n,
      2n ** 45n,
      2n ** 53n - 1n,
      2n ** 53n,
      2n ** 63n,
      U64_MAX,
    ),
    weight: 3,
  },
  { arbitrary: fc.bigInt({ min: 0n, max: 0xffffn }), weight: 2 },
  { arbitrary: fc.bigInt({ min: 0n, max: U64_MAX }), weight: 1 },
);

/** A u32 biased to edges. */
export const u32Arb: fc.Arbitrary<number> = fc.oneof(
  {
    arbitrary: fc.constantFrom(0, 1, 2, 3, 0xff, 0x100, 0xffff, 0x10000, 0x7fffffff, 0xffffffff),
    weight: 3,
  },
  { arbitrary: fc.nat(0x400), weight: 2 },
  { arbitrary: fc.nat(0xffffffff), weight: 1 },
);

/** A non-negative safe integer biased to edges: page and 2^32 boundaries, 2^45, 2^53 - 1. */
export const addressArb: fc.Arbitrary<number> = fc.oneof(
  {
    arbitrary: fc.constantFrom(
      0,
      1,
      0xfff,
      0x1000,
      0x10000,
      2 ** 32 - 1,
      2 ** 32,
      SPARSE - 4096,
      SPARSE,
      2 ** 47,
      2 ** 52,
      MAX - 4095,
      MAX,
    ),
    weight: 2,
  },
  { arbitrary: fc.nat(2 ** 20).map((p) => p * 4096), weight: 2 },
  { arbitrary: fc.maxSafeNat(), weight: 1 },
);

// ---------------------------------------------------------------------------
// File descriptors

/** Seals of a memfd (fcntl `F_ADD_SEALS`); defined here to depend only on long-standing SDK exports. */
export const Seal = { SEAL: 0x1, SHRINK: 0x2, GROW: 0x4, WRITE: 0x8 } as const;
/** fcntl command: add seals. */
export const F_ADD_SEALS = 1033;
/** fcntl command: read seals. */
export const F_GET_SEALS = 1034;
/** `open` flag: a handle to the path only (no read, write or mmap). */
export const O_PATH = 0o10000000;

/** How a memfd is sealed when it is handed over. */
export type MemfdSealing =
  /** `F_SEAL_SHRINK` set (QEMU's default). */
  | "sealed"
  /** Made with `MFD_ALLOW_SEALING`, no seal yet (the SDK may add one). */
  | "sealable"
  /** Made without `MFD_ALLOW_SEALING` (DPDK): can never be sealed. */
  | "unsealable"
  /** `F_SEAL_WRITE`: a shared writable mapping is refused by the kernel. */
  | "write-sealed";

/**
 * An eventfd's counter when handed over: 0, 1 (a kick already pending), or
 * saturated at 2^64 - 2 (every further signal would block, or fail with EAGAIN).
 */
export type EventfdCounter = "zero" | "one" | "full";

/** One file descriptor a frontend might pass, described so that a case prints and shrinks. */
export type FdSpec =
  | { kind: "eventfd"; nonBlocking: boolean; semaphore: boolean; counter: EventfdCounter }
  | { kind: "timerfd" }
  | { kind: "epoll" }
  | { kind: "memfd"; size: number; sealing: MemfdSealing }
  | { kind: "file"; size: number }
  | { kind: "pipe"; end: "read" | "write" }
  | { kind: "socket" }
  | { kind: "opath"; of: "memfd" | "socket" | "dev-null" | "directory" }
  | { kind: "dev-zero" }
  | { kind: "dev-null" };

/** Memfd sizes: empty, one page, odd, 1 MiB, sparse past 2^45. */
export const memfdSizeArb: fc.Arbitrary<number> = fc.constantFrom(
  0,
  4096,
  3 * 4096 + 17,
  65536,
  1 << 20,
  SPARSE_FILE_SIZE,
);

const sealingArb: fc.Arbitrary<MemfdSealing> = fc.constantFrom(
  "sealed",
  "sealable",
  "unsealable",
  "write-sealed",
);

/** An eventfd, blocking or not (the only kind a kick, call or error fd may be). */
export const eventfdSpecArb: fc.Arbitrary<FdSpec> = fc.record({
  kind: fc.constant("eventfd" as const),
  nonBlocking: fc.boolean(),
  semaphore: fc.oneof(
    { arbitrary: fc.constant(false), weight: 4 },
    { arbitrary: fc.constant(true), weight: 1 },
  ),
  counter: fc.constantFrom(
    "zero" as const,
    "zero" as const,
    "zero" as const,
    "one" as const,
    "full" as const,
  ),
});

/** A memfd of one of {@linkcode memfdSizeArb}'s sizes, sealed in any way. */
export const memfdSpecArb: fc.Arbitrary<FdSpec> = fc.record({
  kind: fc.constant("memfd" as const),
  size: memfdSizeArb,
  sealing: sealingArb,
});

/** Any kind of fd. */
export const fdSpecArb: fc.Arbitrary<FdSpec> = fc.oneof(
  { arbitrary: eventfdSpecArb, weight: 4 },
  { arbitrary: memfdSpecArb, weight: 3 },
  {
    // Disk files stay small: /tmp may be a file system that refuses a sparse 2^45.
    arbitrary: fc.record({
      kind: fc.constant("file" as const),
      size: fc.constantFrom(0, 4096, 65536),
    }),
    weight: 1,
  },
  {
    arbitrary: fc.record({
      kind: fc.constant("pipe" as const),
      end: fc.constantFrom("read" as const, "write" as const),
    }),
    weight: 1,
  },
  { arbitrary: fc.constant({ kind: "socket" as const }), weight: 1 },
  // Anonymous inodes like an eventfd, which only the 8-byte write tells apart.
  {
    arbitrary: fc.constantFrom({ kind: "timerfd" as const }, { kind: "epoll" as const }),
    weight: 1,
  },
  {
    arbitrary: fc.record({
      kind: fc.constant("opath" as const),
      of: fc.constantFrom(
        "memfd" as const,
        "socket" as const,
        "dev-null" as const,
        "directory" as const,
      ),
    }),
    weight: 1,
  },
  { arbitrary: fc.constant({ kind: "dev-zero" as const }), weight: 1 },
  { arbitrary: fc.constant({ kind: "dev-null" as const }), weight: 1 },
);

/** Mostly eventfds, sometimes anything (what a hostile SET_VRING_KICK carries). */
export const ringFdArb: fc.Arbitrary<FdSpec> = fc.oneof(
  { arbitrary: eventfdSpecArb, weight: 5 },
  { arbitrary: fdSpecArb, weight: 2 },
);

/** Mostly memfds, sometimes anything (what a hostile memory table carries). */
export const memoryFdArb: fc.Arbitrary<FdSpec> = fc.oneof(
  { arbitrary: memfdSpecArb, weight: 5 },
  { arbitrary: fdSpecArb, weight: 2 },
);

/** The calls that make fds the SDK has no wrapper for (a frontend can still send them). */
const EXTRA_CALLS = {
  pipe2: { parameters: ["buffer", "i32"], result: "i32" },
  timerfd_create: { parameters: ["i32", "i32"], result: "i32" },
  epoll_create1: { parameters: ["i32"], result: "i32" },
} as const;
let extraLibrary: Deno.DynamicLibrary<typeof EXTRA_CALLS> | null = null;

function extra(): Deno.DynamicLibrary<typeof EXTRA_CALLS>["symbols"] {
  extraLibrary ??= Deno.dlopen("libc.so.6", EXTRA_CALLS);
  return extraLibrary.symbols;
}

function checked(fd: number, call: string): number {
  if (fd < 0) throw new Error(`${call} failed`);
  return fd;
}

/** `pipe2`: read end, write end. */
function pipe(): [number, number] {
  const fds = new Int32Array(2);
  checked(extra().pipe2(new Uint8Array(fds.buffer), O_CLOEXEC), "pipe2");
  return [fds[0], fds[1]];
}

const CLOCK_MONOTONIC = 1;
/** Largest value an eventfd counter holds. */
const EVENTFD_MAX = 0xfffffffffffffffen;

/** What {@linkcode FdPool.make} made: the fd to hand over and the file's length (regular files). */
export interface OpenedFd {
  /** The fd to send or map. */
  fd: number;
  /** Bytes of the file behind it, for memfds and regular files; -1 otherwise. */
  size: number;
}

/**
 * Opens the fds that specs describe and closes every one of them (and the
 * other ends of pipes and socket pairs) in {@linkcode FdPool.closeAll}. Fds
 * can be tagged so that later steps of a case find them again.
 */
export class FdPool {
  #fds: number[] = [];
  #tags = new Map<string, OpenedFd>();

  /** Open one fd as `spec` says; remember it under `tag`. */
  make(spec: FdSpec, tag?: string): OpenedFd {
    const opened = this.#make(spec);
    if (tag !== undefined) this.#tags.set(tag, opened);
    return opened;
  }

  /** The fd made under `tag`, if any. */
  tagged(tag: string): OpenedFd | undefined {
    return this.#tags.get(tag);
  }

  #keep(fd: number): number {
    this.#fds.push(fd);
    return fd;
  }

  #make(spec: FdSpec): OpenedFd {
    switch (spec.kind) {
      case "eventfd": {
        const fd = this.#keep(
          eventfd(spec.counter === "one" ? 1 : 0, {
            nonBlocking: spec.nonBlocking,
            semaphore: spec.semaphore,
          }),
        );
        if (spec.counter === "full") {
          const max = new Uint8Array(8);
          new DataView(max.buffer).setBigUint64(0, EVENTFD_MAX, true);
          write(fd, max);
        }
        return { fd, size: -1 };
      }
      case "timerfd": {
        const fd = extra().timerfd_create(CLOCK_MONOTONIC, O_CLOEXEC);
        return { fd: this.#keep(checked(fd, "timerfd_create")), size: -1 };
      }
      case "epoll":
        return {
          fd: this.#keep(checked(extra().epoll_create1(O_CLOEXEC), "epoll_create1")),
          size: -1,
        };
      case "memfd": {
        const sealable = spec.sealing !== "unsealable";
        const fd = this.#keep(
          memfdCreate(`${NAME_PREFIX}-${spec.sealing}`, { allowSealing: sealable }),
        );
        ftruncate(fd, spec.size);
        if (spec.sealing === "sealed") fcntl(fd, F_ADD_SEALS, Seal.SHRINK);
        if (spec.sealing === "write-sealed") fcntl(fd, F_ADD_SEALS, Seal.SHRINK | Seal.WRITE);
        return { fd, size: spec.size };
      }
      case "file": {
        // A disk file: it has no seals at all. Unlinked at once; the fd keeps it.
        const path = Deno.makeTempFileSync({ prefix: `${NAME_PREFIX}-file-` });
        try {
          const fd = this.#keep(open(path, O_RDWR | O_CLOEXEC));
          ftruncate(fd, spec.size);
          return { fd, size: spec.size };
        } finally {
          Deno.removeSync(path);
        }
      }
      case "pipe": {
        const [r, w] = pipe();
        this.#keep(r);
        this.#keep(w);
        return { fd: spec.end === "read" ? r : w, size: -1 };
      }
      case "socket": {
        const [a, b] = socketPair();
        this.#keep(a);
        this.#keep(b);
        return { fd: a, size: -1 };
      }
      case "opath": {
        if (spec.of === "memfd") {
          // fstat through an O_PATH fd says "regular file of N bytes"; mmap says EBADF.
          const m = this.#keep(memfdCreate(`${NAME_PREFIX}-opath`, { allowSealing: true }));
          ftruncate(m, 1 << 20);
          return { fd: this.#keep(open(`/proc/self/fd/${m}`, O_PATH | O_CLOEXEC)), size: 1 << 20 };
        }
        if (spec.of === "socket") {
          // fstat through an O_PATH fd of a bound socket says "socket"; nothing else works.
          const dir = Deno.makeTempDirSync({ prefix: `${NAME_PREFIX}-` });
          try {
            const listener = this.#keep(unixSocket());
            bindUnix(listener, `${dir}/s`);
            return { fd: this.#keep(open(`${dir}/s`, O_PATH | O_CLOEXEC)), size: -1 };
          } finally {
            Deno.removeSync(dir, { recursive: true });
          }
        }
        const path = spec.of === "dev-null" ? "/dev/null" : "/tmp";
        return { fd: this.#keep(open(path, O_PATH | O_CLOEXEC)), size: -1 };
      }
      case "dev-zero":
        return { fd: this.#keep(open("/dev/zero", O_RDWR | O_CLOEXEC)), size: -1 };
      case "dev-null":
        return { fd: this.#keep(open("/dev/null", O_RDONLY | O_CLOEXEC)), size: -1 };
    }
  }

  /** Close every fd the pool opened. */
  closeAll(): void {
    for (const fd of this.#fds) close(fd);
    this.#fds = [];
    this.#tags.clear();
  }
}

// ---------------------------------------------------------------------------
// vhost-user messages

/** A fd a message carries; `tag` lets later steps find it (a kick to signal, guest memory to poke). */
export interface FdRef {
  /** What to open. */
  spec: FdSpec;
  /** Name for later steps. */
  tag?: string;
  /** Send the fd an earlier step opened under this tag instead, when there is one. */
  reuse?: string;
}

/** One vhost-user message as sent: any request, flags, payload and fds. */
export interface WireMessage {
  /** Step kind. */
  type: "message";
  /** Request code (any u32). */
  request: number;
  /** Header flags (any u32). */
  flags: number;
  /** Payload bytes. */
  payload: Uint8Array;
  /** Added to the payload length in the header's size field (a lying header when not 0). */
  sizeDelta: number;
  /** Fds attached to the first byte. */
  fds: FdRef[];
}

/** What a frontend does in a session: send a message, kick a ring, write guest memory, or add many regions. */
export type SessionStep =
  | WireMessage
  | TrafficStep
  | { type: "kick"; ring: number }
  | { type: "poke"; offset: number; bytes: Uint8Array }
  | { type: "add-regions"; count: number; sealing: MemfdSealing };

/** A guest descriptor a traffic step writes: anywhere in the table, pointing anywhere. */
export interface TrafficDescriptor {
  /** Index in the descriptor table (modulo the ring size). */
  index: number;
  /** Guest-physical address of the buffer. */
  addr: bigint;
  /** Length. */
  len: number;
  /** Flags (NEXT, WRITE, INDIRECT, garbage). */
  flags: number;
  /** Next index. */
  next: number;
}

/**
 * What a guest driver does on a running ring: write descriptors, publish
 * heads on the available ring (advancing `avail.idx` by `advance`, which
 * may be more than it published), and kick.
 */
export interface TrafficStep {
  /** Step kind. */
  type: "traffic";
  /** Ring index. */
  ring: number;
  /** Descriptors written first. */
  descriptors: TrafficDescriptor[];
  /** Heads put on the available ring. */
  heads: number[];
  /** How far `avail.idx` moves (usually `heads.length`). */
  advance: number;
  /** Kick the ring afterwards. */
  kick: boolean;
}

/** A whole session: which driver, how many queue pairs, and the frontend's steps. */
export interface SessionScript {
  /**
   * The recording test driver, the same driver failing every `start` (the
   * device reports an error, which goes to the backend channel), or the sim
   * driver in loopback mode.
   */
  driver: "recording" | "failing" | "sim";
  /** Queue pairs the device is created with. */
  queues: number;
  /** Passed as `allowUnsealedMemory` when the device is created. */
  allowUnsealed: boolean;
  /** What the frontend does, in order. */
  steps: SessionStep[];
}

const V = HeaderFlag.VERSION;
/** Frontend virtual address of the guest memory of a handshake. */
export const GUEST_UVA = 0x7f00_0000_0000;
/** Bytes of the guest memory of a handshake. */
export const GUEST_SIZE = 1 << 20;
/** Guest-physical offset of ring `q`'s descriptor table; its avail ring is 64 KiB further, its used ring 128 KiB. */
export const ringOffset = (q: number): number => q * 0x40000;

/** Every frontend request code the protocol defines. */
export const FRONTEND_REQUESTS: readonly number[] = Object.values(FrontendRequest);

/** Little-endian u64 (any bigint, taken modulo 2^64). */
export function u64Bytes(v: bigint): Uint8Array {
  return encodeU64(BigInt.asUintN(64, v));
}

/** `vhost_vring_state` (any numbers, taken modulo 2^32). */
export function vringStateBytes(index: number, num: number): Uint8Array {
  return encodeVringState({ index: index >>> 0, num: num >>> 0 });
}

/** `vhost_vring_addr`: index, flags, desc, used, avail, log. */
export function vringAddrBytes(
  index: number,
  flags: number,
  desc: bigint,
  used: bigint,
  avail: bigint,
  log: bigint,
): Uint8Array {
  const b = new Uint8Array(40);
  const v = new DataView(b.buffer);
  v.setUint32(0, index >>> 0, true);
  v.setUint32(4, flags >>> 0, true);
  [desc, used, avail, log].forEach((x, i) =>
    v.setBigUint64(8 + 8 * i, BigInt.asUintN(64, x), true)
  );
  return b;
}

/** One memory region on the wire. */
export interface WireRegion {
  /** Guest-physical address. */
  gpa: bigint;
  /** Size. */
  size: bigint;
  /** Frontend virtual address. */
  uva: bigint;
  /** Offset into the fd. */
  mmapOffset: bigint;
}

function regionInto(v: DataView, at: number, r: WireRegion): void {
  v.setBigUint64(at, BigInt.asUintN(64, r.gpa), true);
  v.setBigUint64(at + 8, BigInt.asUintN(64, r.size), true);
  v.setBigUint64(at + 16, BigInt.asUintN(64, r.uva), true);
  v.setBigUint64(at + 24, BigInt.asUintN(64, r.mmapOffset), true);
}

/** `SET_MEM_TABLE` payload: a count (which may lie) and the regions. */
export function memTableBytes(count: number, regions: readonly WireRegion[]): Uint8Array {
  const b = new Uint8Array(8 + 32 * regions.length);
  const v = new DataView(b.buffer);
  v.setUint32(0, count >>> 0, true);
  regions.forEach((r, i) => regionInto(v, 8 + 32 * i, r));
  return b;
}

/** `ADD_MEM_REG`/`REM_MEM_REG` payload: 8 bytes of padding, one region. */
export function singleRegionBytes(r: WireRegion): Uint8Array {
  const b = new Uint8Array(40);
  regionInto(new DataView(b.buffer), 8, r);
  return b;
}

/** Config payload: offset, size (which may lie), flags, data. */
export function configBytes(
  offset: number,
  size: number,
  flags: number,
  data: Uint8Array,
): Uint8Array {
  const b = new Uint8Array(12 + data.length);
  const v = new DataView(b.buffer);
  v.setUint32(0, offset >>> 0, true);
  v.setUint32(4, size >>> 0, true);
  v.setUint32(8, flags >>> 0, true);
  b.set(data, 12);
  return b;
}

/** The header plus payload as sent (the size field may lie). */
export function encodeWire(m: WireMessage): Uint8Array {
  const out = new Uint8Array(12 + m.payload.length);
  const v = new DataView(out.buffer);
  v.setUint32(0, m.request >>> 0, true);
  v.setUint32(4, m.flags >>> 0, true);
  v.setUint32(8, Math.max(0, Math.min(0xffffffff, m.payload.length + m.sizeDelta)), true);
  out.set(m.payload, 12);
  return out;
}

const flagsArb: fc.Arbitrary<number> = fc.oneof(
  { arbitrary: fc.constant(V), weight: 10 },
  { arbitrary: fc.constant(V | HeaderFlag.NEED_REPLY), weight: 8 },
  { arbitrary: fc.constantFrom(V | HeaderFlag.REPLY, 0, 2, 3), weight: 1 },
  { arbitrary: fc.nat(0xffffffff), weight: 1 },
);

const sizeDeltaArb: fc.Arbitrary<number> = fc.oneof(
  { arbitrary: fc.constant(0), weight: 20 },
  { arbitrary: fc.constantFrom(-1, 1, -8, 8, 4096, 0xffffffff), weight: 1 },
);

/** A fd list: usually the `expected` count of `kind`, sometimes a wrong count, rarely more than 32. */
function fdsArb(expected: number, kind: fc.Arbitrary<FdSpec>): fc.Arbitrary<FdRef[]> {
  const refs = (a: fc.Arbitrary<FdSpec[]>) => a.map((specs) => specs.map((spec) => ({ spec })));
  return fc.oneof(
    { arbitrary: refs(fc.array(kind, { minLength: expected, maxLength: expected })), weight: 8 },
    { arbitrary: refs(fc.array(fdSpecArb, { maxLength: 3 })), weight: 2 },
    { arbitrary: refs(fc.array(eventfdSpecArb, { minLength: 33, maxLength: 40 })), weight: 1 },
  );
}

/** Ring indexes: the device's few, and beyond. */
const ringIndexArb: fc.Arbitrary<number> = fc.oneof(
  { arbitrary: fc.nat(3), weight: 6 },
  { arbitrary: fc.constantFrom(4, 0xff, 0x100, 0xffff, 0xffffffff), weight: 1 },
);

/** A plausible frontend address near the handshake's guest memory, or an edge. */
const uvaArb: fc.Arbitrary<bigint> = fc.oneof(
  {
    arbitrary: fc.tuple(
      fc.nat(3),
      fc.constantFrom(0, 0x10000, 0x20000),
      fc.constantFrom(0, 0, 1, 2, 4),
    )
      .map(([q, area, skew]) => BigInt(GUEST_UVA + ringOffset(q) + area + skew)),
    weight: 4,
  },
  {
    arbitrary: fc.constantFrom(BigInt(GUEST_UVA + GUEST_SIZE - 16), BigInt(GUEST_UVA + GUEST_SIZE)),
    weight: 1,
  },
  { arbitrary: u64Arb, weight: 2 },
);

/** A region on the wire: around the handshake's memory, or edges. */
/** The handshake's own region: what a frontend re-adds (QEMU, once per queue pair) or removes. */
const HANDSHAKE_REGION: WireRegion = {
  gpa: 0n,
  size: BigInt(GUEST_SIZE),
  uva: BigInt(GUEST_UVA),
  mmapOffset: 0n,
};

const wireRegionArb: fc.Arbitrary<WireRegion> = fc.oneof(
  { arbitrary: fc.constant(HANDSHAKE_REGION), weight: 1 },
  {
    arbitrary: fc.record({
      gpa: fc.oneof(fc.constantFrom(0n, 0x100000n, 0x100000000n), u64Arb),
      size: fc.oneof(fc.constantFrom(0n, 4096n, BigInt(GUEST_SIZE), BigInt(SPARSE)), u64Arb),
      uva: fc.oneof(fc.constantFrom(BigInt(GUEST_UVA), BigInt(GUEST_UVA + GUEST_SIZE)), u64Arb),
      mmapOffset: fc.oneof(fc.constantFrom(0n, 1n, 4095n, 4096n, BigInt(SPARSE - 4096)), u64Arb),
    }),
    weight: 2,
  },
);

/** A memory fd, or now and then the handshake's guest memfd again (the same file, not a copy). */
const regionFdsArb: fc.Arbitrary<FdRef[]> = fc.oneof(
  { arbitrary: fdsArb(1, memoryFdArb), weight: 2 },
  {
    arbitrary: memfdSpecArb.map((spec) => [{ spec, reuse: "guest" }]),
    weight: 1,
  },
);

function message(
  request: number,
  payload: fc.Arbitrary<Uint8Array>,
  fds: fc.Arbitrary<FdRef[]> = fdsArb(0, fdSpecArb),
): fc.Arbitrary<WireMessage> {
  return fc.record({
    type: fc.constant("message" as const),
    request: fc.constant(request),
    flags: flagsArb,
    payload,
    sizeDelta: sizeDeltaArb,
    fds,
  });
}

const R = FrontendRequest;
const empty = fc.oneof(
  { arbitrary: fc.constant(new Uint8Array(0)), weight: 6 },
  { arbitrary: fc.uint8Array({ maxLength: 9 }), weight: 1 },
);
const u64Payload = fc.oneof(
  { arbitrary: u64Arb.map(u64Bytes), weight: 6 },
  { arbitrary: fc.uint8Array({ maxLength: 12 }), weight: 1 },
);
const vringStatePayload = fc.oneof(
  {
    arbitrary: fc.tuple(
      ringIndexArb,
      fc.oneof(fc.constantFrom(0, 1, 2, 256, 1024, 1025, 32768, 65535), u32Arb),
    )
      .map(([i, n]) => vringStateBytes(i, n)),
    weight: 6,
  },
  { arbitrary: fc.uint8Array({ maxLength: 12 }), weight: 1 },
);
const vringFdPayload = fc.oneof(
  {
    arbitrary: fc.tuple(ringIndexArb, fc.boolean(), fc.constantFrom(0n, 0n, 0n, 0x200n, 2n ** 63n))
      .map(([i, noFd, high]) => u64Bytes(BigInt(i & 0xff) | (noFd ? 0x100n : 0n) | high)),
    weight: 6,
  },
  { arbitrary: u64Arb.map(u64Bytes), weight: 1 },
);

/** A message for `request` with its payload shaped right most of the time, and fds to match. */
function requestMessageArb(request: number): fc.Arbitrary<WireMessage> {
  switch (request) {
    case R.GET_FEATURES:
    case R.GET_PROTOCOL_FEATURES:
    case R.GET_QUEUE_NUM:
    case R.GET_MAX_MEM_SLOTS:
    case R.GET_STATUS:
    case R.SET_OWNER:
    case R.RESET_OWNER:
    case R.RESET_DEVICE:
      return message(request, empty);
    case R.SET_FEATURES:
    case R.SET_PROTOCOL_FEATURES:
    case R.SET_STATUS:
    case R.SET_LOG_BASE:
    case R.SEND_RARP:
    case R.NET_SET_MTU:
      return message(request, u64Payload);
    case R.SET_VRING_NUM:
    case R.SET_VRING_BASE:
    case R.GET_VRING_BASE:
    case R.SET_VRING_ENABLE:
    case R.SET_VRING_ENDIAN:
      return message(request, vringStatePayload);
    case R.SET_VRING_ADDR:
      return message(
        request,
        fc.oneof(
          {
            arbitrary: fc.tuple(
              ringIndexArb,
              fc.constantFrom(0, 1, 0xffffffff),
              uvaArb,
              uvaArb,
              uvaArb,
              u64Arb,
            )
              .map(([i, f, d, u, a, l]) => vringAddrBytes(i, f, d, u, a, l)),
            weight: 6,
          },
          { arbitrary: fc.uint8Array({ maxLength: 48 }), weight: 1 },
        ),
      );
    case R.SET_VRING_KICK:
    case R.SET_VRING_CALL:
    case R.SET_VRING_ERR:
      return message(request, vringFdPayload, fdsArb(1, ringFdArb));
    case R.SET_MEM_TABLE:
      return fc.array(wireRegionArb, { minLength: 1, maxLength: 9 }).chain((regions) =>
        message(
          request,
          fc.oneof(
            { arbitrary: fc.constant(memTableBytes(regions.length, regions)), weight: 6 },
            { arbitrary: u32Arb.map((n) => memTableBytes(n, regions)), weight: 1 },
          ),
          fdsArb(regions.length, memoryFdArb),
        )
      );
    case R.ADD_MEM_REG:
      return message(request, wireRegionArb.map(singleRegionBytes), regionFdsArb);
    case R.REM_MEM_REG:
      return message(request, wireRegionArb.map(singleRegionBytes), fdsArb(0, memoryFdArb));
    case R.GET_CONFIG:
    case R.SET_CONFIG:
      return message(
        request,
        fc.tuple(
          fc.oneof(fc.nat(16), u32Arb),
          fc.oneof(fc.nat(16), u32Arb),
          fc.constantFrom(0, 1),
          fc.uint8Array({ maxLength: 24 }),
        ).map(([offset, size, flags, data]) => configBytes(offset, size, flags, data)),
      );
    case R.SET_BACKEND_REQ_FD:
      return message(
        request,
        empty,
        fdsArb(
          1,
          fc.oneof(
            { arbitrary: fc.constant({ kind: "socket" as const }), weight: 4 },
            {
              arbitrary: fc.constant({ kind: "opath" as const, of: "socket" as const }),
              weight: 1,
            },
            { arbitrary: fdSpecArb, weight: 1 },
          ),
        ),
      );
    default:
      return message(request, fc.uint8Array({ maxLength: 64 }), fdsArb(0, fdSpecArb));
  }
}

/** Any request code: every defined one, small unknown ones, any u32. */
export const requestCodeArb: fc.Arbitrary<number> = fc.oneof(
  { arbitrary: fc.constantFrom(...FRONTEND_REQUESTS), weight: 6 },
  { arbitrary: fc.nat(64), weight: 1 },
  { arbitrary: fc.nat(0xffffffff), weight: 1 },
);

/** A message of any request: shaped for its request, or plain garbage. */
export const wireMessageArb: fc.Arbitrary<WireMessage> = fc.oneof(
  { arbitrary: fc.constantFrom(...FRONTEND_REQUESTS).chain(requestMessageArb), weight: 5 },
  {
    arbitrary: fc.record({
      type: fc.constant("message" as const),
      request: requestCodeArb,
      flags: flagsArb,
      payload: fc.oneof(
        fc.uint8Array({ maxLength: 64 }),
        fc.constantFrom(0, 8, 12, 40, 8 + 32, 8 + 8 * 32).chain((n) =>
          fc.uint8Array({ minLength: n, maxLength: n })
        ),
      ),
      sizeDelta: sizeDeltaArb,
      fds: fc.array(fdSpecArb, { maxLength: 3 }).map((specs) => specs.map((spec) => ({ spec }))),
    }),
    weight: 2,
  },
);

/** Write bytes into the handshake's guest memory: ring headers, descriptors, anywhere. */
const pokeArb: fc.Arbitrary<SessionStep> = fc.record({
  type: fc.constant("poke" as const),
  offset: fc.oneof(
    {
      arbitrary: fc.tuple(fc.nat(1), fc.constantFrom(0, 0x10000, 0x20000), fc.nat(64))
        .map(([q, area, o]) => ringOffset(q) + area + o),
      weight: 4,
    },
    { arbitrary: fc.nat(GUEST_SIZE - 1), weight: 1 },
  ),
  bytes: fc.uint8Array({ minLength: 1, maxLength: 64 }),
});

/** A buffer address in the handshake's guest memory (or at its edges, or anywhere). */
const trafficAddrArb: fc.Arbitrary<bigint> = fc.oneof(
  { arbitrary: fc.nat(GUEST_SIZE / 16 - 1).map((i) => BigInt(i * 16)), weight: 6 },
  {
    arbitrary: fc.constantFrom(
      BigInt(GUEST_SIZE - 1),
      BigInt(GUEST_SIZE - 8),
      BigInt(GUEST_SIZE),
      BigInt(ringOffset(0)),
      BigInt(ringOffset(1) + 0x10000),
      BigInt(ringOffset(1) + 0x20000),
    ),
    weight: 2,
  },
  { arbitrary: u64Arb, weight: 1 },
);

/** Guest traffic on ring 0 (receive) or 1 (transmit) of a running device. */
const trafficArb: fc.Arbitrary<TrafficStep> = fc.record({
  type: fc.constant("traffic" as const),
  ring: fc.nat(1),
  descriptors: fc.array(
    fc.record({
      index: fc.oneof({ arbitrary: fc.nat(7), weight: 4 }, { arbitrary: fc.nat(1023), weight: 1 }),
      addr: trafficAddrArb,
      len: fc.oneof(
        { arbitrary: fc.integer({ min: 1, max: 2048 }), weight: 6 },
        { arbitrary: fc.constantFrom(0, 12, 0xffffffff, GUEST_SIZE), weight: 1 },
      ),
      flags: fc.oneof(
        { arbitrary: fc.constantFrom(0, 1, 2, 3), weight: 8 },
        { arbitrary: fc.constantFrom(4, 5, 6, 7), weight: 1 },
        { arbitrary: fc.nat(0xffff), weight: 1 },
      ),
      next: fc.oneof({ arbitrary: fc.nat(7), weight: 4 }, { arbitrary: fc.nat(0xffff), weight: 1 }),
    }),
    { maxLength: 8 },
  ),
  heads: fc.array(
    fc.oneof({ arbitrary: fc.nat(7), weight: 6 }, { arbitrary: fc.nat(0xffff), weight: 1 }),
    {
      maxLength: 8,
    },
  ),
  advance: fc.oneof({ arbitrary: fc.constant(-1), weight: 6 }, {
    arbitrary: fc.nat(0xffff),
    weight: 1,
  }),
  kick: fc.oneof({ arbitrary: fc.constant(true), weight: 4 }, {
    arbitrary: fc.constant(false),
    weight: 1,
  }),
}).map((t) => ({ ...t, advance: t.advance < 0 ? t.heads.length : t.advance }));

/** One step of a session, after (or among) the handshake. */
export const sessionStepArb: fc.Arbitrary<SessionStep> = fc.oneof(
  { arbitrary: wireMessageArb, weight: 8 },
  { arbitrary: fc.record({ type: fc.constant("kick" as const), ring: fc.nat(3) }), weight: 2 },
  { arbitrary: pokeArb, weight: 2 },
  { arbitrary: trafficArb, weight: 2 },
  {
    arbitrary: fc.record({
      type: fc.constant("add-regions" as const),
      count: fc.integer({ min: 30, max: 40 }),
      sealing: fc.constantFrom("sealed" as const, "sealable" as const),
    }),
    weight: 1,
  },
);

function wire(
  request: number,
  payload: Uint8Array,
  fds: FdRef[] = [],
  flags: number = V,
): WireMessage {
  return { type: "message", request, flags, payload, sizeDelta: 0, fds };
}

/** virtio-net features every device here offers, plus `VHOST_USER_F_PROTOCOL_FEATURES`. */
const HANDSHAKE_FEATURES = [
  VirtioFeatureBit.VERSION_1,
  VirtioNetFeatureBit.MRG_RXBUF,
  VirtioNetFeatureBit.MQ,
  VirtioFeatureBit.EVENT_IDX,
  VirtioNetFeatureBit.MAC,
  VirtioNetFeatureBit.STATUS,
  VirtioFeatureBit.INDIRECT_DESC,
  VirtioFeatureBit.PROTOCOL_FEATURES,
].reduce((m, b) => m | bit(b), 0n);

/** Parameters of a plausible handshake. */
interface Handshake {
  protocol: bigint;
  features: bigint;
  memory: FdSpec;
  mmapOffset: number;
  num: number;
  rings: number;
  kick: FdSpec[];
  call: FdSpec[];
  status: number;
  ack: boolean;
}

/** A handshake's kick and call fds: eventfds but for one in nine. */
const handshakeRingFdArb: fc.Arbitrary<FdSpec> = fc.oneof(
  { arbitrary: eventfdSpecArb, weight: 8 },
  { arbitrary: fdSpecArb, weight: 1 },
);

const handshakeParamsArb: fc.Arbitrary<Handshake> = fc.record({
  // Mostly what a real frontend sends, so that most cases get a running
  // device to throw garbage at; the rest go wrong at every step.
  protocol: fc.oneof(
    { arbitrary: fc.constant(OFFERED_PROTOCOL_FEATURES), weight: 6 },
    {
      arbitrary: fc.bigInt({ min: 0n, max: 2n ** 20n - 1n }).map((b) =>
        b & OFFERED_PROTOCOL_FEATURES
      ),
      weight: 1,
    },
    { arbitrary: u64Arb, weight: 1 },
  ),
  features: fc.oneof(
    { arbitrary: fc.constant(HANDSHAKE_FEATURES), weight: 8 },
    {
      arbitrary: fc.constantFrom(
        bit(VirtioFeatureBit.VERSION_1),
        HANDSHAKE_FEATURES & ~bit(VirtioFeatureBit.PROTOCOL_FEATURES),
        0n,
      ),
      weight: 1,
    },
    { arbitrary: u64Arb, weight: 1 },
  ),
  memory: fc.oneof(
    {
      arbitrary: fc.record({
        kind: fc.constant("memfd" as const),
        size: fc.constantFrom(GUEST_SIZE + 4096, 2 * GUEST_SIZE, GUEST_SIZE),
        sealing: fc.oneof(
          { arbitrary: fc.constantFrom("sealed" as const, "sealable" as const), weight: 4 },
          { arbitrary: sealingArb, weight: 1 },
        ),
      }),
      weight: 12,
    },
    { arbitrary: fdSpecArb, weight: 1 },
  ),
  mmapOffset: fc.constantFrom(0, 0, 0, 4096, 1),
  num: fc.constantFrom(256, 256, 256, 8, 1, 1024, 2048),
  rings: fc.constantFrom(2, 2, 1, 4),
  kick: fc.array(handshakeRingFdArb, { minLength: 4, maxLength: 4 }),
  call: fc.array(handshakeRingFdArb, { minLength: 4, maxLength: 4 }),
  status: fc.constantFrom(0xf, 0xf, 0x7, 0xb, 0),
  ack: fc.oneof({ arbitrary: fc.constant(true), weight: 3 }, {
    arbitrary: fc.constant(false),
    weight: 1,
  }),
});

/** The steps of a plausible handshake: a device that gets this far starts. */
function handshakeSteps(h: Handshake): SessionStep[] {
  const f = h.ack ? V | HeaderFlag.NEED_REPLY : V;
  const steps: SessionStep[] = [
    wire(R.GET_FEATURES, new Uint8Array(0)),
    wire(R.GET_PROTOCOL_FEATURES, new Uint8Array(0)),
    wire(R.SET_PROTOCOL_FEATURES, u64Bytes(h.protocol)),
    wire(R.SET_OWNER, new Uint8Array(0), [], f),
    wire(R.SET_FEATURES, u64Bytes(h.features), [], f),
    wire(
      R.SET_MEM_TABLE,
      memTableBytes(1, [{
        gpa: 0n,
        size: BigInt(GUEST_SIZE),
        uva: BigInt(GUEST_UVA),
        mmapOffset: BigInt(h.mmapOffset),
      }]),
      [{ spec: h.memory, tag: "guest" }],
      f,
    ),
  ];
  for (let q = 0; q < h.rings; q++) {
    const base = BigInt(GUEST_UVA + ringOffset(q));
    steps.push(
      wire(R.SET_VRING_NUM, vringStateBytes(q, h.num), [], f),
      wire(R.SET_VRING_BASE, vringStateBytes(q, 0), [], f),
      wire(
        R.SET_VRING_ADDR,
        vringAddrBytes(q, 0, base, base + 0x20000n, base + 0x10000n, 0n),
        [],
        f,
      ),
      wire(R.SET_VRING_KICK, u64Bytes(BigInt(q)), [{ spec: h.kick[q], tag: `kick${q}` }], f),
      wire(R.SET_VRING_CALL, u64Bytes(BigInt(q)), [{ spec: h.call[q] }], f),
      wire(R.SET_VRING_ENABLE, vringStateBytes(q, 1), [], f),
    );
  }
  steps.push(wire(R.SET_STATUS, u64Bytes(BigInt(h.status)), [], f));
  return steps;
}

/**
 * A handshake every device here accepts: offered protocol features, sealed
 * guest memory, rings of 256 with eventfds, DRIVER_OK. A device that gets
 * it starts.
 */
export function plainHandshake(rings = 2): SessionStep[] {
  const eventfd: FdSpec = { kind: "eventfd", nonBlocking: true, semaphore: false, counter: "zero" };
  return handshakeSteps({
    protocol: OFFERED_PROTOCOL_FEATURES,
    features: HANDSHAKE_FEATURES,
    memory: { kind: "memfd", size: GUEST_SIZE, sealing: "sealed" },
    mmapOffset: 0,
    num: 256,
    rings,
    kick: [eventfd, eventfd, eventfd, eventfd],
    call: [eventfd, eventfd, eventfd, eventfd],
    status: 0xf,
    ack: true,
  });
}

/** The poke offset of a handshake is guest-physical: the file offset adds the region's mmap offset. */
export function pokeFileOffset(script: SessionScript, offset: number): number {
  for (const s of script.steps) {
    if (s.type === "message" && s.request === R.SET_MEM_TABLE && s.fds[0]?.tag === "guest") {
      return offset +
        Number(new DataView(s.payload.buffer, s.payload.byteOffset).getBigUint64(32, true));
    }
  }
  return offset;
}

/**
 * A session: a plausible handshake (whole, or with steps dropped) with
 * random steps inserted at random places, so that garbage arrives both
 * before the device is configured and while it runs.
 */
export const sessionScriptArb: fc.Arbitrary<SessionScript> = fc.record({
  driver: fc.oneof(
    { arbitrary: fc.constant("recording" as const), weight: 6 },
    { arbitrary: fc.constant("failing" as const), weight: 1 },
    { arbitrary: fc.constant("sim" as const), weight: 2 },
  ),
  queues: fc.constantFrom(1, 1, 2),
  allowUnsealed: fc.boolean(),
  handshake: handshakeParamsArb.map(handshakeSteps).chain((steps) =>
    fc.oneof(
      { arbitrary: fc.constant(steps), weight: 6 },
      { arbitrary: fc.subarray(steps), weight: 2 },
      { arbitrary: fc.constant([] as SessionStep[]), weight: 1 },
    )
  ),
  // Guest traffic right after the handshake, while the device runs and before any garbage.
  traffic: fc.array(trafficArb, { maxLength: 4 }),
  // Where each extra step goes: -1 after the handshake (the device running), else that index.
  extra: fc.array(
    fc.tuple(
      fc.oneof({ arbitrary: fc.constant(-1), weight: 2 }, { arbitrary: fc.nat(), weight: 1 }),
      sessionStepArb,
    ),
    { maxLength: 10 },
  ),
}).map(({ driver, queues, allowUnsealed, handshake, traffic, extra }) => {
  const steps: SessionStep[] = [...handshake, ...traffic];
  for (const [at, step] of extra) {
    if (at < 0) steps.push(step);
    else steps.splice(at % (steps.length + 1), 0, step);
  }
  return { driver, queues, allowUnsealed, steps };
});

// ---------------------------------------------------------------------------
// Split rings

/** A region of guest memory for the ring target: a JavaScript buffer at `gpa`. */
export interface RingRegion {
  /** Guest-physical address. */
  gpa: number;
  /** Bytes. */
  size: number;
}

/** Where a descriptor points: relative to a region, at an indirect table, or raw 64-bit. */
export type AddrChoice =
  | {
    /** Region index (modulo the region count). */
    region: number;
    /** Where in it, given the buffer's length: at the start, inside, ending exactly at the end, straddling the end, just past it, just before it. */
    where: "start" | "inside" | "tail" | "straddle" | "past" | "before";
    /** Offset for `inside` (modulo the size). */
    offset: number;
  }
  | {
    /** Indirect table index (modulo the table count). */
    table: number;
  }
  | {
    /** A raw 64-bit address. */
    raw: bigint;
  };

/** One descriptor as generated. */
export interface DescChoice {
  /** Where its buffer is. */
  addr: AddrChoice;
  /** `len` (any u32); for an indirect descriptor, usually its table's size. */
  len: number;
  /** `flags` (any u16, usually NEXT/WRITE/INDIRECT). */
  flags: number;
  /** `next` (any u16, usually an index of the ring). */
  next: number;
  /** For an indirect descriptor: use the table's exact byte length. */
  exactTableLen: boolean;
}

/** An operation on a device queue. */
export type RingOp =
  | { op: "pop" }
  | { op: "push"; head: number | "last"; len: number }
  | { op: "publish" }
  | { op: "notify" }
  | { op: "enable" }
  | { op: "disable" }
  | { op: "avail-idx"; delta: number }
  | { op: "avail-entry"; slot: number; head: number }
  | { op: "desc"; index: number; desc: DescChoice };

/** A split ring over arbitrary memory and contents, and what the device does with it. */
export interface RingCase {
  /** 1 to 4 regions sorted by address, with gaps (0 = adjacent). */
  regions: RingRegion[];
  /** Queue size. */
  num: number;
  /** Region holding the ring, and byte offsets of its three areas (aligned unless `misaligned`). */
  ring: { region: number; desc: number; avail: number; used: number };
  /** Descriptor table contents. */
  descriptors: DescChoice[];
  /** Indirect tables written into memory. */
  tables: { at: AddrChoice; entries: DescChoice[] }[];
  /** Available ring: flags, idx (relative to the device's last available index), entries, used_event. */
  avail: { flags: number; idxDelta: number; ring: number[]; usedEvent: number };
  /** `used.idx` in memory. */
  usedIdx: number;
  /** Queue options. */
  options: { lastAvailIdx: number; eventIdx: boolean; indirect: boolean; maxChainLength?: number };
  /** What the device does. */
  ops: RingOp[];
}

/**
 * Descriptor flags: mostly those of a well-formed chain (NEXT, WRITE, both,
 * none), so that chains get long enough to matter; INDIRECT and its bad
 * combinations less often; rarely garbage in the unused bits.
 */
export const flagBitsArb: fc.Arbitrary<number> = fc.oneof(
  { arbitrary: fc.constantFrom(0, 1, 2, 3), weight: 12 },
  { arbitrary: fc.constant(4), weight: 3 },
  { arbitrary: fc.constantFrom(5, 6, 7), weight: 1 },
  { arbitrary: fc.nat(0xffff), weight: 1 },
);

/**
 * Where a descriptor points: mostly at an edge of a region (start, inside,
 * ending at its end, straddling it, just past or before it), sometimes a raw
 * 64-bit address, and with `tables` > 0 often at one of the indirect tables.
 */
export function addrChoiceArb(tables: number): fc.Arbitrary<AddrChoice> {
  const options: fc.WeightedArbitrary<AddrChoice>[] = [
    {
      arbitrary: fc.record({
        region: fc.nat(3),
        where: fc.oneof(
          { arbitrary: fc.constantFrom("start" as const, "tail" as const), weight: 4 },
          { arbitrary: fc.constant("inside" as const), weight: 4 },
          {
            arbitrary: fc.constantFrom("straddle" as const, "past" as const, "before" as const),
            weight: 2,
          },
        ),
        offset: fc.nat(),
      }),
      weight: 8,
    },
    {
      arbitrary: fc.oneof(
        fc.constantFrom(0n, 2n ** 32n, 2n ** 53n - 1n, 2n ** 53n, 0x200000n << 32n, U64_MAX),
        u64Arb,
      ).map((raw) => ({ raw })),
      weight: 1,
    },
  ];
  if (tables > 0) options.push({ arbitrary: fc.record({ table: fc.nat(tables - 1) }), weight: 3 });
  return fc.oneof(...options);
}

/** A descriptor's `len`: mostly small and non-zero, sometimes 0, a page, or up to 2^32 - 1. */
export const descLenArb: fc.Arbitrary<number> = fc.oneof(
  { arbitrary: fc.constantFrom(0, 1, 16, 64, 4096, 0x7fffffff, 0xffffffff), weight: 2 },
  { arbitrary: fc.integer({ min: 1, max: 256 }), weight: 4 },
  { arbitrary: fc.nat(4096), weight: 1 },
);

function descChoiceArb(num: number, tables: number): fc.Arbitrary<DescChoice> {
  return fc.record({
    addr: addrChoiceArb(tables),
    len: descLenArb,
    flags: flagBitsArb,
    next: fc.oneof(
      { arbitrary: fc.nat(num - 1), weight: 8 },
      { arbitrary: fc.constantFrom(num, num + 1, 0xffff), weight: 1 },
    ),
    exactTableLen: fc.oneof({ arbitrary: fc.constant(true), weight: 4 }, {
      arbitrary: fc.constant(false),
      weight: 1,
    }),
  });
}

function ringOpArb(num: number, tables: number): fc.Arbitrary<RingOp> {
  return fc.oneof(
    { arbitrary: fc.constant({ op: "pop" as const }), weight: 10 },
    {
      arbitrary: fc.record({
        op: fc.constant("push" as const),
        head: fc.oneof(
          { arbitrary: fc.constant("last" as const), weight: 6 },
          { arbitrary: fc.constantFrom(-1, num, 0xffff, 0.5, Number.NaN), weight: 1 },
          { arbitrary: fc.nat(num - 1), weight: 1 },
        ),
        len: fc.oneof(fc.nat(4096), fc.constant(0xffffffff)),
      }),
      weight: 4,
    },
    { arbitrary: fc.constant({ op: "publish" as const }), weight: 3 },
    { arbitrary: fc.constant({ op: "notify" as const }), weight: 3 },
    { arbitrary: fc.constant({ op: "enable" as const }), weight: 2 },
    { arbitrary: fc.constant({ op: "disable" as const }), weight: 2 },
    {
      arbitrary: fc.record({
        op: fc.constant("avail-idx" as const),
        delta: fc.oneof({ arbitrary: fc.nat(num), weight: 6 }, {
          arbitrary: fc.nat(0xffff),
          weight: 1,
        }),
      }),
      weight: 2,
    },
    {
      arbitrary: fc.record({
        op: fc.constant("avail-entry" as const),
        slot: fc.nat(num - 1),
        head: fc.oneof(fc.nat(num - 1), fc.nat(0xffff)),
      }),
      weight: 2,
    },
    {
      arbitrary: fc.record({
        op: fc.constant("desc" as const),
        index: fc.nat(num - 1),
        desc: descChoiceArb(num, tables),
      }),
      weight: 2,
    },
  );
}

/** Bytes the three ring areas need for a queue of `num`, with alignment slack. */
export function ringBytes(num: number): number {
  return 16 * num + (6 + 2 * num) + (6 + 8 * num) + 128;
}

/**
 * `count` regions sorted by address, each a JavaScript buffer, with gaps
 * between them or adjacent; region `ringRegion` holds the ring: at least
 * `ringSize` bytes, at a 16-byte aligned address.
 */
export function ringRegionsArb(
  count: number,
  ringSize: number,
): fc.Arbitrary<{ regions: RingRegion[]; ringRegion: number }> {
  return fc.tuple(
    fc.oneof(fc.constantFrom(0, 0x1000, 2 ** 32, 2 ** 52), fc.nat(2 ** 20).map((p) => p * 4096)),
    fc.array(
      fc.tuple(
        fc.oneof(fc.constantFrom(16, 256, 4096, 8192, 65536), fc.integer({ min: 1, max: 20000 })),
        fc.oneof({ arbitrary: fc.constant(0), weight: 2 }, {
          arbitrary: fc.nat(1 << 20),
          weight: 1,
        }),
      ),
      { minLength: count, maxLength: count },
    ),
    fc.nat(3),
  ).map(([base, shapes, ringRegion]) => {
    // The ring's region is large enough and 16-byte aligned (host buffers start aligned).
    const r = ringRegion % count;
    const regions: RingRegion[] = [];
    let at = base;
    shapes.forEach(([size, gap], i) => {
      if (i === r) at = Math.ceil(at / 16) * 16;
      const s = i === r ? Math.max(size, ringSize) : size;
      regions.push({ gpa: at, size: s });
      at += s + gap;
    });
    return { regions, ringRegion: r };
  });
}

/** A ring case: memory, ring placement and contents, options, and a sequence of device operations. */
export const ringCaseArb: fc.Arbitrary<RingCase> = fc.record({
  num: fc.constantFrom(1, 2, 4, 8, 8, 16, 16, 64, 256),
  count: fc.integer({ min: 1, max: 4 }),
  tables: fc.nat(3),
}).chain(({ num, count, tables }) =>
  fc.record({
    regions: ringRegionsArb(count, ringBytes(num)),
    skew: fc.nat(4),
    misaligned: fc.oneof({ arbitrary: fc.constant(0), weight: 20 }, {
      arbitrary: fc.constantFrom(1, 2, 8),
      weight: 1,
    }),
    // Linked: descriptor i continues at i + 1, as a driver lays out a fresh ring.
    descriptors: fc.tuple(
      fc.array(descChoiceArb(num, tables), { minLength: num, maxLength: num }),
      fc.boolean(),
    )
      .map(([descs, linked]) =>
        linked ? descs.map((d, i) => ({ ...d, next: (i + 1) % num })) : descs
      ),
    tables: fc.array(
      fc.record({
        at: addrChoiceArb(0),
        entries: fc.array(descChoiceArb(num, 0), { minLength: 1, maxLength: num + 2 }),
      }),
      { minLength: tables, maxLength: tables },
    ),
    avail: fc.record({
      flags: fc.constantFrom(0, 1, 0xffff),
      idxDelta: fc.oneof(
        { arbitrary: fc.nat(num), weight: 6 },
        { arbitrary: fc.constantFrom(num + 1, 0x8000, 0xffff), weight: 1 },
      ),
      ring: fc.array(
        fc.oneof({ arbitrary: fc.nat(num - 1), weight: 8 }, {
          arbitrary: fc.nat(0xffff),
          weight: 1,
        }),
        { minLength: num, maxLength: num },
      ),
      usedEvent: fc.nat(0xffff),
    }),
    usedIdx: fc.oneof(fc.constant(0), fc.nat(0xffff)),
    options: fc.record({
      lastAvailIdx: fc.oneof(fc.constantFrom(0, 0xffff, 0xfffe, 0x8000), fc.nat(0xffff)),
      eventIdx: fc.boolean(),
      indirect: fc.oneof({ arbitrary: fc.constant(true), weight: 2 }, {
        arbitrary: fc.constant(false),
        weight: 1,
      }),
      maxChainLength: fc.option(fc.integer({ min: 1, max: num }), { nil: undefined }),
    }),
    ops: fc.array(ringOpArb(num, tables), { minLength: 1, maxLength: 40 }),
  }).map(({ regions: { regions, ringRegion }, skew, misaligned, ...rest }) => {
    // Desc table, then avail ring, then used ring, `skew` aligned steps apart.
    const desc = skew * 16 + misaligned;
    const avail = Math.ceil((desc + 16 * num) / 2) * 2 + misaligned;
    const used = Math.ceil((avail + 6 + 2 * num) / 4) * 4 + misaligned;
    return { num, regions, ring: { region: ringRegion, desc, avail, used }, ...rest };
  })
);

// ---------------------------------------------------------------------------
// Memory tables

/** One region of a memory table as generated, relative to the case's files. */
export interface MemRegionChoice {
  /** Index into the case's files (modulo their count). */
  file: number;
  /** Guest-physical address. */
  gpa: number;
  /** Size. */
  size: number | "rest" | "rest+1";
  /** Frontend virtual address. */
  uva: number;
  /** Offset into the file. */
  mmapOffset: number | "end" | "last-page";
}

/** An operation on the tables of a memory case. */
export type MemOp =
  | { op: "with"; table: number; region: MemRegionChoice }
  | { op: "without"; table: number; pick: number; exact: boolean }
  | { op: "close"; table: number }
  | { op: "lease"; table: number }
  | {
    op: "probe";
    table: number;
    space: "gpa" | "uva";
    region: number;
    where: "start" | "inside" | "tail" | "straddle" | "past" | "before" | "raw";
    offset: number;
    length: number;
  };

/** Files, a first table, the sealing policy, and operations on tables derived from it. */
export interface MemoryCase {
  /** Files the regions use. */
  files: FdSpec[];
  /** Regions of the first table (`GuestMemory.map`). */
  regions: MemRegionChoice[];
  /** Passed as `allowUnsealed`. */
  allowUnsealed: boolean;
  /** Passed as `maxBytes` (the table size limit), or the default. */
  maxBytes?: number;
  /** What is done with the tables. */
  ops: MemOp[];
}

/** A region's address: spread out by index (so that tables map), or an edge (so that they don't). */
function regionAddressArb(): fc.Arbitrary<number> {
  return fc.oneof(
    {
      arbitrary: fc.tuple(fc.nat(7), fc.nat(15)).map(([slot, page]) =>
        slot * 2 ** 41 + page * 4096
      ),
      weight: 6,
    },
    { arbitrary: addressArb, weight: 2 },
  );
}

/**
 * A region: mostly one that fits its file (so that tables get made and
 * probed), otherwise any mix of sizes and offsets that tables must refuse
 * or map correctly: empty, one byte past the file, 2^45, 2^53, unaligned.
 */
const memRegionChoiceArb: fc.Arbitrary<MemRegionChoice> = fc.oneof(
  {
    arbitrary: fc.record({
      file: fc.nat(3),
      gpa: regionAddressArb(),
      size: fc.constantFrom("rest" as const, "rest" as const, 4096),
      uva: regionAddressArb(),
      mmapOffset: fc.constantFrom(0, 0, 4096, 1, "last-page" as const),
    }),
    weight: 4,
  },
  {
    arbitrary: fc.record({
      file: fc.nat(3),
      gpa: regionAddressArb(),
      size: fc.oneof(
        { arbitrary: fc.constantFrom("rest" as const, 4096, 65536), weight: 4 },
        { arbitrary: fc.constantFrom(0, 1, 4097, "rest+1" as const, SPARSE, MAX), weight: 2 },
        { arbitrary: fc.nat(1 << 21), weight: 1 },
      ),
      uva: regionAddressArb(),
      mmapOffset: fc.oneof(
        { arbitrary: fc.constant(0), weight: 4 },
        {
          arbitrary: fc.constantFrom(
            1,
            4095,
            4096,
            12345,
            "end" as const,
            "last-page" as const,
            SPARSE - 4096,
            SPARSE + 1,
          ),
          weight: 3,
        },
        { arbitrary: fc.constantFrom(MAX, 2 ** 53), weight: 1 },
      ),
    }),
    weight: 1,
  },
);

const memOpArb: fc.Arbitrary<MemOp> = fc.oneof(
  {
    arbitrary: fc.record({
      op: fc.constant("probe" as const),
      table: fc.oneof({ arbitrary: fc.constant(0), weight: 3 }, {
        arbitrary: fc.nat(4),
        weight: 1,
      }),
      space: fc.constantFrom("gpa" as const, "uva" as const),
      region: fc.nat(5),
      where: fc.oneof(
        {
          arbitrary: fc.constantFrom("start" as const, "inside" as const, "tail" as const),
          weight: 3,
        },
        {
          arbitrary: fc.constantFrom(
            "straddle" as const,
            "past" as const,
            "before" as const,
            "raw" as const,
          ),
          weight: 1,
        },
      ),
      offset: fc.oneof(fc.nat(), addressArb),
      length: fc.oneof(
        { arbitrary: fc.constantFrom(0, 1, 2, 8, 4096), weight: 6 },
        { arbitrary: fc.nat(1 << 20), weight: 2 },
        { arbitrary: fc.constantFrom(-1, 0.5, Number.NaN, Infinity, MAX, 2 ** 53), weight: 1 },
      ),
    }),
    weight: 8,
  },
  {
    arbitrary: fc.record({
      op: fc.constant("with" as const),
      table: fc.nat(4),
      region: memRegionChoiceArb,
    }),
    weight: 3,
  },
  {
    arbitrary: fc.record({
      op: fc.constant("without" as const),
      table: fc.nat(4),
      pick: fc.nat(5),
      exact: fc.boolean(),
    }),
    weight: 2,
  },
  { arbitrary: fc.record({ op: fc.constant("close" as const), table: fc.nat(4) }), weight: 1 },
  { arbitrary: fc.record({ op: fc.constant("lease" as const), table: fc.nat(4) }), weight: 1 },
);

/** A memory case: 1 to 4 files of any kind (mostly memfds), 0 to 5 regions, 1 to 30 operations. */
export const memoryCaseArb: fc.Arbitrary<MemoryCase> = fc.record({
  files: fc.array(
    fc.oneof(
      {
        arbitrary: fc.record({
          kind: fc.constant("memfd" as const),
          size: fc.constantFrom(
            4096,
            65536,
            3 * 4096 + 17,
            1 << 20,
            SPARSE_FILE_SIZE,
            SPARSE_FILE_SIZE,
            0,
          ),
          sealing: fc.oneof(
            { arbitrary: fc.constantFrom("sealed" as const, "sealable" as const), weight: 3 },
            { arbitrary: sealingArb, weight: 1 },
          ),
        }),
        weight: 6,
      },
      { arbitrary: fdSpecArb, weight: 1 },
    ),
    { minLength: 1, maxLength: 4 },
  ),
  regions: fc.array(memRegionChoiceArb, { minLength: 1, maxLength: 5 }),
  allowUnsealed: fc.boolean(),
  maxBytes: fc.oneof(
    { arbitrary: fc.constant(undefined), weight: 4 },
    { arbitrary: fc.constantFrom(0, 4096, 1 << 20, SPARSE, 2 ** 46, MAX), weight: 1 },
  ),
  ops: fc.array(memOpArb, { minLength: 1, maxLength: 30 }),
});
