/**
 * A vhost-user connection: reads whole messages (header, payload, fds) from
 * a non-blocking UNIX stream socket without blocking the event loop, and
 * writes messages with fds without blocking it either: what the peer does
 * not take at once waits in a bounded outbox that drains as the peer reads.
 * Waiting uses `pollAsync` on the socket and a wake eventfd, so
 * {@linkcode MessageSocket.close} ends a pending read or flush at once.
 *
 * @module
 */

import { ProtocolError } from "../core/errors.ts";
import {
  close,
  dup,
  eventfd,
  eventfdWrite,
  pollAsync,
  POLLERR,
  POLLHUP,
  POLLIN,
  POLLNVAL,
  POLLOUT,
  POLLRDHUP,
  pollSync,
  recvMsg,
  sendMsg,
  setNonBlocking,
  SysError,
} from "../sys/mod.ts";
import { HEADER_SIZE, HeaderFlag, MAX_FDS, MAX_PAYLOAD_SIZE } from "../uapi/vhost_user.ts";
import { decodeHeader, type VhostUserMessage } from "./message.ts";

/**
 * Bytes a peer may leave unread before the connection is failed: a
 * frontend that sends requests and never reads the replies cannot make this
 * process buffer without bound, nor block its event loop.
 */
export const MAX_UNSENT_BYTES = 256 * 1024;

interface Unsent {
  bytes: Uint8Array;
  /** Duplicates of the fds still to send (closed once sent or dropped). */
  fds: number[];
}

/** Framed message I/O over one connected socket. Owns the socket fd. */
export class MessageSocket {
  #fd: number;
  #wake: number;
  #closed = false;
  #polling = 0;
  #released = false;
  #header = new Uint8Array(HEADER_SIZE);
  #outbox: Unsent[] = [];
  #unsentBytes = 0;
  #flushing = false;
  #failure = "";

  /**
   * Wrap a socket. The socket becomes this object's only when the
   * constructor returns; when it throws (the fd is not a socket that can be
   * made non-blocking, say) the caller still owns the fd and must close it.
   *
   * @param fd A connected UNIX stream socket; set non-blocking here.
   */
  constructor(fd: number) {
    setNonBlocking(fd, true);
    this.#wake = eventfd(0, { nonBlocking: true });
    this.#fd = fd;
  }

  /** The socket fd. */
  get fd(): number {
    return this.#fd;
  }

  /** Whether {@linkcode MessageSocket.close} was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Why the connection failed while sending, or `""`. */
  get failure(): string {
    return this.#failure;
  }

  /**
   * Whether the peer has closed its end (its last messages may still wait
   * to be read), or this socket was closed.
   */
  peerClosed(): boolean {
    if (this.#closed) return true;
    const rev = pollSync([{ fd: this.#fd, events: POLLRDHUP }], 0);
    return (rev[0] & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) !== 0;
  }

  /** Bytes queued for a peer that has not read them yet. */
  get unsentBytes(): number {
    return this.#unsentBytes;
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

  /** Wait until the socket has `events` or the socket is closed; false when closed. */
  async #wait(events: number): Promise<boolean> {
    this.#polling++;
    try {
      const rev = await pollAsync([{ fd: this.#fd, events }, {
        fd: this.#wake,
        events: POLLIN,
      }], -1);
      return rev[1] === 0 && !this.#closed;
    } finally {
      this.#polling--;
      if (this.#closed && this.#polling === 0) this.#release();
    }
  }

  #waitReadable(): Promise<boolean> {
    return this.#wait(POLLIN);
  }

  /**
   * Send `bytes` with `fds` (not closed; the peer gets duplicates). Never
   * blocks: what the socket does not take now is queued, with duplicates of
   * the fds, and sent as the peer reads.
   *
   * @throws ProtocolError when the connection is closed or failed, or when
   *   the peer has left more than {@linkcode MAX_UNSENT_BYTES} unread (the
   *   connection is failed then); SysError when the peer is gone.
   */
  send(bytes: Uint8Array, fds: readonly number[] = []): void {
    if (this.#failure) throw new ProtocolError(this.#failure);
    if (this.#closed) throw new ProtocolError("the connection is closed");
    const sent = this.#outbox.length === 0 ? this.#writeNow(bytes, fds) : 0;
    if (sent === bytes.length) return;
    const rest = bytes.length - sent;
    if (this.#unsentBytes + rest > MAX_UNSENT_BYTES) {
      this.#fail(
        `peer does not read its socket: ${this.#unsentBytes + rest} bytes would wait, ` +
          `the limit is ${MAX_UNSENT_BYTES}`,
      );
      throw new ProtocolError(this.#failure);
    }
    // The fds travel with the first byte: held (duplicated) only if none went.
    const held: number[] = [];
    try {
      if (sent === 0) { for (const fd of fds) held.push(dup(fd)); }
    } catch (e) {
      for (const fd of held) close(fd);
      throw e;
    }
    this.#outbox.push({ bytes: bytes.slice(sent), fds: held });
    this.#unsentBytes += rest;
    if (!this.#flushing) this.#flush();
  }

  /**
   * Write as much of `bytes` as the socket takes now, the fds with the first
   * byte; returns the bytes written.
   *
   * @throws SysError for any failure but EAGAIN.
   */
  #writeNow(bytes: Uint8Array, fds: readonly number[]): number {
    let off = 0;
    while (off < bytes.length) {
      try {
        off += sendMsg(this.#fd, bytes.subarray(off), off === 0 ? fds : []);
      } catch (e) {
        if (e instanceof SysError && e.code === "EAGAIN") break;
        throw e;
      }
    }
    return off;
  }

  /** Send the outbox as the peer makes room; fails the connection on an error. */
  async #flush(): Promise<void> {
    this.#flushing = true;
    try {
      while (this.#outbox.length > 0 && !this.#closed) {
        const next = this.#outbox[0];
        const n = this.#writeNow(next.bytes, next.fds);
        if (n > 0) {
          for (const fd of next.fds) close(fd);
          next.fds = [];
          this.#unsentBytes -= n;
        }
        if (n === next.bytes.length) {
          this.#outbox.shift();
          continue;
        }
        next.bytes = next.bytes.subarray(n);
        if (!await this.#wait(POLLOUT)) break;
      }
    } catch (e) {
      this.#fail(`sending to the peer failed: ${(e as Error).message}`);
    } finally {
      this.#flushing = false;
    }
  }

  #fail(reason: string): void {
    if (!this.#failure) this.#failure = reason;
    this.close();
  }

  /**
   * Close the socket; a pending {@linkcode MessageSocket.read} returns `null`
   * and unsent messages are dropped. Idempotent.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const m of this.#outbox) for (const fd of m.fds) close(fd);
    this.#outbox = [];
    this.#unsentBytes = 0;
    // A poll running on another thread still uses both fds: it returns on
    // the wake and releases them then, so their numbers are never reused
    // under it.
    if (this.#polling > 0) eventfdWrite(this.#wake, 1);
    else this.#release();
  }

  #release(): void {
    if (this.#released) return;
    this.#released = true;
    close(this.#fd);
    close(this.#wake);
  }
}
