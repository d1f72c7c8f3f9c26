/**
 * What the vIOMMU tests share: sim devices served over real vhost-user
 * sockets with their events recorded, frames with distinct contents, and a
 * raw loopback guest on the kit's {@linkcode VirtioGuest} whose transmit and
 * receive buffers the test places itself (one page each, so a page of the
 * frontend's IOMMU is one buffer), with tokens it reads back.
 *
 * @module
 */

import { type DeviceEvent, VhostMdevDevice, VIRTIO_NET_HDR_SIZE } from "@vhost-mdev/sdk";
import { VhostUserServer } from "@vhost-mdev/sdk/vhost-user";
import { driver as sim } from "@vhost-mdev/sim";
import { VhostUserFrontend, VirtioGuest, VirtioNetDriver } from "@vhost-mdev/testing";

/** Bytes of one buffer of a {@linkcode LoopGuest}: a page. */
export const SLOT = 4096;

/** A sim device served on its own socket, with what it reported. */
export interface ServedSim {
  /** The device core. */
  device: VhostMdevDevice;
  /** The vhost-user server. */
  server: VhostUserServer;
  /** The socket path. */
  sock: string;
  /** Every event, in order. */
  events: DeviceEvent[];
  /** Messages of the events of `type`. */
  messages(type: DeviceEvent["type"]): string[];
  /** Stop serving and close the device. */
  close(): Promise<void>;
}

/** Serve a sim device of `pairs` queue pairs in loopback (no MRG_RXBUF, no EVENT_IDX) at `sock`. */
export async function serveSim(sock: string, pairs = 1): Promise<ServedSim> {
  const events: DeviceEvent[] = [];
  const device = await VhostMdevDevice.create(
    sim,
    { queues: pairs, options: { mode: "loopback", "mrg-rxbuf": "false", "event-idx": "false" } },
    { listener: (e) => events.push(e) },
  );
  const server = VhostUserServer.listen(device, sock);
  return {
    device,
    server,
    sock,
    events,
    messages: (type) => events.filter((e) => e.type === type).map((e) => e.message),
    async close() {
      await server.close();
      await device.close();
    },
  };
}

/** `count` frames of 60..1514 bytes, each with contents of its own (`seed` varies them). */
export function frames(count: number, seed = 0): Uint8Array[] {
  return Array.from({ length: count }, (_, i) => {
    const f = new Uint8Array(60 + ((i * 97 + seed * 31) % 1455));
    for (let k = 0; k < f.length; k++) f[k] = (k * 13 + i * 7 + seed * 101) & 0xff;
    f[0] = i & 0xff;
    f[1] = (i >> 8) & 0xff;
    return f;
  });
}

/** A used transmit chain: the token given and the length written. */
export interface Used {
  /** The chain's token ({@linkcode LoopGuest.send} returned it). */
  token: number;
  /** Bytes the device wrote. */
  len: number;
}

/** A received buffer: its slot, the used length, and the frame behind the header. */
export interface Received {
  /** Receive slot. */
  slot: number;
  /** Used length (header included; 0 for a buffer returned empty). */
  len: number;
  /** The frame, header stripped (empty for a buffer returned empty). */
  frame: Uint8Array;
}

/**
 * One virtio-net queue pair of a sim in loopback, driven raw over a
 * {@linkcode VirtioGuest} (split rings, behind the frontend's IOMMU): every
 * buffer is one page (a receive buffer's token is its slot, a transmit
 * chain's a number of its own), and a frame may be posted at any address
 * (an IOVA nothing maps).
 */
export class LoopGuest {
  /** The generic guest. */
  readonly guest: VirtioGuest;
  /** GPA of receive slot 0; slot `i` is at `rxGpa + i * SLOT`. */
  readonly rxGpa: number;
  /** GPA of transmit slot 0. */
  readonly txGpa: number;
  /** Transmit chains the device returned, in order. */
  readonly txUsed: Used[] = [];
  readonly #bytes: Uint8Array;
  readonly #base: number;
  readonly #txFree: number[] = [];
  /** Slot of each transmit token in flight. */
  readonly #txSlot = new Map<number, number>();
  #nextToken = 0;

