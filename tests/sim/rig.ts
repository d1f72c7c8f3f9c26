/**
 * An in-process guest for the sim device, without sockets: a memfd mapped
 * as guest memory (Workers need real addresses), rings laid out and driven
 * with SplitQueueDriver, real eventfds for kicks and calls, and a fake
 * DeviceContext that hands all of it to the driver.
 *
 * @module
 */

import {
  type DeviceContext,
  type DeviceDescription,
  type DeviceLog,
  GuestMemory,
  hasBit,
  SplitQueueDriver,
  type SplitQueueDriverLayout,
  VIRTIO_NET_HDR_SIZE,
  VirtioFeatureBit,
  type VringInfo,
} from "@vhost-mdev/sdk";
import {
  close,
  eventfd,
  eventfdRead,
  eventfdWrite,
  ftruncate,
  memfdCreate,
  pollAsync,
  POLLIN,
} from "@vhost-mdev/sdk/sys";
import { readNumBuffers } from "@vhost-mdev/sdk/net";
import { driver } from "@vhost-mdev/sim";

/** Guest memory size. */
const MEMORY_SIZE = 32 << 20;
/** Where buffers start (rings live below). */
const BUFFERS_GPA = 4 << 20;
/** A frontend-style virtual address for the region (distinct from the GPA). */
const UVA = 0x7f00_0000_0000;

/** One ring as the guest drives it. */
export interface GuestRing {
  index: number;
  driver: SplitQueueDriver;
  layout: SplitQueueDriverLayout;
  kick: number;
  call: number;
  info: { -readonly [K in keyof VringInfo]: VringInfo[K] };
}

/** A frame received by the guest: its header and bytes. */
export interface Received {
  header: Uint8Array;
  frame: Uint8Array;
  buffers: number;
}

/** Options of {@linkcode SimRig.create}. */
export interface RigOptions {
  queues?: number;
  options?: Record<string, string>;
  ringSize?: number;
  /** Feature bits to take off the device's offer before acknowledging. */
  refuse?: bigint;
  /** Descriptors kept out of the free list of every ring, for hand-made chains. */
  reserved?: number;
}

/** The sim device over an in-process guest. */
export class SimRig {
  readonly memory: GuestMemory;
  readonly description: DeviceDescription;
  readonly rings: GuestRing[];
  readonly warnings: string[] = [];
  /** Errors the driver reported through `ctx.reportError`. */
  reported: { message: string; queue?: number }[] = [];
  readonly features: bigint;
  readonly hdrLen = VIRTIO_NET_HDR_SIZE;
  #memfd: number;
  #next = BUFFERS_GPA;
  #calls = 0;

  private constructor(
    memfd: number,
    memory: GuestMemory,
    description: DeviceDescription,
    rings: GuestRing[],
    features: bigint,
  ) {
    this.#memfd = memfd;
    this.memory = memory;
    this.description = description;
    this.rings = rings;
    this.features = features;
  }

  /** Probe the driver with a fake context, negotiate, lay out the rings (not started). */
  static async create(options: RigOptions = {}): Promise<SimRig> {
    const queues = options.queues ?? 1;
    const ringSize = options.ringSize ?? 256;
    const memfd = memfdCreate("sim-rig", { allowSealing: true });
    ftruncate(memfd, MEMORY_SIZE);
    const memory = GuestMemory.map([{
      gpa: 0,
      size: MEMORY_SIZE,
      uva: UVA,
      mmapOffset: 0,
      fd: memfd,
    }]);
    const rings: GuestRing[] = [];
    const holder: { features: bigint; rig?: SimRig } = { features: 0n };
    const warnings: string[] = [];
    const reported: { message: string; queue?: number }[] = [];
    const log: DeviceLog = {
      info: () => {},
      warn: (m) => warnings.push(m),
      debug: () => {},
    };
    const ctx: DeviceContext = {
      get ackedFeatures() {
        return holder.features;
      },
      status: 0xf,
      numQueues: 2 * queues,
      vring: (q) => {
        if (!(q >= 0 && q < rings.length)) throw new RangeError(`ring ${q}`);
        return rings[q].info;
      },
      memory,
      signal: (q) => eventfdWrite(rings[q].call, 1),
      signalConfigChange: () => {},
      reportError: (m, q) => reported.push({ message: m, queue: q }),
      log,
    };
    const description = await driver.probe(ctx, { queues, options: options.options ?? {} });
    const features = description.features & ~(options.refuse ?? 0n);
    holder.features = features;
    const eventIdx = hasBit(features, VirtioFeatureBit.EVENT_IDX);
    const indirect = hasBit(features, VirtioFeatureBit.INDIRECT_DESC);
    for (let q = 0; q < 2 * queues; q++) {
      const layout = SplitQueueDriver.layout(ringSize, 0x40000 * (q + 1), {
        indirectSegments: indirect ? 4 : 0,
      });
      const ring = new SplitQueueDriver(memory, layout, {
        eventIdx,
        indirect,
        reserved: options.reserved ?? 0,
      });
      rings.push({
        index: q,
        driver: ring,
        layout,
        kick: eventfd(0, { nonBlocking: true }),
        call: eventfd(0, { nonBlocking: true }),
        info: {
          index: q,
          num: ringSize,
          descAddr: layout.descAddr,
          availAddr: layout.availAddr,
          usedAddr: layout.usedAddr,
          logAddr: 0,
          logging: false,
          base: 0,
          kickFd: -1,
          callFd: -1,
          errFd: -1,
          enabled: true,
          ready: true,
        },
      });
      rings[q].info.kickFd = rings[q].kick;
      rings[q].info.callFd = rings[q].call;
    }
    const rig = new SimRig(memfd, memory, description, rings, features);
    rig.warnings.push(...warnings);
    rig.reported = reported;
    // Keep collecting into the rig's list.
    log.warn = (m) => rig.warnings.push(m);
    return rig;
  }

