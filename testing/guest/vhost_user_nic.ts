/**
 * The QEMU arguments of a guest NIC on a vhost-user socket, as the ping and
 * channels guests have it: virtio-net on a `vhost-user` netdev, with the
 * guest RAM shared with the backend (`memory-backend-memfd,share=on` and a
 * NUMA node using it), which vhost-user needs so the backend can map it.
 *
 * @module
 */

/** The MAC address of the vhost-user NIC. */
export const VHOST_USER_NIC_MAC = "52:54:00:12:34:56";

/** Options of {@linkcode vhostUserNicArgs}. */
export interface VhostUserNicOptions {
  /** The vhost-user socket the backend listens on. */
  socket: string;
  /** Guest RAM in MiB, all of it shared with the backend. */
  memoryMiB: number;
  /**
   * Guest RAM as a QEMU size with its unit (`262152K`), when it is not a
   * whole number of MiB; replaces `memoryMiB`. QEMU's `-m` must be the same.
   */
  memorySize?: string;
  /** Queue pairs of the NIC. */
  queues: number;
  /** Multiqueue (`queues=N` on the netdev, `mq=on` on the device). */
  multiqueue: boolean;
  /**
   * MSI-X vectors of the NIC; 0 gives INTx, as QEMU 7.2 under TCG crashes in
   * `vhost_net_start` with MSI-X vectors.
   */
  vectors: number;
  /** Packed rings (`packed=on`: QEMU offers `VIRTIO_F_RING_PACKED` when the backend does). */
  packed?: boolean;
  /**
   * Put the NIC behind the machine's vIOMMU: `iommu_platform=on` (QEMU
   * offers `VIRTIO_F_ACCESS_PLATFORM`, bit 33, and the guest maps every
   * buffer through the IOMMU, so the backend sees IOVAs and must ask QEMU
   * for translations over vhost-user `IOTLB_MSG`), with `disable-legacy=on`
   * since a legacy device cannot have it. Needs an IOMMU on the machine
   * (see `viommu.ts`).
   */
  iommuPlatform?: boolean;
  /**
   * An ATS capability on the NIC (`ats=on`), which lets the guest send the
   * device-IOTLB invalidations QEMU forwards to a vhost backend. Only a
   * PCIe device gets it: give a PCIe root port as
   * {@linkcode VhostUserNicOptions.bus}.
   */
  ats?: boolean;
  /** The bus to plug the NIC into (`bus=`, e.g. a `pcie-root-port`'s id); default: QEMU's choice. */
  bus?: string;
}

/**
 * QEMU arguments that share the guest's RAM with a vhost-user backend: a
 * `memory-backend-memfd,share=on` of `size` (`256M`, `262152K`) and the
 * NUMA node that uses it. QEMU's `-m` must be the same size.
 */
export function sharedMemoryArgs(size: string): string[] {
  return [
    "-object",
    `memory-backend-memfd,id=mem,size=${size},share=on`,
    "-numa",
    "node,memdev=mem",
  ];
}

/** QEMU arguments for shared guest RAM and a virtio-net NIC on the vhost-user socket. */
export function vhostUserNicArgs(nic: VhostUserNicOptions): string[] {
  return [
    ...sharedMemoryArgs(nic.memorySize ?? `${nic.memoryMiB}M`),
    "-chardev",
    `socket,id=c0,path=${nic.socket}`,
    "-netdev",
    `vhost-user,id=n0,chardev=c0${nic.multiqueue ? `,queues=${nic.queues}` : ""}`,
    "-device",
    `virtio-net-pci,netdev=n0${nic.bus ? `,bus=${nic.bus}` : ""}${nic.multiqueue ? ",mq=on" : ""}${
      nic.packed ? ",packed=on" : ""
    }${nic.iommuPlatform ? ",disable-legacy=on,iommu_platform=on" : ""}${
      nic.ats ? ",ats=on" : ""
    },vectors=${nic.vectors},mac=${VHOST_USER_NIC_MAC}`,
  ];
}
