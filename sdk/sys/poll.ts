/**
 * Waiting for fds: `poll(2)` three ways.
 *
 * - {@linkcode pollSync} blocks the calling thread: for Workers (kick
 *   relays, datapaths). It reuses per-thread buffers and returns a reused
 *   array, so a loop around it allocates nothing.
 * - {@linkcode PollSet} is the same with a set built once (add/remove), for
 *   hot loops that watch a fixed set of fds.
 * - {@linkcode pollAsync} runs the poll on a thread of Deno's blocking pool
 *   and resolves a promise: for the control plane on the main thread.
 *
 * Cancelling a {@linkcode pollAsync}: there is no way to interrupt a poll
 * running on another thread, so put a "wake" eventfd in the set. To cancel,
 * `eventfdWrite` the wake fd; the poll returns with POLLIN on it;
 * then drain it with `eventfdRead`. Keep one outstanding `pollAsync` per
 * waiter, and close none of its fds until it has returned: the number of a
 * closed fd can be reused at once by an unrelated file.
 *
 * errno of a `pollAsync`: the call runs on another thread, whose errno
 * JavaScript cannot read. When it returns -1, the same set is polled again
 * synchronously with a zero timeout on this thread. If that also fails its
 * errno is thrown (bad pointer, too many fds, out of memory are properties
 * of the set and fail both ways); if it reports ready fds, they are the
 * result; otherwise the failure was transient (EINTR) and the wait resumes
 * with the time left.
 *
 * @example Cancellable wait on the control plane
 * ```ts
 * import { eventfd, eventfdRead, eventfdWrite, POLLIN, pollAsync } from "@vhost-mdev/sdk/sys";
 * declare const sock: number; // the connected control socket
 * const wake = eventfd(0, { nonBlocking: true });
 * const pending = pollAsync([{ fd: sock, events: POLLIN }, { fd: wake, events: POLLIN }], -1);
 * // elsewhere, to cancel:
 * eventfdWrite(wake);
 * const [sockReady, woken] = await pending;
 * if (woken) eventfdRead(wake);
 * ```
 *
 * @module
 */

import { Errno, SysError } from "./error.ts";
import { lastErrno, libc } from "./libc.ts";

/** There is data to read (or a connection to accept, or an eventfd is non-zero). */
export const POLLIN = 0x1;
/** There is urgent data. */
export const POLLPRI = 0x2;
/** Writing will not block. */
export const POLLOUT = 0x4;
/** Error condition (reported even if not asked for). */
export const POLLERR = 0x8;
/** The peer hung up (reported even if not asked for). */
export const POLLHUP = 0x10;
/** The fd is not open (reported even if not asked for). */
export const POLLNVAL = 0x20;
/** The stream peer shut down its writing half. */
export const POLLRDHUP = 0x2000;

/** `sizeof(struct pollfd)`: `{ int fd; short events; short revents; }`. */
export const POLLFD_SIZE = 8;

/** One fd to watch and the events of interest (`POLLIN | POLLOUT` ...). */
export interface PollFd {
  /** The fd; a negative fd is ignored (its revents are 0). */
  fd: number;
  /** Events to wait for. */
  events: number;
}

const INT32_MAX = 0x7fffffff;

/** A poll timeout as `int` milliseconds: negative means forever. */
function clampTimeout(timeoutMs: number): number {
  if (!(timeoutMs >= 0)) return -1;
  return timeoutMs >= INT32_MAX ? INT32_MAX : Math.ceil(timeoutMs);
}

/**
 * A preallocated `struct pollfd` array: build it once, then
 * {@linkcode PollSet.wait} in a loop without allocating.
 *
 * @example
 * ```ts
 * import { eventfdRead, POLLIN, PollSet } from "@vhost-mdev/sdk/sys";
 * declare const stopFd: number, kickFd: number; // eventfds
 * const set = new PollSet();
 * set.add(stopFd, POLLIN);
 * set.add(kickFd, POLLIN);
 * while (set.wait(-1) > 0 && set.revents(0) === 0) {
 *   if (set.revents(1) & POLLIN) eventfdRead(kickFd);
 * }
 * ```
 */
export class PollSet {
  #bytes: Uint8Array<ArrayBuffer>;
  #fds: Int32Array<ArrayBuffer>;
  #events: Int16Array<ArrayBuffer>;
  #size = 0;
  // nfds as the bigint the FFI call takes, refreshed when the size changes.
  #sizeArg = 0n;
  #sizeArgFor = 0;

  /**
   * An empty set.
   *
   * @param capacity Entries to allocate room for up front (grows on demand).
   */
  constructor(capacity = 8) {
    this.#bytes = new Uint8Array(Math.max(1, capacity) * POLLFD_SIZE);
    this.#fds = new Int32Array(this.#bytes.buffer);
    this.#events = new Int16Array(this.#bytes.buffer);
  }

  /** Number of entries. */
  get size(): number {
    return this.#size;
  }

