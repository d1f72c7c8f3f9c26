import { VhostMdevDevice, VhostUserServer } from "@vhost-mdev/sdk";
import { driver } from "@vhost-mdev/sim";
import { Testpmd } from "../../sdk/testing/testpmd.ts";

const mode = Deno.args[0] ?? "sink";
const fwd = (Deno.args[1] ?? "txonly") as any;
const size = Number(Deno.args[2] ?? 64);
const dir = Deno.makeTempDirSync();
const sock = `${dir}/s.sock`;
const device = await VhostMdevDevice.create(driver, {
  queues: 1,
  options: { mode, "frame-size": String(size), ...JSON.parse(Deno.env.get("SIMOPT") ?? "{}") },
}, {
  listener: (e) => {
    if (e.type !== "debug") console.log("event", e.type, e.message);
  },
});
const server = VhostUserServer.listen(device, sock);
const tp = await Testpmd.start({
  vdevs: `net_virtio_user0,path=${sock},queues=1${Deno.env.get("VDEV") ?? ""}`,
  forwardMode: fwd,
  txpkts: size,
  cpu: 1,
  rxd: 1024,
  txd: 1024,
});
try {
  await tp.waitForLinkUp(0, 15000);
  await tp.startForwarding();
  for (let i = 0; i < 4; i++) {
    await new Promise((r) => setTimeout(r, 1000));
    const s = await tp.portStats(0);
    console.log(`tp rxPps ${s.rxPps} txPps ${s.txPps}`, JSON.stringify(device.stats()));
  }
  const f = await tp.stopForwarding();
  console.log(JSON.stringify(f.total));
} finally {
  await tp.close();
  await server.close();
  await device.close();
  Deno.removeSync(dir, { recursive: true });
}
