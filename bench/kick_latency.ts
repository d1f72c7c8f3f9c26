/**
 * Kick-to-notify latency: how long after a frontend writes a ring's kick
 * eventfd the driver's `ops.notify(q)` runs (the RFC's `handle_vq_kick`
 * path). A device whose driver implements `notify` is served in this process
 * over a vhost-user socket; the SDK's TypeScript frontend brings it up,
 * then writes the kick eventfd and timestamps, and `notify` timestamps on
 * arrival, both with `performance.now()` of this thread.
 *
 * A second phase drives a bare {@linkcode KickRelay} on an eventfd to split
 * the path: write -> the relay Worker woke from `poll` (the `time` it posts,
 * `performance.timeOrigin + performance.now()` of the Worker) and write ->
 * its message reached this thread.
 *
 * A third phase gives the bare relay a doorbell in an anonymous mapping, as
 * a hardware driver hands it a virtio-pci notify register (virtio 1.2
 * §4.1.4.4): this thread resets the register to 0, writes the kick eventfd
 * and timestamps, then spins reading the register until the relay Worker
 * stored the value, and timestamps again. No message reaches this thread on
 * that path, so write -> store is the whole kick latency a device sees.
 *
 * @module
 */

import {
  bit,
  type Driver,
  VhostMdevDevice,
  VirtioDeviceId,
  VirtioFeatureBit,
  VirtioStatus,
} from "@vhost-mdev/sdk";
import { VhostUserServer } from "@vhost-mdev/sdk/vhost-user";
import { KickRelay } from "../sdk/core/kick_relay.ts";
import { close, eventfd, eventfdWrite, mmapAnonymous } from "@vhost-mdev/sdk/sys";
import { VhostUserFrontend } from "@vhost-mdev/testing";
import { quantile } from "./summary.ts";

/** Kicks before the measured ones (the relay Worker and JIT settle). */
export const KICK_WARMUP = 200;
/** Microseconds between a notify and the next kick, so the relay is asleep in `poll`. */
export const KICK_GAP_US = 50;

/** p50/p99 (and more) of one latency, microseconds. */
export interface LatencyStats {
  /** Samples kept (after warm-up). */
  samples: number;
  /** Median, microseconds. */
  p50: number;
  /** 90th percentile, microseconds. */
  p90: number;
  /** 99th percentile, microseconds. */
  p99: number;
  /** Largest sample, microseconds. */
  max: number;
}

/** Results of {@linkcode measureKickLatency}. */
export interface KickLatencyResult {
  /** Frontend's kick eventfd write -> the driver's `notify` ran (through the device). */
  kickToNotify: LatencyStats;
  /** Write -> the relay Worker returned from `poll` (bare relay). */
  kickToRelayWake: LatencyStats;
  /** Write -> the relay's message was handled on the main thread (bare relay). */
  kickToRelayMessage: LatencyStats;
  /** Write -> the relay Worker stored the ring's doorbell (bare relay, no message). */
  kickToDoorbell: LatencyStats;
}

/** The queue and value of the doorbell phase (non-zero, so a store is told from the reset). */
const DOORBELL_QUEUE = 1;

/** Microsecond statistics of millisecond samples. */
export function latencyStats(ms: readonly number[]): LatencyStats {
  const us = ms.map((v) => v * 1000);
  return {
    samples: us.length,
    p50: quantile(us, 0.5),
    p90: quantile(us, 0.9),
    p99: quantile(us, 0.99),
    max: us.length ? Math.max(...us) : NaN,
  };
}

/** Spin (without yielding) for `us` microseconds: lets the relay go back to sleep in `poll`. */
function spin(us: number): void {
  const until = performance.now() + us / 1000;
  while (performance.now() < until) {
    // busy wait
  }
}

/** A one-ring device that does nothing but report `notify`. */
function notifyDriver(onNotify: (queue: number) => void): Driver {
  return {
    name: "kick-latency",
    description: "reports every relayed kick, moves no packets",
    pciIds: [],
    probe(ctx) {
      return {
        deviceId: VirtioDeviceId.NET,
        features: bit(VirtioFeatureBit.VERSION_1) | bit(VirtioFeatureBit.PROTOCOL_FEATURES),
        numQueues: 1,
        maxQueueSize: 256,
        ops: {
          start() {},
          stop() {},
          notify: onNotify,
          getVringState: (q) => ctx.vring(q).state,
        },
      };
    },
  };
}

/** Kick `kickFd` `n` times, each after the previous one arrived; returns write->arrival (ms). */
async function kickLoop(
  n: number,
  gapUs: number,
  kickFd: number,
  arrivals: { next: ((t: number) => void) | null },
): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    spin(gapUs);
    const arrived = new Promise<number>((r) => arrivals.next = r);
    const t0 = performance.now();
    eventfdWrite(kickFd, 1);
    const t1 = await withTimeout(arrived, 2000, `kick ${i} never reached notify`);
    out.push(t1 - t0);
  }
  return out;
}

async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, rej) => timer = setTimeout(() => rej(new Error(what)), ms)),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Measure kick-to-notify latency with `samples` kicks (after `warmup` more),
 * each `gapUs` microseconds after the previous notify.
 */
