// Capability walking over synthetic config spaces, and the virtio modern
// transport layout read from them.

import assert from "node:assert/strict";
import {
  listCapabilities,
  PciCapabilityError,
  PciCapabilityId,
  PciConfigBuffer,
  readVirtioPciLayout,
  VirtioPciCapType,
  VirtioPciLayoutError,
} from "@vhost-mdev/sdk/pci";
import { EmulatedIfcvf } from "@vhost-mdev/ifcvf/emulated";

/** A config space with the capability list bit set and caps at the given offsets. */
function space(
  caps: { at: number; id: number; next: number; bytes?: number[] }[],
  first = caps[0]?.at ?? 0,
) {
  const cfg = new PciConfigBuffer();
  cfg.write16(0x06, 0x10); // status: capability list
  cfg.write8(0x34, first);
  for (const c of caps) {
    cfg.write8(c.at, c.id);
    cfg.write8(c.at + 1, c.next);
    (c.bytes ?? []).forEach((b, i) => cfg.write8(c.at + 2 + i, b));
  }
  return cfg;
}

Deno.test("capability walk: a good list in order, low pointer bits ignored", () => {
  const cfg = space([
    { at: 0x40, id: PciCapabilityId.MSIX, next: 0x53 }, // 0x53 & 0xfc = 0x50
    { at: 0x50, id: PciCapabilityId.VENDOR, next: 0x60 },
    { at: 0x60, id: PciCapabilityId.PCI_EXPRESS, next: 0 },
  ]);
  assert.deepEqual(listCapabilities(cfg), [
    { id: 0x11, offset: 0x40 },
    { id: 0x09, offset: 0x50 },
    { id: 0x10, offset: 0x60 },
  ]);
});

Deno.test("capability walk: no list when the status bit is clear", () => {
  const cfg = space([{ at: 0x40, id: PciCapabilityId.MSIX, next: 0 }]);
  cfg.write16(0x06, 0);
  assert.deepEqual(listCapabilities(cfg), []);
});

Deno.test("capability walk: a looping list is an error naming the link", () => {
  const cfg = space([
    { at: 0x40, id: PciCapabilityId.MSIX, next: 0x50 },
    { at: 0x50, id: PciCapabilityId.VENDOR, next: 0x40 },
  ]);
  assert.throws(() => listCapabilities(cfg), (e: unknown) => {
    assert.ok(e instanceof PciCapabilityError);
    assert.match(e.message, /0x40 \(read at 0x51\) loops back/);
    return true;
  });
  // A capability pointing at itself.
  const self = space([{ at: 0x48, id: PciCapabilityId.VENDOR, next: 0x48 }]);
  assert.throws(() => listCapabilities(self), /loops back/);
});

Deno.test("capability walk: a pointer into the header is out of range", () => {
  const cfg = space([{ at: 0x40, id: PciCapabilityId.MSIX, next: 0x20 }]);
  assert.throws(() => listCapabilities(cfg), (e: unknown) => {
    assert.ok(e instanceof PciCapabilityError);
    assert.match(e.message, /pointer 0x20 \(read at 0x41\) is outside 0x40\.\.0xfe/);
    return true;
  });
  const first = space([], 0x08);
  assert.throws(() => listCapabilities(first), /pointer 0x8 \(read at 0x34\) is outside/);
});

Deno.test("virtio layout: the emulated IFC VF's capabilities", () => {
  const device = new EmulatedIfcvf({ queuePairs: 2, notifyOffMultiplier: 4 });
  const layout = readVirtioPciLayout(device.function.config);
  assert.deepEqual(
    { bar: layout.common.bar, offset: layout.common.offset, length: layout.common.length },
    { bar: 0, offset: 0, length: 0x40 },
  );
  assert.equal(layout.notify.offset, 0x3000);
  assert.equal(layout.notifyOffMultiplier, 4);
  assert.equal(layout.isr?.offset, 0x1000);
  assert.equal(layout.device?.offset, 0x2000);
  assert.equal(layout.msixVectors, 5);
  device.function.close();
});

Deno.test("virtio layout: truncated, missing and reserved-BAR capabilities", () => {
  const vendor = (at: number, next: number, len: number, type: number, bar = 0) => ({
    at,
    id: PciCapabilityId.VENDOR,
    next,
    bytes: [len, type, bar, 0, 0, 0, 0, 0, 0, 0, 0x40, 0, 0, 0, 4, 0, 0, 0],
  });
  // cap_len 8 is shorter than struct virtio_pci_cap.
  assert.throws(
    () => readVirtioPciLayout(space([vendor(0x40, 0, 8, VirtioPciCapType.COMMON)])),
    (e: unknown) => e instanceof VirtioPciLayoutError && /length 8, less than 16/.test(e.message),
  );
  // A notify capability without room for notify_off_multiplier.
  assert.throws(
    () =>
      readVirtioPciLayout(space([
        vendor(0x40, 0x60, 16, VirtioPciCapType.COMMON),
        vendor(0x60, 0, 16, VirtioPciCapType.NOTIFY),
      ])),
    /notify capability at 0x60 has length 16, less than 20/,
  );
  // Only common cfg: not a modern device.
  assert.throws(
    () => readVirtioPciLayout(space([vendor(0x40, 0, 16, VirtioPciCapType.COMMON)])),
    /no virtio notify capability/,
  );
  // A common cfg naming reserved BAR 7 is ignored; the next one is used.
  const layout = readVirtioPciLayout(space([
    vendor(0x40, 0x58, 16, VirtioPciCapType.COMMON, 7),
    vendor(0x58, 0x70, 16, VirtioPciCapType.COMMON, 2),
    vendor(0x70, 0, 20, VirtioPciCapType.NOTIFY, 2),
  ]));
  assert.equal(layout.common.bar, 2);
  assert.equal(layout.common.capOffset, 0x58);
  assert.equal(layout.msixVectors, 0);
});
