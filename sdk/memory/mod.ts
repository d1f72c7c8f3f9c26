/**
 * Guest memory: the frontend's memory table mapped into this process, with
 * bounds-checked translation from guest-physical and frontend-virtual
 * addresses, and the dirty-page log of live migration.
 *
 * @example
 * ```ts
 * import { GuestMemory } from "@vhost-mdev/sdk";
 * const memory = GuestMemory.fromBuffers([{ gpa: 0, bytes: new Uint8Array(4096) }]);
 * memory.find(4000, 96); // 0: inside region 0
 * memory.find(4000, 97); // -1: one byte past the end
 * ```
 *
 * @module
 */

export {
  DEFAULT_TABLE_BYTES_LIMIT,
  GuestMemory,
  GuestMemoryError,
  type GuestRegion,
  type MapOptions,
  mappedGuestBytes,
  type MemoryLease,
  type MemoryRegionSpec,
  PROCESS_MAPPED_BYTES_LIMIT,
  type SharedRegion,
  TranslationFault,
} from "./guest_memory.ts";
export {
  DEFAULT_IOTLB_CAPACITY,
  Iotlb,
  type IotlbEntry,
  type IotlbMiss,
  type IotlbOptions,
  IotlbView,
  MISS_QUEUE_SLOTS,
  type SharedIotlb,
} from "./iotlb.ts";
export {
  DIRTY_LOG_PAGE_SIZE,
  DirtyLog,
  type DirtyLogMapOptions,
  MAX_DIRTY_LOG_BYTES,
  type SharedDirtyLog,
} from "./dirty_log.ts";
