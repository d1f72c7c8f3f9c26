/**
 * DPDK `dpdk-testpmd` (22.11) as a peer in tests and benchmarks, driven
 * through its interactive prompt. A `net_virtio_user` vdev makes testpmd a
 * virtio-net frontend (the guest side); a `net_vhost` vdev makes it DPDK's
 * own vhost-user backend.
 *
 * testpmd's stdout is block-buffered when it is a pipe, so command output
 * would only appear when the buffer fills; the runner starts it under
 * coreutils `stdbuf -o0` so every command's output arrives before the next
 * `testpmd> ` prompt, which is how a command's output is delimited.
 *
 * @example Count what a virtio_user frontend sends to a socket
 * ```ts
 * import { Testpmd } from "@vhost-mdev/testing";
 *
 * const tp = await Testpmd.start({
 *   vdevs: "net_virtio_user0,path=/tmp/vhost.sock,queues=1",
 *   forwardMode: "txonly",
 *   cpu: 1,
 * });
 * try {
 *   await tp.waitForLinkUp();
 *   await tp.startForwarding();
 *   await new Promise((r) => setTimeout(r, 1000));
 *   const fwd = await tp.stopForwarding();
 *   console.log(fwd.total.txPackets, (await tp.portStats(0)).txBytes);
 * } finally {
 *   await tp.close();
 * }
 * ```
 *
 * @module
 */

import { findExecutable } from "./programs.ts";

/** The prompt testpmd prints when it is ready for the next command. */
const PROMPT = "testpmd> ";
/** Bytes of output kept for error messages. */
const TAIL_BYTES = 8192;
/** Unconsumed output beyond this, with no command in flight, is dropped. */
const MAX_IDLE_BUFFER = 1 << 20;

let instances = 0;

/** Forwarding engines testpmd offers (`--forward-mode`). */
export type TestpmdForwardMode =
  | "io"
  | "mac"
  | "macswap"
  | "flowgen"
  | "rxonly"
  | "txonly"
  | "csum"
  | "icmpecho"
  | "noisy"
  | "5tswap"
  | "shared-rxq";

/** How to start testpmd. Only `vdevs` is required. */
export interface TestpmdOptions {
  /** The testpmd binary: a path or a name looked up on PATH (default `dpdk-testpmd`). */
  binary?: string;
  /**
   * One or more `--vdev` strings, e.g.
   * `net_virtio_user0,path=/tmp/s.sock,queues=1,server=1,mrg_rxbuf=0,in_order=0`
   * or `net_vhost0,iface=/tmp/s.sock,queues=1`.
   */
  vdevs: string | readonly string[];
  /** Forwarding engine (`--forward-mode`, default testpmd's `io`). */
  forwardMode?: TestpmdForwardMode;
  /** Frame size in bytes for txonly/flowgen, or one length per segment (`--txpkts`). */
  txpkts?: number | readonly number[];
  /** Packets per burst (`--burst`, testpmd default 32). */
  burst?: number;
  /** Receive queues per port (`--rxq`). */
  rxq?: number;
  /** Transmit queues per port (`--txq`). */
  txq?: number;
  /** Receive ring size (`--rxd`). */
  rxd?: number;
  /** Transmit ring size (`--txd`). */
  txd?: number;
  /** Forwarding cores (`--nb-cores`, default 1). */
  nbCores?: number;
  /**
   * Pin the main lcore and every forwarding lcore to this CPU (`--lcores
   * 0@C,1@C,...`). The main lcore sleeps in the prompt, so one CPU is enough;
   * give two testpmds different CPUs. Without it (and without `lcores`) the
   * lcores float over all CPUs.
   */
  cpu?: number;
  /** A raw EAL `--lcores` value; overrides `cpu`. */
  lcores?: string;
  /** Memory in MiB (`-m`, default 256; always `--no-huge`). */
  memoryMb?: number;
  /** Mbufs in the pool (`--total-num-mbufs`, default 16384). */
  totalNumMbufs?: number;
  /** EAL `--file-prefix` (default a name unique to this process and instance). */
  filePrefix?: string;
  /** Vary the source address per packet in txonly mode (`--txonly-multi-flow`). */
  txonlyMultiFlow?: boolean;
  /** More EAL arguments (before `--`). */
  ealArgs?: readonly string[];
  /** More testpmd arguments (after `--`). */
  args?: readonly string[];
  /** Time to reach the first prompt, in ms (default 20000). */
  startTimeoutMs?: number;
  /** Default time a command may take, in ms (default 10000). */
  commandTimeoutMs?: number;
  /** Extra environment variables. */
  env?: Record<string, string>;
  /** The `stdbuf` binary that unbuffers testpmd's output (default `stdbuf`). */
  stdbuf?: string;
}

