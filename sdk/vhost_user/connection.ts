/**
 * A vhost-user connection: reads whole messages (header, payload, fds) from
 * a non-blocking UNIX stream socket without blocking the event loop, and
 * writes messages with fds. Waiting uses `pollAsync` on the socket and a wake
 * eventfd, so {@linkcode MessageSocket.close} ends a pending read at once.
 *
 * @module
 */

import { ProtocolError } from "../core/errors.ts";
import {
  close,
  eventfd,
  eventfdWrite,
  pollAsync,
  POLLIN,
  POLLOUT,
  pollSync,
  recvMsg,
  sendMsg,
  setNonBlocking,
  SysError,
} from "../sys/mod.ts";
import { HEADER_SIZE, HeaderFlag, MAX_FDS, MAX_PAYLOAD_SIZE } from "../uapi/vhost_user.ts";
import { decodeHeader, type VhostUserMessage } from "./message.ts";

/** Framed message I/O over one connected socket. Owns the socket fd. */
export class MessageSocket {
  #fd: number;
  #wake: number;
  #closed = false;
  #polling = false;
  #released = false;
  #header = new Uint8Array(HEADER_SIZE);

  /**
   * Wrap a socket.
   *
   * @param fd A connected UNIX stream socket; set non-blocking here.
   */
  constructor(fd: number) {
    this.#fd = fd;
    setNonBlocking(fd, true);
    this.#wake = eventfd(0, { nonBlocking: true });
  }

  /** The socket fd. */
  get fd(): number {
    return this.#fd;
  }

  /** Whether {@linkcode MessageSocket.close} was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Read the next message, or `null` when the peer closed the connection or
   * this socket was closed. Fds received before an error are closed.
   *
   * @throws ProtocolError for a bad header, an oversized payload, or fds the
   *   kernel had to drop (more than {@linkcode MAX_FDS}).
   */
  async read(): Promise<VhostUserMessage | null> {
    const fds: number[] = [];
    try {
      if (!await this.#fill(this.#header, fds, true)) return null;
      const { request, flags, size } = decodeHeader(this.#header);
      if ((flags & HeaderFlag.VERSION_MASK) !== HeaderFlag.VERSION) {
        throw new ProtocolError(
          `message ${request}: header flags 0x${flags.toString(16)} do not carry version 1`,
        );
      }
      if (size > MAX_PAYLOAD_SIZE) {
        throw new ProtocolError(
          `message ${request}: payload size ${size} exceeds the ${MAX_PAYLOAD_SIZE}-byte limit`,
        );
      }
      const payload = new Uint8Array(size);
      if (size > 0 && !await this.#fill(payload, fds, false)) {
        throw new ProtocolError(
          `message ${request}: connection closed inside a ${size}-byte payload`,
        );
      }
      const out: VhostUserMessage = { request, flags, payload, fds: fds.slice() };
      fds.length = 0;
      return out;
    } finally {
      for (const fd of fds) close(fd);
    }
  }

  /** Fill `buf`; false on a clean EOF before the first byte (when `eofOk`). */
  async #fill(buf: Uint8Array, fds: number[], eofOk: boolean): Promise<boolean> {
    let got = 0;
    while (got < buf.length) {
      if (this.#closed) return false;
      let r;
      try {
        r = recvMsg(this.#fd, buf.subarray(got), MAX_FDS);
      } catch (e) {
        if (e instanceof SysError && (e.code === "EAGAIN" || e.code === "EINTR")) {
          if (!await this.#waitReadable()) return false;
          continue;
        }
        if (e instanceof SysError && e.code === "ECONNRESET") return false;
        throw e;
      }
      fds.push(...r.fds);
      if (r.ctrunc) {
        throw new ProtocolError(`message carries more than ${MAX_FDS} fds; the rest were dropped`);
      }
      if (r.bytes === 0) {
        if (got === 0 && eofOk) return false;
        throw new ProtocolError(`connection closed inside a message (${got}/${buf.length} bytes)`);
      }
      got += r.bytes;
    }
    return true;
  }

  async #waitReadable(): Promise<boolean> {
    this.#polling = true;
    try {
      const rev = await pollAsync([{ fd: this.#fd, events: POLLIN }, {
        fd: this.#wake,
        events: POLLIN,
      }], -1);
      return rev[1] === 0 && !this.#closed;
    } finally {
      this.#polling = false;
      if (this.#closed) this.#release();
    }
  }

  /** Send `bytes` with `fds` (not closed). Waits up to 1 s for buffer space. */
  send(bytes: Uint8Array, fds: readonly number[] = []): void {
    let off = 0;
    let first = true;
    while (off < bytes.length) {
      try {
        off += sendMsg(this.#fd, bytes.subarray(off), first ? fds : []);
        first = false;
      } catch (e) {
        if (e instanceof SysError && e.code === "EAGAIN") {
          const rev = pollSync([{ fd: this.#fd, events: POLLOUT }], 1000);
          if (rev[0] === 0) {
            throw new ProtocolError("peer does not read its socket (send timed out)");
          }
          continue;
        }
        throw e;
      }
    }
  }

  /** Close the socket; a pending {@linkcode MessageSocket.read} returns `null`. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    // A poll running on another thread still uses both fds: it returns on
    // the wake and releases them then, so their numbers are never reused
    // under it.
    if (this.#polling) eventfdWrite(this.#wake, 1);
    else this.#release();
  }

  #release(): void {
    if (this.#released) return;
    this.#released = true;
    close(this.#fd);
    close(this.#wake);
  }
}
