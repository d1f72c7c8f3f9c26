// Each VFIO setup error a user can meet, produced against fake sysfs and
// /dev/vfio trees in a temporary directory, with the message that says
// what to do.

import assert from "node:assert/strict";
import {
  normalizePciAddress,
  openVfioPci,
  permissionError,
  VfioError,
  type VfioErrorKind,
} from "@vhost-mdev/sdk/vfio";
import { openFdCount } from "@vhost-mdev/sdk/sys";

const ADDR = "0000:03:00.0";
const PEER = "0000:03:00.1";

interface FakeDevice {
  address: string;
  driver?: string;
  group?: number;
}

/** sysfs and /dev/vfio under a temp dir; returns their paths. */
async function fakeTree(
  devices: FakeDevice[],
  vfio: { container?: boolean; groups?: number[] } = {},
) {
  const root = await Deno.makeTempDir({ prefix: "vfio-fake-" });
  const sys = `${root}/sys`;
  const dev = `${root}/dev/vfio`;
  await Deno.mkdir(`${sys}/bus/pci/devices`, { recursive: true });
  await Deno.mkdir(`${sys}/bus/pci/drivers`, { recursive: true });
  for (const d of devices) {
    const dir = `${sys}/bus/pci/devices/${d.address}`;
    await Deno.mkdir(dir, { recursive: true });
    await Deno.writeTextFile(`${dir}/vendor`, "0x1af4\n");
    if (d.driver) {
      await Deno.mkdir(`${sys}/bus/pci/drivers/${d.driver}`, { recursive: true });
      await Deno.symlink(`../../drivers/${d.driver}`, `${dir}/driver`);
    }
    if (d.group !== undefined) {
      const g = `${sys}/kernel/iommu_groups/${d.group}`;
      await Deno.mkdir(`${g}/devices`, { recursive: true });
      await Deno.symlink(`../../../../kernel/iommu_groups/${d.group}`, `${dir}/iommu_group`);
      await Deno.symlink(`../../../../bus/pci/devices/${d.address}`, `${g}/devices/${d.address}`);
    }
  }
  if (vfio.container !== false) {
    await Deno.mkdir(dev, { recursive: true });
    await Deno.writeTextFile(`${dev}/vfio`, "");
    for (const g of vfio.groups ?? []) await Deno.writeTextFile(`${dev}/${g}`, "");
  }
  return { root, sys, dev };
}

function expectVfioError(fn: () => unknown, kind: VfioErrorKind, ...patterns: RegExp[]): string {
  let message = "";
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof VfioError, `expected a VfioError, got ${e}`);
    assert.equal(e.kind, kind, e.message);
    for (const p of patterns) assert.match(e.message, p);
    message = e.message;
    return true;
  });
  return message;
}

Deno.test("no /dev/vfio: load vfio-pci", async () => {
  const t = await fakeTree([{ address: ADDR, driver: "vfio-pci", group: 5 }], { container: false });
  try {
    expectVfioError(
      () => openVfioPci(ADDR, { sysfsRoot: t.sys, devVfio: t.dev }),
      "no-vfio",
      /dev\/vfio\/vfio does not exist/,
      /modprobe vfio-pci/,
    );
  } finally {
    await Deno.remove(t.root, { recursive: true });
  }
});

Deno.test("device bound to another driver: the sysfs commands that bind it", async () => {
  const t = await fakeTree([{ address: ADDR, driver: "virtio-pci", group: 5 }]);
  try {
    const message = expectVfioError(
      () => openVfioPci("03:00.0", { sysfsRoot: t.sys, devVfio: t.dev }),
      "not-bound",
      /bound to virtio-pci, not vfio-pci/,
    );
    const dev = `${t.sys}/bus/pci/devices/${ADDR}`;
    assert.ok(message.includes(`echo vfio-pci > ${dev}/driver_override`), message);
    assert.ok(
      message.includes(`echo ${ADDR} > ${t.sys}/bus/pci/drivers/virtio-pci/unbind`),
      message,
    );
    assert.ok(message.includes(`echo ${ADDR} > ${t.sys}/bus/pci/drivers_probe`), message);
  } finally {
    await Deno.remove(t.root, { recursive: true });
  }
});

