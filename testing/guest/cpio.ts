/**
 * A writer for the "newc" cpio format, the one the kernel unpacks as an
 * initramfs (Documentation/driver-api/early-userspace/buffer-format.rst):
 * each entry is a 110-byte ASCII header (`070701` and thirteen 8-digit hex
 * fields), the NUL-terminated name padded to 4 bytes, then the data padded
 * to 4 bytes; the archive ends with an entry named `TRAILER!!!`.
 *
 * @module
 */

/** One entry of an archive. Paths are relative (`bin/sh`), without a leading slash. */
export type CpioEntry =
  | { type: "dir"; path: string; mode?: number }
  | { type: "file"; path: string; data: Uint8Array; mode?: number }
  | { type: "symlink"; path: string; target: string }
  | { type: "chardev"; path: string; major: number; minor: number; mode?: number };

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;

/**
 * Serialize `entries` (in order; directories must come before their
 * contents) into a newc archive, owned by root, mtime 0.
 *
 * @example
 * ```ts
 * import { writeCpio } from "./cpio.ts";
 * const archive = writeCpio([
 *   { type: "dir", path: "bin" },
 *   { type: "symlink", path: "bin/sh", target: "busybox" },
 * ]);
 * ```
 */
export function writeCpio(entries: readonly CpioEntry[]): Uint8Array {
  const encoder = new TextEncoder();
  const chunks: Uint8Array[] = [];
  let size = 0;
  const push = (bytes: Uint8Array) => {
    chunks.push(bytes);
    size += bytes.length;
    const pad = (4 - (size % 4)) % 4;
    if (pad) {
      chunks.push(new Uint8Array(pad));
      size += pad;
    }
  };
  const hex = (n: number) => {
    if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) {
      throw new RangeError(`cpio field out of range: ${n}`);
    }
    return n.toString(16).padStart(8, "0");
  };
  let ino = 1;
  const entry = (name: string, mode: number, data: Uint8Array, rdev = [0, 0]) => {
    if (name.startsWith("/") || name.split("/").includes("..")) {
      throw new Error(`cpio path must be relative and stay inside the archive: ${name}`);
    }
    const nameBytes = encoder.encode(`${name}\0`);
    const fields = [
      ino++, // c_ino
      mode, // c_mode
      0, // c_uid
      0, // c_gid
      (mode & 0o170000) === S_IFDIR ? 2 : 1, // c_nlink
      0, // c_mtime
      data.length, // c_filesize
      0, // c_devmajor
      0, // c_devminor
      rdev[0], // c_rdevmajor
      rdev[1], // c_rdevminor
      nameBytes.length, // c_namesize
      0, // c_check
    ];
    const header = encoder.encode(`070701${fields.map(hex).join("")}`);
    const head = new Uint8Array(header.length + nameBytes.length);
    head.set(header);
    head.set(nameBytes, header.length);
    push(head);
    if (data.length) push(data);
  };
  for (const e of entries) {
    switch (e.type) {
      case "dir":
        entry(e.path, S_IFDIR | (e.mode ?? 0o755), new Uint8Array());
        break;
      case "file":
        entry(e.path, S_IFREG | (e.mode ?? 0o644), e.data);
        break;
      case "symlink":
        entry(e.path, S_IFLNK | 0o777, encoder.encode(e.target));
        break;
      case "chardev":
        entry(e.path, S_IFCHR | (e.mode ?? 0o600), new Uint8Array(), [e.major, e.minor]);
        break;
    }
  }
  entry("TRAILER!!!", 0, new Uint8Array());
  const out = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}
