// Setting up a device core in-process for the core tests: one memfd region
// and fully configured rings, as a frontend would leave them.

import { VhostIoctl, type VhostMdevDevice } from "@vhost-mdev/sdk";
import { close, eventfd, ftruncate, memfdCreate } from "@vhost-mdev/sdk/sys";

/** One MiB. */
export const MiB = 1 << 20;
/** Frontend VA of the single region: deliberately unlike its GPA. */
export const UVA = 0x7f00_0000_0000;
/** Guest-physical address of the single region. */
export const GPA = 0x1_0000_0000;

/** Give the device one memfd region (4 MiB by default) at GPA, frontend VA = UVA. */
export async function setMemory(dev: VhostMdevDevice, size = 4 * MiB): Promise<void> {
  const fd = memfdCreate("guest", { allowSealing: true });
  ftruncate(fd, size);
  try {
    await dev.ioctl(VhostIoctl.SET_MEM_TABLE, [{ gpa: GPA, size, uva: UVA, mmapOffset: 0, fd }]);
  } finally {
    close(fd);
  }
}

/**
 * Configure ring `q` fully at frontend VA offset `off`; returns its kick and
 * call fds (the device owns them).
 */
export async function setRing(
  dev: VhostMdevDevice,
  q: number,
  off = q * 0x10000,
  num = 256,
): Promise<{ kick: number; call: number }> {
  await dev.ioctl(VhostIoctl.SET_VRING_NUM, { index: q, num });
  await dev.ioctl(VhostIoctl.SET_VRING_BASE, { index: q, num: 0 });
  await dev.ioctl(VhostIoctl.SET_VRING_ADDR, {
    index: q,
    flags: 0,
    desc: UVA + off,
    avail: UVA + off + 16 * num,
    used: UVA + off + 0x8000,
    log: 0,
  });
  const kick = eventfd(0, { nonBlocking: true });
  const call = eventfd(0, { nonBlocking: true });
  await dev.ioctl(VhostIoctl.SET_VRING_KICK, { index: q, fd: kick });
  await dev.ioctl(VhostIoctl.SET_VRING_CALL, { index: q, fd: call });
  return { kick, call };
}
