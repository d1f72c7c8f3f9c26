/**
 * Server mode: the backend listens on a UNIX socket path and the frontend
 * (QEMU, DPDK's virtio_user) connects. One frontend at a time per device; a
 * second one is refused with a logged reason while the first is attached.
 * A frontend that reconnects right after closing (QEMU `reconnect=1`, a
 * restarted testpmd) is not refused: the server waits for the old session
 * to finish detaching, then attaches the new one.
 *
 * @module
 */

import type { VhostMdevDevice } from "../core/device.ts";
import {
  accept,
  bindUnix,
  close,
  connectUnix,
  eventfd,
  eventfdWrite,
  listen,
  pollAsync,
  POLLIN,
  SysError,
  unixSocket,
} from "../sys/mod.ts";
import { VhostUserSession } from "./session.ts";

/** Back-off after a failed `accept` (out of fds, say), in ms. */
const ACCEPT_RETRY_MS = 100;
/** How long a new frontend waits for the previous one's detach, in ms. */
const DETACH_WAIT_MS = 5000;

/** Options of {@linkcode VhostUserServer.listen}. */
export interface ServerOptions {
  /** Remove a stale socket file left by a dead process (default true). */
  replaceStale?: boolean;
}

/**
 * Serves one device on a socket path.
 *
 * @example
 * ```ts
 * import { VhostMdevDevice } from "@vhost-mdev/sdk";
 * import { VhostUserServer } from "@vhost-mdev/sdk/vhost-user";
 * import { driver } from "@vhost-mdev/sim";
 *
 * const device = await VhostMdevDevice.create(driver, { queues: 1, options: {} });
 * const server = VhostUserServer.listen(device, "/tmp/vhost-net0.sock");
 * // ... QEMU or testpmd connects ...
 * await server.close();
 * await device.close();
 * ```
 */
export class VhostUserServer {
  /** The socket path. */
  readonly path: string;
  #device: VhostMdevDevice;
  #fd: number;
  #wake: number;
  #closed = false;
  #loop: Promise<void>;
  #sessions = new Set<{ session: VhostUserSession; done: Promise<string> }>();
  #accepted = 0;
  #acceptErrorSaid = false;

  private constructor(device: VhostMdevDevice, path: string, fd: number) {
    this.#device = device;
    this.path = path;
    this.#fd = fd;
    this.#wake = eventfd(0, { nonBlocking: true });
    this.#loop = this.#acceptLoop();
  }

  /**
   * Listen on `path` for frontends of `device`.
   *
   * @throws Error when the path is served by a live process, or cannot be
   *   bound (the message says which and what to do).
   */
  static listen(
    device: VhostMdevDevice,
    path: string,
    options: ServerOptions = {},
  ): VhostUserServer {
    prepareSocketPath(path, options.replaceStale ?? true);
    const fd = unixSocket({ nonBlocking: true });
    try {
      bindUnix(fd, path);
      listen(fd, 8);
    } catch (e) {
      close(fd);
      if (e instanceof SysError) {
        throw new Error(
          `cannot listen on ${path}: ${e.message}; check the directory exists and is writable`,
        );
      }
      throw e;
    }
    device.events.emit("info", `listening on ${path}`, { socket: path });
    return new VhostUserServer(device, path, fd);
  }

  /** Frontends accepted so far (including refused ones). */
  get accepted(): number {
    return this.#accepted;
  }

  async #acceptLoop(): Promise<void> {
    while (!this.#closed) {
      try {
        const rev = await pollAsync([{ fd: this.#fd, events: POLLIN }, {
          fd: this.#wake,
          events: POLLIN,
        }], -1);
        if (this.#closed || rev[1] !== 0) break;
        await this.#acceptOne();
      } catch (e) {
        // Out of fds or memory (EMFILE, ENFILE, ENOMEM): say so once, back
        // off, and keep serving; the loop must never end on an error.
        if (!this.#acceptErrorSaid) {
          this.#device.events.emit(
            "error",
            `accepting on ${this.path} failed: ${(e as Error).message}; retrying`,
          );
          this.#acceptErrorSaid = true;
        }
        await this.#pause(ACCEPT_RETRY_MS);
      }
    }
  }

  async #acceptOne(): Promise<void> {
    let conn: number;
    try {
      conn = accept(this.#fd, { nonBlocking: true });
    } catch (e) {
      if (e instanceof SysError && (e.code === "EAGAIN" || e.code === "ECONNABORTED")) return;
      throw e;
    }
    this.#acceptErrorSaid = false;
    this.#accepted++;
    const description = `frontend #${this.#accepted} on ${this.path}`;
    let session: VhostUserSession;
    try {
      session = new VhostUserSession(conn, this.#device, description);
    } catch (e) {
      close(conn);
      throw e;
    }
    await this.#previousDetached();
    if (this.#closed || !this.#device.attach(session)) {
      session.close("refused: device busy");
      return;
    }
    const entry = { session, done: session.run() };
    this.#sessions.add(entry);
    entry.done.then(
      () => this.#sessions.delete(entry),
      (e) => {
        this.#sessions.delete(entry);
        this.#device.events.emit("error", `${description}: ${(e as Error).message}`);
      },
    );
  }

  /**
   * When the device's frontend is one of ours that has gone (closed or
   * hung up), wait (bounded) for its detach, so the new one is not refused.
   */
  async #previousDetached(): Promise<void> {
    const old = [...this.#sessions].find((s) => s.session === this.#device.owner);
    if (!old || !old.session.ending) return;
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      old.done.catch(() => {}),
      new Promise<void>((r) => timer = setTimeout(r, DETACH_WAIT_MS)),
    ]);
    clearTimeout(timer);
  }

  #pause(ms: number): Promise<void> {
    return new Promise((resolve) => setTimeout(resolve, ms));
  }

  /** Stop listening, end the attached session, remove the socket file. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    eventfdWrite(this.#wake, 1);
    await this.#loop;
    close(this.#fd);
    close(this.#wake);
    for (const s of this.#sessions) s.session.close("server closed");
    await Promise.all([...this.#sessions].map((s) => s.done));
    try {
      Deno.removeSync(this.path);
    } catch {
      // Already gone.
    }
  }
}

/**
 * Make `path` free to bind: a stale socket (nobody accepting) is removed
 * (unless `replaceStale` is false: then it is an error); a live one, or a
 * non-socket file, is an error. `what` names the socket in messages
 * (default `--socket path`; the daemon's control socket says so).
 *
 * @throws Error saying what is there and what to do.
 */
export function prepareSocketPath(
  path: string,
  replaceStale: boolean,
  what: { option: string; busy: (path: string) => string } = {
    option: "--socket path",
    busy: (p) => `${p} is served by a running process`,
  },
): void {
  let info: Deno.FileInfo;
  try {
    info = Deno.lstatSync(path);
  } catch {
    return;
  }
  if (!info.isSocket) {
    throw new Error(
      `${path} exists and is not a socket; remove it or choose another ${what.option}`,
    );
  }
  const probe = unixSocket();
  try {
    connectUnix(probe, path);
    throw new Error(`${what.busy(path)}; stop it or choose another ${what.option}`);
  } catch (e) {
    if (!(e instanceof SysError)) throw e;
  } finally {
    close(probe);
  }
  if (!replaceStale) {
    throw new Error(`${path} is a stale socket file; remove it`);
  }
  Deno.removeSync(path);
}