  private constructor(guest: VirtioGuest) {
    this.guest = guest;
    const fe = guest.frontend;
    const n = guest.ringSize;
    this.rxGpa = guest.allocate(n * SLOT);
    this.txGpa = guest.allocate(n * SLOT);
    this.#base = fe.memoryGpa;
    this.#bytes = fe.memory.bytes(fe.memoryGpa, fe.memorySize);
    for (let i = n - 1; i >= 0; i--) this.#txFree.push(i);
  }

  /**
   * Set the guest up behind the frontend's IOMMU (`queues` rings: pair 0
   * is rings 0 and 1), post every receive buffer of ring 0 when `postRx`,
   * and make the device live unless `activate` is false.
   */
  static async start(
    fe: VhostUserFrontend,
    options: { ringSize?: number; postRx?: boolean; activate?: boolean } = {},
  ): Promise<LoopGuest> {
    const guest = await VirtioGuest.setup(fe, {
      queues: 2,
      ringSize: options.ringSize ?? 64,
      iommu: true,
    });
    const g = new LoopGuest(guest);
    if (options.postRx ?? true) {
      for (let slot = 0; slot < guest.ringSize; slot++) g.postRx(slot);
      guest.ring(0).publish();
    }
    if (options.activate ?? true) {
      await guest.activate();
      guest.kick(0);
    }
    return g;
  }

  /** The bytes of guest memory at `gpa`. */
  bytes(gpa: number, length: number): Uint8Array {
    return this.#bytes.subarray(gpa - this.#base, gpa - this.#base + length);
  }

  /** Post receive slot `slot` (not published). */
  postRx(slot: number): void {
    if (!this.guest.ring(0).addBuffer(this.rxGpa + slot * SLOT, SLOT, true, slot)) {
      throw new Error(`receive ring full posting slot ${slot}`);
    }
  }

  /**
   * Transmit `frame` behind a zero header from a free slot, or, with
   * `atGpa`, a buffer of `12 + frame.length` bytes at that address as it
   * is (nothing written there). Publishes and kicks. Returns the chain's
   * token (each send has its own).
   */
  send(frame: Uint8Array, atGpa?: number): number {
    this.reclaim();
    const slot = this.#txFree.pop();
    if (slot === undefined) throw new Error("every transmit slot is in flight");
    let gpa = atGpa;
    if (gpa === undefined) {
      gpa = this.txGpa + slot * SLOT;
      const b = this.bytes(gpa, VIRTIO_NET_HDR_SIZE + frame.length);
      b.fill(0, 0, VIRTIO_NET_HDR_SIZE);
      b.set(frame, VIRTIO_NET_HDR_SIZE);
    }
    const token = this.#nextToken++;
    if (!this.guest.ring(1).addBuffer(gpa, VIRTIO_NET_HDR_SIZE + frame.length, false, token)) {
      throw new Error("transmit ring full");
    }
    this.#txSlot.set(token, slot);
    this.guest.ring(1).publish();
    this.guest.kick(1);
    return token;
  }

  /** Take the transmit chains the device returned into {@linkcode txUsed}. */
  reclaim(): void {
    const tx = this.guest.ring(1);
    while (tx.nextUsed()) {
      const token = tx.usedToken;
      this.txUsed.push({ token, len: tx.usedLen });
      const slot = this.#txSlot.get(token);
      if (slot === undefined) throw new Error(`the device returned unknown token ${token}`);
      this.#txSlot.delete(token);
      this.#txFree.push(slot);
    }
  }

