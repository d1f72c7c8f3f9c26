/**
 * Memory hot-plug with a real peer: a QEMU guest pings the sim responder
 * every 50 ms while the test adds a 128 MiB DIMM to it over QMP and removes
 * it again. QEMU's vhost-user backend tells the device about each change
 * with one message, since the SDK offers the CONFIGURE_MEM_SLOTS protocol
 * feature: `ADD_MEM_REG` when the DIMM is plugged, `REM_MEM_REG` when the
 * guest has ejected it. The device maps (or drops) just that region while
 * its rings run on, and the sim driver's Workers move to the new table.
 *
 * QEMU runs with `-m 256M,slots=4,maxmem=2048M` and its boot RAM in a shared
 * `memory-backend-memfd`. The hook runs `object-add` (a shared
 * `memory-backend-memfd`, sealed as QEMU seals them by default) and
 * `device_add` (`pc-dimm`), waits half a second, `device_del`s the DIMM and
 * waits for QEMU's `DEVICE_DELETED`: the guest kernel ejects the DIMM
 * through ACPI, which it can do at once because hot-added memory stays
 * offline (Debian's kernel does not online it by default, and the guest has
 * no udev rule that would). Then `object-del` drops the backend.
 *
 * Asserted: QEMU sent exactly one `ADD_MEM_REG` and one `REM_MEM_REG`, for
 * the same 128 MiB region (the test wraps the device's `addMemoryRegion`,
 * `removeMemoryRegion` and `setMemTable` to watch, changing nothing); a
 * `memory` event reading `(+1 -0)` after the add and one reading `(+0 -1)`
 * after the removal, with `device.memory.regions` one longer in between and
 * back to where it was after; no `stop` or `start`
 * event from the first `start` until the guest's ping has finished (QEMU's
 * `SET_STATUS 0` at exit comes later and is not counted); no `ring-stop` or
 * `ring-start` anywhere after the first `start` up to then either; no
 * `error` event; the guest lost no ping and its tx/rx counters equal the
 * device's ring 1/ring 0 counters; TX ring 1 took frames while the DIMM was
 * in and after it left.
 */

import assert from "node:assert/strict";
import { type DeviceEvent, type MemoryRegionSpec, VhostMdevDevice } from "@vhost-mdev/sdk";
import { driver } from "@vhost-mdev/sim";
import { type PingVmRun, pingVmSummary, runPingVm } from "@vhost-mdev/testing/guest";
import { until } from "@vhost-mdev/testing";
import { skipGuestTest } from "./example_process.ts";

const IP = "10.0.0.1";
/** Seconds between echo requests. */
const INTERVAL = 0.05;
/**
 * Echo requests: 5 s of pinging, which outlasts the hook (0.5 s before the
 * add, 0.5 s with the DIMM in, the guest's eject, 0.5 s after: about 1.7 s
 * in all); the test checks that the ping was still running when the hook
 * ended.
 */
const COUNT = 100;
/** Size of the hot-plugged DIMM, bytes. */
const DIMM_BYTES = 128 * 1024 * 1024;
/** Wall time with the DIMM plugged in, ms. */
const PLUGGED_MS = 500;
/** Wall time before the add and after the removal, ms. */
const SETTLE_MS = 500;
/** How long the guest may take to eject the DIMM, ms. */
const EJECT_TIMEOUT_MS = 10_000;

/** One line of the run's log: a device event, a memory message, a QMP step, or a mark. */
type Entry =
  | { kind: "event"; time: number; event: DeviceEvent }
  | { kind: "message"; time: number; request: string; gpa: number; size: number }
  | { kind: "qmp"; time: number; what: string }
  | { kind: "mark"; time: number; what: string };

function entryLine(e: Entry, t0: number): string {
  const at = `+${String(e.time - t0).padStart(5)} ms`;
  switch (e.kind) {
    case "event":
      return `${at} event ${e.event.type}: ${e.event.message}`;
    case "message":
      return `${at} ${e.request} gpa 0x${e.gpa.toString(16)} size ${e.size / 1048576} MiB`;
    case "qmp":
      return `${at} -- QMP ${e.what}`;
    case "mark":
      return `${at} -- ${e.what}`;
  }
}

