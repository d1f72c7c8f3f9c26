/**
 * A Worker of the sim's datapath pool ({@linkcode DatapathPool}): it serves
 * the queue pairs of many devices, each a {@linkcode QueuePairDatapath}, in
 * turn, a batch per pair per turn, so no pair holds the others up. When
 * every pair is idle it polls them a moment, re-enables the guests' kicks,
 * looks once more, and sleeps in one synchronous `poll` on every pair's
 * kick fds and the pool's wake eventfd.
 *
 * Protocol: `{type: "add", id, setup}` (a {@linkcode DatapathSetup}) adds a
 * pair, answered `ready` or `fatal` then `stopped`; a pair whose control
 * words' stop flag is set is dropped and answered `stopped` with its rings'
 * next available indexes. Each `add` the main thread posts is counted in
 * the mailbox (Int32 word 1) before the wake eventfd is written: the Worker
 * compares that count with the messages it has read every turn (busy or
 * not) and lets its event loop turn until it has read them all (a message
 * can arrive after the first turn); the eventfd wakes it from `poll`. Word
 * 0 set to `QUIT` ends it. A pair that fails is answered `fatal` and
 * `stopped`; the others go on.
 *
 * @module
 */

import { GuestMemory } from "@vhost-mdev/sdk";
import { eventfdRead, pinThread, POLLERR, POLLIN, POLLNVAL, PollSet } from "@vhost-mdev/sdk/sys";
import { rateLimitedReports } from "@vhost-mdev/sdk/soft";
import { QueuePairDatapath, RingFailure, WAIT_RX, WAIT_TX } from "./datapath.ts";
import { CONTROL_STOP, type DatapathSetup, encodeBase } from "./protocol.ts";

/** Mailbox word 0 value the pool sets when it ends. */
const QUIT = 1;
/** How long the Worker polls idle pairs before it sleeps, in ms. */
const SPIN_MS = 0.05;
/** Sleep between looks at a ring without a kick fd, in ms. */
const NO_KICK_POLL_MS = 1;

/** What the pool posts to a Worker. */
export type PoolCommand =
  | { type: "init"; wakeFd: number; mailbox: SharedArrayBuffer; cpu: number | null }
  | { type: "add"; id: number; setup: DatapathSetup };

/** What a pool Worker posts. */
export type PoolMessage =
  | { type: "ready"; id: number }
  | { type: "warn"; id: number; message: string }
  | { type: "fatal"; id: number; message: string; ring?: number }
  | { type: "stopped"; id: number; rxBase: number; txBase: number };

interface Pair {
  id: number;
  setup: DatapathSetup;
  dp: QueuePairDatapath;
  control: Int32Array;
  mask: number;
}

const worker = globalThis as unknown as {
  onmessage: ((e: MessageEvent<PoolCommand>) => void) | null;
  postMessage(m: PoolMessage): void;
};

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

function drain(fd: number): void {
  try {
    eventfdRead(fd);
  } catch {
    // EAGAIN: already zero.
  }
}

let wakeFd = -1;
/** `add` messages read so far (the pool counts those it posted in mailbox word 1). */
let received = 0;
let mailbox: Int32Array<ArrayBufferLike> = new Int32Array(1);
const pairs = new Map<number, Pair>();
let running = false;

function add(id: number, setup: DatapathSetup): void {
  const send = rateLimitedReports((message) => worker.postMessage({ type: "warn", id, message }));
  const report = (ring: number, text: string) => send(`ring ${ring}: ${text}`);
  try {
    const dp = new QueuePairDatapath(
      GuestMemory.fromShared(setup.memory, setup.iotlb),
      setup,
      report,
    );
    dp.disableNotifications(WAIT_RX | WAIT_TX);
    pairs.set(id, { id, setup, dp, control: new Int32Array(setup.control), mask: 0 });
    worker.postMessage({ type: "ready", id });
  } catch (e) {
    const packed = setup.features.packed;
    worker.postMessage({ type: "fatal", id, message: `queue pair ${setup.pair}: ${message(e)}` });
    worker.postMessage({
      type: "stopped",
      id,
      rxBase: setup.rx ? encodeBase(setup.rx.position, packed) : 0,
      txBase: setup.tx ? encodeBase(setup.tx.position, packed) : 0,
    });
  }
}

