/**
 * Run a QEMU guest as a child process and watch its serial console: launch
 * `qemu-system-x86_64` with the serial port on its stdout, keep everything the
 * guest prints, wait for marker lines with timeouts (saying what is awaited
 * while the guest boots), and kill QEMU on close. Every failure (timeout,
 * QEMU exiting early) raises an error that carries the console's tail and
 * QEMU's own error output, so a failed run explains itself.
 *
 * QEMU here is TCG only (no usable KVM), so the accelerator is fixed to
 * `tcg` rather than letting QEMU probe `/dev/kvm`.
 *
 * @module
 */

import { qmpArgs, QmpClient } from "./qmp.ts";

/** Options of {@linkcode QemuVm.launch}. */
export interface QemuVmOptions {
  /** Path of `qemu-system-x86_64` (default: found in `PATH`). */
  qemu?: string;
  /** Arguments after the ones this module adds (serial, display, accelerator). */
  args: readonly string[];
  /** What to call the guest in messages (default `guest`). */
  name?: string;
  /** Progress lines ("waiting for ..."). Default: `console.log`. */
  log?: (line: string) => void;
  /** Receives each console line as it arrives (e.g. to echo with `--verbose`). */
  onConsoleLine?: (line: string) => void;
  /**
   * Open a QMP monitor on a Unix socket at this path (`-qmp
   * unix:PATH,server=on,wait=off`); connect with {@linkcode QemuVm.connectQmp}.
   */
  qmp?: string;
}

/** Options of {@linkcode QemuVm.waitFor}. */
export interface WaitOptions {
  /** Give up after this many milliseconds. */
  timeoutMs: number;
  /** What the match means, for progress and error messages ("the guest's ping"). */
  what: string;
}

/** A wait ended without its marker: timeout or QEMU exit. Its message holds the console tail. */
export class GuestConsoleError extends Error {
  /** The guest console's last lines. */
  readonly consoleTail: string;

  /**
   * An error whose message ends with the console's last lines.
   *
   * @param message what failed
   * @param consoleTail the console's last lines
   */
  constructor(message: string, consoleTail: string) {
    super(`${message}\n--- guest console (last lines) ---\n${consoleTail}\n--- end of console ---`);
    this.name = "GuestConsoleError";
    this.consoleTail = consoleTail;
  }
}

/**
 * Common QEMU arguments for a direct kernel boot.
 *
 * @example
 * ```ts
 * import { kernelBootArgs } from "./qemu.ts";
 * const args = kernelBootArgs({
 *   kernel: "/cache/vmlinux", initrd: "/cache/x.cpio.gz", append: "quiet", memoryMiB: 256,
 * });
 * ```
 */
export function kernelBootArgs(options: {
  /** Kernel image (`vmlinux` ELF or `vmlinuz`). */
  kernel: string;
  /** Initramfs. */
  initrd: string;
  /** Extra kernel command line (console and panic behaviour are added). */
  append: string;
  /** Guest RAM in MiB; pass 0 when the caller gives `-m` itself. */
  memoryMiB: number;
  /** Machine type (default `pc`). */
  machine?: string;
  /** Virtual CPUs (default 1). */
  cpus?: number;
  /**
   * DIMM slots for memory hot-plug (`-m SIZE,slots=N,maxmem=MAX`); default
   * none. Needs `memoryMiB` > 0.
   */
  hotplugSlots?: number;
  /** Most guest RAM in MiB with hot-plugged DIMMs (default: 8 x `memoryMiB`). */
  maxMemMiB?: number;
}): string[] {
  const args = [
    "-machine",
    options.machine ?? "pc",
    "-smp",
    String(options.cpus ?? 1),
    "-kernel",
    options.kernel,
    "-initrd",
    options.initrd,
    "-append",
    `console=ttyS0 panic=-1 ${options.append}`.trim(),
  ];
  if (options.memoryMiB > 0) {
    args.push("-m", memorySizeArg(options.memoryMiB, options));
  }
  return args;
}

