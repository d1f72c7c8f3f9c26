// VirtioNetDriver against an in-process backend that maps the frontend's
// memory like a real one and plays the device with SplitQueue: header
// handling, MRG_RXBUF merging, and what the driver does with a device that
// returns nonsense.

import assert from "node:assert/strict";
import { GuestMemory } from "../../sdk/memory/guest_memory.ts";
import { close, connectUnix, unixSocket } from "../../sdk/sys/mod.ts";
import { MessageSocket } from "../../sdk/vhost_user/connection.ts";
import { FrontendRequest, HeaderFlag, ProtocolFeatureBit } from "../../sdk/uapi/vhost_user.ts";
import { writeNumBuffers } from "../../sdk/net/header.ts";
import {
  bit,
  VIRTIO_NET_HDR_SIZE,
  VirtioFeatureBit,
  VirtioNetFeatureBit,
} from "../../sdk/uapi/virtio.ts";
import { DescriptorChain } from "../../sdk/virtqueue/descriptor.ts";
import { SplitQueue } from "../../sdk/virtqueue/split_queue.ts";
import { availRingSize, descTableSize, usedRingSize } from "../../sdk/virtqueue/layout.ts";
import {
  decodeMemTable,
  decodeU64,
  decodeVringAddr,
  decodeVringState,
  encodeReply as reply,
  encodeU64 as u64,
} from "../../sdk/vhost_user/message.ts";
import { VhostUserFrontend, VirtioNetDriver } from "@vhost-mdev/testing";

const OFFER = bit(VirtioFeatureBit.VERSION_1) | bit(VirtioFeatureBit.PROTOCOL_FEATURES) |
  bit(VirtioNetFeatureBit.MRG_RXBUF) | bit(VirtioFeatureBit.EVENT_IDX);

/** A minimal vhost-user backend: maps the table, remembers ring addresses. */
class MiniBackend {
  memory: GuestMemory | null = null;
  rings = new Map<number, { num: number; desc: number; used: number; avail: number }>();
  features = 0n;
  done: Promise<void>;
  #socket: MessageSocket;

  constructor(path: string) {
    const fd = unixSocket();
    connectUnix(fd, path);
    this.#socket = new MessageSocket(fd);
    this.done = this.#serve();
  }

  async #serve(): Promise<void> {
    const s = this.#socket;
    try {
      for (;;) {
        const m = await s.read();
        if (!m) return;
        let answer: Uint8Array | null = null;
        switch (m.request) {
          case FrontendRequest.GET_FEATURES:
            answer = u64(OFFER);
            break;
          case FrontendRequest.GET_PROTOCOL_FEATURES:
            answer = u64(bit(ProtocolFeatureBit.REPLY_ACK) | bit(ProtocolFeatureBit.MQ));
            break;
          case FrontendRequest.GET_QUEUE_NUM:
            answer = u64(1);
            break;
          case FrontendRequest.SET_FEATURES:
            this.features = decodeU64(m);
            break;
          case FrontendRequest.SET_MEM_TABLE:
            this.memory = GuestMemory.map(decodeMemTable(m));
            break;
          case FrontendRequest.SET_VRING_NUM: {
            const { index, num } = decodeVringState(m);
            this.rings.set(index, { num, desc: 0, used: 0, avail: 0 });
            break;
          }
          case FrontendRequest.SET_VRING_ADDR: {
            const a = decodeVringAddr(m);
            const r = this.rings.get(a.index)!;
            const mem = this.memory!;
            r.desc = mem.uvaToGpa(a.desc, descTableSize(r.num));
            r.used = mem.uvaToGpa(a.used, usedRingSize(r.num));
            r.avail = mem.uvaToGpa(a.avail, availRingSize(r.num));
            break;
          }
          case FrontendRequest.GET_VRING_BASE:
            answer = m.payload;
            break;
        }
        for (const fd of m.fds) close(fd);
        if (answer) s.send(reply(m.request, answer));
        else if (m.flags & HeaderFlag.NEED_REPLY) s.send(reply(m.request, u64(0)));
      }
    } finally {
      s.close();
      this.memory?.close();
    }
  }

  /** The device side of ring `q`. */
  queue(q: number): SplitQueue {
    const r = this.rings.get(q)!;
    return new SplitQueue(this.memory!, {
      num: r.num,
      descAddr: r.desc,
      availAddr: r.avail,
      usedAddr: r.used,
    }, {
      lastAvailIdx: 0,
      eventIdx: (this.features & bit(VirtioFeatureBit.EVENT_IDX)) !== 0n,
      indirect: false,
    });
  }
}

/** A receive buffer's content: header with `numBuffers`, then `data`. */
function rxBuffer(numBuffers: number, data: Uint8Array): Uint8Array {
  const b = new Uint8Array(VIRTIO_NET_HDR_SIZE + data.length);
  writeNumBuffers(b, 0, numBuffers);
  b.set(data, VIRTIO_NET_HDR_SIZE);
  return b;
}

