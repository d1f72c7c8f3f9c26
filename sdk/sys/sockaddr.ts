/**
 * `struct sockaddr_un` for UNIX socket paths: `sa_family_t sun_family`
 * then `char sun_path[108]`. A path must fit with its terminating NUL; a
 * longer one is refused rather than cut short (a cut path would name a
 * different file).
 *
 * @module
 */

import { cString } from "./cstring.ts";
import { Errno, SysError } from "./error.ts";

/** `AF_UNIX`: local sockets. */
export const AF_UNIX = 1;
/** Bytes of `sun_path`, including the terminating NUL. */
export const SUN_PATH_SIZE = 108;
/** Offset of `sun_path` in `struct sockaddr_un`. */
export const SUN_PATH_OFFSET = 2;

/**
 * An encoded `sockaddr_un` for `path` (exactly as long as needed, which is
 * the `socklen_t` to pass).
 *
 * @param syscall Named in the error.
 * @throws SysError ENAMETOOLONG when `path` does not fit in `sun_path`;
 *   EINVAL when it is empty or contains a NUL.
 */
export function sockaddrUn(path: string, syscall: string): Uint8Array<ArrayBuffer> {
  const bytes = cString(path, syscall);
  if (bytes.length === 1) throw new SysError(syscall, Errno.EINVAL, "(empty socket path)");
  if (bytes.length > SUN_PATH_SIZE) {
    throw new SysError(
      syscall,
      Errno.ENAMETOOLONG,
      `${path} (socket path is ${bytes.length - 1} bytes; sun_path holds at most ${
        SUN_PATH_SIZE - 1
      } plus the terminating NUL)`,
    );
  }
  const addr = new Uint8Array(SUN_PATH_OFFSET + bytes.length);
  new DataView(addr.buffer).setUint16(0, AF_UNIX, true);
  addr.set(bytes, SUN_PATH_OFFSET);
  return addr;
}