  /** Interrupts seen on call fds so far. */
  get calls(): number {
    return this.#calls;
  }

  /** Allocate `size` bytes of guest memory (8-byte aligned). */
  alloc(size: number): number {
    const gpa = this.#next;
    this.#next += Math.ceil(size / 8) * 8;
    if (this.#next > MEMORY_SIZE) this.#next = BUFFERS_GPA; // wrap: tests use few buffers at a time
    return gpa;
  }

  /** Kick ring `q` if the device asked for it. */
  kickIfNeeded(q: number): void {
    if (this.rings[q].driver.kickNeeded()) eventfdWrite(this.rings[q].kick, 1);
  }

  /** Post `count` receive buffers of `size` bytes on pair `pair`. */
  postRx(pair: number, count: number, size: number): void {
    const r = this.rings[2 * pair];
    for (let i = 0; i < count; i++) {
      const gpa = this.alloc(size);
      if (!r.driver.add([{ gpa, len: size, write: true }], gpa)) {
        throw new Error(`receive ring ${r.index} is full`);
      }
    }
    r.driver.publish();
    this.kickIfNeeded(r.index);
  }

  /**
   * Transmit `frame` on pair `pair` behind `header` (default zero), as one
   * buffer, or split in two (header, frame) when `split`.
   */
  send(pair: number, frame: Uint8Array, header?: Uint8Array, split = false): void {
    const r = this.rings[2 * pair + 1];
    const hdr = header ?? new Uint8Array(this.hdrLen);
    const gpa = this.alloc(hdr.length + frame.length);
    this.memory.bytes(gpa, hdr.length).set(hdr);
    this.memory.bytes(gpa + hdr.length, frame.length).set(frame);
    const segments = split
      ? [
        { gpa, len: hdr.length, write: false },
        { gpa: gpa + hdr.length, len: frame.length, write: false },
      ]
      : [{ gpa, len: hdr.length + frame.length, write: false }];
    if (!r.driver.add(segments, gpa)) throw new Error(`transmit ring ${r.index} is full`);
    r.driver.publish();
    this.kickIfNeeded(r.index);
  }

  /** Wait until ring `q` returned `count` chains; returns them as (token, len). */
  async used(
    q: number,
    count: number,
    timeoutMs = 5000,
  ): Promise<{ token: number; len: number }[]> {
    const r = this.rings[q];
    const out: { token: number; len: number }[] = [];
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      while (out.length < count && r.driver.nextUsed()) {
        out.push({ token: r.driver.usedToken, len: r.driver.usedLen });
      }
      if (out.length >= count) return out;
      if (r.driver.enableInterrupts()) continue;
      if (Date.now() > deadline) {
        throw new Error(`ring ${q}: ${out.length} of ${count} chains came back in ${timeoutMs} ms`);
      }
      const [revents] = await pollAsync([{ fd: r.call, events: POLLIN }], 50);
      if (revents !== 0) {
        try {
          eventfdRead(r.call);
          this.#calls++;
        } catch {
          // drained already
        }
      }
    }
  }

  /** Wait for `count` frames on pair `pair`'s receive ring, merging buffers per `num_buffers`. */
  async receive(pair: number, count: number, timeoutMs = 5000): Promise<Received[]> {
    const q = 2 * pair;
    const frames: Received[] = [];
    const pending: { token: number; len: number }[] = [];
    const deadline = Date.now() + timeoutMs;
    while (frames.length < count) {
      if (pending.length === 0) {
        pending.push(...await this.used(q, 1, Math.max(1, deadline - Date.now())));
      }
      const first = pending[0];
      const header = this.memory.bytes(first.token, this.hdrLen).slice();
      const buffers = readNumBuffers(header, 0);
      if (buffers < 1) throw new Error(`num_buffers ${buffers} in a received header`);
      if (pending.length < buffers) {
        pending.push(
          ...await this.used(q, buffers - pending.length, Math.max(1, deadline - Date.now())),
        );
      }
      const parts = pending.splice(0, buffers);
      const total = parts.reduce((n, p) => n + p.len, 0) - this.hdrLen;
      const frame = new Uint8Array(total);
      let at = 0;
      parts.forEach((p, i) => {
        const skip = i === 0 ? this.hdrLen : 0;
        frame.set(this.memory.bytes(p.token + skip, p.len - skip), at);
        at += p.len - skip;
      });
      frames.push({ header, frame, buffers });
    }
    return frames;
  }

  /** Close fds and the mapping (after the device stopped). */
  close(): void {
    for (const r of this.rings) {
      close(r.kick);
      close(r.call);
    }
    this.memory.close();
    close(this.#memfd);
  }
}
