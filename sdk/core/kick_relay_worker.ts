/**
 * Worker side of the kick relay: block in `poll` on the kick fds and a stop
 * eventfd, drain each kick, post `{ type: "kick", queue }`.
 *
 * @module
 */

import { eventfdRead, POLLIN, pollSync } from "../sys/mod.ts";
import type { KickRelayMessage, WatchedKick } from "./kick_relay.ts";

const self = globalThis as unknown as {
  onmessage: ((e: MessageEvent) => void) | null;
  postMessage(m: KickRelayMessage): void;
};

self.onmessage = (e: MessageEvent<{ kicks: WatchedKick[]; stopFd: number }>) => {
  self.onmessage = null;
  const { kicks, stopFd } = e.data;
  const fds = [{ fd: stopFd, events: POLLIN }, ...kicks.map((k) => ({ fd: k.fd, events: POLLIN }))];
  try {
    for (;;) {
      const revents = pollSync(fds, -1);
      if (revents[0] !== 0) break;
      for (let i = 1; i < fds.length; i++) {
        if (revents[i] === 0) continue;
        try {
          eventfdRead(fds[i].fd);
        } catch {
          // Another reader drained it first (EAGAIN): still a kick.
        }
        self.postMessage({
          type: "kick",
          queue: kicks[i - 1].queue,
          time: performance.timeOrigin + performance.now(),
        });
      }
    }
  } catch (err) {
    self.postMessage({ type: "error", message: err instanceof Error ? err.message : String(err) });
  }
  self.postMessage({ type: "stopped" });
};
