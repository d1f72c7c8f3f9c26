/**
 * Where built guest images live between runs: `$XDG_CACHE_HOME/vhost-mdev/guest`,
 * or `~/.cache/vhost-mdev/guest` when `XDG_CACHE_HOME` is not set.
 *
 * @module
 */

/**
 * The guest image cache directory (not created by this function).
 *
 * @example
 * ```ts
 * import { guestCacheDir } from "./cache_dir.ts";
 * console.log(guestCacheDir()); // /root/.cache/vhost-mdev/guest
 * ```
 */
export function guestCacheDir(): string {
  const xdg = Deno.env.get("XDG_CACHE_HOME");
  if (xdg && xdg.startsWith("/")) return `${xdg}/vhost-mdev/guest`;
  const home = Deno.env.get("HOME");
  if (!home) {
    throw new Error(
      "neither XDG_CACHE_HOME nor HOME is set: set one so guest images can be cached",
    );
  }
  return `${home}/.cache/vhost-mdev/guest`;
}

/** Hex SHA-256 of `data`, used to name cached images after their contents. */
export async function sha256Hex(data: Uint8Array | string): Promise<string> {
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  const digest = await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Whether `path` exists (any file type). */
export async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

/**
 * Write `data` to `path` atomically (a temporary file in the same directory,
 * then rename), so a run killed half-way never leaves a truncated image that a
 * later run would take for a good one.
 */
export async function writeFileAtomic(path: string, data: Uint8Array | string): Promise<void> {
  const tmp = `${path}.tmp-${Deno.pid}`;
  if (typeof data === "string") await Deno.writeTextFile(tmp, data);
  else await Deno.writeFile(tmp, data);
  await Deno.rename(tmp, path);
}
