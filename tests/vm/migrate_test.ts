/**
 * examples/migrate.ts end to end: a QEMU guest served by `serve --driver sim`
 * migrates to a second QEMU with its own sim backend while the guest verifies
 * echo-reply payloads held across the switch-over.
 *
 * - With a correct backend the migration completes, no reply is corrupt or
 *   lost (the responder answers every request, and the source's ring state
 *   goes to the destination, so nothing is dropped on the way), the
 *   destination backend carries the traffic after the switch-over, and the
 *   destination QEMU asks it to announce the guest (`SEND_RARP`: the sim
 *   offers no `VIRTIO_NET_F_GUEST_ANNOUNCE`, so QEMU's `vhost_user_migration_done`
 *   sends it, once per announce round).
 * - With `--log-buffers false` on the source (a device that does not mark the
 *   receive buffers it writes) the same check must report corrupt replies and
 *   the example must exit 1: the check can fail.
 *
 * The two migrations run one after the other (two QEMUs each, on 2 cores).
 */

import assert from "node:assert/strict";
import { C_COMPILER, findProgram, type MigrationVmResult } from "@vhost-mdev/testing/guest";
import { runExample, skipGuestTest } from "./example_process.ts";

async function skip(name: string): Promise<boolean> {
  if (await skipGuestTest(name)) return true;
  // The guest's migcheck helper is compiled with cc -static; under CI a
  // missing compiler fails the run with the install command instead.
  if (Deno.env.get("CI") !== "true" && (await findProgram(C_COMPILER.program)) === null) {
    console.log(`skipping ${name}: no C compiler; install with: apt-get install gcc libc6-dev`);
    return true;
  }
  return false;
}

async function migrate(args: string[]): Promise<{ code: number; result: MigrationVmResult }> {
  const run = await runExample("examples/migrate.ts", ["--backend", "sim", "--json", ...args], {
    timeoutMs: 150_000,
    prefix: "  migrate.ts| ",
  });
  const report = run.result as { runs?: MigrationVmResult[] } | null;
  assert.ok(
    report?.runs?.length === 1,
    `examples/migrate.ts printed no JSON run (exit ${run.code})`,
  );
  return { code: run.code, result: report.runs[0] };
}

Deno.test({
  name: "migrate example: the sim-served guest migrates with its memory consistent",
  ignore: await skip("migrate example"),
  async fn(t) {
    await t.step("correct backend: completed, 0 corrupt, 0 lost, destination served", async () => {
      const { code, result: r } = await migrate([]);
      assert.equal(r.migration.status, "completed", r.migration.error ?? "");
      assert.ok((r.migration.totalMs ?? 0) > 0, `total-time ${r.migration.totalMs}`);
      assert.ok(r.migration.downtimeMs !== null, "query-migrate gave no downtime");
      const g = r.guest.summary;
      assert.equal(g.corrupt, 0, `corrupt replies: ${r.guest.corruptLines.join("; ")}`);
      assert.equal(g.lost, 0);
      assert.equal(g.verified, g.sent);
      assert.ok(g.sent > 0);
      // Traffic continued on the destination, through the destination backend.
      assert.ok(r.guest.cleanRoundsOnDestination > 0, "no clean round on the destination");
      assert.ok(r.destination.fromGuest > 0 && r.destination.toGuest > 0);
      // Every frame the guest received came from one of the two backends.
      assert.equal(
        r.guest.counters.rx_packets,
        r.source.toGuest + r.destination.toGuest,
        "guest rx_packets != source + destination backends' RX-ring packets",
      );
      // SEND_RARP goes to the destination only, after the switch-over.
      assert.ok(
        (r.destination.device.announcements ?? 0) >= 1,
        `destination announcements ${r.destination.device.announcements}`,
      );
      assert.equal(r.source.device.announcements, 0);
      assert.deepEqual(r.reasons, []);
      assert.equal(r.pass, true);
      assert.equal(code, 0);
    });

    await t.step("source not logging its receive buffers: corrupt replies, exit 1", async () => {
      const { code, result: r } = await migrate(["--log-buffers", "false"]);
      assert.equal(r.migration.status, "completed", r.migration.error ?? "");
      assert.ok(
        r.guest.summary.corrupt > 0,
        `the check missed the unlogged writes: ${JSON.stringify(r.guest.summary)}`,
      );
      assert.equal(r.pass, false);
      assert.ok(r.reasons.some((why) => /corrupt/.test(why)), r.reasons.join("; "));
      assert.equal(code, 1);
    });
  },
});
