/**
 * NUL-terminated strings for libc. A JavaScript string with an embedded NUL
 * would be silently cut short by C, so it is refused instead.
 *
 * @module
 */

import { Errno, SysError } from "./error.ts";

const encoder = new TextEncoder();

/**
 * UTF-8 bytes of `text` followed by a NUL.
 *
 * @param syscall Named in the error when `text` contains a NUL.
 * @throws SysError EINVAL when `text` contains a NUL character.
 */
export function cString(text: string, syscall: string): Uint8Array<ArrayBuffer> {
  if (text.includes("\0")) {
    throw new SysError(syscall, Errno.EINVAL, `${JSON.stringify(text)} (contains a NUL character)`);
  }
  const bytes = new Uint8Array(text.length * 3 + 1);
  const { written } = encoder.encodeInto(text, bytes);
  return bytes.subarray(0, written + 1);
}
