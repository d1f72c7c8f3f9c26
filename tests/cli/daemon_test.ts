// `vhost-mdev daemon`: devices created and deleted over the control socket
// (JSON-RPC 2.0, one request per line) while frontends use them; creates that
// must fail fail with a JSON-RPC error and change nothing; hostile control
// clients hold only their own connection.

import assert from "node:assert/strict";
import { attachGuest, DaemonProcess, frame, loop, RawControl } from "./daemon_rig.ts";
import { settledFdCount } from "../support/peers.ts";
import { VhostUserFrontend, VirtioNetDriver } from "@vhost-mdev/testing";

function exists(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

Deno.test("two devices from the control socket serve two frontends at once; deleting one leaves the other serving", async () => {
  const d = await DaemonProcess.start();
  const c = await RawControl.connect(d.control);
  const guests: Awaited<ReturnType<typeof attachGuest>>[] = [];
  try {
    for (const name of ["net0", "net1"]) {
      const r = await c.result("device_create", {
        name,
        driver: "sim",
        socket: `${d.dir}/${name}.sock`,
        options: { mode: "loopback" },
      });
      assert.equal(r.name, name);
      assert.equal(r.mode, "server");
      assert.equal(r.connected, false);
    }
    guests.push(await attachGuest(`${d.dir}/net0.sock`));
    guests.push(await attachGuest(`${d.dir}/net1.sock`));
    // Both at once: each frame comes back byte-identical on its own device.
    const [a, b] = await Promise.all([loop(guests[0].net, 1, 200), loop(guests[1].net, 2, 300)]);
    assert.deepEqual(a[17], frame(1, 17));
    assert.deepEqual(b[299], frame(2, 299));
    const list = await c.result("device_list");
    assert.deepEqual(list.map((x: any) => [x.name, x.running, x.connected]), [
      ["net0", true, true],
      ["net1", true, true],
    ]);
    const s0 = await c.result("device_stats", { name: "net0" });
    assert.deepEqual(s0.counters.ring, ["packets", "bytes", "drops", "errors"]);
    assert.equal(s0.rings[1].packets, 200); // transmit ring
    assert.equal(s0.rings[0].packets, 200); // receive ring

    // Delete net0 while net1 carries traffic: net1 loses nothing.
    const traffic = loop(guests[1].net, 2, 2000, 300);
    assert.deepEqual(await c.result("device_delete", { name: "net0" }), { name: "net0" });
    const more = await traffic;
    assert.equal(more.length, 2000);
    for (let i = 0; i < more.length; i += 97) assert.deepEqual(more[i], frame(2, 300 + i));
    assert.equal(exists(`${d.dir}/net0.sock`), false, "net0's socket file is removed");
    const s1 = await c.result("device_stats", { name: "net1" });
    assert.equal(s1.rings[1].packets, 2300);
    assert.equal(s1.rings[0].packets, 2300);
    assert.equal(s1.rings[0].drops, 0);
    const left = await c.result("device_list");
    assert.deepEqual(left.map((x: any) => x.name), ["net1"]);
    // net0's frontend was disconnected: its session is gone.
    const gone = await c.call("device_get", { name: "net0" });
    assert.equal(gone.error.code, -32000);
  } finally {
    for (const g of guests) g.fe.close();
    c.close();
    assert.equal(await d.stop(), 0, d.err.lines.join("\n"));
  }
});

Deno.test("bad creates return JSON-RPC errors with what to do, and change nothing", async () => {
  const d = await DaemonProcess.start();
  const c = await RawControl.connect(d.control);
  // A socket another process serves.
  const busyPath = `${d.dir}/busy.sock`;
  const busy = Deno.listen({ transport: "unix", path: busyPath });
  try {
    await c.result("device_create", {
      name: "net0",
      driver: "sim",
      socket: `${d.dir}/net0.sock`,
      options: { mode: "loopback" },
    });
    const before = JSON.stringify((await c.result("device_list")).map((x: any) => x.name));
    const fresh = `${d.dir}/fresh.sock`;
    const cases: [string, Record<string, unknown>, number, RegExp][] = [
      [
        "unknown driver",
        { name: "x", driver: "nosuch", socket: fresh },
        -32002,
        /no driver named "nosuch"; drivers: sim, ifcvf, blk; load a plugin/,
      ],
      [
        "duplicate name",
        { name: "net0", driver: "sim", socket: fresh },
        -32001,
        /a device named "net0" exists; choose another name/,
      ],
      [
        "socket used by a device",
        { name: "x", driver: "sim", socket: `${d.dir}/net0.sock` },
        -32003,
        /used by device net0/,
      ],
      [
        "socket served by another process",
        { name: "x", driver: "sim", socket: busyPath },
        -32003,
        /served by a running process; stop it or choose another/,
      ],
      [
        "socket path is a file",
        { name: "x", driver: "sim", socket: `${d.dir}/control.sock.txt` },
        -32003,
        /is not a socket/,
      ],
      [
        "directory missing",
        { name: "x", driver: "sim", socket: `${d.dir}/no/dir.sock` },
        -32003,
        /directory .* does not exist; create it first/,
      ],
      [
        "relative socket path",
        { name: "x", driver: "sim", socket: "rel.sock" },
        -32602,
        /must be absolute/,
      ],
      [
        "bad option value",
        { name: "x", driver: "sim", socket: fresh, options: { mode: "warp" } },
        -32602,
        /"warp" is not one of loopback, sink, source, responder/,
      ],
      [
        "unknown option",
        { name: "x", driver: "sim", socket: fresh, options: { colour: "red" } },
        -32602,
        /has no option "colour"; it takes: mode/,
      ],
      [
        "option the driver's probe refuses",
        { name: "x", driver: "sim", socket: fresh, options: { mtu: "-5" } },
        -32004,
        /driver sim refused the device/,
      ],
      [
        "queues out of range",
        { name: "x", driver: "sim", socket: fresh, queues: 0 },
        -32602,
        /"queues" must be an integer from 1 to 64/,
      ],
      [
        "queues of the wrong type",
        { name: "x", driver: "sim", socket: fresh, queues: "2" },
        -32602,
        /"queues" must be an integer/,
      ],
      [
        "bad mode",
        { name: "x", driver: "sim", socket: fresh, mode: "both" },
        -32602,
        /"mode" must be one of server, client/,
      ],
      [
        "bad name",
        { name: "../x", driver: "sim", socket: fresh },
        -32602,
        /device name "..\/x" must be letters/,
      ],
      ["missing socket", { name: "x", driver: "sim" }, -32602, /"socket" is required/],
      [
        "unknown parameter",
        { name: "x", driver: "sim", socket: fresh, sokcet: "y" },
        -32602,
        /unknown parameter "sokcet"/,
      ],
    ];
    Deno.writeTextFileSync(`${d.dir}/control.sock.txt`, "not a socket");
    for (const [what, params, code, message] of cases) {
      const r = await c.call("device_create", params);
      assert.ok(r.error, `${what}: expected an error, got ${JSON.stringify(r)}`);
      assert.equal(r.error.code, code, `${what}: ${r.error.message}`);
      assert.match(r.error.message, message, what);
      assert.equal(
        JSON.stringify((await c.result("device_list")).map((x: any) => x.name)),
        before,
        `${what} changed the device list`,
      );
      assert.equal(exists(fresh), false, `${what} left a socket file`);
      assert.equal(exists(`${d.dir}/rel.sock`), false);
    }
    // The other process's socket is untouched, and net0 still listens.
    assert.ok(Deno.lstatSync(busyPath).isSocket);
    assert.ok(Deno.lstatSync(`${d.dir}/net0.sock`).isSocket);
    const { fe, net } = await attachGuest(`${d.dir}/net0.sock`);
    try {
      assert.equal((await loop(net, 3, 50)).length, 50);
    } finally {
      fe.close();
    }
    // Reading and deleting what does not exist.
    for (const m of ["device_get", "device_delete", "device_stats", "device_reset_stats"]) {
      const r = await c.call(m, { name: "ghost" });
      assert.equal(r.error.code, -32000, m);
      assert.match(r.error.message, /no device named "ghost"; list them with device_list/);
    }
  } finally {
    busy.close();
    c.close();
    assert.equal(await d.stop(), 0, d.err.lines.join("\n"));
  }
});

Deno.test("hostile control input: bad JSON, unknown methods, wrong types, long lines; one bad client never blocks another", async () => {
  const d = await DaemonProcess.start();
  const bad = await RawControl.connect(d.control);
  const stuck = await RawControl.connect(d.control);
  const deaf = await RawControl.connect(d.control);
  const good = await RawControl.connect(d.control);
  try {
    // A client that stops mid-line, and one that floods requests and never reads.
    await stuck.write('{"jsonrpc":"2.0","method":"device_li');
    const flood = JSON.stringify({ jsonrpc: "2.0", method: "driver_list", id: 1 }) + "\n";
    const flooding = deaf.write(flood.repeat(2000)).catch(() => {});

    await bad.write("this is not json\n");
    let r = await bad.read();
    assert.equal(r.error.code, -32700);
    assert.equal(r.id, null);
    assert.match(r.error.message, /not JSON .*send one JSON-RPC request per line/);
    // The connection goes on after a parse error.
    r = await bad.call("no_such_method");
    assert.equal(r.error.code, -32601);
    assert.match(r.error.message, /no method "no_such_method"; methods: driver_list, driver_load/);
    r = await bad.call("device_get", { name: 5 });
    assert.equal(r.error.code, -32602);
    assert.match(r.error.message, /"name" must be a string, not number/);
    await bad.write('{"jsonrpc":"2.0","method":"device_list","params":[1],"id":7}\n');
    r = await bad.read();
    assert.equal(r.error.code, -32602);
    assert.equal(r.id, 7);
    await bad.write('{"jsonrpc":"1.0","method":"device_list","id":8}\n');
    r = await bad.read();
    assert.equal(r.error.code, -32600);
    await bad.write('{"jsonrpc":"2.0","method":"device_list","id":{"x":1}}\n');
    r = await bad.read();
    assert.equal(r.error.code, -32600);
    assert.equal(r.id, null);
    await bad.write("[]\n");
    r = await bad.read();
    assert.equal(r.error.code, -32600);
    // A notification gets no answer; a batch gets an array.
    await bad.write('{"jsonrpc":"2.0","method":"device_list"}\n');
    await bad.write(
      '[{"jsonrpc":"2.0","method":"device_list","id":"a"},{"jsonrpc":"2.0","method":"x","id":"b"}]\n',
    );
    r = await bad.read();
    assert.ok(Array.isArray(r));
    assert.deepEqual(r[0], { jsonrpc: "2.0", result: [], id: "a" });
    assert.equal(r[1].error.code, -32601);

    // Meanwhile a well-behaved client is served at once.
    const t0 = performance.now();
    assert.deepEqual(await good.result("device_list"), []);
    assert.ok(performance.now() - t0 < 2000);

    // A line past the limit: a parse error, then the connection is closed.
    await bad.write("x".repeat(70000)).catch(() => {});
    r = await bad.read();
    assert.equal(r.error.code, -32700);
    assert.match(r.error.message, /longer than 65536 bytes; connection closed/);
    assert.equal(await bad.read(), null);

    // The good client creates a device while the others still hang around.
    await good.result("device_create", {
      name: "n",
      driver: "sim",
      socket: `${d.dir}/n.sock`,
    });
    assert.equal((await good.result("device_list")).length, 1);
    await stuck.write('st","id":3}\n');
    r = await stuck.read();
    assert.equal(r.id, 3);
    assert.equal(r.result.length, 1);
    deaf.close();
    await flooding;
    assert.equal((await good.result("device_delete", { name: "n" })).name, "n");
  } finally {
    for (const c of [bad, stuck, deaf, good]) c.close();
    assert.equal(await d.stop(), 0, d.err.lines.join("\n"));
  }
});

/** Open fds (once settled) and resident set of process `pid`. */
async function usage(pid: number): Promise<{ fds: number; rssKiB: number }> {
  const fds = await settledFdCount({ pid });
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const rssKiB = Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]);
  return { fds, rssKiB };
}