/** Room for memory hot-plug: see {@linkcode memorySizeArg}. */
export interface MemoryHotplugOptions {
  /** DIMM slots (`slots=`); no hot-plug when absent or 0. */
  hotplugSlots?: number;
  /** Most guest RAM in MiB, boot RAM included (`maxmem=`; default 8 x the boot RAM). */
  maxMemMiB?: number;
}

/**
 * The value of QEMU's `-m` for `memoryMiB` of boot RAM: `256M`, or with
 * hot-plug slots `256M,slots=4,maxmem=2048M`, which gives the machine a
 * device-memory area where `pc-dimm` devices can be added over QMP
 * (`object-add` a memory backend, then `device_add` a `pc-dimm` using it).
 *
 * @example
 * ```ts
 * import { memorySizeArg } from "./qemu.ts";
 * const args = ["-m", memorySizeArg(256, { hotplugSlots: 4, maxMemMiB: 2048 })];
 * ```
 *
 * @throws RangeError when a size or the slot count is not a positive integer,
 * or `maxMemMiB` is below `memoryMiB`.
 */
export function memorySizeArg(memoryMiB: number, hotplug: MemoryHotplugOptions = {}): string {
  if (!Number.isInteger(memoryMiB) || memoryMiB < 1) {
    throw new RangeError(`guest RAM ${memoryMiB} MiB: give a positive whole number of MiB`);
  }
  const slots = hotplug.hotplugSlots ?? 0;
  if (slots === 0) return `${memoryMiB}M`;
  if (!Number.isInteger(slots) || slots < 0) {
    throw new RangeError(`hotplugSlots ${slots}: give a positive whole number`);
  }
  const max = hotplug.maxMemMiB ?? 8 * memoryMiB;
  if (!Number.isInteger(max) || max < memoryMiB) {
    throw new RangeError(`maxMemMiB ${max}: give a whole number of MiB >= ${memoryMiB}`);
  }
  return `${memoryMiB}M,slots=${slots},maxmem=${max}M`;
}

/**
 * `args` with room for memory hot-plug: the value after `-m` (written by
 * {@linkcode kernelBootArgs}, e.g. `256M`) becomes
 * {@linkcode memorySizeArg}'s `256M,slots=N,maxmem=MAX`. Returns `args`
 * unchanged (a copy) when `hotplug` asks for no slots. Hot-added memory
 * must be shareable for a vhost-user backend to see it: add it as
 * `memory-backend-memfd` with `share: true`, as the boot RAM is.
 *
 * @example
 * ```ts
 * import { kernelBootArgs, withMemoryHotplug } from "./qemu.ts";
 * const args = withMemoryHotplug(
 *   kernelBootArgs({ kernel: "/cache/vmlinux", initrd: "/cache/x.cpio.gz", append: "", memoryMiB: 256 }),
 *   { hotplugSlots: 4, maxMemMiB: 2048 },
 * );
 * ```
 *
 * @throws Error when hot-plug is asked for and `args` has no `-m MiB` to extend.
 */
export function withMemoryHotplug(
  args: readonly string[],
  hotplug: MemoryHotplugOptions,
): string[] {
  const out = [...args];
  if ((hotplug.hotplugSlots ?? 0) === 0) return out;
  const at = out.indexOf("-m");
  const m = at >= 0 ? /^(\d+)M$/.exec(out[at + 1] ?? "") : null;
  if (m === null) {
    throw new Error(
      `memory hot-plug needs a plain "-m <MiB>M" argument to extend; found ${
        at >= 0 ? `"-m ${out[at + 1]}"` : "no -m"
      }`,
    );
  }
  out[at + 1] = memorySizeArg(Number(m[1]), hotplug);
  return out;
}

