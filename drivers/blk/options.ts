/**
 * The blk device's options (`--file`, `--readonly`, ...) and their
 * validation.
 *
 * @module
 */

import type { DriverOption } from "@vhost-mdev/sdk";

/** The validated options of one blk device. */
export interface BlkOptions {
  /** The backing regular file or raw block device. */
  file: string;
  /** Refuse writes and offer `VIRTIO_BLK_F_RO` (virtio 1.2 §5.2.3). */
  readonly: boolean;
  /** Open the backing file with `O_DIRECT` (no host page cache). */
  direct: boolean;
  /** Logical block size in bytes (`blk_size`), a power of two from 512 to 65536. */
  blockSize: number;
  /** The ID string `VIRTIO_BLK_T_GET_ID` returns, at most 20 bytes. */
  serial: string;
  /**
   * Track in-flight requests in the frontend's inflight region
   * (`INFLIGHT_SHMFD`), so a restarted backend resubmits them.
   */
  inflight: boolean;
}

/** Defaults of the options. */
export const BLK_DEFAULTS: Readonly<Record<string, string>> = {
  readonly: "false",
  direct: "false",
  "block-size": "512",
  serial: "",
  inflight: "true",
};

/** The options as the CLI lists them (`--driver blk --help`). */
export const BLK_OPTIONS: readonly DriverOption[] = [
  { name: "file", description: "backing regular file or raw block device (required)" },
  {
    name: "readonly",
    description: "refuse writes (VIRTIO_BLK_F_RO); `--readonly` alone means true",
    values: ["false", "true"],
    default: BLK_DEFAULTS.readonly,
  },
  {
    name: "direct",
    description: "open the backing file with O_DIRECT, bypassing the host page cache",
    values: ["false", "true"],
    default: BLK_DEFAULTS.direct,
  },
  {
    name: "block-size",
    description: "logical block size in bytes (blk_size), a power of two from 512 to 65536",
    default: BLK_DEFAULTS["block-size"],
  },
  {
    name: "serial",
    description: "device ID for VIRTIO_BLK_T_GET_ID, at most 20 bytes (default: the file's name)",
  },
  {
    name: "inflight",
    description: "track in-flight requests (INFLIGHT_SHMFD) so a restarted backend resubmits " +
      "them; false withholds the feature",
    values: ["false", "true"],
    default: BLK_DEFAULTS.inflight,
  },
];

/** Bytes of the ID string (virtio 1.2 §5.2.6: `VIRTIO_BLK_ID_BYTES`). */
const ID_BYTES = 20;

function flag(name: string, value: string): boolean {
  if (value === "true" || value === "") return true;
  if (value === "false") return false;
  throw new RangeError(`blk: --${name} ${value}: give true or false`);
}

/**
 * Validate the device's options (given ones over {@linkcode BLK_DEFAULTS}).
 *
 * @example
 * ```ts
 * import { parseBlkOptions } from "./options.ts";
 * const o = parseBlkOptions({ file: "/tmp/disk.img", readonly: "true" });
 * console.log(o.readonly, o.blockSize, o.serial); // true 512 disk.img
 * ```
 *
 * @throws RangeError naming the option that is missing or out of range.
 */
export function parseBlkOptions(given: Readonly<Record<string, string>>): BlkOptions {
  const o = { ...BLK_DEFAULTS, ...given };
  const file = o.file;
  if (!file) throw new RangeError("blk: --file is required (a regular file or block device)");
  const blockSize = Number(o["block-size"]);
  if (
    !Number.isInteger(blockSize) || blockSize < 512 || blockSize > 65536 ||
    (blockSize & (blockSize - 1)) !== 0
  ) {
    throw new RangeError(
      `blk: --block-size ${o["block-size"]} is not a power of two from 512 to 65536`,
    );
  }
  const serial = o.serial === "" ? file.slice(file.lastIndexOf("/") + 1) : o.serial;
  const serialBytes = new TextEncoder().encode(serial).length;
  if (o.serial !== "" && serialBytes > ID_BYTES) {
    throw new RangeError(`blk: --serial is ${serialBytes} bytes, more than ${ID_BYTES}`);
  }
  return {
    file,
    readonly: flag("readonly", o.readonly),
    direct: flag("direct", o.direct),
    blockSize,
    serial,
    inflight: flag("inflight", o.inflight),
  };
}
