/**
 * A Worker of the attacker that writes kick eventfds in a tight loop: the
 * first message is `{ fds, ms }`; it adds 1 to each fd in turn for `ms`
 * milliseconds, then posts `{ writes }` and ends. A saturated counter
 * (EAGAIN) is skipped.
 *
 * The thread lowers its own priority first (nice 19: on Linux `setpriority`
 * with who 0 applies to the calling thread): it floods the backend with
 * kicks whenever a CPU is free, but does not take CPU time from the backend
 * and testpmd. What is measured is whether the backend keeps its devices
 * apart, not how the scheduler shares two CPUs.
 *
 * @module
 */

import { eventfdWrite, SysError } from "@vhost-mdev/sdk/sys";

const self = globalThis as unknown as {
  onmessage: ((e: MessageEvent<{ fds: number[]; ms: number }>) => void) | null;
  postMessage(m: { writes: number }): void;
};

const PRIO_PROCESS = 0;

self.onmessage = (e) => {
  const { fds, ms } = e.data;
  const libc = Deno.dlopen("libc.so.6", {
    setpriority: { parameters: ["i32", "u32", "i32"], result: "i32" },
  });
  libc.symbols.setpriority(PRIO_PROCESS, 0, 19);
  libc.close();
  const end = performance.now() + ms;
  let writes = 0;
  while (performance.now() < end) {
    for (const fd of fds) {
      try {
        eventfdWrite(fd, 1);
        writes++;
      } catch (err) {
        if (!(err instanceof SysError) || err.code !== "EAGAIN") throw err;
      }
    }
  }
  self.postMessage({ writes });
};
