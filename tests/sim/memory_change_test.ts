// Guest memory changing under a running sim device: a region the rings do
// not use is added and removed over vhost-user (ADD_MEM_REG / REM_MEM_REG)
// while frames stream through the loopback. The device never stops, its
// Workers move to the new table, and every frame comes back byte-identical.

import assert from "node:assert/strict";
import { bit, type DeviceEvent, VhostMdevDevice } from "@vhost-mdev/sdk";
import { ProtocolFeatureBit, VhostUserServer } from "@vhost-mdev/sdk/vhost-user";
import { close, ftruncate, memfdCreate } from "@vhost-mdev/sdk/sys";
import { driver } from "@vhost-mdev/sim";
import {
  DEFAULT_FRONTEND_PROTOCOL_FEATURES,
  VhostUserFrontend,
  VirtioNetDriver,
} from "@vhost-mdev/testing";

const MiB = 1 << 20;

function frames(round: number): Uint8Array[] {
  return [60, 200, 1000, 1514].map((size, i) => {
    const f = new Uint8Array(size);
    for (let k = 0; k < size; k++) f[k] = (k * 31 + i * 7 + round * 13) & 0xff;
    return f;
  });
}

Deno.test("sim: a region added and removed during traffic, no stop, no frame lost", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "vhost-sim-mem-" });
  const sock = `${dir}/sim.sock`;
  const events: DeviceEvent[] = [];
  const device = await VhostMdevDevice.create(
    driver,
    { queues: 1, options: { mode: "loopback" } },
    { listener: (e) => events.push(e) },
  );
  const server = VhostUserServer.listen(device, sock);
  const hot = memfdCreate("hotplug", { allowSealing: true });
  ftruncate(hot, 2 * MiB);
  const fe = await VhostUserFrontend.connect(sock, {
    protocolFeatures: DEFAULT_FRONTEND_PROTOCOL_FEATURES |
      bit(ProtocolFeatureBit.CONFIGURE_MEM_SLOTS),
  });
  try {
    const net = await VirtioNetDriver.start(fe, { queuePairs: 1, eventIdx: true });
    const round = async (r: number) => {
      const sent = frames(r);
      assert.equal(net.send(sent), sent.length);
      assert.deepEqual(await net.waitReceive(sent.length), sent, `round ${r}`);
    };
    await round(0);
    const started = events.filter((e) => e.type === "start").length;
    assert.equal(started, 1);

    // A region far above the frontend's memory, which no ring uses.
    const region = {
      gpa: fe.memoryGpa + fe.memorySize + 0x4000_0000,
      size: 2 * MiB,
      uva: 0x7e00_0000_0000,
      mmapOffset: 0,
    };
    // Frames in flight while the table changes.
    const inFlight = frames(1);
    assert.equal(net.send(inFlight), inFlight.length);
    await fe.addMemRegion({ ...region, fd: hot });
    assert.deepEqual(
      await net.waitReceive(inFlight.length),
      inFlight,
      "frames sent across the add",
    );
    assert.equal(device.memory.regions.length, 2);
    await round(2);

    const more = frames(3);
    assert.equal(net.send(more), more.length);
    await fe.removeMemRegion(region);
    assert.deepEqual(await net.waitReceive(more.length), more, "frames sent across the removal");
    assert.equal(device.memory.regions.length, 1);
    await round(4);

    assert.deepEqual(
      events.filter((e) => ["start", "stop", "ring-start", "ring-stop", "error"].includes(e.type))
        .map((e) => e.message),
      [events.find((e) => e.type === "start")!.message],
      "one start and nothing else: the rings ran through both changes",
    );
    const memory = events.filter((e) => e.type === "memory").map((e) => e.message);
    assert.equal(memory.length, 3);
    assert.match(memory[1], /\(\+1 -0\)/);
    assert.match(memory[2], /\(\+0 -1\)/);
    const s = device.stats();
    assert.equal(s[0].packets, 5 * 4, "every frame delivered once");
    assert.equal(s[0].errors + s[1].errors, 0);
    await net.stop();
  } finally {
    fe.close();
    close(hot);
    await server.close();
    await device.close();
    Deno.removeSync(dir, { recursive: true });
  }
});
