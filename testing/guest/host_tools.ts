/**
 * The host programs the guest examples need, how to tell whether they are
 * there, and how to install them (Debian packages). A missing tool gives an
 * error that names the exact command which installs it; `--setup` runs it.
 *
 * @module
 */

import { findExecutable } from "../programs.ts";

/** A host program and the Debian package that provides it. */
export interface HostTool {
  /** Program name looked up in `PATH` (or an absolute path). */
  program: string;
  /** Debian package that installs it. */
  debianPackage: string;
  /** What it is used for, for messages. */
  purpose: string;
  /** Extra check on the found file; returns a reason when it is not usable. */
  check?: (path: string) => Promise<string | null>;
}

/** QEMU's x86-64 system emulator. */
export const QEMU: HostTool = {
  program: "qemu-system-x86_64",
  debianPackage: "qemu-system-x86",
  purpose: "runs the guest",
};

/** A statically linked busybox: the guest's whole userland. */
export const BUSYBOX_STATIC: HostTool = {
  program: "busybox",
  debianPackage: "busybox-static",
  purpose: "the guest's shell and tools",
  check: async (path) => (await isStaticElf(path)) ? null : `${path} is dynamically linked`,
};

/** `apt-get`, which downloads the guest kernel package. */
export const APT_GET: HostTool = {
  program: "apt-get",
  debianPackage: "apt",
  purpose: "downloads the guest kernel package",
};

/** `dpkg`, which unpacks the guest kernel package. */
export const DPKG: HostTool = {
  program: "dpkg",
  debianPackage: "dpkg",
  purpose: "unpacks the guest kernel package",
};

/** `xz`, which decompresses the kernel image for a direct (PVH) boot. */
export const XZ: HostTool = {
  program: "xz",
  debianPackage: "xz-utils",
  purpose: "decompresses the guest kernel",
};

/** Every tool the guest examples use. */
export const GUEST_TOOLS: readonly HostTool[] = [QEMU, BUSYBOX_STATIC, APT_GET, DPKG, XZ];

/** Full path of `program` (see `findExecutable`), or `null`. */
export function findProgram(program: string): Promise<string | null> {
  return Promise.resolve(findExecutable(program));
}

/**
 * Whether the ELF file at `path` has no program interpreter (`PT_INTERP`),
 * i.e. runs without a dynamic loader, as the busybox in an initramfs must.
 */
export async function isStaticElf(path: string): Promise<boolean> {
  const file = await Deno.open(path);
  try {
    const head = new Uint8Array(64);
    if ((await file.read(head)) !== 64) return false;
    const v = new DataView(head.buffer);
    if (v.getUint32(0) !== 0x7f454c46 || head[4] !== 2) return false; // ELF64 only
    const phoff = Number(v.getBigUint64(32, true));
    const phentsize = v.getUint16(54, true);
    const phnum = v.getUint16(56, true);
    const table = new Uint8Array(phentsize * phnum);
    await file.seek(phoff, Deno.SeekMode.Start);
    let got = 0;
    while (got < table.length) {
      const n = await file.read(table.subarray(got));
      if (n === null) return false;
      got += n;
    }
    const t = new DataView(table.buffer);
    for (let i = 0; i < phnum; i++) {
      if (t.getUint32(i * phentsize, true) === 3) return false; // PT_INTERP
    }
    return true;
  } finally {
    file.close();
  }
}

/** A tool that was found, with its path. */
export interface FoundTool {
  /** The tool. */
  tool: HostTool;
  /** Where it is. */
  path: string;
}

/** The install command for `tools`, as a user would type it. */
export function installCommand(tools: readonly HostTool[]): string {
  const packages = [...new Set(tools.map((t) => t.debianPackage))];
  const sudo = Deno.uid() === 0 ? "" : "sudo ";
  return `${sudo}apt-get install -y ${packages.join(" ")}`;
}

/** Raised when host tools are missing; its message says how to install them. */
export class MissingToolsError extends Error {
  /** The tools that are missing or unusable. */
  readonly missing: readonly HostTool[];

  /**
   * An error naming the missing tools and the command that installs them.
   *
   * @param missing tools not found
   * @param reasons one line per tool
   */
  constructor(missing: readonly HostTool[], reasons: readonly string[]) {
    super(
      `missing host tools:\n${reasons.map((r) => `  - ${r}`).join("\n")}\n` +
        `install them with:  ${installCommand(missing)}\n` +
        `(or run this program with --setup to have it run that command)`,
    );
    this.name = "MissingToolsError";
    this.missing = missing;
  }
}

/**
 * Find every tool in `tools`; throws {@linkcode MissingToolsError} naming the
 * install command when any is missing or unusable.
 *
 * @example
 * ```ts
 * import { GUEST_TOOLS, requireHostTools } from "./host_tools.ts";
 * const found = await requireHostTools(GUEST_TOOLS);
 * console.log(found.get("qemu-system-x86_64"));
 * ```
 */
export async function requireHostTools(
  tools: readonly HostTool[],
): Promise<Map<string, string>> {
  const found = new Map<string, string>();
  const missing: HostTool[] = [];
  const reasons: string[] = [];
  for (const tool of tools) {
    const path = await findProgram(tool.program);
    const problem = path === null
      ? `${tool.program} not found in PATH`
      : tool.check
      ? await tool.check(path)
      : null;
    if (path === null || problem !== null) {
      missing.push(tool);
      reasons.push(`${problem} (package ${tool.debianPackage}: ${tool.purpose})`);
    } else {
      found.set(tool.program, path);
    }
  }
  if (missing.length > 0) throw new MissingToolsError(missing, reasons);
  return found;
}

/**
 * Install the Debian packages of the missing `tools` with apt-get (through
 * sudo when not root), printing the command first. Runs `apt-get update`
 * once and retries when the first install fails (stale package lists).
 */
export async function installHostTools(
  tools: readonly HostTool[],
  log: (line: string) => void = console.log,
): Promise<void> {
  const missing: HostTool[] = [];
  for (const tool of tools) {
    const path = await findProgram(tool.program);
    if (path === null || (tool.check && (await tool.check(path)) !== null)) missing.push(tool);
  }
  if (missing.length === 0) {
    log("setup: every host tool is installed");
    return;
  }
  const packages = [...new Set(missing.map((t) => t.debianPackage))];
  const prefix = Deno.uid() === 0 ? [] : ["sudo"];
  const run = async (args: string[]): Promise<boolean> => {
    log(`setup: running ${[...prefix, ...args].join(" ")}`);
    const cmd = [...prefix, ...args];
    const child = new Deno.Command(cmd[0], {
      args: cmd.slice(1),
      stdin: "null",
      stdout: "inherit",
      stderr: "inherit",
      env: { DEBIAN_FRONTEND: "noninteractive" },
    });
    return (await child.output()).success;
  };
  if (await run(["apt-get", "install", "-y", ...packages])) return;
  if (!(await run(["apt-get", "update"]))) throw new Error("setup: apt-get update failed");
  if (!(await run(["apt-get", "install", "-y", ...packages]))) {
    throw new Error(`setup: apt-get install ${packages.join(" ")} failed`);
  }
}