/** Counters of `show port stats N` (`rte_eth_stats` plus testpmd's rates). */
export interface TestpmdPortStats {
  /** Packets received. */
  rxPackets: number;
  /** Bytes received. */
  rxBytes: number;
  /** Receive errors. */
  rxErrors: number;
  /** Packets the device dropped for lack of receive descriptors (`imissed`). */
  rxMissed: number;
  /** Receive mbuf allocation failures. */
  rxNombuf: number;
  /** Packets sent. */
  txPackets: number;
  /** Bytes sent. */
  txBytes: number;
  /** Transmit errors. */
  txErrors: number;
  /** Receive rate since the previous `show port stats`, packets per second. */
  rxPps: number;
  /** Receive rate since the previous `show port stats`, bits per second. */
  rxBps: number;
  /** Transmit rate since the previous `show port stats`, packets per second. */
  txPps: number;
  /** Transmit rate since the previous `show port stats`, bits per second. */
  txBps: number;
}

/** One port's (or the sum's) counters in the report `stop` prints. */
export interface TestpmdForwardCounts {
  /** Packets the forwarding engine received. */
  rxPackets: number;
  /** Packets received and then dropped by the engine. */
  rxDropped: number;
  /** `rxPackets + rxDropped`. */
  rxTotal: number;
  /** Packets the device accepted for transmission. */
  txPackets: number;
  /** Packets the device refused (ring full) and the engine freed. */
  txDropped: number;
  /** `txPackets + txDropped`. */
  txTotal: number;
}

/**
 * The forwarding lcores' cycles, which testpmd counts with
 * `--record-core-cycles`: only bursts that moved packets count (an empty
 * receive poll does not), so `busyCycles` over the clock and the time
 * forwarding ran is the share of its CPU the engine was busy.
 */
export interface TestpmdCycles {
  /** Cycles spent in bursts that moved packets. */
  busyCycles: number;
  /** Packets those cycles moved (received; sent for `txonly` and `flowgen`). */
  packets: number;
  /** `busyCycles / packets`. */
  perPacket: number;
  /** The cycle counter's clock, MHz. */
  mhz: number;
}

/** What `stop` reports: per port and accumulated over all ports. */
export interface TestpmdForwardStats {
  /** Per port id. */
  ports: Record<number, TestpmdForwardCounts>;
  /** The "Accumulated forward statistics for all ports" block. */
  total: TestpmdForwardCounts;
  /** With `--record-core-cycles` (`args`) and packets moved: the engine's cycles; else null. */
  cycles: TestpmdCycles | null;
  /** The whole text testpmd printed. */
  text: string;
}

/** testpmd could not start, exited early, or a command failed or timed out. */
export class TestpmdError extends Error {
  /** The last lines testpmd printed (stdout and stderr), for diagnosis. */
  readonly outputTail: string;
  /**
   * Create the error.
   *
   * @param message What went wrong.
   * @param outputTail testpmd's recent output, appended to the message.
   */
  constructor(message: string, outputTail: string) {
    super(outputTail ? `${message}\n--- testpmd output (tail) ---\n${outputTail}` : message);
    this.name = "TestpmdError";
    this.outputTail = outputTail;
  }
}

