// `vhost-mdev daemon --config FILE`: drivers loaded and devices created at
// start, as a host restores its devices at boot; a file that cannot be
// applied stops the daemon from starting and leaves nothing behind.

import assert from "node:assert/strict";
import { cli, DaemonProcess } from "./daemon_rig.ts";

const NULL_DRIVER = new URL("../../examples/null_driver.ts", import.meta.url).pathname;

Deno.test("a configuration file loads drivers and creates devices at start", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "vhost-mdev-config" });
  const r = await cli(["bundle", NULL_DRIVER, "-o", `${dir}/null.js`]);
  assert.equal(r.code, 0, r.stderr);
  Deno.writeTextFileSync(
    `${dir}/config.json`,
    JSON.stringify({
      drivers: ["null.js"], // relative to the file
      devices: [
        {
          name: "net0",
          driver: "sim",
          socket: `${dir}/net0.sock`,
          queues: 2,
          options: { mode: "loopback" },
        },
        { name: "null0", driver: "null", socket: `${dir}/null0.sock` },
      ],
    }),
  );
  const d = await DaemonProcess.start(["--config", `${dir}/config.json`], dir);
  try {
    assert.equal(d.ready.devices, 2);
    const shown = JSON.parse((await d.cli(["dev", "show", "-j"])).stdout).dev;
    assert.deepEqual(Object.keys(shown), ["net0", "null0"]);
    assert.equal(shown.net0.queues, 2);
    assert.ok(Deno.lstatSync(`${dir}/net0.sock`).isSocket);
    assert.ok(Deno.lstatSync(`${dir}/null0.sock`).isSocket);
  } finally {
    assert.equal(await d.stop(), 0, d.err.lines.join("\n"));
  }
});

Deno.test("a configuration file that cannot be applied: exit 2 (malformed) or 1 (an entry failed), nothing left", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "vhost-mdev-config" });
  try {
    const run = async (config: unknown) => {
      Deno.writeTextFileSync(
        `${dir}/c.json`,
        typeof config === "string" ? config : JSON.stringify(config),
      );
      return await cli(["daemon", "--control", `${dir}/control.sock`, "--config", `${dir}/c.json`]);
    };
    let r = await run("{ not json");
    assert.equal(r.code, 2);
    assert.match(r.stderr, /c\.json is not JSON/);
    r = await run({
      devices: [{ name: "a", driver: "sim", socket: `${dir}/a.sock`, queues: "x" }],
    });
    assert.equal(r.code, 2);
    assert.match(r.stderr, /device 1: "queues" must be an integer from 1 to 64/);
    r = await run({ device: [] });
    assert.equal(r.code, 2);
    assert.match(r.stderr, /unknown key\(s\) device; it takes "drivers", "devices"/);
    r = await run({
      devices: [
        { name: "a", driver: "sim", socket: `${dir}/a.sock` },
        { name: "b", driver: "nosuch", socket: `${dir}/b.sock` },
      ],
    });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /config .*c\.json: device b: no driver named "nosuch"/);
    r = await cli(["daemon", "--control", `${dir}/control.sock`, "--config", `${dir}/none.json`]);
    assert.equal(r.code, 1);
    // Device a was created, then removed when b failed; no control socket either.
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["c.json"]);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
