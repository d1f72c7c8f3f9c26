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

import { parseArgs } from "node:util";
import {
  abortOnTermination,
  MissingToolsError,
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

function usage(message: string): never {
  console.error(`error: ${message} (see --help)`);
  Deno.exit(2);
}

function intFlag(name: string, value: string, min: number, max: number): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < min || n > max) usage(`--${name} ${value}: ${min} to ${max}`);
  return n;
}

async function main(args: string[]): Promise<number> {
  const options = {
    frames: { type: "string", default: "16" },
    seed: { type: "string", default: String(Math.floor(Math.random() * 2 ** 31)) },
    cpus: { type: "string", default: "2" },
    infra: { type: "boolean" },
    json: { type: "boolean" },
    verbose: { type: "boolean" },
    setup: { type: "boolean" },
    help: { type: "boolean" },
  } as const;
  let flags;
  try {
    flags = parseArgs({ args, options }).values;
  } catch (e) {
    usage((e as Error).message);
  }
  if (flags.help) {
    console.log(HELP);
    return 0;
  }
  const frames = intFlag("frames", flags.frames, 1, 128);
  const cpus = intFlag("cpus", flags.cpus, 1, 8);
  const seed = intFlag("seed", flags.seed, 0, 2 ** 32 - 1);
  const mode = flags.infra ? "infra" : "program";

  using stop = abortOnTermination(); // Ctrl-C: the kit kills QEMU first
  try {
    const { verbose, setup } = flags;
    const run = { mode, frames, seed, cpus, verbose, setup, log: console.log } as const;
    const result = await runVfioVm({ ...run, signal: stop.signal });
    console.log(["", ...vfioVmSummary(result)].join("\n"));
    if (flags.json) console.log(JSON.stringify(result));
    if (stop.signal.aborted) return 130;
    return result.pass ? 0 : 1;
  } catch (e) {
    if (!(e instanceof MissingToolsError)) throw e;
    console.error(`error: ${e.message}`);
    return 2;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
