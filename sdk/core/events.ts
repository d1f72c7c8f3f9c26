/**
 * Lifecycle events of a device and its frontend sessions. The CLI prints
 * them as lines or JSON; embedders subscribe with
 * `VhostMdevDevice.addListener`.
 *
 * @module
 */

/** Kinds of lifecycle event. */
export type DeviceEventType =
  | "connected"
  | "refused"
  | "disconnected"
  | "features"
  | "memory"
  | "status"
  | "start"
  | "stop"
  | "ring-start"
  | "ring-stop"
  | "suspend"
  | "resume"
  | "reset"
  | "info"
  | "warn"
  | "error"
  | "debug";

/** One lifecycle event. */
export interface DeviceEvent {
  /** What happened. */
  type: DeviceEventType;
  /** A sentence for people. */
  message: string;
  /** Name of the device (driver name, or the name given at creation). */
  device: string;
  /** Milliseconds since the epoch. */
  time: number;
  /** Machine-readable details (ring sizes, feature masks as hex strings...). */
  fields?: Record<string, unknown>;
}

/** Receives lifecycle events. Must not throw; exceptions are ignored. */
export type DeviceEventListener = (event: DeviceEvent) => void;

/** A set of listeners, and the function that emits to all of them. */
export class DeviceEventHub {
  #listeners = new Set<DeviceEventListener>();

  /**
   * Make an empty hub.
   *
   * @param device Name put in every event.
   */
  constructor(readonly device: string) {}

  /** Add `listener`; returns a function that removes it. */
  add(listener: DeviceEventListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Send an event to every listener. */
  emit(type: DeviceEventType, message: string, fields?: Record<string, unknown>): void {
    const event: DeviceEvent = { type, message, device: this.device, time: Date.now() };
    if (fields) event.fields = fields;
    for (const l of this.#listeners) {
      try {
        l(event);
      } catch {
        // A listener's failure must not take the device down.
      }
    }
  }
}
