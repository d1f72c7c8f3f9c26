// The vhost frontend against a real peer: DPDK 22.11 testpmd's virtio_user,
// in both directions of connection, with a driver that records every op.

import assert from "node:assert/strict";
import { type DeviceEvent, VhostMdevDevice } from "@vhost-mdev/sdk";
import { VhostUserClient, VhostUserServer } from "@vhost-mdev/sdk/vhost-user";
import { eventfdWrite } from "@vhost-mdev/sdk/sys";
import { Testpmd } from "@vhost-mdev/testing";
import { requirePeer } from "../support/peers.ts";
import { type Recorder, recordingDriver } from "../support/recording_driver.ts";

const testpmd = await requirePeer("dpdk-testpmd");

/** The eventfd counters testpmd's process holds, from /proc/PID/fdinfo. */
function eventfdCounts(pid: number): bigint[] {
  const out: bigint[] = [];
  for (const e of Deno.readDirSync(`/proc/${pid}/fdinfo`)) {
    let text: string;
    try {
      text = Deno.readTextFileSync(`/proc/${pid}/fdinfo/${e.name}`);
    } catch {
      continue;
    }
    const m = /eventfd-count:\s*([0-9a-f]+)/.exec(text);
    if (m) out.push(BigInt("0x" + m[1]));
  }
  return out;
}

async function setup(queues: number) {
  const dir = Deno.makeTempDirSync({ prefix: "vhost-mdev-" });
  const sock = `${dir}/vhost.sock`;
  const rec = recordingDriver();
  const events: DeviceEvent[] = [];
  const device = await VhostMdevDevice.create(rec.driver, { queues, options: {} }, {
    // testpmd --no-huge shares memfds made without MFD_ALLOW_SEALING.
    allowUnsealedMemory: true,
    listener: (e) => events.push(e),
  });
  return { dir, sock, rec, device, events };
}

function startTestpmd(sock: string, queues: number, extra = "") {
  return Testpmd.start({
    binary: testpmd!,
    vdevs: `net_virtio_user0,path=${sock},queues=${queues},queue_size=512${extra}`,
    forwardMode: "txonly",
    txpkts: 64,
    rxq: queues,
    txq: queues,
    rxd: 256,
    txd: 512,
    cpu: 1,
  });
}

/** Wait for a start that runs all 2 * queues rings (virtio_user enables pairs one by one). */
function untilAllRingsStarted(rec: Recorder, queues: number, what: string) {
  return rec.until(
    (c) =>
      c.some((x) => x.op === "start" && x.rings!.filter((r) => r.enabled).length === 2 * queues),
    20000,
    what,
  );
}

/** Assert the start call saw every ring with testpmd's sizes, inside guest memory. */
function assertStarted(rec: Recorder, queues: number) {
  const start = rec.calls.findLast((c) => c.op === "start")!;
  assert.ok(start, "start was called");
  assert.equal(start.ringsInMemory, true, "ring addresses are GPAs inside the memory table");
  const enabled = start.rings!.filter((r) => r.enabled);
  assert.equal(enabled.length, 2 * queues);
  for (const r of enabled) {
    assert.equal(r.num, 512, `ring ${r.index} size (queue_size=512)`);
    assert.ok(r.kickFd >= 0 && r.callFd >= 0, `ring ${r.index} has kick and call fds`);
  }
}

for (const queues of [1, 2]) {
  Deno.test({
    name: `testpmd virtio_user (queues=${queues}): start, kicks, calls, stop, restart`,
    ignore: testpmd === null,
    async fn() {
      const { dir, sock, rec, device, events } = await setup(queues);
      const server = VhostUserServer.listen(device, sock);
      let tp: Testpmd | null = null;
      try {
        tp = await startTestpmd(sock, queues);
        await untilAllRingsStarted(rec, queues, "start");
        assertStarted(rec, queues);
        const starts = rec.count("start");
        assert.ok(device.memory.regions.length >= 1, "memory table mapped");

        // The link comes up (DRIVER_OK reached the device and testpmd is satisfied).
        await tp.waitForLinkUp(0, 15000);

        // A kick from the frontend reaches notify: txonly fills TX ring 1 and kicks it.
        await tp.startForwarding();
        await rec.until(
          (c) => c.some((x) => x.op === "notify" && x.queue === 1),
          10000,
          "notify(1)",
        );
        await tp.stopForwarding();

        // A write to a call fd reaches the frontend's eventfd: a distinctive count appears there.
        const mark = 0x5eed_0000 + queues;
        eventfdWrite(device.vring(0).callFd, mark);
        assert.ok(
          eventfdCounts(tp.pid).includes(BigInt(mark)),
          "testpmd's call eventfd carries the value written by the device",
        );

        // A second frontend is refused while the first is attached.
        const second = await startTestpmd(sock, queues).catch((e) => e as Error);
        if (second instanceof Testpmd) {
          assert.equal(await second.linkUp(0), false, "second frontend never gets the device");
          await second.close();
        }
        assert.ok(events.some((e) => e.type === "refused"), "refusal logged");
        assert.equal(rec.count("start"), starts, "refusal did not disturb the running device");
        assert.equal(device.running, true);

        // Stopping testpmd: getVringState for every ring and one stop.
        rec.calls.length = 0;
        await tp.close();
        tp = null;
        await rec.until((c) => c.filter((x) => x.op === "getVringState").length >= 2 * queues);
        await rec.until(() => !device.owner, 10000, "detach");
        const asked = new Set(
          rec.calls.filter((c) => c.op === "getVringState").map((c) => c.queue),
        );
        assert.deepEqual([...asked].sort(), Array.from({ length: 2 * queues }, (_, i) => i));
        assert.equal(rec.count("stop"), 1, "stopped exactly once");

        // Restart: works again.
        rec.calls.length = 0;
        tp = await startTestpmd(sock, queues);
        await untilAllRingsStarted(rec, queues, "start after restart");
        assertStarted(rec, queues);
        await tp.waitForLinkUp(0, 15000);
      } finally {
        await tp?.close();
        await server.close();
        await device.close();
        Deno.removeSync(dir, { recursive: true });
      }
    },
  });
}

Deno.test({
  name: "client mode reconnects when virtio_user in server=1 mode restarts",
  ignore: testpmd === null,
  async fn() {
    const { dir, sock, rec, device } = await setup(1);
    // The client retries until testpmd listens (testpmd waits for it before its prompt).
    const client = VhostUserClient.connect(device, sock, { maxDelayMs: 200 });
    let tp: Testpmd | null = await startTestpmd(sock, 1, ",server=1");
    try {
      await rec.until((c) => c.some((x) => x.op === "start"), 20000, "start");
      assertStarted(rec, 1);
      await tp.waitForLinkUp(0, 15000);
      rec.calls.length = 0;
      await tp.close();
      tp = null;
      await rec.until((c) => c.some((x) => x.op === "stop"), 10000, "stop");
      // testpmd comes back on the same path: the client finds it again.
      tp = await startTestpmd(sock, 1, ",server=1");
      await rec.until((c) => c.some((x) => x.op === "start"), 20000, "start after reconnect");
      assertStarted(rec, 1);
      await tp.waitForLinkUp(0, 15000);
      assert.ok(client.connections >= 2, `reconnected (${client.connections} connections)`);
    } finally {
      await tp?.close();
      await client.close();
      await device.close();
      Deno.removeSync(dir, { recursive: true });
    }
  },
});
