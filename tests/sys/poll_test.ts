// Readiness of eventfds through pollSync, PollSet and pollAsync; a wake
// eventfd ending a pending pollAsync; a Worker blocked in pollSync woken by
// the main thread.

import assert from "node:assert/strict";
import {
  close,
  eventfd,
  eventfdRead,
  eventfdWrite,
  pollAsync,
  POLLIN,
  POLLNVAL,
  POLLOUT,
  PollSet,
  pollSync,
} from "@vhost-mdev/sdk/sys";

Deno.test("pollSync reports an eventfd readable only while its counter is non-zero", () => {
  const a = eventfd(0, { nonBlocking: true });
  const b = eventfd(0, { nonBlocking: true });
  try {
    const set = [{ fd: a, events: POLLIN }, { fd: b, events: POLLIN | POLLOUT }];
    assert.deepEqual([...pollSync(set, 0)], [0, POLLOUT]);
    eventfdWrite(a, 5);
    assert.deepEqual([...pollSync(set, 0)], [POLLIN, POLLOUT]);
    assert.equal(eventfdRead(a), 5);
    assert.deepEqual([...pollSync(set, 0)], [0, POLLOUT]);
    // Timeout with nothing ready: all zero.
    assert.deepEqual([...pollSync([{ fd: a, events: POLLIN }], 10)], [0]);
    // The result array is reused by the next poll of the same size.
    assert.equal(pollSync(set, 0), pollSync(set, 0));
    // An fd that is not open reports POLLNVAL.
    assert.deepEqual([...pollSync([{ fd: 1 << 20, events: POLLIN }], 0)], [POLLNVAL]);
  } finally {
    close(a);
    close(b);
  }
});

Deno.test("PollSet waits on a fixed set and follows add/remove", () => {
  const fds = [eventfd(0, { nonBlocking: true }), eventfd(0, { nonBlocking: true })];
  try {
    const set = new PollSet(1);
    assert.equal(set.add(fds[0], POLLIN), 0);
    assert.equal(set.add(fds[1], POLLIN), 1);
    assert.equal(set.size, 2);
    assert.equal(set.wait(0), 0);
    eventfdWrite(fds[1]);
    assert.equal(set.wait(-1), 1);
    assert.deepEqual([set.revents(0), set.revents(1)], [0, POLLIN]);
    assert.equal(set.remove(fds[0]), true);
    assert.equal(set.remove(fds[0]), false);
    assert.equal(set.size, 1);
    assert.equal(set.fd(0), fds[1]);
    assert.equal(set.wait(0), 1);
    assert.equal(set.revents(0), POLLIN);
    assert.equal(eventfdRead(fds[1]), 1);
    assert.equal(set.wait(0), 0);
  } finally {
    for (const fd of fds) close(fd);
  }
});

Deno.test("pollAsync reports readiness of an eventfd", async () => {
  const fd = eventfd(0, { nonBlocking: true });
  try {
    assert.deepEqual(await pollAsync([{ fd, events: POLLIN }], 0), [0]);
    eventfdWrite(fd, 2);
    assert.deepEqual(await pollAsync([{ fd, events: POLLIN }], -1), [POLLIN]);
    assert.equal(eventfdRead(fd), 2);
    assert.deepEqual(await pollAsync([{ fd, events: POLLIN }], 20), [0]);
  } finally {
    close(fd);
  }
});

Deno.test("a pending pollAsync is woken by writing its wake eventfd", async () => {
  const watched = eventfd(0, { nonBlocking: true });
  const wake = eventfd(0, { nonBlocking: true });
  try {
    let settled = false;
    const pending = pollAsync([{ fd: watched, events: POLLIN }, { fd: wake, events: POLLIN }], -1)
      .finally(() => settled = true);
    // Give the event loop turns: nothing is ready, so it must still wait.
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(settled, false);
    eventfdWrite(wake);
    assert.deepEqual(await pending, [0, POLLIN]);
    assert.equal(eventfdRead(wake), 1);
  } finally {
    close(watched);
    close(wake);
  }
});

Deno.test("a Worker blocked in pollSync sees the main thread's eventfd write", async () => {
  const fd = eventfd(0, { nonBlocking: true });
  const worker = new Worker(new URL("./fixtures/poll_worker.ts", import.meta.url), {
    type: "module",
  });
  try {
    const messages: { type: string; revents?: number; value?: number }[] = [];
    let notify = () => {};
    worker.onmessage = (e) => {
      messages.push(e.data);
      notify();
    };
    worker.onerror = (e) => {
      messages.push({ type: `error: ${e.message}` });
      notify();
    };
    const next = async (count: number) => {
      while (messages.length < count) await new Promise<void>((r) => notify = r);
    };
    worker.postMessage({ fd });
    await next(1);
    assert.equal(messages[0].type, "polling");
    // The counter is zero, so the worker must still be waiting.
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(messages.length, 1);
    eventfdWrite(fd, 9);
    await next(2);
    assert.deepEqual(messages[1], { type: "done", revents: POLLIN, value: 9 });
  } finally {
    worker.terminate();
    close(fd);
  }
});
