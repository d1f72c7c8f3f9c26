// Hostile vhost-user messages fail only their own session, with a logged
// reason, leaking no fd or mapping, while another device served by the same
// process keeps answering.

import assert from "node:assert/strict";
import { bit, type DeviceEvent, VhostMdevDevice, VirtioFeatureBit } from "@vhost-mdev/sdk";
import {
  encodeMessage,
  FrontendRequest,
  HeaderFlag,
  ProtocolFeatureBit,
  VhostUserServer,
} from "@vhost-mdev/sdk/vhost-user";
import {
  close,
  connectUnix,
  eventfd,
  ftruncate,
  memfdCreate,
  pollAsync,
  POLLIN,
  recvMsg,
  sendMsg,
  unixSocket,
} from "@vhost-mdev/sdk/sys";
import { until } from "@vhost-mdev/testing";
import { recordingDriver } from "../support/recording_driver.ts";
import { settledFdCount } from "../support/peers.ts";

const V = HeaderFlag.VERSION;

/** Shared file mappings (guest memory is mapped from memfds); the JS heap's come and go. */
function mappingCount(): number {
  return Deno.readTextFileSync("/proc/self/maps").split("\n").filter((l) => l.includes("memfd:"))
    .length;
}

/** A raw frontend connection for crafting messages. */
class RawFrontend {
  fd: number;
  constructor(path: string) {
    this.fd = unixSocket();
    connectUnix(this.fd, path);
  }
  send(bytes: Uint8Array, fds: number[] = []) {
    sendMsg(this.fd, bytes, fds);
  }
  /** Read one reply (header + payload), or null on EOF; waits up to `ms`. */
  async reply(ms = 5000): Promise<{ request: number; payload: Uint8Array } | null> {
    // Async: the backend under test runs on this same thread.
    if ((await pollAsync([{ fd: this.fd, events: POLLIN }], ms))[0] === 0) {
      throw new Error(`no reply within ${ms} ms`);
    }
    const buf = new Uint8Array(4096);
    const r = recvMsg(this.fd, buf, 8);
    for (const fd of r.fds) close(fd);
    if (r.bytes === 0) return null;
    const v = new DataView(buf.buffer);
    const size = v.getUint32(8, true);
    return { request: v.getUint32(0, true), payload: buf.slice(12, 12 + size) };
  }
  /** Wait for the backend to close the connection. */
  async closedByPeer(ms = 5000): Promise<boolean> {
    for (;;) {
      const r = await this.reply(ms);
      if (r === null) return true;
    }
  }
  close() {
    close(this.fd);
  }
}

function u64(n: bigint | number): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(n), true);
  return b;
}

function header(request: number, flags: number, size: number): Uint8Array {
  const b = new Uint8Array(12);
  const v = new DataView(b.buffer);
  v.setUint32(0, request, true);
  v.setUint32(4, flags, true);
  v.setUint32(8, size, true);
  return b;
}

async function withTwoDevices(
  fn: (
    bad: { path: string; events: DeviceEvent[] },
    good: { path: string; events: DeviceEvent[] },
  ) => Promise<void>,
) {
  const dir = Deno.makeTempDirSync();
  const made = [] as { dev: VhostMdevDevice; server: VhostUserServer; events: DeviceEvent[] }[];
  for (const name of ["bad", "good"]) {
    const events: DeviceEvent[] = [];
    const dev = await VhostMdevDevice.create(recordingDriver().driver, { queues: 1, options: {} }, {
      name,
      listener: (e) => events.push(e),
    });
    made.push({ dev, server: VhostUserServer.listen(dev, `${dir}/${name}.sock`), events });
  }
  try {
    await fn(
      { path: `${dir}/bad.sock`, events: made[0].events },
      { path: `${dir}/good.sock`, events: made[1].events },
    );
  } finally {
    for (const m of made) {
      await m.server.close();
      await m.dev.close();
    }
    Deno.removeSync(dir, { recursive: true });
  }
}

/** The good device still answers GET_FEATURES on a fresh connection. */
async function assertServes(path: string) {
  const f = new RawFrontend(path);
  try {
    f.send(encodeMessage(FrontendRequest.GET_FEATURES, V, new Uint8Array(0)));
    const r = await f.reply();
    assert.ok(r, "good device answered");
    assert.equal(r.request, FrontendRequest.GET_FEATURES);
    assert.equal(r.payload.length, 8);
  } finally {
    f.close();
  }
}

