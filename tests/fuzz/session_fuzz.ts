/**
 * Fuzz target `session`: a frontend sends arbitrary message sequences
 * (plausible handshakes with garbage mixed in, every request code, lying
 * headers, wrong payload sizes, u64 edges) carrying real fds of every kind
 * over a socket pair to a {@linkcode VhostUserSession} bound to an
 * in-process device (the recording test driver, the same driver failing
 * every `start`, or the sim driver in loopback mode). It also kicks rings,
 * scribbles over the guest memory it shared, and adds memory regions by the
 * dozen.
 *
 * Invariants, checked after every case:
 *
 * - `run()` resolves (never rejects) once the frontend hangs up, within
 *   seconds; the device closes within seconds.
 * - No reason the session ended with, and no device `error` event, reads
 *   like a JavaScript engine error (TypeError, RangeError, "undefined",
 *   "Cannot read", ...): only the SDK's typed errors may end a session.
 * - Nothing is thrown where nobody catches it (unhandled rejections and
 *   uncaught errors are recorded while the target runs).
 * - The device never holds more than `MAX_MEM_SLOTS` regions.
 * - The kick relay calls `notify` only for kicks (no storm from a kick fd
 *   that is not an eventfd). A semaphore-mode eventfd holding a huge count
 *   is that many kicks, so a case with one is not checked for storms.
 * - Once the device is closed and the frontend's fds too, the process has
 *   the fds and file mappings it had before the case.
 *
 * @module
 */

import { type DeviceEvent, type Driver, VhostMdevDevice } from "@vhost-mdev/sdk";
import {
  decodeVringState,
  FrontendRequest,
  MAX_MEM_SLOTS,
  VhostUserSession,
  VRING_STATE_SIZE,
} from "@vhost-mdev/sdk/vhost-user";
import {
  close,
  eventfdWrite,
  ioctl,
  openFdCount,
  POLLOUT,
  pollSync,
  pwrite,
  recvMsg,
  sendMsg,
  setNonBlocking,
  socketPair,
  SysError,
} from "@vhost-mdev/sdk/sys";
import { driver as simDriver } from "@vhost-mdev/sim";
import { type Recorder, recordingDriver } from "../support/recording_driver.ts";
import {
  describeError,
  encodeWire,
  fc,
  FdPool,
  type FuzzOptions,
  type FuzzReport,
  InvariantBroken,
  plainHandshake,
  pokeFileOffset,
  ringOffset,
  runProperty,
  type SessionScript,
  sessionScriptArb,
  type SessionStep,
  singleRegionBytes,
  type TrafficStep,
  type WireMessage,
} from "./arbitraries.ts";
import { guestMappingCount } from "./memory_fuzz.ts";

/** `TIOCOUTQ`/`SIOCOUTQ`: bytes sent on a socket that the peer has not read yet. */
const SIOCOUTQ = 0x5411;
/** How long the session may take to read one message, or to end after the hang-up. */
const STEP_TIMEOUT_MS = 5000;
/** How long the device may take to close. */
const CLOSE_TIMEOUT_MS = 10000;
/** How long fd and mapping counts may take to settle (Workers end asynchronously). */
const SETTLE_MS = 2000;
/** How long a running device is left running after the last step. */
const DWELL_MS = 10;
/** `notify` calls tolerated beyond the kicks sent (eventfds that started at 1, relay timing). */
const NOTIFY_SLACK = 16;

/**
 * Text that only a JavaScript engine error (or a value that should never be
 * printed) puts in a message; the SDK's own errors never say these.
 */
export const ENGINE_ERROR_TEXT: RegExp =
  /TypeError|RangeError|ReferenceError|SyntaxError|undefined|Cannot read|Cannot set|is not a function|is not iterable|is not defined|Maximum call stack|Invalid array length|Invalid typed array length|outside the bounds|Cannot convert|Cannot mix BigInt|\bNaN\b/;