function finish(p: Pair, failure?: unknown): void {
  pairs.delete(p.id);
  if (failure !== undefined) {
    worker.postMessage({
      type: "fatal",
      id: p.id,
      message: `queue pair ${p.setup.pair} stopped: ${message(failure)}`,
      ring: failure instanceof RingFailure ? failure.ring : undefined,
    });
  }
  worker.postMessage({ type: "stopped", id: p.id, ...p.dp.bases() });
}

/** One turn over every pair: stops, then a batch each. Returns the work done. */
function turn(): number {
  let work = 0;
  for (const p of pairs.values()) {
    if (Atomics.load(p.control, CONTROL_STOP) !== 0) {
      finish(p);
      continue;
    }
    try {
      work += p.dp.run();
    } catch (e) {
      finish(p, e);
    }
  }
  return work;
}

/** Serve until the pool ends the Worker; yields to read messages after each wake. */
async function serve(): Promise<void> {
  const set = new PollSet(1 + 2 * 64);
  let idleSince = -1;
  for (;;) {
    if (Atomics.load(mailbox, 0) === QUIT) return;
    if (Atomics.load(mailbox, 1) !== received) {
      drain(wakeFd);
      // Messages (new pairs) are read only when the event loop turns, and
      // one posted a moment ago may not be queued yet: turn until all are in.
      while (Atomics.load(mailbox, 1) !== received && Atomics.load(mailbox, 0) !== QUIT) {
        await new Promise((resolve) => setTimeout(resolve, 0));
      }
    }
    if (turn() > 0) {
      idleSince = -1;
      continue;
    }
    const now = performance.now();
    if (idleSince < 0) idleSince = now;
    if (now - idleSince < SPIN_MS && pairs.size > 0) continue;
    idleSince = -1;
    let more = false;
    for (const p of pairs.values()) {
      p.mask = p.dp.waitMask();
      if (p.dp.enableNotifications(p.mask)) more = true;
    }
    if (more) {
      for (const p of pairs.values()) p.dp.disableNotifications(p.mask);
      continue;
    }
    set.clear();
    set.add(wakeFd, POLLIN);
    const watched: [at: number, fd: number, p: Pair, ring: number][] = [];
    let timeout = -1;
    for (const p of pairs.values()) {
      const s = p.setup;
      for (const [bit, r] of [[WAIT_RX, s.rx], [WAIT_TX, s.tx]] as const) {
        if ((p.mask & bit) === 0 || r === null) continue;
        if (r.kickFd < 0 || watched.length >= 2 * 64) timeout = NO_KICK_POLL_MS;
        else watched.push([set.add(r.kickFd, POLLIN), r.kickFd, p, r.index]);
      }
    }
    set.wait(timeout);
    for (const [at, fd, p, ring] of watched) {
      const revents = set.revents(at);
      if (revents === 0 || !pairs.has(p.id)) continue;
      if ((revents & (POLLNVAL | POLLERR)) !== 0) {
        finish(p, new Error(`kick fd ${fd} of ring ${ring} is no longer valid`));
        continue;
      }
      drain(fd);
      p.dp.kicked(ring);
    }
    for (const p of pairs.values()) p.dp.disableNotifications(p.mask);
    // A wake comes with the mailbox flag, handled at the top of the loop.
  }
}

worker.onmessage = (e: MessageEvent<PoolCommand>) => {
  const m = e.data;
  if (m.type === "init") {
    wakeFd = m.wakeFd;
    mailbox = new Int32Array(m.mailbox);
    if (m.cpu !== null) pinThread([m.cpu]);
    if (!running) {
      running = true;
      serve().catch((err) => {
        for (const p of [...pairs.values()]) finish(p, err);
      });
    }
  } else if (m.type === "add") {
    received++;
    add(m.id, m.setup);
  }
};
