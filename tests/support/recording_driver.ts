/**
 * A driver for tests: offers virtio-net features, records every op the SDK
 * calls with the ring state it saw, and never touches the rings.
 *
 * @module
 */

import { until } from "@vhost-mdev/testing";
import {
  bit,
  type DeviceContext,
  type Driver,
  type RingPosition,
  VirtioDeviceId,
  VirtioFeatureBit as F,
  VirtioNetFeatureBit as N,
  type VringInfo,
} from "@vhost-mdev/sdk";

/** One recorded call. */
export interface RecordedCall {
  op:
    | "start"
    | "stop"
    | "notify"
    | "getVringState"
    | "featuresChanged"
    | "startRing"
    | "stopRing"
    | "suspend"
    | "resume"
    | "setStatus";
  queue?: number;
  status?: number;
  features?: bigint;
  rings?: VringInfo[];
  /** Whether every enabled ring's addresses fell inside the memory table at start. */
  ringsInMemory?: boolean;
}

/** The recorder: the driver plus what it saw. */
export interface Recorder {
  driver: Driver;
  calls: RecordedCall[];
  /** The context the SDK handed to probe. */
  ctx: () => DeviceContext;
  /** Wait until `pred` holds on the calls (polling every 10 ms), or throw after `ms`. */
  until(pred: (calls: RecordedCall[]) => boolean, ms?: number, what?: string): Promise<void>;
  count(op: RecordedCall["op"]): number;
}

/** The virtio-net features testpmd's virtio_user wants. */
export const NET_FEATURES: bigint = [
  F.VERSION_1,
  N.MRG_RXBUF,
  N.MQ,
  F.EVENT_IDX,
  N.MAC,
  N.STATUS,
  F.INDIRECT_DESC,
].reduce((m, b) => m | bit(b), 0n);

/** What a recorder can do beyond `start`, `stop`, `notify` and `getVringState`. */
export interface RecorderOptions {
  /** `start` throws. */
  failStart?: boolean;
  /** Largest ring size (default 1024). */
  maxQueueSize?: number;
  /** Has `startRing` and `stopRing`. */
  perRing?: boolean;
  /** Has `suspend` and `resume`. */
  suspend?: boolean;
  /** Has `setStatus`, refusing `FEATURES_OK` when this is true. */
  refuseFeatures?: boolean;
  /** What `getVringState(q)` returns for the rings it holds (else `ctx.vring(q).state`). */
  states?: Map<number, RingPosition>;
}

/** Make a recorder. */
export function recordingDriver(options: RecorderOptions = {}): Recorder {
  const calls: RecordedCall[] = [];
  let ctx: DeviceContext | undefined;
  const snapshot = (c: DeviceContext) =>
    Array.from({ length: c.numQueues }, (_, i) => ({ ...c.vring(i) }) as VringInfo);
  const driver: Driver = {
    name: "recorder",
    description: "records the ops the SDK calls",
    pciIds: [],
    probe(c, params) {
      ctx = c;
      return {
        deviceId: VirtioDeviceId.NET,
        features: NET_FEATURES,
        numQueues: 2 * params.queues,
        maxQueueSize: options.maxQueueSize ?? 1024,
        config: new Uint8Array([0x52, 0x54, 0, 0x12, 0x34, 0x56, 1, 0, params.queues, 0, 0xdc, 5]),
        ops: {
          start() {
            const rings = snapshot(c);
            let inMemory = true;
            for (const r of rings.filter((r) => r.enabled)) {
              const m = c.memory;
              if (
                m.find(r.descAddr, 16 * r.num) < 0 || m.find(r.availAddr, 4 + 2 * r.num) < 0 ||
                m.find(r.usedAddr, 4 + 8 * r.num) < 0
              ) inMemory = false;
            }
            calls.push({ op: "start", rings, ringsInMemory: inMemory });
            if (options.failStart) throw new Error("start failed on purpose");
          },
          stop() {
            calls.push({ op: "stop" });
          },
          notify(q) {
            calls.push({ op: "notify", queue: q });
          },
          getVringState(q) {
            calls.push({ op: "getVringState", queue: q });
            return options.states?.get(q) ?? c.vring(q).state;
          },
          ...options.perRing
            ? {
              startRing(q: number) {
                calls.push({ op: "startRing", queue: q, rings: snapshot(c) });
              },
              stopRing(q: number) {
                calls.push({ op: "stopRing", queue: q });
              },
            }
            : {},
          ...options.suspend
            ? {
              suspend() {
                calls.push({ op: "suspend" });
              },
              resume() {
                calls.push({ op: "resume" });
              },
            }
            : {},
          ...options.refuseFeatures !== undefined
            ? {
              setStatus(status: number) {
                calls.push({ op: "setStatus", status });
                return !options.refuseFeatures;
              },
            }
            : {},
          featuresChanged(f) {
            calls.push({ op: "featuresChanged", features: f });
          },
        },
      };
    },
  };
  return {
    driver,
    calls,
    ctx: () => {
      if (!ctx) throw new Error("not probed");
      return ctx;
    },
    count: (op) => calls.filter((c) => c.op === op).length,
    until(pred, ms = 15000, what = "condition") {
      const seen = () => `${what}; calls: ${calls.map((c) => c.op + (c.queue ?? "")).join(",")}`;
      return until(seen, () => pred(calls), ms);
    },
  };
}