/**
 * A running QEMU guest.
 *
 * @example
 * ```ts
 * import { QemuVm } from "./qemu.ts";
 * await using vm = QemuVm.launch({ args: ["-kernel", "vmlinux", "-append", "console=ttyS0"] });
 * await vm.waitFor(/vm-init: done/, { timeoutMs: 60_000, what: "the guest's init" });
 * ```
 */
export class QemuVm {
  /** Name in messages. */
  readonly name: string;
  /** When QEMU was started (`performance.now()` milliseconds). */
  readonly startedAt: number;
  /** The QMP socket's path, when launched with {@linkcode QemuVmOptions.qmp}. */
  readonly qmpSocket: string | null;
  #child: Deno.ChildProcess;
  #console = "";
  #stderr = "";
  #cursor = 0;
  #log: (line: string) => void;
  #onLine?: (line: string) => void;
  #partial = "";
  #status: Deno.CommandStatus | null = null;
  #exited: Promise<Deno.CommandStatus>;
  #readers: Promise<void>;
  #wake: (() => void) | null = null;

  private constructor(child: Deno.ChildProcess, options: QemuVmOptions) {
    this.name = options.name ?? "guest";
    this.startedAt = performance.now();
    this.qmpSocket = options.qmp ?? null;
    this.#child = child;
    this.#log = options.log ?? console.log;
    this.#onLine = options.onConsoleLine;
    this.#readers = Promise.all([
      this.#pump(child.stdout, (text) => this.#onConsole(text)),
      this.#pump(child.stderr, (text) => {
        this.#stderr += text;
      }),
    ]).then(() => {});
    this.#exited = child.status.then((s) => {
      this.#status = s;
      this.#poke();
      return s;
    });
  }

  /**
   * Start QEMU. The serial console goes to a pipe that this object reads;
   * no display, no monitor (but the QMP socket asked for), no default devices, no reboot (a guest reboot or
   * kernel panic ends QEMU).
   *
   * @throws Error with the install command when QEMU is not installed.
   */
  static launch(options: QemuVmOptions): QemuVm {
    const qemu = options.qemu ?? "qemu-system-x86_64";
    const args = [
      "-nodefaults",
      "-no-user-config",
      "-display",
      "none",
      "-serial",
      "stdio",
      "-no-reboot",
      "-accel",
      "tcg",
      ...(options.qmp ? qmpArgs(options.qmp) : []),
      ...options.args,
    ];
    let child: Deno.ChildProcess;
    try {
      child = new Deno.Command(qemu, { args, stdin: "null", stdout: "piped", stderr: "piped" })
        .spawn();
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) {
        throw new Error(
          `${qemu} is not installed: run  ${Deno.uid() === 0 ? "" : "sudo "}` +
            `apt-get install -y qemu-system-x86 busybox-static  (or pass --setup)`,
        );
      }
      throw e;
    }
    return new QemuVm(child, options);
  }

  /**
   * Connect to the QMP monitor (see {@linkcode QemuVmOptions.qmp}), past
   * capabilities negotiation. The caller closes the client.
   *
   * @throws Error when QEMU was launched without a QMP socket.
   * @throws QmpError when the monitor does not answer in time or QEMU exits.
   */
  connectQmp(timeoutMs = 10_000): Promise<QmpClient> {
    if (this.qmpSocket === null) {
      return Promise.reject(new Error(`${this.name}: QEMU was launched without a QMP socket`));
    }
    return QmpClient.connect(this.qmpSocket, { timeoutMs, gone: this.#exited });
  }

  /** QEMU's process id. */
  get pid(): number {
    return this.#child.pid;
  }

  /** Everything the guest printed so far (`\r\n` turned into `\n`). */
  get console(): string {
    return this.#console;
  }

  /** QEMU's own error output so far. */
  get stderr(): string {
    return this.#stderr;
  }

  /** Exit status once QEMU has exited, else `null`. */
  get status(): Deno.CommandStatus | null {
    return this.#status;
  }

  /** Resolves when QEMU exits. */
  get exited(): Promise<Deno.CommandStatus> {
    return this.#exited;
  }

  /** Seconds since launch, for progress lines. */
  elapsed(): number {
    return (performance.now() - this.startedAt) / 1000;
  }

  /** The console's last `lines` lines. */
  consoleTail(lines = 40): string {
    return this.#console.trimEnd().split("\n").slice(-lines).join("\n");
  }

  /**
   * Wait until the console, after the previous match, matches `pattern`; the
   * next wait starts after this match. Prints what it waits for, then every
   * 10 s how long it has been waiting and the guest's last line.
   *
   * @throws GuestConsoleError on timeout or when QEMU exits first.
   */
  async waitFor(pattern: RegExp | string, options: WaitOptions): Promise<RegExpMatchArray> {
    const re = typeof pattern === "string"
      ? new RegExp(pattern.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"))
      : pattern;
    const started = performance.now();
    const deadline = started + options.timeoutMs;
    let nextNote = started + 10_000;
    this.#log(
      `${this.name}: waiting for ${options.what} (up to ${Math.round(options.timeoutMs / 1000)} s)`,
    );
    while (true) {
      const rest = this.#console.slice(this.#cursor);
      const m = rest.match(re);
      if (m && m.index !== undefined) {
        this.#cursor += m.index + m[0].length;
        const took = ((performance.now() - started) / 1000).toFixed(1);
        this.#log(`${this.name}: ${options.what}: seen after ${took} s`);
        return m;
      }
      if (this.#status !== null) {
        await this.#readers; // collect the last output before reporting
        const again = this.#console.slice(this.#cursor).match(re);
        if (again && again.index !== undefined) {
          this.#cursor += again.index + again[0].length;
          return again;
        }
        throw new GuestConsoleError(
          `QEMU exited (code ${this.#status.code}) before ${options.what}` +
            (this.#stderr.trim() ? `\nQEMU said: ${this.#stderr.trim()}` : ""),
          this.consoleTail(),
        );
      }
      const now = performance.now();
      if (now >= deadline) {
        throw new GuestConsoleError(
          `timed out after ${Math.round(options.timeoutMs / 1000)} s waiting for ${options.what}` +
            (this.#stderr.trim() ? `\nQEMU said: ${this.#stderr.trim()}` : ""),
          this.consoleTail(),
        );
      }
      if (now >= nextNote) {
        nextNote += 10_000;
        const last = this.#console.trimEnd().split("\n").at(-1) ?? "";
        this.#log(
          `${this.name}: still waiting for ${options.what} (${
            ((now - started) / 1000).toFixed(0)
          } s)` +
            (last ? `; guest's last line: ${last.slice(0, 160)}` : ""),
        );
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, Math.max(1, Math.min(deadline, nextNote) - now));
        this.#wake = done;
        function done() {
          clearTimeout(timer);
          resolve();
        }
      });
      this.#wake = null;
    }
  }

  /** Kill QEMU (SIGKILL) if it runs, and wait until it and the console readers are done. */
  async close(): Promise<void> {
    if (this.#status === null) {
      try {
        this.#child.kill("SIGKILL");
      } catch {
        // it exited between the check and the kill
      }
    }
    await this.#exited;
    await this.#readers;
  }

  /** Same as {@linkcode QemuVm.close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  #onConsole(text: string): void {
    const clean = text.replaceAll("\r", "");
    this.#console += clean;
    if (this.#onLine) {
      const lines = (this.#partial + clean).split("\n");
      this.#partial = lines.pop() ?? "";
      for (const l of lines) this.#onLine(l);
    }
    this.#poke();
  }

  #poke(): void {
    this.#wake?.();
  }

  async #pump(stream: ReadableStream<Uint8Array>, sink: (text: string) => void): Promise<void> {
    const decoder = new TextDecoder();
    try {
      for await (const chunk of stream) sink(decoder.decode(chunk, { stream: true }));
    } catch {
      // the pipe broke because QEMU was killed
    }
  }
}
