/**
 * The guest's kernel: a Debian kernel package fetched with `apt-get download`
 * and unpacked with `dpkg -x` (nothing is installed on the host), cached under
 * {@linkcode guestCacheDir}. Two flavours:
 *
 * - `cloud` (`linux-image-cloud-amd64`): small, boots in about two seconds
 *   under TCG; has virtio-net but neither 9p nor the full VFIO set.
 * - `generic` (`linux-image-amd64`): has 9p, VFIO and the Intel IOMMU; used
 *   for the VFIO-in-a-guest example.
 *
 * Only the kernel image and the modules asked for (plus what they depend on)
 * are kept. An xz-compressed `vmlinuz` is also unpacked to its ELF `vmlinux`,
 * which QEMU boots directly through the PVH entry point: under TCG that saves
 * the seconds the guest would spend running its own xz decompressor.
 *
 * @module
 */

import { exists, guestCacheDir, writeFileAtomic } from "./cache_dir.ts";
import { loadOrder, moduleDepends, moduleKey } from "./kernel_modules.ts";

/** Which Debian kernel to use. */
export type KernelFlavour = "cloud" | "generic";

/** One kernel module on the host, ready to be copied into an initramfs. */
export interface KernelModuleFile {
  /** Module key (`virtio_net`, `vfio_pci`). */
  name: string;
  /** Absolute path of the uncompressed `.ko`. */
  path: string;
}

/** A kernel ready to boot. */
export interface GuestKernel {
  /** Debian package it came from (`linux-image-6.1.0-56-cloud-amd64`). */
  package: string;
  /** Kernel release (`6.1.0-56-cloud-amd64`). */
  release: string;
  /** Image to pass to QEMU's `-kernel`: the ELF `vmlinux` (PVH) or the `vmlinuz`. */
  image: string;
  /** Whether {@linkcode GuestKernel.image} is the uncompressed ELF. */
  elf: boolean;
  /** The modules asked for and their dependencies, in load order. */
  modules: KernelModuleFile[];
}

/** Options of {@linkcode prepareGuestKernel}. */
export interface GuestKernelOptions {
  /** Kernel flavour. */
  flavour: KernelFlavour;
  /** Modules the guest will load (names as in `modprobe`; dependencies are added). */
  modules: readonly string[];
  /**
   * Boot the uncompressed ELF through PVH when the image is xz-compressed
   * (default `true`; an LZ4 image, as the cloud kernel's, decompresses fast
   * enough in the guest and is booted as it is).
   */
  elf?: boolean;
  /** Cache directory (default {@linkcode guestCacheDir}). */
  cacheDir?: string;
  /** Progress lines. */
  log?: (line: string) => void;
}

interface Manifest {
  package: string;
  release: string;
  modules: Record<string, { file: string; depends: string[] }>;
}

const METAPACKAGE: Record<KernelFlavour, string> = {
  cloud: "linux-image-cloud-amd64",
  generic: "linux-image-amd64",
};

const VERSIONED: Record<KernelFlavour, RegExp> = {
  cloud: /^linux-image-\d+\.\d+\.\d+-\d+-cloud-amd64$/,
  generic: /^linux-image-\d+\.\d+\.\d+-\d+-amd64$/,
};

/**
 * Fetch (once) and return a Debian kernel with the given modules.
 *
 * @throws Error naming the apt command to run when the package cannot be found
 *   or downloaded.
 *
 * @example
 * ```ts
 * import { prepareGuestKernel } from "./guest_kernel.ts";
 * const kernel = await prepareGuestKernel({ flavour: "cloud", modules: ["virtio_net"] });
 * console.log(kernel.image, kernel.modules.map((m) => m.name));
 * ```
 */