/** Build testpmd's argument list (EAL arguments, `--`, application arguments). */
export function testpmdArgs(options: TestpmdOptions, filePrefix: string): string[] {
  const vdevs = typeof options.vdevs === "string" ? [options.vdevs] : [...options.vdevs];
  if (vdevs.length === 0) throw new TypeError("Testpmd: at least one vdev is required");
  const nbCores = options.nbCores ?? 1;
  if (!Number.isInteger(nbCores) || nbCores < 1) {
    throw new RangeError(`Testpmd: nbCores ${nbCores} is not a positive integer`);
  }
  let lcores = options.lcores;
  if (lcores === undefined) {
    const ids = `0-${nbCores}`;
    if (options.cpu !== undefined) {
      if (!Number.isInteger(options.cpu) || options.cpu < 0) {
        throw new RangeError(`Testpmd: cpu ${options.cpu} is not a CPU number`);
      }
      lcores = `(${ids})@${options.cpu}`;
    } else {
      lcores = `(${ids})@(0-${Math.max(0, navigator.hardwareConcurrency - 1)})`;
    }
  }
  const eal = [
    `--lcores=${lcores}`,
    "--no-huge",
    "-m",
    String(options.memoryMb ?? 256),
    "--no-pci",
    "--no-shconf",
    "--file-prefix",
    filePrefix,
    ...vdevs.flatMap((v) => ["--vdev", v]),
    ...(options.ealArgs ?? []),
  ];
  const app = [
    "-i",
    `--total-num-mbufs=${options.totalNumMbufs ?? 16384}`,
    `--nb-cores=${nbCores}`,
  ];
  if (options.forwardMode) app.push(`--forward-mode=${options.forwardMode}`);
  if (options.txpkts !== undefined) {
    const t = typeof options.txpkts === "number" ? [options.txpkts] : options.txpkts;
    app.push(`--txpkts=${t.join(",")}`);
  }
  if (options.burst !== undefined) app.push(`--burst=${options.burst}`);
  if (options.rxq !== undefined) app.push(`--rxq=${options.rxq}`);
  if (options.txq !== undefined) app.push(`--txq=${options.txq}`);
  if (options.rxd !== undefined) app.push(`--rxd=${options.rxd}`);
  if (options.txd !== undefined) app.push(`--txd=${options.txd}`);
  if (options.txonlyMultiFlow) app.push("--txonly-multi-flow");
  app.push(...(options.args ?? []));
  return [...eal, "--", ...app];
}

function parseCounters(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const m of text.matchAll(/([A-Za-z][A-Za-z-]*):\s+(\d+)/g)) out.set(m[1], Number(m[2]));
  return out;
}

function forwardCounts(block: string, what: string): TestpmdForwardCounts {
  const c = parseCounters(block);
  const get = (k: string) => {
    const v = c.get(k);
    if (v === undefined) {
      throw new TestpmdError(`testpmd forward statistics of ${what} lack ${k}`, block);
    }
    return v;
  };
  return {
    rxPackets: get("RX-packets"),
    rxDropped: get("RX-dropped"),
    rxTotal: get("RX-total"),
    txPackets: get("TX-packets"),
    txDropped: get("TX-dropped"),
    txTotal: get("TX-total"),
  };
}

/**
 * Parse the report of testpmd's `stop` command.
 *
 * @throws TestpmdError when forwarding was not running or the text has no totals.
 */
export function parseForwardStats(text: string): TestpmdForwardStats {
  if (text.includes("Packet forwarding not started")) {
    throw new TestpmdError("testpmd: stop while packet forwarding was not started", "");
  }
  const ports: Record<number, TestpmdForwardCounts> = {};
  const portRe = /Forward statistics for port (\d+)\s*-+\n([\s\S]*?)\n\s*-{8,}/g;
  for (const m of text.matchAll(portRe)) {
    ports[Number(m[1])] = forwardCounts(m[2], `port ${m[1]}`);
  }
  const acc = /Accumulated forward statistics for all ports\+*\n([\s\S]*?)\n\s*\+{8,}/.exec(text);
  if (!acc) throw new TestpmdError("testpmd printed no accumulated forward statistics", text);
  // testpmd 22.11 says "total cycles", later ones "busy cycles": the same count.
  const cyc =
    /CPU cycles\/packet=[\d.]+ \((?:total|busy) cycles=(\d+) \/ total \w+ packets=(\d+)\) at (\d+) MHz/
      .exec(text);
  const cycles = cyc === null ? null : {
    busyCycles: Number(cyc[1]),
    packets: Number(cyc[2]),
    perPacket: Number(cyc[1]) / Number(cyc[2]),
    mhz: Number(cyc[3]),
  };
  return { ports, total: forwardCounts(acc[1], "all ports"), cycles, text };
}