/** Tolerance of RSS growth over 100 cycles, in KiB. */
const RSS_TOLERANCE_KIB = 16 * 1024;

Deno.test("100 device create/delete cycles, each serving a frontend, leave the daemon's fds and RSS flat", async () => {
  const d = await DaemonProcess.start();
  const c = await RawControl.connect(d.control);
  const pid = d.ready.pid;
  // Each cycle: create, a frontend brings the device up (the sim starts its
  // datapath Worker) and loops frames, the device is deleted under it.
  const cycle = async (i: number) => {
    await c.result("device_create", {
      name: `c${i}`,
      driver: "sim",
      socket: `${d.dir}/c.sock`,
      options: { mode: "loopback" },
    });
    const { fe, net } = await attachGuest(`${d.dir}/c.sock`);
    try {
      assert.equal((await loop(net, 4, 8, i * 8)).length, 8);
      await c.result("device_delete", { name: `c${i}` });
    } finally {
      fe.close();
    }
  };
  try {
    // Warm up: first loads of modules and runtime threads live for the process.
    for (let i = 0; i < 10; i++) await cycle(i);
    const before = await usage(pid);
    for (let i = 0; i < 100; i++) await cycle(100 + i);
    const after = await usage(pid);
    console.log(
      `100 cycles: fds ${before.fds} -> ${after.fds}, ` +
        `RSS ${(before.rssKiB / 1024).toFixed(1)} -> ${(after.rssKiB / 1024).toFixed(1)} MiB`,
    );
    assert.ok(after.fds <= before.fds, `fds grew from ${before.fds} to ${after.fds}`);
    assert.ok(
      after.rssKiB - before.rssKiB < RSS_TOLERANCE_KIB,
      `RSS grew by ${after.rssKiB - before.rssKiB} KiB over 100 cycles`,
    );
    assert.deepEqual(await c.result("device_list"), []);
    assert.equal(exists(`${d.dir}/c.sock`), false);
  } finally {
    c.close();
    assert.equal(await d.stop(), 0, d.err.lines.join("\n"));
  }
});

Deno.test("a client-mode device connects to a listening frontend", async () => {
  const d = await DaemonProcess.start();
  const c = await RawControl.connect(d.control);
  const path = `${d.dir}/fe.sock`;
  let fe: VhostUserFrontend | undefined;
  try {
    const listening = VhostUserFrontend.listen(path, { memoryMiB: 16 });
    const r = await c.result("device_create", {
      name: "cl",
      driver: "sim",
      socket: path,
      mode: "client",
      options: { mode: "loopback" },
    });
    assert.equal(r.mode, "client");
    fe = await listening;
    const net = await VirtioNetDriver.start(fe, { ringSize: 128 });
    assert.equal((await loop(net, 5, 100)).length, 100);
    assert.equal((await c.result("device_get", { name: "cl" })).connected, true);
    await c.result("device_delete", { name: "cl" });
  } finally {
    fe?.close();
    c.close();
    assert.equal(await d.stop(), 0, d.err.lines.join("\n"));
  }
});
