import { Testpmd } from "../../sdk/testing/testpmd.ts";
const dir = Deno.makeTempDirSync();
const sock = `${dir}/c.sock`;
const extra = Deno.env.get("VDEV") ?? "";
const back = await Testpmd.start({
  vdevs: `net_vhost0,iface=${sock},queues=1`,
  forwardMode: (Deno.args[0] ?? "txonly") as any,
  txpkts: 64,
  cpu: 0,
});
const front = await Testpmd.start({
  vdevs: `net_virtio_user0,path=${sock},queues=1${extra}`,
  forwardMode: (Deno.args[1] ?? "rxonly") as any,
  txpkts: 64,
  cpu: 1,
});
try {
  await front.waitForLinkUp(0, 15000);
  await back.startForwarding();
  await front.startForwarding();
  for (let i = 0; i < 4; i++) {
    await new Promise((r) => setTimeout(r, 1000));
    const s = await front.portStats(0);
    console.log(`front rxPps ${s.rxPps} txPps ${s.txPps}`);
  }
} finally {
  await front.close();
  await back.close();
  Deno.removeSync(dir, { recursive: true });
}