/**
 * Parse the output of `show port stats N` (one port).
 *
 * @throws TestpmdError when a counter is missing (e.g. "Invalid port").
 */
export function parsePortStats(text: string): TestpmdPortStats {
  const c = parseCounters(text);
  const get = (k: string) => {
    const v = c.get(k);
    if (v === undefined) throw new TestpmdError(`testpmd port statistics lack ${k}`, text);
    return v;
  };
  return {
    rxPackets: get("RX-packets"),
    rxBytes: get("RX-bytes"),
    rxErrors: get("RX-errors"),
    rxMissed: get("RX-missed"),
    rxNombuf: get("RX-nombuf"),
    txPackets: get("TX-packets"),
    txBytes: get("TX-bytes"),
    txErrors: get("TX-errors"),
    rxPps: get("Rx-pps"),
    rxBps: get("Rx-bps"),
    txPps: get("Tx-pps"),
    txBps: get("Tx-bps"),
  };
}

/** Lines of testpmd's output that are log messages or events, not command replies. */
const LOG_LINE =
  /^((EAL|VHOST_CONFIG|VHOST_DATA|VIRTIO_\w+|PMD|ETHDEV|USER1|MBUF|MEMPOOL|testpmd): |virtio_\w+\(\)|Port \d+: .*event)/;

interface PromptWaiter {
  doing: string;
  quiet: boolean;
  resolve(text: string): void;
  reject(e: Error): void;
}

/**
 * A running `dpdk-testpmd -i`. Commands run one at a time; each returns the
 * text testpmd printed up to its next prompt. Always {@linkcode Testpmd.close}
 * it (in `finally`): that quits, kills after a timeout, and reaps.
 */
export class Testpmd {
  /** The argument list testpmd was started with (after `stdbuf -o0 -e0 BINARY`). */
  readonly args: readonly string[];
  /** The EAL file prefix in use. */
  readonly filePrefix: string;
  /** Process ID of testpmd (stdbuf execs it, so this is testpmd itself). */
  get pid(): number {
    return this.#child.pid;
  }
  #child: Deno.ChildProcess;
  #stdin: WritableStreamDefaultWriter<Uint8Array>;
  #encoder = new TextEncoder();
  #buf = "";
  #tail = "";
  #waiter: PromptWaiter | null = null;
  #exit: Deno.CommandStatus | null = null;
  #exited: Promise<Deno.CommandStatus>;
  #readers: Promise<void>;
  #queue: Promise<unknown> = Promise.resolve();
  #commandTimeoutMs: number;
  #closing: Promise<Deno.CommandStatus> | null = null;

