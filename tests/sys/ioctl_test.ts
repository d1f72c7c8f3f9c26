// ioctl with a pointer argument (FIONREAD) and an integer argument
// (FIOCLEX/FIONCLEX), and its errors.

import assert from "node:assert/strict";
import {
  close,
  F_GETFD,
  fcntl,
  FD_CLOEXEC,
  FIOCLEX,
  FIONCLEX,
  FIONREAD,
  ioctl,
  sendMsg,
  socketPair,
  SysError,
} from "@vhost-mdev/sdk/sys";

Deno.test("FIONREAD on a socket pair gives the queued byte count", () => {
  const [a, b] = socketPair();
  try {
    const count = new Int32Array(1);
    const arg = new Uint8Array(count.buffer);
    assert.equal(ioctl(b, FIONREAD, arg), 0);
    assert.equal(count[0], 0);
    sendMsg(a, new Uint8Array(5));
    sendMsg(a, new Uint8Array(1234));
    assert.equal(ioctl(b, FIONREAD, arg), 0);
    assert.equal(count[0], 1239);
  } finally {
    close(a);
    close(b);
  }
});

Deno.test("FIONCLEX/FIOCLEX with an integer argument flip close-on-exec", () => {
  const [a, b] = socketPair();
  try {
    assert.equal(fcntl(a, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
    ioctl(a, FIONCLEX, 0);
    assert.equal(fcntl(a, F_GETFD) & FD_CLOEXEC, 0);
    ioctl(a, FIOCLEX);
    assert.equal(fcntl(a, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
  } finally {
    close(a);
    close(b);
  }
});

Deno.test("an unknown request fails with ENOTTY, a closed fd with EBADF", () => {
  const [a, b] = socketPair();
  close(b);
  try {
    assert.throws(
      () => ioctl(a, 0x1234_5678, 0),
      (e) => e instanceof SysError && e.syscall === "ioctl" && e.code === "ENOTTY",
    );
    assert.throws(
      () => ioctl(1 << 20, FIONREAD, new Uint8Array(4)),
      (e) => e instanceof SysError && e.syscall === "ioctl" && e.code === "EBADF",
    );
  } finally {
    close(a);
  }
});
