/**
 * Our backend as the benchmark runs it: `cli/serve.ts --driver sim` in a
 * child process pinned with `taskset -c CPU`, so every thread of it (main,
 * datapath Workers, V8's helpers) shares the one CPU a DPDK backend lcore
 * gets. Its `--log json --stats P` lines are read as they arrive; a stats
 * line is timestamped on receipt.
 *
 * @module
 */

import type { QueueStats } from "@vhost-mdev/sdk";

/** Options of {@linkcode SimServe.start}. */
export interface SimServeOptions {
  /** The vhost-user socket path the child listens on. */
  socket: string;
  /** Sim mode: `sink`, `source` or `loopback`. */
  mode: string;
  /** Driver options besides `mode` (e.g. `{ "frame-size": "64" }`). */
  options?: Record<string, string>;
  /** CPU to pin the child to with `taskset -c`; `null` leaves it floating. */
  cpu: number | null;
  /** Seconds between stats lines (default 0.25). */
  statsPeriod?: number;
  /** Repository root (where the root `deno.json` is). */
  root: string;
  /** Extra Deno flags for the child (e.g. `--v8-flags=--prof`). */
  denoFlags?: readonly string[];
  /** Working directory of the child (default `root`); V8 profile logs land there. */
  cwd?: string;
  /** How long to wait for the ready line, in ms (default 30000). */
  readyTimeoutMs?: number;
}

/** One stats line of the child, timestamped when it arrived. */
export interface SimSample {
  /** `performance.now()` of this process when the line arrived. */
  time: number;
  /** The per-ring counters. */
  queues: QueueStats[];
}

/** Lines of output kept for error messages. */
const TAIL_LINES = 40;

/** A running `serve --driver sim` child. Always {@linkcode SimServe.close} it. */
export class SimServe {
  #child: Deno.ChildProcess;
  #tail: string[] = [];
  #started = false;
  #startWaiters: (() => void)[] = [];
  #sampleWaiters: ((s: SimSample) => void)[] = [];
  #ready: Promise<void>;
  #exited: Promise<Deno.CommandStatus>;
  #exit: Deno.CommandStatus | null = null;
  #readers: Promise<void>;
  #args: string[];

