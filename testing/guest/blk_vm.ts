/**
 * The blk VM: boot a Linux guest under QEMU whose disk is a
 * `vhost-user-blk-pci` device served by this SDK, let the guest write
 * random data to the raw disk (`/dev/vda`), sync it, drop its page cache and
 * read it back, and check three SHA-256 sums against each other: what the
 * guest wrote, what it read back, and what the host finds in the device's
 * backing file, read independently.
 *
 * @module
 */

import { createHash } from "node:crypto";
import type { VhostMdevDevice } from "@vhost-mdev/sdk";
import { VhostUserServer } from "@vhost-mdev/sdk/vhost-user";
import { prepareGuestKernel } from "./guest_kernel.ts";
import { GUEST_TOOLS, requireHostTools } from "./host_tools.ts";
import { buildInitramfs, initScript } from "./initramfs.ts";
import { kernelBootArgs, QemuVm } from "./qemu.ts";
import { sharedMemoryArgs } from "./vhost_user_nic.ts";

/** Options of {@linkcode runBlkVm}. */
export interface BlkVmOptions {
  /** The blk device the guest's disk talks to; served here, closed by the caller. */
  device: VhostMdevDevice;
  /** The device's backing file, which the host reads to verify what the guest wrote. */
  file: string;
  /**
   * Request queues of the guest's disk (default 1; the device must have as
   * many); the guest gets as many CPUs, as virtio_blk uses one queue per CPU.
   */
  queues?: number;
  /** MiB of random data the guest writes (default 8). */
  dataMiB?: number;
  /** Where on the disk it writes, in MiB from the start (default 1). */
  offsetMiB?: number;
  /** Progress lines (booting takes seconds). Default: none. */
  log?: (line: string) => void;
}

/** What {@linkcode runBlkVm} found. */
export interface BlkVmReport {
  /** Whether every check passed. */
  pass: boolean;
  /** Disk size the guest saw, in 512-byte sectors (`/sys/block/vda/size`). */
  guestSectors: number;
  /** Hardware queues the guest's virtio_blk made (`/sys/block/vda/mq`). */
  guestQueues: number;
  /** SHA-256 of the data the guest wrote. */
  written: string;
  /** SHA-256 of what the guest read back from the disk after dropping its cache. */
  readBack: string;
  /** SHA-256 of the same range of the backing file, read by the host. */
  hostFile: string;
  /** Requests the device completed, summed over its rings. */
  requests: number;
  /** Bytes those requests moved (device-readable bytes plus used lengths). */
  bytes: number;
  /** Errors the device counted. */
  errors: number;
}

/** SHA-256 of `length` bytes of `path` from `offset`, hex. */
async function fileSha256(path: string, offset: number, length: number): Promise<string> {
  using f = await Deno.open(path, { read: true });
  await f.seek(offset, Deno.SeekMode.Start);
  const hash = createHash("sha256");
  const buf = new Uint8Array(1 << 20);
  let left = length;
  while (left > 0) {
    const n = await f.read(buf.subarray(0, Math.min(buf.length, left)));
    if (n === null) break;
    hash.update(buf.subarray(0, n));
    left -= n;
  }
  return hash.digest("hex");
}

/** The guest's part: write, sync, drop caches, read back, print the sums. */
function guestBody(dataMiB: number, offsetMiB: number): string {
  const blocks = dataMiB * 16, skip = offsetMiB * 16;
  return `
echo "vm-blk: sectors=$(cat /sys/block/vda/size) queues=$(ls /sys/block/vda/mq | wc -l)"
dd if=/dev/urandom of=/tmp/data bs=64k count=${blocks} 2>/dev/null || return 1
written=$(sha256sum /tmp/data | cut -d' ' -f1)
dd if=/tmp/data of=/dev/vda bs=64k seek=${skip} conv=fsync 2>/dev/null || return 1
sync
echo 3 > /proc/sys/vm/drop_caches
back=$(dd if=/dev/vda bs=64k skip=${skip} count=${blocks} 2>/dev/null | sha256sum | cut -d' ' -f1)
echo "vm-blk: written=$written read=$back"
`;
}

