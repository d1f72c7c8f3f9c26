// The virtio-rng example under a real frontend: QEMU's vhost-user-rng-pci
// in front of a Linux guest whose virtio_rng driver (virtio 1.2 §5.4)
// becomes the current hwrng and is read through /dev/hwrng. Skipped where
// QEMU or a static busybox is missing (outside CI).

import assert from "node:assert/strict";
import { VhostMdevDevice } from "@vhost-mdev/sdk";
import { VhostUserServer } from "@vhost-mdev/sdk/vhost-user";
import { GUEST_TOOLS, kernelBootArgs, QemuVm, requireHostTools } from "@vhost-mdev/testing/guest";
import { prepareGuestKernel } from "../../testing/guest/guest_kernel.ts";
import { buildInitramfs, initScript } from "../../testing/guest/initramfs.ts";
import { sharedMemoryArgs } from "../../testing/guest/vhost_user_nic.ts";
import { driver } from "../../examples/rng.ts";
import { skipGuestTest } from "../vm/example_process.ts";

const BODY = `
echo "vm-rng: available=$(cat /sys/class/misc/hw_random/rng_available)"
cur=$(cat /sys/class/misc/hw_random/rng_current)
dd if=/dev/hwrng of=/tmp/r bs=512 count=8 2>/dev/null
n=$(wc -c < /tmp/r)
distinct=$(od -An -v -tx1 /tmp/r | tr ' ' '\\n' | grep . | sort -u | wc -l)
echo "vm-rng: current=$cur bytes=$n distinct=$distinct head=$(od -An -v -tx1 -N 48 /tmp/r | tr -d ' \\n')"
`;

Deno.test({
  name: "rng: a Linux guest reads /dev/hwrng from the kit's device through QEMU",
  ignore: await skipGuestTest("the rng VM test"),
  async fn() {
    const tools = await requireHostTools(GUEST_TOOLS);
    const log = () => {};
    const kernel = await prepareGuestKernel({
      flavour: "cloud",
      modules: ["virtio_pci", "virtio-rng"],
      log,
    });
    const initrd = await buildInitramfs({
      init: initScript({ modules: kernel.modules.map((m) => m.name), body: BODY }),
      modules: kernel.modules,
      busybox: tools.get("busybox")!,
      log,
    });
    const dir = await Deno.makeTempDir({ prefix: "rng_vm_test" });
    const device = await VhostMdevDevice.create(driver, { queues: 1, options: {} });
    const server = VhostUserServer.listen(device, `${dir}/rng.sock`);
    const vm = QemuVm.launch({
      qemu: tools.get("qemu-system-x86_64"),
      log,
      args: [
        ...kernelBootArgs({ kernel: kernel.image, initrd, append: "quiet", memoryMiB: 256 }),
        ...sharedMemoryArgs("256M"),
        "-chardev",
        `socket,id=c0,path=${dir}/rng.sock`,
        "-device",
        "vhost-user-rng-pci,chardev=c0,vectors=0",
      ],
    });
    try {
      const m = await vm.waitFor(/vm-rng: current=(\S*) bytes=(\d+) distinct=(\d+) head=(\S*)/, {
        timeoutMs: 120_000,
        what: "the guest to read /dev/hwrng",
      });
      assert.match(m[1], /^virtio_rng/, "the kit's device is the guest's hwrng");
      assert.equal(Number(m[2]), 4096);
      const [ring] = device.stats();
      // On failure: the first bytes read and what the device counted, to tell
      // a short device write from a guest-side read race.
      assert.ok(
        Number(m[3]) > 200,
        `4096 random bytes take most byte values (${m[3]}); first 48: ${m[4]}; ` +
          `device: ${JSON.stringify(ring)}`,
      );
      assert.ok(ring.requests > 0 && ring.bytes >= 4096, JSON.stringify(ring));
      assert.equal(ring.errors, 0);
    } finally {
      await vm.close();
      await server.close();
      await device.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
