/**
 * A Linux guest under QEMU whose disk is a `vhost-user-blk-pci` device
 * served by the SDK's blk driver: the guest writes random data to the raw
 * disk, syncs, drops its cache and reads it back; the host then reads the
 * backing file itself. All three SHA-256 sums must agree.
 *
 *   deno run -A examples/blk_vm.ts [--queues N] [--data-mib N] [--file PATH] [--json]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { VhostMdevDevice } from "@vhost-mdev/sdk";
import { driver } from "@vhost-mdev/blk";
import { runBlkVm } from "@vhost-mdev/testing/guest";

/** Run the VM with command-line `args`; resolves with the exit code (0 pass, 1 fail). */
export async function main(args: string[]): Promise<number> {
  const { values: flags } = parseArgs({
    args,
    options: {
      queues: { type: "string", default: "2" },
      "data-mib": { type: "string", default: "8" },
      file: { type: "string" },
      json: { type: "boolean", default: false },
    },
  });
  const queues = Number(flags.queues), dataMiB = Number(flags["data-mib"]);
  const dir = await Deno.makeTempDir({ prefix: "blk_vm" });
  // A fresh sparse disk of 64 MiB unless a file is given.
  const file = flags.file ?? `${dir}/disk.img`;
  if (!flags.file) {
    await Deno.writeFile(file, new Uint8Array(0));
    await Deno.truncate(file, 64 << 20);
  }
  const device = await VhostMdevDevice.create(driver, { queues, options: { file } });
  try {
    const report = await runBlkVm({ device, file, queues, dataMiB, log: console.log });
    console.log(
      flags.json ? JSON.stringify(report) : `blk VM ${report.pass ? "PASS" : "FAIL"}: guest ` +
        `wrote ${dataMiB} MiB (sha256 ${report.written.slice(0, 16)}...), read back ` +
        `${report.readBack.slice(0, 16)}..., host file ${report.hostFile.slice(0, 16)}...; ` +
        `${report.requests} requests, ${report.errors} errors on ${report.guestQueues} queue(s)`,
    );
    return report.pass ? 0 : 1;
  } finally {
    await device.close();
    await Deno.remove(dir, { recursive: true });
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