  /** Watch `fd` for `events`; returns the entry's index. */
  add(fd: number, events: number): number {
    if (this.#size * POLLFD_SIZE === this.#bytes.length) this.#grow();
    const i = this.#size++;
    this.#fds[2 * i] = fd;
    this.#events[4 * i + 2] = events;
    this.#events[4 * i + 3] = 0;
    return i;
  }

  /** Stop watching the first entry for `fd` (later entries move down by one); false if absent. */
  remove(fd: number): boolean {
    for (let i = 0; i < this.#size; i++) {
      if (this.#fds[2 * i] !== fd) continue;
      this.#bytes.copyWithin(i * POLLFD_SIZE, (i + 1) * POLLFD_SIZE, this.#size * POLLFD_SIZE);
      this.#size--;
      return true;
    }
    return false;
  }

  /** Remove every entry. */
  clear(): void {
    this.#size = 0;
  }

  /** The fd of entry `i`. */
  fd(i: number): number {
    return this.#fds[2 * i];
  }

  /** The events returned for entry `i` by the last {@linkcode PollSet.wait} (0 if none). */
  revents(i: number): number {
    return this.#events[4 * i + 3] & 0xffff;
  }

  /**
   * Block until an entry is ready or `timeoutMs` passes (negative: forever).
   * Returns how many entries have events (0 on timeout). Interrupted waits
   * (EINTR) resume with the time left.
   *
   * @throws SysError e.g. EINVAL when there are more entries than the fd limit.
   */
  wait(timeoutMs: number): number {
    const c = libc();
    let timeout = clampTimeout(timeoutMs);
    const deadline = timeout < 0 ? 0 : performance.now() + timeout;
    if (this.#sizeArgFor !== this.#size) {
      this.#sizeArgFor = this.#size;
      this.#sizeArg = BigInt(this.#size);
    }
    for (;;) {
      const r = c.poll(this.#bytes, this.#sizeArg, timeout);
      if (r >= 0) return r;
      const errno = lastErrno();
      if (errno !== Errno.EINTR) throw new SysError("poll", errno, `(${this.#size} fds)`);
      if (timeout > 0) timeout = Math.max(0, Math.ceil(deadline - performance.now()));
    }
  }

  #grow(): void {
    const bytes = new Uint8Array(this.#bytes.length * 2);
    bytes.set(this.#bytes);
    this.#bytes = bytes;
    this.#fds = new Int32Array(bytes.buffer);
    this.#events = new Int16Array(bytes.buffer);
  }
}

const syncSet = new PollSet(16);
/** One result array per set size, reused by every pollSync of that size. */
const syncResults: number[][] = [];

/**
 * Block this thread until one of `fds` is ready or `timeoutMs` passes
 * (negative: forever); returns the revents of each fd, in order (all 0 on
 * timeout). Meant for Workers; on the main thread it stalls the event loop.
 *
 * The returned array is reused by the next `pollSync` with the same number
 * of fds on this thread: read it before polling again, or copy it.
 *
 * @example
 * ```ts
 * import { eventfdRead, POLLIN, pollSync } from "@vhost-mdev/sdk/sys";
 * declare const stopFd: number, kickFd: number; // eventfds
 * const [stop, kick] = pollSync([{ fd: stopFd, events: POLLIN }, { fd: kickFd, events: POLLIN }], -1);
 * if (kick & POLLIN) eventfdRead(kickFd);
 * ```
 */
export function pollSync(fds: readonly PollFd[], timeoutMs: number): number[] {
  syncSet.clear();
  for (let i = 0; i < fds.length; i++) syncSet.add(fds[i].fd, fds[i].events);
  syncSet.wait(timeoutMs);
  const out = syncResults[fds.length] ??= new Array<number>(fds.length).fill(0);
  for (let i = 0; i < fds.length; i++) out[i] = syncSet.revents(i);
  return out;
}

/**
 * Wait without blocking the event loop until one of `fds` is ready or
 * `timeoutMs` passes (negative: forever); resolves to the revents of each
 * fd (all 0 on timeout). Include a wake eventfd to make it cancellable (see
 * the module documentation).
 *
 * @throws SysError when the poll itself fails (see the module documentation
 *   for how the errno is recovered).
 */
export async function pollAsync(fds: readonly PollFd[], timeoutMs: number): Promise<number[]> {
  const bytes = new Uint8Array(Math.max(1, fds.length) * POLLFD_SIZE);
  // Taking `.buffer` moves a small array out of V8's moving heap, so the
  // pointer the pool thread writes revents through stays valid.
  const view = new DataView(bytes.buffer);
  for (let i = 0; i < fds.length; i++) {
    view.setInt32(i * POLLFD_SIZE, fds[i].fd, true);
    view.setInt16(i * POLLFD_SIZE + 4, fds[i].events, true);
  }
  const revents = () => fds.map((_, i) => view.getUint16(i * POLLFD_SIZE + 6, true));
  const c = libc();
  const nfds = BigInt(fds.length);
  const timeout = clampTimeout(timeoutMs);
  const deadline = timeout < 0 ? 0 : performance.now() + timeout;
  let wait = timeout;
  for (;;) {
    const r = await c.poll_nonblocking(bytes, nfds, wait);
    if (r >= 0) return revents();
    const probe = c.poll(bytes, nfds, 0);
    if (probe < 0) {
      const errno = lastErrno();
      if (errno !== Errno.EINTR) throw new SysError("poll", errno, `(${fds.length} fds)`);
    } else if (probe > 0) {
      return revents();
    }
    if (timeout >= 0) {
      wait = Math.ceil(deadline - performance.now());
      if (wait <= 0) return revents();
    }
  }
}