export async function prepareGuestKernel(options: GuestKernelOptions): Promise<GuestKernel> {
  const log = options.log ?? (() => {});
  const cache = options.cacheDir ?? guestCacheDir();
  const kernels = `${cache}/kernels`;
  await Deno.mkdir(kernels, { recursive: true });
  const pkg = await resolvePackage(options.flavour, kernels);
  const dir = `${kernels}/${pkg}`;
  const manifestPath = `${dir}/manifest.json`;
  let manifest: Manifest | null = null;
  if (await exists(manifestPath)) {
    manifest = JSON.parse(await Deno.readTextFile(manifestPath)) as Manifest;
  }
  const known = (m: Manifest) => (key: string) => {
    const entry = m.modules[key];
    if (!entry) throw new Error(`module ${key} is not cached`);
    return entry.depends;
  };
  let order: string[] | null = null;
  if (manifest !== null && await exists(`${dir}/vmlinuz`)) {
    try {
      order = loadOrder(options.modules, known(manifest));
    } catch {
      order = null; // a module is not cached yet: unpack again below
    }
  }
  if (order === null || manifest === null) {
    manifest = await unpackKernel(pkg, cache, dir, options.modules, manifest, log);
    order = loadOrder(options.modules, known(manifest));
  }
  let image = `${dir}/vmlinuz`;
  let elf = false;
  if (options.elf ?? true) {
    const vmlinux = `${dir}/vmlinux`;
    if (!(await exists(vmlinux))) {
      const unpacked = await vmlinuxOf(await Deno.readFile(image));
      if (unpacked) {
        log(`kernel: unpacked ${pkg}'s xz vmlinuz to an ELF vmlinux for a direct (PVH) boot`);
        await writeFileAtomic(vmlinux, unpacked);
      }
    }
    if (await exists(vmlinux)) {
      image = vmlinux;
      elf = true;
    }
  }
  const m = manifest;
  return {
    package: pkg,
    release: m.release,
    image,
    elf,
    modules: order.map((name) => ({ name, path: `${dir}/modules/${m.modules[name].file}` })),
  };
}

/**
 * The versioned package to use: the newest one already cached (asking apt
 * costs most of a second), else the one behind the flavour's metapackage.
 */
async function resolvePackage(flavour: KernelFlavour, kernels: string): Promise<string> {
  const cached: string[] = [];
  for await (const e of Deno.readDir(kernels)) {
    if (
      e.isDirectory && VERSIONED[flavour].test(e.name) &&
      await exists(`${kernels}/${e.name}/manifest.json`)
    ) cached.push(e.name);
  }
  if (cached.length > 0) {
    return cached.sort((a, b) => a.localeCompare(b, "en", { numeric: true })).at(-1)!;
  }
  const meta = METAPACKAGE[flavour];
  try {
    const out = await new Deno.Command("apt-cache", {
      args: ["depends", meta],
      stdout: "piped",
      stderr: "null",
      stdin: "null",
    }).output();
    const text = new TextDecoder().decode(out.stdout);
    for (const m of text.matchAll(/Depends:\s*(linux-image-\S+)/g)) {
      if (VERSIONED[flavour].test(m[1])) return m[1];
    }
  } catch {
    // apt-cache missing: reported below
  }
  throw new Error(
    `apt does not know ${meta} (no package lists?): run  ${sudo()}apt-get update  and try again`,
  );
}

function sudo(): string {
  return Deno.uid() === 0 ? "" : "sudo ";
}

async function run(cmd: string, args: string[], cwd?: string): Promise<Uint8Array> {
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command(cmd, {
      args,
      cwd,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    })
      .output();
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new Error(`${cmd} is not installed (it is needed to fetch the guest kernel)`);
    }
    throw e;
  }
  if (!out.success) {
    const err = new TextDecoder().decode(out.stderr).trim().split("\n").slice(-5).join("\n");
    throw new Error(`${cmd} ${args.join(" ")} failed (exit ${out.code}):\n${err}`);
  }
  return out.stdout;
}

/** The downloaded `.deb` of `pkg` in `<cache>/debs`, downloading it when absent. */
async function debOf(pkg: string, cache: string, log: (line: string) => void): Promise<string> {
  const debs = `${cache}/debs`;
  await Deno.mkdir(debs, { recursive: true });
  const find = async () => {
    for await (const e of Deno.readDir(debs)) {
      if (e.isFile && e.name.startsWith(`${pkg}_`) && e.name.endsWith(".deb")) {
        return `${debs}/${e.name}`;
      }
    }
    return null;
  };
  const have = await find();
  if (have) return have;
  log(`kernel: downloading ${pkg} (apt-get download, into ${debs})`);
  try {
    await run("apt-get", ["download", pkg], debs);
  } catch (e) {
    throw new Error(
      `could not download ${pkg}: ${(e as Error).message}\n` +
        `try  ${sudo()}apt-get update  and run again`,
    );
  }
  const got = await find();
  if (!got) throw new Error(`apt-get download ${pkg} left no .deb in ${debs}`);
  return got;
}

/**
 * Unpack the package, keep its kernel image and the closure of the wanted
 * (and previously cached) modules, decompressing `.ko.xz`/`.ko.zst` so the
 * guest's busybox `insmod` can load them.
 */
