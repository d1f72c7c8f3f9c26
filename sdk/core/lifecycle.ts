/**
 * How a device's rings run: the driver's `start`/`stop` of the whole
 * device, `startRing`/`stopRing` of one ring (with the whole-device
 * fallback, logged), `suspend`/`resume`, the ring state asked of the driver
 * whenever a ring stops, and what runs beside the rings: the kick relay
 * (doorbells rung by its Worker, or `notify` on this thread) and host
 * notifiers. The device core (`device.ts`) decides *when*; this decides
 * *how*, and keeps the rule that the relay is stopped before the driver may
 * unmap what it rings.
 *
 * @module
 */

import type { DeviceOps } from "../ops.ts";
import type { DeviceOwner } from "./device.ts";
import type { DeviceEventHub } from "./events.ts";
import { checkDoorbell, type Doorbell } from "./doorbell.ts";
import { KickRelay, type WatchedKick } from "./kick_relay.ts";
import { checkRingPosition, type RingState } from "./ring.ts";
import { RequestRefused } from "./errors.ts";

/** What the lifecycle needs of its device. */
export interface LifecycleHost {
  /** The driver's ops. */
  readonly ops: DeviceOps;
  /** Every ring. */
  readonly rings: readonly RingState[];
  /** The device's events. */
  readonly events: DeviceEventHub;
  /** The attached frontend (for host notifiers), if any. */
  owner(): DeviceOwner | null;
  /** Whether the rings are packed (`RING_PACKED` acked). */
  packed(): boolean;
  /** Report a device error (`ctx.reportError`). */
  reportError(text: string, queue?: number): void;
  /** Keep the device stopped until the frontend enables or kicks a ring, or sets status. */
  park(): void;
  /** Ring `r` stopped or was suspended (its state is saved): log its used ring. */
  halted(r: RingState): void;
}

/** The running state of one device's rings; see the module doc. */
export class DeviceLifecycle {
  readonly #host: LifecycleHost;
  #running = false;
  #suspended = false;
  #relay: KickRelay | null = null;
  readonly #rung: number[];

  /** A device whose rings do not run yet. */
  constructor(host: LifecycleHost) {
    this.#host = host;
    this.#rung = new Array(host.rings.length).fill(0);
  }

  /** Whether the device is RUNNING (the driver's `start` returned and no `stop` since). */
  get running(): boolean {
    return this.#running;
  }

  /** Whether the device is suspended: running, but no ring is processed until `resume`. */
  get suspended(): boolean {
    return this.#suspended;
  }

  /** Whether the driver starts and stops single rings. */
  get perRing(): boolean {
    return this.#host.ops.startRing !== undefined && this.#host.ops.stopRing !== undefined;
  }

  runningRings(): RingState[] {
    return this.#host.rings.filter((r) => r.running);
  }

  async start(): Promise<void> {
    if (this.#running) return;
    const rings = this.#host.rings.filter((r) => r.enabled && r.ready);
    for (const r of rings) r.running = true;
    try {
      await this.#host.ops.start();
    } catch (e) {
      for (const r of rings) r.running = false;
      this.#host.park();
      this.#host.reportError(`driver start failed: ${message(e)}`);
      throw new RequestRefused(`the driver failed to start the device: ${message(e)}`);
    }
    this.#running = true;
    this.#suspended = false;
    this.#host.events.emit(
      "start",
      `start: ${rings.length} ring(s) ` + rings.map((r) => `${r.index}:${r.num}`).join(" "),
      { rings: rings.map((r) => r.describe()) },
    );
    await this.#startRelay();
    this.#offerHostNotifiers(rings, true);
  }