export async function measureKickLatency(
  dir: string,
  samples: number,
  warmup: number = KICK_WARMUP,
  gapUs: number = KICK_GAP_US,
): Promise<KickLatencyResult> {
  const arrivals: { next: ((t: number) => void) | null } = { next: null };
  const onNotify = () => {
    const t = performance.now();
    const next = arrivals.next;
    arrivals.next = null;
    next?.(t);
  };

  // Phase 1: through the device, as a driver sees it.
  const path = `${dir}/kick-latency.sock`;
  const device = await VhostMdevDevice.create(notifyDriver(onNotify), { queues: 1, options: {} });
  const server = VhostUserServer.listen(device, path);
  let fe: VhostUserFrontend | null = null;
  let kickToNotify: number[];
  try {
    fe = await VhostUserFrontend.connect(path, { memoryMiB: 1 });
    const offered = await fe.handshake();
    await fe.setFeatures(offered);
    await fe.setStatus(VirtioStatus.ACKNOWLEDGE | VirtioStatus.DRIVER | VirtioStatus.FEATURES_OK);
    await fe.setMemTable();
    await fe.setupRing(0, { num: 256, descAddr: 0x1000, availAddr: 0x2000, usedAddr: 0x3000 });
    await fe.setVringEnable(0, true);
    await fe.setStatus(0xf);
    const deadline = Date.now() + 5000;
    while (!device.running) {
      if (Date.now() > deadline) throw new Error("kick latency: the device did not start");
      await new Promise((r) => setTimeout(r, 10));
    }
    const kick = fe.kickFd(0);
    await kickLoop(warmup, gapUs, kick, arrivals);
    kickToNotify = await kickLoop(samples, gapUs, kick, arrivals);
  } finally {
    fe?.close();
    await server.close();
    await device.close();
  }

  // Phase 2: the bare relay, to see where the time goes.
  const wakes: number[] = [];
  const fd = eventfd(0, { nonBlocking: true });
  let writeAt = 0;
  const relay = new KickRelay([{ queue: 0, fd }], (_q, time) => {
    onNotify();
    wakes.push(time - (performance.timeOrigin + writeAt));
  });
  let message: number[];
  try {
    // The write is timestamped just before it, as in phase 1.
    const loop = async (n: number) => {
      const out: number[] = [];
      for (let i = 0; i < n; i++) {
        spin(gapUs);
        const arrived = new Promise<number>((r) => arrivals.next = r);
        writeAt = performance.now();
        eventfdWrite(fd, 1);
        const t1 = await withTimeout(arrived, 2000, `relay kick ${i} never arrived`);
        out.push(t1 - writeAt);
      }
      return out;
    };
    await loop(warmup);
    wakes.length = 0;
    message = await loop(samples);
  } finally {
    await relay.stop();
    close(fd);
  }
  return {
    kickToNotify: latencyStats(kickToNotify),
    kickToRelayWake: latencyStats(wakes),
    kickToRelayMessage: latencyStats(message),
    kickToDoorbell: await measureDoorbellLatency(samples, warmup, gapUs),
  };
}

/**
 * Write -> doorbell stored, `samples` times after `warmup` more (ms each).
 * Synchronous: this thread spins on the register, the relay Worker stores.
 */
function measureDoorbellSamples(
  relay: KickRelay,
  fd: number,
  reg: Uint16Array,
  n: number,
  gapUs: number,
): number[] {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    spin(gapUs);
    Atomics.store(reg, 0, 0);
    const t0 = performance.now();
    eventfdWrite(fd, 1);
    let t1 = t0;
    for (let spins = 1;; spins++) {
      if (Atomics.load(reg, 0) === DOORBELL_QUEUE) {
        t1 = performance.now();
        break;
      }
      if ((spins & 0xfff) === 0 && performance.now() - t0 > 2000) {
        throw new Error(
          `doorbell kick ${i} was never stored (${relay.doorbellsRung(DOORBELL_QUEUE)} rung)`,
        );
      }
    }
    out.push(t1 - t0);
  }
  return out;
}

/**
 * Kick-to-doorbell latency alone: a bare {@linkcode KickRelay} whose ring
 * has a 16-bit doorbell in an anonymous page; `samples` kicks after
 * `warmup` more, each `gapUs` microseconds after the previous store.
 */
export async function measureDoorbellLatency(
  samples: number,
  warmup: number = KICK_WARMUP,
  gapUs: number = KICK_GAP_US,
): Promise<LatencyStats> {
  const page = mmapAnonymous(4096);
  const reg = new Uint16Array(page.buffer, 0, 1);
  const fd = eventfd(0, { nonBlocking: true });
  const errors: string[] = [];
  const relay = new KickRelay(
    [{
      queue: DOORBELL_QUEUE,
      fd,
      doorbell: { address: page.address, width: 2, value: DOORBELL_QUEUE },
    }],
    () => errors.push("a doorbell ring's kick reached the main thread"),
    (m) => errors.push(m),
  );
  let ms: number[];
  try {
    measureDoorbellSamples(relay, fd, reg, warmup, gapUs);
    ms = measureDoorbellSamples(relay, fd, reg, samples, gapUs);
  } finally {
    // The Worker may store into the page until it confirmed it stopped:
    // unmap only then (otherwise the page stays mapped for good).
    if (await relay.stop()) {
      page.unmap();
      close(fd);
    }
  }
  // Messages from the Worker have all been handled once it confirmed the stop.
  if (errors.length) throw new Error(`doorbell phase: ${errors.join("; ")}`);
  return latencyStats(ms);
}
