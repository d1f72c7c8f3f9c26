/**
 * A busybox initramfs built in TypeScript: the static busybox as the whole
 * userland (`/bin/sh` links to it; `/init` installs the other applets), the
 * kernel modules the guest loads, and an `/init` script. The archive is a
 * gzip-compressed newc cpio, cached under a hash of its inputs, so building
 * the same guest twice costs a few `stat` calls.
 *
 * Per-run values (addresses, ports) belong on the kernel command line, not in
 * the script: the kernel hands each unknown `name=value` parameter (without a
 * dot in the name) to `/init` as an environment variable, so one cached image
 * serves every run.
 *
 * @module
 */

import { exists, guestCacheDir, sha256Hex, writeFileAtomic } from "./cache_dir.ts";
import { type CpioEntry, writeCpio } from "./cpio.ts";
import type { KernelModuleFile } from "./guest_kernel.ts";

/** An extra file placed in the image. */
export interface InitramfsFile {
  /** Path inside the guest, absolute (`/etc/hosts`). */
  path: string;
  /** Contents. */
  data: Uint8Array | string;
  /** Permission bits (default 0o644). */
  mode?: number;
}

/** Options of {@linkcode buildInitramfs}. */
export interface InitramfsOptions {
  /** The complete `/init` script, run by busybox `sh` (see {@linkcode initScript}). */
  init: string;
  /** Modules copied to `/lib/modules/<name>.ko`. */
  modules: readonly KernelModuleFile[];
  /** Path of a statically linked busybox (default: the one in `PATH`). */
  busybox: string;
  /** More files. */
  files?: readonly InitramfsFile[];
  /** Cache directory (default {@linkcode guestCacheDir}). */
  cacheDir?: string;
  /** Progress lines. */
  log?: (line: string) => void;
}

/** How many built images the cache keeps (newest first). */
const KEEP_IMAGES = 16;

/**
 * Build (or find in the cache) an initramfs and return its path.
 *
 * @example
 * ```ts
 * import { buildInitramfs, initScript } from "./initramfs.ts";
 * const path = await buildInitramfs({
 *   init: initScript({ modules: [], body: "echo hello" }),
 *   modules: [],
 *   busybox: "/bin/busybox",
 * });
 * ```
 */
export async function buildInitramfs(options: InitramfsOptions): Promise<string> {
  const cache = `${options.cacheDir ?? guestCacheDir()}/initramfs`;
  await Deno.mkdir(cache, { recursive: true });
  // The name comes from the inputs (script, extra files, and the identity of
  // the binaries: path, size, mtime), so a cached image is found without
  // reading busybox and the modules again.
  const identity = async (path: string) => {
    const st = await Deno.stat(path);
    return [path, st.size, st.mtime?.getTime() ?? 0];
  };
  const key = await sha256Hex(JSON.stringify({
    format: 1,
    init: options.init,
    busybox: await identity(options.busybox),
    modules: await Promise.all(
      options.modules.map(async (m) => [m.name, ...await identity(m.path)]),
    ),
    files: await Promise.all(
      (options.files ?? []).map(async (f) => [
        f.path,
        f.mode ?? 0o644,
        typeof f.data === "string" ? f.data : { sha256: await sha256Hex(f.data) },
      ]),
    ),
  }));
  const path = `${cache}/${key.slice(0, 16)}.cpio.gz`;
  if (await exists(path)) {
    const now = new Date();
    await Deno.utime(path, now, now); // keeps it among the newest when pruning
    return path;
  }
  const encoder = new TextEncoder();
  const entries: CpioEntry[] = [];
  const dirs = new Set<string>();
  const dir = (path: string) => {
    const parts = path.split("/").filter((p) => p !== "");
    for (let i = 1; i <= parts.length; i++) {
      const d = parts.slice(0, i).join("/");
      if (!dirs.has(d)) {
        dirs.add(d);
        entries.push({ type: "dir", path: d });
      }
    }
  };
  for (const d of ["bin", "dev", "proc", "sys", "tmp", "mnt", "lib/modules", "etc"]) dir(d);
  // The kernel opens /dev/console for init's stdio before devtmpfs is mounted.
  entries.push({ type: "chardev", path: "dev/console", major: 5, minor: 1 });
  entries.push({ type: "chardev", path: "dev/null", major: 1, minor: 3, mode: 0o666 });
  entries.push({
    type: "file",
    path: "bin/busybox",
    data: await Deno.readFile(options.busybox),
    mode: 0o755,
  });
  entries.push({ type: "symlink", path: "bin/sh", target: "busybox" });
  for (const m of options.modules) {
    entries.push({
      type: "file",
      path: `lib/modules/${m.name}.ko`,
      data: await Deno.readFile(m.path),
    });
  }
  for (const f of options.files ?? []) {
    const rel = f.path.replace(/^\/+/, "");
    const parent = rel.split("/").slice(0, -1).join("/");
    if (parent) dir(parent);
    const data = typeof f.data === "string" ? encoder.encode(f.data) : f.data;
    entries.push({ type: "file", path: rel, data, mode: f.mode });
  }
  entries.push({ type: "file", path: "init", data: encoder.encode(options.init), mode: 0o755 });
  const archive = writeCpio(entries);
  options.log?.(`initramfs: building ${path} (${(archive.length / 1e6).toFixed(1)} MB)`);
  const gz = await new Response(
    new Blob([archive as Uint8Array<ArrayBuffer>]).stream().pipeThrough(
      new CompressionStream("gzip"),
    ),
  ).bytes();
  await writeFileAtomic(path, gz);
  await prune(cache);
  return path;
}

async function prune(cache: string): Promise<void> {
  const images: { path: string; mtime: number }[] = [];
  for await (const e of Deno.readDir(cache)) {
    if (!e.isFile || !e.name.endsWith(".cpio.gz")) continue;
    const path = `${cache}/${e.name}`;
    images.push({ path, mtime: (await Deno.stat(path)).mtime?.getTime() ?? 0 });
  }
  images.sort((a, b) => b.mtime - a.mtime);
  for (const old of images.slice(KEEP_IMAGES)) await Deno.remove(old.path).catch(() => {});
}

/** Options of {@linkcode initScript}. */
export interface InitScriptOptions {
  /** Module keys to `insmod` from `/lib/modules`, in this order (dependencies first). */
  modules: readonly string[];
  /** Shell commands run after the modules are loaded. */
  body: string;
}

/**
 * A complete `/init`: install busybox applets, mount proc, sysfs and
 * devtmpfs, load the modules in order (a failed insmod is reported and ends
 * the boot), run `body`, power off. Every phase prints a `vm-init:` line
 * with the guest's uptime so the host can time the boot. When `body` fails
 * (exits non-zero) the script prints `vm-init: FAILED` before powering off.
 */
export function initScript(options: InitScriptOptions): string {
  const insmods = options.modules.map((m) => `insmod /lib/modules/${m}.ko || fail "insmod ${m}"`)
    .join("\n");
  return `#!/bin/sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
uptime_s() { cut -d' ' -f1 /proc/uptime; }
fail() { echo "vm-init: FAILED: $*"; poweroff -f; sleep 10; }
echo "vm-init: userspace up at $(uptime_s) s"
${insmods}
echo "vm-init: modules loaded at $(uptime_s) s"
main() {
${options.body}
}
if main; then echo "vm-init: done at $(uptime_s) s"; else fail "init body exited with $?"; fi
poweroff -f
sleep 10
`;
}
