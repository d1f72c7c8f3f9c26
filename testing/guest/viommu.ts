/**
 * A guest machine with an emulated Intel IOMMU (vIOMMU) in front of a
 * vhost-user NIC, as the ping guest has it with `iommu` set:
 *
 * - `-machine q35,kernel-irqchip=split`: the IOMMU is a q35 device, and
 *   interrupt remapping wants the IOAPIC in QEMU rather than in KVM (split
 *   irqchip; under TCG there is no in-kernel irqchip anyway);
 * - `-device intel-iommu,intremap=on,device-iotlb=on`, before the devices
 *   behind it: DMA remapping, interrupt remapping, and device-IOTLB
 *   (ATS) support, through which QEMU 7.2 tells a vhost backend about
 *   unmapped IOVAs (its vhost IOMMU notifier listens for device-IOTLB
 *   invalidations only);
 * - a `pcie-root-port` for the NIC, so that it is a PCIe endpoint with an
 *   ATS capability (on the q35 root bus it would be a conventional PCI
 *   device, where `ats=on` adds nothing);
 * - the NIC with `iommu_platform=on,ats=on` (`vhost_user_nic.ts`), unless
 *   the mode is `platform-off`: then it has `ats=on` only and its DMA
 *   bypasses the IOMMU, which still proves the machine and the guest's
 *   `intel_iommu=on`;
 * - the guest kernel booted with `intel_iommu=on` (the Debian kernels have
 *   `CONFIG_INTEL_IOMMU=y` but not on by default), default strictness (lazy
 *   invalidation: `DMA-FQ` domains).
 *
 * The guest's `/init` then reports what the IOMMU did (`vm-iommu:` lines:
 * the NIC's IOMMU group, its domain type, whether ATS is enabled, the
 * kernel's DMAR messages); {@linkcode parseIommuReport} reads them back.
 *
 * @module
 */

/**
 * How a guest NIC sits behind a vIOMMU: `true` all the way
 * (`iommu_platform=on,ats=on`: the backend must translate IOVAs through
 * vhost-user IOTLB messages), `"platform-off"` the machine and guest with
 * the IOMMU but the NIC's DMA untranslated, `false`/absent no IOMMU (the
 * `pc` machine).
 */
export type ViommuMode = boolean | "platform-off";

/** The machine type a vIOMMU guest uses. */
export const VIOMMU_MACHINE = "q35,kernel-irqchip=split";

/** The IOMMU device. */
export const VIOMMU_DEVICE = "intel-iommu,intremap=on,device-iotlb=on";

/** The id of the PCIe root port the NIC is plugged into. */
export const VIOMMU_NIC_PORT = "rp0";

/** Kernel command-line parameters for a vIOMMU guest. */
export const VIOMMU_KERNEL_PARAMETERS: readonly string[] = ["intel_iommu=on"];

/**
 * QEMU arguments that add the IOMMU and the NIC's root port; they must come
 * before the NIC's own (`vhostUserNicArgs` with `bus: VIOMMU_NIC_PORT`).
 */
export function viommuDeviceArgs(): string[] {
  return [
    "-device",
    VIOMMU_DEVICE,
    "-device",
    `pcie-root-port,id=${VIOMMU_NIC_PORT},chassis=1,slot=1`,
  ];
}

/**
 * Shell lines for a guest `/init` body, run once `eth0` exists, that print
 * what the IOMMU did for it when `$vm_iommu` is set (from `vm_iommu=1` on
 * the kernel command line), as `vm-iommu:` lines: `eth0`'s PCI address, its
 * IOMMU group and the group's domain type, whether ATS is enabled in its
 * config space, then the kernel's IOMMU messages (`DMAR: ...`).
 */
export const IOMMU_REPORT_SCRIPT: string = `if [ -n "$vm_iommu" ]; then
  dev=$(readlink -f /sys/class/net/eth0/device)
  case "$dev" in */virtio*) dev=$(dirname "$dev") ;; esac
  pci=$(basename "$dev")
  group=none; type=none
  if [ -e "$dev/iommu_group" ]; then
    group=$(basename "$(readlink "$dev/iommu_group")")
    type=$(cat "/sys/kernel/iommu_groups/$group/type" 2>/dev/null || echo unknown)
  fi
  # Walk the PCIe extended capabilities for ATS (id 0x000f); bit 15 of its
  # control register (offset 6) says whether the guest enabled it.
  ats=absent; off=256
  while [ "$off" -ge 256 ]; do
    h=$(hexdump -s "$off" -n 4 -e '1/4 "%u"' "$dev/config" 2>/dev/null)
    [ -n "$h" ] && [ "$h" -ne 0 ] && [ "$h" -ne 4294967295 ] || break
    if [ $((h & 65535)) -eq 15 ]; then
      c=$(hexdump -s $((off + 6)) -n 2 -e '1/2 "%u"' "$dev/config" 2>/dev/null)
      if [ $(( \${c:-0} & 32768 )) -ne 0 ]; then ats=enabled; else ats=disabled; fi
      break
    fi
    off=$(( (h >> 20) & 4092 ))
  done
  echo "vm-iommu: eth0 pci=$pci group=$group type=$type ats=$ats groups=$(ls /sys/kernel/iommu_groups 2>/dev/null | wc -l)"
  dmesg | grep -E 'DMAR|IOMMU|iommu' | grep -v -e 'ommand line' -e vm_iommu | sed 's/^/vm-iommu: dmesg: /'
fi`;

/** What the guest reported about its IOMMU (`vm-iommu:` lines). */
export interface IommuReport {
  /** `eth0`'s PCI address (`0000:01:00.0`). */
  pci: string;
  /** Its IOMMU group (`none` when it has none: the IOMMU is not active for it). */
  group: string;
  /** The group's default domain type (`DMA`, `DMA-FQ`, `identity`; `none` without a group). */
  type: string;
  /** ATS in the NIC's config space: `enabled`, `disabled` or `absent`. */
  ats: string;
  /** IOMMU groups in the guest. */
  groups: number;
  /** The kernel's IOMMU messages (`[    0.123] DMAR: IOMMU enabled`...). */
  dmesg: string[];
}

/**
 * Read the `vm-iommu:` lines of a guest console's `text` (see
 * {@linkcode IOMMU_REPORT_SCRIPT}); `null` when it printed none.
 */
export function parseIommuReport(text: string): IommuReport | null {
  const m = /vm-iommu: eth0 ([^\n]*)\n/.exec(text);
  if (m === null) return null;
  const fields = new Map<string, string>();
  for (const part of m[1].trim().split(/\s+/)) {
    const eq = part.indexOf("=");
    if (eq > 0) fields.set(part.slice(0, eq), part.slice(eq + 1));
  }
  const dmesg = [...text.matchAll(/vm-iommu: dmesg: ([^\n]*)/g)].map((d) => d[1]);
  return {
    pci: fields.get("pci") ?? "",
    group: fields.get("group") ?? "none",
    type: fields.get("type") ?? "none",
    ats: fields.get("ats") ?? "absent",
    groups: Number(fields.get("groups") ?? 0),
    dmesg,
  };
}
