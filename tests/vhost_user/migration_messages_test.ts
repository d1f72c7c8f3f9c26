// The live-migration requests on the wire, from a frontend in another
// process's place (the test kit's, over a UNIX socket): what is offered, the
// empty reply QEMU waits for after SET_LOG_BASE, SEND_RARP reaching the
// driver, and a log the backend must not map refused with a reason.

import assert from "node:assert/strict";
import {
  bit,
  type DeviceEvent,
  type Driver,
  hasBit,
  VHOST_F_LOG_ALL,
  VhostMdevDevice,
} from "@vhost-mdev/sdk";
import { ProtocolFeatureBit, VhostUserServer } from "@vhost-mdev/sdk/vhost-user";
import { close, ftruncate, memfdCreate, mmap } from "@vhost-mdev/sdk/sys";
import { VhostUserFrontend } from "@vhost-mdev/testing";
import { driver as sim } from "@vhost-mdev/sim";
import { recordingDriver } from "../support/recording_driver.ts";

/** A driver with no `setLog`. */
const plain = recordingDriver().driver;

async function served(
  d: Driver,
  options: Record<string, string> = {},
): Promise<
  { device: VhostMdevDevice; server: VhostUserServer; path: string; events: DeviceEvent[] }
> {
  const events: DeviceEvent[] = [];
  const device = await VhostMdevDevice.create(d, { queues: 1, options }, {
    listener: (e) => events.push(e),
  });
  const path = `${await Deno.makeTempDir()}/s.sock`;
  return { device, server: VhostUserServer.listen(device, path), path, events };
}

Deno.test("a driver that logs is offered LOG_ALL, LOG_SHMFD and RARP; SET_LOG_BASE gets an empty reply; SEND_RARP reaches it", async () => {
  const { device, server, path } = await served(sim, { mode: "responder" });
  const fe = await VhostUserFrontend.connect(path, { memoryMiB: 1 });
  const fd = memfdCreate("wire-log", { allowSealing: true });
  try {
    assert.ok(hasBit(await fe.getFeatures(), VHOST_F_LOG_ALL));
    const pf = await fe.getProtocolFeatures();
    assert.ok(hasBit(pf, ProtocolFeatureBit.LOG_SHMFD), "LOG_SHMFD offered");
    assert.ok(hasBit(pf, ProtocolFeatureBit.RARP), "RARP offered");
    await fe.handshake();
    await fe.setMemTable();
    ftruncate(fd, 64);
    // The frontend's request waits for the backend's reply: it resolves only if one came.
    await fe.setLogBase(fd, 64, 0);
    const view = new Uint8Array(mmap(fd, 64).buffer);
    assert.equal(view.length, 64);
    await fe.sendRarp(new Uint8Array([0x52, 0x54, 0, 0x12, 0x34, 0x56]));
    // A request after both proves the session is still in step.
    assert.ok((await fe.getFeatures()) > 0n);
    assert.deepEqual(device.deviceStats(), { announcements: 1 });
  } finally {
    fe.close();
    close(fd);
    await server.close();
    await device.close();
  }
});

Deno.test("a driver without setLog is offered neither LOG_ALL nor LOG_SHMFD, and its SET_LOG_BASE is refused", async () => {
  const { device, server, path, events } = await served(plain);
  const fe = await VhostUserFrontend.connect(path, { memoryMiB: 1 });
  const fd = memfdCreate("wire-log-refused", { allowSealing: true });
  try {
    assert.equal(device.canLog, false);
    assert.ok(!hasBit(await fe.getFeatures(), VHOST_F_LOG_ALL));
    assert.ok(!hasBit(await fe.getProtocolFeatures(), ProtocolFeatureBit.LOG_SHMFD));
    ftruncate(fd, 64);
    await assert.rejects(fe.setLogBase(fd, 64, 0), /closed the connection/);
    await server.close();
    assert.ok(
      events.some((e) => /SET_LOG_BASE: driver recorder cannot log dirty pages/.test(e.message)),
      JSON.stringify(events.map((e) => e.message)),
    );
  } finally {
    fe.close();
    close(fd);
    await server.close();
    await device.close();
  }
});

Deno.test("SET_LOG_BASE with a log that could shrink under the backend fails the session with the reason", async () => {
  const { device, server, path, events } = await served(sim);
  const fe = await VhostUserFrontend.connect(path, { memoryMiB: 1 });
  const fd = memfdCreate("wire-log-unsealable"); // no MFD_ALLOW_SEALING
  try {
    await fe.handshake();
    ftruncate(fd, 64);
    await assert.rejects(fe.setLogBase(fd, 64, 0), /closed the connection/);
    await server.close();
    const text = events.map((e) => e.message).join("\n");
    assert.match(text, /SET_LOG_BASE: dirty log: fd \d+ .* cannot be sealed/);
    // The device is whole: another frontend gets served.
    assert.equal(device.running, false);
  } finally {
    fe.close();
    close(fd);
    await server.close();
    await device.close();
  }
});

Deno.test("LOG_ALL in a driver's own features without setLog is refused at probe", async () => {
  await assert.rejects(
    VhostMdevDevice.create({
      ...plain,
      async probe(ctx, params) {
        const d = await plain.probe(ctx, params);
        return { ...d, features: d.features | bit(VHOST_F_LOG_ALL) };
      },
    }, { queues: 1, options: {} }),
    /offers VHOST_F_LOG_ALL but has no ops.setLog/,
  );
});