Deno.test({
  name: "memory hot-plug: a DIMM added and removed while the guest pings, rings running",
  ignore: await skipGuestTest("memory hot-plug vm"),
  async fn() {
    const log: Entry[] = [];
    const device = await VhostMdevDevice.create(driver, {
      queues: 1,
      options: { mode: "responder", ip: IP },
    });
    device.addListener((event) => log.push({ kind: "event", time: Date.now(), event }));
    // Watch the memory messages the vhost-user session passes on; behaviour unchanged.
    const message = (request: string, gpa: number, size: number) =>
      log.push({ kind: "message", time: Date.now(), request, gpa, size });
    const setMemTable = device.setMemTable.bind(device);
    const addMemoryRegion = device.addMemoryRegion.bind(device);
    const removeMemoryRegion = device.removeMemoryRegion.bind(device);
    device.setMemTable = (regions: readonly MemoryRegionSpec[]): Promise<void> => {
      for (const r of regions) message("SET_MEM_TABLE", r.gpa, r.size);
      return setMemTable(regions);
    };
    device.addMemoryRegion = (region: MemoryRegionSpec): Promise<void> => {
      message("ADD_MEM_REG", region.gpa, region.size);
      return addMemoryRegion(region);
    };
    device.removeMemoryRegion = (gpa: number, size: number): Promise<void> => {
      message("REM_MEM_REG", gpa, size);
      return removeMemoryRegion(gpa, size);
    };
    const step = (kind: "qmp" | "mark", what: string) => {
      log.push({ kind, time: Date.now(), what });
      return log.length - 1;
    };
    const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
    /** The first `memory` event at or after log index `from`, waited for up to `ms`. */
    const memoryEvent = async (from: number, ms: number): Promise<DeviceEvent | undefined> => {
      const deadline = Date.now() + ms;
      while (true) {
        const e = log.slice(from).find((x) => x.kind === "event" && x.event.type === "memory");
        if (e?.kind === "event") return e.event;
        if (Date.now() >= deadline) return undefined;
        await sleep(10);
      }
    };

    const regions = { before: -1, plugged: -1, after: -1 };
    /** Frames the device took from TX ring 1 at each step. */
    const txRing = { added: -1, unplugging: -1, after: -1 };
    const txPackets = () => device.stats().find((r) => r.queue === 1)?.packets ?? -1;
    const marks = { add: -1, remove: -1, removed: -1, pingDone: -1 };
    let added: DeviceEvent | undefined;
    let removed: DeviceEvent | undefined;
    let pingOutlasted = false;
    let watchConsole: Promise<void> = Promise.resolve();

    const during = async ({ qmp, vm }: PingVmRun) => {
      // Mark when the guest's ping ends (its summary reaches the console).
      watchConsole = (async () => {
        while (vm.status === null && !/packets transmitted/.test(vm.console)) await sleep(10);
        marks.pingDone = step("mark", "the guest's ping finished");
      })();
      // The first sim Worker of a process can take seconds to load under
      // load: the hot-plug is about a running device, so wait for it.
      await until("the device to run", () => device.running, 15_000);
      await sleep(SETTLE_MS);
      regions.before = device.memory.regions.length;

      marks.add = step("mark", `plugging a ${DIMM_BYTES / 1048576} MiB DIMM`);
      step("qmp", "object-add memory-backend-memfd hp0");
      await qmp.execute("object-add", {
        "qom-type": "memory-backend-memfd",
        id: "hp0",
        size: DIMM_BYTES,
        share: true,
      });
      step("qmp", "device_add pc-dimm dimm0");
      await qmp.execute("device_add", { driver: "pc-dimm", id: "dimm0", memdev: "hp0" });
      added = await memoryEvent(marks.add, 5000);
      regions.plugged = device.memory.regions.length;
      txRing.added = txPackets();
      await sleep(PLUGGED_MS);
      txRing.unplugging = txPackets();

      const eventsBefore = qmp.events.length;
      marks.remove = step("mark", "unplugging the DIMM");
      step("qmp", "device_del dimm0");
      await qmp.execute("device_del", { id: "dimm0" });
      const deleted = await qmp.waitForEvent("DEVICE_DELETED", EJECT_TIMEOUT_MS, eventsBefore)
        .catch((e) => {
          step("mark", `no DEVICE_DELETED: ${e instanceof Error ? e.message : e}`);
          return undefined;
        });
      if (deleted) step("qmp", `event DEVICE_DELETED ${JSON.stringify(deleted.data)}`);
      marks.removed = log.length;
      removed = await memoryEvent(marks.remove, deleted ? 5000 : 0);
      regions.after = device.memory.regions.length;
      if (deleted) {
        step("qmp", "object-del hp0");
        await qmp.execute("object-del", { id: "hp0" });
      }
      await sleep(SETTLE_MS);
      txRing.after = txPackets();
      // The ping prints its summary only when it ends: it must still be running.
      pingOutlasted = !/packets transmitted/.test(vm.console);
      step("mark", "hook done");
      assert.ok(deleted, `the guest did not eject the DIMM within ${EJECT_TIMEOUT_MS} ms`);
    };

    const started = performance.now();
    let result;
    try {
      result = await runPingVm({
        device,
        ip: IP,
        count: COUNT,
        interval: INTERVAL,
        hotplugSlots: 4,
        maxMemMiB: 2048,
        during,
        log: (l) => console.log(`  hotplug-vm| ${l}`),
      });
    } finally {
      await watchConsole;
      await device.close();
      const t0 = log[0]?.time ?? 0;
      for (const e of log) {
        if (e.kind !== "event" || e.event.type !== "debug") {
          console.log(`  hotplug-vm log| ${entryLine(e, t0)}`);
        }
      }
    }
    const wall = ((performance.now() - started) / 1000).toFixed(1);
    for (const l of pingVmSummary(result)) console.log(`  hotplug-vm| ${l}`);
    console.log(`  hotplug-vm| wall time ${wall} s, timings ${JSON.stringify(result.timings)}`);

    const events = log.flatMap((e) => e.kind === "event" ? [e.event] : []);
    assert.deepEqual(events.filter((e) => e.type === "error").map((e) => e.message), []);
    for (const r of result.device.rings) assert.equal(r.errors, 0, `ring ${r.queue} errors`);
    assert.ok(pingOutlasted, "the ping ended before the hook did: raise COUNT");
    assert.ok(marks.pingDone > marks.removed, "the ping's end was not seen after the removal");

    // The add: one region more, announced as (+1 -0).
    assert.ok(added, "no memory event after the DIMM was plugged");
    assert.match(added.message, /\(\+1 -0\)$/, `after the add: ${added.message}`);
    assert.equal(regions.plugged, regions.before + 1, "regions after the add");
    // The removal: that region gone again, announced as (+0 -1).
    assert.ok(removed, "no memory event after the DIMM was removed");
    assert.match(removed.message, /\(\+0 -1\)$/, `after the removal: ${removed.message}`);
    assert.equal(regions.after, regions.before, "regions after the removal");
    const memory = log.slice(marks.add, marks.pingDone).flatMap((e) =>
      e.kind === "event" && e.event.type === "memory" ? [e.event.message] : []
    );
    assert.equal(memory.length, 2, `memory events during the hot-plug: ${memory.join("; ")}`);
    // QEMU said it with one message each (CONFIGURE_MEM_SLOTS), about the same region.
    const messages = log.slice(marks.add, marks.pingDone).flatMap((e) =>
      e.kind === "message" ? [[e.request, e.gpa, e.size]] : []
    );
    const gpa = messages[0]?.[1];
    assert.deepEqual(
      messages,
      [["ADD_MEM_REG", gpa, DIMM_BYTES], ["REM_MEM_REG", gpa, DIMM_BYTES]],
      "memory messages during the hot-plug",
    );

    // The rings ran on: from the first start until the ping ended, no device
    // or ring stopped or started again.
    const firstStart = log.findIndex((e) => e.kind === "event" && e.event.type === "start");
    assert.ok(firstStart >= 0 && firstStart < marks.add, "the device started before the add");
    const disruptions = log.slice(firstStart + 1, marks.pingDone).flatMap((e) =>
      e.kind === "event" && ["stop", "start", "ring-stop", "ring-start"].includes(e.event.type)
        ? [`${e.event.type}: ${e.event.message}`]
        : []
    );
    assert.deepEqual(disruptions, [], "stops or starts while the guest pinged");

    // Frames kept flowing with the DIMM in and after it left.
    assert.ok(
      txRing.added < txRing.unplugging && txRing.unplugging < txRing.after,
      `TX ring 1 packets at the add, the unplug and the end: ${JSON.stringify(txRing)}`,
    );
    console.log(`  hotplug-vm| TX ring 1 packets at add/unplug/end: ${JSON.stringify(txRing)}`);

    // Nothing lost: ping complete, both sides' counters equal.
    const g = result.guest;
    assert.equal(g.pingExit, 0);
    assert.equal(g.transmitted, COUNT);
    assert.equal(g.received, COUNT);
    assert.equal(g.lossPercent, 0);
    const packets = (q: number) => result.device.rings.find((r) => r.queue === q)?.packets;
    assert.equal(packets(1), g.counters.tx_packets);
    assert.equal(packets(0), g.counters.rx_packets);
    assert.deepEqual(result.reasons, []);
    assert.equal(result.pass, true);
  },
});