  /** Wait until the device returned transmit chain `token`; its used entry. */
  async waitTx(token: number, timeoutMs = 5000): Promise<Used> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      this.reclaim();
      const u = this.txUsed.find((x) => x.token === token);
      if (u) return u;
      const left = deadline - performance.now();
      if (left <= 0) throw new Error(`transmit chain ${token} not returned in ${timeoutMs} ms`);
      await this.guest.waitUsed(1, left).catch(() => {});
    }
  }

  /**
   * Wait for `count` used receive buffers, in order (reposted and kicked
   * unless `repost` is false).
   */
  async receive(count: number, timeoutMs = 5000, repost = true): Promise<Received[]> {
    const rx = this.guest.ring(0);
    const out: Received[] = [];
    const deadline = performance.now() + timeoutMs;
    while (out.length < count) {
      let took = 0;
      while (out.length < count && rx.nextUsed()) {
        const slot = rx.usedToken, len = rx.usedLen;
        const at = this.rxGpa + slot * SLOT;
        const frame = len > VIRTIO_NET_HDR_SIZE
          ? this.bytes(at + VIRTIO_NET_HDR_SIZE, len - VIRTIO_NET_HDR_SIZE).slice()
          : new Uint8Array(0);
        out.push({ slot, len, frame });
        if (repost) this.postRx(slot);
        took++;
      }
      if (took > 0 && repost) this.guest.publish(0);
      if (out.length >= count) break;
      const left = deadline - performance.now();
      if (left <= 0) {
        throw new Error(`${out.length} of ${count} receive buffers came back in ${timeoutMs} ms`);
      }
      await this.guest.waitUsed(0, left).catch(() => {});
    }
    return out;
  }
}

/**
 * A second device that keeps looping frames while a test does something
 * else to the first: served on its own socket, with a plain frontend (no
 * IOMMU). {@linkcode Bystander.rounds} counts rounds that came back
 * byte-identical; {@linkcode Bystander.slowestMs} the slowest.
 */
export class Bystander {
  /** Rounds of frames that came back byte-identical. */
  rounds = 0;
  /** The slowest round, in ms. */
  slowestMs = 0;
  /** The first failure, or `""`. */
  failure = "";
  readonly #served: ServedSim;
  readonly #fe: VhostUserFrontend;
  readonly #net: VirtioNetDriver;
  #running: Promise<void> | null = null;
  #stop = false;

  private constructor(served: ServedSim, fe: VhostUserFrontend, net: VirtioNetDriver) {
    this.#served = served;
    this.#fe = fe;
    this.#net = net;
  }

  /** Serve a sim at `sock` and bring a virtio-net guest up on it. */
  static async start(sock: string): Promise<Bystander> {
    const served = await serveSim(sock);
    const fe = await VhostUserFrontend.connect(sock, { memoryMiB: 4 });
    try {
      const net = await VirtioNetDriver.start(fe, { ringSize: 64 });
      return new Bystander(served, fe, net);
    } catch (e) {
      await fe.shutdown();
      await served.close();
      throw e;
    }
  }

  /** Loop rounds of 16 frames until {@linkcode stop}. */
  run(): void {
    this.#running = (async () => {
      for (let r = 0; !this.#stop; r++) {
        const sent = frames(16, r);
        const t0 = performance.now();
        try {
          if (this.#net.send(sent) !== sent.length) throw new Error("transmit ring full");
          const got = await this.#net.waitReceive(sent.length, 0, 2000);
          if (
            got.some((f, i) => f.length !== sent[i].length || f.some((b, k) => b !== sent[i][k]))
          ) {
            throw new Error(`round ${r}: a frame came back changed`);
          }
        } catch (e) {
          this.failure ||= (e as Error).message;
          return;
        }
        this.slowestMs = Math.max(this.slowestMs, performance.now() - t0);
        this.rounds++;
        await new Promise((r) => setTimeout(r, 5));
      }
    })();
  }

  /** Stop looping (after the round under way). */
  async stop(): Promise<void> {
    this.#stop = true;
    await this.#running;
  }

  /** Stop, and close the guest, the frontend and the device. */
  async close(): Promise<void> {
    await this.stop();
    await this.#net.stop().catch(() => {});
    await this.#fe.shutdown();
    await this.#served.close();
  }
}
