/**
 * A small QMP (QEMU Machine Protocol) client: connect to the monitor socket
 * that `-qmp unix:PATH,server=on,wait=off` ({@linkcode qmpArgs}) opens, leave
 * capabilities negotiation mode (`qmp_capabilities`), then run commands
 * (`stop`, `cont`, `query-status`...) and collect QEMU's asynchronous events
 * (`STOP`, `RESUME`...). QMP speaks one JSON object per line; each command
 * carries an `id` that its answer repeats.
 *
 * @module
 */

/** An asynchronous QMP event (`{"event": "STOP", ...}`). */
export interface QmpEvent {
  /** Event name (`STOP`, `RESUME`, `SHUTDOWN`...). */
  event: string;
  /** Event data, when the event has any. */
  data?: Record<string, unknown>;
  /** When QEMU emitted it. */
  timestamp?: { seconds: number; microseconds: number };
}

/** A QMP command QEMU answered with `{"error": ...}`, or one that got no answer. */
export class QmpError extends Error {
  /** The command. */
  readonly command: string;
  /** QEMU's error class (`GenericError`, `CommandNotFound`...), or `""` when there was no answer. */
  readonly errorClass: string;

  /**
   * An error naming the command and QEMU's error class.
   *
   * @param command the command that failed
   * @param errorClass QEMU's error class, or `""`
   * @param description QEMU's description, or why there was no answer
   */
  constructor(command: string, errorClass: string, description: string) {
    super(`QMP ${command}: ${errorClass ? `${errorClass}: ` : ""}${description}`);
    this.name = "QmpError";
    this.command = command;
    this.errorClass = errorClass;
  }
}

/** Options of {@linkcode QmpClient.connect}. */
export interface QmpConnectOptions {
  /** Give up connecting (and negotiating) after this many ms (default 10 000). */
  timeoutMs?: number;
  /** Stop retrying once this settles (e.g. `QemuVm.exited`): QEMU is gone. */
  gone?: Promise<unknown>;
}

/** Options of {@linkcode QmpClient.execute}. */
export interface QmpExecuteOptions {
  /** Reject with a {@linkcode QmpError} when no answer comes within this many ms (default 30 000). */
  timeoutMs?: number;
}

/**
 * QEMU arguments for a QMP monitor on a Unix socket at `path` that QEMU
 * creates at start-up and does not wait on (the guest runs whether or not a
 * client connects).
 *
 * @example
 * ```ts
 * import { qmpArgs } from "./qmp.ts";
 * const args = ["-m", "256M", ...qmpArgs("/tmp/vm/qmp.sock")];
 * ```
 */
export function qmpArgs(path: string): string[] {
  return ["-qmp", `unix:${path},server=on,wait=off`];
}

interface Pending {
  command: string;
  resolve: (value: unknown) => void;
  reject: (error: Error) => void;
  timer: ReturnType<typeof setTimeout>;
}

const encoder = new TextEncoder();

/**
 * A connection to a QEMU monitor, past capabilities negotiation.
 *
 * @example Pause a guest for a second
 * ```ts
 * import { QmpClient } from "./qmp.ts";
 * await using qmp = await QmpClient.connect("/tmp/vm/qmp.sock");
 * await qmp.execute("stop");
 * await new Promise((r) => setTimeout(r, 1000));
 * await qmp.execute("cont");
 * console.log(await qmp.execute("query-status")); // { running: true, status: "running", ... }
 * ```
 */
export class QmpClient {
  /** QEMU's greeting (`{"QMP": {"version": ..., "capabilities": [...]}}`). */
  readonly greeting: Record<string, unknown>;
  /** Every asynchronous event received so far, in order. */
  readonly events: QmpEvent[] = [];
  #conn: Deno.UnixConn;
  #pending = new Map<number, Pending>();
  #nextId = 1;
  #closed: Error | null = null;
  #reader: Promise<void>;
  #eventWaiters = new Set<() => void>();

  private constructor(
    conn: Deno.UnixConn,
    greeting: Record<string, unknown>,
    lines: AsyncIterator<string>,
  ) {
    this.#conn = conn;
    this.greeting = greeting;
    this.#reader = this.#read(lines);
  }

