// The blk driver under a real frontend: QEMU's vhost-user-blk-pci in front
// of a Linux guest whose virtio_blk (virtio 1.2 §5.2) writes random data to
// the raw disk on two queues, syncs and reads it back; the host verifies
// the backing file on its own. Skipped where QEMU or a static busybox is
// missing (never in CI).

import assert from "node:assert/strict";
import { VhostMdevDevice } from "@vhost-mdev/sdk";
import { driver } from "@vhost-mdev/blk";
import { runBlkVm } from "@vhost-mdev/testing/guest";
import { skipGuestTest } from "./example_process.ts";

Deno.test({
  name:
    "blk VM: a Linux guest writes its vhost-user-blk disk; guest, read-back and host file sums agree",
  ignore: await skipGuestTest("the blk VM test"),
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "blk_vm_test" });
    const file = `${dir}/disk.img`;
    await Deno.writeFile(file, new Uint8Array(0));
    await Deno.truncate(file, 32 << 20);
    const device = await VhostMdevDevice.create(driver, { queues: 2, options: { file } });
    try {
      const report = await runBlkVm({ device, file, queues: 2, dataMiB: 4 });
      assert.equal(report.guestSectors, (32 << 20) / 512, "the guest sees the file's size");
      assert.equal(report.guestQueues, 2);
      assert.equal(report.readBack, report.written, "the guest reads back what it wrote");
      assert.equal(report.hostFile, report.written, "the backing file holds what the guest wrote");
      // 4 MiB written and 4 MiB read back through the device.
      assert.ok(report.bytes >= 8 << 20, `the device moved the data (${report.bytes} bytes)`);
      assert.ok(report.requests >= 8, `${report.requests} requests`);
      assert.equal(report.errors, 0);
      assert.ok(report.pass);
    } finally {
      await device.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
