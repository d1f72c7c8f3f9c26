/**
 * `ifcvf`: the driver of the Intel IFC VF (the virtio-net VF of the N3000
 * and C5000X-PL cards), the userspace twin of Linux's `drivers/vdpa/ifcvf`
 * and DPDK's `drivers/vdpa/ifc`. It maps the device through VFIO, programs
 * the frontend's rings into the hardware, wires MSI-X to the frontend's call
 * eventfds, rings doorbells (or hands them to the frontend as host
 * notifiers) and keeps ring state across stop/start in the live-migration
 * BAR.
 *
 * `--pci ADDRESS` names a device bound to vfio-pci; the CLI's `--pci
 * emulated` runs the driver on the emulated IFC VF
 * (`@vhost-mdev/ifcvf/emulated`), no hardware needed. A device
 * outside the IFC VF ID table is refused unless `--generic true` asks to
 * drive it as a plain modern virtio-net device (what the kernel's vp_vdpa
 * does), e.g. QEMU's virtio-net-pci in a VM with a vIOMMU.
 *
 * @example Serve the emulated IFC VF
 * ```ts
 * import { VhostMdevDevice } from "@vhost-mdev/sdk";
 * import { VhostUserServer } from "@vhost-mdev/sdk/vhost-user";
 * import { makeIfcvfDriver } from "@vhost-mdev/ifcvf";
 * import { openEmulatedIfcvf } from "@vhost-mdev/ifcvf/emulated";
 *
 * const driver = makeIfcvfDriver(openEmulatedIfcvf);
 * const device = await VhostMdevDevice.create(driver, { queues: 1, options: {} });
 * const server = VhostUserServer.listen(device, "/tmp/ifcvf.sock");
 * ```
 *
 * @module
 */

import type { Driver, ProbeParams } from "@vhost-mdev/sdk";
import { openVfioPci } from "@vhost-mdev/sdk/vfio";
import { IFCVF_PCI_IDS } from "./ids.ts";
import { type IfcvfTarget, probeIfcvf } from "./ifcvf.ts";

export { describeIds, IFCVF_PCI_IDS, type IfcvfId, isVirtioNet, matchIfcvf } from "./ids.ts";
export {
  IFCVF_LOG_IOVA,
  IfcvfLiveMigration,
  LM_BAR,
  LM_BASE_ADDR_HIGH,
  LM_BASE_ADDR_LOW,
  LM_CFG_SIZE,
  LM_END_ADDR_HIGH,
  LM_END_ADDR_LOW,
  LM_LOGGING_CTRL,
  LM_LOGGING_DISABLE,
  LM_LOGGING_ENABLE_VF,
  LM_RING_STATE_OFFSET,
  type RingState,
} from "./lm.ts";
export { InterruptFanout, planVectors, type VectorPlan } from "./interrupts.ts";
export type { IfcvfTarget } from "./ifcvf.ts";

/** Opens the PCI function a probe asks for. */
export type IfcvfOpener = (params: ProbeParams) => IfcvfTarget;

/**
 * The default opener: `params.pci` is a PCI address, opened through VFIO.
 * (The emulated IFC VF, `@vhost-mdev/ifcvf/emulated`, is wired in by the CLI
 * for `--pci emulated` and by tests.)
 */
export function openIfcvfTarget(params: ProbeParams): IfcvfTarget {
  const pci = params.pci;
  if (!pci) {
    throw new Error(
      "ifcvf needs a device: --pci ADDRESS (bound to vfio-pci, e.g. 0000:03:00.0), or --pci " +
        "emulated with the vhost-mdev CLI",
    );
  }
  if (pci === "emulated") {
    throw new Error(
      'ifcvf: "emulated" is not a PCI address; run it with the vhost-mdev CLI (serve --driver ' +
        "ifcvf --pci emulated) or open an EmulatedIfcvf from @vhost-mdev/ifcvf/emulated",
    );
  }
  const vfio = openVfioPci(pci);
  return {
    fn: vfio.device,
    dma: vfio.container,
    description: `${vfio.address} (VFIO group ${vfio.group.number})`,
    close: () => vfio.close(),
  };
}

/**
 * An ifcvf driver whose devices come from `open` (tests hand it emulated
 * devices with other IDs or fewer vectors).
 */
export function makeIfcvfDriver(open: IfcvfOpener = openIfcvfTarget): Driver {
  return {
    name: "ifcvf",
    description: "Intel IFC VF (N3000 / C5000X-PL virtio VF) through VFIO, or emulated",
    pciIds: IFCVF_PCI_IDS,
    options: [
      {
        name: "generic",
        description: "drive any modern virtio-net PCI device, not only IFC VFs (like vp_vdpa)",
        values: ["true", "false"],
        default: "false",
      },
    ],
    probe: (ctx, params) => probeIfcvf(ctx, params, open(params)),
  };
}

/** The ifcvf driver. */
export const driver: Driver = makeIfcvfDriver();
export default driver;
