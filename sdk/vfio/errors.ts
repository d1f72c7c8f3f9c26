/**
 * VFIO errors a user meets, each with the commands that fix it.
 *
 * @module
 */

/** What went wrong, for code that branches on it. */
export type VfioErrorKind =
  | "no-vfio"
  | "no-device"
  | "bad-address"
  | "no-iommu-group"
  | "not-bound"
  | "group-not-viable"
  | "permission"
  | "busy"
  | "unsupported"
  | "kernel";

/**
 * A VFIO setup step failed; the message says what to do.
 *
 * @example
 * ```ts
 * import { openVfioPci, VfioError } from "@vhost-mdev/sdk/vfio";
 *
 * try {
 *   openVfioPci("0000:03:00.0");
 * } catch (e) {
 *   if (e instanceof VfioError && e.kind === "not-bound") console.error(e.message);
 * }
 * ```
 */
export class VfioError extends Error {
  /** Which failure this is. */
  readonly kind: VfioErrorKind;

  /**
   * Make the error.
   *
   * @param kind Which failure.
   * @param message What happened and what to do.
   * @param options The underlying error, if any.
   */
  constructor(kind: VfioErrorKind, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "VfioError";
    this.kind = kind;
  }
}

/** `/dev/vfio` (or its container node) is missing. */
export function noVfioError(devVfio: string): VfioError {
  return new VfioError(
    "no-vfio",
    `${devVfio}/vfio does not exist: the VFIO drivers are not loaded. ` +
      `Load them with: modprobe vfio-pci (this also loads vfio and vfio_iommu_type1); ` +
      `the IOMMU must be on (intel_iommu=on or amd_iommu=on on the kernel command line)`,
  );
}

/**
 * The device is bound to another driver (or none): the commands that hand
 * it to vfio-pci.
 */
export function notBoundError(
  address: string,
  current: string | null,
  sysfsRoot: string,
): VfioError {
  const dev = `${sysfsRoot}/bus/pci/devices/${address}`;
  const lines = [`echo vfio-pci > ${dev}/driver_override`];
  if (current) lines.push(`echo ${address} > ${sysfsRoot}/bus/pci/drivers/${current}/unbind`);
  lines.push(`echo ${address} > ${sysfsRoot}/bus/pci/drivers_probe`);
  return new VfioError(
    "not-bound",
    `PCI device ${address} is ${current ? `bound to ${current}` : "not bound to any driver"}, ` +
      `not vfio-pci. Bind it to vfio-pci (as root, after modprobe vfio-pci):\n  ` +
      lines.join("\n  "),
  );
}

/** A device of the IOMMU group still has a host driver. */
export function groupNotViableError(
  group: number,
  address: string,
  others: readonly { address: string; driver: string | null }[],
  sysfsRoot: string,
): VfioError {
  const list = others.map((o) => `${o.address} (${o.driver ?? "no driver"})`).join(", ");
  return new VfioError(
    "group-not-viable",
    `IOMMU group ${group} of ${address} is not viable: every device in ` +
      `${sysfsRoot}/kernel/iommu_groups/${group}/devices must be bound to vfio-pci or to no ` +
      `driver, and these are not: ${list || "(the kernel did not say which)"}. ` +
      `Unbind them (echo ADDR > ${sysfsRoot}/bus/pci/drivers/DRIVER/unbind) or bind them to ` +
      `vfio-pci too; devices share a group when the IOMMU cannot isolate them`,
  );
}

/** Opening a VFIO node was refused. */
export function permissionError(path: string, code: string): VfioError {
  return new VfioError(
    "permission",
    `cannot open ${path}: ${code}. Run as root, or give your user the node: ` +
      `chown $USER ${path} (lasts until the device is rebound), or a udev rule such as ` +
      `SUBSYSTEM=="vfio", OWNER="youruser" in /etc/udev/rules.d/99-vfio.rules; DMA mapping ` +
      `also needs enough locked memory (ulimit -l, or LimitMEMLOCK= for a service)`,
  );
}