Deno.test("device with no driver: bind commands without an unbind", async () => {
  const t = await fakeTree([{ address: ADDR, group: 5 }]);
  try {
    const message = expectVfioError(
      () => openVfioPci(ADDR, { sysfsRoot: t.sys, devVfio: t.dev }),
      "not-bound",
      /not bound to any driver/,
      /driver_override/,
      /drivers_probe/,
    );
    assert.ok(!message.includes("unbind"), message);
  } finally {
    await Deno.remove(t.root, { recursive: true });
  }
});

Deno.test("missing device, bad address, no IOMMU group", async () => {
  const t = await fakeTree([{ address: ADDR, driver: "vfio-pci" }]);
  try {
    expectVfioError(
      () => openVfioPci("0000:04:00.0", { sysfsRoot: t.sys, devVfio: t.dev }),
      "no-device",
      /no PCI device 0000:04:00\.0/,
      /lspci -D/,
    );
    expectVfioError(() => normalizePciAddress("eth0"), "bad-address", /0000:03:00\.0/);
    assert.equal(normalizePciAddress("0000:0A:1F.7"), "0000:0a:1f.7");
    expectVfioError(
      () => openVfioPci(ADDR, { sysfsRoot: t.sys, devVfio: t.dev }),
      "no-iommu-group",
      /intel_iommu=on/,
    );
  } finally {
    await Deno.remove(t.root, { recursive: true });
  }
});

Deno.test("group not viable: names the other devices of the group", async () => {
  const t = await fakeTree([
    { address: ADDR, driver: "vfio-pci", group: 7 },
    { address: PEER, driver: "ixgbe", group: 7 },
  ], { groups: [7] });
  try {
    expectVfioError(
      () => openVfioPci(ADDR, { sysfsRoot: t.sys, devVfio: t.dev }),
      "group-not-viable",
      /IOMMU group 7 of 0000:03:00\.0 is not viable/,
      /0000:03:00\.1 \(ixgbe\)/,
      new RegExp(`${t.sys}/kernel/iommu_groups/7/devices`),
    );
  } finally {
    await Deno.remove(t.root, { recursive: true });
  }
});

Deno.test("a node that is not VFIO: clear error, no fd leaked", async () => {
  // Group 9's peer is bound to vfio-pci too, so the sysfs checks pass and
  // the fake (regular file) nodes are opened and refuse the ioctls.
  const t = await fakeTree([
    { address: ADDR, driver: "vfio-pci", group: 9 },
    { address: PEER, driver: "vfio-pci", group: 9 },
  ], { groups: [9] });
  try {
    const before = openFdCount();
    expectVfioError(
      () => openVfioPci(ADDR, { sysfsRoot: t.sys, devVfio: t.dev }),
      "unsupported",
      /dev\/vfio\/vfio is not a VFIO container \(VFIO_GET_API_VERSION failed: ioctl .*ENOTTY/,
    );
    assert.equal(openFdCount(), before);
  } finally {
    await Deno.remove(t.root, { recursive: true });
  }
});

Deno.test("permission denied: chown and udev hints", async () => {
  const message = permissionError("/dev/vfio/7", "EACCES").message;
  assert.match(message, /cannot open \/dev\/vfio\/7: EACCES/);
  assert.match(message, /chown \$USER \/dev\/vfio\/7/);
  assert.match(message, /SUBSYSTEM=="vfio", OWNER=/);
  assert.match(message, /ulimit -l/);
  if (Deno.uid() === 0) return; // root opens a mode-0 file anyway: the message is checked above
  const t = await fakeTree([{ address: ADDR, driver: "vfio-pci", group: 3 }], { groups: [3] });
  try {
    await Deno.chmod(`${t.dev}/3`, 0);
    expectVfioError(
      () => openVfioPci(ADDR, { sysfsRoot: t.sys, devVfio: t.dev }),
      "permission",
      /chown \$USER/,
    );
  } finally {
    await Deno.remove(t.root, { recursive: true });
  }
});
