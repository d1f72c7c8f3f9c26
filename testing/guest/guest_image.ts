/**
 * A guest image: a Debian kernel (`guest_kernel.ts`) and a busybox initramfs
 * (`initramfs.ts`) whose `/init` loads the kernel's modules and runs a body
 * of shell commands. The ping, channels and VFIO guests are each one such
 * image with their own body; both parts are cached, so preparing an image
 * that was built before costs a few `stat` calls.
 *
 * @example A guest that says hello and powers off
 * ```ts
 * import { guestBootArgs, prepareGuestImage, QemuVm } from "@vhost-mdev/testing/guest";
 *
 * const image = await prepareGuestImage({
 *   flavour: "cloud",
 *   modules: [],
 *   body: 'echo "hello from $(uname -r)"',
 *   busybox: "/bin/busybox",
 *   log: console.log,
 * });
 * await using vm = QemuVm.launch({
 *   args: guestBootArgs(image, { append: "quiet", memoryMiB: 256 }),
 * });
 * await vm.waitFor(/hello from/, { timeoutMs: 60_000, what: "the guest's greeting" });
 * ```
 *
 * @module
 */

import { type KernelFlavour, prepareGuestKernel } from "./guest_kernel.ts";
import { buildInitramfs, type InitramfsFile, initScript } from "./initramfs.ts";
import { kernelBootArgs } from "./qemu.ts";

export type { InitramfsFile, KernelFlavour };

/** A built guest: what QEMU boots. */
export interface GuestImage {
  /** Kernel image path. */
  kernel: string;
  /** Initramfs path. */
  initrd: string;
  /** Kernel release, for messages. */
  release: string;
}

/** Options of {@linkcode prepareGuestImage}. */
export interface GuestImageOptions {
  /** Kernel flavour. */
  flavour: KernelFlavour;
  /** Modules `/init` loads (dependencies are added, in load order). */
  modules: readonly string[];
  /** Shell commands `/init` runs once the modules are loaded. */
  body: string;
  /** Path of a static busybox. */
  busybox: string;
  /** More files for the initramfs. */
  files?: readonly InitramfsFile[];
  /** Progress lines. */
  log: (line: string) => void;
}

/** Fetch the kernel and build the initramfs around `options.body` (both cached). */
export async function prepareGuestImage(options: GuestImageOptions): Promise<GuestImage> {
  const { flavour, modules, busybox, files, log } = options;
  const kernel = await prepareGuestKernel({ flavour, modules, log });
  const initrd = await buildInitramfs({
    init: initScript({ modules: kernel.modules.map((m) => m.name), body: options.body }),
    modules: kernel.modules,
    busybox,
    files,
    log,
  });
  return { kernel: kernel.image, initrd, release: kernel.release };
}

/** Options of {@linkcode guestBootArgs}. */
export interface GuestBootOptions {
  /** Kernel command line (see `guestCommandLine`). */
  append: string;
  /** Guest RAM in MiB. */
  memoryMiB: number;
  /** Machine type (default `pc`). */
  machine?: string;
  /** Virtual CPUs (default 1). */
  cpus?: number;
}

/** QEMU's arguments for a direct boot of `image` (see `kernelBootArgs`). */
export function guestBootArgs(image: GuestImage, options: GuestBootOptions): string[] {
  return kernelBootArgs({ kernel: image.kernel, initrd: image.initrd, ...options });
}
