// `vhost-mdev daemon --metrics 127.0.0.1:PORT`: Prometheus text exposition
// scraped over HTTP while two sim devices carry traffic from two frontends;
// the counters agree with `vhost-mdev dev stats -j`, and state and frontend
// presence follow the frontends.

import assert from "node:assert/strict";
import { attachGuest, DaemonProcess, loop, metric } from "./daemon_rig.ts";
import { parseMetricsAddress } from "../../cli/metrics.ts";

async function scrape(port: number): Promise<string> {
  const r = await fetch(`http://127.0.0.1:${port}/metrics`);
  assert.equal(r.status, 200);
  assert.match(r.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/);
  return await r.text();
}

Deno.test("metrics scraped during traffic agree with dev stats", async () => {
  const d = await DaemonProcess.start(["--metrics", "127.0.0.1:0"]);
  const guests: Awaited<ReturnType<typeof attachGuest>>[] = [];
  try {
    const port = d.ready.metricsPort!;
    assert.ok(port > 0);
    for (const name of ["a", "b"]) {
      const r = await d.cli([
        "dev",
        "add",
        name,
        "driver",
        "sim",
        "socket",
        `${d.dir}/${name}.sock`,
        "mode",
        "loopback",
      ]);
      assert.equal(r.code, 0, r.stderr);
    }
    let text = await scrape(port);
    assert.equal(metric(text, "vhost_mdev_device_running", { device: "a" }), 0);
    assert.equal(metric(text, "vhost_mdev_device_frontend_connected", { device: "a" }), 0);
    assert.match(text, /^vhost_mdev_devices 2$/m);
    assert.match(text, /^# TYPE vhost_mdev_ring_packets_total counter$/m);
    assert.match(
      text,
      new RegExp(
        `^vhost_mdev_device_info\\{device="a",driver="sim",mode="server",socket="${d.dir}/a.sock"\\} 1$`,
        "m",
      ),
    );

    // b's guest sits behind a vIOMMU: its device has an IOTLB, a's has none.
    guests.push(
      await attachGuest(`${d.dir}/a.sock`),
      await attachGuest(`${d.dir}/b.sock`, 1, true),
    );
    // Scrape while both devices move frames.
    const traffic = Promise.all([loop(guests[0].net, 1, 3000), loop(guests[1].net, 2, 1000)]);
    const during: number[] = [];
    let done = false;
    traffic.finally(() => done = true);
    while (!done) {
      text = await scrape(port);
      during.push(metric(text, "vhost_mdev_ring_packets_total", { device: "a", queue: "1" }) ?? -1);
      await new Promise((r) => setTimeout(r, 30));
    }
    await traffic;
    assert.ok(during.length >= 2, "scraped during traffic");
    for (let i = 1; i < during.length; i++) {
      assert.ok(during[i] >= during[i - 1], "counters only grow");
    }
    assert.ok(during.some((v) => v > 0 && v < 3000), `a scrape saw traffic under way: ${during}`);

    // Traffic over: the scrape and dev stats -j say the same, counter by counter.
    text = await scrape(port);
    for (const name of ["a", "b"]) {
      const r = await d.cli(["dev", "stats", name, "-j"]);
      assert.equal(r.code, 0, r.stderr);
      const s = JSON.parse(r.stdout).stats[name];
      for (const q of s.rings) {
        for (const c of s.counters.ring) {
          assert.equal(
            metric(text, `vhost_mdev_ring_${c}_total`, { device: name, queue: String(q.queue) }),
            q[c],
            `${name} q${q.queue} ${c}`,
          );
        }
      }
      for (const [c, v] of Object.entries(s.device)) {
        if (c.startsWith("iotlb_")) {
          const gauge = c === "iotlb_entries";
          assert.equal(
            metric(text, `vhost_mdev_${c}${gauge ? "" : "_total"}`, { device: name }),
            v,
            `${name} ${c}`,
          );
        } else {
          assert.equal(metric(text, `vhost_mdev_device_${c}_total`, { device: name }), v);
        }
      }
      assert.equal(metric(text, "vhost_mdev_device_running", { device: name }), 1);
      assert.equal(metric(text, "vhost_mdev_device_frontend_connected", { device: name }), 1);
      assert.equal(
        metric(text, "vhost_mdev_device_reported_errors_total", { device: name }),
        s.errors,
      );
    }
    assert.equal(metric(text, "vhost_mdev_ring_packets_total", { device: "a", queue: "1" }), 3000);
    assert.equal(metric(text, "vhost_mdev_ring_packets_total", { device: "b", queue: "0" }), 1000);
    assert.equal(metric(text, "vhost_mdev_ring_bytes_total", { device: "b", queue: "1" }), 64000);
    // The IOTLB: b asked its frontend for translations, a has no IOTLB at all.
    assert.ok((metric(text, "vhost_mdev_iotlb_misses_total", { device: "b" }) ?? 0) > 0);
    assert.ok((metric(text, "vhost_mdev_iotlb_updates_total", { device: "b" }) ?? 0) > 0);
    assert.equal(metric(text, "vhost_mdev_iotlb_misses_total", { device: "a" }), undefined);
    assert.match(text, /^# TYPE vhost_mdev_iotlb_entries gauge$/m);

    // A frontend leaves: its device stops and shows no frontend.
    guests.shift()!.fe.close();
    const end = Date.now() + 5000;
    while (
      metric(await scrape(port), "vhost_mdev_device_frontend_connected", { device: "a" }) !== 0
    ) {
      assert.ok(Date.now() < end, "frontend_connected never went to 0");
      await new Promise((r) => setTimeout(r, 50));
    }
    text = await scrape(port);
    assert.equal(metric(text, "vhost_mdev_device_running", { device: "a" }), 0);
    assert.equal(metric(text, "vhost_mdev_device_running", { device: "b" }), 1);
    assert.equal((await fetch(`http://127.0.0.1:${port}/other`)).status, 404);
  } finally {
    for (const g of guests) g.fe.close();
    assert.equal(await d.stop(), 0, d.err.lines.join("\n"));
  }
});

Deno.test("metrics listen on loopback only", () => {
  assert.deepEqual(parseMetricsAddress("127.0.0.1:9464"), { hostname: "127.0.0.1", port: 9464 });
  assert.deepEqual(parseMetricsAddress("[::1]:9464"), { hostname: "::1", port: 9464 });
  assert.deepEqual(parseMetricsAddress("localhost:0"), { hostname: "localhost", port: 0 });
  for (const bad of ["0.0.0.0:9464", "192.168.1.2:9464", "[::]:9464", "example.com:80"]) {
    assert.throws(() => parseMetricsAddress(bad), /loopback only/, bad);
  }
  assert.throws(() => parseMetricsAddress("9464"), /give HOST:PORT/);
  assert.throws(() => parseMetricsAddress("127.0.0.1:70000"), /above 65535/);
});
