/**
 * A hostile vhost-user frontend, for attacking a backend that runs in
 * another process: raw messages with any fds (its own encoder, so nothing
 * the backend's decoder assumes is assumed here), guest memory in a memfd
 * with rings laid out by hand, and probes of the backend process read from
 * `/proc/PID`: open fds, RSS, VmSize, threads, liveness, and whether a fresh
 * connection gets `GET_FEATURES` answered within a deadline.
 *
 * {@linkcode BackendProcess} runs `multi_serve.ts` (several devices in one
 * process) and collects its JSON event lines.
 *
 * @module
 */

import { settledFdCount as settleFds } from "./peers.ts";
import {
  bit,
  GuestMemory,
  SplitQueueDriver,
  VirtioFeatureBit,
  VirtioNetFeatureBit,
  VirtioStatus,
} from "@vhost-mdev/sdk";
import { FrontendRequest, ProtocolFeatureBit } from "@vhost-mdev/sdk/vhost-user";
import {
  close,
  connectUnix,
  eventfd,
  eventfdRead,
  eventfdWrite,
  ftruncate,
  type Mapping,
  memfdCreate,
  mmap,
  open,
  pollAsync,
  POLLHUP,
  POLLIN,
  POLLOUT,
  POLLRDHUP,
  recvMsg,
  sendMsg,
  SysError,
  unixSocket,
  write,
} from "@vhost-mdev/sdk/sys";

// ---- numbers --------------------------------------------------------------

/** Header flags: version 1. */
export const VERSION = 0x1;
/** Header flags: this message is a reply. */
export const REPLY = 0x4;
/** Header flags: the sender wants an ack (`REPLY_ACK`). */
export const NEED_REPLY = 0x8;
/** `open` flag: a handle to a path, usable for nothing but fd-level calls. */
export const O_PATH = 0o10000000;
/** `open` flag: close on exec. */
const O_CLOEXEC = 0o2000000;
/** File status flag: non-blocking I/O (`fcntl(F_GETFL)`). */
export const O_NONBLOCK = 0o4000;
/** The largest value an eventfd counter holds; a write that would pass it blocks (or EAGAIN). */
export const EVENTFD_MAX = 0xfffffffffffffffen;
/** `VRING_NOFD_FLAG` of SET_VRING_KICK/CALL/ERR payloads. */
export const VRING_NOFD = 0x100;
/** A page. */
export const PAGE = 4096;

/** A protocol feature mask from bit numbers of `ProtocolFeatureBit`. */
export function protocolBits(...bits: number[]): bigint {
  return bits.reduce((m, b) => m | bit(b), 0n);
}

/** Virtio feature bit 30: the frontend speaks vhost-user protocol features. */
export const PROTOCOL_FEATURES_BIT: bigint = bit(VirtioFeatureBit.PROTOCOL_FEATURES);
/** Virtio feature `VERSION_1`. */
export const VERSION_1: bigint = bit(VirtioFeatureBit.VERSION_1);
/** Virtio-net feature `MRG_RXBUF`. */
export const MRG_RXBUF: bigint = bit(VirtioNetFeatureBit.MRG_RXBUF);

// ---- payload encoders -----------------------------------------------------

/** A `u64` payload. */
export function u64(value: bigint | number): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(value), true);
  return b;
}

/** A `vhost_vring_state` payload (index, num). */
export function vringState(index: number, num: number): Uint8Array {
  const b = new Uint8Array(8);
  const v = new DataView(b.buffer);
  v.setUint32(0, index, true);
  v.setUint32(4, num, true);
  return b;
}

/** A `vhost_vring_addr` payload; addresses are frontend virtual addresses. */
export function vringAddr(
  index: number,
  a: { desc: number; used: number; avail: number; flags?: number; log?: number },
): Uint8Array {
  const b = new Uint8Array(40);
  const v = new DataView(b.buffer);
  v.setUint32(0, index, true);
  v.setUint32(4, a.flags ?? 0, true);
  v.setBigUint64(8, BigInt(a.desc), true);
  v.setBigUint64(16, BigInt(a.used), true);
  v.setBigUint64(24, BigInt(a.avail), true);
  v.setBigUint64(32, BigInt(a.log ?? 0), true);
  return b;
}

/** One memory region as the wire carries it. */
export interface WireRegion {
  /** Guest-physical address. */
  gpa: number | bigint;
  /** Bytes. */
  size: number | bigint;
  /** Frontend virtual address. */
  uva: number | bigint;
  /** Offset into the fd where the region starts. */
  mmapOffset: number | bigint;
}

function putRegion(v: DataView, at: number, r: WireRegion): void {
  v.setBigUint64(at, BigInt(r.gpa), true);
  v.setBigUint64(at + 8, BigInt(r.size), true);
  v.setBigUint64(at + 16, BigInt(r.uva), true);
  v.setBigUint64(at + 24, BigInt(r.mmapOffset), true);
}

/** A `SET_MEM_TABLE` payload (one fd per region goes with it). */
export function memTable(regions: readonly WireRegion[]): Uint8Array {
  const b = new Uint8Array(8 + 32 * regions.length);
  const v = new DataView(b.buffer);
  v.setUint32(0, regions.length, true);
  regions.forEach((r, i) => putRegion(v, 8 + 32 * i, r));
  return b;
}

