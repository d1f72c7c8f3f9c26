// MMIO accessors: exact widths, alignment and bounds, and the accesses the
// virtio transport emits (recorded), including 64-bit queue addresses as two
// 32-bit stores, low half first.

import assert from "node:assert/strict";
import {
  MappedMmio,
  type MmioAccess,
  MmioError,
  MmioWindow,
  readVirtioPciLayout,
  RecordingMmio,
  VirtioCommonCfg as C,
  VirtioPciTransport,
} from "@vhost-mdev/sdk/pci";
import { EmulatedMmio, MemoryRegisters } from "@vhost-mdev/sdk/pci";
import { EmulatedIfcvf, EmulatedIfcvfLayout } from "@vhost-mdev/ifcvf/emulated";

Deno.test("MappedMmio: little-endian values at exact widths, refusing misaligned and out-of-range", () => {
  const buffer = new ArrayBuffer(64);
  const bytes = new Uint8Array(buffer);
  const mmio = new MappedMmio(buffer);
  mmio.write16(2, 0xbeef);
  mmio.write32(4, 0x11223344);
  mmio.write8(9, 0x7f);
  mmio.write64(16, 0x0102030405060708n);
  assert.deepEqual([...bytes.subarray(0, 10)], [0, 0, 0xef, 0xbe, 0x44, 0x33, 0x22, 0x11, 0, 0x7f]);
  assert.deepEqual([...bytes.subarray(16, 24)], [8, 7, 6, 5, 4, 3, 2, 1]);
  assert.equal(mmio.read16(2), 0xbeef);
  assert.equal(mmio.read32(4), 0x11223344);
  assert.equal(mmio.read8(9), 0x7f);
  assert.equal(mmio.read64(16), 0x0102030405060708n);
  assert.throws(
    () => mmio.write16(1, 1),
    (e: unknown) => e instanceof MmioError && /not aligned/.test(e.message),
  );
  assert.throws(() => mmio.read32(6), /32-bit access at offset 6 is not aligned/);
  assert.throws(() => mmio.read64(60), /outside the 64-byte region/);
  assert.throws(() => mmio.write8(64, 0), /outside/);
  assert.throws(() => mmio.read8(-1), /outside/);
  assert.throws(() => new MappedMmio(new ArrayBuffer(12)), /not a multiple of 8/);
});

Deno.test("MmioWindow: offsets relative to its base, bounded by its length", () => {
  const regs = new MemoryRegisters(0x100);
  const rec = new RecordingMmio(new EmulatedMmio(regs));
  const win = new MmioWindow(rec, 0x40, 0x10, "test window");
  win.write16(2, 0x1234);
  assert.deepEqual(rec.accesses, [{ op: "write", width: 16, offset: 0x42, value: 0x1234n }]);
  assert.equal(regs.bytes[0x42], 0x34);
  assert.throws(
    () => win.read32(0x10),
    /test window 32-bit access at offset 16 is outside the 16-byte region/,
  );
  assert.throws(() => new MmioWindow(rec, 0xf8, 0x10), /does not fit the 256-byte region/);
});

function transportOver(device: EmulatedIfcvf) {
  const layout = readVirtioPciLayout(device.function.config);
  const bar0 = new RecordingMmio(device.function.mapBar(0));
  const transport = new VirtioPciTransport(layout, {
    common: new MmioWindow(bar0, layout.common.offset, layout.common.length),
    notify: new MmioWindow(bar0, layout.notify.offset, layout.notify.length),
    device: new MmioWindow(bar0, layout.device!.offset, layout.device!.length),
  });
  return { transport, bar0 };
}

const w = (width: MmioAccess["width"], offset: number, value: number | bigint): MmioAccess => ({
  op: "write",
  width,
  offset,
  value: BigInt(value),
});

Deno.test("virtio transport: each register written with its width, queue addresses lo then hi", () => {
  const device = new EmulatedIfcvf({ queuePairs: 1 });
  const { transport, bar0 } = transportOver(device);
  transport.reset();
  bar0.clear();
  const desc = 0x1_2345_6000, driver = 0x1_2345_7000, used = 0x2_0000_0000;
  const vector = transport.setupQueue(1, { size: 128, desc, driver, device: used, msixVector: 2 });
  assert.equal(vector, 2);
  const writes = bar0.accesses.filter((a) => a.op === "write");
  assert.deepEqual(writes, [
    w(16, C.QUEUE_SELECT, 1),
    w(16, C.QUEUE_SIZE, 128),
    w(32, C.QUEUE_DESC, 0x2345_6000),
    w(32, C.QUEUE_DESC + 4, 1),
    w(32, C.QUEUE_DRIVER, 0x2345_7000),
    w(32, C.QUEUE_DRIVER + 4, 1),
    w(32, C.QUEUE_DEVICE, 0),
    w(32, C.QUEUE_DEVICE + 4, 2),
    w(16, C.QUEUE_MSIX_VECTOR, 2),
    w(16, C.QUEUE_SELECT, 1), // the doorbell offset is read for the selected queue
  ]);
  assert.deepEqual(transport.queueAddresses(1), { size: 128, desc, driver, device: used });

  bar0.clear();
  transport.notify(1);
  // One 16-bit store of the queue index at queue_notify_off * multiplier.
  assert.deepEqual(bar0.accesses, [w(16, EmulatedIfcvfLayout.NOTIFY + 4, 1)]);

  bar0.clear();
  transport.setStatus(1);
  transport.setDriverFeatures(0x1_0000_0020n);
  assert.deepEqual(bar0.accesses, [
    w(8, C.DEVICE_STATUS, 1),
    w(32, C.DRIVER_FEATURE_SELECT, 0),
    w(32, C.DRIVER_FEATURE, 0x20),
    w(32, C.DRIVER_FEATURE_SELECT, 1),
    w(32, C.DRIVER_FEATURE, 1),
  ]);
  assert.deepEqual(device.badAccesses, []);
  device.function.close();
});

Deno.test("emulated device ignores accesses of the wrong width, as QEMU does", () => {
  const device = new EmulatedIfcvf();
  const bar0 = device.function.mapBar(0);
  bar0.write16(C.QUEUE_SELECT, 1);
  bar0.write8(C.QUEUE_SELECT, 0); // byte-wise write of a 16-bit register
  assert.equal(bar0.read16(C.QUEUE_SELECT), 1);
  bar0.write32(C.QUEUE_SIZE, 64); // a 32-bit store over queue_size and msix_vector
  assert.equal(bar0.read16(C.QUEUE_SIZE), 256);
  assert.equal(device.badAccesses.length, 2);
  assert.match(device.badAccesses[0], /write8 0x0 to common cfg offset 0x16/);
  device.function.close();
});
