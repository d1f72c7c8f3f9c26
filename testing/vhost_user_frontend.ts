/**
 * The frontend side of vhost-user, in TypeScript: what QEMU or DPDK's
 * virtio_user do to a backend, for testing backends (ours or anyone's)
 * without a VM. It owns the guest memory (a memfd it maps itself, shared
 * with the backend by `SET_MEM_TABLE`), the kick and call eventfds of each
 * ring, and speaks the requests of QEMU's `docs/interop/vhost-user.rst`:
 * 12-byte little-endian header (request, flags, size), then the payload, with
 * file descriptors as `SCM_RIGHTS` ancillary data.
 *
 * With `REPLY_ACK` negotiated, every request that has no reply of its own
 * asks for an ack, and a non-zero ack fails the call. Every error names the
 * request it came from.
 *
 * Behind a vIOMMU (`iommu` option, `VIRTIO_F_ACCESS_PLATFORM`), it does what
 * QEMU does for a device with `iommu_platform=on`: it asks for `BACKEND_REQ`
 * and `REPLY_ACK`, opens the backend channel (`SET_BACKEND_REQ_FD`) and
 * reads it without blocking the event loop, programs ring addresses as
 * IOVAs, and answers the backend's IOTLB misses from a page table the test
 * controls ({@linkcode FrontendIommu}): an `IOTLB_MSG` update for a mapped
 * page, nothing for an unmapped one; unmapping a page sends an invalidation.
 *
 * @example
 * ```ts
 * import { VhostUserFrontend } from "@vhost-mdev/testing";
 *
 * const fe = await VhostUserFrontend.connect("/tmp/vhost.sock", { memoryMiB: 16 });
 * try {
 *   await fe.handshake();
 *   console.log(fe.backendFeatures.toString(16), fe.queueNum);
 * } finally {
 *   fe.close();
 * }
 * ```
 *
 * @module
 */

import { GuestMemory, type MemoryRegionSpec } from "@vhost-mdev/sdk";
import {
  accept,
  bindUnix,
  close,
  connectUnix,
  eventfd,
  eventfdRead,
  eventfdWrite,
  ftruncate,
  listen,
  type Mapping,
  memfdCreate,
  mmap,
  pollAsync,
  POLLIN,
  socketPair,
  SysError,
  unixSocket,
} from "@vhost-mdev/sdk/sys";
import { ProtocolError } from "@vhost-mdev/sdk";
import { MessageSocket } from "@vhost-mdev/sdk/vhost-user";
import {
  type ConfigPayload,
  decodeConfig,
  decodeInflightDescription,
  decodeIotlbMessage,
  decodeU64,
  decodeVringState,
  encodeConfig,
  encodeInflightDescription,
  encodeIotlbMessage,
  encodeLogDescription,
  encodeMemTable,
  encodeMessage,
  encodeRarpMac,
  encodeSingleRegion,
  encodeU64,
  encodeVringAddr,
  encodeVringFileIndex,
  encodeVringState,
  type InflightDescription,
  type IotlbMessage,
  type VhostUserMessage,
} from "@vhost-mdev/sdk/vhost-user";
import {
  BackendRequest,
  CONFIG_HEADER_SIZE,
  FrontendRequest,
  frontendRequestName,
  HeaderFlag,
  MAX_CONFIG_SIZE,
  ProtocolFeatureBit,
  U64_SIZE,
  VRING_F_LOG,
  VRING_STATE_SIZE,
} from "@vhost-mdev/sdk/vhost-user";
import { bit, hasBit, VirtioFeatureBit } from "@vhost-mdev/sdk";
import {
  availRingSize,
  descTableSize,
  EVENT_SUPPRESS_SIZE,
  IotlbAccess,
  type IotlbEntry,
  IotlbMessageType,
  packedRingSize,
  usedRingSize,
} from "@vhost-mdev/sdk";

/** Protocol features the frontend asks for unless told otherwise. */
export const DEFAULT_FRONTEND_PROTOCOL_FEATURES: bigint = bit(ProtocolFeatureBit.MQ) |
  bit(ProtocolFeatureBit.REPLY_ACK) | bit(ProtocolFeatureBit.CONFIG) |
  bit(ProtocolFeatureBit.STATUS);

/** Options of {@linkcode VhostUserFrontend.connect} and {@linkcode VhostUserFrontend.listen}. */
export interface VhostUserFrontendOptions {
  /** Guest memory size in MiB (default 64). */
  memoryMiB?: number;
  /** Guest-physical address of the memory's first byte (default 0). */
  memoryGpa?: number;
  /** Protocol features to ask for; the backend's offer is intersected with it. */
  protocolFeatures?: bigint;
  /** How long a reply may take, in ms (default 5000). */
  replyTimeoutMs?: number;
  /**
   * `connect`: how long to retry while the socket is missing or refuses
   * (default 5000 ms). `listen`: how long to wait for the backend (default 10000 ms).
   */
  connectTimeoutMs?: number;
  /**
   * Put the device behind a vIOMMU, as QEMU does with `iommu_platform=on`:
   * ask for `BACKEND_REQ` and `REPLY_ACK` as well, open the backend channel
   * in {@linkcode VhostUserFrontend.handshake}, program ring addresses as
   * IOVAs once `VIRTIO_F_ACCESS_PLATFORM` is acked, and answer IOTLB misses
   * from {@linkcode VhostUserFrontend.iommu}'s page table. `true` is `{}`.
   */
  iommu?: boolean | FrontendIommuOptions;
}

/** Bytes of a page of {@linkcode FrontendIommu}: it maps, answers and invalidates whole pages. */
export const IOMMU_PAGE_SIZE = 4096;

/** Options of the frontend's IOMMU ({@linkcode VhostUserFrontendOptions.iommu}). */
export interface FrontendIommuOptions {
  /**
   * Answer misses from the page table (default true). False models an
   * IOMMU that never answers; {@linkcode FrontendIommu.respond} changes it later.
   */
  respond?: boolean;
  /** Misses kept in {@linkcode FrontendIommu.missLog} (default 4096; the oldest go first). */
  missLogSize?: number;
}

/** One page of a {@linkcode FrontendIommu}'s page table. */
export interface IommuPage {
  /** Guest-physical address of the page. */
  gpa: number;
  /** What the device may do with it: `IotlbAccess` bits (1 read, 2 write, 3 both). */
  perm: number;
}