async function unpackKernel(
  pkg: string,
  cache: string,
  dir: string,
  wanted: readonly string[],
  previous: Manifest | null,
  log: (line: string) => void,
): Promise<Manifest> {
  const deb = await debOf(pkg, cache, log);
  const tmp = `${dir}.unpack-${Deno.pid}`;
  await Deno.remove(tmp, { recursive: true }).catch(() => {});
  log(`kernel: unpacking ${deb.split("/").at(-1)}`);
  try {
    await run("dpkg", ["-x", deb, tmp]);
    const releases: string[] = [];
    for await (const e of Deno.readDir(`${tmp}/lib/modules`)) {
      if (e.isDirectory) releases.push(e.name);
    }
    if (releases.length !== 1) throw new Error(`${deb} holds ${releases.length} module trees`);
    const release = releases[0];
    const index = new Map<string, string>(); // key -> path in tmp
    const walk = async (path: string) => {
      for await (const e of Deno.readDir(path)) {
        const p = `${path}/${e.name}`;
        if (e.isDirectory) await walk(p);
        else if (/\.ko(\.xz|\.zst)?$/.test(e.name)) {
          index.set(moduleKey(e.name.replace(/\.(xz|zst)$/, "")), p);
        }
      }
    };
    await walk(`${tmp}/lib/modules/${release}/kernel`);
    const bytesOf = new Map<string, Uint8Array>();
    const load = async (key: string): Promise<Uint8Array> => {
      const cached = bytesOf.get(key);
      if (cached) return cached;
      const path = index.get(key);
      if (!path) throw new Error(`kernel ${release} has no module named ${key}`);
      let bytes: Uint8Array = await Deno.readFile(path);
      if (path.endsWith(".xz")) bytes = await run("xz", ["-dc", path]);
      if (path.endsWith(".zst")) bytes = await run("zstd", ["-dcq", path]);
      bytesOf.set(key, bytes);
      return bytes;
    };
    const depends = new Map<string, string[]>();
    const keys = [...wanted, ...Object.keys(previous?.modules ?? {})];
    for (const key of keys.map(moduleKey)) {
      const stack = [key];
      while (stack.length > 0) {
        const k = stack.pop()!;
        if (depends.has(k)) continue;
        const deps = moduleDepends(await load(k));
        depends.set(k, deps);
        stack.push(...deps);
      }
    }
    await Deno.mkdir(`${dir}/modules`, { recursive: true });
    const manifest: Manifest = { package: pkg, release, modules: {} };
    for (const [key, deps] of depends) {
      const file = `${key}.ko`;
      await writeFileAtomic(`${dir}/modules/${file}`, await load(key));
      manifest.modules[key] = { file, depends: deps };
    }
    await Deno.copyFile(`${tmp}/boot/vmlinuz-${release}`, `${dir}/vmlinuz.tmp-${Deno.pid}`);
    await Deno.rename(`${dir}/vmlinuz.tmp-${Deno.pid}`, `${dir}/vmlinuz`);
    await writeFileAtomic(`${dir}/manifest.json`, JSON.stringify(manifest, null, 2));
    log(`kernel: ${release} with ${depends.size} modules cached in ${dir}`);
    return manifest;
  } finally {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
}

/**
 * The ELF kernel inside a bzImage: the payload starts at the first xz stream
 * header (the setup code and decompressor come before it). Like the kernel's
 * `scripts/extract-vmlinux`, but for xz only (the generic Debian kernel);
 * returns `null` for an image compressed otherwise.
 */
export async function vmlinuxOf(bzImage: Uint8Array): Promise<Uint8Array | null> {
  const magic = [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00];
  let at = -1;
  outer: for (let i = 0; i + magic.length <= bzImage.length; i++) {
    for (let j = 0; j < magic.length; j++) if (bzImage[i + j] !== magic[j]) continue outer;
    at = i;
    break;
  }
  if (at < 0) return null;
  const child = new Deno.Command("xz", {
    args: ["-dc", "--single-stream"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  const writing = writer.write(bzImage.subarray(at)).then(() => writer.close()).catch(() => {});
  const out = await child.output();
  await writing;
  const elf = out.stdout;
  if (elf.length < 4 || elf[0] !== 0x7f || elf[1] !== 0x45 || elf[2] !== 0x4c || elf[3] !== 0x46) {
    throw new Error(
      `xz did not produce an ELF kernel: ${new TextDecoder().decode(out.stderr).trim()}`,
    );
  }
  return elf;
}
