// Driver plugins: `vhost-mdev bundle` makes examples/null_driver.ts one
// JavaScript file, `driver load` brings it into a running daemon, and a
// device of it serves a frontend; a bundle built for another contract
// version is refused with the versions that fit, and a driver that declares
// none is not bundled.

import assert from "node:assert/strict";
import { attachGuest, cli, DaemonProcess, frame } from "./daemon_rig.ts";

const NULL_DRIVER = new URL("../../examples/null_driver.ts", import.meta.url).pathname;

Deno.test("a bundled third-party driver loads into a running daemon and serves a frontend", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "vhost-mdev-bundle" });
  const d = await DaemonProcess.start();
  let guest: Awaited<ReturnType<typeof attachGuest>> | undefined;
  try {
    let r = await cli(["bundle", NULL_DRIVER, "-o", `${dir}/null.js`]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /wrote .*null\.js \(\d+ bytes\)/);
    const text = Deno.readTextFileSync(`${dir}/null.js`);
    // One file: the SDK stays an import for the loading process, nothing else is imported.
    const imports = [...text.matchAll(/from\s*"([^"]+)"/g)].map((m) => m[1]);
    assert.deepEqual([...new Set(imports)], ["@vhost-mdev/sdk"]);
    assert.match(text, /contractVersion = 2/);

    // Not known before, loaded without a restart.
    r = await d.cli(["dev", "add", "null0", "driver", "null", "socket", `${d.dir}/null0.sock`]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /no driver named "null"/);
    r = await d.cli(["driver", "load", `${dir}/null.js`]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "driver null loaded\n");
    r = await d.cli(["driver", "show", "null", "-j"]);
    assert.equal(JSON.parse(r.stdout).driver.null.source, `${dir}/null.js`);
    r = await d.cli(["dev", "add", "null0", "driver", "null", "socket", `${d.dir}/null0.sock`]);
    assert.equal(r.code, 0, r.stderr);

    // A frontend brings it up; the kicks it sends are counted by the plugin.
    guest = await attachGuest(`${d.dir}/null0.sock`);
    assert.equal(guest.net.send([frame(9, 0), frame(9, 1)]), 2);
    let stats: any;
    const end = Date.now() + 5000;
    for (;;) {
      r = await d.cli(["dev", "stats", "null0", "-j"]);
      stats = JSON.parse(r.stdout).stats.null0;
      if (stats.rings[1].kicks >= 1 || Date.now() > end) break;
      await new Promise((res) => setTimeout(res, 100));
    }
    assert.deepEqual(stats.counters.ring, ["kicks"]);
    assert.ok(stats.rings[0].kicks >= 1, "the receive ring's start-up kick");
    assert.ok(stats.rings[1].kicks >= 1, "the transmit kick");
    r = await d.cli(["dev", "show", "null0", "-j"]);
    const dev = JSON.parse(r.stdout).dev.null0;
    assert.equal(dev.running, true);
    assert.equal(dev.connected, true);

    // Another contract version: refused, saying which versions fit.
    Deno.writeTextFileSync(
      `${dir}/old.ts`,
      Deno.readTextFileSync(NULL_DRIVER)
        .replace("contractVersion = 2", "contractVersion = 1")
        .replace('name: "null"', 'name: "old"'),
    );
    r = await cli(["bundle", `${dir}/old.ts`, "-o", `${dir}/old.js`]);
    assert.equal(r.code, 0, r.stderr);
    r = await d.cli(["driver", "load", `${dir}/old.js`]);
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      /old\.js was built for driver contract version 1; this vhost-mdev loads drivers of version 2: rebuild .*\(code -32006\)/,
    );
    r = await d.cli(["driver", "show", "-j"]);
    assert.deepEqual(Object.keys(JSON.parse(r.stdout).driver), ["sim", "ifcvf", "blk", "null"]);
  } finally {
    guest?.fe.close();
    assert.equal(await d.stop(), 0, d.err.lines.join("\n"));
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("bundle refuses a driver that declares no contract version, and bad arguments", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "vhost-mdev-bundle" });
  try {
    Deno.writeTextFileSync(
      `${dir}/bare.ts`,
      Deno.readTextFileSync(NULL_DRIVER).replace("export const contractVersion = 2;", ""),
    );
    let r = await cli(["bundle", `${dir}/bare.ts`, "-o", `${dir}/bare.js`]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /does not export `contractVersion`.*export const contractVersion = 2;/);
    assert.throws(() => Deno.statSync(`${dir}/bare.js`));
    Deno.writeTextFileSync(
      `${dir}/npm.ts`,
      'import x from "npm:left-pad";\nexport const driver = x;\n',
    );
    r = await cli(["bundle", `${dir}/npm.ts`, "-o", `${dir}/npm.js`]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /cannot bundle .*npm:left-pad.*vendor npm:\/jsr: dependencies/);
    r = await cli(["bundle", `${dir}/missing.ts`, "-o", `${dir}/x.js`]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /no such file/);
    r = await cli(["bundle", `${dir}/bare.ts`]);
    assert.equal(r.code, 2);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
