/**
 * The life of one guest run, the part `runPingVm`, `runChannelsVm` and
 * `runVfioVm` share: install (with `setup`) and find the host tools, prepare
 * the guest image, serve a device on a vhost-user socket in a temporary
 * directory, launch QEMU (an abort kills it), wait for the guest's
 * userspace, give it time to power off, and take everything down again,
 * timing each phase on the way.
 *
 * @module
 */

import type { VhostMdevDevice } from "@vhost-mdev/sdk";
import { VhostUserServer } from "@vhost-mdev/sdk/vhost-user";
import type { GuestImage } from "./guest_image.ts";
import { GUEST_TOOLS, type HostTool, installHostTools, requireHostTools } from "./host_tools.ts";
import { QemuVm } from "./qemu.ts";
import type { QmpClient } from "./qmp.ts";

/** Options of {@linkcode GuestVmRun.start}. */
export interface GuestVmRunOptions<G extends GuestImage> {
  /** Build (or find in the cache) the guest image, given a static busybox. */
  prepare: (busybox: string, log: (line: string) => void) => Promise<G>;
  /** Install missing host packages with apt-get first. */
  setup?: boolean;
  /** What `setup` installs (default: `GUEST_TOOLS`). */
  setupTools?: readonly HostTool[];
  /** Echo the guest console through `log`. */
  verbose?: boolean;
  /** Progress lines. */
  log: (line: string) => void;
  /** Aborting kills QEMU. */
  signal?: AbortSignal;
}

/** Options of {@linkcode GuestVmRun.launch}. */
export interface GuestLaunchOptions {
  /** QMP socket path (see `QemuVmOptions.qmp`). */
  qmp?: string;
  /** What follows `guest: QEMU started (pid N)` in the log (default: the kernel being booted). */
  started?: string;
}

/**
 * One guest run, from the host tools to the cleanup; dispose of it (`await
 * using`) to close QMP, QEMU, whatever was deferred (last first) and the
 * temporary directory, in that order.
 *
 * @example
 * ```ts
 * import { GuestVmRun } from "./vm_run.ts";
 * import { guestBootArgs, prepareGuestImage } from "./guest_image.ts";
 *
 * await using run = await GuestVmRun.start({
 *   prepare: (busybox, log) =>
 *     prepareGuestImage({ flavour: "cloud", modules: [], body: "true", busybox, log }),
 *   log: console.log,
 * });
 * const vm = run.launch(guestBootArgs(run.guest, { append: "quiet", memoryMiB: 256 }));
 * await run.waitForBoot();
 * await run.waitForExit();
 * console.log(vm.consoleTail(5), run.timings);
 * ```
 */
export class GuestVmRun<G extends GuestImage> implements AsyncDisposable {
  /** Phase times in ms, by name (`image_ms`, `boot_ms`, ...; see {@linkcode GuestVmRun.lap}). */
  readonly timings: Record<string, number> = {};
  /** The full paths of the host tools (`qemu-system-x86_64`, `busybox`, ...). */
  readonly tools: Map<string, string>;
  /** The prepared guest image. */
  readonly guest: G;
  readonly #options: GuestVmRunOptions<G>;
  readonly #t0: number;
  #t: number;
  #vm: QemuVm | null = null;
  #qmp: QmpClient | null = null;
  #dir: string | null = null;
  readonly #deferred: (() => unknown)[] = [];
  readonly #onAbort = () => void this.#vm?.close();

  private constructor(
    options: GuestVmRunOptions<G>,
    tools: Map<string, string>,
    guest: G,
    t0: number,
  ) {
    this.#options = options;
    this.tools = tools;
    this.guest = guest;
    this.#t0 = t0;
    this.#t = t0;
  }