/** A miss the backend sent, as a {@linkcode FrontendIommu} recorded it. */
export interface IommuMiss {
  /** The address the backend asked for. */
  iova: number;
  /** The access it asked for (`IotlbAccess`). */
  perm: number;
  /** Whether an update answered it (false: the page is unmapped, or answering is off). */
  answered: boolean;
}

/** What a {@linkcode FrontendIommu} counted. */
export interface FrontendIommuCounters {
  /** IOTLB misses received on the backend channel. */
  missesReceived: number;
  /** Misses answered with an `IOTLB_MSG` update. */
  missesAnswered: number;
  /** Misses left unanswered: the page is unmapped, or answering is off. */
  missesUnanswered: number;
  /** `IOTLB_MSG` updates this IOMMU sent (its answers). */
  updatesSent: number;
  /** `IOTLB_MSG` invalidations this IOMMU sent (unmaps, remaps, flushes). */
  invalidationsSent: number;
  /** Of those updates and invalidations, the ones that failed (refused, or the connection ended). */
  failures: number;
}

/** `n` rounded down to a page. */
function pageFloor(n: number): number {
  return Math.floor(n / IOMMU_PAGE_SIZE) * IOMMU_PAGE_SIZE;
}

/**
 * The guest's IOMMU as a frontend models it: a page table from IOVA pages
 * to guest-physical pages with permissions, which the test controls, and
 * the answers to the backend's IOTLB misses. A miss for a mapped page is
 * answered with an `IOTLB_MSG` update of that page (its frontend address,
 * its permissions, even when they lack the access asked for: the backend
 * then refuses the access); a miss for an unmapped page is not answered, as
 * QEMU does not. Unmapping or remapping a page the backend may have cached
 * sends an invalidation and waits for its ack.
 *
 * Made by a {@linkcode VhostUserFrontend} with the `iommu` option; the
 * frontend hands it the misses it reads from the backend channel.
 *
 * @example Map guest memory at an IOVA offset, take a page away again
 * ```ts
 * import { VhostUserFrontend } from "@vhost-mdev/testing";
 *
 * const fe = await VhostUserFrontend.connect("/tmp/vhost.sock", { iommu: true });
 * await fe.handshake();
 * const iommu = fe.iommu!;
 * await iommu.map(0x80_0000_0000, fe.memoryGpa, fe.memorySize);
 * // ... the backend misses, the IOMMU answers ...
 * await iommu.unmap(0x80_0000_0000, 4096); // INVALIDATE; later misses there go unanswered
 * console.log(iommu.counters.missesReceived, iommu.counters.missesAnswered);
 * fe.close();
 * ```
 */
export class FrontendIommu {
  /** What was counted so far. */
  readonly counters: FrontendIommuCounters = {
    missesReceived: 0,
    missesAnswered: 0,
    missesUnanswered: 0,
    updatesSent: 0,
    invalidationsSent: 0,
    failures: 0,
  };
  /** Whether misses for mapped pages are answered (see {@linkcode FrontendIommuOptions.respond}). */
  respond: boolean;
  readonly #frontend: VhostUserFrontend;
  readonly #pages = new Map<number, IommuPage>();
  readonly #log: IommuMiss[] = [];
  readonly #logSize: number;
  readonly #inflight = new Set<Promise<void>>();
  #lastError = "";

  /**
   * An IOMMU with an empty page table for `frontend` (which makes one
   * itself with the `iommu` option).
   *
   * @throws RangeError for a `missLogSize` that is not a non-negative integer.
   */
  constructor(frontend: VhostUserFrontend, options: FrontendIommuOptions = {}) {
    const size = options.missLogSize ?? 4096;
    if (!Number.isInteger(size) || size < 0) {
      throw new RangeError(`missLogSize ${size} is not a non-negative integer`);
    }
    this.#frontend = frontend;
    this.respond = options.respond ?? true;
    this.#logSize = size;
  }

  /** The most recent misses, oldest first (at most `missLogSize`). */
  get missLog(): readonly IommuMiss[] {
    return this.#log;
  }

  /** Pages mapped now. */
  get mappedPages(): number {
    return this.#pages.size;
  }

  /** Why the last update or invalidation failed, or `""`. */
  get lastError(): string {
    return this.#lastError;
  }

  /** The page holding `iova`, or null when it is unmapped. */
  lookup(iova: number): IommuPage | null {
    const page = this.#pages.get(Math.floor(iova / IOMMU_PAGE_SIZE));
    return page ? { ...page } : null;
  }

  /**
   * Map `size` bytes (whole pages) from `iova` to guest-physical `gpa`
   * with `perm` (default read-write). Pages that were mapped otherwise are
   * invalidated first (the backend may have cached them); resolves once
   * those invalidations were acked.
   *
   * @throws RangeError for unaligned addresses, a size that is not
   *   positive, permissions outside 1..3, or a range outside guest memory.
   */
  async map(
    iova: number,
    gpa: number,
    size: number,
    perm: number = IotlbAccess.READ_WRITE,
  ): Promise<void> {
    const fe = this.#frontend;
    if (
      !Number.isSafeInteger(iova) || iova < 0 || iova % IOMMU_PAGE_SIZE !== 0 ||
      !Number.isSafeInteger(gpa) || gpa % IOMMU_PAGE_SIZE !== 0
    ) {
      throw new RangeError(`map: iova ${iova} and gpa ${gpa} must be page-aligned addresses`);
    }
    if (!(size > 0) || !Number.isSafeInteger(iova + size)) {
      throw new RangeError(`map: size ${size} is not a positive byte count`);
    }
    if (!Number.isInteger(perm) || perm < IotlbAccess.READ || perm > IotlbAccess.READ_WRITE) {
      throw new RangeError(`map: permission ${perm} is not read (1), write (2) or both (3)`);
    }
    const pages = Math.ceil(size / IOMMU_PAGE_SIZE);
    fe.frontendAddress(gpa, pages * IOMMU_PAGE_SIZE); // throws outside guest memory
    const first = iova / IOMMU_PAGE_SIZE;
    const changed: number[] = [];
    for (let i = 0; i < pages; i++) {
      const old = this.#pages.get(first + i);
      const now = { gpa: gpa + i * IOMMU_PAGE_SIZE, perm };
      if (old && (old.gpa !== now.gpa || old.perm !== now.perm)) changed.push(first + i);
      this.#pages.set(first + i, now);
    }
    await this.#invalidateRuns(changed);
  }

