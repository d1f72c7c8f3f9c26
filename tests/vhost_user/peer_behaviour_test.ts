// How the transport treats a peer's behaviour that is not malformed but
// hostile or hasty: a peer that never reads cannot block the event loop or
// make this process buffer without bound; a backend channel that is not a
// socket is refused without leaking its fd; a frontend that reconnects the
// moment it closed is served, not refused as busy.

import assert from "node:assert/strict";
import { bit, ProtocolError, VhostMdevDevice, VirtioFeatureBit } from "@vhost-mdev/sdk";
import {
  encodeMessage,
  FrontendRequest,
  HeaderFlag,
  MAX_UNSENT_BYTES,
  MessageSocket,
  VhostUserServer,
} from "@vhost-mdev/sdk/vhost-user";
import {
  close,
  eventfd,
  O_CLOEXEC,
  O_PATH,
  open,
  recvMsg,
  sendMsg,
  setNonBlocking,
  socketPair,
} from "@vhost-mdev/sdk/sys";
import { VhostUserFrontend } from "@vhost-mdev/testing";
import { NET_FEATURES, recordingDriver } from "../support/recording_driver.ts";
import { settledFdCount } from "../support/peers.ts";

const V = HeaderFlag.VERSION;

Deno.test("a peer that does not read: sends never block, the backlog is bounded, then the connection fails", async () => {
  const [mine, peer] = socketPair();
  const socket = new MessageSocket(mine);
  const message = encodeMessage(
    FrontendRequest.GET_FEATURES,
    V | HeaderFlag.REPLY,
    new Uint8Array(8),
  );
  let sent = 0;
  let ticks = 0;
  const timer = setInterval(() => ticks++, 0);
  try {
    assert.throws(
      () => {
        for (;;) {
          socket.send(message);
          sent++;
        }
      },
      (e: unknown) => e instanceof ProtocolError && /does not read its socket/.test(e.message),
    );
    // Everything past the kernel's buffer waited in the outbox, within the limit.
    assert.ok(sent * message.length > MAX_UNSENT_BYTES);
    assert.ok(socket.closed, "the connection was failed");
    assert.match(socket.failure, /limit is 262144/);
    await new Promise((r) => setTimeout(r, 20));
    assert.ok(ticks > 0, "the event loop kept turning");
  } finally {
    clearInterval(timer);
    close(peer);
  }
});

Deno.test("queued messages reach a slow reader in order, with their fds", async () => {
  const [mine, peer] = socketPair();
  const socket = new MessageSocket(mine);
  // Fill the kernel's buffer first, so what follows has to wait.
  const filler = new Uint8Array(4096).fill(7);
  let filled = 0;
  for (;;) {
    try {
      filled += sendMsg(mine, filler);
    } catch {
      break;
    }
  }
  const big = new Uint8Array(100_000).fill(7);
  setNonBlocking(peer, true); // this thread reads it and must not block
  const fd = eventfd(0);
  socket.send(big);
  socket.send(encodeMessage(1, V, new Uint8Array([1, 2, 3])), [fd]);
  close(fd); // the outbox holds its own duplicate
  assert.ok(socket.unsentBytes > 0, "part of it had to wait");
  const got: number[] = [];
  const fds: number[] = [];
  const buf = new Uint8Array(65536);
  const deadline = Date.now() + 5000;
  const total = filled + big.length + 15;
  while (got.length < total && Date.now() < deadline) {
    try {
      const r = recvMsg(peer, buf, 4);
      for (let i = 0; i < r.bytes; i++) got.push(buf[i]);
      fds.push(...r.fds);
    } catch {
      await new Promise((r) => setTimeout(r, 1));
    }
  }
  assert.equal(got.length, total);
  assert.ok(got.slice(0, filled + big.length).every((b) => b === 7));
  assert.deepEqual(got.slice(total - 3), [1, 2, 3]);
  assert.equal(fds.length, 1, "the fd arrived with its message");
  for (const f of fds) close(f);
  assert.equal(socket.unsentBytes, 0);
  socket.close();
  close(peer);
});

Deno.test("SET_BACKEND_REQ_FD with an fd that is no socket is refused and its fd closed", async () => {
  const dir = Deno.makeTempDirSync();
  const path = `${dir}/be.sock`;
  const device = await VhostMdevDevice.create(recordingDriver().driver, { queues: 1, options: {} });
  const server = VhostUserServer.listen(device, path);
  const fe = await VhostUserFrontend.connect(path, { memoryMiB: 1 });
  try {
    await fe.handshake();
    const baseline = await settledFdCount();
    for (let i = 0; i < 200; i++) {
      const fd = open("/", O_PATH | O_CLOEXEC);
      await assert.rejects(
        fe.request(FrontendRequest.SET_BACKEND_REQ_FD, new Uint8Array(0), [fd]),
        /SET_BACKEND_REQ_FD/,
      );
      close(fd);
    }
    assert.equal(await settledFdCount(), baseline, "no fd left behind per refusal");
  } finally {
    fe.close();
    await server.close();
    await device.close();
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("a frontend reconnecting the moment it closed is served, not refused as busy", async () => {
  const dir = Deno.makeTempDirSync();
  const path = `${dir}/be.sock`;
  const rec = recordingDriver();
  // A driver whose stop takes a while, as a real device's does: the old
  // session is still detaching when the new connection arrives.
  const slow = {
    ...rec.driver,
    async probe(
      ctx: Parameters<typeof rec.driver.probe>[0],
      params: Parameters<typeof rec.driver.probe>[1],
    ) {
      const d = await rec.driver.probe(ctx, params);
      const stop = d.ops.stop.bind(d.ops);
      d.ops.stop = async () => {
        await new Promise((r) => setTimeout(r, 100));
        await stop();
      };
      return d;
    },
  };
  const refused: string[] = [];
  const device = await VhostMdevDevice.create(slow, { queues: 1, options: {} }, {
    listener: (e) => {
      if (e.type === "refused") refused.push(e.message);
    },
  });
  const server = VhostUserServer.listen(device, path);
  try {
    for (let i = 0; i < 5; i++) {
      const fe = await VhostUserFrontend.connect(path, { memoryMiB: 1 });
      await fe.handshake();
      await fe.setFeatures(NET_FEATURES & ~bit(VirtioFeatureBit.EVENT_IDX));
      await fe.setMemTable();
      await fe.setupRing(0, { num: 64, descAddr: 0x1000, availAddr: 0x2000, usedAddr: 0x3000 });
      await fe.setupRing(1, { num: 64, descAddr: 0x5000, availAddr: 0x6000, usedAddr: 0x7000 });
      await fe.setVringEnable(0, true);
      await fe.setVringEnable(1, true);
      await fe.setStatus(0xf);
      await rec.until((c) => c.filter((x) => x.op === "start").length > i, 5000, "start");
      fe.close();
      // At once: the old session is still stopping the device.
      const again = await VhostUserFrontend.connect(path, { memoryMiB: 1 });
      try {
        assert.ok((await again.getFeatures()) > 0n, `reconnect ${i} answered`);
      } finally {
        again.close();
      }
    }
    assert.deepEqual(refused, []);
  } finally {
    await server.close();
    await device.close();
    Deno.removeSync(dir, { recursive: true });
  }
});
