/**
 * A `vhost-mdev daemon` process for the tests: started on a control socket
 * in a temporary directory, its JSON log lines collected, called over the
 * control socket (raw lines or `callDaemon`), and the CLI run against it.
 *
 * @module
 */

import { VhostUserFrontend, VirtioNetDriver } from "@vhost-mdev/testing";

/** The CLI's entry point. */
export const MAIN = new URL("../../cli/main.ts", import.meta.url).pathname;

/** Lines of a child's stream, readable as they come. */
export class Lines {
  lines: string[] = [];
  #done: Promise<void>;
  constructor(stream: ReadableStream<Uint8Array>) {
    this.#done = (async () => {
      let buf = "";
      for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
        buf += chunk;
        let i;
        while ((i = buf.indexOf("\n")) >= 0) {
          this.lines.push(buf.slice(0, i));
          buf = buf.slice(i + 1);
        }
      }
    })();
  }
  async until(pred: (l: string) => boolean, what: string, ms = 30000): Promise<string> {
    const end = Date.now() + ms;
    for (;;) {
      const l = this.lines.find(pred);
      if (l) return l;
      if (Date.now() > end) throw new Error(`no line with ${what}; got:\n${this.lines.join("\n")}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  done(): Promise<void> {
    return this.#done;
  }
}

/** Run the CLI with `args`; its exit code and output. */
export async function cli(args: string[]) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** A running daemon. */
export class DaemonProcess {
  readonly dir: string;
  readonly control: string;
  readonly child: Deno.ChildProcess;
  readonly out: Lines;
  readonly err: Lines;
  /** What the ready line said. */
  ready: { pid: number; metricsPort: number | null; devices: number } = {
    pid: 0,
    metricsPort: null,
    devices: 0,
  };

  private constructor(dir: string, control: string, child: Deno.ChildProcess) {
    this.dir = dir;
    this.control = control;
    this.child = child;
    this.out = new Lines(child.stdout);
    this.err = new Lines(child.stderr);
  }

  /** Start a daemon with `extra` arguments; resolves once it printed its ready line. */
  static async start(extra: string[] = [], dir?: string): Promise<DaemonProcess> {
    dir ??= Deno.makeTempDirSync({ prefix: "vhost-mdev-daemon" });
    const control = `${dir}/control.sock`;
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", MAIN, "daemon", "--control", control, "--log", "json", ...extra],
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const d = new DaemonProcess(dir, control, child);
    try {
      const line = await Promise.race([
        d.out.until((l) => l.includes('"type":"ready"'), "ready"),
        child.status.then((s) => {
          throw new Error(`the daemon exited with ${s.code}:\n${d.err.lines.join("\n")}`);
        }),
      ]);
      d.ready = JSON.parse(line);
    } catch (e) {
      await d.stop();
      throw e;
    }
    return d;
  }

  /** `vhost-mdev --control <this> ...args`. */
  cli(args: string[]) {
    return cli(["--control", this.control, ...args]);
  }

  /** Stop with SIGTERM (SIGKILL if it lingers), remove the directory; resolves with the exit code. */
  async stop(keepDir = false): Promise<number> {
    try {
      this.child.kill("SIGTERM");
    } catch {
      // Already exited.
    }
    const timer = setTimeout(() => {
      try {
        this.child.kill("SIGKILL");
      } catch {
        // Already exited.
      }
    }, 10000);
    const status = await this.child.status;
    clearTimeout(timer);
    await this.out.done();
    await this.err.done();
    if (!keepDir) Deno.removeSync(this.dir, { recursive: true });
    return status.code;
  }
}

/** A control connection that sends lines and reads response lines, one at a time. */
export class RawControl {
  readonly conn: Deno.UnixConn;
  #buf = "";
  #reader: ReadableStreamDefaultReader<string>;
  #next = 1;

  private constructor(conn: Deno.UnixConn) {
    this.conn = conn;
    this.#reader = conn.readable.pipeThrough(new TextDecoderStream()).getReader();
  }

  static async connect(path: string): Promise<RawControl> {
    return new RawControl(await Deno.connect({ transport: "unix", path }));
  }

  /** Send `text` as is (add the newline yourself). */
  async write(text: string): Promise<void> {
    const bytes = new TextEncoder().encode(text);
    for (let at = 0; at < bytes.length;) at += await this.conn.write(bytes.subarray(at));
  }

  /** The next response line, parsed; `null` when the daemon closed the connection. */
  async read(ms = 10000): Promise<any> {
    const end = Date.now() + ms;
    for (;;) {
      const i = this.#buf.indexOf("\n");
      if (i >= 0) {
        const line = this.#buf.slice(0, i);
        this.#buf = this.#buf.slice(i + 1);
        return JSON.parse(line);
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      const r = await Promise.race([
        this.#reader.read(),
        new Promise<never>((_, rej) => {
          timer = setTimeout(() => rej(new Error("no response in time")), end - Date.now());
        }),
      ]).finally(() => clearTimeout(timer));
      if (r.done) return null;
      this.#buf += r.value;
    }
  }

  /** Call `method`; the whole response object. */
  async call(method: string, params?: Record<string, unknown>): Promise<any> {
    const id = this.#next++;
    await this.write(JSON.stringify({ jsonrpc: "2.0", method, params, id }) + "\n");
    const r = await this.read();
    if (r?.id !== id) throw new Error(`response to ${id} expected, got ${JSON.stringify(r)}`);
    return r;
  }

  /** Call `method`; its result, or throw with the error. */
  async result(method: string, params?: Record<string, unknown>): Promise<any> {
    const r = await this.call(method, params);
    if (r.error) throw new Error(`${method}: ${r.error.code} ${r.error.message}`);
    return r.result;
  }

  close(): void {
    try {
      this.conn.close();
    } catch {
      // Already closed.
    }
  }
}

/** A frontend on `socket` with a virtio-net guest brought up on it. */
export async function attachGuest(socket: string, queuePairs = 1, iommu = false) {
  const fe = await VhostUserFrontend.connect(socket, { memoryMiB: 16, iommu });
  try {
    const net = await VirtioNetDriver.start(fe, { queuePairs, ringSize: 128, iommu });
    return { fe, net };
  } catch (e) {
    fe.close();
    throw e;
  }
}

/** A 64-byte frame tagged with `tag` and `seq`. */
export function frame(tag: number, seq: number): Uint8Array {
  const f = new Uint8Array(64);
  f.set([0x02, 0, 0, 0, 0, tag, 0x02, 0, 0, 0, 1, tag, 0x88, 0xb5], 0);
  new DataView(f.buffer).setUint32(14, seq);
  return f;
}

/**
 * Send `count` frames through a loopback device on pair 0 and receive them
 * back; resolves with the frames received.
 */
export async function loop(
  net: VirtioNetDriver,
  tag: number,
  count: number,
  from = 0,
): Promise<Uint8Array[]> {
  const got: Uint8Array[] = [];
  let sent = 0;
  const end = Date.now() + 20000;
  while (got.length < count) {
    if (Date.now() > end) throw new Error(`${got.length}/${count} frames came back`);
    if (sent < count) {
      const batch = [];
      for (let i = 0; i < Math.min(32, count - sent); i++) batch.push(frame(tag, from + sent + i));
      sent += net.send(batch);
    }
    got.push(...net.receive());
    if (got.length < count) await net.waitRx(0, 200).catch(() => 0);
  }
  return got;
}

/** The value of metric `name` with `labels` in exposition `text`, or undefined. */
export function metric(
  text: string,
  name: string,
  labels: Record<string, string>,
): number | undefined {
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  for (const line of text.split("\n")) {
    if (!line.startsWith(name + "{")) continue;
    const inner = line.slice(name.length + 1, line.indexOf("}"));
    const parts = inner.split(",");
    if (want.every((w) => parts.includes(w))) return Number(line.slice(line.indexOf("} ") + 2));
  }
  return undefined;
}