function waitFor(events: DeviceEvent[], type: string, pattern: RegExp): Promise<void> {
  return until(
    () => `a ${type} event matching ${pattern}; got: ${events.map((e) => e.message).join(" | ")}`,
    () => events.some((e) => e.type === type && pattern.test(e.message)),
  );
}

interface Case {
  name: string;
  /** Sends the hostile message(s) on `f`; returns fds the test created. */
  send(f: RawFrontend): number[];
  reason: RegExp;
}

const cases: Case[] = [
  {
    name: "short header",
    send(f) {
      f.send(new Uint8Array([1, 0, 0, 0, 1, 0])); // 6 of 12 bytes, then EOF
      f.close();
      f.fd = -1;
      return [];
    },
    reason: /connection closed inside a message|disconnected/,
  },
  {
    name: "size larger than the payload",
    send(f) {
      f.send(header(FrontendRequest.SET_FEATURES, V, 8));
      f.send(new Uint8Array(3)); // 3 of 8 payload bytes, then EOF
      f.close();
      f.fd = -1;
      return [];
    },
    reason: /closed inside a 8-byte payload|closed inside a message/,
  },
  {
    name: "size beyond the limit",
    send(f) {
      f.send(header(FrontendRequest.SET_MEM_TABLE, V, 1 << 20));
      return [];
    },
    reason: /payload size 1048576 exceeds/,
  },
  {
    name: "too many fds",
    send(f) {
      const fds = Array.from({ length: 40 }, () => eventfd(0));
      f.send(encodeMessage(FrontendRequest.SET_OWNER, V, new Uint8Array(0)), fds);
      return fds;
    },
    reason: /more than 32 fds|carries 3\d fd/,
  },
  {
    name: "unknown request",
    send(f) {
      f.send(encodeMessage(99, V, new Uint8Array(0)));
      return [];
    },
    reason: /unknown request code 99/,
  },
  {
    name: "ring index out of range",
    send(f) {
      const fd = eventfd(0);
      f.send(encodeMessage(FrontendRequest.SET_VRING_CALL, V, u64(5)), [fd]);
      return [fd];
    },
    reason: /ring index 5 is out of range/,
  },
  {
    name: "SET_MEM_TABLE with more regions than fds",
    send(f) {
      const m = memfdCreate("g", { allowSealing: true });
      ftruncate(m, 1 << 20);
      const p = new Uint8Array(8 + 2 * 32);
      const v = new DataView(p.buffer);
      v.setUint32(0, 2, true);
      for (let i = 0; i < 2; i++) {
        v.setBigUint64(8 + i * 32, BigInt(i << 20), true); // gpa
        v.setBigUint64(16 + i * 32, BigInt(1 << 20), true); // size
        v.setBigUint64(24 + i * 32, BigInt(0x10000000 + (i << 20)), true); // uva
      }
      f.send(encodeMessage(FrontendRequest.SET_MEM_TABLE, V, p), [m]);
      return [m];
    },
    reason: /2 regions but 1 fd/,
  },
  {
    name: "garbage after a mapped memory table",
    send(f) {
      const m = memfdCreate("g", { allowSealing: true });
      ftruncate(m, 1 << 20);
      const p = new Uint8Array(8 + 32);
      const v = new DataView(p.buffer);
      v.setUint32(0, 1, true);
      v.setBigUint64(16, BigInt(1 << 20), true); // size; gpa 0
      v.setBigUint64(24, 0x10000000n, true); // uva
      f.send(encodeMessage(FrontendRequest.SET_MEM_TABLE, V, p), [m]);
      f.send(encodeMessage(77, V, new Uint8Array(0)));
      return [m];
    },
    reason: /unknown request code 77/,
  },
  {
    name: "wrong payload size",
    send(f) {
      f.send(encodeMessage(FrontendRequest.SET_VRING_NUM, V, new Uint8Array(5)));
      return [];
    },
    reason: /SET_VRING_NUM: payload is 5 bytes, expected 8/,
  },
  {
    name: "bad version flags",
    send(f) {
      f.send(encodeMessage(FrontendRequest.GET_FEATURES, 0, new Uint8Array(0)));
      return [];
    },
    reason: /do not carry version 1/,
  },
];

