/**
 * Small static C programs for guests: `NAME.c` beside this module, compiled
 * on the host with `cc -static` (busybox has no ethtool, no raw-socket
 * checker), cached in the guest cache under a hash of the source and flags,
 * and copied into a guest's initramfs.
 *
 * @module
 */

import { exists, guestCacheDir, sha256Hex } from "./cache_dir.ts";
import { type HostTool, isStaticElf, MissingToolsError } from "./host_tools.ts";
import { findExecutable } from "../programs.ts";

/**
 * A C compiler, which builds the guests' static helpers (`cc -static` also
 * needs the static libc, `libc.a`, from libc6-dev, which gcc recommends).
 */
export const C_COMPILER: HostTool = {
  program: "cc",
  debianPackage: "gcc",
  purpose: "compiles the guests' static helpers (set_channels, migcheck) with cc -static",
};

/**
 * Compile `NAME.c` (beside this module) with `cc -static -O2` into the guest
 * cache (`tools/NAME-<hash of the source>`), or find it there; returns the
 * binary's path.
 *
 * @example
 * ```ts
 * import { buildStaticHelper } from "./static_helper.ts";
 * const path = await buildStaticHelper("migcheck", console.log);
 * console.log(path); // ~/.cache/vhost-mdev/guest/tools/migcheck-0123456789abcdef
 * ```
 *
 * @param name the helper's name: its source is `NAME.c`
 * @param log progress lines
 * @throws MissingToolsError when the binary is not cached and no C compiler
 *   is installed (the message names the install command).
 * @throws Error when compiling fails (the compiler's output is in the message).
 */
export async function buildStaticHelper(
  name: string,
  log: (line: string) => void = () => {},
): Promise<string> {
  if (!/^[a-z][a-z0-9_]*$/.test(name)) {
    throw new TypeError(`helper name ${name}: lower-case letters, digits and _ only`);
  }
  const url = new URL(`./${name}.c`, import.meta.url);
  const source = url.protocol === "file:"
    ? await Deno.readTextFile(url)
    : await (await fetch(url)).text();
  const flags = ["-static", "-O2", "-s"];
  const dir = `${guestCacheDir()}/tools`;
  const path = `${dir}/${name}-${
    (await sha256Hex(JSON.stringify({ source, flags }))).slice(0, 16)
  }`;
  if (await exists(path)) return path;
  const cc = findExecutable("cc") ?? findExecutable("gcc");
  if (!cc) {
    throw new MissingToolsError([C_COMPILER], [
      `cc not found in PATH (package gcc, with libc6-dev: ${C_COMPILER.purpose})`,
    ]);
  }
  await Deno.mkdir(dir, { recursive: true });
  const tmp = await Deno.makeTempDir({ dir, prefix: ".build-" });
  try {
    await Deno.writeTextFile(`${tmp}/${name}.c`, source);
    const out = await new Deno.Command(cc, {
      args: [...flags, "-o", `${tmp}/${name}`, `${tmp}/${name}.c`],
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!out.success) {
      const said = new TextDecoder().decode(out.stderr).trim();
      throw new Error(
        `${cc} -static could not build ${name}.c` +
          (/cannot find -lc|libc\.a/.test(said)
            ? " (no static libc: apt-get install libc6-dev)"
            : "") +
          `:\n${said}`,
      );
    }
    if (!(await isStaticElf(`${tmp}/${name}`))) {
      throw new Error(`${cc} -static produced a dynamically linked ${name}`);
    }
    await Deno.rename(`${tmp}/${name}`, path);
  } finally {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
  log(`${name}: compiled ${path} with ${cc} ${flags.join(" ")}`);
  return path;
}
