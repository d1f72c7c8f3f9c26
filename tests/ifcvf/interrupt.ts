// Waiting for an emulated IFC VF's interrupt on a ring's call eventfd, for the ifcvf tests.

import { eventfdRead, pollAsync, POLLIN, SysError } from "@vhost-mdev/sdk/sys";

/**
 * Read call eventfd `fd` once it was written (returns the count), waiting up
 * to `ms`; on timeout, fail with what `state` says about the device.
 */
export async function waitInterrupt(
  fd: number,
  what: string,
  state: () => string,
  ms = 3000,
): Promise<number> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return eventfdRead(fd);
    } catch (e) {
      if (!(e instanceof SysError && e.code === "EAGAIN")) throw e;
    }
    const left = deadline - Date.now();
    if (left <= 0) throw new Error(`no interrupt on ${what} within ${ms} ms; ${state()}`);
    await pollAsync([{ fd, events: POLLIN }], Math.min(left, 50));
  }
}
