// The process-killing attacks of issue 9 against `deno task serve --driver
// sim` itself, in its own process: a flood of backend channels that are no
// sockets (fd leak to EMFILE), a saturated blocking call fd with memory-table
// replacements under traffic (a Worker blocked in write, then memory unmapped
// under it: SIGSEGV), and memory the frontend could shrink (SIGBUS). After
// each, the server is alive, answers GET_FEATURES within 1 s, and its fd
// count and RSS are back near where they were.

import assert from "node:assert/strict";
import { FrontendRequest as R, ProtocolFeatureBit as PF } from "@vhost-mdev/sdk/vhost-user";
import { close, F_GETFL, fcntl, ftruncate, SysError } from "@vhost-mdev/sdk/sys";
import {
  fdCount,
  frames,
  getFeaturesLatency,
  GuestRam,
  isAlive,
  memTable,
  NetRings,
  O_NONBLOCK,
  openPath,
  procStatus,
  PROTOCOL_FEATURES_BIT,
  protocolBits,
  RawFrontend,
  saturatedEventfd,
  settledFdCount,
  takeEventfd,
  u64,
  VERSION_1,
} from "../support/hostile_frontend.ts";

const SERVE = new URL("../../cli/serve.ts", import.meta.url).pathname;
const RSS_BOUND = 128 * 1024 * 1024;

/** `cli/serve.ts --driver sim --mode loopback` on a fresh socket. */
async function startServe(): Promise<{ child: Deno.ChildProcess; sock: string; dir: string }> {
  const dir = Deno.makeTempDirSync({ prefix: "vhost-serve-attack-" });
  const sock = `${dir}/sim.sock`;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", SERVE, "--driver", "sim", "--mode", "loopback", "--socket", sock],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  // Keep the pipes drained; wait until the socket answers.
  child.stdout.pipeTo(new WritableStream());
  child.stderr.pipeTo(new WritableStream());
  const deadline = Date.now() + 30000;
  for (;;) {
    try {
      await getFeaturesLatency(sock, 1000);
      return { child, sock, dir };
    } catch (e) {
      if (Date.now() > deadline) throw new Error(`serve did not come up: ${(e as Error).message}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

async function session(sock: string, ...bits: number[]): Promise<RawFrontend> {
  const f = await RawFrontend.connect(sock);
  await f.handshake({
    protocol: protocolBits(PF.REPLY_ACK, ...bits),
    features: VERSION_1 | PROTOCOL_FEATURES_BIT,
  });
  return f;
}

Deno.test("serve --driver sim survives the process-killing attacks, leaking nothing", async () => {
  const { child, sock, dir } = await startServe();
  const pid = child.pid;
  const healthy = async (what: string, fdBaseline: number, rssBaseline: number) => {
    assert.ok(isAlive(pid), `${what}: the server died`);
    const ms = await getFeaturesLatency(sock, 1000);
    assert.ok(ms < 1000, `${what}: GET_FEATURES took ${ms} ms`);
    assert.equal(await settledFdCount(pid, fdBaseline), fdBaseline, `${what}: fds leaked`);
    const rss = procStatus(pid).rss;
    assert.ok(rss < rssBaseline + RSS_BOUND, `${what}: RSS grew by ${rss - rssBaseline} bytes`);
  };
  try {
    // Warm up: one full start/stop, so the Worker runtime's own fds exist.
    {
      const f = await session(sock, PF.STATUS);
      const rings = new NetRings({ num: 64 });
      await rings.start(f, { enable: true, status: true });
      rings.send(frames(4));
      assert.equal(await rings.waitReceive(4), 4);
      f.close();
      rings.close();
    }
    const fds = await settledFdCount(pid);
    const rss = procStatus(pid).rss;

    // Class 1: 1000 backend channels that are O_PATH fds, each refused.
    const f = await session(sock, PF.BACKEND_REQ);
    for (let i = 0; i < 1000; i++) {
      const fd = openPath("/");
      try {
        assert.notEqual(await f.ack(R.SET_BACKEND_REQ_FD, new Uint8Array(0), [fd]), 0n);
      } finally {
        close(fd);
      }
    }
    f.close();
    await healthy("O_PATH backend channels", fds, rss);
    assert.ok(fdCount(pid) < fds + 10);

    // Class 2: a blocking call fd at its maximum, then memory replaced under traffic.
    const g = await session(sock, PF.STATUS);
    const rings = new NetRings({ num: 64 });
    try {
      await rings.start(g, { enable: true, status: true });
      const evil = rings.own(saturatedEventfd());
      await g.request(R.SET_VRING_CALL, u64(0), [evil]);
      assert.equal(fcntl(evil, F_GETFL) & O_NONBLOCK, O_NONBLOCK, "made non-blocking");
      for (let cycle = 0; cycle < 10; cycle++) {
        rings.send(frames(8));
        assert.equal(await rings.waitReceive(8, 2000), 8, `cycle ${cycle}: frames came back`);
        await rings.setMemTable(g);
      }
      await takeEventfd(evil);
    } finally {
      g.close();
      rings.close();
    }
    await healthy("saturated call fd", fds, rss);

    // Class 4: memory the frontend could shrink is refused; sealable memory is sealed.
    const h = await session(sock);
    const unsealable = new GuestRam(1 << 20, { sealable: false });
    const sealable = new GuestRam(1 << 20);
    try {
      assert.notEqual(
        await h.ack(R.SET_MEM_TABLE, memTable([unsealable.region()]), [unsealable.fd]),
        0n,
        "unsealable memory refused",
      );
      assert.equal(
        await h.ack(R.SET_MEM_TABLE, memTable([sealable.region()]), [sealable.fd]),
        0n,
      );
      assert.throws(
        () => ftruncate(sealable.fd, 0),
        (e: unknown) => e instanceof SysError && e.code === "EPERM",
        "the backend sealed it",
      );
    } finally {
      h.close();
      unsealable.close();
      sealable.close();
    }
    await healthy("shrinkable memory", fds, rss);
  } finally {
    child.kill("SIGTERM");
    await child.status;
    Deno.removeSync(dir, { recursive: true });
  }
});
