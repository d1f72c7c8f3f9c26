// Foundation acceptance: a memfd and an eventfd travel in one message over a
// UNIX socket to a second Deno process; both processes then share bytes
// through their own mappings of the memfd and counts through the eventfd.

import assert from "node:assert/strict";
import {
  accept,
  bindUnix,
  close,
  eventfd,
  eventfdRead,
  eventfdWrite,
  ftruncate,
  listen,
  memfdCreate,
  mmap,
  pollAsync,
  POLLIN,
  recvMsg,
  sendMsg,
  unixSocket,
} from "@vhost-mdev/sdk/sys";
import {
  CHILD_BYTES,
  CHILD_COUNT,
  CHILD_OFFSET,
  PARENT_BYTES,
  PARENT_COUNT,
  PARENT_OFFSET,
  SHARED_SIZE,
} from "./fixtures/fd_passing_peer.ts";

const PEER = new URL("./fixtures/fd_passing_peer.ts", import.meta.url).pathname;
const WAIT_MS = 30_000;

Deno.test("memfd and eventfd passed to another process share bytes and counts", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "vhost-mdev-sys-" });
  const path = `${dir}/peer.sock`;
  const opened: number[] = [];
  const listener = unixSocket({ nonBlocking: true });
  opened.push(listener);
  bindUnix(listener, path);
  listen(listener, 1);
  const memfd = memfdCreate("shared");
  opened.push(memfd);
  ftruncate(memfd, SHARED_SIZE);
  const mapping = mmap(memfd, SHARED_SIZE);
  const bytes = new Uint8Array(mapping.buffer);
  bytes.set(new TextEncoder().encode(PARENT_BYTES), PARENT_OFFSET);
  const efd = eventfd(0, { nonBlocking: true });
  opened.push(efd);
  // Woken when the child exits, so no wait outlives it.
  const wake = eventfd(0, { nonBlocking: true });
  opened.push(wake);

  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", PEER, path],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let exited = false;
  const output = child.output().then((o) => {
    exited = true;
    eventfdWrite(wake);
    return o;
  });
  const childError = async () => new TextDecoder().decode((await output).stderr);

  async function waitReadable(fd: number, what: string): Promise<void> {
    const [ready, woken] = await pollAsync(
      [{ fd, events: POLLIN }, { fd: wake, events: POLLIN }],
      WAIT_MS,
    );
    if (ready & POLLIN) return;
    assert.fail(`${what}: ${woken ? `child exited: ${await childError()}` : "timed out"}`);
  }

  try {
    await waitReadable(listener, "waiting for the child to connect");
    const conn = accept(listener);
    opened.push(conn);
    assert.equal(sendMsg(conn, new Uint8Array([0x46]), [memfd, efd]), 1);

    await waitReadable(conn, "waiting for the child's first reply");
    const reply = new Uint8Array(1);
    const got = recvMsg(conn, reply);
    assert.deepEqual({ bytes: got.bytes, fds: got.fds, ctrunc: got.ctrunc, byte: reply[0] }, {
      bytes: 1,
      fds: [],
      ctrunc: false,
      byte: 1,
    });
    // What the child wrote through its own mapping, read through ours.
    assert.equal(
      new TextDecoder().decode(bytes.subarray(CHILD_OFFSET, CHILD_OFFSET + CHILD_BYTES.length)),
      CHILD_BYTES,
    );
    assert.equal(bytes[CHILD_OFFSET + CHILD_BYTES.length], 0);
    assert.equal(eventfdRead(efd), CHILD_COUNT);
    eventfdWrite(efd, PARENT_COUNT);
    assert.equal(sendMsg(conn, new Uint8Array([2])), 1);

    const o = await output;
    const stderr = new TextDecoder().decode(o.stderr);
    assert.equal(o.code, 0, `child failed: ${stderr}`);
    assert.deepEqual(JSON.parse(new TextDecoder().decode(o.stdout)), {
      bytes: 1,
      marker: 0x46,
      fds: 2,
      ctrunc: false,
      size: SHARED_SIZE,
      fromParent: PARENT_BYTES,
      secondBytes: 1,
      counter: PARENT_COUNT,
    });
  } finally {
    if (!exited) {
      try {
        child.kill("SIGKILL");
      } catch {
        // Exited between the check and the kill.
      }
    }
    await output;
    mapping.unmap();
    for (const fd of opened) close(fd);
    Deno.removeSync(dir, { recursive: true });
  }
});
