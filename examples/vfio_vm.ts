/**
 * The ifcvf driver on real kernel VFIO, without the hardware: a QEMU guest
 * with an emulated IOMMU binds its virtio-net NIC to vfio-pci and runs the
 * SDK (the host's Deno over 9p): `@vhost-mdev/ifcvf` in generic mode drives
 * the NIC through `/dev/vfio`, and the SDK's TypeScript vhost-user frontend
 * attaches to it as a VM would.
 *
 *   deno run -A examples/vfio_vm.ts [--frames N] [--infra] [--json] [--setup]
 *
 * The NIC's QEMU backend is a UDP socket pair on 127.0.0.1, so this program
 * sees the wire: the test kit's `runVfioVm` checks that frames the frontend
 * sends arrive here byte-identical (DMA reads through the IOMMU), sends
 * frames the guest program finds in its receive buffers (DMA writes, MSI-X
 * to the call fd), and follows the guest program as it stops the device,
 * checks the rings' bases and sees generic mode refuse to resume at a
 * non-zero index. `--infra` only proves the plumbing: VFIO bound,
 * `/dev/vfio/N` present, Deno started from the host root in the guest.
 *
 * The guest program is the test kit's `vfio_guest_main.ts`: it creates a
 * `VhostMdevDevice` from `@vhost-mdev/ifcvf`'s `driver` on the NIC's PCI
 * address (`{ generic: "true" }`) and serves it with `VhostUserServer`.
 *
 * @module
 */

import {
  integerFlag,
  parseFlags,
  runGuestCommand,
  runVfioVm,
  vfioVmSummary,
} from "@vhost-mdev/testing/guest";

const HELP = `Usage: deno run -A examples/vfio_vm.ts [options]

Run the ifcvf driver (generic mode) on real kernel VFIO inside a QEMU guest
with an emulated Intel IOMMU; the SDK's TypeScript frontend exchanges frames
with this program through QEMU's virtio-net device.

  --frames <N>   frames each way per round, 1 to 128 (default 16; one round, then the
                 device is stopped and a resume at the saved index refused)
  --seed <N>     seed of the test frames (default: random)
  --infra        only check the plumbing: VFIO bound, Deno runs in the guest
  --cpus <N>     guest CPUs (default 2)
  --json         print the result as one JSON line at the end
  --verbose      echo the guest console
  --setup        install qemu-system-x86 and busybox-static with apt-get first
  --help         this text

Exit status: 0 pass, 1 fail, 2 usage error or missing tools.`;

async function main(args: string[]): Promise<number> {
  const options = {
    frames: { type: "string", default: "16" },
    seed: { type: "string", default: String(Math.floor(Math.random() * 2 ** 31)) },
    cpus: { type: "string", default: "2" },
    infra: { type: "boolean" },
  } as const;
  const flags = parseFlags(args, options, HELP);
  if (flags === null) return 0;
  const frames = integerFlag("frames", flags.frames, 1, 128);
  const cpus = integerFlag("cpus", flags.cpus, 1, 8);
  const seed = integerFlag("seed", flags.seed, 0, 2 ** 32 - 1);
  const mode = flags.infra ? "infra" : "program";

  const { verbose, setup } = flags;
  const run = { mode, frames, seed, cpus, verbose, setup, log: console.log } as const;
  return await runGuestCommand((signal) => runVfioVm({ ...run, signal }), {
    summary: vfioVmSummary,
    json: flags.json,
  });
}

if (import.meta.main) Deno.exit(await main(Deno.args));
