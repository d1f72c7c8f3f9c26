/**
 * `sim`: a software virtio-net device, the userspace counterpart of the
 * kernel's `vdpa_sim_net` and of testpmd's vhost PMD. It needs no hardware,
 * so the SDK runs end to end anywhere, and its datapath (one Worker per
 * queue pair, blocking in synchronous `poll` on the kick eventfds) is what
 * the benchmark measures against DPDK's C backend.
 *
 * Modes (`mode` option): `loopback` returns every transmitted frame on the
 * same pair's receive ring, `sink` consumes and counts, `source` fills every
 * posted receive buffer with a `frame-size` frame, `responder` answers ARP
 * and ICMP echo for `ip`. The device offers `VERSION_1`, `MRG_RXBUF`,
 * `INDIRECT_DESC`, `EVENT_IDX` (the last three can be turned off), `MQ`,
 * `MAC`, `STATUS`, `MTU`, `CSUM`, `GUEST_CSUM` and `IN_ORDER`; see
 * `features.ts` for how checksums are handled.
 *
 * Counters per ring (`ops.stats()`): on a transmit ring, frames taken and
 * their bytes, frames not answered (responder) as drops; on a receive ring,
 * frames delivered and their bytes, frames dropped because they did not fit
 * a buffer. Errors are hostile descriptor chains and malformed headers; each
 * is also reported through the device log (rate limited).
 *
 * @example Serve a loopback device
 * ```ts
 * import { VhostMdevDevice } from "@vhost-mdev/sdk";
 * import { VhostUserServer } from "@vhost-mdev/sdk/vhost-user";
 * import { driver } from "@vhost-mdev/sim";
 *
 * const device = await VhostMdevDevice.create(driver, { queues: 2, options: { mode: "loopback" } });
 * const server = VhostUserServer.listen(device, "/tmp/vhost-net0.sock");
 * ```
 *
 * @module
 */

import {
  type DeviceContext,
  type DeviceDescription,
  type Driver,
  NET_RING_COUNTERS,
  type ProbeParams,
  VirtioDeviceId,
} from "@vhost-mdev/sdk";
import { SimDevice } from "./device.ts";
import {
  SIM_MAX_QUEUE_PAIRS,
  SIM_MAX_QUEUE_SIZE,
  simConfigSpace,
  simFeatures,
} from "./features.ts";
import { parseSimOptions, SIM_OPTIONS } from "./options.ts";

export { SimDevice } from "./device.ts";
export type { DatapathFeatures, DatapathSetup, RingSetup } from "./protocol.ts";
export {
  currentDatapathPool,
  DatapathPool,
  type DatapathPoolOptions,
  PoolRun,
  useDatapathPool,
} from "./pool.ts";
export {
  SIM_MAX_QUEUE_PAIRS,
  SIM_MAX_QUEUE_SIZE,
  simConfigSpace,
  simFeatures,
} from "./features.ts";
export {
  parseSimOptions,
  SIM_DEFAULTS,
  SIM_MODES,
  SIM_OPTIONS,
  type SimMode,
  type SimOptions,
} from "./options.ts";

/**
 * The sim driver: `probe` validates the options and queue count and
 * describes a virtio-net device with `2 * queues` rings (no control queue).
 *
 * @example
 * ```ts
 * import { VhostMdevDevice } from "@vhost-mdev/sdk";
 * import { driver } from "@vhost-mdev/sim";
 * const device = await VhostMdevDevice.create(driver, {
 *   queues: 1,
 *   options: { mode: "responder", ip: "10.0.0.1" },
 * });
 * ```
 */
export const driver: Driver = {
  name: "sim",
  description: "software virtio-net device: loopback, sink, source or ARP/ICMP responder",
  pciIds: [],
  options: SIM_OPTIONS,
  probe(ctx: DeviceContext, params: ProbeParams): DeviceDescription {
    const options = parseSimOptions(params.options);
    const queues = params.queues;
    if (!Number.isInteger(queues) || queues < 1 || queues > SIM_MAX_QUEUE_PAIRS) {
      throw new Error(
        `sim: ${queues} queue pairs requested; use 1 to ${SIM_MAX_QUEUE_PAIRS} (one Worker each)`,
      );
    }
    return {
      deviceId: VirtioDeviceId.NET,
      features: simFeatures(options),
      numQueues: 2 * queues,
      maxQueueSize: SIM_MAX_QUEUE_SIZE,
      config: simConfigSpace(options, queues),
      counters: {
        ring: NET_RING_COUNTERS,
        device: [{ name: "announcements", description: "RARP announcements (SEND_RARP)" }],
      },
      ops: new SimDevice(ctx, options, queues),
    };
  },
};