  /**
   * Install the host tools (with `setup`), find them, prepare the guest image
   * (timed as `image_ms`) and start listening for the abort.
   *
   * @throws MissingToolsError when QEMU or a static busybox is missing.
   */
  static async start<G extends GuestImage>(options: GuestVmRunOptions<G>): Promise<GuestVmRun<G>> {
    const { log } = options;
    const t0 = performance.now();
    if (options.setup) await installHostTools(options.setupTools ?? GUEST_TOOLS, log);
    const tools = await requireHostTools(GUEST_TOOLS);
    const guest = await options.prepare(tools.get("busybox")!, (l) => log(`image: ${l}`));
    const run = new GuestVmRun(options, tools, guest, t0);
    run.lap("image_ms");
    log(`image: kernel ${guest.release}, initramfs ${guest.initrd}`);
    options.signal?.addEventListener("abort", run.#onAbort);
    return run;
  }

  /** QEMU, once launched. */
  get vm(): QemuVm | null {
    return this.#vm;
  }

  /** Record the time since the previous lap (or the start) as `timings[name]`. */
  lap(name: string): void {
    const now = performance.now();
    this.timings[name] = Math.round(now - this.#t);
    this.#t = now;
  }

  /** Record the time since the start as `timings.total_ms`. */
  total(): void {
    this.timings.total_ms = Math.round(performance.now() - this.#t0);
  }

  /** Run `cleanup` when the run is disposed of, after QEMU is closed. */
  defer(cleanup: () => unknown): void {
    this.#deferred.push(cleanup);
  }

  /** A temporary directory for sockets, made on first use and removed at the end. */
  async tempDir(): Promise<string> {
    this.#dir ??= await Deno.makeTempDir({ prefix: "vhost-mdev-vm-" });
    return this.#dir;
  }

  /**
   * Serve `device` on `vhost-net.sock` in {@linkcode GuestVmRun.tempDir}
   * until the run ends; returns the socket path.
   *
   * @param what what is served, for the log (`2 queue pairs`)
   */
  async serve(device: VhostMdevDevice, what: string): Promise<string> {
    const socket = `${await this.tempDir()}/vhost-net.sock`;
    const server = VhostUserServer.listen(device, socket);
    this.defer(() => server.close());
    this.#options.log(`device: ${device.driver.name} serving ${what} on ${socket}`);
    return socket;
  }

  /**
   * Launch QEMU with `args`, its console echoed when verbose.
   *
   * @throws the abort reason when the signal has been aborted.
   */
  launch(args: string[], options: GuestLaunchOptions = {}): QemuVm {
    const { log, verbose, signal } = this.#options;
    signal?.throwIfAborted();
    const vm = QemuVm.launch({
      qemu: this.tools.get("qemu-system-x86_64"),
      args,
      log,
      onConsoleLine: verbose ? (l) => log(`  console| ${l}`) : undefined,
      qmp: options.qmp,
    });
    this.#vm = vm;
    const started = options.started ?? `, booting ${this.guest.release} under TCG`;
    log(`guest: QEMU started (pid ${vm.pid})${started}`);
    return vm;
  }

  /** Connect to QEMU's QMP socket; the connection is closed with the run. */
  async connectQmp(): Promise<QmpClient> {
    this.#qmp = await this.#launched().connectQmp();
    return this.#qmp;
  }

  /**
   * Wait for the guest's `/init` to start (`vm-init: userspace up`), timed as
   * `boot_ms`.
   *
   * @throws GuestConsoleError when it does not within `timeoutMs`.
   */
  async waitForBoot(timeoutMs = 90_000): Promise<void> {
    await this.#launched().waitFor(/vm-init: userspace up/, {
      timeoutMs,
      what: "the guest kernel to boot",
    });
    this.lap("boot_ms");
  }

  /** Give QEMU up to `timeoutMs` to exit by itself (the guest powers off). */
  async waitForExit(timeoutMs = 10_000): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      this.#launched().exited,
      new Promise((r) => timer = setTimeout(r, timeoutMs)),
    ]);
    clearTimeout(timer);
  }

  /** Close QMP, QEMU, the deferred cleanups (last first) and remove the temporary directory. */
  async [Symbol.asyncDispose](): Promise<void> {
    this.#options.signal?.removeEventListener("abort", this.#onAbort);
    await this.#qmp?.close();
    await this.#vm?.close();
    for (const cleanup of this.#deferred.splice(0).reverse()) await cleanup();
    if (this.#dir !== null) await Deno.remove(this.#dir, { recursive: true }).catch(() => {});
  }

  #launched(): QemuVm {
    if (this.#vm === null) throw new Error("QEMU has not been launched");
    return this.#vm;
  }
}
