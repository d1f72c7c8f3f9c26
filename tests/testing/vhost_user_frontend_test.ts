// The TypeScript vhost-user frontend against an in-process fake backend
// (wire format, REPLY_ACK, refusals, timeouts, listen mode) and against the
// SDK's own backend (a full bring-up seen by a recording driver).

import assert from "node:assert/strict";
import { VhostMdevDevice } from "../../sdk/core/device.ts";
import { VhostUserServer } from "../../sdk/vhost_user/server.ts";
import { GuestMemory } from "../../sdk/memory/guest_memory.ts";
import { close, connectUnix, openFdCount, unixSocket } from "../../sdk/sys/mod.ts";
import { MessageSocket } from "../../sdk/vhost_user/connection.ts";
import { FrontendRequest, HeaderFlag, ProtocolFeatureBit } from "../../sdk/uapi/vhost_user.ts";
import { bit, VirtioFeatureBit, VirtioStatus } from "../../sdk/uapi/virtio.ts";
import {
  decodeMemTable,
  decodeVringAddr,
  encodeReply as reply,
  encodeU64 as u64,
  type VhostUserMessage,
} from "../../sdk/vhost_user/message.ts";
import { VhostUserFrontend, VhostUserFrontendError } from "@vhost-mdev/testing";
import { recordingDriver } from "../support/recording_driver.ts";

const FEATURES = bit(VirtioFeatureBit.VERSION_1) | bit(VirtioFeatureBit.PROTOCOL_FEATURES);

/** Run `answer` for each message a fake backend connected to `path` receives. */
function fakeBackend(
  path: string,
  answer: (m: VhostUserMessage, s: MessageSocket) => void | "stop",
): { seen: VhostUserMessage[]; done: Promise<void> } {
  const fd = unixSocket();
  connectUnix(fd, path);
  const s = new MessageSocket(fd);
  const seen: VhostUserMessage[] = [];
  const done = (async () => {
    try {
      for (;;) {
        const m = await s.read();
        if (!m) return;
        seen.push(m);
        const r = answer(m, s);
        for (const f of m.fds) close(f);
        if (r === "stop") return;
      }
    } finally {
      s.close();
    }
  })();
  return { seen, done };
}

/** Standard answers for the opening requests. */
function opening(m: VhostUserMessage, s: MessageSocket): boolean {
  if (m.request === FrontendRequest.GET_FEATURES) s.send(reply(m.request, u64(FEATURES)));
  else if (m.request === FrontendRequest.GET_PROTOCOL_FEATURES) {
    s.send(
      reply(m.request, u64(bit(ProtocolFeatureBit.REPLY_ACK) | bit(ProtocolFeatureBit.STATUS))),
    );
  } else if (
    m.request === FrontendRequest.SET_OWNER || m.request === FrontendRequest.SET_PROTOCOL_FEATURES
  ) {
    // no reply
  } else return false;
  return true;
}

