// With HOST_NOTIFIER negotiated, a driver's doorbell area (getNotifyAddr)
// reaches the frontend on the backend channel as VRING_HOST_NOTIFIER_MSG
// with a mappable fd, and is withdrawn (no-fd form) when the device stops.
// Also: CONFIG_CHANGE_MSG reaches the frontend.

import assert from "node:assert/strict";
import {
  bit,
  type Driver,
  VhostMdevDevice,
  VirtioDeviceId,
  VirtioFeatureBit,
} from "@vhost-mdev/sdk";
import {
  BackendRequest,
  decodeHeader,
  decodeVringArea,
  FrontendRequest,
  ProtocolFeatureBit,
  VhostUserServer,
} from "@vhost-mdev/sdk/vhost-user";
import {
  close,
  ftruncate,
  memfdCreate,
  mmap,
  pollAsync,
  POLLIN,
  recvMsg,
  socketPair,
} from "@vhost-mdev/sdk/sys";
import { DEFAULT_FRONTEND_PROTOCOL_FEATURES, VhostUserFrontend } from "@vhost-mdev/testing";
import { SplitQueueDriver } from "@vhost-mdev/sdk";

/** A driver whose doorbells live in one memfd page per ring. */
function doorbellDriver(): { driver: Driver; memfd: number; config: () => void } {
  const memfd = memfdCreate("doorbells");
  ftruncate(memfd, 2 * 4096);
  let signalConfig = () => {};
  const driver: Driver = {
    name: "doorbells",
    description: "maps a doorbell page per ring",
    pciIds: [],
    probe(ctx) {
      signalConfig = () => ctx.signalConfigChange();
      return {
        deviceId: VirtioDeviceId.NET,
        features: bit(VirtioFeatureBit.VERSION_1),
        numQueues: 2,
        maxQueueSize: 256,
        ops: {
          start() {},
          stop() {},
          getNotifyAddr: (q) => ({ fd: memfd, offset: q * 4096, size: 4096 }),
          getVringState: (q) => ctx.vring(q).state,
        },
      };
    },
  };
  return { driver, memfd, config: () => signalConfig() };
}

async function readBackend(fd: number) {
  const rev = await pollAsync([{ fd, events: POLLIN }], 5000);
  assert.notEqual(rev[0], 0, "backend channel message arrives");
  // Header first, then exactly its payload: messages without fds may arrive together.
  const head = new Uint8Array(12);
  const r = recvMsg(fd, head, 4);
  assert.equal(r.bytes, 12);
  const { request, flags, size } = decodeHeader(head);
  const payload = new Uint8Array(size);
  if (size) assert.equal(recvMsg(fd, payload, 0).bytes, size);
  return { request, flags, size, payload, fds: r.fds };
}

Deno.test("host notifiers and config change travel on the backend channel", async () => {
  const dir = Deno.makeTempDirSync();
  const { driver, memfd, config } = doorbellDriver();
  const device = await VhostMdevDevice.create(driver, { queues: 1, options: {} });
  const server = VhostUserServer.listen(device, `${dir}/s.sock`);
  const [ours, theirs] = socketPair();
  const fe = await VhostUserFrontend.connect(`${dir}/s.sock`, {
    memoryMiB: 4,
    protocolFeatures: DEFAULT_FRONTEND_PROTOCOL_FEATURES | bit(ProtocolFeatureBit.BACKEND_REQ) |
      bit(ProtocolFeatureBit.BACKEND_SEND_FD) | bit(ProtocolFeatureBit.HOST_NOTIFIER),
  });
  try {
    await fe.handshake();
    await fe.request(FrontendRequest.SET_BACKEND_REQ_FD, new Uint8Array(0), [theirs]);
    await fe.setFeatures(bit(VirtioFeatureBit.VERSION_1) | bit(VirtioFeatureBit.PROTOCOL_FEATURES));
    await fe.setStatus(0xb); // ACKNOWLEDGE | DRIVER | FEATURES_OK: status drives the start
    await fe.setMemTable();
    for (const q of [0, 1]) {
      await fe.setupRing(q, SplitQueueDriver.layout(256, 0x10000 * (q + 1)));
      await fe.setVringEnable(q, true);
    }
    assert.equal(device.running, false, "no DRIVER_OK yet");
    await fe.setStatus(0xf);
    assert.equal(device.running, true);

    // One VRING_HOST_NOTIFIER_MSG per ring, each with the doorbell page's fd.
    const seen = new Map<number, { offset: number; size: number; fd: number }>();
    for (let i = 0; i < 2; i++) {
      const m = await readBackend(ours);
      assert.equal(m.request, BackendRequest.VRING_HOST_NOTIFIER_MSG);
      assert.equal(m.size, 24);
      assert.equal(m.fds.length, 1);
      const area = decodeVringArea(m);
      assert.equal(area.noFd, false);
      seen.set(area.index, { size: area.size, offset: area.offset, fd: m.fds[0] });
    }
    assert.deepEqual([...seen.keys()].sort(), [0, 1]);
    // The fd really is the doorbell memory: a write through the frontend's
    // mapping of ring 1's page lands in the driver's memfd at offset 4096.
    const n1 = seen.get(1)!;
    assert.equal(n1.offset, 4096);
    assert.equal(n1.size, 4096);
    const theirMap = mmap(n1.fd, 4096, { offset: 4096 });
    const driverMap = mmap(memfd, 8192);
    new DataView(theirMap.buffer).setUint16(0, 1, true); // "kick ring 1"
    assert.equal(new DataView(driverMap.buffer).getUint16(4096, true), 1);
    theirMap.unmap();
    driverMap.unmap();
    for (const s of seen.values()) close(s.fd);

    // Config change.
    config();
    const c = await readBackend(ours);
    assert.equal(c.request, BackendRequest.CONFIG_CHANGE_MSG);

    // Stopping withdraws the notifiers: index | NOFD flag, no fd.
    await fe.setVringEnable(0, false);
    for (let i = 0; i < 2; i++) {
      const m = await readBackend(ours);
      assert.equal(m.request, BackendRequest.VRING_HOST_NOTIFIER_MSG);
      assert.equal(m.fds.length, 0);
      assert.ok(decodeVringArea(m).noFd, "no-fd flag set");
    }
  } finally {
    fe.close();
    close(ours);
    await server.close();
    await device.close();
    close(memfd);
    Deno.removeSync(dir, { recursive: true });
  }
});