async function setup(
  options: { mrgRxbuf: boolean },
  body: (net: VirtioNetDriver, be: MiniBackend) => Promise<void> | void,
): Promise<void> {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/fe.sock`;
  const pending = VhostUserFrontend.listen(path, { memoryMiB: 4 });
  const be = new MiniBackend(path);
  const fe = await pending;
  try {
    const net = await VirtioNetDriver.start(fe, {
      ringSize: 16,
      bufferSize: 512,
      mrgRxbuf: options.mrgRxbuf,
      eventIdx: true,
    });
    await body(net, be);
  } finally {
    fe.close();
    await be.done;
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("driver: transmit puts a zero 12-byte header before each frame", async () => {
  await setup({ mrgRxbuf: true }, (net, be) => {
    assert.equal(be.features, OFFER);
    const tx = be.queue(1);
    const frames = [new Uint8Array(60).fill(0xab), new Uint8Array(100).fill(0xcd)];
    assert.equal(net.send(frames), 2);
    const chain = new DescriptorChain();
    for (const f of frames) {
      assert.ok(tx.pop(chain));
      const got = new Uint8Array(600);
      const n = tx.readChain(chain, got);
      assert.equal(n, 12 + f.length);
      assert.deepEqual([...got.subarray(0, 12)], new Array(12).fill(0));
      assert.deepEqual(got.subarray(12, n), f);
      tx.pushUsed(chain.head, 0);
    }
    assert.equal(tx.pop(chain), false);
    tx.publishUsed();
    assert.throws(() => net.send([new Uint8Array(501)]), /does not fit a 512-byte buffer/);
    // A full ring refuses the rest and counts them.
    assert.equal(net.send(Array.from({ length: 20 }, () => new Uint8Array(60))), 16);
    assert.equal(net.stats().txFull, 4);
    assert.equal(net.stats().txCompleted, 2);
  });
});

Deno.test("driver: MRG_RXBUF frames are merged from num_buffers buffers", async () => {
  await setup({ mrgRxbuf: true }, (net, be) => {
    const rx = be.queue(0);
    const chain = new DescriptorChain();
    const frame = new Uint8Array(1200).map((_, i) => i & 0xff);
    // 500 + 512 + 188 bytes: three buffers, the first with the header.
    const pieces = [
      rxBuffer(3, frame.subarray(0, 500)),
      frame.subarray(500, 1012),
      frame.subarray(1012),
    ];
    for (const p of pieces) {
      assert.ok(rx.pop(chain));
      rx.pushUsed(chain.head, rx.writeChain(chain, p));
    }
    rx.publishUsed();
    const got = net.receive();
    assert.equal(got.length, 1);
    assert.deepEqual(got[0], frame);
    const s = net.stats();
    assert.deepEqual([s.rxPackets, s.rxBytes, s.rxMerged, s.rxErrors], [1, 1200, 1, 0]);
    // The three buffers went back to the device.
    assert.equal(rx.available(), 16);
  });
});

Deno.test("driver: a device's bad lengths and num_buffers are counted, not trusted", async () => {
  await setup({ mrgRxbuf: true }, (net, be) => {
    const rx = be.queue(0);
    const chain = new DescriptorChain();
    const push = (data: Uint8Array, len = data.length) => {
      assert.ok(rx.pop(chain));
      rx.writeChain(chain, data);
      rx.pushUsed(chain.head, len);
    };
    push(new Uint8Array(4)); // shorter than the header
    push(rxBuffer(1, new Uint8Array(10)), 4096); // longer than the buffer
    push(rxBuffer(0, new Uint8Array(10))); // num_buffers 0
    push(rxBuffer(1, new Uint8Array([7, 7, 7]))); // a good one
    push(rxBuffer(9, new Uint8Array(10))); // promises buffers that never come
    rx.publishUsed();
    const got = net.receive();
    assert.deepEqual(got, [new Uint8Array([7, 7, 7])]);
    const s = net.stats();
    assert.equal(s.rxErrors, 4);
    assert.equal(s.rxPackets, 1);
    assert.equal(rx.available(), 16, "every buffer was reposted");
  });
});

Deno.test("driver: without MRG_RXBUF num_buffers is ignored and each buffer is a frame", async () => {
  const dir = await Deno.makeTempDir();
  try {
    // bufferSize 512 cannot hold a full frame without MRG_RXBUF.
    const pending = VhostUserFrontend.listen(`${dir}/fe.sock`, { memoryMiB: 4 });
    const be = new MiniBackend(`${dir}/fe.sock`);
    const fe = await pending;
    try {
      await assert.rejects(
        () => VirtioNetDriver.start(fe, { bufferSize: 512 }),
        /cannot hold a 1514-byte frame/,
      );
      const net = await VirtioNetDriver.start(fe, { ringSize: 8 });
      assert.equal(net.features & bit(VirtioNetFeatureBit.MRG_RXBUF), 0n);
      const rx = be.queue(0);
      const chain = new DescriptorChain();
      assert.ok(rx.pop(chain));
      rx.pushUsed(chain.head, rx.writeChain(chain, rxBuffer(0, new Uint8Array([1, 2]))));
      rx.publishUsed();
      assert.deepEqual(net.receive(), [new Uint8Array([1, 2])]);
    } finally {
      fe.close();
      await be.done;
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
