/**
 * The daemon's control socket: a UNIX stream socket carrying JSON-RPC 2.0,
 * one request or response per line. Each connection is served on its own,
 * so a client that sends garbage, stops mid-line or never reads its replies
 * holds only its own connection; a line longer than
 * {@linkcode MAX_LINE_BYTES} gets a parse error and the connection is closed.
 * The socket file is made owner-only (mode 0600).
 *
 * @example
 * ```ts
 * import { ControlServer } from "./control_server.ts";
 *
 * const server = ControlServer.listen("/tmp/vhost-mdev.sock", {
 *   ping: () => "pong",
 * });
 * await server.close();
 * ```
 *
 * @module
 */

import { prepareSocketPath } from "@vhost-mdev/sdk/vhost-user";
import {
  errorResponse,
  handleLine,
  MAX_LINE_BYTES,
  readLines,
  RpcError,
  RpcErrorCode,
  type RpcMethod,
} from "./rpc.ts";

/** The most control connections open at once; more are told so and closed. */
export const MAX_CONNECTIONS = 64;

/** Serves control methods on a UNIX socket path. */
export class ControlServer {
  /** The socket path. */
  readonly path: string;
  readonly #listener: Deno.UnixListener;
  readonly #methods: Readonly<Record<string, RpcMethod>>;
  readonly #conns = new Set<Deno.UnixConn>();
  readonly #served = new Set<Promise<void>>();
  #loop: Promise<void>;
  #closed = false;

  private constructor(
    path: string,
    listener: Deno.UnixListener,
    methods: Readonly<Record<string, RpcMethod>>,
  ) {
    this.path = path;
    this.#listener = listener;
    this.#methods = methods;
    this.#loop = this.#accept();
  }

  /**
   * Listen on `path`. A stale socket file (nobody answering) is replaced.
   *
   * @throws Error when another process serves `path`, or it is not a socket,
   *   or cannot be bound; the message says what to do.
   */
  static listen(
    path: string,
    methods: Readonly<Record<string, RpcMethod>>,
  ): ControlServer {
    prepareSocketPath(path, true, {
      option: "--control path",
      busy: (p) => `another daemon answers on ${p}`,
    });
    let listener: Deno.UnixListener;
    try {
      listener = Deno.listen({ transport: "unix", path });
    } catch (e) {
      throw new Error(
        `cannot listen on control socket ${path}: ${(e as Error).message}; ` +
          `check the directory exists and is writable`,
      );
    }
    Deno.chmodSync(path, 0o600);
    return new ControlServer(path, listener, methods);
  }

  async #accept(): Promise<void> {
    for (;;) {
      let conn: Deno.UnixConn;
      try {
        conn = await this.#listener.accept();
      } catch {
        if (this.#closed) return;
        // Out of fds: back off and keep accepting.
        await new Promise((r) => setTimeout(r, 100));
        continue;
      }
      if (this.#conns.size >= MAX_CONNECTIONS) {
        this.#refuse(conn);
        continue;
      }
      this.#conns.add(conn);
      const served = this.#serve(conn).finally(() => {
        this.#conns.delete(conn);
        this.#served.delete(served);
        try {
          conn.close();
        } catch {
          // Already closed.
        }
      });
      this.#served.add(served);
    }
  }

  #refuse(conn: Deno.UnixConn): void {
    const line = JSON.stringify(errorResponse(
      null,
      new RpcError(
        RpcErrorCode.INTERNAL_ERROR,
        `the daemon has ${MAX_CONNECTIONS} control connections open; retry later`,
      ),
    )) + "\n";
    conn.write(new TextEncoder().encode(line)).catch(() => {}).finally(() => {
      try {
        conn.close();
      } catch {
        // Already closed.
      }
    });
  }

  async #serve(conn: Deno.UnixConn): Promise<void> {
    const encoder = new TextEncoder();
    const send = async (text: string) => {
      const bytes = encoder.encode(text + "\n");
      for (let at = 0; at < bytes.length;) at += await conn.write(bytes.subarray(at));
    };
    try {
      for await (const item of readLines(conn.readable, MAX_LINE_BYTES)) {
        if ("tooLong" in item) {
          await send(JSON.stringify(errorResponse(
            null,
            new RpcError(
              RpcErrorCode.PARSE_ERROR,
              `request line longer than ${MAX_LINE_BYTES} bytes; connection closed`,
            ),
          )));
          return;
        }
        const reply = await handleLine(this.#methods, item.line);
        if (reply !== null) await send(reply);
      }
    } catch {
      // The client went away mid-request or mid-reply: nothing to tell it.
    }
  }

  /** Stop accepting, close every connection, remove the socket file. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#listener.close();
    await this.#loop;
    for (const c of this.#conns) {
      try {
        c.close();
      } catch {
        // Already closed.
      }
    }
    await Promise.allSettled([...this.#served]);
    try {
      Deno.removeSync(this.path);
    } catch {
      // Already gone.
    }
  }
}
