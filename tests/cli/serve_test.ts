// `deno task serve`: help, argument errors, and the lifecycle lines a real
// frontend (testpmd's virtio_user) produces, in text and JSON.

import assert from "node:assert/strict";
import { Testpmd } from "@vhost-mdev/testing";
import { requirePeer } from "../support/peers.ts";
import { Lines } from "./daemon_rig.ts";

const SERVE = new URL("../../cli/serve.ts", import.meta.url).pathname;
const PLUGIN = new URL("../support/recording_plugin.ts", import.meta.url).pathname;
const testpmd = await requirePeer("dpdk-testpmd");

async function run(args: string[]) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", SERVE, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

Deno.test("serve --help explains the flags and lists the bundled drivers", async () => {
  const r = await run(["--help"]);
  assert.equal(r.code, 0);
  assert.match(r.stdout, /--driver <name\|module>/);
  assert.match(r.stdout, /sim, ifcvf/);
  assert.match(r.stdout, /--client/);
});

Deno.test("serve refuses missing and unknown arguments with what to do", async () => {
  const missing = await run(["--driver", PLUGIN]);
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /--driver and --socket are required/);
  const unknown = await run(["--driver", "nosuch", "--socket", "/tmp/x.sock"]);
  assert.equal(unknown.code, 1);
  assert.match(unknown.stderr, /no driver named "nosuch"; bundled drivers: sim, ifcvf/);
  const badOption = await run(["--driver", PLUGIN, "--socket", "/tmp/x.sock", "--color", "red"]);
  assert.equal(badOption.code, 2);
  assert.match(badOption.stderr, /has no option --color/);
  const notPlugin = await run([
    "--driver",
    new URL("../../cli/format.ts", import.meta.url).pathname,
    "--socket",
    "/tmp/x.sock",
  ]);
  assert.equal(notPlugin.code, 1);
  assert.match(notPlugin.stderr, /is not a driver plugin/);
});

Deno.test({
  name: "serve prints a ready line and one JSON line per lifecycle event for testpmd",
  ignore: testpmd === null,
  async fn() {
    const dir = Deno.makeTempDirSync();
    const sock = `${dir}/serve.sock`;
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        SERVE,
        "--driver",
        PLUGIN,
        "--socket",
        sock,
        "--log",
        "json",
        "--allow-unsealed-memory",
      ],
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const out = new Lines(child.stdout);
    const err = new Lines(child.stderr);
    let tp: Testpmd | null = null;
    try {
      const ready = JSON.parse(await out.until((l) => l.includes('"ready"'), "ready"));
      assert.equal(ready.type, "ready");
      assert.match(ready.message, /recorder listening on .*serve\.sock, 1 queue pair/);
      tp = await Testpmd.start({
        binary: testpmd!,
        vdevs: `net_virtio_user0,path=${sock},queues=1`,
        forwardMode: "io",
        cpu: 1,
      });
      await tp.waitForLinkUp(0, 15000);
      for (const type of ["connected", "features", "memory", "status", "start"]) {
        await out.until((l) => JSON.parse(l).type === type, type);
      }
      const start = JSON.parse(out.lines.find((l) => JSON.parse(l).type === "start")!);
      assert.equal(start.fields.rings.length, 2);
      await tp.close();
      tp = null;
      for (const type of ["stop", "disconnected"]) {
        await out.until((l) => JSON.parse(l).type === type, type);
      }
      child.kill("SIGTERM");
      const status = await child.status;
      assert.equal(status.code, 0, err.lines.join("\n"));
      await out.until((l) => JSON.parse(l).type === "exit", "exit");
      // Every stdout line is one JSON object.
      for (const l of out.lines) assert.doesNotThrow(() => JSON.parse(l), l);
    } finally {
      await tp?.close();
      try {
        child.kill("SIGKILL");
      } catch {
        // Already exited.
      }
      await child.status;
      await out.done();
      await err.done();
      Deno.removeSync(dir, { recursive: true });
    }
  },
});
