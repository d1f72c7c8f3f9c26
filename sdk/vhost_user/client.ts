/**
 * Client mode: the backend connects to a frontend listening on a socket
 * (QEMU `server=on`, DPDK virtio_user `server=1`), retrying with backoff
 * until it is there, and reconnecting after the frontend restarts.
 *
 * @module
 */

import type { VhostMdevDevice } from "../core/device.ts";
import { message } from "../core/device.ts";
import { close, connectUnix, SysError, unixSocket } from "../sys/mod.ts";
import { VhostUserSession } from "./session.ts";

/** Options of {@linkcode VhostUserClient.connect}. */
export interface ClientOptions {
  /** First retry delay in ms (default 50). */
  initialDelayMs?: number;
  /** Longest retry delay in ms (default 2000). */
  maxDelayMs?: number;
  /** Reconnect after the frontend goes away (default true). */
  reconnect?: boolean;
}

/**
 * Connects a device to a listening frontend and keeps it connected.
 *
 * @example
 * ```ts
 * import { VhostMdevDevice } from "@vhost-mdev/sdk";
 * import { VhostUserClient } from "@vhost-mdev/sdk/vhost-user";
 * import { driver } from "@vhost-mdev/sim";
 *
 * const device = await VhostMdevDevice.create(driver, { queues: 1, options: {} });
 * const client = VhostUserClient.connect(device, "/tmp/virtio-user.sock");
 * // ... later
 * await client.close();
 * ```
 */
export class VhostUserClient {
  /** The frontend's socket path. */
  readonly path: string;
  #device: VhostMdevDevice;
  #options: Required<ClientOptions>;
  #closed = false;
  #session: VhostUserSession | null = null;
  #sleep: { timer: ReturnType<typeof setTimeout>; resolve: () => void } | null = null;
  #loop: Promise<void>;
  #connections = 0;

  private constructor(device: VhostMdevDevice, path: string, options: ClientOptions) {
    this.#device = device;
    this.path = path;
    this.#options = {
      initialDelayMs: options.initialDelayMs ?? 50,
      maxDelayMs: options.maxDelayMs ?? 2000,
      reconnect: options.reconnect ?? true,
    };
    this.#loop = this.#run();
  }

  /** Start connecting `device` to the frontend at `path`. */
  static connect(
    device: VhostMdevDevice,
    path: string,
    options: ClientOptions = {},
  ): VhostUserClient {
    return new VhostUserClient(device, path, options);
  }

  /** Sessions established so far. */
  get connections(): number {
    return this.#connections;
  }

  async #run(): Promise<void> {
    let delay = this.#options.initialDelayMs;
    let waitingSaid = false;
    while (!this.#closed) {
      let fd: number;
      try {
        fd = unixSocket();
        try {
          connectUnix(fd, this.path);
        } catch (e) {
          close(fd);
          throw e;
        }
      } catch (e) {
        if (!waitingSaid) {
          const why = e instanceof SysError ? e.code : message(e);
          this.#device.events.emit(
            "info",
            `waiting for a frontend to listen on ${this.path} (${why}); retrying`,
          );
          waitingSaid = true;
        }
        await this.#wait(delay);
        delay = Math.min(delay * 2, this.#options.maxDelayMs);
        continue;
      }
      delay = this.#options.initialDelayMs;
      waitingSaid = false;
      this.#connections++;
      let session: VhostUserSession;
      try {
        session = new VhostUserSession(fd, this.#device, `frontend at ${this.path}`);
      } catch (e) {
        close(fd);
        this.#device.events.emit("error", `connection to ${this.path} failed: ${message(e)}`);
        await this.#wait(this.#options.maxDelayMs);
        continue;
      }
      if (!this.#device.attach(session)) {
        session.close("device busy");
        await this.#wait(this.#options.maxDelayMs);
        continue;
      }
      this.#session = session;
      await session.run();
      this.#session = null;
      if (!this.#options.reconnect) break;
      await this.#wait(delay);
    }
  }

  #wait(ms: number): Promise<void> {
    if (this.#closed) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#sleep = null;
        resolve();
      }, ms);
      this.#sleep = { timer, resolve };
    });
  }

  /** Disconnect and stop reconnecting. */
  async close(): Promise<void> {
    this.#closed = true;
    if (this.#sleep) {
      clearTimeout(this.#sleep.timer);
      this.#sleep.resolve();
      this.#sleep = null;
    }
    this.#session?.close("client closed");
    await this.#loop;
  }
}
