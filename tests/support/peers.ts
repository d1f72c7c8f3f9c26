/**
 * Finding the real peers tests run against (DPDK testpmd, QEMU, busybox).
 * Outside CI a missing peer skips the test with the reason printed; in CI
 * (`CI=true`) a missing peer is a failure, so a broken setup cannot pass.
 *
 * @module
 */

import { findExecutable } from "@vhost-mdev/testing";

/** Debian package that provides each peer binary. */
const PACKAGES: Readonly<Record<string, string>> = {
  "dpdk-testpmd": "dpdk-dev",
  "qemu-system-x86_64": "qemu-system-x86",
  "busybox": "busybox-static",
  "virt-xml-validate": "libvirt-clients",
  "xmllint": "libxml2-utils",
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

/** Options of {@linkcode settledFdCount}. */
export interface SettleOptions {
  /** Whose fds (default this process). */
  pid?: number | "self";
  /** Return as soon as the count is this (default: wait for it to settle). */
  target?: number;
  /** Equal reads 50 ms apart that make a count settled (default 3). */
  stableReads?: number;
  /** Give up and return the last count after this long (default 5000 ms). */
  timeoutMs?: number;
}

/**
 * Open fds of a process (this one by default) once the count has been
 * stable for a few reads 50 ms apart, or has reached `target`. Test modules
 * share the process, and an earlier module's Workers and children (or a
 * backend's detaching sessions) may still be releasing fds when a leak check
 * starts.
 */
export async function settledFdCount(options: SettleOptions = {}): Promise<number> {
  const dir = `/proc/${options.pid ?? "self"}/fd`;
  const target = options.target ?? -1;
  const stableReads = options.stableReads ?? 3;
  const deadline = Date.now() + (options.timeoutMs ?? 5000);
  let last = -1, stable = 0;
  for (;;) {
    let n = 0;
    for (const _ of Deno.readDirSync(dir)) n++;
    if (n === target) return n;
    stable = n === last ? stable + 1 : 0;
    last = n;
    if (stable >= stableReads || Date.now() > deadline) return n;
    await new Promise((r) => setTimeout(r, 50));
  }
}
