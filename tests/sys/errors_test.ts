// Every failure surfaces as SysError naming the call, with errno and code.

import assert from "node:assert/strict";
import {
  close,
  connectUnix,
  Errno,
  errnoName,
  eventfd,
  eventfdRead,
  read,
  recvMsg,
  sendMsg,
  setNonBlocking,
  socketPair,
  SUN_PATH_SIZE,
  SysError,
  unixSocket,
} from "@vhost-mdev/sdk/sys";

/** Assert `fn` throws a SysError from `syscall` with `code`. */
function assertSysError(fn: () => unknown, syscall: string, code: string): SysError {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof SysError, `expected SysError, got ${e}`);
    assert.equal(e.syscall, syscall);
    assert.equal(e.code, code);
    assert.equal(errnoName(e.errno), code);
    assert.equal(e.name, "SysError");
    assert.match(e.message, new RegExp(`^${syscall}\\b.*${code}`));
    return e;
  }
  assert.fail(`expected ${syscall} to fail with ${code}`);
}

Deno.test("errno names", () => {
  assert.equal(errnoName(2), "ENOENT");
  assert.equal(errnoName(9), "EBADF");
  assert.equal(errnoName(11), "EAGAIN");
  assert.equal(errnoName(95), "EOPNOTSUPP");
  assert.equal(errnoName(4095), "E4095");
  assert.equal(Errno.EAGAIN, 11);
  const e = new SysError("recvmsg", 11, "fd 5");
  assert.equal(e.code, "EAGAIN");
  assert.equal(e.message, "recvmsg fd 5: EAGAIN (Resource temporarily unavailable)");
});

Deno.test("EBADF on close and read of a closed fd", () => {
  const fd = eventfd();
  close(fd);
  const e = assertSysError(() => close(fd), "close", "EBADF");
  assert.equal(e.errno, 9);
  assertSysError(() => read(fd, new Uint8Array(8)), "read", "EBADF");
  // An fd number far above any open one.
  assertSysError(() => close(1 << 20), "close", "EBADF");
});

Deno.test("ENOENT connecting to a missing socket path", () => {
  const dir = Deno.makeTempDirSync({ prefix: "vhost-mdev-sys-" });
  const fd = unixSocket();
  try {
    const e = assertSysError(() => connectUnix(fd, `${dir}/missing.sock`), "connect", "ENOENT");
    assert.ok(e.message.includes(`${dir}/missing.sock`), e.message);
  } finally {
    close(fd);
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("a socket path longer than sun_path is refused, not cut short", () => {
  const fd = unixSocket();
  try {
    const longest = "/tmp/" + "p".repeat(SUN_PATH_SIZE - 1 - 5);
    assert.equal(new TextEncoder().encode(longest).length, SUN_PATH_SIZE - 1);
    // Fits: fails only because nothing is there.
    assertSysError(() => connectUnix(fd, longest), "connect", "ENOENT");
    const e = assertSysError(() => connectUnix(fd, longest + "q"), "connect", "ENAMETOOLONG");
    assert.match(e.message, /108 bytes; sun_path holds at most 107/);
    assertSysError(() => connectUnix(fd, "/tmp/a\0b"), "connect", "EINVAL");
  } finally {
    close(fd);
  }
});

Deno.test("EAGAIN on an empty non-blocking eventfd and socket", () => {
  const efd = eventfd(0, { nonBlocking: true });
  const [a, b] = socketPair();
  try {
    assertSysError(() => eventfdRead(efd), "read", "EAGAIN");
    setNonBlocking(b, true);
    assertSysError(() => recvMsg(b, new Uint8Array(16)), "recvmsg", "EAGAIN");
    assertSysError(() => read(b, new Uint8Array(16)), "read", "EAGAIN");
  } finally {
    for (const fd of [efd, a, b]) close(fd);
  }
});

Deno.test("sendMsg refuses fds without data and bad fd numbers", () => {
  const [a, b] = socketPair();
  try {
    assertSysError(() => sendMsg(a, new Uint8Array(0), [a]), "sendmsg", "EINVAL");
    assertSysError(() => sendMsg(a, new Uint8Array(1), [-1]), "sendmsg", "EINVAL");
    assertSysError(
      () => sendMsg(a, new Uint8Array(1), new Array(254).fill(a)),
      "sendmsg",
      "EINVAL",
    );
    assertSysError(() => recvMsg(b, new Uint8Array(1), 254), "recvmsg", "EINVAL");
    // An fd that is not open: the kernel says EBADF.
    assertSysError(() => sendMsg(a, new Uint8Array(1), [1 << 20]), "sendmsg", "EBADF");
  } finally {
    close(a);
    close(b);
  }
});

Deno.test("EPIPE, not SIGPIPE, when sending to a closed peer", () => {
  const [a, b] = socketPair();
  close(b);
  try {
    assertSysError(() => sendMsg(a, new Uint8Array([1])), "sendmsg", "EPIPE");
  } finally {
    close(a);
  }
});
