/**
 * An in-process guest for the sim device, without sockets: the sim driver
 * under the real device core ({@linkcode DriverHarness}), with guest memory
 * in a memfd, rings driven with SplitQueueDriver and real eventfds for kicks
 * and calls. The rig adds the guest's network helpers: posting receive
 * buffers, sending frames, collecting used chains and merged frames.
 *
 * @module
 */

import {
  type DeviceDescription,
  type DeviceEvent,
  type GuestMemory,
  type VhostMdevDevice,
  VIRTIO_NET_HDR_SIZE,
} from "@vhost-mdev/sdk";
import { eventfdRead, eventfdWrite, pollAsync, POLLIN } from "@vhost-mdev/sdk/sys";
import { readNumBuffers } from "@vhost-mdev/sdk/net";
import { DriverHarness, type HarnessRing } from "@vhost-mdev/testing";
import { driver } from "@vhost-mdev/sim";

/** Guest memory size. */
const MEMORY_SIZE = 32 << 20;
/** Where buffers start (rings live below). */
const BUFFERS_GPA = 4 << 20;
/** All 64 feature bits. */
const ALL_FEATURES = (1n << 64n) - 1n;

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
  /** Run packed rings. */
  packed?: boolean;
}

/** The sim device, under the real device core, over an in-process guest. */
export class SimRig {
  /** The harness the sim driver runs under. */
  readonly harness: DriverHarness;
  /** Every ring's guest side. */
  readonly rings: HarnessRing[];
  /** Warnings the device logged ("warn" events). */
  readonly warnings: string[];
  /** Errors the driver reported ("error" events), with their ring. */
  readonly reported: { message: string; queue?: number }[];
  readonly hdrLen = VIRTIO_NET_HDR_SIZE;
  #next = BUFFERS_GPA;
  #calls = 0;

  private constructor(
    harness: DriverHarness,
    warnings: string[],
    reported: { message: string; queue?: number }[],
  ) {
    this.harness = harness;
    this.warnings = warnings;
    this.reported = reported;
    this.rings = Array.from({ length: harness.device.numQueues }, (_, q) => harness.ring(q));
  }

  /** Probe the sim under a device core, lay out the rings (not started). */
  static async create(options: RigOptions = {}): Promise<SimRig> {
    const warnings: string[] = [];
    const reported: { message: string; queue?: number }[] = [];
    const listener = (e: DeviceEvent) => {
      if (e.type === "warn") warnings.push(e.message);
      else if (e.type === "error") {
        const queue = e.fields?.queue;
        reported.push({
          message: e.message,
          queue: typeof queue === "number" ? queue : undefined,
        });
      }
    };
    const harness = await DriverHarness.create(
      driver,
      { queues: options.queues ?? 1, options: options.options ?? {} },
      {
        memoryBytes: MEMORY_SIZE,
        ringSize: options.ringSize ?? 256,
        features: ALL_FEATURES & ~(options.refuse ?? 0n),
        reserved: options.reserved ?? 0,
        device: { listener },
        packed: options.packed ?? false,
      },
    );
    return new SimRig(harness, warnings, reported);
  }

  /** The device core. */
  get device(): VhostMdevDevice {
    return this.harness.device;
  }

  /** What the sim's probe returned. */
  get description(): DeviceDescription {
    return this.harness.device.description;
  }

  /** Guest memory. */
  get memory(): GuestMemory {
    return this.harness.memory;
  }

  /** The features acked. */
  get features(): bigint {
    return this.harness.features;
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
    if (this.rings[q].queue.kickNeeded()) eventfdWrite(this.rings[q].kick, 1);
  }

  /** Post `count` receive buffers of `size` bytes on pair `pair`. */
  postRx(pair: number, count: number, size: number): void {
    const r = this.rings[2 * pair];
    for (let i = 0; i < count; i++) {
      const gpa = this.alloc(size);
      if (!r.queue.add([{ gpa, len: size, write: true }], gpa)) {
        throw new Error(`receive ring ${r.index} is full`);
      }
    }
    r.queue.publish();
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
    if (!r.queue.add(segments, gpa)) throw new Error(`transmit ring ${r.index} is full`);
    r.queue.publish();
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
      while (out.length < count && r.queue.nextUsed()) {
        out.push({ token: r.queue.usedToken, len: r.queue.usedLen });
      }
      if (out.length >= count) return out;
      if (r.queue.enableInterrupts()) continue;
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

  /** Close the device (stopping it, calling the sim's `close`), fds and memory. */
  close(): Promise<void> {
    return this.harness.close();
  }
}