  private constructor(
    child: Deno.ChildProcess,
    args: string[],
    options: TestpmdOptions,
    prefix: string,
  ) {
    this.#child = child;
    this.args = args;
    this.filePrefix = prefix;
    this.#commandTimeoutMs = options.commandTimeoutMs ?? 10000;
    this.#stdin = child.stdin.getWriter();
    this.#readers = Promise.all([
      this.#pump(child.stdout, true),
      this.#pump(child.stderr, false),
    ]).then(() => {});
    this.#exited = child.status.then(async (s) => {
      // Let the readers deliver the last output before anyone reports it.
      await this.#readers;
      this.#exit = s;
      if (this.#waiter) this.#waiter.reject(this.#exitError(this.#waiter.doing));
      this.#waiter = null;
      return s;
    });
  }

  /**
   * Start testpmd and wait for its first prompt.
   *
   * @throws TestpmdError when it exits before the prompt or takes longer
   *   than `startTimeoutMs`; the process is reaped first.
   */
  static async start(options: TestpmdOptions): Promise<Testpmd> {
    const binary = options.binary ?? "dpdk-testpmd";
    const path = findExecutable(binary);
    if (!path) {
      throw new TestpmdError(`testpmd binary ${binary} not found (is DPDK installed?)`, "");
    }
    const stdbufName = options.stdbuf ?? "stdbuf";
    const stdbuf = findExecutable(stdbufName);
    if (!stdbuf) {
      throw new TestpmdError(
        `${stdbufName} (coreutils) not found: it is needed to unbuffer testpmd's output`,
        "",
      );
    }
    const prefix = options.filePrefix ?? `vmtp${Deno.pid}_${instances++}`;
    const args = testpmdArgs(options, prefix);
    const child = new Deno.Command(stdbuf, {
      args: ["-o0", "-e0", path, ...args],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
      env: options.env,
    }).spawn();
    const tp = new Testpmd(child, args, options, prefix);
    try {
      await tp.#waitPrompt(options.startTimeoutMs ?? 20000, "starting");
    } catch (e) {
      await tp.#kill();
      throw e;
    }
    return tp;
  }

  /** Whether the process has exited. */
  get exited(): boolean {
    return this.#exit !== null;
  }

  /** The last few KiB of what testpmd printed on stdout and stderr. */
  outputTail(): string {
    return (this.#tail + this.#buf).slice(-TAIL_BYTES);
  }

  #log(text: string): void {
    this.#tail = (this.#tail + text).slice(-TAIL_BYTES);
  }

  async #pump(stream: ReadableStream<Uint8Array>, isStdout: boolean): Promise<void> {
    const decoder = new TextDecoder();
    for await (const chunk of stream) {
      const text = decoder.decode(chunk, { stream: true }).replaceAll("\r", "");
      if (!isStdout) {
        this.#log(text);
        continue;
      }
      this.#buf += text;
      this.#deliver();
    }
  }

  #deliver(): void {
    const at = this.#buf.indexOf(PROMPT);
    if (this.#waiter && at >= 0) {
      const text = this.#buf.slice(0, at);
      this.#buf = this.#buf.slice(at + PROMPT.length);
      const w = this.#waiter;
      this.#waiter = null;
      // Replies of polling commands would bury the log; keep only log lines from them.
      this.#log(
        w.quiet
          ? text.split("\n").filter((l) => LOG_LINE.test(l)).map((l) => l + "\n").join("")
          : text + PROMPT,
      );
      w.resolve(text);
    } else if (!this.#waiter && this.#buf.length > MAX_IDLE_BUFFER) {
      this.#log(this.#buf);
      this.#buf = this.#buf.slice(-PROMPT.length);
    }
  }

  #exitError(doing: string): TestpmdError {
    const s = this.#exit;
    const how = s
      ? (s.signal ? `was killed by ${s.signal}` : `exited with code ${s.code}`)
      : "exited";
    return new TestpmdError(`testpmd ${how} while ${doing}`, this.outputTail());
  }

  #waitPrompt(timeoutMs: number, doing: string, quiet = false): Promise<string> {
    if (this.#exit) return Promise.reject(this.#exitError(doing));
    return new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiter = null;
        reject(
          new TestpmdError(
            `testpmd: no prompt within ${timeoutMs} ms while ${doing}`,
            this.outputTail(),
          ),
        );
      }, timeoutMs);
      this.#waiter = {
        doing,
        quiet,
        resolve: (t) => {
          clearTimeout(timer);
          resolve(t);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      this.#deliver();
    });
  }

  /**
   * Run one command and return what it printed up to the next prompt (the
   * echoed command line removed). Commands are queued, never interleaved.
   *
   * @throws TestpmdError when testpmd exits or does not prompt in time.
   */
  command(line: string, timeoutMs?: number): Promise<string> {
    return this.#command(line, timeoutMs, false);
  }

  #command(line: string, timeoutMs: number | undefined, quiet: boolean): Promise<string> {
    if (line.includes("\n")) throw new TypeError("Testpmd.command: one line at a time");
    const run = async () => {
      if (this.#closing) throw new TestpmdError(`testpmd is closing; cannot run "${line}"`, "");
      // Output since the last prompt (link events, logs) belongs to no command.
      this.#log(this.#buf);
      this.#buf = "";
      const reply = this.#waitPrompt(
        timeoutMs ?? this.#commandTimeoutMs,
        `running "${line}"`,
        quiet,
      );
      // Observed below; this keeps an early rejection from counting as unhandled.
      reply.catch(() => {});
      try {
        await this.#stdin.write(this.#encoder.encode(line + "\n"));
      } catch (e) {
        throw new TestpmdError(`testpmd: writing "${line}" failed: ${e}`, this.outputTail());
      }
      const text = await reply;
      const lines = text.split("\n");
      const echo = lines.findIndex((l) => l.trim() === line.trim());
      if (echo >= 0) lines.splice(echo, 1);
      return lines.join("\n");
    };
    const result = this.#queue.then(run, run);
    this.#queue = result.catch(() => {});
    return result;
  }

  /** Start forwarding (`start`); returns testpmd's description of the streams. */
  async startForwarding(): Promise<string> {
    const text = await this.command("start");
    if (/Packet forwarding already started/.test(text)) {
      throw new TestpmdError("testpmd: forwarding was already started", text);
    }
    return text;
  }

  /** Start forwarding after sending one burst first (`start tx_first`), e.g. for loops. */
  startForwardingTxFirst(): Promise<string> {
    return this.command("start tx_first");
  }

  /** Stop forwarding (`stop`) and return the forward statistics it prints. */
  async stopForwarding(): Promise<TestpmdForwardStats> {
    return parseForwardStats(await this.command("stop"));
  }

  /** The counters of `port` (`show port stats N`). */
  async portStats(port = 0): Promise<TestpmdPortStats> {
    return parsePortStats(await this.#command(`show port stats ${port}`, undefined, true));
  }

  /** Reset the counters of every port (`clear port stats all`). */
  async clearPortStats(): Promise<void> {
    await this.command("clear port stats all");
  }

  /** Whether `port`'s link is up (`show port info N`). */
  async linkUp(port = 0): Promise<boolean> {
    const text = await this.#command(`show port info ${port}`, undefined, true);
    const m = /Link status:\s*(\w+)/.exec(text);
    if (!m) throw new TestpmdError(`testpmd: no link status for port ${port}`, text);
    return m[1] === "up";
  }

  /**
   * Poll until `port`'s link is up: for a vhost or virtio_user port that is
   * when the vhost-user handshake reached DRIVER_OK.
   *
   * @throws TestpmdError after `timeoutMs` (default 15000).
   */
  async waitForLinkUp(port = 0, timeoutMs = 15000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!await this.linkUp(port)) {
      if (Date.now() > deadline) {
        throw new TestpmdError(
          `testpmd: port ${port} link not up within ${timeoutMs} ms`,
          this.#tail,
        );
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /**
   * Quit testpmd (`quit`), send SIGTERM after `timeoutMs` (default 5000) and
   * SIGKILL 2 s later; always waits for the process and its output streams.
   * Idempotent. Resolves with the exit status.
   */
  close(timeoutMs = 5000): Promise<Deno.CommandStatus> {
    this.#closing ??= this.#quit(timeoutMs);
    return this.#closing;
  }

  async #quit(timeoutMs: number): Promise<Deno.CommandStatus> {
    await this.#queue;
    if (!this.#exit) {
      try {
        await this.#stdin.write(this.#encoder.encode("quit\n"));
      } catch {
        // Its stdin is gone: it is exiting anyway.
      }
    }
    return await this.#kill(timeoutMs);
  }

  async #kill(graceMs = 0): Promise<Deno.CommandStatus> {
    try {
      await this.#stdin.close();
    } catch {
      // Already closed or the pipe broke: nothing to release.
    }
    const signal = (sig: Deno.Signal) => {
      try {
        if (!this.#exit) this.#child.kill(sig);
      } catch {
        // It exited between the check and the signal.
      }
    };
    const term = setTimeout(() => signal("SIGTERM"), graceMs);
    const kill = setTimeout(() => signal("SIGKILL"), graceMs + 2000);
    try {
      return await this.#exited;
    } finally {
      clearTimeout(term);
      clearTimeout(kill);
    }
  }
}
