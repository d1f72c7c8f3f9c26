// A driver and a device over one guest memory, for the virtqueue tests.

import { GuestMemory } from "../../sdk/memory/mod.ts";
import {
  DescriptorChain,
  SplitQueue,
  SplitQueueDriver,
  type SplitQueueDriverLayout,
  type SplitQueueOptions,
} from "../../sdk/virtqueue/mod.ts";

/** Guest-physical base of the test memory. */
export const BASE = 0x100000;
/** Size of the test memory. */
export const SIZE = 0x40000;
/** Where the rings go. */
export const RING_BASE = BASE + 0x1000;
/** Where data buffers go. */
export const DATA = BASE + 0x20000;

/** The pieces of a test queue. */
export interface Rig {
  memory: GuestMemory;
  layout: SplitQueueDriverLayout;
  driver: SplitQueueDriver;
  device: SplitQueue;
  chain: DescriptorChain;
}

/** Options of {@linkcode rig}. */
export interface RigOptions {
  num?: number;
  eventIdx?: boolean;
  indirect?: boolean;
  startIdx?: number;
  reserved?: number;
  indirectSegments?: number;
  device?: Partial<SplitQueueOptions>;
  memory?: GuestMemory;
}

/** A driver and device sharing one memory (fromBuffers unless given). */
export function rig(o: RigOptions = {}): Rig {
  const num = o.num ?? 16;
  const memory = o.memory ?? GuestMemory.fromBuffers([{ gpa: BASE, bytes: new Uint8Array(SIZE) }]);
  const layout = SplitQueueDriver.layout(num, RING_BASE, {
    indirectSegments: o.indirectSegments ?? 8,
  });
  const driver = new SplitQueueDriver(memory, layout, {
    eventIdx: o.eventIdx ?? false,
    indirect: o.indirect ?? false,
    startIdx: o.startIdx ?? 0,
    reserved: o.reserved ?? 0,
  });
  const device = new SplitQueue(memory, layout, {
    lastAvailIdx: o.startIdx ?? 0,
    eventIdx: o.eventIdx ?? false,
    indirect: o.indirect ?? false,
    ...o.device,
  });
  return { memory, layout, driver, device, chain: new DescriptorChain(4) };
}

/** Fill `len` bytes at `gpa` with a pattern derived from `seed`; returns the bytes. */
export function fill(memory: GuestMemory, gpa: number, len: number, seed: number): Uint8Array {
  const b = memory.bytes(gpa, len);
  for (let i = 0; i < len; i++) b[i] = (seed * 31 + i * 7) & 0xff;
  return b.slice();
}
