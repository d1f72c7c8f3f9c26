/**
 * Finding the real peers tests run against (DPDK testpmd, QEMU, busybox).
 * Outside CI a missing peer skips the test with the reason printed; in CI
 * (`CI=true`) a missing peer is a failure, so a broken setup cannot pass.
 *
 * @module
 */

import { findExecutable } from "../../testing/programs.ts";

/** Debian package that provides each peer binary. */
const PACKAGES: Readonly<Record<string, string>> = {
  "dpdk-testpmd": "dpdk-dev",
  "qemu-system-x86_64": "qemu-system-x86",
  "busybox": "busybox-static",
};

/**
 * The absolute path of `binary` on `PATH` (or in the usual sbin and bin
 * directories). When it is missing: returns `null` after printing
 * `skipping: <binary> not installed (apt-get install <pkg>)`, or, when the
 * environment has `CI=true`, throws.
 *
 * @param binary A program name such as `"dpdk-testpmd"`.
 * @returns The path to run, or `null` to skip the test.
 * @throws Error when the binary is missing and `CI` is `"true"`.
 *
 * @example
 * ```ts
 * import { requirePeer } from "../support/peers.ts";
 *
 * Deno.test("frontend talks to testpmd", async () => {
 *   const testpmd = await requirePeer("dpdk-testpmd");
 *   if (testpmd === null) return;
 *   // ... spawn testpmd ...
 * });
 * ```
 */
export async function requirePeer(binary: string): Promise<string | null> {
  // An await, so that a missing peer in CI is a rejection, not a throw.
  const found = await Promise.resolve(findExecutable(binary));
  if (found !== null) return found;
  const pkg = PACKAGES[binary] ?? binary;
  if (Deno.env.get("CI") === "true") {
    throw new Error(`peer ${binary} is missing in CI: install it with apt-get install ${pkg}`);
  }
  console.log(`skipping: ${binary} not installed (apt-get install ${pkg})`);
  return null;
}

/**
 * Open fds of this process once the count has been stable for three reads
 * 50 ms apart. Test modules share the process, and an earlier module's
 * Workers and children may still be releasing fds when a leak check starts.
 */
export async function settledFdCount(): Promise<number> {
  let last = -1;
  let stable = 0;
  for (let i = 0; i < 100 && stable < 3; i++) {
    const n = Array.from(Deno.readDirSync("/proc/self/fd")).length;
    stable = n === last ? stable + 1 : 0;
    last = n;
    await new Promise((r) => setTimeout(r, 50));
  }
  return last;
}
