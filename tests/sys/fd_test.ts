// open/read/write/fstat and non-blocking mode on plain fds.

import assert from "node:assert/strict";
import {
  close,
  F_GETFL,
  fcntl,
  fstat,
  O_CLOEXEC,
  O_CREAT,
  O_NONBLOCK,
  O_RDONLY,
  O_RDWR,
  open,
  read,
  S_IFMT,
  S_IFREG,
  setNonBlocking,
  SysError,
  write,
} from "@vhost-mdev/sdk/sys";

Deno.test("open, write, read back and fstat a file", () => {
  const dir = Deno.makeTempDirSync({ prefix: "vhost-mdev-sys-" });
  try {
    const path = `${dir}/data`;
    const fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600);
    try {
      assert.equal(write(fd, new TextEncoder().encode("hello, fd")), 9);
      const st = fstat(fd);
      assert.equal(st.size, 9);
      assert.equal(st.mode & S_IFMT, S_IFREG);
      assert.equal(st.mode & 0o777, 0o600);
      assert.equal(st.ino, Deno.statSync(path).ino);
    } finally {
      close(fd);
    }
    const ro = open(path, O_RDONLY | O_CLOEXEC);
    try {
      const buf = new Uint8Array(32);
      const n = read(ro, buf.subarray(4));
      assert.equal(n, 9);
      assert.equal(new TextDecoder().decode(buf.subarray(4, 4 + n)), "hello, fd");
      assert.deepEqual([...buf.subarray(0, 4)], [0, 0, 0, 0]);
      assert.equal(read(ro, buf), 0); // end of file
    } finally {
      close(ro);
    }
    assert.throws(
      () => open(`${dir}/missing`, O_RDONLY),
      (e) => e instanceof SysError && e.syscall === "open" && e.code === "ENOENT",
    );
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("setNonBlocking turns O_NONBLOCK on and off", () => {
  const fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  try {
    assert.equal(fcntl(fd, F_GETFL) & O_NONBLOCK, 0);
    setNonBlocking(fd, true);
    assert.equal(fcntl(fd, F_GETFL) & O_NONBLOCK, O_NONBLOCK);
    setNonBlocking(fd, false);
    assert.equal(fcntl(fd, F_GETFL) & O_NONBLOCK, 0);
  } finally {
    close(fd);
  }
});