  /**
   * Connect to the QMP socket at `path` (retrying while QEMU has not created
   * it yet), read the greeting and send `qmp_capabilities`.
   *
   * @throws QmpError when the socket does not accept a connection in time,
   *   QEMU goes away first, or negotiation fails.
   */
  static async connect(path: string, options: QmpConnectOptions = {}): Promise<QmpClient> {
    const timeoutMs = options.timeoutMs ?? 10_000;
    const deadline = performance.now() + timeoutMs;
    let gone = false;
    options.gone?.then(() => gone = true, () => gone = true);
    let conn: Deno.UnixConn | null = null;
    let lastError = "";
    while (conn === null) {
      try {
        conn = await Deno.connect({ transport: "unix", path });
      } catch (e) {
        lastError = e instanceof Error ? e.message : String(e);
        if (gone) throw new QmpError("connect", "", `QEMU exited before ${path} accepted`);
        if (performance.now() >= deadline) {
          throw new QmpError(
            "connect",
            "",
            `${path} not accepting after ${timeoutMs} ms: ${lastError}`,
          );
        }
        await new Promise((r) => setTimeout(r, 20));
      }
    }
    const lines = readLines(conn.readable)[Symbol.asyncIterator]();
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      const first = await Promise.race([
        lines.next(),
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new QmpError("connect", "", `no greeting within ${timeoutMs} ms`)),
            Math.max(1, deadline - performance.now()),
          );
        }),
      ]);
      if (first.done) throw new QmpError("connect", "", "QEMU closed the socket before greeting");
      const greeting = JSON.parse(first.value) as Record<string, unknown>;
      if (!("QMP" in greeting)) {
        throw new QmpError("connect", "", `unexpected greeting ${first.value}`);
      }
      const client = new QmpClient(conn, greeting, lines);
      await client.execute("qmp_capabilities", undefined, {
        timeoutMs: Math.max(1000, deadline - performance.now()),
      });
      return client;
    } catch (e) {
      try {
        conn.close();
      } catch {
        // already closed
      }
      throw e;
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Run `command` with `args` and return its `return` value.
   *
   * @throws QmpError when QEMU answers with an error, does not answer in
   *   time, or the connection closes first.
   */
  execute<T = unknown>(
    command: string,
    args?: Record<string, unknown>,
    options: QmpExecuteOptions = {},
  ): Promise<T> {
    if (this.#closed) return Promise.reject(new QmpError(command, "", this.#closed.message));
    const id = this.#nextId++;
    const timeoutMs = options.timeoutMs ?? 30_000;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new QmpError(command, "", `no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#pending.set(id, {
        command,
        resolve: resolve as (value: unknown) => void,
        reject,
        timer,
      });
      const message = JSON.stringify(
        args ? { execute: command, arguments: args, id } : {
          execute: command,
          id,
        },
      );
      this.#write(`${message}\n`).catch((e) => {
        this.#settle(id, new QmpError(command, "", `sending failed: ${errorText(e)}`));
      });
    });
  }

  /**
   * Wait for an event named `name` received after the first `after` events
   * (default: any received so far counts).
   *
   * @throws QmpError when none comes within `timeoutMs` or the connection closes.
   */
  async waitForEvent(name: string, timeoutMs: number, after = 0): Promise<QmpEvent> {
    const deadline = performance.now() + timeoutMs;
    while (true) {
      const found = this.events.slice(after).find((e) => e.event === name);
      if (found) return found;
      if (this.#closed) throw new QmpError(`event ${name}`, "", this.#closed.message);
      const left = deadline - performance.now();
      if (left <= 0) throw new QmpError(`event ${name}`, "", `not seen within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, left);
        const waiters = this.#eventWaiters;
        waiters.add(done);
        function done() {
          clearTimeout(timer);
          waiters.delete(done);
          resolve();
        }
      });
    }
  }

  /** Close the connection; commands still waiting reject. QEMU keeps running. */
  async close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = new Error("connection closed");
      try {
        this.#conn.close();
      } catch {
        // already closed
      }
    }
    await this.#reader;
  }

  /** Same as {@linkcode QmpClient.close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  #writing: Promise<void> = Promise.resolve();

  #write(text: string): Promise<void> {
    const bytes = encoder.encode(text);
    const next = this.#writing.then(async () => {
      let done = 0;
      while (done < bytes.length) done += await this.#conn.write(bytes.subarray(done));
    });
    this.#writing = next.catch(() => {});
    return next;
  }

  #settle(id: number, outcome: Error | { value: unknown }): void {
    const p = this.#pending.get(id);
    if (!p) return;
    this.#pending.delete(id);
    clearTimeout(p.timer);
    if (outcome instanceof Error) p.reject(outcome);
    else p.resolve(outcome.value);
  }

  async #read(lines: AsyncIterator<string>): Promise<void> {
    let why = "QEMU closed the QMP connection";
    try {
      while (true) {
        const next = await lines.next();
        if (next.done) break;
        let msg: Record<string, unknown>;
        try {
          msg = JSON.parse(next.value);
        } catch {
          continue; // not a QMP message; QMP never sends such lines
        }
        if (typeof msg.event === "string") {
          this.events.push(msg as unknown as QmpEvent);
          for (const wake of [...this.#eventWaiters]) wake();
          continue;
        }
        const id = typeof msg.id === "number" ? msg.id : NaN;
        const p = this.#pending.get(id);
        if (!p) continue;
        if ("error" in msg) {
          const err = msg.error as { class?: string; desc?: string };
          this.#settle(id, new QmpError(p.command, err.class ?? "Error", err.desc ?? ""));
        } else {
          this.#settle(id, { value: msg.return });
        }
      }
    } catch (e) {
      why = this.#closed ? this.#closed.message : `QMP connection failed: ${errorText(e)}`;
    }
    this.#closed ??= new Error(why);
    for (const id of [...this.#pending.keys()]) {
      const p = this.#pending.get(id)!;
      this.#settle(id, new QmpError(p.command, "", this.#closed.message));
    }
    for (const wake of [...this.#eventWaiters]) wake();
  }
}

async function* readLines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  let partial = "";
  for await (const text of stream.pipeThrough(new TextDecoderStream())) {
    const parts = (partial + text).split("\n");
    partial = parts.pop() ?? "";
    for (const l of parts) if (l.trim()) yield l;
  }
  if (partial.trim()) yield partial;
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
