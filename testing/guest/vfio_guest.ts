/**
 * The VFIO guest: real kernel VFIO without real hardware. QEMU's q35 machine
 * with an emulated Intel IOMMU (`intel-iommu,intremap=on`, guest booted with
 * `intel_iommu=on`) and a modern-only virtio-net function that goes through
 * that IOMMU (`disable-legacy=on,iommu_platform=on`). QEMU's device model is
 * the "silicon": the IFC VF is a virtio-net function with vendor extras, so
 * the ifcvf driver drives this NIC in generic mode.
 *
 * The guest's `/init` (busybox, generic Debian kernel):
 *
 * 1. loads vfio, vfio_iommu_type1, vfio-pci, virtio-pci and 9p;
 * 2. binds the NIC to vfio-pci through `driver_override` and checks that
 *    `/dev/vfio/<group>` appeared;
 * 3. mounts the host's root read-only over 9p at `/host`, a tmpfs for
 *    scratch space (Deno's cache, temporary files), and binds `/proc`,
 *    `/sys`, `/dev` into it;
 * 4. chroots into the host root and runs the host's own Deno binary (same
 *    path inside) on a guest-side program from this repository.
 *
 * Its NIC's backend is `-netdev socket` in UDP mode on 127.0.0.1: every frame
 * the NIC transmits is one datagram to the host side's port, every datagram
 * the host side sends to QEMU's port is a received frame.
 *
 * Each phase prints a `vm-init:` line with the guest's uptime.
 *
 * @module
 */

import { exists } from "./cache_dir.ts";
import { GUEST_NIC_MAC } from "./frames.ts";
import { guestBootArgs, type GuestImage, prepareGuestImage } from "./guest_image.ts";
import { guestCommandLine } from "./guest_script.ts";

/** PCI address the NIC gets in the guest (slot 3 of the root bus). */
export const GUEST_NIC_PCI = "0000:00:03.0";

/** Where the host root is mounted in the guest. */
const HOST = "/host";

const BODY = `
nic="$vm_nic"
dev="/sys/bus/pci/devices/$nic"
[ -d "$dev" ] || { echo "vm-init: no PCI device $nic"; return 1; }
echo "vm-init: nic $nic is $(cat $dev/vendor):$(cat $dev/device)"
[ -e "$dev/iommu_group" ] || { echo "vm-init: $nic has no IOMMU group: is intel_iommu=on active?"; return 1; }
group=$(basename "$(readlink "$dev/iommu_group")")
[ -e "$dev/driver" ] && echo "$nic" > "$dev/driver/unbind"
echo vfio-pci > "$dev/driver_override"
echo "$nic" > /sys/bus/pci/drivers_probe
[ -c "/dev/vfio/$group" ] || { echo "vm-init: /dev/vfio/$group did not appear"; ls -l /dev/vfio; return 1; }
echo "vm-init: vfio bound at $(uptime_s) s: $nic in IOMMU group $group, /dev/vfio/$group"
mkdir -p ${HOST}
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=loose host ${HOST} || return 1
mount -t tmpfs -o size=512m tmpfs "${HOST}$vm_scratch" || return 1
for d in proc sys dev; do mount --bind /$d ${HOST}/$d || return 1; done
echo "vm-init: host root mounted at $(uptime_s) s (scratch tmpfs on $vm_scratch)"
export HOME="$vm_scratch" TMPDIR="$vm_scratch" DENO_DIR="$vm_scratch/deno" NO_COLOR=1 DENO_NO_UPDATE_CHECK=1
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
if [ "$vm_mode" = infra ]; then
  chroot ${HOST} "$vm_deno" eval 'const g = Deno.readDirSync("/dev/vfio"); console.log("vfio-guest: deno up, /dev/vfio holds", [...g].map((e) => e.name).join(" "))'
  rc=$?
  echo "vm-init: deno exited $rc at $(uptime_s) s"
  return $rc
fi
chroot ${HOST} /bin/sh -c 'cd "$vm_cwd" && exec "$vm_deno" run -A --no-lock "$vm_script" --pci "$vm_nic" --frames "$vm_frames" --seed "$vm_seed"'
rc=$?
echo "vm-init: guest program exited $rc at $(uptime_s) s"
return $rc
`;

