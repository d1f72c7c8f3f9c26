/**
 * The host end of QEMU's `-netdev socket,udp=...`: a UDP socket on 127.0.0.1
 * that receives every frame the guest's NIC transmits (one datagram per
 * frame, no header) and sends frames that the NIC receives.
 *
 * Uses `node:dgram`, which Deno supports without unstable flags.
 *
 * @module
 */

import dgram from "node:dgram";

/** A UDP endpoint on 127.0.0.1 collecting the frames QEMU sends it. */
export class UdpPeer {
  /** Frames received, in arrival order. */
  readonly received: Uint8Array[] = [];
  /** The local port QEMU must send to. */
  readonly port: number;
  #socket: dgram.Socket;
  #waiters = new Set<(closing: boolean) => void>();
  #closed = false;

  private constructor(socket: dgram.Socket, port: number) {
    this.#socket = socket;
    this.port = port;
    socket.on("message", (msg: Uint8Array) => {
      this.received.push(new Uint8Array(msg));
      for (const w of this.#waiters) w(false);
    });
  }

  /**
   * Bind a socket on 127.0.0.1 (port 0: any free one).
   *
   * @example
   * ```ts
   * import { UdpPeer } from "./udp_peer.ts";
   * const peer = await UdpPeer.bind();
   * console.log(peer.port);
   * await peer.close();
   * ```
   */
  static async bind(port = 0): Promise<UdpPeer> {
    const socket = dgram.createSocket("udp4");
    await new Promise<void>((resolve, reject) => {
      socket.once("error", reject);
      socket.bind(port, "127.0.0.1", () => {
        socket.off("error", reject);
        resolve();
      });
    });
    return new UdpPeer(socket, socket.address().port);
  }

  /** A UDP port on 127.0.0.1 that was free a moment ago (for QEMU to bind). */
  static async freePort(): Promise<number> {
    const probe = await UdpPeer.bind();
    const port = probe.port;
    await probe.close();
    return port;
  }

  /** Send `frame` as one datagram to 127.0.0.1:`port`. */
  send(frame: Uint8Array, port: number): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#socket.send(frame, port, "127.0.0.1", (err) => err ? reject(err) : resolve());
    });
  }

  /**
   * Wait until at least `count` frames have arrived in total.
   *
   * @returns whether they did before `timeoutMs` (false too when the peer is closed)
   */
  waitForCount(count: number, timeoutMs: number): Promise<boolean> {
    if (this.received.length >= count) return Promise.resolve(true);
    return new Promise((resolve) => {
      const check = (closing: boolean) => {
        if (this.received.length >= count) finish(true);
        else if (closing) finish(false);
      };
      const timer = setTimeout(() => finish(false), timeoutMs);
      const finish = (ok: boolean) => {
        clearTimeout(timer);
        this.#waiters.delete(check);
        resolve(ok);
      };
      this.#waiters.add(check);
    });
  }

  /** Close the socket (idempotent). */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const w of [...this.#waiters]) w(true);
    await new Promise<void>((resolve) => this.#socket.close(() => resolve()));
  }
}
