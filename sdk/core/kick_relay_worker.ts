/**
 * Worker side of the kick relay: block in `poll` on the kick fds and a stop
 * eventfd, drain each kick, and post `{ type: "kick", queue }` unless a kick
 * of that ring is still pending on the main thread (coalescing: see
 * `kick_relay.ts`).
 *
 * @module
 */

import { eventfdRead, POLLERR, POLLIN, POLLNVAL, pollSync, SysError } from "../sys/mod.ts";
import type { KickRelayMessage, WatchedKick } from "./kick_relay.ts";

const self = globalThis as unknown as {
  onmessage: ((e: MessageEvent) => void) | null;
  postMessage(m: KickRelayMessage): void;
};

interface Setup {
  kicks: WatchedKick[];
  stopFd: number;
  pending: SharedArrayBuffer;
}

self.onmessage = (e: MessageEvent<Setup>) => {
  self.onmessage = null;
  const { kicks, stopFd } = e.data;
  const pending = new Int32Array(e.data.pending);
  // Slot i + 1 of `fds` is kick i; a kick fd that fails is dropped from the set.
  let live = kicks.map((k, slot) => ({ ...k, slot }));
  let fds = [{ fd: stopFd, events: POLLIN }, ...live.map((k) => ({ fd: k.fd, events: POLLIN }))];
  const drop = (slot: number, why: string) => {
    const k = kicks[slot];
    self.postMessage({ type: "error", message: `kick fd of ring ${k.queue}: ${why}` });
    live = live.filter((l) => l.slot !== slot);
    fds = [{ fd: stopFd, events: POLLIN }, ...live.map((k) => ({ fd: k.fd, events: POLLIN }))];
  };
  try {
    for (;;) {
      const revents = pollSync(fds, -1);
      if (revents[0] !== 0) break;
      const polled = live;
      for (let i = 0; i < polled.length; i++) {
        const k = polled[i], rev = revents[i + 1];
        if (rev === 0) continue;
        if ((rev & (POLLNVAL | POLLERR)) !== 0) {
          drop(k.slot, "no longer valid");
          continue;
        }
        try {
          eventfdRead(k.fd);
        } catch (err) {
          // Another reader drained it first: no kick to report.
          if (err instanceof SysError && err.code === "EAGAIN") continue;
          drop(k.slot, err instanceof Error ? err.message : String(err));
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
    }
  } catch (err) {
    self.postMessage({ type: "error", message: err instanceof Error ? err.message : String(err) });
  }
  self.postMessage({ type: "stopped" });
};