/**
 * Serve `device` on a vhost-user socket, boot the guest with its disk on
 * it, and compare the sums (see the module documentation).
 *
 * @example
 * ```ts
 * import { VhostMdevDevice } from "@vhost-mdev/sdk";
 * import { driver } from "@vhost-mdev/blk";
 * import { runBlkVm } from "@vhost-mdev/testing/guest";
 *
 * const file = "/tmp/disk.img";
 * const device = await VhostMdevDevice.create(driver, { queues: 1, options: { file } });
 * const report = await runBlkVm({ device, file });
 * console.log(report.pass, report.hostFile === report.written);
 * await device.close();
 * ```
 *
 * @throws MissingToolsError without QEMU or a static busybox; Error when the
 *   guest does not report in time.
 */
export async function runBlkVm(options: BlkVmOptions): Promise<BlkVmReport> {
  const { device, file } = options;
  const queues = options.queues ?? 1;
  const dataMiB = options.dataMiB ?? 8;
  const offsetMiB = options.offsetMiB ?? 1;
  const log = options.log ?? (() => {});
  const tools = await requireHostTools(GUEST_TOOLS);
  const kernel = await prepareGuestKernel({
    flavour: "cloud",
    modules: ["virtio_pci", "virtio_blk"],
    log,
  });
  const initrd = await buildInitramfs({
    init: initScript({
      modules: kernel.modules.map((m) => m.name),
      body: guestBody(dataMiB, offsetMiB),
    }),
    modules: kernel.modules,
    busybox: tools.get("busybox")!,
    log,
  });
  const dir = await Deno.makeTempDir({ prefix: "blk_vm" });
  const server = VhostUserServer.listen(device, `${dir}/blk.sock`);
  const vm = QemuVm.launch({
    qemu: tools.get("qemu-system-x86_64"),
    log,
    args: [
      // virtio_blk makes at most one queue per CPU.
      ...kernelBootArgs({
        kernel: kernel.image,
        initrd,
        append: "quiet",
        memoryMiB: 256,
        cpus: queues,
      }),
      ...sharedMemoryArgs("256M"),
      "-chardev",
      `socket,id=c0,path=${dir}/blk.sock`,
      "-device",
      `vhost-user-blk-pci,chardev=c0,num-queues=${queues}`,
    ],
  });
  try {
    const size = await vm.waitFor(/vm-blk: sectors=(\d+) queues=(\d+)/, {
      timeoutMs: 120_000,
      what: "the guest to find its disk",
    });
    log(`guest: /dev/vda of ${size[1]} sectors, ${size[2]} queue(s)`);
    const sums = await vm.waitFor(/vm-blk: written=([0-9a-f]{64}) read=([0-9a-f]{64})/, {
      timeoutMs: 300_000,
      what: "the guest to write and read back its disk",
    });
    await vm.waitFor(/vm-init: done/, { timeoutMs: 30_000, what: "the guest to finish" });
    const hostFile = await fileSha256(file, offsetMiB << 20, dataMiB << 20);
    let requests = 0, bytes = 0, errors = 0;
    for (const s of device.stats()) {
      requests += s.requests ?? 0;
      bytes += s.bytes ?? 0;
      errors += s.errors ?? 0;
    }
    const report = {
      guestSectors: Number(size[1]),
      guestQueues: Number(size[2]),
      written: sums[1],
      readBack: sums[2],
      hostFile,
      requests,
      bytes,
      errors,
    };
    return {
      pass: report.written === report.readBack && report.written === hostFile &&
        report.guestQueues === queues && errors === 0,
      ...report,
    };
  } finally {
    await vm.close();
    await server.close();
    await Deno.remove(dir, { recursive: true });
  }
}
