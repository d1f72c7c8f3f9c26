/**
 * Virtqueues: split (virtio 1.2 §2.7) and packed (§2.8).
 * {@linkcode SplitQueue} and {@linkcode PackedQueue} are the device sides a
 * software device runs, both behind the {@linkcode Virtqueue} interface that
 * {@linkcode openVirtqueue} picks from the negotiated features;
 * {@linkcode SplitQueueDriver} and {@linkcode PackedQueueDriver} the driver
 * sides the test kit's guests run; {@linkcode DescriptorChain} the reusable
 * chain container; `layout.ts` and `packed_layout.ts` the ring layouts and
 * flag constants.
 *
 * @example A round trip over one memory
 * ```ts
 * import { DescriptorChain, GuestMemory, SplitQueue, SplitQueueDriver } from "@vhost-mdev/sdk";
 *
 * const layout = SplitQueueDriver.layout(16, 0x1000);
 * const memory = GuestMemory.fromBuffers([{ gpa: 0, bytes: new Uint8Array(0x10000) }]);
 * const driver = new SplitQueueDriver(memory, layout, { eventIdx: false });
 * const device = new SplitQueue(memory, layout, { lastAvailIdx: 0, eventIdx: false, indirect: false });
 *
 * memory.bytes(0x8000, 3).set([1, 2, 3]);
 * driver.add([{ gpa: 0x8000, len: 3, write: false }], 1);
 * driver.publish();
 *
 * const chain = new DescriptorChain();
 * const got = new Uint8Array(3);
 * if (device.pop(chain)) device.readChain(chain, got); // got = [1, 2, 3]
 * device.pushUsed(chain.head, 0);
 * device.publishUsed();
 * ```
 *
 * @module
 */

export {
  AVAIL_ALIGN,
  availEventOffset,
  availRingSize,
  DESC_ALIGN,
  DESC_SIZE,
  descTableSize,
  isValidQueueSize,
  MAX_QUEUE_SIZE,
  type RingViews,
  ringViews,
  type SplitQueueLayout,
  USED_ALIGN,
  USED_ELEM_SIZE,
  usedEventOffset,
  usedRingSize,
  VIRTQ_AVAIL_F_NO_INTERRUPT,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  VIRTQ_USED_F_NO_NOTIFY,
  vringNeedEvent,
} from "./layout.ts";
export {
  DESCRIPTOR_CHAIN_ERROR_KINDS,
  DescriptorChain,
  DescriptorChainError,
  type DescriptorChainErrorKind,
  WritableBuffers,
} from "./descriptor.ts";
export { SplitQueue, type SplitQueueCounters, type SplitQueueOptions } from "./split_queue.ts";
export { IOTLB_MISS_TIMEOUT_MS } from "./translation_wait.ts";
export {
  SplitQueueDriver,
  type SplitQueueDriverLayout,
  type SplitQueueDriverOptions,
  type UsedBuffer,
} from "./split_driver.ts";
export {
  encodePackedIndex,
  EVENT_SUPPRESS_ALIGN,
  EVENT_SUPPRESS_SIZE,
  isValidPackedQueueSize,
  MAX_PACKED_QUEUE_SIZE,
  type PackedQueueLayout,
  packedRingSize,
  type PackedRingViews,
  packedRingViews,
  RING_EVENT_FLAGS_DESC,
  RING_EVENT_FLAGS_DISABLE,
  RING_EVENT_FLAGS_ENABLE,
  VIRTQ_DESC_F_AVAIL,
  VIRTQ_DESC_F_USED,
} from "./packed_layout.ts";
export { PackedQueue, type PackedQueueOptions } from "./packed_queue.ts";
export {
  PackedQueueDriver,
  type PackedQueueDriverLayout,
  type PackedQueueDriverOptions,
} from "./packed_driver.ts";
export {
  decodeRingIndex,
  encodeRingIndex,
  openVirtqueue,
  type Virtqueue,
  type VirtqueueDriver,
  type VirtqueueOptions,
} from "./queue.ts";
