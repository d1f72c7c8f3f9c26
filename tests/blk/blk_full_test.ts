// A blk device whose backing file lives on a 1 MiB tmpfs: writes that do
// not fit get IOERR (ENOSPC), reads and flushes keep working, space freed by
// a discard takes writes again, and a second device on another file serves
// throughout. Mounting needs root; elsewhere the test is ignored.

import assert from "node:assert/strict";
import { VirtioBlkStatus } from "@vhost-mdev/sdk";
import { fileRange, randomBytes, totals, withBlk } from "./rig.ts";

const { OK, IOERR } = VirtioBlkStatus;
const KiB = 1024;

async function run(cmd: string, args: string[]): Promise<void> {
  const out = await new Deno.Command(cmd, { args, stderr: "piped" }).output();
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
  }
}

Deno.test({
  name:
    "blk: a backing file on a full tmpfs fails the writes that do not fit with IOERR; reads, other requests and another device go on",
  ignore: Deno.uid() !== 0,
  async fn() {
    const mnt = await Deno.makeTempDir({ prefix: "blk_tmpfs" });
    await run("mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", mnt]);
    try {
      const file = `${mnt}/small.img`;
      await Deno.writeFile(file, new Uint8Array(0));
      await Deno.truncate(file, 4 * 1024 * KiB); // sparse: 4 MiB on 1 MiB of space
      await withBlk({ file }, async (full) => {
        await withBlk({ sizeBytes: 4 * 1024 * KiB }, async (other) => {
          const chunk = 64 * KiB;
          const data = randomBytes(32 * chunk); // 2 MiB: twice what fits
          const statuses: number[] = [];
          for (let i = 0; i < 32; i++) {
            const [s, o] = await Promise.all([
              full.blk.write(i * chunk / 512, data.subarray(i * chunk, (i + 1) * chunk)),
              other.blk.write(i * chunk / 512, data.subarray(i * chunk, (i + 1) * chunk)),
            ]);
            statuses.push(s);
            assert.equal(o, OK, `the other device took write ${i}`);
          }
          const fitted = statuses.indexOf(IOERR);
          assert.ok(fitted > 4, `some writes fit before the space ran out (${statuses})`);
          assert.ok(
            statuses.slice(fitted).every((s) => s === IOERR),
            `every write after the first failure failed (${statuses})`,
          );
          assert.deepEqual(statuses.slice(0, fitted), Array(fitted).fill(OK));
          const failed = 32 - fitted;
          assert.deepEqual(totals(full.device), { requests: fitted, errors: failed });
          // Reads and flushes keep working on the full device, and what fit is there.
          for (let i = 0; i < fitted; i++) {
            const r = await full.blk.read(i * chunk / 512, chunk);
            assert.equal(r.status, OK);
            assert.ok(r.data.every((b, k) => b === data[i * chunk + k]), `chunk ${i} reads back`);
          }
          assert.equal(await full.blk.flush(), OK);
          assert.deepEqual(
            await fileRange(file, 0, fitted * chunk),
            data.subarray(0, fitted * chunk),
          );
          // Discarding the first chunks frees space: a failed write now fits.
          assert.equal(await full.blk.discard([{ sector: 0, sectors: 4 * chunk / 512 }]), OK);
          const retry = fitted * chunk;
          assert.equal(await full.blk.write(retry / 512, data.subarray(retry, retry + chunk)), OK);
          assert.deepEqual(
            await fileRange(file, retry, chunk),
            data.subarray(retry, retry + chunk),
          );
          // The other device has everything.
          assert.deepEqual(await fileRange(other.file, 0, data.length), data);
          assert.deepEqual(totals(other.device), { requests: 32, errors: 0 });
        });
      });
    } finally {
      await run("umount", [mnt]);
      await Deno.remove(mnt, { recursive: true });
    }
  },
});