/** An `ADD_MEM_REG` / `REM_MEM_REG` payload: 8 bytes of padding, then the region. */
export function singleRegion(r: WireRegion): Uint8Array {
  const b = new Uint8Array(40);
  putRegion(new DataView(b.buffer), 8, r);
  return b;
}

/** Read a `u64` from a payload (0n when it is shorter than 8 bytes). */
export function readU64(payload: Uint8Array, at = 0): bigint {
  if (payload.length < at + 8) return 0n;
  return new DataView(payload.buffer, payload.byteOffset, payload.byteLength).getBigUint64(
    at,
    true,
  );
}

// ---- fds of every kind ----------------------------------------------------

let pipeLib:
  | Deno.DynamicLibrary<{ pipe2: { parameters: ["buffer", "i32"]; result: "i32" } }>
  | null = null;

/** A pipe (close-on-exec): `[readEnd, writeEnd]`. */
export function pipe(): [number, number] {
  pipeLib ??= Deno.dlopen("libc.so.6", { pipe2: { parameters: ["buffer", "i32"], result: "i32" } });
  const fds = new Int32Array(2);
  if (pipeLib.symbols.pipe2(fds, O_CLOEXEC) !== 0) throw new Error("pipe2 failed");
  return [fds[0], fds[1]];
}

/** An `O_PATH` fd for `path`: it cannot be read, written, polled or made non-blocking. */
export function openPath(path = "/"): number {
  return open(path, O_PATH | O_CLOEXEC);
}

/** `/dev/zero` opened for reading: always readable, never an eventfd. */
export function openDevZero(): number {
  return open("/dev/zero", O_CLOEXEC);
}

/** An eventfd whose counter is `EVENTFD_MAX`: any further write blocks (or fails with EAGAIN). */
export function saturatedEventfd(options: { nonBlocking?: boolean } = {}): number {
  const fd = eventfd(0, options);
  const b = u64(EVENTFD_MAX);
  if (write(fd, b) !== 8) throw new Error("eventfd write of its maximum was short");
  return fd;
}

/** Read an eventfd's counter if it is non-zero; null when it is zero (never blocks). */
export async function takeEventfd(fd: number): Promise<number | null> {
  const [rev] = await pollAsync([{ fd, events: POLLIN }], 0);
  if ((rev & POLLIN) === 0) return null;
  return eventfdRead(fd);
}

/** Whether `fd` becomes readable within `ms`. */
export async function readableWithin(fd: number, ms: number): Promise<boolean> {
  const [rev] = await pollAsync([{ fd, events: POLLIN }], ms);
  return (rev & POLLIN) !== 0;
}

// ---- the raw connection ---------------------------------------------------

/** A message the backend sent. */
export interface WireMessage {
  /** Request code. */
  request: number;
  /** Header flags. */
  flags: number;
  /** Payload. */
  payload: Uint8Array;
}

/** A request the backend refused with a non-zero ack. */
export class RefusedError extends Error {
  /**
   * Make the error.
   *
   * @param request The request's name.
   * @param ack The ack value.
   */
  constructor(readonly request: string, readonly ack: bigint) {
    super(`${request} refused (ack ${ack})`);
    this.name = "RefusedError";
  }
}

/** Name of a request code. */
export function requestName(code: number): string {
  for (const [k, v] of Object.entries(FrontendRequest)) if (v === code) return k;
  return `request ${code}`;
}

/**
 * One raw frontend connection (a non-blocking socket). Requests are sent as
 * given; {@linkcode RawFrontend.request} asks for an ack when `REPLY_ACK`
 * was negotiated through {@linkcode RawFrontend.handshake}.
 */
export class RawFrontend {
  /** The socket. */
  readonly fd: number;
  /** Whether `REPLY_ACK` is in force (set by {@linkcode RawFrontend.handshake}). */
  replyAck = false;
  /** Virtio features the backend offered. */
  offered = 0n;
  /** Protocol features the backend offered. */
  protocolOffered = 0n;
  #buf = new Uint8Array(1 << 16);
  #len = 0;
  #eof = false;
  #closed = false;

  private constructor(fd: number) {
    this.fd = fd;
  }

