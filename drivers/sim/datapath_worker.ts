/**
 * The Worker that runs one queue pair of the sim device. It processes the
 * rings while they have work, polls them busily for a short while when they
 * run dry, then re-enables the guest's kicks, checks the rings once more (a
 * buffer made available before the guest saw the re-enabled notification
 * would get no kick) and blocks in a synchronous `poll` on the kick eventfds
 * and the device's stop eventfd. Blocking in synchronous FFI keeps the
 * kick-to-work latency near C's (see DESIGN.md).
 *
 * Protocol: a {@linkcode DatapathSetup} starts a run; the Worker answers
 * `ready` (or `fatal` then `stopped`), posts rate-limited `warn`s about
 * hostile chains, and `stopped` with the rings' next available indexes once
 * the stop flag is set and the stop eventfd written. It then waits for the
 * next setup, so the device restarts a pair (a ring started or stopped, a
 * new memory table) without creating a Worker.
 *
 * @module
 */

import { GuestMemory } from "@vhost-mdev/sdk";
import { eventfdRead, POLLERR, POLLIN, POLLNVAL, PollSet } from "@vhost-mdev/sdk/sys";
import { rateLimitedReports } from "@vhost-mdev/sdk/soft";
import { QueuePairDatapath, RingFailure, WAIT_RX, WAIT_TX } from "./datapath.ts";
import { CONTROL_STOP, type DatapathMessage, type DatapathSetup, encodeBase } from "./protocol.ts";

/** How long the Worker polls idle rings before it sleeps in `poll`, in ms. */
const SPIN_MS = 0.05;
/** Sleep between looks at a ring that has no kick fd (frontend polling mode), in ms. */
const NO_KICK_POLL_MS = 1;

const worker = globalThis as unknown as {
  onmessage: ((e: MessageEvent<DatapathSetup>) => void) | null;
  postMessage(m: DatapathMessage): void;
};

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** Reports of pair `pair`'s rings, rate limited. */
function rateLimited(pair: number): (ring: number, text: string) => void {
  const send = rateLimitedReports((message) => worker.postMessage({ type: "warn", pair, message }));
  return (ring, text) => send(`ring ${ring}: ${text}`);
}

/** Read a kick eventfd to zero; a reader racing us to it is no error. */
function drain(fd: number): void {
  try {
    eventfdRead(fd);
  } catch {
    // EAGAIN: already zero.
  }
}

function serve(dp: QueuePairDatapath, setup: DatapathSetup): void {
  const control = new Int32Array(setup.control);
  const set = new PollSet(4);
  const rxKick = setup.rx?.kickFd ?? -1, txKick = setup.tx?.kickFd ?? -1;
  dp.disableNotifications(WAIT_RX | WAIT_TX);
  let idleSince = -1;
  for (;;) {
    if (Atomics.load(control, CONTROL_STOP) !== 0) return;
    if (dp.run() > 0) {
      idleSince = -1;
      continue;
    }
    const now = performance.now();
    if (idleSince < 0) idleSince = now;
    if (now - idleSince < SPIN_MS) continue;
    idleSince = -1;

    const mask = dp.waitMask();
    if (dp.enableNotifications(mask)) {
      dp.disableNotifications(mask);
      continue;
    }
    set.clear();
    set.add(setup.stopFd, POLLIN);
    let timeout = -1, rxAt = -1, txAt = -1;
    if ((mask & WAIT_RX) !== 0 && setup.rx !== null) {
      if (rxKick >= 0) rxAt = set.add(rxKick, POLLIN);
      else timeout = NO_KICK_POLL_MS;
    }
    if ((mask & WAIT_TX) !== 0 && setup.tx !== null) {
      if (txKick >= 0) txAt = set.add(txKick, POLLIN);
      else timeout = NO_KICK_POLL_MS;
    }
    set.wait(timeout);
    if (set.revents(0) !== 0) return;
    for (const [at, fd, ring] of [[rxAt, rxKick, dp.rxRing], [txAt, txKick, dp.txRing]]) {
      if (at < 0) continue;
      const revents = set.revents(at);
      if ((revents & (POLLNVAL | POLLERR)) !== 0) {
        throw new Error(`kick fd ${fd} of ring ${ring} is no longer valid`);
      }
      if (revents !== 0) {
        drain(fd);
        dp.kicked(ring);
      }
    }
    dp.disableNotifications(mask);
  }
}

function run(e: MessageEvent<DatapathSetup>): void {
  worker.onmessage = null;
  try {
    runOnce(e.data);
  } finally {
    worker.onmessage = run;
  }
}

function runOnce(setup: DatapathSetup): void {
  const pair = setup.pair;
  let dp: QueuePairDatapath;
  try {
    dp = new QueuePairDatapath(
      GuestMemory.fromShared(setup.memory, setup.iotlb),
      setup,
      rateLimited(pair),
    );
  } catch (err) {
    worker.postMessage({ type: "fatal", pair, message: `queue pair ${pair}: ${message(err)}` });
    const packed = setup.features.packed;
    worker.postMessage({
      type: "stopped",
      pair,
      rxBase: setup.rx ? encodeBase(setup.rx.position, packed) : 0,
      txBase: setup.tx ? encodeBase(setup.tx.position, packed) : 0,
    });
    return;
  }
  worker.postMessage({ type: "ready", pair });
  try {
    serve(dp, setup);
  } catch (err) {
    worker.postMessage({
      type: "fatal",
      pair,
      message: `queue pair ${pair} stopped: ${message(err)}`,
      ring: err instanceof RingFailure ? err.ring : undefined,
    });
  }
  worker.postMessage({ type: "stopped", pair, ...dp.bases() });
}

worker.onmessage = run;
