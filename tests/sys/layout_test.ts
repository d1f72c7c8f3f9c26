// Struct layouts of msghdr, iovec and cmsghdr (x86-64), and CMSG_SPACE,
// checked against the C values and against what the kernel accepts.

import assert from "node:assert/strict";
import {
  close,
  CMSG_LEN_OFFSET,
  CMSG_LEVEL,
  CMSG_TYPE,
  CMSGHDR_SIZE,
  cmsgLen,
  cmsgSpace,
  cmsgSpaceForFds,
  eventfd,
  fstat,
  IOV_BASE,
  IOV_LEN,
  IOVEC_SIZE,
  MSG_CONTROL,
  MSG_CONTROLLEN,
  MSG_FLAGS,
  MSG_IOV,
  MSG_IOVLEN,
  MSG_NAME,
  MSG_NAMELEN,
  MSGHDR_SIZE,
  POLLFD_SIZE,
  recvMsg,
  SCM_MAX_FD,
  sendMsg,
  socketPair,
} from "@vhost-mdev/sdk/sys";

Deno.test("msghdr, iovec and cmsghdr sizes and offsets", () => {
  assert.equal(MSGHDR_SIZE, 56);
  assert.deepEqual(
    [MSG_NAME, MSG_NAMELEN, MSG_IOV, MSG_IOVLEN, MSG_CONTROL, MSG_CONTROLLEN, MSG_FLAGS],
    [0, 8, 16, 24, 32, 40, 48],
  );
  assert.equal(IOVEC_SIZE, 16);
  assert.deepEqual([IOV_BASE, IOV_LEN], [0, 8]);
  assert.equal(CMSGHDR_SIZE, 16);
  assert.deepEqual([CMSG_LEN_OFFSET, CMSG_LEVEL, CMSG_TYPE], [0, 8, 12]);
  assert.equal(POLLFD_SIZE, 8);
});

Deno.test("CMSG_LEN and CMSG_SPACE for N fds", () => {
  // glibc: CMSG_SPACE(len) = CMSG_ALIGN(len) + CMSG_ALIGN(sizeof(struct cmsghdr)).
  const expected: [number, number, number][] = [
    // fds, CMSG_LEN, CMSG_SPACE
    [0, 16, 16],
    [1, 20, 24],
    [2, 24, 24],
    [3, 28, 32],
    [4, 32, 32],
    [8, 48, 48],
    [253, 1028, 1032],
  ];
  for (const [fds, len, space] of expected) {
    assert.equal(cmsgLen(fds * 4), len, `CMSG_LEN for ${fds} fds`);
    assert.equal(cmsgSpaceForFds(fds), space, `CMSG_SPACE for ${fds} fds`);
    assert.equal(cmsgSpace(fds * 4), space);
  }
});

Deno.test("the kernel agrees: N fds fit in CMSG_SPACE(N), the N+1th is cut (MSG_CTRUNC)", () => {
  const [a, b] = socketPair();
  const passed = [eventfd(), eventfd(), eventfd()];
  const received: number[] = [];
  try {
    sendMsg(a, new Uint8Array([1]), passed);
    const whole = recvMsg(b, new Uint8Array(4), 3);
    received.push(...whole.fds);
    assert.equal(whole.bytes, 1);
    assert.equal(whole.ctrunc, false);
    assert.equal(whole.fds.length, 3);
    // Duplicates of the same files, in the order sent.
    for (let i = 0; i < 3; i++) assert.equal(fstat(whole.fds[i]).ino, fstat(passed[i]).ino);

    sendMsg(a, new Uint8Array([2, 3]), passed);
    const cut = recvMsg(b, new Uint8Array(4), 2);
    received.push(...cut.fds);
    assert.equal(cut.bytes, 2);
    assert.equal(cut.ctrunc, true);
    assert.equal(cut.fds.length, 2);
    assert.equal(fstat(cut.fds[1]).ino, fstat(passed[1]).ino);

    // Data with fds but maxFds 0: every fd is dropped and reported.
    sendMsg(a, new Uint8Array([4]), [passed[0]]);
    const none = recvMsg(b, new Uint8Array(4), 0);
    assert.deepEqual(none, { bytes: 1, fds: [], ctrunc: true });

    // The most the kernel takes in one message.
    const many = new Array<number>(SCM_MAX_FD).fill(passed[0]);
    sendMsg(a, new Uint8Array([5]), many);
    const all = recvMsg(b, new Uint8Array(4), SCM_MAX_FD);
    received.push(...all.fds);
    assert.equal(all.fds.length, SCM_MAX_FD);
    assert.equal(all.ctrunc, false);
  } finally {
    for (const fd of [a, b, ...passed, ...received]) close(fd);
  }
});