  private constructor(child: Deno.ChildProcess, args: string[]) {
    this.#child = child;
    this.#args = args;
    let ready!: () => void;
    this.#ready = new Promise<void>((r) => ready = r);
    this.#readers = Promise.all([
      this.#pump(child.stdout, ready),
      this.#pump(child.stderr, () => {}),
    ]).then(() => {});
    this.#exited = child.status.then(async (s) => {
      await this.#readers;
      this.#exit = s;
      return s;
    });
  }

  /**
   * Spawn the child and wait for its ready line.
   *
   * @throws Error with the child's output when it exits or is not ready in time.
   */
  static async start(o: SimServeOptions): Promise<SimServe> {
    const serveArgs = [
      "run",
      "-A",
      "--quiet",
      "--config",
      `${o.root}/deno.json`,
      ...(o.denoFlags ?? []),
      // The CLI package's serve command, resolved as any importer would.
      import.meta.resolve("@vhost-mdev/cli/serve"),
      "--driver",
      "sim",
      "--mode",
      o.mode,
      ...Object.entries(o.options ?? {}).flatMap(([k, v]) => [`--${k}`, v]),
      "--socket",
      o.socket,
      // testpmd --no-huge shares memfds that cannot be sealed.
      "--allow-unsealed-memory",
      "--log",
      "json",
      "--stats",
      String(o.statsPeriod ?? 0.25),
    ];
    const [cmd, args] = o.cpu === null
      ? [Deno.execPath(), serveArgs]
      : ["taskset", ["-c", String(o.cpu), Deno.execPath(), ...serveArgs]];
    const child = new Deno.Command(cmd, {
      args,
      cwd: o.cwd ?? o.root,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const sim = new SimServe(child, [cmd, ...args]);
    const timeout = o.readyTimeoutMs ?? 30000;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const outcome = await Promise.race([
      sim.#ready.then(() => "ready" as const),
      sim.#exited.then(() => "exited" as const),
      new Promise<"timeout">((r) => timer = setTimeout(() => r("timeout"), timeout)),
    ]);
    clearTimeout(timer);
    if (outcome !== "ready") {
      await sim.close();
      throw new Error(
        `sim backend ${outcome === "exited" ? "exited" : `not ready within ${timeout} ms`}: ` +
          `${sim.#args.join(" ")}\n--- its output ---\n${sim.outputTail()}`,
      );
    }
    return sim;
  }

  /** The child's process ID (taskset execs Deno, so this is Deno itself). */
  get pid(): number {
    return this.#child.pid;
  }

  /** The last lines the child printed. */
  outputTail(): string {
    return this.#tail.join("\n");
  }

  async #pump(stream: ReadableStream<Uint8Array>, onReady: () => void): Promise<void> {
    const decoder = new TextDecoder();
    let buf = "";
    for await (const chunk of stream) {
      buf += decoder.decode(chunk, { stream: true });
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        this.#line(line, onReady);
      }
    }
    if (buf) this.#line(buf, onReady);
  }

  #line(line: string, onReady: () => void): void {
    const time = performance.now();
    let msg: { type?: string; queues?: QueueStats[] } | null = null;
    try {
      msg = JSON.parse(line);
    } catch {
      // Not one of serve's JSON lines (a stack trace, a warning): keep for errors.
    }
    if (msg?.type !== "stats") {
      this.#tail.push(line);
      if (this.#tail.length > TAIL_LINES) this.#tail.shift();
    }
    if (msg?.type === "ready") onReady();
    else if (msg?.type === "start") {
      this.#started = true;
      for (const w of this.#startWaiters.splice(0)) w();
    } else if (msg?.type === "stats" && Array.isArray(msg.queues)) {
      const sample = { time, queues: msg.queues };
      for (const w of this.#sampleWaiters.splice(0)) w(sample);
    }
  }

  /**
   * Wait until the device has started (its `start` event), i.e. the
   * frontend reached DRIVER_OK and the datapath runs.
   */
  async waitStarted(timeoutMs = 15000): Promise<void> {
    if (this.#started) return;
    await this.#within(
      new Promise<void>((r) => this.#startWaiters.push(r)),
      timeoutMs,
      "the sim device did not start",
    );
  }

  /** The next stats line. */
  nextSample(timeoutMs = 5000): Promise<SimSample> {
    return this.#within(
      new Promise<SimSample>((r) => this.#sampleWaiters.push(r)),
      timeoutMs,
      "no stats line from the sim backend",
    );
  }

  async #within<T>(p: Promise<T>, timeoutMs: number, what: string): Promise<T> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const outcome = await Promise.race([
      p.then((v) => ({ v })),
      this.#exited.then(() => "exited" as const),
      new Promise<"timeout">((r) => timer = setTimeout(() => r("timeout"), timeoutMs)),
    ]);
    clearTimeout(timer);
    if (typeof outcome === "object") return outcome.v;
    throw new Error(
      `${what} (${outcome === "exited" ? "it exited" : `within ${timeoutMs} ms`})\n` +
        `--- its output ---\n${this.outputTail()}`,
    );
  }

  /** SIGTERM (serve's clean shutdown), SIGKILL after `graceMs`; waits and reaps. */
  async close(graceMs = 5000): Promise<Deno.CommandStatus> {
    const signal = (sig: Deno.Signal) => {
      try {
        if (!this.#exit) this.#child.kill(sig);
      } catch {
        // It exited between the check and the signal.
      }
    };
    signal("SIGTERM");
    const kill = setTimeout(() => signal("SIGKILL"), graceMs);
    try {
      return await this.#exited;
    } finally {
      clearTimeout(kill);
    }
  }
}

/** Sum of `packets` over the rings `pick` selects. */
export function ringPackets(queues: readonly QueueStats[], pick: (q: number) => boolean): number {
  let n = 0;
  for (const q of queues) if (pick(q.queue)) n += q.packets;
  return n;
}