  async stop(reason: string): Promise<void> {
    if (!this.#running) return;
    const rings = this.runningRings();
    this.#running = false;
    this.#offerHostNotifiers(rings, false);
    await this.#stopRelay();
    try {
      await this.#host.ops.stop();
    } catch (e) {
      this.#host.events.emit(
        "error",
        `driver stop failed (device considered stopped): ${message(e)}`,
      );
    }
    this.#suspended = false;
    // Carry each ring's progress into its state, so a restart resumes there.
    for (const r of rings) {
      r.running = false;
      await this.saveState(r);
    }
    this.#host.events.emit("stop", `stop: ${reason}`, {
      bases: Object.fromEntries(rings.map((r) => [r.index, r.state.availIdx])),
      states: Object.fromEntries(rings.map((r) => [r.index, r.state])),
    });
  }

  /** Start ring `r` on a running device: `startRing`, or a whole restart. */
  async startRing(r: RingState): Promise<void> {
    if (!this.perRing) {
      await this.restart(`ring ${r.index} became ready`);
      return;
    }
    r.running = true;
    try {
      await this.#host.ops.startRing!(r.index);
    } catch (e) {
      r.running = false;
      this.#host.reportError(`driver startRing(${r.index}) failed: ${message(e)}`, r.index);
      throw new RequestRefused(`the driver failed to start ring ${r.index}: ${message(e)}`);
    }
    this.#host.events.emit(
      "ring-start",
      `ring ${r.index} started (${r.num} entries)`,
      r.describe(),
    );
    await this.#startRelay();
    this.#offerHostNotifiers([r], true);
  }

  /** Stop ring `r` on a running device: `stopRing`, or a whole stop. */
  async stopRing(r: RingState, reason: string): Promise<void> {
    if (!r.running) return;
    if (!this.perRing || this.#suspended) {
      this.#host.events.emit(
        "debug",
        `ring ${r.index} ${reason}: the driver stops whole devices only, so the device stops`,
      );
      await this.stop(`ring ${r.index} ${reason}`);
      return;
    }
    this.#offerHostNotifiers([r], false);
    r.running = false;
    await this.#startRelay();
    try {
      await this.#host.ops.stopRing!(r.index);
    } catch (e) {
      this.#host.events.emit(
        "error",
        `driver stopRing(${r.index}) failed (ring considered stopped): ${message(e)}`,
      );
    }
    await this.saveState(r);
    this.#host.events.emit("ring-stop", `ring ${r.index} stopped: ${reason}`, {
      queue: r.index,
      state: r.state,
    });
  }

  /** Restart the whole device (a driver without per-ring ops), saying so. */
  async restart(reason: string): Promise<void> {
    this.#host.events.emit(
      "info",
      `${reason}: the driver has no startRing/stopRing, so the whole device restarts`,
    );
    await this.stop(reason);
    await this.start();
  }

  /** Pause every ring (`suspend`, or `stop` for a driver without it). */
  async suspend(reason: string): Promise<void> {
    if (!this.#running || this.#suspended) return;
    if (!this.#host.ops.suspend || !this.#host.ops.resume) {
      this.#host.park();
      await this.stop(reason);
      return;
    }
    const rings = this.runningRings();
    this.#offerHostNotifiers(rings, false);
    await this.#stopRelay();
    try {
      await this.#host.ops.suspend();
    } catch (e) {
      this.#host.events.emit(
        "error",
        `driver suspend failed (device stopped instead): ${message(e)}`,
      );
      this.#host.park();
      await this.stop(reason);
      return;
    }
    this.#suspended = true;
    for (const r of rings) await this.saveState(r);
    this.#host.events.emit("suspend", `suspend: ${reason}`, {
      rings: Object.fromEntries(rings.map((r) => [r.index, r.state])),
    });
  }

  async resume(): Promise<void> {
    try {
      await this.#host.ops.resume!();
    } catch (e) {
      this.#host.reportError(`driver resume failed: ${message(e)}`);
      throw new RequestRefused(`the driver failed to resume the device: ${message(e)}`);
    }
    this.#suspended = false;
    const rings = this.runningRings();
    this.#host.events.emit("resume", `resume: ${rings.length} ring(s)`);
    await this.#startRelay();
    this.#offerHostNotifiers(rings, true);
  }

  /** Ask the driver where ring `r` got to and keep it as the ring's state. */
  async saveState(r: RingState): Promise<void> {
    this.#host.halted(r);
    try {
      const state = await this.#host.ops.getVringState(r.index);
      const why = checkRingPosition(state, this.#host.packed());
      if (why !== null) {
        this.#host.events.emit(
          "warn",
          `driver getVringState(${r.index}): ${why}; ring ${r.index} keeps its last state`,
        );
        return;
      }
      r.state = {
        availIdx: state.availIdx,
        usedIdx: state.usedIdx,
        availWrap: state.availWrap,
        usedWrap: state.usedWrap,
      };
    } catch (e) {
      this.#host.events.emit("warn", `getVringState(${r.index}) failed: ${message(e)}`);
    }
  }

  /**
   * (Re)start the kick relay for the running rings: each kick rings the
   * driver's doorbell from the relay Worker, or reaches `notify` on this
   * thread. No relay when no ring needs one.
   */
  async #startRelay(): Promise<void> {
    await this.#stopRelay();
    if (!this.#running || this.#suspended) return;
    const ops = this.#host.ops;
    const notify = ops.notify?.bind(ops);
    const watched: WatchedKick[] = [];
    for (const r of this.runningRings()) {
      if (r.kickFd < 0) continue;
      let doorbell: Doorbell | null = null;
      try {
        doorbell = ops.doorbell?.(r.index) ?? null;
        if (doorbell) checkDoorbell(doorbell, r.index);
      } catch (e) {
        this.#host.events.emit("warn", `ring ${r.index}: ${message(e)}; its kicks go to notify`);
        doorbell = null;
      }
      if (doorbell) watched.push({ queue: r.index, fd: r.kickFd, doorbell });
      else if (notify) watched.push({ queue: r.index, fd: r.kickFd });
    }
    if (watched.length === 0) return;
    this.#relay = new KickRelay(watched, (q) => {
      try {
        const done = notify?.(q) as unknown;
        if (done instanceof Promise) {
          done.catch((e) =>
            this.#host.events.emit("error", `driver notify(${q}) failed: ${message(e)}`)
          );
        }
      } catch (e) {
        this.#host.events.emit("error", `driver notify(${q}) failed: ${message(e)}`);
      }
    }, (why) => this.#host.reportError(`kick relay: ${why}`));
  }

  /** Kicks that rang ring `q`'s doorbell from the relay Worker since the device was created. */
  doorbellsRung(q: number): number {
    return (this.#rung[q] ?? 0) + (this.#relay ? relayCount(this.#relay, q) : 0);
  }

  async #stopRelay(): Promise<void> {
    const relay = this.#relay;
    if (!relay) return;
    this.#relay = null;
    const stopped = await relay.stop();
    for (let q = 0; q < this.#host.rings.length; q++) this.#rung[q] += relayCount(relay, q);
    if (!stopped) {
      this.#host.reportError(
        "the kick relay Worker did not stop and was terminated: doorbell mappings it used " +
          "must stay mapped",
      );
    }
  }

  #offerHostNotifiers(rings: RingState[], on: boolean): void {
    const owner = this.#host.owner();
    if (!owner?.setHostNotifier || !this.#host.ops.getNotifyAddr) return;
    for (const r of rings) {
      try {
        const area = on ? this.#host.ops.getNotifyAddr(r.index) : null;
        if (on && !area) continue;
        owner.setHostNotifier(r.index, area);
      } catch (e) {
        this.#host.events.emit("warn", `host notifier for ring ${r.index}: ${message(e)}`);
      }
    }
  }
}

/** Doorbells `relay` rang for ring `q` (0 when it does not watch the ring). */
function relayCount(relay: KickRelay, q: number): number {
  return relay.doorbellsRung(q);
}

/** The message of an unknown thrown value. */
function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