/** Why `text` (an end reason or an error event) looks like an untyped failure, or null. */
export function untypedFailure(text: string): string | null {
  const m = ENGINE_ERROR_TEXT.exec(text);
  return m ? `"${m[0]}" in: ${text}` : null;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Resolve with `p`'s value, or with `timedOut` after `ms`; the timer never outlives the race. */
async function within<T, U>(p: Promise<T>, ms: number, timedOut: U): Promise<T | U> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<U>((r) => timer = setTimeout(() => r(timedOut), ms)),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Uncaught errors and unhandled rejections while the session target runs. */
class UncaughtRecorder {
  readonly seen: string[] = [];
  #onRejection = (e: PromiseRejectionEvent) => {
    e.preventDefault();
    this.seen.push(`unhandled rejection: ${describeError(e.reason)}`);
  };
  #onError = (e: ErrorEvent) => {
    e.preventDefault();
    this.seen.push(`uncaught error: ${e.message}`);
  };

  install(): void {
    globalThis.addEventListener("unhandledrejection", this.#onRejection);
    globalThis.addEventListener("error", this.#onError);
  }

  remove(): void {
    globalThis.removeEventListener("unhandledrejection", this.#onRejection);
    globalThis.removeEventListener("error", this.#onError);
  }
}

/** How the session's `run()` settled. */
export type Settled = { ok: true; reason: string } | { ok: false; error: unknown };

/** One case: a device, a session on one end of a socket pair, the frontend on the other. */
export class SessionCase {
  /** Every event the device emitted. */
  readonly events: DeviceEvent[] = [];
  /** The frontend's fds. */
  readonly pool: FdPool = new FdPool();
  /** The recording driver, when the case uses it. */
  readonly recorder: Recorder | null;
  /** Kicks the frontend signalled. */
  kicks = 0;
  #settled: Settled | null = null;
  #frontend = -1;
  #reply = new Uint8Array(8192);
  /** The guest driver's `avail.idx` per ring, as traffic steps moved it. */
  #availIdx: number[] = [];

  /**
   * Prepare a case.
   *
   * @param script What the frontend does.
   */
  constructor(readonly script: SessionScript) {
    this.recorder = script.driver === "sim"
      ? null
      : recordingDriver({ failStart: script.driver === "failing" });
  }

  /** How `run()` of the session settled, once it has. */
  get settled(): Settled | null {
    return this.#settled;
  }

  /** Run the script; returns what broke, or null. */
  async run(): Promise<string | null> {
    const { script } = this;
    const driver: Driver = this.recorder?.driver ?? simDriver;
    const device = await VhostMdevDevice.create(
      driver,
      { queues: script.queues, options: script.driver === "sim" ? { mode: "loopback" } : {} },
      {
        name: "fuzz",
        listener: (e) => this.events.push(e),
        allowUnsealedMemory: script.allowUnsealed,
      },
    );
    const [frontend, backend] = socketPair();
    this.#frontend = frontend;
    setNonBlocking(frontend, true);
    // The session owns `backend` from here on.
    const session = new VhostUserSession(backend, device, "fuzz frontend");
    if (!device.attach(session)) {
      session.close("refused");
      close(frontend);
      await device.close();
      return "a fresh device refused its first frontend";
    }
    const done = session.run().then(
      (reason) => this.#settled = { ok: true, reason },
      (error) => this.#settled = { ok: false, error },
    );
    let problem: string | null = null;
    try {
      for (const [i, step] of script.steps.entries()) {
        if (this.#settled) break;
        problem = await this.#step(step, i);
        if (problem) break;
        if (device.memory.regions.length > MAX_MEM_SLOTS) {
          problem = `step ${i}: the device holds ${device.memory.regions.length} regions, ` +
            `more than its ${MAX_MEM_SLOTS} slots`;
          break;
        }
      }
      problem ??= await this.#consumed("the last step");
      // A running device is left running a moment before the hang-up, so
      // that its Workers act on what they were given (kicks, hostile rings).
      if (!problem && device.running) await sleep(DWELL_MS);
    } finally {
      // Hang up, then the session must end by itself.
      close(frontend);
      this.#frontend = -1;
      if ((await within(done, STEP_TIMEOUT_MS, "timeout")) === "timeout") {
        problem ??= `run() did not resolve within ${STEP_TIMEOUT_MS} ms of the frontend hanging up`;
        session.close("fuzz: forced");
        await within(done, STEP_TIMEOUT_MS, null);
      }
      const closed = await within(device.close().then(() => true), CLOSE_TIMEOUT_MS, false);
      if (!closed) problem ??= `the device did not close within ${CLOSE_TIMEOUT_MS} ms`;
      this.pool.closeAll();
    }
    return problem ?? this.#verdict();
  }

  /** What the end reason, the events and the driver's calls say about the case. */
  #verdict(): string | null {
    const s = this.#settled;
    if (s === null) return "run() never settled";
    if (!s.ok) return `run() rejected: ${describeError(s.error)}`;
    const untyped = untypedFailure(s.reason);
    if (untyped) return `session ended with an untyped error: ${untyped}`;
    for (const e of this.events) {
      if (e.type !== "error") continue;
      const bad = untypedFailure(e.message);
      if (bad) return `device error event with an untyped error: ${bad}`;
    }
    if (this.recorder && !this.#unboundedKicks()) {
      const notified = this.recorder.count("notify");
      const kickFds = this.#kickMessages().length;
      if (notified > this.kicks + kickFds + NOTIFY_SLACK) {
        return `kick storm: the driver was notified ${notified} times for ${this.kicks} kicks`;
      }
    }
    return null;
  }

  #kickMessages(): WireMessage[] {
    return this.script.steps.filter((s): s is WireMessage =>
      s.type === "message" && s.request === FrontendRequest.SET_VRING_KICK
    );
  }

  /**
   * Whether a kick fd was a semaphore-mode eventfd holding a huge count:
   * that is that many kicks by eventfd semantics, each read taking one, so
   * the driver may be notified without end and it is not a storm.
   */
  #unboundedKicks(): boolean {
    return this.#kickMessages().some((m) =>
      m.fds.some((r) => r.spec.kind === "eventfd" && r.spec.semaphore && r.spec.counter === "full")
    );
  }

  async #step(step: SessionStep, i: number): Promise<string | null> {
    switch (step.type) {
      case "message":
        return await this.#send(step, i);
      case "kick":
        this.#kick(step.ring);
        return null;
      case "traffic":
        this.#traffic(step);
        return null;
      case "poke":
        this.#guestWrite(step.offset, step.bytes);
        return null;
      case "add-regions": {
        for (let k = 0; k < step.count && !this.#settled; k++) {
          const m: WireMessage = {
            type: "message",
            request: FrontendRequest.ADD_MEM_REG,
            flags: 1,
            payload: singleRegionBytes({
              gpa: BigInt(2 ** 40 + k * 4096),
              size: 4096n,
              uva: BigInt(2 ** 44 + k * 4096),
              mmapOffset: 0n,
            }),
            sizeDelta: 0,
            fds: [{ spec: { kind: "memfd", size: 4096, sealing: step.sealing } }],
          };
          const problem = await this.#send(m, i);
          if (problem) return problem;
        }
        return null;
      }
    }
  }

  #kick(ring: number): void {
    const k = this.pool.tagged(`kick${ring}`);
    if (k === undefined) return;
    // Our copy may still be blocking (the SDK sets O_NONBLOCK only on fds it
    // accepts), and a write to a saturated eventfd would block this thread.
    if ((pollSync([{ fd: k.fd, events: POLLOUT }], 0)[0] & POLLOUT) === 0) return;
    try {
      eventfdWrite(k.fd, 1);
      this.kicks++;
    } catch (e) {
      // Not an eventfd (the case sent another kind).
      if (!(e instanceof SysError)) throw e;
    }
  }

  /** Write `bytes` at guest-physical `gpa` of the handshake's memory, if it is there. */
  #guestWrite(gpa: number, bytes: Uint8Array): void {
    const g = this.pool.tagged("guest");
    if (g === undefined || g.size < 0) return;
    const at = pokeFileOffset(this.script, gpa);
    if (at + bytes.length > g.size) return;
    try {
      pwrite(g.fd, bytes, at);
    } catch (e) {
      // A write-sealed memfd, or an fd that cannot be written.
      if (!(e instanceof SysError)) throw e;
    }
  }

  /** The ring size the script set for `ring` (the handshake's), or 256. */
  #ringSize(ring: number): number {
    for (const s of this.script.steps) {
      if (s.type !== "message" || s.request !== FrontendRequest.SET_VRING_NUM) continue;
      if (s.payload.length !== VRING_STATE_SIZE) continue;
      const { index, num } = decodeVringState({ ...s, fds: [] });
      if (index === ring && num > 0) return num;
    }
    return 256;
  }

  /** Be the guest driver of `step.ring`: descriptors, available heads, index, kick. */
  #traffic(step: TrafficStep): void {
    const num = this.#ringSize(step.ring);
    const desc = ringOffset(step.ring), avail = desc + 0x10000;
    for (const d of step.descriptors) {
      const b = new Uint8Array(16);
      const v = new DataView(b.buffer);
      v.setBigUint64(0, BigInt.asUintN(64, d.addr), true);
      v.setUint32(8, d.len >>> 0, true);
      v.setUint16(12, d.flags & 0xffff, true);
      v.setUint16(14, d.next & 0xffff, true);
      this.#guestWrite(desc + 16 * (d.index % num), b);
    }
    const idx = this.#availIdx[step.ring] ?? 0;
    step.heads.forEach((h, k) => {
      this.#guestWrite(avail + 4 + 2 * ((idx + k) % num), new Uint8Array([h & 0xff, h >> 8]));
    });
    const next = (idx + step.advance) & 0xffff;
    this.#availIdx[step.ring] = next;
    this.#guestWrite(avail + 2, new Uint8Array([next & 0xff, next >> 8]));
    if (step.kick) this.#kick(step.ring);
  }

  /** Send one message with its fds, then wait until the session has read it. */
  async #send(m: WireMessage, i: number): Promise<string | null> {
    const bytes = encodeWire(m);
    const fds = m.fds.map((r) =>
      (r.reuse !== undefined ? this.pool.tagged(r.reuse) : undefined) ??
        this.pool.make(r.spec, r.tag)
    ).map((o) => o.fd);
    const deadline = Date.now() + STEP_TIMEOUT_MS;
    let off = 0;
    while (off < bytes.length) {
      try {
        off += sendMsg(this.#frontend, bytes.subarray(off), off === 0 ? fds : []);
      } catch (e) {
        if (!(e instanceof SysError)) throw e;
        if (e.code === "EPIPE" || e.code === "ECONNRESET") return null; // the session hung up
        if (e.code !== "EAGAIN") throw e;
        this.#drain();
        if (this.#settled) return null;
        if (Date.now() > deadline) return `step ${i}: the session stopped reading its socket`;
        await sleep(1);
      }
    }
    return await this.#consumed(`step ${i}`);
  }

  /** Wait until every byte sent was read by the session (or it ended). */
  async #consumed(what: string): Promise<string | null> {
    const deadline = Date.now() + STEP_TIMEOUT_MS;
    const out = new Int32Array(1);
    for (;;) {
      this.#drain();
      if (this.#settled) return null;
      ioctl(this.#frontend, SIOCOUTQ, new Uint8Array(out.buffer));
      if (out[0] === 0) break;
      if (Date.now() > deadline) {
        return `${what}: the session left ${out[0]} bytes unread for ${STEP_TIMEOUT_MS} ms`;
      }
      await sleep(0);
    }
    // Let the handler run past its first await.
    await sleep(0);
    return null;
  }

  /** Read and drop the session's replies (closing any fd it sent). */
  #drain(): void {
    for (;;) {
      try {
        const r = recvMsg(this.#frontend, this.#reply, 8);
        for (const fd of r.fds) close(fd);
        if (r.bytes === 0) return;
      } catch (e) {
        // Nothing queued; or the session hung up with our bytes unread.
        if (e instanceof SysError && (e.code === "EAGAIN" || e.code === "ECONNRESET")) return;
        throw e;
      }
    }
  }
}

/** Wait until `count()` is back at `want` (Workers release their fds asynchronously). */
async function settles(count: () => number, want: number): Promise<number> {
  const end = Date.now() + SETTLE_MS;
  let n = count();
  while (n !== want && Date.now() < end) {
    await sleep(20);
    n = count();
  }
  return n;
}

/** What one run of a script left behind: fds and file mappings beyond the count before it. */
async function runOnce(
  script: SessionScript,
  uncaught: { seen: string[] },
): Promise<{ fds: number; maps: number; ended: string }> {
  const fdsBefore = openFdCount();
  const mapsBefore = guestMappingCount();
  const c = new SessionCase(script);
  let problem: string | null;
  try {
    problem = await c.run();
  } catch (e) {
    problem = `the case threw ${describeError(e)}`;
  }
  if (problem) throw new InvariantBroken(problem);
  if (uncaught.seen.length) throw new InvariantBroken(uncaught.seen.splice(0).join("; "));
  const fds = await settles(openFdCount, fdsBefore) - fdsBefore;
  const maps = await settles(guestMappingCount, mapsBefore) - mapsBefore;
  const ended = c.settled?.ok ? c.settled.reason : "no end reason";
  return { fds, maps, ended };
}

/**
 * Run one script and check every invariant; throws {@linkcode InvariantBroken}.
 * Leaks are counted from just before the case. Some runtime resources are
 * made on first use and kept for the process (a Worker's first message of
 * a kind, say), so a case that leaves something behind is run again: only
 * what it leaves behind the second time too is a leak.
 */
export async function checkSessionScript(
  script: SessionScript,
  uncaught: { seen: string[] },
): Promise<void> {
  const first = await runOnce(script, uncaught);
  if (first.fds === 0 && first.maps === 0) return;
  const again = await runOnce(script, uncaught);
  if (again.fds !== 0) {
    throw new InvariantBroken(
      `${again.fds} fd(s) left after the session ended and the device closed, ` +
        `on each of two runs (ended with: ${again.ended})`,
    );
  }
  if (again.maps !== 0) {
    throw new InvariantBroken(
      `${again.maps} file mapping(s) left after the device closed, on each of two runs ` +
        `(ended with: ${again.ended})`,
    );
  }
}

/** Run the session target for `numRuns` cases or `seconds`. */
export async function fuzzSession(options: FuzzOptions): Promise<FuzzReport> {
  const uncaught = new UncaughtRecorder();
  uncaught.install();
  try {
    // A Worker's first start creates runtime threads and fds that live for
    // the process: start both drivers' Workers once before counting.
    for (const driver of ["recording", "sim"] as const) {
      const steps = [...plainHandshake(), { type: "kick" as const, ring: 1 }];
      await new SessionCase({ driver, queues: 1, allowUnsealed: false, steps }).run();
    }
    uncaught.seen.length = 0;
    let runs = 0;
    const property = fc.asyncProperty(sessionScriptArb, async (script) => {
      options.progress?.(++runs);
      await checkSessionScript(script, uncaught);
    });
    return await runProperty("session", property, options);
  } finally {
    uncaught.remove();
  }
}