Deno.test("frontend (listen mode): wire format, REPLY_ACK and a refusal naming the request", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/fe.sock`;
  const fdsBefore = openFdCount();
  const pending = VhostUserFrontend.listen(path, { memoryMiB: 2, memoryGpa: 0x100000 });
  let memSeen: Uint8Array | null = null;
  const backend = fakeBackend(path, (m, s) => {
    if (opening(m, s)) return;
    if (m.request === FrontendRequest.SET_MEM_TABLE) {
      // Map what the frontend shared and read what it wrote there.
      const mem = GuestMemory.map(decodeMemTable(m));
      memSeen = mem.bytes(0x100000 + 4096, 4).slice();
      mem.close();
      s.send(reply(m.request, u64(1))); // refuse
      return;
    }
    if (m.flags & HeaderFlag.NEED_REPLY) s.send(reply(m.request, u64(0)));
  });
  const fe = await pending;
  try {
    assert.equal(fe.memoryGpa, 0x100000);
    assert.equal(fe.memory.regions[0].uva, fe.address);
    await fe.handshake();
    assert.equal(
      fe.protocolFeatures,
      bit(ProtocolFeatureBit.REPLY_ACK) | bit(ProtocolFeatureBit.STATUS),
    );
    await fe.setFeatures(FEATURES);
    await assert.rejects(
      () => fe.setFeatures(FEATURES | 1n),
      /SET_FEATURES: features 0x1 were not offered/,
    );
    await fe.setStatus(VirtioStatus.ACKNOWLEDGE);
    fe.memory.bytes(0x100000 + 4096, 4).set([0xde, 0xad, 0xbe, 0xef]);
    const err = await fe.setMemTable().then(() => null, (e) => e);
    assert.ok(err instanceof VhostUserFrontendError);
    assert.equal(err.request, "SET_MEM_TABLE");
    assert.match(err.message, /^SET_MEM_TABLE: backend refused the request \(ack 1\)/);
    assert.deepEqual([...memSeen!], [0xde, 0xad, 0xbe, 0xef]);

    const s = backend.seen;
    assert.deepEqual(s.map((m) => m.request), [
      FrontendRequest.SET_OWNER,
      FrontendRequest.GET_FEATURES,
      FrontendRequest.GET_PROTOCOL_FEATURES,
      FrontendRequest.SET_PROTOCOL_FEATURES,
      FrontendRequest.SET_FEATURES,
      FrontendRequest.SET_STATUS,
      FrontendRequest.SET_MEM_TABLE,
    ]);
    // Before REPLY_ACK is in force nothing asks for a reply; after, every
    // request without its own reply does.
    assert.deepEqual(s.map((m) => m.flags), [1, 1, 1, 1, 9, 9, 9]);
    assert.deepEqual([...s[3].payload], [
      ...u64(bit(ProtocolFeatureBit.REPLY_ACK) | bit(ProtocolFeatureBit.STATUS)),
    ]);
    assert.deepEqual([...s[4].payload], [...u64(FEATURES)]);
    assert.equal(s[6].payload.length, 40);
    assert.equal(s[6].fds.length, 1);
    const [region] = decodeMemTable(s[6]);
    assert.deepEqual(region, {
      gpa: 0x100000,
      size: 2 * 1024 * 1024,
      uva: fe.address,
      mmapOffset: 0,
      fd: s[6].fds[0],
    });
    assert.equal(fe.closed, false);
  } finally {
    fe.close();
    await backend.done;
    await Deno.remove(dir, { recursive: true });
  }
  assert.equal(openFdCount(), fdsBefore);
});

Deno.test("frontend: rings carry frontend addresses and fds; a silent backend times out", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/fe.sock`;
  const pending = VhostUserFrontend.listen(path, { memoryMiB: 1, replyTimeoutMs: 300 });
  const backend = fakeBackend(path, (m, s) => {
    if (opening(m, s)) return;
    if (m.request === FrontendRequest.GET_VRING_BASE) return; // never answers
    if (m.flags & HeaderFlag.NEED_REPLY) s.send(reply(m.request, u64(0)));
  });
  const fe = await pending;
  try {
    await fe.handshake();
    await fe.setupRing(1, { num: 64, descAddr: 0x1000, availAddr: 0x1400, usedAddr: 0x2000 }, 7);
    await assert.rejects(
      () => fe.setVringAddr(0, { num: 64, descAddr: 0x100000 - 16, availAddr: 0, usedAddr: 0 }),
      /outside guest memory/,
    );
    const seen = backend.seen.slice(4);
    assert.deepEqual(seen.map((m) => m.request), [
      FrontendRequest.SET_VRING_NUM,
      FrontendRequest.SET_VRING_BASE,
      FrontendRequest.SET_VRING_ADDR,
      FrontendRequest.SET_VRING_KICK,
      FrontendRequest.SET_VRING_CALL,
    ]);
    assert.deepEqual([...seen[0].payload], [1, 0, 0, 0, 64, 0, 0, 0]);
    assert.deepEqual([...seen[1].payload], [1, 0, 0, 0, 7, 0, 0, 0]);
    assert.deepEqual(decodeVringAddr(seen[2]), {
      index: 1,
      flags: 0,
      desc: fe.address + 0x1000,
      used: fe.address + 0x2000,
      avail: fe.address + 0x1400,
      log: 0,
    });
    assert.deepEqual([...seen[3].payload], [...u64(1)]);
    assert.equal(seen[3].fds.length, 1);
    assert.equal(seen[4].fds.length, 1);
    assert.ok(fe.kickFd(1) >= 0 && fe.callFd(1) >= 0 && fe.kickFd(0) === -1);

    await assert.rejects(
      () => fe.getVringBase(1),
      /GET_VRING_BASE: no reply within 300 ms/,
    );
    await assert.rejects(
      () => fe.setVringEnable(1, true),
      /SET_VRING_ENABLE: the connection is closed/,
    );
  } finally {
    fe.close();
    await backend.done;
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("frontend: a wrong reply and a vanished backend are errors naming the request", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/fe.sock`;
  const pending = VhostUserFrontend.listen(path, { memoryMiB: 1 });
  const backend = fakeBackend(path, (m, s) => {
    if (m.request === FrontendRequest.GET_FEATURES) {
      s.send(reply(FrontendRequest.GET_PROTOCOL_FEATURES, u64(0)));
      return "stop";
    }
  });
  const fe = await pending;
  try {
    await fe.setOwner();
    await assert.rejects(
      () => fe.getFeatures(),
      /GET_FEATURES: expected its reply, got GET_PROTOCOL_FEATURES/,
    );
  } finally {
    fe.close();
    await backend.done;
  }
  const pending2 = VhostUserFrontend.listen(path, { memoryMiB: 1 });
  const backend2 = fakeBackend(path, () => "stop");
  const fe2 = await pending2;
  try {
    await fe2.setOwner();
    await backend2.done;
    await assert.rejects(
      () => fe2.getFeatures(),
      /GET_FEATURES: the backend closed the connection/,
    );
  } finally {
    fe2.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("frontend: connect retries until the backend listens, then gives a clear error", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await assert.rejects(
      () => VhostUserFrontend.connect(`${dir}/none.sock`, { connectTimeoutMs: 100 }),
      /cannot connect to .*none\.sock: .*ENOENT/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("frontend <-> the SDK's own backend: full bring-up, config, vring base", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/be.sock`;
  const rec = recordingDriver();
  const device = await VhostMdevDevice.create(rec.driver, { queues: 1, options: {} });
  const server = VhostUserServer.listen(device, path);
  let fe: VhostUserFrontend | null = null;
  try {
    fe = await VhostUserFrontend.connect(path, { memoryMiB: 4 });
    const offered = await fe.handshake();
    assert.ok(offered & FEATURES);
    assert.equal(fe.queueNum, 1); // queue pairs, as DPDK and QEMU read it
    await fe.setFeatures(FEATURES);
    await fe.setStatus(VirtioStatus.ACKNOWLEDGE | VirtioStatus.DRIVER | VirtioStatus.FEATURES_OK);
    assert.equal(await fe.getStatus(), 0xb);
    await fe.setMemTable();
    await fe.setupRing(
      0,
      { num: 256, descAddr: 0x10000, availAddr: 0x11000, usedAddr: 0x12000 },
      5,
    );
    await fe.setupRing(1, { num: 256, descAddr: 0x20000, availAddr: 0x21000, usedAddr: 0x22000 });
    await fe.setVringEnable(0, true);
    await fe.setVringEnable(1, true);
    await fe.setStatus(0xf);
    await rec.until((c) => c.some((x) => x.op === "start"), 5000, "start");
    const start = rec.calls.find((c) => c.op === "start")!;
    assert.equal(start.ringsInMemory, true);
    assert.equal(start.rings![0].descAddr, 0x10000);
    assert.equal(start.rings![0].state.availIdx, 5);
    assert.equal(start.rings![1].usedAddr, 0x22000);
    assert.deepEqual([...await fe.getConfig(0, 6)], [0x52, 0x54, 0, 0x12, 0x34, 0x56]);
    await fe.setVringEnable(0, false);
    await fe.setVringEnable(1, false);
    assert.equal(await fe.getVringBase(0), 5);
    assert.equal(await fe.getVringBase(1), 0);
  } finally {
    fe?.close();
    await server.close();
    await device.close();
    await Deno.remove(dir, { recursive: true });
  }
});
