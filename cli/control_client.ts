/**
 * Calling the daemon's control methods: connect to its UNIX socket, send one
 * JSON-RPC 2.0 request line, read the response line.
 *
 * @example
 * ```ts
 * import { callDaemon } from "./control_client.ts";
 *
 * const devices = await callDaemon("/run/vhost-mdev/control.sock", "device_list");
 * console.log(devices);
 * ```
 *
 * @module
 */

import { MAX_LINE_BYTES, readLines, RpcError } from "./rpc.ts";

/** The daemon could not be reached, or went away before answering. */
export class DaemonUnreachable extends Error {
  /**
   * The error for `path`, saying how to start a daemon there.
   *
   * @param path The control socket.
   * @param reason What happened.
   */
  constructor(path: string, reason: string) {
    super(
      `cannot reach the daemon on ${path}: ${reason}; is \`vhost-mdev daemon --control ${path}\` ` +
        `running, and is the socket yours?`,
    );
    this.name = "DaemonUnreachable";
  }
}

/** Options of {@linkcode callDaemon}. */
export interface CallOptions {
  /** How long to wait for the response, in ms (default 60000). */
  timeoutMs?: number;
}

let nextId = 1;

/**
 * Call `method` with `params` on the daemon at `path`; resolves with the
 * result.
 *
 * @throws RpcError the daemon's error (its code and message).
 * @throws DaemonUnreachable when nothing answers on `path`, or the answer never comes.
 */
export async function callDaemon(
  path: string,
  method: string,
  params: Record<string, unknown> = {},
  options: CallOptions = {},
): Promise<unknown> {
  let conn: Deno.UnixConn;
  try {
    conn = await Deno.connect({ transport: "unix", path });
  } catch (e) {
    throw new DaemonUnreachable(path, (e as Error).message);
  }
  const id = nextId++;
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const line = JSON.stringify({ jsonrpc: "2.0", method, params, id }) + "\n";
    const bytes = new TextEncoder().encode(line);
    for (let at = 0; at < bytes.length;) at += await conn.write(bytes.subarray(at));
    const timeoutMs = options.timeoutMs ?? 60000;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new DaemonUnreachable(path, `no answer within ${timeoutMs} ms`)),
        timeoutMs,
      );
    });
    const read = (async () => {
      // A response may be as long as the daemon likes (a long device list): 16 MiB.
      for await (const item of readLines(conn.readable, MAX_LINE_BYTES * 256)) {
        if ("tooLong" in item) throw new DaemonUnreachable(path, "the answer is too long");
        return JSON.parse(item.line);
      }
      throw new DaemonUnreachable(path, "the daemon closed the connection without answering");
    })();
    const response = await Promise.race([read, timeout]);
    if (response?.error) {
      throw new RpcError(response.error.code, response.error.message, response.error.data);
    }
    return response?.result;
  } catch (e) {
    if (e instanceof RpcError || e instanceof DaemonUnreachable) throw e;
    throw new DaemonUnreachable(path, (e as Error).message);
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch {
      // Already closed.
    }
  }
}
