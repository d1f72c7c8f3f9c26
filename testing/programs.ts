/**
 * Finding the programs tests, benchmarks and VM tooling run (DPDK's
 * testpmd, QEMU, busybox, a C compiler): the one lookup, so every caller
 * agrees on where to search.
 *
 * @module
 */

/** Searched after `PATH`: sbin is often missing from a user's `PATH`. */
const EXTRA_DIRS = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"];

function isExecutable(path: string): boolean {
  try {
    const st = Deno.statSync(path);
    return st.isFile && ((st.mode ?? 0o111) & 0o111) !== 0;
  } catch {
    return false;
  }
}

/**
 * The full path of executable `name` found on `PATH` or in the usual bin
 * and sbin directories, or `name` itself when it is a path to an
 * executable; `null` when there is none.
 *
 * @example
 * ```ts
 * import { findExecutable } from "@vhost-mdev/testing";
 * const testpmd = findExecutable("dpdk-testpmd"); // "/usr/bin/dpdk-testpmd" or null
 * ```
 */
export function findExecutable(name: string): string | null {
  if (name.includes("/")) return isExecutable(name) ? name : null;
  const path = (Deno.env.get("PATH") ?? "").split(":").filter((d) => d.startsWith("/"));
  for (const dir of [...path, ...EXTRA_DIRS]) {
    const candidate = `${dir.replace(/\/+$/, "")}/${name}`;
    if (isExecutable(candidate)) return candidate;
  }
  return null;
}