/** Kernel modules the VFIO guest loads (dependencies are added). */
export const VFIO_GUEST_MODULES: readonly string[] = [
  "vfio",
  "vfio_iommu_type1",
  "vfio_pci",
  "virtio_pci",
  "9pnet_virtio",
  "9p",
];

/** A built VFIO guest. */
export type VfioGuest = GuestImage;

/** Fetch the generic kernel and build the initramfs (both cached). */
export function prepareVfioGuest(
  busybox: string,
  log: (line: string) => void,
): Promise<VfioGuest> {
  return prepareGuestImage({
    flavour: "generic",
    modules: VFIO_GUEST_MODULES,
    body: BODY,
    busybox,
    log,
  });
}

/** What the guest runs and how it is wired. */
export interface VfioGuestRun {
  /**
   * `infra`: only prove the plumbing (VFIO bound, Deno starts from the 9p
   * root and lists `/dev/vfio`); `program`: run {@linkcode VfioGuestRun.script}.
   */
  mode: "infra" | "program";
  /** Deno binary (host path, same inside the guest). */
  deno: string;
  /** Working directory for the program (the repository root). */
  cwd: string;
  /** Guest-side program (absolute host path). */
  script: string;
  /** Frames each way per round. */
  frames: number;
  /** Seed of the test frames. */
  seed: number;
  /** Host side's UDP port (QEMU sends the NIC's frames there). */
  hostPort: number;
  /** QEMU's UDP port (the host side sends frames there). */
  qemuPort: number;
  /** Guest RAM in MiB. */
  memoryMiB: number;
  /** Virtual CPUs. */
  cpus: number;
  /** Directory of the host root the guest covers with a tmpfs for scratch. */
  scratch: string;
  /** Print every kernel message (no `quiet`). */
  verboseKernel?: boolean;
}

/**
 * A host directory the guest may cover with its scratch tmpfs: one that
 * exists and holds none of `keep` (the repository, the Deno binary), which
 * the guest must still see through 9p. `/tmp` when possible.
 */
export async function scratchDirFor(keep: readonly string[]): Promise<string> {
  for (const dir of ["/tmp", "/mnt", "/media", "/srv", "/opt", "/run"]) {
    if (!(await exists(dir))) continue;
    if (keep.some((p) => p === dir || p.startsWith(`${dir}/`))) continue;
    return dir;
  }
  throw new Error(
    `no directory of / can hold the guest's scratch tmpfs without hiding ${keep.join(", ")}`,
  );
}

/** QEMU arguments for the VFIO guest. */
export function vfioGuestArgs(guest: VfioGuest, run: VfioGuestRun): string[] {
  for (const [name, value] of [["deno", run.deno], ["cwd", run.cwd], ["script", run.script]]) {
    if (/\s/.test(value)) {
      throw new Error(
        `the ${name} path "${value}" holds white space, which a kernel command line cannot carry`,
      );
    }
  }
  const append = guestCommandLine(run.verboseKernel, [
    "intel_iommu=on",
    `vm_mode=${run.mode}`,
    `vm_nic=${GUEST_NIC_PCI}`,
    `vm_deno=${run.deno}`,
    `vm_cwd=${run.cwd}`,
    `vm_script=${run.script}`,
    `vm_frames=${run.frames}`,
    `vm_seed=${run.seed}`,
    `vm_scratch=${run.scratch}`,
  ]);
  return [
    ...guestBootArgs(guest, {
      append,
      memoryMiB: run.memoryMiB,
      machine: "q35",
      cpus: run.cpus,
    }),
    // The IOMMU must exist before the devices behind it.
    "-device",
    "intel-iommu,intremap=on",
    "-netdev",
    `socket,id=n1,udp=127.0.0.1:${run.hostPort},localaddr=127.0.0.1:${run.qemuPort}`,
    "-device",
    `virtio-net-pci,netdev=n1,disable-legacy=on,iommu_platform=on,addr=0x3,mac=${GUEST_NIC_MAC}`,
    "-virtfs",
    "local,path=/,mount_tag=host,security_model=none,readonly=on",
  ];
}