for (const c of cases) {
  Deno.test(`malformed: ${c.name} fails only its session`, async () => {
    await withTwoDevices(async (bad, good) => {
      // Warm up both (first connection allocates the session machinery).
      await assertServes(good.path);
      await waitFor(good.events, "disconnected", /frontend #1/);
      const fdsBefore = await settledFdCount();
      const mapsBefore = mappingCount();
      const f = new RawFrontend(bad.path);
      const ours = c.send(f);
      await waitFor(bad.events, "disconnected", /./);
      const reason = bad.events.filter((e) => e.type === "error" || e.type === "disconnected")
        .map((e) => e.message).join(" | ");
      assert.match(reason, c.reason);
      if (f.fd >= 0) {
        assert.ok(await f.closedByPeer(), "backend closed the connection");
        f.close();
      }
      for (const fd of ours) close(fd);
      await assertServes(good.path);
      await waitFor(good.events, "disconnected", /frontend #2/);
      // The hostile session left nothing behind.
      assert.equal(await settledFdCount(), fdsBefore, "fds after the failed session");
      assert.equal(mappingCount(), mapsBefore, "mappings after the failed session");
    });
  });
}

Deno.test("refused request with REPLY_ACK gets a non-zero ack and the session goes on", async () => {
  await withTwoDevices(async (bad) => {
    const f = new RawFrontend(bad.path);
    try {
      f.send(encodeMessage(FrontendRequest.GET_PROTOCOL_FEATURES, V, new Uint8Array(0)));
      const pf = new DataView((await f.reply())!.payload.buffer).getBigUint64(0, true);
      assert.ok(pf & (1n << BigInt(ProtocolFeatureBit.REPLY_ACK)));
      f.send(
        encodeMessage(
          FrontendRequest.SET_PROTOCOL_FEATURES,
          V,
          u64(bit(ProtocolFeatureBit.REPLY_ACK)),
        ),
      );
      // Unoffered feature bit 34 (RING_PACKED) with NEED_REPLY: nack.
      f.send(
        encodeMessage(
          FrontendRequest.SET_FEATURES,
          V | HeaderFlag.NEED_REPLY,
          u64(bit(VirtioFeatureBit.RING_PACKED)),
        ),
      );
      const nack = (await f.reply())!;
      assert.equal(nack.request, FrontendRequest.SET_FEATURES);
      assert.notEqual(new DataView(nack.payload.buffer).getBigUint64(0, true), 0n);
      // Still serving: an accepted one acks 0.
      f.send(
        encodeMessage(
          FrontendRequest.SET_FEATURES,
          V | HeaderFlag.NEED_REPLY,
          u64(bit(VirtioFeatureBit.VERSION_1)),
        ),
      );
      assert.equal(new DataView((await f.reply())!.payload.buffer).getBigUint64(0, true), 0n);
      // A supported-but-unimplemented request (SEND_RARP) with NEED_REPLY: nack, session lives.
      f.send(
        encodeMessage(FrontendRequest.SEND_RARP, V | HeaderFlag.NEED_REPLY, new Uint8Array(8)),
      );
      assert.notEqual(new DataView((await f.reply())!.payload.buffer).getBigUint64(0, true), 0n);
      f.send(encodeMessage(FrontendRequest.GET_FEATURES, V, new Uint8Array(0)));
      assert.equal((await f.reply())!.request, FrontendRequest.GET_FEATURES);
    } finally {
      f.close();
    }
  });
});

Deno.test("a second frontend is refused while the first is attached", async () => {
  await withTwoDevices(async (bad) => {
    const first = new RawFrontend(bad.path);
    try {
      first.send(encodeMessage(FrontendRequest.SET_OWNER, V, new Uint8Array(0)));
      await waitFor(bad.events, "connected", /frontend #1/);
      const second = new RawFrontend(bad.path);
      assert.ok(await second.closedByPeer(), "second frontend is closed");
      second.close();
      await waitFor(bad.events, "refused", /frontend #2 .*in use by frontend #1/);
      // The first still works.
      first.send(encodeMessage(FrontendRequest.GET_FEATURES, V, new Uint8Array(0)));
      assert.equal((await first.reply())!.request, FrontendRequest.GET_FEATURES);
    } finally {
      first.close();
    }
  });
});