  /**
   * Unmap `size` bytes (whole pages) from `iova`: later misses there go
   * unanswered. The pages that were mapped are invalidated; resolves once
   * the invalidations were acked.
   */
  async unmap(iova: number, size: number): Promise<void> {
    const first = Math.floor(iova / IOMMU_PAGE_SIZE);
    const end = Math.ceil((iova + size) / IOMMU_PAGE_SIZE);
    const gone: number[] = [];
    for (let p = first; p < end; p++) {
      if (this.#pages.delete(p)) gone.push(p);
    }
    await this.#invalidateRuns(gone);
  }

  /**
   * Invalidate `size` bytes from `iova` without changing the page table
   * (an IOTLB flush): the backend forgets them and misses again.
   */
  invalidate(iova: number, size: number): Promise<void> {
    return this.#send(this.#frontend.iotlbInvalidate(iova, size), "invalidation");
  }

  /**
   * A miss the backend sent (the frontend calls this for every `IOTLB_MSG`
   * miss it reads on the backend channel): counted, logged, and answered
   * with an update of the page when it is mapped and answering is on.
   */
  handleMiss(iova: number, perm: number): void {
    this.counters.missesReceived++;
    const page = this.respond ? this.#pages.get(Math.floor(iova / IOMMU_PAGE_SIZE)) : undefined;
    this.#record({ iova, perm, answered: page !== undefined });
    if (page === undefined) {
      this.counters.missesUnanswered++;
      return;
    }
    this.counters.missesAnswered++;
    const entry = {
      iova: pageFloor(iova),
      size: IOMMU_PAGE_SIZE,
      uaddr: this.#frontend.frontendAddress(page.gpa, IOMMU_PAGE_SIZE),
      perm: page.perm,
    };
    this.#send(this.#frontend.iotlbUpdate(entry), "update").catch(() => {
      // Counted in `failures`, kept in `lastError`.
    });
  }

  /** Resolves once every update and invalidation sent so far was acked (or failed). */
  async settled(): Promise<void> {
    while (this.#inflight.size > 0) {
      await Promise.allSettled([...this.#inflight]);
    }
  }

  #record(miss: IommuMiss): void {
    if (this.#logSize === 0) return;
    if (this.#log.length >= this.#logSize) this.#log.shift();
    this.#log.push(miss);
  }

  /** Invalidate the runs of consecutive page numbers in `pages` (ascending). */
  async #invalidateRuns(pages: number[]): Promise<void> {
    let i = 0;
    const sends: Promise<void>[] = [];
    while (i < pages.length) {
      let j = i + 1;
      while (j < pages.length && pages[j] === pages[j - 1] + 1) j++;
      const iova = pages[i] * IOMMU_PAGE_SIZE, size = (j - i) * IOMMU_PAGE_SIZE;
      sends.push(this.#send(this.#frontend.iotlbInvalidate(iova, size), "invalidation"));
      i = j;
    }
    await Promise.all(sends);
  }

  /** Count and track one message sent; rethrows its failure after counting it. */
  #send(sent: Promise<void>, kind: "update" | "invalidation"): Promise<void> {
    if (kind === "update") this.counters.updatesSent++;
    else this.counters.invalidationsSent++;
    const tracked = sent.catch((e) => {
      this.counters.failures++;
      this.#lastError = (e as Error).message;
      throw e;
    });
    const done = tracked.then(() => {}, () => {}).finally(() => this.#inflight.delete(done));
    this.#inflight.add(done);
    return tracked;
  }
}

/** A ring's layout as guest-physical addresses (what a virtio driver programs). */
export interface FrontendRingLayout {
  /** Number of descriptors (a power of two). */
  num: number;
  /** Descriptor table GPA. */
  descAddr: number;
  /** Available ring GPA. */
  availAddr: number;
  /** Used ring GPA. */
  usedAddr: number;
}

/** A request failed: refused, answered wrongly, timed out, or the connection ended. */
export class VhostUserFrontendError extends Error {
  /** The request's name (`SET_MEM_TABLE`). */
  readonly request: string;
  /**
   * Create the error.
   *
   * @param request The request code it concerns.
   * @param message What went wrong.
   */
  constructor(request: number, message: string) {
    const name = frontendRequestName(request);
    super(`${name}: ${message}`);
    this.name = "VhostUserFrontendError";
    this.request = name;
  }
}

interface RingFds {
  kick: number;
  call: number;
}

const MIB = 1024 * 1024;

/** A reply's payload as a message, for the codec's decoders. */
function replyMessage(request: number, payload: Uint8Array): VhostUserMessage {
  return { request, flags: HeaderFlag.VERSION | HeaderFlag.REPLY, payload, fds: [] };
}

/**
 * One vhost-user connection from the frontend side, with its guest memory.
 * Requests run one at a time in call order. Always {@linkcode close} it.
 */
export class VhostUserFrontend {
  /** The guest memory: one region at `memoryGpa`, whose frontend address is {@linkcode address}. */
  readonly memory: GuestMemory;
  /** Where the memory is mapped in this process (the "uva" the backend is told). */
  readonly address: number;
  /** GPA of the memory's first byte. */
  readonly memoryGpa: number;
  /** Memory size in bytes. */
  readonly memorySize: number;
  /**
   * The guest's IOMMU (page table and miss answers) when made with the
   * `iommu` option, else null.
   */
  readonly iommu: FrontendIommu | null;
  #socket: MessageSocket;
  #memfd: number;
  #mapping: Mapping;
  #replyTimeoutMs: number;
  #wantProtocol: bigint;
  #queue: Promise<unknown> = Promise.resolve();
  #rings = new Map<number, RingFds>();
  #closed = false;
  #backendFeatures = 0n;
  #protocolFeatures = 0n;
  #protocolNegotiated = false;
  #queueNum = 0;
  #acked = 0n;
  #backend: MessageSocket | null = null;
  #backendReaders = new Set<Promise<void>>();
  #backendCounts = new Map<number, number>();
  #backendError = "";

  private constructor(fd: number, options: VhostUserFrontendOptions) {
    const size = (options.memoryMiB ?? 64) * MIB;
    if (!Number.isInteger(size) || size <= 0) {
      close(fd);
      throw new RangeError(`memoryMiB ${options.memoryMiB} is not a positive whole number of MiB`);
    }
    const gpa = options.memoryGpa ?? 0;
    if (
      !Number.isSafeInteger(gpa) || gpa < 0 || gpa % 4096 !== 0 ||
      gpa + size > Number.MAX_SAFE_INTEGER
    ) {
      close(fd);
      throw new RangeError(`memoryGpa ${gpa} is not a page-aligned address below 2^53`);
    }
    let memfd = -1;
    let mapping: Mapping | null = null;
    try {
      this.#socket = new MessageSocket(fd);
    } catch (e) {
      close(fd);
      throw e;
    }
    try {
      memfd = memfdCreate("vhost-user-frontend", { allowSealing: true });
      ftruncate(memfd, size);
      mapping = mmap(memfd, size);
      // Views of our own mapping: shareable with Workers; the frontend unmaps it.
      this.memory = GuestMemory.fromShared([{
        gpa,
        size,
        uva: mapping.address,
        address: mapping.address,
      }]);
    } catch (e) {
      mapping?.unmap();
      if (memfd >= 0) close(memfd);
      this.#socket.close();
      throw e;
    }
    this.#memfd = memfd;
    this.#mapping = mapping;
    this.address = mapping.address;
    this.memoryGpa = gpa;
    this.memorySize = size;
    this.#replyTimeoutMs = options.replyTimeoutMs ?? 5000;
    this.#wantProtocol = options.protocolFeatures ?? DEFAULT_FRONTEND_PROTOCOL_FEATURES;
    const iommu = options.iommu === true ? {} : options.iommu || null;
    this.iommu = iommu === null ? null : new FrontendIommu(this, iommu);
    if (iommu !== null) {
      // QEMU needs both for a device behind a vIOMMU.
      this.#wantProtocol |= bit(ProtocolFeatureBit.BACKEND_REQ) |
        bit(ProtocolFeatureBit.REPLY_ACK);
    }
  }

  /**
   * Connect to a backend listening on `path` (the usual QEMU/DPDK setup),
   * retrying while the socket is missing or refuses, and allocate the guest
   * memory.
   *
   * @throws Error naming the path and errno when it never answers.
   */
  static async connect(
    path: string,
    options: VhostUserFrontendOptions = {},
  ): Promise<VhostUserFrontend> {
    const deadline = Date.now() + (options.connectTimeoutMs ?? 5000);
    for (;;) {
      const fd = unixSocket();
      try {
        connectUnix(fd, path);
      } catch (e) {
        close(fd);
        if (!(e instanceof SysError)) throw e;
        const retry = e.code === "ENOENT" || e.code === "ECONNREFUSED" || e.code === "EAGAIN";
        if (!retry || Date.now() > deadline) {
          throw new Error(`vhost-user frontend: cannot connect to ${path}: ${e.message}`);
        }
        await new Promise((r) => setTimeout(r, 20));
        continue;
      }
      // The constructor owns the fd from here, on success and on failure.
      return new VhostUserFrontend(fd, options);
    }
  }

  /**
   * Listen on `path` (server mode, like QEMU `server=on`), accept one backend,
   * and stop listening (the socket file is removed).
   *
   * @throws Error when nobody connects within `connectTimeoutMs` (default 10000).
   */
  static async listen(
    path: string,
    options: VhostUserFrontendOptions = {},
  ): Promise<VhostUserFrontend> {
    const lfd = unixSocket({ nonBlocking: true });
    try {
      try {
        bindUnix(lfd, path);
      } catch (e) {
        if (!(e instanceof SysError) || e.code !== "EADDRINUSE") throw e;
        // A stale socket file from a dead process: nobody accepts on it.
        const probe = unixSocket();
        try {
          connectUnix(probe, path);
          throw new Error(`vhost-user frontend: ${path} is served by a live process`);
        } catch (c) {
          if (!(c instanceof SysError)) throw c;
        } finally {
          close(probe);
        }
        Deno.removeSync(path);
        bindUnix(lfd, path);
      }
      listen(lfd, 1);
      const timeout = options.connectTimeoutMs ?? 10000;
      const rev = await pollAsync([{ fd: lfd, events: POLLIN }], timeout);
      if ((rev[0] & POLLIN) === 0) {
        throw new Error(
          `vhost-user frontend: no backend connected to ${path} within ${timeout} ms`,
        );
      }
      const fd = accept(lfd);
      return new VhostUserFrontend(fd, options);
    } finally {
      close(lfd);
      try {
        Deno.removeSync(path);
      } catch {
        // Already gone.
      }
    }
  }

  /** Virtio features the backend offered (`GET_FEATURES`); 0 before it was asked. */
  get backendFeatures(): bigint {
    return this.#backendFeatures;
  }

  /** Protocol features in force (after `SET_PROTOCOL_FEATURES`). */
  get protocolFeatures(): bigint {
    return this.#protocolFeatures;
  }

  /**
   * What the backend answered to `GET_QUEUE_NUM`, or 0 when not asked (no
   * `MQ`). virtio-net backends (DPDK, this SDK) and QEMU count queue pairs.
   */
  get queueNum(): number {
    return this.#queueNum;
  }

  /** Whether {@linkcode close} was called or the connection failed. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Virtio features acknowledged with the last `SET_FEATURES` (0 before). */
  get ackedFeatures(): bigint {
    return this.#acked;
  }

  /**
   * Whether ring addresses are IOVAs: the frontend has an IOMMU and
   * `VIRTIO_F_ACCESS_PLATFORM` was acked.
   */
  get iovaRings(): boolean {
    return this.iommu !== null && hasBit(this.#acked, VirtioFeatureBit.ACCESS_PLATFORM);
  }

  /** Whether the backend channel ({@linkcode openBackendChannel}) is open. */
  get backendChannelOpen(): boolean {
    return this.#backend !== null && !this.#backend.closed;
  }

  /**
   * Why reading the backend channel failed (a malformed message), or `""`.
   * The channel is closed then.
   */
  get backendChannelError(): string {
    return this.#backendError;
  }

  /** Messages with request code `request` (`BackendRequest`) received on the backend channel. */
  backendRequests(request: number): number {
    return this.#backendCounts.get(request) ?? 0;
  }

  /** The kick eventfd of ring `q` (the frontend writes it), or -1 before {@linkcode setupRing}. */
  kickFd(q: number): number {
    return this.#rings.get(q)?.kick ?? -1;
  }

  /** The call eventfd of ring `q` (the backend writes it), or -1 before {@linkcode setupRing}. */
  callFd(q: number): number {
    return this.#rings.get(q)?.call ?? -1;
  }

  /** Notify the backend that ring `q` has new buffers. */
  kick(q: number): void {
    const fds = this.#rings.get(q);
    if (!fds) throw new RangeError(`kick: ring ${q} has no kick fd (setupRing first)`);
    eventfdWrite(fds.kick, 1);
  }

  /** Read and reset ring `q`'s call counter: interrupts since the last read (0 if none). */
  takeCalls(q: number): number {
    const fds = this.#rings.get(q);
    if (!fds) return 0;
    try {
      return eventfdRead(fds.call);
    } catch (e) {
      if (e instanceof SysError && e.code === "EAGAIN") return 0;
      throw e;
    }
  }

  /** Translate a GPA of the guest memory into this frontend's address (what QEMU sends). */
  frontendAddress(gpa: number, length = 1): number {
    if (gpa < this.memoryGpa || gpa + length > this.memoryGpa + this.memorySize) {
      throw new RangeError(
        `GPA 0x${gpa.toString(16)}+${length} is outside guest memory ` +
          `0x${this.memoryGpa.toString(16)}+0x${this.memorySize.toString(16)}`,
      );
    }
    return this.address + (gpa - this.memoryGpa);
  }

  // --- requests -----------------------------------------------------------

  /**
   * Send one request and wait for its answer: the reply payload for requests
   * that have one (`reply: true`), otherwise the `REPLY_ACK` ack when
   * negotiated. Returns the reply payload (empty without a reply). The fds
   * a reply carries are pushed to `received` (the caller then owns them),
   * or closed without it.
   */
  request(
    request: number,
    payload: Uint8Array = new Uint8Array(0),
    fds: readonly number[] = [],
    reply = false,
    received?: number[],
  ): Promise<Uint8Array> {
    const run = () => this.#exchange(request, payload, fds, reply, received);
    const result = this.#queue.then(run, run);
    this.#queue = result.catch(() => {});
    return result;
  }

  async #exchange(
    request: number,
    payload: Uint8Array,
    fds: readonly number[],
    reply: boolean,
    received?: number[],
  ): Promise<Uint8Array> {
    if (this.#closed || this.#socket.closed) {
      throw new VhostUserFrontendError(request, "the connection is closed");
    }
    const ack = !reply && this.#protocolNegotiated &&
      hasBit(this.#protocolFeatures, ProtocolFeatureBit.REPLY_ACK);
    const flags = HeaderFlag.VERSION | (ack ? HeaderFlag.NEED_REPLY : 0);
    const msg = encodeMessage(request, flags, payload);
    try {
      this.#socket.send(msg, fds);
    } catch (e) {
      this.#fail();
      if (e instanceof SysError && (e.code === "EPIPE" || e.code === "ECONNRESET")) {
        throw new VhostUserFrontendError(request, "the backend closed the connection");
      }
      throw new VhostUserFrontendError(request, `send failed: ${(e as Error).message}`);
    }
    if (!reply && !ack) return new Uint8Array(0);
    const answer = await this.#readReply(request, received);
    if (ack) {
      if (answer.length !== U64_SIZE) {
        throw new VhostUserFrontendError(request, `ack of ${answer.length} bytes, expected 8`);
      }
      const status = decodeU64(replyMessage(request, answer));
      if (status !== 0n) {
        throw new VhostUserFrontendError(request, `backend refused the request (ack ${status})`);
      }
    }
    return answer;
  }

  async #readReply(request: number, received?: number[]): Promise<Uint8Array> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), this.#replyTimeoutMs);
    });
    let m;
    try {
      m = await Promise.race([this.#socket.read(), timeout]);
    } catch (e) {
      this.#fail();
      throw new VhostUserFrontendError(request, `bad reply: ${(e as Error).message}`);
    } finally {
      clearTimeout(timer);
    }
    if (m === "timeout") {
      // The read is still pending; closing the socket ends it.
      this.#fail();
      throw new VhostUserFrontendError(request, `no reply within ${this.#replyTimeoutMs} ms`);
    }
    if (m === null) {
      this.#fail();
      throw new VhostUserFrontendError(request, "the backend closed the connection");
    }
    if (received && m.request === request) received.push(...m.fds);
    else for (const fd of m.fds) close(fd);
    if (m.request !== request || (m.flags & HeaderFlag.REPLY) === 0) {
      this.#fail();
      throw new VhostUserFrontendError(
        request,
        `expected its reply, got ${frontendRequestName(m.request)} with flags 0x${
          m.flags.toString(16)
        }`,
      );
    }
    return m.payload;
  }

  /** A broken connection is closed: later requests fail at once. */
  #fail(): void {
    this.#socket.close();
  }

  #u64(request: number, value: bigint | number): Promise<Uint8Array> {
    return this.request(request, encodeU64(value));
  }

  async #getU64(request: number): Promise<bigint> {
    const r = await this.request(request, new Uint8Array(0), [], true);
    if (r.length !== U64_SIZE) {
      throw new VhostUserFrontendError(request, `reply of ${r.length} bytes, expected 8`);
    }
    return decodeU64(replyMessage(request, r));
  }

  #state(request: number, index: number, num: number, reply = false): Promise<Uint8Array> {
    return this.request(request, encodeVringState({ index, num }), [], reply);
  }

  /** `SET_OWNER`: this connection now owns the device. */
  async setOwner(): Promise<void> {
    await this.request(FrontendRequest.SET_OWNER);
  }

  /** `GET_FEATURES`: the backend's virtio feature bits (also kept in {@linkcode backendFeatures}). */
  async getFeatures(): Promise<bigint> {
    this.#backendFeatures = await this.#getU64(FrontendRequest.GET_FEATURES);
    return this.#backendFeatures;
  }

  /**
   * `SET_FEATURES`: acknowledge `features`; refuses bits the backend did not
   * offer. Kept in {@linkcode ackedFeatures}.
   */
  async setFeatures(features: bigint): Promise<void> {
    const extra = features & ~this.#backendFeatures;
    if (extra !== 0n) {
      throw new VhostUserFrontendError(
        FrontendRequest.SET_FEATURES,
        `features 0x${extra.toString(16)} were not offered (offer 0x${
          this.#backendFeatures.toString(16)
        })`,
      );
    }
    await this.#u64(FrontendRequest.SET_FEATURES, features);
    this.#acked = features;
  }

  /** `GET_PROTOCOL_FEATURES`: the backend's protocol feature bits. */
  getProtocolFeatures(): Promise<bigint> {
    return this.#getU64(FrontendRequest.GET_PROTOCOL_FEATURES);
  }

  /** `SET_PROTOCOL_FEATURES`: from now on `features` are in force (`REPLY_ACK` included). */
  async setProtocolFeatures(features: bigint): Promise<void> {
    await this.#u64(FrontendRequest.SET_PROTOCOL_FEATURES, features);
    this.#protocolFeatures = features;
    this.#protocolNegotiated = true;
  }

  /** `GET_QUEUE_NUM` (needs `MQ`): how many queues (net: queue pairs) the backend supports. */
  async getQueueNum(): Promise<number> {
    const n = await this.#getU64(FrontendRequest.GET_QUEUE_NUM);
    if (n > 0xffffn) {
      throw new VhostUserFrontendError(
        FrontendRequest.GET_QUEUE_NUM,
        `backend reports ${n} queues`,
      );
    }
    this.#queueNum = Number(n);
    return this.#queueNum;
  }

  /**
   * The opening every frontend does: `SET_OWNER`, `GET_FEATURES`, and when
   * the backend offers protocol features, `GET_PROTOCOL_FEATURES`,
   * `SET_PROTOCOL_FEATURES` (the offer intersected with what was asked) and,
   * with `MQ`, `GET_QUEUE_NUM`. With the `iommu` option and `BACKEND_REQ`
   * negotiated it then opens the backend channel
   * ({@linkcode openBackendChannel}). Returns the backend's virtio features.
   *
   * @throws VhostUserFrontendError with the `iommu` option when the backend
   *   offers `VIRTIO_F_ACCESS_PLATFORM` without `BACKEND_REQ` and `REPLY_ACK`
   *   (QEMU refuses such a backend too).
   */
  async handshake(): Promise<bigint> {
    await this.setOwner();
    const features = await this.getFeatures();
    if (hasBit(features, VirtioFeatureBit.PROTOCOL_FEATURES)) {
      const offer = await this.getProtocolFeatures();
      await this.setProtocolFeatures(offer & this.#wantProtocol);
      if (hasBit(this.#protocolFeatures, ProtocolFeatureBit.MQ)) await this.getQueueNum();
    }
    if (this.iommu !== null && hasBit(features, VirtioFeatureBit.ACCESS_PLATFORM)) {
      const pf = this.#protocolFeatures;
      if (
        !hasBit(pf, ProtocolFeatureBit.BACKEND_REQ) || !hasBit(pf, ProtocolFeatureBit.REPLY_ACK)
      ) {
        throw new VhostUserFrontendError(
          FrontendRequest.SET_PROTOCOL_FEATURES,
          `an IOMMU needs the BACKEND_REQ and REPLY_ACK protocol features; negotiated 0x${
            pf.toString(16)
          }`,
        );
      }
      await this.openBackendChannel();
    }
    return features;
  }

  /**
   * `SET_BACKEND_REQ_FD` (needs `BACKEND_REQ`): make a socket pair, send one
   * end, and read the backend's requests from the other without blocking
   * the event loop: IOTLB misses go to {@linkcode iommu}, every request is
   * counted ({@linkcode backendRequests}), fds that come with one are
   * closed, and one that asks for a reply (`NEED_REPLY`) gets ack 0 (1 for
   * an IOTLB message this frontend cannot take). A channel opened before is
   * closed.
   */
  async openBackendChannel(): Promise<void> {
    const req = FrontendRequest.SET_BACKEND_REQ_FD;
    if (!hasBit(this.#protocolFeatures, ProtocolFeatureBit.BACKEND_REQ)) {
      throw new VhostUserFrontendError(req, "the BACKEND_REQ protocol feature was not negotiated");
    }
    const [ours, theirs] = socketPair();
    let channel: MessageSocket;
    try {
      channel = new MessageSocket(ours);
    } catch (e) {
      close(ours);
      close(theirs);
      throw e;
    }
    try {
      await this.request(req, new Uint8Array(0), [theirs]);
    } catch (e) {
      channel.close();
      throw e;
    } finally {
      close(theirs);
    }
    this.#backend?.close();
    this.#backend = channel;
    const reader = this.#readBackend(channel);
    this.#backendReaders.add(reader);
    reader.finally(() => this.#backendReaders.delete(reader));
  }

  /** Serve the backend channel until it closes. */
  async #readBackend(channel: MessageSocket): Promise<void> {
    try {
      for (;;) {
        let m: VhostUserMessage | null;
        try {
          m = await channel.read();
        } catch (e) {
          this.#backendError = (e as Error).message;
          return;
        }
        if (m === null) return;
        for (const fd of m.fds) close(fd);
        this.#backendCounts.set(m.request, (this.#backendCounts.get(m.request) ?? 0) + 1);
        let status = 0n;
        if (m.request === BackendRequest.IOTLB_MSG) status = this.#backendIotlb(m);
        if ((m.flags & HeaderFlag.NEED_REPLY) !== 0) {
          const flags = HeaderFlag.VERSION | HeaderFlag.REPLY;
          try {
            channel.send(encodeMessage(m.request, flags, encodeU64(status)));
          } catch (e) {
            this.#backendError = `replying on the backend channel: ${(e as Error).message}`;
            return;
          }
        }
      }
    } finally {
      channel.close();
      if (this.#backend === channel) this.#backend = null;
    }
  }

  /** An `IOTLB_MSG` on the backend channel: a miss goes to the IOMMU. Returns the ack status. */
  #backendIotlb(m: VhostUserMessage): bigint {
    let msg: IotlbMessage;
    try {
      msg = decodeIotlbMessage(m);
    } catch {
      return 1n;
    }
    if (msg.type !== IotlbMessageType.MISS || this.iommu === null) return 1n;
    this.iommu.handleMiss(Number(msg.iova), msg.perm);
    return 0n;
  }

  /** `SET_MEM_TABLE`: share the guest memory (one region, the memfd) with the backend. */
  async setMemTable(): Promise<void> {
    const region = {
      gpa: this.memoryGpa,
      size: this.memorySize,
      uva: this.address,
      mmapOffset: 0,
      fd: this.#memfd,
    };
    await this.request(FrontendRequest.SET_MEM_TABLE, encodeMemTable([region]), [region.fd]);
  }

  /**
   * `ADD_MEM_REG` (`CONFIGURE_MEM_SLOTS`): share one more region of guest
   * memory, `region.fd` mapped at `region.mmapOffset` (the fd stays the
   * caller's).
   */
  async addMemRegion(region: MemoryRegionSpec): Promise<void> {
    await this.request(FrontendRequest.ADD_MEM_REG, encodeSingleRegion(region), [region.fd]);
  }

  /** `REM_MEM_REG`: stop sharing the region at `region.gpa` of `region.size` bytes. */
  async removeMemRegion(region: Omit<MemoryRegionSpec, "fd">): Promise<void> {
    await this.request(FrontendRequest.REM_MEM_REG, encodeSingleRegion({ ...region, fd: -1 }), []);
  }

  /** `SET_VRING_NUM`: ring `q` has `num` descriptors. */
  async setVringNum(q: number, num: number): Promise<void> {
    await this.#state(FrontendRequest.SET_VRING_NUM, q, num);
  }

  /** `SET_VRING_BASE`: the backend starts at available index `base` of ring `q`. */
  async setVringBase(q: number, base: number): Promise<void> {
    await this.#state(FrontendRequest.SET_VRING_BASE, q, base);
  }

  /**
   * `SET_VRING_ADDR`: ring `q`'s tables. `layout` holds GPAs; like QEMU, the
   * message carries this frontend's virtual addresses of them. Behind the
   * IOMMU ({@linkcode iovaRings}) `layout` holds IOVAs, which the message
   * carries as they are (the backend translates them through its IOTLB).
   */
  async setVringAddr(q: number, layout: FrontendRingLayout, flags = 0): Promise<void> {
    // With VHOST_VRING_F_LOG the used ring's guest-physical address is the log address.
    const log = (flags & VRING_F_LOG) !== 0 ? layout.usedAddr : 0;
    const n = layout.num;
    let addr: Uint8Array;
    if (this.iovaRings) {
      for (const a of [layout.descAddr, layout.availAddr, layout.usedAddr]) {
        if (!Number.isSafeInteger(a) || a < 0) {
          throw new RangeError(`ring ${q}: IOVA ${a} is not an address below 2^53`);
        }
      }
      addr = encodeVringAddr({
        index: q,
        flags,
        desc: layout.descAddr,
        used: layout.usedAddr,
        avail: layout.availAddr,
        log,
      });
    } else {
      // A packed ring's driver and device areas are the 4-byte event areas.
      const packed = hasBit(this.#acked, VirtioFeatureBit.RING_PACKED);
      addr = encodeVringAddr({
        index: q,
        flags,
        desc: this.frontendAddress(layout.descAddr, packed ? packedRingSize(n) : descTableSize(n)),
        used: this.frontendAddress(layout.usedAddr, packed ? EVENT_SUPPRESS_SIZE : usedRingSize(n)),
        avail: this.frontendAddress(
          layout.availAddr,
          packed ? EVENT_SUPPRESS_SIZE : availRingSize(n),
        ),
        log,
      });
    }
    await this.request(FrontendRequest.SET_VRING_ADDR, addr);
  }

  /** `SET_VRING_KICK`: ring `q`'s kick eventfd, or polling mode when `fd` is null. */
  async setVringKick(q: number, fd: number | null): Promise<void> {
    await this.#vringFd(FrontendRequest.SET_VRING_KICK, q, fd);
  }

  /** `SET_VRING_CALL`: ring `q`'s call eventfd, or none when `fd` is null. */
  async setVringCall(q: number, fd: number | null): Promise<void> {
    await this.#vringFd(FrontendRequest.SET_VRING_CALL, q, fd);
  }

  async #vringFd(request: number, q: number, fd: number | null): Promise<void> {
    if (q < 0 || q > 0xff) throw new VhostUserFrontendError(request, `ring index ${q} exceeds 255`);
    const b = encodeVringFileIndex({ index: q, noFd: fd === null });
    await this.request(request, b, fd === null ? [] : [fd]);
  }

  /** `SET_VRING_ENABLE`: start or stop the backend processing ring `q`. */
  async setVringEnable(q: number, enable: boolean): Promise<void> {
    await this.#state(FrontendRequest.SET_VRING_ENABLE, q, enable ? 1 : 0);
  }

  /** `GET_VRING_BASE`: stop ring `q` and return the backend's next available index. */
  async getVringBase(q: number): Promise<number> {
    const r = await this.#state(FrontendRequest.GET_VRING_BASE, q, 0, true);
    if (r.length !== VRING_STATE_SIZE) {
      throw new VhostUserFrontendError(
        FrontendRequest.GET_VRING_BASE,
        `reply of ${r.length} bytes, expected ${VRING_STATE_SIZE}`,
      );
    }
    const s = decodeVringState(replyMessage(FrontendRequest.GET_VRING_BASE, r));
    if (s.index !== q) {
      throw new VhostUserFrontendError(
        FrontendRequest.GET_VRING_BASE,
        `reply names ring ${s.index}, asked for ${q}`,
      );
    }
    return s.num;
  }

  /**
   * `SET_LOG_BASE` (with `LOG_SHMFD`): the dirty log is `size` bytes at
   * `offset` of `fd` (a memfd; the backend maps it). Waits for the
   * backend's reply, which has no payload, as QEMU does.
   */
  async setLogBase(fd: number, size: number, offset = 0): Promise<void> {
    await this.request(
      FrontendRequest.SET_LOG_BASE,
      encodeLogDescription({ size, offset }),
      [fd],
      true,
    );
  }

  /**
   * `GET_INFLIGHT_FD` (with `INFLIGHT_SHMFD`): ask the backend for an
   * inflight region for `numQueues` rings of `queueSize`. Returns its
   * description and fd (the caller owns it), to keep and send back with
   * {@linkcode VhostUserFrontend.setInflightFd}, as QEMU does across reconnects.
   */
  async getInflightFd(
    numQueues: number,
    queueSize: number,
  ): Promise<{ fd: number; description: InflightDescription }> {
    const req = FrontendRequest.GET_INFLIGHT_FD;
    const fds: number[] = [];
    const ask = encodeInflightDescription({ mmapSize: 0, mmapOffset: 0, numQueues, queueSize });
    const r = await this.request(req, ask, [], true, fds);
    if (fds.length !== 1) {
      for (const fd of fds) close(fd);
      throw new VhostUserFrontendError(req, `reply carries ${fds.length} fds, expected 1`);
    }
    try {
      return { fd: fds[0], description: decodeInflightDescription(replyMessage(req, r)) };
    } catch (e) {
      close(fds[0]);
      throw new VhostUserFrontendError(req, `bad reply: ${(e as Error).message}`);
    }
  }

  /** `SET_INFLIGHT_FD` (with `INFLIGHT_SHMFD`): the inflight region to use, in `fd` (still the caller's). */
  async setInflightFd(fd: number, description: InflightDescription): Promise<void> {
    await this.request(
      FrontendRequest.SET_INFLIGHT_FD,
      encodeInflightDescription(description),
      [fd],
    );
  }

  /**
   * `IOTLB_MSG` update (with `VIRTIO_F_ACCESS_PLATFORM` acked): `size` bytes
   * from `iova` are this frontend's `uaddr` (see {@linkcode frontendAddress}),
   * with `perm` (`IotlbAccess`: 1 the device reads, 2 it writes, 3 both).
   * With `REPLY_ACK`, a refusal fails the call.
   */
  async iotlbUpdate(entry: IotlbEntry): Promise<void> {
    await this.iotlbMessage({
      iova: BigInt(entry.iova),
      size: BigInt(entry.size),
      uaddr: BigInt(entry.uaddr),
      perm: entry.perm,
      type: IotlbMessageType.UPDATE,
    });
  }

  /** `IOTLB_MSG` invalidation: the backend forgets its translations of `[iova, iova + size)`. */
  async iotlbInvalidate(iova: number, size: number): Promise<void> {
    await this.iotlbMessage({
      iova: BigInt(iova),
      size: BigInt(size),
      uaddr: 0n,
      perm: IotlbAccess.NONE,
      type: IotlbMessageType.INVALIDATE,
    });
  }

  /** `IOTLB_MSG` as given: any type, any field (for testing what a backend refuses). */
  async iotlbMessage(msg: IotlbMessage): Promise<void> {
    await this.request(FrontendRequest.IOTLB_MSG, encodeIotlbMessage(msg));
  }

  /** `SEND_RARP` (with `RARP`): ask the backend to announce `mac` after a migration. */
  async sendRarp(mac: Uint8Array): Promise<void> {
    await this.request(FrontendRequest.SEND_RARP, encodeRarpMac(mac));
  }

  /** `SET_STATUS` (needs `STATUS`): the virtio device status byte. */
  async setStatus(status: number): Promise<void> {
    await this.#u64(FrontendRequest.SET_STATUS, status);
  }

  /** `GET_STATUS` (needs `STATUS`). */
  async getStatus(): Promise<number> {
    return Number(await this.#getU64(FrontendRequest.GET_STATUS) & 0xffn);
  }

  /** `GET_CONFIG` (needs `CONFIG`): `size` bytes of device config space at `offset`. */
  async getConfig(offset: number, size: number): Promise<Uint8Array> {
    const req = FrontendRequest.GET_CONFIG;
    if (!hasBit(this.#protocolFeatures, ProtocolFeatureBit.CONFIG)) {
      throw new VhostUserFrontendError(req, "the CONFIG protocol feature was not negotiated");
    }
    if (offset < 0 || size <= 0 || offset + size > MAX_CONFIG_SIZE) {
      throw new VhostUserFrontendError(
        req,
        `offset ${offset} size ${size} exceed ${MAX_CONFIG_SIZE}`,
      );
    }
    const ask = encodeConfig({ offset, size, flags: 0, data: new Uint8Array(size) });
    const r = await this.request(req, ask, [], true);
    if (r.length < CONFIG_HEADER_SIZE) {
      throw new VhostUserFrontendError(req, `reply of ${r.length} bytes has no config header`);
    }
    let c: ConfigPayload;
    try {
      c = decodeConfig(replyMessage(req, r));
    } catch (e) {
      if (!(e instanceof ProtocolError)) throw e;
      throw new VhostUserFrontendError(req, `bad reply: ${e.message}`);
    }
    if (c.size !== size) {
      throw new VhostUserFrontendError(
        req,
        `backend returned ${c.size} config bytes (${
          r.length - CONFIG_HEADER_SIZE
        } present), asked for ${size}`,
      );
    }
    return c.data.slice();
  }

  /**
   * Program ring `q`: `SET_VRING_NUM`, `SET_VRING_BASE`, `SET_VRING_ADDR`,
   * and new kick and call eventfds (`SET_VRING_KICK`, `SET_VRING_CALL`),
   * which this frontend owns. Replaces earlier fds of the ring.
   */
  async setupRing(q: number, layout: FrontendRingLayout, base = 0): Promise<void> {
    await this.setVringNum(q, layout.num);
    await this.setVringBase(q, base);
    await this.setVringAddr(q, layout);
    const old = this.#rings.get(q);
    const fds = { kick: eventfd(0, { nonBlocking: true }), call: -1 };
    try {
      fds.call = eventfd(0, { nonBlocking: true });
    } catch (e) {
      close(fds.kick);
      throw e;
    }
    this.#rings.set(q, fds);
    if (old) {
      close(old.kick);
      close(old.call);
    }
    await this.setVringKick(q, fds.kick);
    await this.setVringCall(q, fds.call);
  }

  /**
   * Close the connection (the backend sees the frontend go away), the
   * backend channel, the eventfds and the memfd, and unmap the memory.
   * Idempotent. Views of {@linkcode memory} must not be used afterwards.
   * Requests in flight and the backend channel's reader end a moment later:
   * {@linkcode shutdown} waits for them.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#socket.close();
    this.#backend?.close();
    for (const { kick, call } of this.#rings.values()) {
      close(kick);
      close(call);
    }
    this.#rings.clear();
    this.memory.close();
    this.#mapping.unmap();
    close(this.#memfd);
  }

  /**
   * {@linkcode close}, then wait until the requests in flight (the IOMMU's
   * answers among them) and the backend channel's reader have ended: what a
   * test awaits so that nothing of the frontend outlives it.
   */
  async shutdown(): Promise<void> {
    this.close();
    await this.#queue.catch(() => {});
    await this.iommu?.settled();
    while (this.#backendReaders.size > 0) await Promise.all([...this.#backendReaders]);
  }
}
