// `vhost-mdev dev` and `vhost-mdev driver`, the daemon's client in iproute2's
// conventions: what each command prints (text, -j, -p), and exit codes a
// script can rely on: 0 ok, 1 the daemon refused, 2 bad command line, 3 no
// daemon.

import assert from "node:assert/strict";
import { cli, DaemonProcess } from "./daemon_rig.ts";

Deno.test("dev and driver: add, show, stats, del, with -j and -p, and the exit codes", async () => {
  const d = await DaemonProcess.start();
  try {
    let r = await d.cli([
      "dev",
      "add",
      "net0",
      "driver",
      "sim",
      "socket",
      `${d.dir}/net0.sock`,
      "queues",
      "2",
      "mode",
      "loopback",
      "mode",
      "server",
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "");
    // --control after the object works as well as before it.
    r = await cli([
      "dev",
      "add",
      "net1",
      "driver",
      "sim",
      "socket",
      `${d.dir}/net1.sock`,
      "--control",
      d.control,
    ]);
    assert.equal(r.code, 0, r.stderr);

    r = await d.cli(["dev", "show"]);
    assert.equal(r.code, 0);
    assert.match(
      r.stdout,
      /^net0: driver sim socket .*net0\.sock mode server queues 2 state stopped frontend none errors 0\n {2}options mode loopback\nnet1: driver sim/,
    );
    r = await d.cli(["dev", "show", "net0", "-j"]);
    const shown = JSON.parse(r.stdout);
    assert.deepEqual(Object.keys(shown.dev), ["net0"]);
    assert.equal(shown.dev.net0.queues, 2);
    assert.equal(shown.dev.net0.rings, 4);
    assert.deepEqual(shown.dev.net0.options, { mode: "loopback" });
    assert.equal(r.stdout.split("\n").length, 2, "-j is one line");
    r = await d.cli(["dev", "show", "-j", "-p"]);
    assert.ok(r.stdout.split("\n").length > 10, "-p indents");
    assert.deepEqual(Object.keys(JSON.parse(r.stdout).dev), ["net0", "net1"]);

    r = await d.cli(["dev", "stats", "net0"]);
    assert.equal(r.code, 0);
    assert.match(
      r.stdout,
      /^net0: errors 0\n {2}q0 packets 0 bytes 0 drops 0 errors 0\n.*\n.*\n {2}q3 packets 0/,
    );
    r = await d.cli(["dev", "stats", "net0", "-j"]);
    const stats = JSON.parse(r.stdout).stats.net0;
    assert.equal(stats.rings.length, 4);
    assert.deepEqual(stats.counters.ring, ["packets", "bytes", "drops", "errors"]);
    assert.equal((await d.cli(["dev", "reset-stats", "net0"])).code, 0);

    r = await d.cli(["driver", "show"]);
    assert.match(
      r.stdout,
      /^sim: software virtio-net.* \(bundled\)\n {2}options mode loopback\|sink\|source\|responder/,
    );
    r = await d.cli(["driver", "show", "blk", "-j"]);
    assert.deepEqual(Object.keys(JSON.parse(r.stdout).driver), ["blk"]);

    // 1: the daemon refused, with its message and code.
    r = await d.cli(["dev", "add", "net0", "driver", "sim", "socket", `${d.dir}/x.sock`]);
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      /a device named "net0" exists; choose another name or delete it first \(code -32001\)/,
    );
    r = await d.cli(["dev", "stats", "ghost"]);
    assert.equal(r.code, 1);
    r = await d.cli(["driver", "load", "./no/such/driver.js"]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /cannot load driver module .*no\/such\/driver\.js.*\(code -32005\)/);

    // 2: bad command lines never reach the daemon.
    for (
      const args of [
        ["dev", "add", "x", "driver", "sim"],
        ["dev", "add", "x", "driver", "sim", "socket", "/tmp/x.sock", "queues", "lots"],
        ["dev", "add", "x", "driver", "sim", "socket", "/tmp/x.sock", "mode"],
        ["dev", "del"],
        ["dev", "frob"],
        ["dev", "show", "--bogus"],
        ["driver", "load"],
      ]
    ) {
      r = await d.cli(args);
      assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
      assert.match(r.stderr, /see vhost-mdev (dev|driver) --help/);
    }

    r = await d.cli(["dev", "del", "net0"]);
    assert.equal(r.code, 0);
    r = await d.cli(["dev", "show", "-j"]);
    assert.deepEqual(Object.keys(JSON.parse(r.stdout).dev), ["net1"]);
  } finally {
    assert.equal(await d.stop(), 0, d.err.lines.join("\n"));
  }
  // 3: nobody answers.
  const r = await cli(["--control", `${d.dir}/control.sock`, "dev", "show"]);
  assert.equal(r.code, 3);
  assert.match(
    r.stderr,
    /cannot reach the daemon on .*control\.sock: .*is `vhost-mdev daemon --control/,
  );
});

Deno.test("every command has --help", async () => {
  for (
    const [args, text] of [
      [["--help"], /daemon +serve many devices/],
      [["daemon", "--help"], /--control PATH/],
      [["dev", "--help"], /dev add NAME driver DRV socket PATH/],
      [["dev", "add", "--help"], /Exit codes: 0 ok, 1 the daemon refused/],
      [["driver", "-h"], /driver load PATH/],
      [["bundle", "--help"], /export const contractVersion = 2/],
    ] as const
  ) {
    const r = await cli([...args]);
    assert.equal(r.code, 0, `${args.join(" ")}: ${r.stderr}`);
    assert.match(r.stdout, text);
  }
});

Deno.test("daemon refuses bad arguments (2) and a control socket another daemon serves (1)", async () => {
  let r = await cli(["daemon", "--frob"]);
  assert.equal(r.code, 2);
  r = await cli(["daemon", "--control", "/tmp/x.sock", "--metrics", "0.0.0.0:9464"]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /metrics are served on loopback only/);
  r = await cli(["daemon", "--control", "/tmp/x.sock", "--metrics", "10.1.2.3:80"]);
  assert.equal(r.code, 2);
  const d = await DaemonProcess.start();
  try {
    r = await cli(["daemon", "--control", d.control]);
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      /another daemon answers on .*; stop it or choose another --control path/,
    );
  } finally {
    assert.equal(await d.stop(), 0);
  }
});