  /**
   * Connect to `path`, retrying while the socket is missing or its backlog is full.
   *
   * @throws Error when it cannot connect within `timeoutMs`.
   */
  static async connect(path: string, timeoutMs = 3000): Promise<RawFrontend> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const fd = unixSocket({ nonBlocking: true });
      try {
        connectUnix(fd, path);
        return new RawFrontend(fd);
      } catch (e) {
        close(fd);
        const retry = e instanceof SysError &&
          (e.code === "ENOENT" || e.code === "ECONNREFUSED" || e.code === "EAGAIN");
        if (!retry || Date.now() > deadline) {
          throw new Error(`cannot connect to ${path}: ${(e as Error).message}`);
        }
        await new Promise((r) => setTimeout(r, 5));
      }
    }
  }

  /** Whether {@linkcode RawFrontend.close} ran. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Send one message, waiting for socket space when needed. */
  async send(
    request: number,
    payload: Uint8Array = new Uint8Array(0),
    fds: readonly number[] = [],
    flags = VERSION,
  ): Promise<void> {
    const bytes = encode(request, flags, payload);
    let off = 0;
    while (off < bytes.length) {
      try {
        off += sendMsg(this.fd, bytes.subarray(off), off === 0 ? fds : []);
      } catch (e) {
        if (!(e instanceof SysError) || e.code !== "EAGAIN") throw e;
        const [rev] = await pollAsync([{ fd: this.fd, events: POLLOUT }], 5000);
        if ((rev & POLLOUT) === 0) throw new Error(`${requestName(request)}: socket stays full`);
      }
    }
  }

  /**
   * Send one message if the socket takes all of it now; false when it is
   * full (nothing was sent). For flooding without ever blocking.
   */
  trySend(request: number, payload: Uint8Array = new Uint8Array(0), flags = VERSION): boolean {
    const bytes = encode(request, flags, payload);
    try {
      const n = sendMsg(this.fd, bytes);
      if (n !== bytes.length) throw new Error(`short send of ${n}/${bytes.length} bytes`);
      return true;
    } catch (e) {
      if (e instanceof SysError && e.code === "EAGAIN") return false;
      throw e;
    }
  }

  /**
   * The next message from the backend, or null when it closed the
   * connection. Fds that come with it are closed.
   *
   * @throws Error when nothing arrives within `timeoutMs`.
   */
  async read(timeoutMs = 5000): Promise<WireMessage | null> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (this.#len >= 12) {
        const v = new DataView(this.#buf.buffer);
        const size = v.getUint32(8, true);
        if (this.#len >= 12 + size) {
          const m = {
            request: v.getUint32(0, true),
            flags: v.getUint32(4, true),
            payload: this.#buf.slice(12, 12 + size),
          };
          this.#buf.copyWithin(0, 12 + size, this.#len);
          this.#len -= 12 + size;
          return m;
        }
      }
      if (this.#eof || this.#closed) return null;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no message from the backend within ${timeoutMs} ms`);
      const [rev] = await pollAsync([{ fd: this.fd, events: POLLIN }], left);
      if (rev === 0) continue;
      if (this.#len === this.#buf.length) {
        const bigger = new Uint8Array(this.#buf.length * 2);
        bigger.set(this.#buf);
        this.#buf = bigger;
      }
      try {
        const r = recvMsg(this.fd, this.#buf.subarray(this.#len), 8);
        for (const fd of r.fds) close(fd);
        if (r.bytes === 0) this.#eof = true;
        this.#len += r.bytes;
      } catch (e) {
        if (e instanceof SysError && e.code === "EAGAIN") continue;
        if (e instanceof SysError && e.code === "ECONNRESET") {
          this.#eof = true;
          continue;
        }
        throw e;
      }
    }
  }

  /** Read the reply to `request`; throws when the backend closed or answered something else. */
  async reply(request: number, timeoutMs = 5000): Promise<Uint8Array> {
    const m = await this.read(timeoutMs);
    const name = requestName(request);
    if (m === null) throw new Error(`${name}: the backend closed the connection`);
    if (m.request !== request || (m.flags & REPLY) === 0) {
      throw new Error(
        `${name}: got ${requestName(m.request)} flags 0x${
          m.flags.toString(16)
        } instead of its reply`,
      );
    }
    return m.payload;
  }

  /** Send `request` with NEED_REPLY and return the ack value (0n: accepted). */
  async ack(
    request: number,
    payload: Uint8Array = new Uint8Array(0),
    fds: readonly number[] = [],
    timeoutMs = 5000,
  ): Promise<bigint> {
    await this.send(request, payload, fds, VERSION | NEED_REPLY);
    const r = await this.reply(request, timeoutMs);
    if (r.length !== 8) throw new Error(`${requestName(request)}: ack of ${r.length} bytes`);
    return readU64(r);
  }

  /**
   * Send a request that has no reply of its own: with `REPLY_ACK` in force
   * it waits for the ack and throws {@linkcode RefusedError} on a non-zero one.
   */
  async request(
    request: number,
    payload: Uint8Array = new Uint8Array(0),
    fds: readonly number[] = [],
  ): Promise<void> {
    if (!this.replyAck) return await this.send(request, payload, fds);
    const a = await this.ack(request, payload, fds);
    if (a !== 0n) throw new RefusedError(requestName(request), a);
  }

  /** Send a request that has a reply (GET_*) and return the reply payload. */
  async query(
    request: number,
    payload: Uint8Array = new Uint8Array(0),
    timeoutMs = 5000,
  ): Promise<Uint8Array> {
    await this.send(request, payload);
    return await this.reply(request, timeoutMs);
  }

  /** A GET_* request whose reply is a `u64`. */
  async queryU64(request: number, timeoutMs = 5000): Promise<bigint> {
    return readU64(await this.query(request, new Uint8Array(0), timeoutMs));
  }

  /**
   * SET_OWNER, GET_FEATURES, and with `protocol` given GET/SET_PROTOCOL_FEATURES
   * (the offer intersected with `protocol`); then SET_FEATURES with
   * `features` when given (add {@linkcode PROTOCOL_FEATURES_BIT} yourself to
   * keep protocol features). Returns the protocol features in force.
   */
  async handshake(
    options: { protocol?: bigint; features?: bigint } = {},
  ): Promise<bigint> {
    await this.send(FrontendRequest.SET_OWNER);
    this.offered = await this.queryU64(FrontendRequest.GET_FEATURES);
    let inForce = 0n;
    if (options.protocol !== undefined && (this.offered & PROTOCOL_FEATURES_BIT) !== 0n) {
      this.protocolOffered = await this.queryU64(FrontendRequest.GET_PROTOCOL_FEATURES);
      inForce = this.protocolOffered & options.protocol;
      await this.send(FrontendRequest.SET_PROTOCOL_FEATURES, u64(inForce));
      this.replyAck = (inForce & protocolBits(ProtocolFeatureBit.REPLY_ACK)) !== 0n;
    }
    if (options.features !== undefined) {
      await this.request(FrontendRequest.SET_FEATURES, u64(options.features & this.offered));
    }
    return inForce;
  }

  /** A round trip (GET_FEATURES): every message sent before it has been handled. */
  async barrier(timeoutMs = 5000): Promise<void> {
    await this.query(FrontendRequest.GET_FEATURES, new Uint8Array(0), timeoutMs);
  }

  /** Read and drop messages until the backend closes the connection; false after `timeoutMs`. */
  async closedByPeer(timeoutMs = 5000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    try {
      for (;;) {
        const m = await this.read(Math.max(1, deadline - Date.now()));
        if (m === null) return true;
      }
    } catch {
      return false;
    }
  }

  /** Whether the backend hangs up within `timeoutMs`, without reading anything. */
  async hungUp(timeoutMs: number): Promise<boolean> {
    const [rev] = await pollAsync([{ fd: this.fd, events: POLLRDHUP }], timeoutMs);
    return (rev & POLLHUP) !== 0;
  }

  /** Close the connection. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    close(this.fd);
  }
}

function encode(request: number, flags: number, payload: Uint8Array): Uint8Array {
  const b = new Uint8Array(12 + payload.length);
  const v = new DataView(b.buffer);
  v.setUint32(0, request, true);
  v.setUint32(4, flags, true);
  v.setUint32(8, payload.length, true);
  b.set(payload, 12);
  return b;
}

// ---- guest memory and rings -----------------------------------------------

/** Guest memory the attacker owns: a memfd mapped here, shared with the backend. */
export class GuestRam {
  /** The memfd. */
  readonly fd: number;
  /** Guest-physical address of the first byte. */
  readonly gpa: number;
  /** Bytes. */
  readonly size: number;
  /** Where it is mapped here (the "uva" the backend is told). */
  readonly uva: number;
  /** The memory as the SDK's split-ring driver reads and writes it. */
  readonly memory: GuestMemory;
  #mapping: Mapping;

  /**
   * Make `size` bytes of guest memory at `gpa`.
   *
   * @param sealable Create the memfd with `MFD_ALLOW_SEALING` (default true).
   */
  constructor(size: number, options: { gpa?: number; sealable?: boolean } = {}) {
    this.fd = memfdCreate("hostile-guest", { allowSealing: options.sealable ?? true });
    ftruncate(this.fd, size);
    this.#mapping = mmap(this.fd, size);
    this.gpa = options.gpa ?? 0;
    this.size = size;
    this.uva = this.#mapping.address;
    this.memory = GuestMemory.fromBuffers([{
      gpa: this.gpa,
      uva: this.uva,
      bytes: new Uint8Array(this.#mapping.buffer),
    }]);
  }

  /** The region for SET_MEM_TABLE. */
  region(): WireRegion {
    return { gpa: this.gpa, size: this.size, uva: this.uva, mmapOffset: 0 };
  }

  /** This frontend's address of `gpa`. */
  uvaOf(gpa: number): number {
    return this.uva + (gpa - this.gpa);
  }

  /** `len` bytes at `gpa`. */
  bytes(gpa: number, len: number): Uint8Array {
    return this.memory.bytes(gpa, len);
  }

  /** Unmap and close. */
  close(): void {
    this.memory.close();
    this.#mapping.unmap();
    close(this.fd);
  }
}

/** Options of {@linkcode NetRings}. */
export interface NetRingsOptions {
  /** Ring size (default 64). */
  num?: number;
  /** Bytes of each receive and transmit buffer (default 2048). */
  bufferSize?: number;
  /** Guest memory in MiB (default 4). */
  memoryMiB?: number;
}

/**
 * One virtio-net queue pair laid out by hand in attacker-owned memory:
 * ring 0 receives, ring 1 transmits. The attacker owns the kick and call
 * eventfds (non-blocking) and may replace any of them.
 */
export class NetRings {
  /** The guest memory. */
  readonly ram: GuestRam;
  /** Ring size. */
  readonly num: number;
  /** Buffer size. */
  readonly bufferSize: number;
  /** Layouts of ring 0 (rx) and ring 1 (tx). */
  readonly layouts: ReturnType<typeof SplitQueueDriver.layout>[];
  /** Kick eventfds of rings 0 and 1. */
  readonly kicks: number[];
  /** Call eventfds of rings 0 and 1. */
  readonly calls: number[];
  /** The receive ring's driver side. */
  rx!: SplitQueueDriver;
  /** The transmit ring's driver side. */
  tx!: SplitQueueDriver;
  /** Guest-physical address of the receive buffers. */
  readonly rxBufGpa: number;
  /** Guest-physical address of the transmit buffers. */
  readonly txBufGpa: number;
  #txFree: number[] = [];
  #rxFree: number[] = [];
  #extraFds: number[] = [];

  /** Lay out the pair (rings initialised; nothing sent yet). */
  constructor(options: NetRingsOptions = {}) {
    this.num = options.num ?? 64;
    this.bufferSize = options.bufferSize ?? 2048;
    this.ram = new GuestRam((options.memoryMiB ?? 4) << 20);
    const ringBytes = SplitQueueDriver.layout(this.num, 0).bytes;
    const alignUp = (n: number) => Math.ceil(n / PAGE) * PAGE;
    let next = PAGE;
    this.layouts = [0, 1].map(() => {
      const l = SplitQueueDriver.layout(this.num, next);
      next = alignUp(next + ringBytes);
      return l;
    });
    this.rxBufGpa = next;
    this.txBufGpa = alignUp(next + this.num * this.bufferSize);
    if (this.txBufGpa + this.num * this.bufferSize > this.ram.size) {
      throw new RangeError("rings and buffers do not fit the guest memory");
    }
    this.kicks = [eventfd(0, { nonBlocking: true }), eventfd(0, { nonBlocking: true })];
    this.calls = [eventfd(0, { nonBlocking: true }), eventfd(0, { nonBlocking: true })];
    this.resetDrivers();
  }

  /** Fresh driver-side rings (indexes 0, tables cleared). */
  resetDrivers(options: { reservedRx?: number } = {}): void {
    this.rx = new SplitQueueDriver(this.ram.memory, this.layouts[0], {
      eventIdx: false,
      reserved: options.reservedRx ?? 0,
    });
    this.tx = new SplitQueueDriver(this.ram.memory, this.layouts[1], { eventIdx: false });
    this.#txFree = Array.from({ length: this.num }, (_, i) => this.num - 1 - i);
    this.#rxFree = Array.from({ length: this.num }, (_, i) => this.num - 1 - i);
  }

  /** Keep `fd` open until {@linkcode NetRings.close}. */
  own(fd: number): number {
    this.#extraFds.push(fd);
    return fd;
  }

  /** SET_MEM_TABLE with this pair's memory. */
  async setMemTable(f: RawFrontend): Promise<void> {
    await f.request(FrontendRequest.SET_MEM_TABLE, memTable([this.ram.region()]), [this.ram.fd]);
  }

  /** SET_VRING_NUM, BASE, ADDR and KICK of ring `q` (and CALL unless `call` is false). */
  async setupRing(f: RawFrontend, q: number, base = 0, call = true): Promise<void> {
    const l = this.layouts[q];
    await f.request(FrontendRequest.SET_VRING_NUM, vringState(q, this.num));
    await f.request(FrontendRequest.SET_VRING_BASE, vringState(q, base));
    await f.request(
      FrontendRequest.SET_VRING_ADDR,
      vringAddr(q, {
        desc: this.ram.uvaOf(l.descAddr),
        used: this.ram.uvaOf(l.usedAddr),
        avail: this.ram.uvaOf(l.availAddr),
      }),
    );
    if (call) await f.request(FrontendRequest.SET_VRING_CALL, u64(q), [this.calls[q]]);
    await f.request(FrontendRequest.SET_VRING_KICK, u64(q), [this.kicks[q]]);
  }

  /**
   * Bring the pair up: memory table, both rings, receive buffers posted,
   * rings enabled (with protocol features), `DRIVER_OK` (with `STATUS`),
   * the receive ring kicked. Features must have been set.
   */
  async start(f: RawFrontend, options: { enable: boolean; status: boolean }): Promise<void> {
    const S = VirtioStatus;
    if (options.status) {
      await f.request(FrontendRequest.SET_STATUS, u64(S.ACKNOWLEDGE | S.DRIVER | S.FEATURES_OK));
    }
    await this.setMemTable(f);
    await this.setupRing(f, 0);
    await this.setupRing(f, 1);
    this.postRx(this.num);
    if (options.enable) {
      await f.request(FrontendRequest.SET_VRING_ENABLE, vringState(0, 1));
      await f.request(FrontendRequest.SET_VRING_ENABLE, vringState(1, 1));
    }
    if (options.status) {
      await f.request(
        FrontendRequest.SET_STATUS,
        u64(S.ACKNOWLEDGE | S.DRIVER | S.FEATURES_OK | S.DRIVER_OK),
      );
    }
    eventfdWrite(this.kicks[0], 1);
  }

  /** Post up to `count` receive buffers (one descriptor each) and publish; returns how many. */
  postRx(count: number): number {
    let n = 0;
    while (n < count && this.#rxFree.length > 0) {
      const token = this.#rxFree.pop()!;
      if (
        !this.rx.addBuffer(this.rxBufGpa + token * this.bufferSize, this.bufferSize, true, token)
      ) {
        this.#rxFree.push(token);
        break;
      }
      n++;
    }
    this.rx.publish();
    return n;
  }

  /** Kick ring `q`. */
  kick(q: number): void {
    eventfdWrite(this.kicks[q], 1);
  }

  /** Queue `frames` (each behind a 12-byte zero header) on the transmit ring and kick it. */
  send(frames: readonly Uint8Array[]): number {
    while (this.tx.nextUsed()) this.#txFree.push(this.tx.usedToken);
    let sent = 0;
    for (const frame of frames) {
      const slot = this.#txFree.pop();
      if (slot === undefined) break;
      const gpa = this.txBufGpa + slot * this.bufferSize;
      const buf = this.ram.bytes(gpa, 12 + frame.length);
      buf.fill(0, 0, 12);
      buf.set(frame, 12);
      this.tx.addBuffer(gpa, 12 + frame.length, false, slot);
      sent++;
    }
    this.tx.publish();
    eventfdWrite(this.kicks[1], 1);
    return sent;
  }

  /** Take the receive ring's used buffers (reposting them); returns how many frames came. */
  receive(): number {
    let n = 0;
    while (this.rx.nextUsed()) {
      this.#rxFree.push(this.rx.usedToken);
      n++;
    }
    if (n > 0 && this.postRx(n) > 0) eventfdWrite(this.kicks[0], 1);
    return n;
  }

  /** Receive until `count` frames came or `timeoutMs` passed; returns how many came. */
  async waitReceive(count: number, timeoutMs = 2000): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    let got = 0;
    while (got < count && Date.now() < deadline) {
      got += this.receive();
      if (got < count) await new Promise((r) => setTimeout(r, 2));
    }
    return got;
  }

  /** Close the eventfds and the memory (the connection is the caller's). */
  close(): void {
    for (const fd of [...this.kicks, ...this.calls, ...this.#extraFds]) close(fd);
    this.#extraFds = [];
    this.ram.close();
  }
}

/** `count` Ethernet frames of `size` bytes with distinct contents. */
export function frames(count: number, size = 64): Uint8Array[] {
  return Array.from({ length: count }, (_, i) => {
    const f = new Uint8Array(size);
    f.set([0x52, 0x54, 0, 0x12, 0x34, 0x56, 0x52, 0x54, 0, 0xab, 0xcd, 0xef, 0x08, 0x00]);
    for (let k = 14; k < size; k++) f[k] = (k + i) & 0xff;
    return f;
  });
}

// ---- the backend process as seen from outside -------------------------------

/** What `/proc/PID/status` says about memory and threads. */
export interface ProcStatus {
  /** Resident set size in bytes (`VmRSS`). */
  rss: number;
  /** Address space size in bytes (`VmSize`). */
  vmSize: number;
  /** Threads (`Threads`). */
  threads: number;
  /** Scheduler state letter (`State`): R, S, D, Z... */
  state: string;
}

/**
 * Memory, threads and state of process `pid`.
 *
 * @throws Deno.errors.NotFound when the process is gone.
 */
export function procStatus(pid: number): ProcStatus {
  const text = Deno.readTextFileSync(`/proc/${pid}/status`);
  const field = (name: string) => new RegExp(`^${name}:\\s*(\\S+)`, "m").exec(text)?.[1] ?? "0";
  return {
    rss: Number(field("VmRSS")) * 1024,
    vmSize: Number(field("VmSize")) * 1024,
    threads: Number(field("Threads")),
    state: field("State"),
  };
}

/** Open fds of process `pid` (entries of `/proc/PID/fd`). */
export function fdCount(pid: number): number {
  let n = 0;
  for (const _ of Deno.readDirSync(`/proc/${pid}/fd`)) n++;
  return n;
}

/**
 * The kinds of file process `pid` has open, counted: `socket`, `pipe`,
 * `anon_inode:[eventfd]`, `/memfd:name (deleted)`, paths. Inode numbers are
 * dropped so two snapshots compare.
 */
export function fdKinds(pid: number): Map<string, number> {
  const kinds = new Map<string, number>();
  for (const e of Deno.readDirSync(`/proc/${pid}/fd`)) {
    let target: string;
    try {
      target = Deno.readLinkSync(`/proc/${pid}/fd/${e.name}`);
    } catch {
      continue;
    }
    const kind = target.replace(/^(socket|pipe):\[\d+\]$/, "$1");
    kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
  }
  return kinds;
}

/** What changed between two {@linkcode fdKinds} snapshots ("+2 socket, -1 pipe"), or "". */
export function fdKindsDiff(before: Map<string, number>, after: Map<string, number>): string {
  const out: string[] = [];
  for (const k of new Set([...before.keys(), ...after.keys()])) {
    const d = (after.get(k) ?? 0) - (before.get(k) ?? 0);
    if (d !== 0) out.push(`${d > 0 ? "+" : ""}${d} ${k}`);
  }
  return out.join(", ");
}

/** Whether process `pid` exists and is not a zombie. */
export function isAlive(pid: number): boolean {
  try {
    const s = procStatus(pid).state;
    return s !== "Z" && s !== "X";
  } catch {
    return false;
  }
}

/**
 * The fd count of `pid` once it reaches `target`, or once it has not changed
 * for half a second (sessions detach and Workers end asynchronously), or
 * after `timeoutMs`.
 */
export function settledFdCount(pid: number, target = -1, timeoutMs = 5000): Promise<number> {
  return settleFds({ pid, target, timeoutMs, stableReads: 10 });
}

/**
 * GET_FEATURES round trips on one open connection, every `intervalMs`, until
 * {@linkcode Prober.stop}: how long the backend's control plane makes a
 * well-behaved frontend wait while another is attacking.
 */
export class Prober {
  /** Round trip of every probe, in ms. */
  readonly latencies: number[] = [];
  /** Why probing ended early, if it did. */
  error: string | null = null;
  #running = true;
  #done: Promise<void>;

  private constructor(f: RawFrontend, intervalMs: number, timeoutMs: number) {
    this.#done = (async () => {
      try {
        while (this.#running) {
          const t0 = performance.now();
          await f.query(FrontendRequest.GET_FEATURES, new Uint8Array(0), timeoutMs);
          this.latencies.push(performance.now() - t0);
          await new Promise((r) => setTimeout(r, intervalMs));
        }
      } catch (e) {
        this.error = (e as Error).message;
      } finally {
        f.close();
      }
    })();
  }

  /** Connect to `path` and start probing. */
  static async start(path: string, intervalMs = 20, timeoutMs = 10000): Promise<Prober> {
    return new Prober(await RawFrontend.connect(path), intervalMs, timeoutMs);
  }

  /** The longest round trip so far (0 before the first). */
  get worst(): number {
    return this.latencies.length === 0 ? 0 : Math.max(...this.latencies);
  }

  /** Stop probing and close the connection. */
  async stop(): Promise<void> {
    this.#running = false;
    await this.#done;
  }
}

/**
 * Connect to `path` afresh, send GET_FEATURES and return the round trip in
 * ms.
 *
 * @throws Error saying why when there is no answer within `timeoutMs`: the
 *   connection was refused or closed, or the reply was late.
 */
export async function getFeaturesLatency(path: string, timeoutMs = 1000): Promise<number> {
  const t0 = performance.now();
  const f = await RawFrontend.connect(path, timeoutMs);
  try {
    await f.send(FrontendRequest.GET_FEATURES);
    let m: WireMessage | null;
    try {
      m = await f.read(Math.max(1, timeoutMs - (performance.now() - t0)));
    } catch {
      throw new Error(`GET_FEATURES on ${path}: no answer within ${timeoutMs} ms`);
    }
    if (m === null) {
      throw new Error(`GET_FEATURES on ${path}: the backend closed the new connection (refused)`);
    }
    if (m.request !== FrontendRequest.GET_FEATURES || m.payload.length !== 8) {
      throw new Error(`GET_FEATURES on ${path}: answered with ${requestName(m.request)}`);
    }
    return performance.now() - t0;
  } finally {
    f.close();
  }
}

/** One JSON event line of `multi_serve.ts`. */
export interface BackendEvent {
  /** Device name. */
  device: string;
  /** Event type. */
  type: string;
  /** Event text. */
  message: string;
}

/** One device in a report of `multi_serve.ts`. */
export interface DeviceReport {
  /** Packets counted on all rings. */
  packets: number;
  /** Longest flat run of the counters while traffic flowed, in ms. */
  maxStallMs: number;
  /** Longest gap between two samples, in ms. */
  maxSampleGapMs: number;
  /** The driver's counters per ring. */
  queues: { queue: number; packets: number; bytes: number; drops: number; errors: number }[];
}

const MULTI_SERVE = new URL("./multi_serve.ts", import.meta.url).pathname;

/**
 * `multi_serve.ts` running as a child process: its events, reports and
 * exit, and the probes of {@linkcode procStatus} and {@linkcode fdCount}.
 * Always {@linkcode BackendProcess.stop} it (in `finally`).
 */
export class BackendProcess {
  /** Every event line so far. */
  readonly events: BackendEvent[] = [];
  /** The arguments it was started with. */
  readonly args: readonly string[];
  #child: Deno.ChildProcess;
  #stdin: WritableStreamDefaultWriter<Uint8Array>;
  #reports: Record<string, DeviceReport>[] = [];
  #stderr = "";
  #status: Deno.CommandStatus | null = null;
  #exited: Promise<Deno.CommandStatus>;
  #readers: Promise<void>;
  #ready: Promise<number>;

  private constructor(args: string[]) {
    this.args = args;
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", MULTI_SERVE, ...args],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#child = child;
    this.#stdin = child.stdin.getWriter();
    let ready!: (pid: number) => void;
    this.#ready = new Promise((r) => ready = r);
    const out = (async () => {
      let buf = "";
      for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
        buf += chunk;
        let at;
        while ((at = buf.indexOf("\n")) >= 0) {
          const l = buf.slice(0, at);
          buf = buf.slice(at + 1);
          let j: Record<string, unknown>;
          try {
            j = JSON.parse(l);
          } catch {
            this.#stderr += `(stdout) ${l}\n`;
            continue;
          }
          if (j.ready) ready(j.pid as number);
          else if (j.report) this.#reports.push(j.report as Record<string, DeviceReport>);
          else this.events.push(j as unknown as BackendEvent);
        }
      }
    })();
    const err = (async () => {
      for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) {
        this.#stderr = (this.#stderr + chunk).slice(-8000);
      }
    })();
    this.#readers = Promise.all([out, err]).then(() => {});
    this.#exited = child.status.then((s) => this.#status = s);
  }

  /**
   * Start `multi_serve.ts` with `args` and wait until every socket listens.
   *
   * @throws Error with its stderr when it exits or is not ready in `timeoutMs`.
   */
  static async start(args: string[], timeoutMs = 30000): Promise<BackendProcess> {
    const b = new BackendProcess(args);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const outcome = await Promise.race([
      b.#ready.then(() => "ready"),
      b.#exited.then(() => "exited"),
      new Promise<string>((r) => timer = setTimeout(() => r("timeout"), timeoutMs)),
    ]);
    clearTimeout(timer);
    if (outcome !== "ready") {
      await b.stop();
      throw new Error(`multi_serve ${outcome} before it was ready:\n${b.stderrTail()}`);
    }
    return b;
  }

  /** The process ID. */
  get pid(): number {
    return this.#child.pid;
  }

  /** Whether it still runs. */
  alive(): boolean {
    return this.#status === null && isAlive(this.pid);
  }

  /** How it ended ("killed by SIGSEGV", "exited with code 1"), or "running". */
  exitDescription(): string {
    const s = this.#status;
    if (s === null) return isAlive(this.pid) ? "running" : "gone (not yet reaped)";
    return s.signal ? `killed by ${s.signal}` : `exited with code ${s.code}`;
  }

  /** The last lines it wrote on stderr. */
  stderrTail(): string {
    return this.#stderr.slice(-3000);
  }

  /** Events of `device` (of `type` when given). */
  eventsOf(device: string, type?: string): BackendEvent[] {
    return this.events.filter((e) =>
      e.device === device && (type === undefined || e.type === type)
    );
  }

  /** Frontends attached to `device` now (connected minus disconnected events). */
  attached(device: string): number {
    return this.eventsOf(device, "connected").length - this.eventsOf(device, "disconnected").length;
  }

  /** Wait until no frontend is attached to `device`; false after `timeoutMs`. */
  async waitDetached(device: string, timeoutMs = 5000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (this.attached(device) > 0) {
      if (Date.now() > deadline || !this.alive()) return false;
      await new Promise((r) => setTimeout(r, 2));
    }
    return true;
  }

  /** Wait for an event of `device` matching; returns it, or null after `timeoutMs`. */
  async waitEvent(
    device: string,
    pattern: RegExp,
    timeoutMs = 3000,
    from = 0,
  ): Promise<BackendEvent | null> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const e = this.events.slice(from).find((e) =>
        e.device === device && pattern.test(`${e.type}: ${e.message}`)
      );
      if (e) return e;
      if (Date.now() > deadline || !this.alive()) return null;
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  /**
   * Ask for a report (a `report` line on stdin) and return it.
   *
   * @throws Error when none comes within `timeoutMs` (no `--sample-ms`, or dead).
   */
  async report(timeoutMs = 3000): Promise<Record<string, DeviceReport>> {
    const have = this.#reports.length;
    await this.#stdin.write(new TextEncoder().encode("report\n"));
    const deadline = Date.now() + timeoutMs;
    while (this.#reports.length === have) {
      if (Date.now() > deadline) throw new Error(`no report within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 10));
    }
    return this.#reports[have];
  }

  /** Forget the stalls sampled so far (a `reset` line on stdin). */
  async resetSamples(): Promise<void> {
    await this.#stdin.write(new TextEncoder().encode("reset\n"));
  }

  /** Memory and threads now. */
  status(): ProcStatus {
    return procStatus(this.pid);
  }

  /** Open fds now. */
  fdCount(): number {
    return fdCount(this.pid);
  }

  /**
   * SIGTERM, then SIGKILL after `graceMs`; waits for the exit and the output.
   * Returns the report printed on the way out, if any. Idempotent.
   */
  async stop(graceMs = 5000): Promise<Record<string, DeviceReport> | null> {
    const have = this.#reports.length;
    const signal = (sig: Deno.Signal) => {
      try {
        if (this.#status === null) this.#child.kill(sig);
      } catch {
        // Already exited.
      }
    };
    signal("SIGTERM");
    const kill = setTimeout(() => signal("SIGKILL"), graceMs);
    try {
      await this.#exited;
    } finally {
      clearTimeout(kill);
    }
    try {
      await this.#stdin.close();
    } catch {
      // The pipe is gone with the process.
    }
    await this.#readers;
    return this.#reports.length > have ? this.#reports[this.#reports.length - 1] : null;
  }
}
