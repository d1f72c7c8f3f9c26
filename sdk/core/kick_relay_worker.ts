/**
 * Worker side of the kick relay: block in `poll` on the kick fds and a stop
 * eventfd; on a kick, ring the ring's doorbell if it has one (a store, no
 * message), otherwise drain the kick and post `{ type: "kick", queue }`
 * unless a kick of that ring is still pending on the main thread
 * (coalescing: see `kick_relay.ts`).
 *
 * A doorbell is stored as soon as `poll` returns, before the kick is
 * drained, which keeps the drain's `read` (a syscall) off the kick latency.
 * The drain then tells whether a kick may have come after the store: it
 * returns the number of kicks counted since the last drain, 1 being the one
 * that woke the Worker. More than 1 means another kick arrived between the
 * wake-up and the drain, perhaps after the store, and the doorbell is
 * stored again. A kick after the drain leaves the eventfd readable and
 * wakes the Worker again. So every kick is followed by a store, and the
 * extra stores are spurious notifications, which a device tolerates (it
 * re-reads the available ring: virtio 1.2 §2.9).
 *
 * @module
 */

import { eventfdRead, POLLERR, POLLIN, POLLNVAL, PollSet, SysError } from "../sys/mod.ts";
import { doorbellRinger } from "./doorbell.ts";
import type { KickRelayMessage, WatchedKick } from "./kick_relay.ts";

const self = globalThis as unknown as {
  onmessage: ((e: MessageEvent) => void) | null;
  postMessage(m: KickRelayMessage): void;
};

interface Setup {
  kicks: WatchedKick[];
  stopFd: number;
  pending: SharedArrayBuffer;
  rung: SharedArrayBuffer;
}

/** A watched ring as the loop sees it. */
interface Live {
  queue: number;
  fd: number;
  /** Index into `kicks` and the shared flag/counter arrays. */
  slot: number;
  /** Stores the ring's doorbell, or null to post the kick instead. */
  ring: (() => void) | null;
}

self.onmessage = (e: MessageEvent<Setup>) => {
  self.onmessage = null;
  const { kicks, stopFd } = e.data;
  const pending = new Int32Array(e.data.pending);
  const rung = new Int32Array(e.data.rung);
  // Entry i + 1 of `set` is live[i]; a kick fd that fails is dropped from both.
  let live: Live[] = [];
  const set = new PollSet(kicks.length + 1);
  const rebuild = () => {
    set.clear();
    set.add(stopFd, POLLIN);
    for (const k of live) set.add(k.fd, POLLIN);
  };
  const report = (slot: number, why: string) => {
    self.postMessage({ type: "error", message: `kick fd of ring ${kicks[slot].queue}: ${why}` });
  };
  kicks.forEach((k, slot) => {
    let ring: (() => void) | null = null;
    if (k.doorbell) {
      try {
        ring = doorbellRinger(k.doorbell, k.queue);
      } catch (err) {
        self.postMessage({
          type: "error",
          message: err instanceof Error ? err.message : String(err),
        });
        return;
      }
    }
    live.push({ queue: k.queue, fd: k.fd, slot, ring });
  });
  rebuild();
  try {
    for (;;) {
      set.wait(-1);
      if (set.revents(0) !== 0) break;
      let dropped: Set<number> | null = null;
      for (let i = 0; i < live.length; i++) {
        const rev = set.revents(i + 1);
        if (rev === 0) continue;
        const k = live[i];
        if ((rev & (POLLNVAL | POLLERR)) !== 0) {
          report(k.slot, "no longer valid");
          (dropped ??= new Set()).add(k.slot);
          continue;
        }
        if (k.ring !== null) {
          k.ring();
          Atomics.add(rung, k.slot, 1);
        }
        let kicks: number;
        try {
          kicks = eventfdRead(k.fd);
        } catch (err) {
          // Another reader drained it first: no kick to relay.
          if (err instanceof SysError && err.code === "EAGAIN") continue;
          report(k.slot, err instanceof Error ? err.message : String(err));
          (dropped ??= new Set()).add(k.slot);
          continue;
        }
        if (k.ring !== null) {
          // A kick counted besides the one that woke us may postdate the store.
          if (kicks > 1) {
            k.ring();
            Atomics.add(rung, k.slot, 1);
          }
          continue;
        }
        if (Atomics.compareExchange(pending, k.slot, 0, 1) !== 0) continue;
        self.postMessage({
          type: "kick",
          slot: k.slot,
          queue: k.queue,
          time: performance.timeOrigin + performance.now(),
        });
      }
      if (dropped !== null) {
        const gone = dropped;
        live = live.filter((l) => !gone.has(l.slot));
        rebuild();
      }
    }
  } catch (err) {
    self.postMessage({ type: "error", message: err instanceof Error ? err.message : String(err) });
  }
  self.postMessage({ type: "stopped" });
};
