// A hostile frontend in another process cannot take down or degrade a backend
// that serves several devices in one process (issue 9, classes 1 to 9). Each
// step attacks device A of one `multi_serve.ts` process as an attacker would,
// then asserts: the process is alive, a fresh connection to A (once the
// attacker's session is gone) and to the idle device P gets GET_FEATURES
// answered within 1 s, the process's fd count is back to its baseline, and its
// RSS stays within RSS_BOUND of its baseline. Meanwhile device B carries DPDK
// testpmd traffic (io forwarding against loopback), which must lose no frame
// and never stall for 100 ms. Device C has a driver with `notify`, so its
// kicks go through the SDK's kick relay to the main thread.

import assert from "node:assert/strict";
import { VirtioStatus, VIRTQ_DESC_F_WRITE } from "@vhost-mdev/sdk";
import { FrontendRequest as R, ProtocolFeatureBit as PF } from "@vhost-mdev/sdk/vhost-user";
import {
  close,
  eventfd,
  F_GETFL,
  fcntl,
  ftruncate,
  memfdCreate,
  pollAsync,
  POLLHUP,
  POLLOUT,
  POLLRDHUP,
  socketPair,
  SysError,
} from "@vhost-mdev/sdk/sys";
import { Testpmd } from "@vhost-mdev/testing";
import { requirePeer } from "../support/peers.ts";
import {
  BackendProcess,
  fdKinds,
  fdKindsDiff,
  frames,
  getFeaturesLatency,
  GuestRam,
  memTable,
  MRG_RXBUF,
  NetRings,
  O_NONBLOCK,
  openDevZero,
  openPath,
  pipe,
  Prober,
  PROTOCOL_FEATURES_BIT,
  protocolBits,
  RawFrontend,
  readableWithin,
  readU64,
  requestName,
  saturatedEventfd,
  settledFdCount,
  singleRegion,
  takeEventfd,
  u64,
  VERSION_1,
  vringState,
  type WireRegion,
} from "../support/hostile_frontend.ts";

const testpmd = await requirePeer("dpdk-testpmd");

/** How far the backend's RSS may rise above its baseline after any attack. */
const RSS_BOUND = 128 * 1024 * 1024;
/** How often the backend samples its counters for stalls. */
const SAMPLE_MS = 5;
const GiB = 2 ** 30;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const text = (e: unknown) => e instanceof Error ? e.message : String(e);
const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(0)} MiB`;

/** The backend under attack and what it looked like before. */
interface Target {
  backend: BackendProcess;
  sock: { A: string; B: string; P: string; C: string };
  baseFds: number;
  baseKinds: Map<string, number>;
  baseRss: number;
}

/** A session on `path` with REPLY_ACK (and more protocol features) and VERSION_1 acked. */
async function session(path: string, ...more: number[]): Promise<RawFrontend> {
  const f = await RawFrontend.connect(path);
  try {
    const inForce = await f.handshake({
      protocol: protocolBits(PF.REPLY_ACK, ...more),
      features: VERSION_1 | PROTOCOL_FEATURES_BIT,
    });
    assert.ok(f.replyAck, `REPLY_ACK negotiated (protocol features 0x${inForce.toString(16)})`);
    return f;
  } catch (e) {
    f.close();
    throw e;
  }
}

/** A loopback pair up and running on `path` (REPLY_ACK, STATUS, rings enabled, DRIVER_OK). */
async function runningPair(path: string, num = 64): Promise<{ f: RawFrontend; rings: NetRings }> {
  const f = await session(path, PF.STATUS);
  const rings = new NetRings({ num });
  try {
    await rings.start(f, { enable: true, status: true });
    return { f, rings };
  } catch (e) {
    f.close();
    rings.close();
    throw e;
  }
}

/** Warm every device once: a Worker's first start creates fds that live for the process. */
async function warmUp(t: Target): Promise<void> {
  for (const path of [t.sock.A, t.sock.C]) {
    const { f, rings } = await runningPair(path);
    try {
      rings.send(frames(8));
      await rings.waitReceive(path === t.sock.A ? 8 : 0, 1000);
    } finally {
      f.close();
      rings.close();
    }
  }
  await getFeaturesLatency(t.sock.P, 5000);
  for (const d of ["A", "C", "P"]) await t.backend.waitDetached(d);
}

/** After an attack: alive, serving, no fd left behind, RSS bounded. */
async function assertHealthy(t: Target): Promise<void> {
  const b = t.backend;
  assert.ok(b.alive(), `the backend process ${b.exitDescription()}; stderr:\n${b.stderrTail()}`);
  assert.ok(await b.waitDetached("A", 5000), "the attacker's session on A never detached");
  await b.waitDetached("P");
  for (const [name, path] of [["A", t.sock.A], ["P", t.sock.P]]) {
    const ms = await getFeaturesLatency(path, 1000);
    assert.ok(ms < 1000, `GET_FEATURES on ${name} took ${ms.toFixed(0)} ms`);
  }
  for (const d of ["A", "P", "C"]) await b.waitDetached(d);
  const fds = await settledFdCount(b.pid, t.baseFds);
  assert.equal(
    fds,
    t.baseFds,
    `backend fds ${fds}, baseline ${t.baseFds} (${fdKindsDiff(t.baseKinds, fdKinds(b.pid))})`,
  );
  const rss = b.status().rss;
  assert.ok(
    rss <= t.baseRss + RSS_BOUND,
    `backend RSS ${mib(rss)}: more than its baseline ${mib(t.baseRss)} + ${mib(RSS_BOUND)}`,
  );
}

Deno.test({
  name: "a hostile frontend in another process cannot take down a multi-device backend",
  async fn(t) {
    const dir = Deno.makeTempDirSync({ prefix: "vhost-hostile-" });
    const sock = {
      A: `${dir}/A.sock`,
      B: `${dir}/B.sock`,
      P: `${dir}/P.sock`,
      C: `${dir}/C.sock`,
    };
    const args = [
      "--socket",
      sock.A,
      "--socket",
      sock.P,
      // testpmd's --no-huge memfd cannot be sealed: B is the operator's opt-in.
      "--trusted-socket",
      sock.B,
      "--relay-socket",
      sock.C,
      "--mode",
      "loopback",
      "--sample-ms",
      String(SAMPLE_MS),
    ];
    let target: Target | null = null;
    /** testpmd on B (set by `start`). */
    const peer: { tp: Testpmd | null } = { tp: null };
    /** Why B's traffic cannot be judged (the process died under it), if so. */
    const deaths: string[] = [];
    const started: BackendProcess[] = [];

    /**
     * Start the backend; with `traffic`, testpmd too. Then warm every device
     * (while B carries traffic: Workers running side by side keep runtime
     * fds of their own) and take the baseline.
     */
    const start = async (traffic: boolean): Promise<Target> => {
      const backend = await BackendProcess.start(args);
      started.push(backend);
      const tg: Target = { backend, sock, baseFds: 0, baseKinds: new Map(), baseRss: 0 };
      if (traffic && testpmd !== null) {
        const tp = peer.tp = await Testpmd.start({
          binary: testpmd,
          vdevs: `net_virtio_user0,path=${sock.B},queues=1`,
          forwardMode: "io",
          cpu: 1,
        });
        await tp.waitForLinkUp(0, 15000);
        await tp.startForwardingTxFirst();
      }
      await warmUp(tg);
      tg.baseFds = await settledFdCount(backend.pid);
      tg.baseKinds = fdKinds(backend.pid);
      tg.baseRss = backend.status().rss;
      // B's stalls count from here: while the attacks run.
      await backend.resetSamples();
      return tg;
    };
    /** The live backend; a new one (warmed, new baseline) when an attack killed the last. */
    const live = async (): Promise<Target> => {
      if (target && target.backend.alive()) return target;
      if (target) {
        deaths.push(`${target.backend.exitDescription()}; stderr:\n${target.backend.stderrTail()}`);
        await target.backend.stop();
      }
      target = await start(false);
      return target;
    };

    /** One class: the attack, then the health checks, both reported. */
    const attack = (name: string, fn: (tg: Target) => Promise<void>) =>
      t.step(name, async () => {
        const tg = await live();
        const failures: string[] = [];
        try {
          await fn(tg);
        } catch (e) {
          failures.push(text(e));
        }
        try {
          await assertHealthy(tg);
        } catch (e) {
          failures.push(`afterwards: ${text(e)}`);
        }
        if (failures.length > 0) throw new Error(failures.join("\n"));
      });

    try {
      target = await start(true);

      await attack("class 1: SET_BACKEND_REQ_FD with an O_PATH fd leaks nothing", async (tg) => {
        const N = 2000;
        const pid = tg.backend.pid;
        // With REPLY_ACK: one session, every message refused, the session goes on.
        const f = await session(tg.sock.A, PF.BACKEND_REQ);
        let accepted = 0;
        try {
          for (let i = 0; i < N; i++) {
            const fd = openPath("/");
            try {
              if (await f.ack(R.SET_BACKEND_REQ_FD, new Uint8Array(0), [fd]) === 0n) accepted++;
            } finally {
              close(fd);
            }
          }
        } finally {
          f.close();
        }
        const failures: string[] = [];
        if (accepted > 0) failures.push(`${accepted} of ${N} O_PATH backend channels were acked 0`);
        await tg.backend.waitDetached("A");
        const withAck = await settledFdCount(pid, tg.baseFds);
        if (withAck !== tg.baseFds) {
          failures.push(`${withAck - tg.baseFds} fds more after ${N} refusals with REPLY_ACK`);
        }

        // Without REPLY_ACK: the refusal fails the session; connect again each time.
        let landed = 0, attempts = 0;
        const deadline = Date.now() + 20000;
        while (landed < N && Date.now() < deadline) {
          attempts++;
          const g = await RawFrontend.connect(tg.sock.A);
          try {
            // An answer shows the session is attached (a refused one is closed unread).
            if (await g.query(R.GET_FEATURES).then(() => false, () => true)) {
              await sleep(1);
              continue;
            }
            const fd = openPath("/");
            try {
              await g.send(R.SET_BACKEND_REQ_FD, new Uint8Array(0), [fd]);
            } finally {
              close(fd);
            }
            landed++;
            // The refusal ends the session: the backend closes the connection.
            await g.closedByPeer(2000);
          } finally {
            g.close();
          }
        }
        if (landed < N) {
          failures.push(`only ${landed} of ${N} sessions took an O_PATH fd (${attempts} tries)`);
        }
        const without = await settledFdCount(pid, tg.baseFds);
        if (without !== withAck) {
          failures.push(`${without - withAck} fds more after ${landed} sessions without REPLY_ACK`);
        }
        assert.deepEqual(failures, [], failures.join("; "));
      });

      await attack(
        "class 2: kick/call/err fds must be eventfds; a saturated blocking call fd harms nothing",
        async (tg) => {
          const failures: string[] = [];
          // (a) Not eventfds: refused with a non-zero ack, for each of KICK, CALL and ERR.
          const f = await session(tg.sock.A);
          const [pr, pw] = pipe();
          const [s0, s1] = socketPair();
          const memfd = memfdCreate("not-an-eventfd");
          const kinds: [string, number][] = [
            ["pipe", pr],
            ["/dev/zero", openDevZero()],
            ["memfd", memfd],
            ["socket", s0],
            ["O_PATH", openPath("/")],
          ];
          try {
            for (const req of [R.SET_VRING_KICK, R.SET_VRING_CALL, R.SET_VRING_ERR]) {
              for (const [kind, fd] of kinds) {
                const a = await f.ack(req, u64(0), [fd]);
                if (a === 0n) failures.push(`${requestName(req)} with a ${kind} fd was acked 0`);
              }
            }
          } finally {
            f.close();
            for (const fd of [pw, s1, ...kinds.map(([, fd]) => fd)]) close(fd);
          }
          assert.ok(await tg.backend.waitDetached("A"), "the session detached");

          // (b) A blocking eventfd at its maximum as the receive ring's call fd.
          const { f: g, rings } = await runningPair(tg.sock.A);
          try {
            rings.send(frames(16));
            assert.equal(await rings.waitReceive(16), 16, "frames loop back before the attack");
            const evil = rings.own(saturatedEventfd());
            await g.request(R.SET_VRING_CALL, u64(0), [evil]);
            if ((fcntl(evil, F_GETFL) & O_NONBLOCK) === 0) {
              failures.push("the backend left the call fd blocking (no O_NONBLOCK on it)");
            }
            rings.send(frames(32));
            const got = await rings.waitReceive(32, 2000);
            if (got !== 32) failures.push(`${got} of 32 frames came back with a saturated call fd`);
            let threadsWarm = 0;
            for (let cycle = 1; cycle <= 20; cycle++) {
              const t0 = performance.now();
              await rings.setMemTable(g);
              const ms = performance.now() - t0;
              if (ms > 1000) {
                failures.push(`stop/start cycle ${cycle}: SET_MEM_TABLE took ${ms.toFixed(0)} ms`);
                break;
              }
              rings.send(frames(8));
              const back = await rings.waitReceive(8, 2000);
              if (back !== 8) {
                failures.push(`stop/start cycle ${cycle}: ${back} of 8 frames came back`);
                break;
              }
              if (cycle === 2) threadsWarm = tg.backend.status().threads;
              if (cycle === 20) {
                const threads = tg.backend.status().threads;
                if (threads > threadsWarm + 2) {
                  failures.push(`threads grew from ${threadsWarm} to ${threads} over 18 cycles`);
                }
              }
            }
            // The attacker empties its eventfd: a Worker still blocked in write() wakes now,
            // after its memory was replaced.
            await takeEventfd(evil);
            await sleep(300);
          } finally {
            g.close();
            rings.close();
          }
          assert.deepEqual(failures, [], failures.join("; "));
        },
      );

      await attack(
        "class 3: ADD_MEM_REG maps pages, not offsets; 32 slots; no same region with another file",
        async (tg) => {
          const f = await session(tg.sock.A, PF.CONFIGURE_MEM_SLOTS);
          const fds: number[] = [];
          const sparse = (): number => {
            const fd = memfdCreate("sparse", { allowSealing: true });
            fds.push(fd);
            ftruncate(fd, 2 ** 45 + 2 ** 20);
            return fd;
          };
          const region = (i: number): WireRegion => ({
            gpa: 2 ** 32 + i * 0x10000,
            size: 4096,
            uva: 0x7000_0000_0000 + i * 0x10000,
            mmapOffset: 2 ** 45 + i * 4096,
          });
          const failures: string[] = [];
          try {
            assert.equal(await f.queryU64(R.GET_MAX_MEM_SLOTS), 32n, "GET_MAX_MEM_SLOTS");
            const file = sparse();
            const t0 = performance.now();
            for (let i = 0; i < 32; i++) {
              const before = tg.backend.status().vmSize;
              const a = await f.ack(R.ADD_MEM_REG, singleRegion(region(i)), [file]);
              const grew = tg.backend.status().vmSize - before;
              if (a !== 0n) failures.push(`region ${i} refused (ack ${a})`);
              if (grew >= GiB) {
                failures.push(`region ${i}: VmSize grew ${(grew / GiB).toFixed(0)} GiB`);
              }
              if (failures.length > 4) break;
            }
            const ms = performance.now() - t0;
            if (ms >= 2000) failures.push(`32 ADD_MEM_REG took ${ms.toFixed(0)} ms`);
            const a33 = await f.ack(R.ADD_MEM_REG, singleRegion(region(32)), [file]);
            if (a33 === 0n) failures.push("a 33rd region was acked 0 (32 slots)");
            const again = await f.ack(R.ADD_MEM_REG, singleRegion(region(0)), [sparse()]);
            if (again === 0n) failures.push("region 0 again with another memfd was acked 0");
          } catch (e) {
            failures.push(`${text(e)} (backend ${tg.backend.exitDescription()})`);
          } finally {
            f.close();
            for (const fd of fds) close(fd);
          }
          assert.deepEqual(failures, [], failures.join("; "));
        },
      );

      await attack(
        "class 4: guest memory must be sealed against shrinking; sealable memfds are sealed",
        async (tg) => {
          const f = await session(tg.sock.A);
          const unsealable = new GuestRam(1 << 20, { sealable: false });
          const sealable = new GuestRam(1 << 20, { sealable: true });
          const from = tg.backend.events.length;
          const failures: string[] = [];
          try {
            const a1 = await f.ack(R.SET_MEM_TABLE, memTable([unsealable.region()]), [
              unsealable.fd,
            ]);
            if (a1 === 0n) failures.push("a memfd that cannot be sealed was acked 0");
            const said = await tg.backend.waitEvent("A", /F_SEAL_SHRINK/, 2000, from);
            if (said === null) failures.push("no event of A names F_SEAL_SHRINK");
            const a2 = await f.ack(R.SET_MEM_TABLE, memTable([sealable.region()]), [sealable.fd]);
            if (a2 !== 0n) failures.push(`a sealable memfd was refused (ack ${a2})`);
            let shrink = "succeeded";
            try {
              ftruncate(sealable.fd, 0);
            } catch (e) {
              shrink = e instanceof SysError ? e.code : text(e);
            }
            if (shrink !== "EPERM") failures.push(`ftruncate(0) of the accepted memfd ${shrink}`);
          } finally {
            f.close();
            unsealable.close();
            sealable.close();
          }
          assert.deepEqual(failures, [], failures.join("; "));
        },
      );

      await attack(
        "class 5: a kick flood does not reach the control plane; /dev/zero is no kick fd",
        async (tg) => {
          const failures: string[] = [];
          const zero = openDevZero();
          // /dev/zero as kick fd: refused by a sim device (A) and a relaying one (C).
          for (const [name, path] of [["A", tg.sock.A], ["C", tg.sock.C]]) {
            const f = await session(path);
            try {
              const a = await f.ack(R.SET_VRING_KICK, u64(1), [zero]);
              if (a === 0n) failures.push(`${name} acked /dev/zero as kick fd`);
            } finally {
              f.close();
            }
            await tg.backend.waitDetached(name);
          }
          // Both devices running; a Worker of the attacker writes A's transmit kick fd and
          // C's receive kick fd in a tight loop for 3 s, while P is probed every 120 ms.
          const a = await runningPair(tg.sock.A);
          const c = await runningPair(tg.sock.C);
          const probe = await Prober.start(tg.sock.P, 120);
          let rssMax = 0;
          const sample = setInterval(() => {
            if (tg.backend.alive()) rssMax = Math.max(rssMax, tg.backend.status().rss);
          }, 100);
          try {
            // Were /dev/zero accepted (it must not be), C's running relay would watch it now.
            await c.f.ack(R.SET_VRING_KICK, u64(1), [zero]);
            const flood = new Worker(
              new URL("../support/kick_flood_worker.ts", import.meta.url).href,
              { type: "module" },
            );
            const writes = await new Promise<number>((resolve) => {
              flood.onmessage = (e) => resolve(e.data.writes);
              flood.postMessage({ fds: [a.rings.kicks[1], c.rings.kicks[0]], ms: 3000 });
            });
            flood.terminate();
            if (writes < 1000) failures.push(`the flood made only ${writes} writes`);
          } finally {
            clearInterval(sample);
            await probe.stop();
            for (const p of [a, c]) {
              p.f.close();
              p.rings.close();
            }
            close(zero);
          }
          if (probe.error !== null) failures.push(`probe of P: ${probe.error}`);
          if (probe.latencies.length < 10 || probe.worst >= 1000) {
            failures.push(
              `GET_FEATURES on P during the flood: ${probe.latencies.length} probes, worst ` +
                `${probe.worst.toFixed(0)} ms`,
            );
          }
          if (rssMax > tg.baseRss + RSS_BOUND) {
            failures.push(
              `RSS reached ${mib(rssMax)} during the flood (baseline ${mib(tg.baseRss)})`,
            );
          }
          assert.deepEqual(failures, [], failures.join("; "));
        },
      );

      await attack(
        "class 6: a guest re-posting one receive head gets a device error, not a dead ring",
        async (tg) => {
          const f = await session(tg.sock.A, PF.STATUS);
          const rings = new NetRings({ num: 8 });
          const errs = [0, 1].map(() => rings.own(eventfd(0, { nonBlocking: true })));
          const S = VirtioStatus;
          const failures: string[] = [];
          try {
            assert.ok((f.offered & MRG_RXBUF) !== 0n, "the sim offers MRG_RXBUF");
            await f.request(R.SET_FEATURES, u64(VERSION_1 | MRG_RXBUF | PROTOCOL_FEATURES_BIT));
            await f.request(R.SET_STATUS, u64(S.ACKNOWLEDGE | S.DRIVER | S.FEATURES_OK));
            await rings.setMemTable(f);
            for (const q of [0, 1]) {
              await rings.setupRing(f, q);
              await f.request(R.SET_VRING_ERR, u64(q), [errs[q]]);
              await f.request(R.SET_VRING_ENABLE, vringState(q, 1));
            }
            await f.request(
              R.SET_STATUS,
              u64(S.ACKNOWLEDGE | S.DRIVER | S.FEATURES_OK | S.DRIVER_OK),
            );
            // Receive descriptor 0: room for the 12-byte header only; posted 8 times.
            rings.rx.writeDescriptor(0, rings.rxBufGpa, 12, VIRTQ_DESC_F_WRITE, 0);
            const repost = () => {
              for (let i = 0; i < rings.num; i++) rings.rx.addRaw(0, 0);
              rings.rx.publish();
              rings.kick(0);
            };
            repost();
            // A 200-byte frame needs 18 such buffers: more than the ring holds.
            rings.send(frames(1, 200));
            for (let round = 0; round < 6; round++) {
              await sleep(30);
              repost();
            }
            const status = Number(await f.queryU64(R.GET_STATUS));
            if ((status & S.NEEDS_RESET) === 0) {
              failures.push(`GET_STATUS 0x${status.toString(16)} lacks NEEDS_RESET (0x40)`);
            }
            if (!await readableWithin(errs[0], 2000)) {
              failures.push("ring 0's err fd was not written");
            }
          } finally {
            f.close();
            rings.close();
          }
          if (failures.length > 0) {
            const said = tg.backend.eventsOf("A").slice(-3).map((e) => `${e.type}: ${e.message}`);
            failures.push(`A's last events: ${said.join(" | ")}`);
          }
          assert.deepEqual(failures, [], failures.join("; "));
        },
      );

      await attack(
        "class 7: without protocol features, rings set up again after GET_VRING_BASE restart on a kick",
        async (tg) => {
          const f = await RawFrontend.connect(tg.sock.A);
          const rings = new NetRings({ num: 64 });
          try {
            await f.handshake({ features: VERSION_1 });
            assert.equal(f.replyAck, false);
            await rings.setMemTable(f);
            await rings.setupRing(f, 0);
            await rings.setupRing(f, 1);
            rings.postRx(rings.num);
            rings.kick(0);
            await f.barrier();
            rings.send(frames(8));
            assert.equal(await rings.waitReceive(8), 8, "frames loop back before GET_VRING_BASE");
            const bases = [];
            for (const q of [0, 1]) {
              const r = await f.query(R.GET_VRING_BASE, vringState(q, 0));
              bases.push(Number(readU64(r) >> 32n));
            }
            assert.deepEqual(bases, [8, 8], "GET_VRING_BASE: next available index of each ring");
            for (const q of [0, 1]) await rings.setupRing(f, q, bases[q], false);
            await f.barrier();
            rings.kick(0);
            rings.send(frames(8));
            const back = await rings.waitReceive(8, 2000);
            assert.equal(
              back,
              8,
              `${back} of 8 frames came back after the rings were set up again`,
            );
          } finally {
            f.close();
            rings.close();
          }
        },
      );

      await attack(
        "class 8: a frontend that never reads cannot block the event loop",
        async (tg) => {
          const failures: string[] = [];
          const probe = await Prober.start(tg.sock.P, 20);
          try {
            // Twice: A's frontend sends GET_FEATURES as fast as its socket takes them and
            // never reads, so the replies fill the backend's send buffer.
            for (let round = 1; round <= 2; round++) {
              const f = await RawFrontend.connect(tg.sock.A);
              let sent = 0, hungUp = false;
              const deadline = Date.now() + 10000;
              try {
                while (!hungUp && Date.now() < deadline) {
                  while (sent < 1_000_000 && f.trySend(R.GET_FEATURES)) sent++;
                  const [rev] = await pollAsync([{ fd: f.fd, events: POLLOUT | POLLRDHUP }], 50);
                  hungUp = (rev & POLLHUP) !== 0;
                }
              } catch (e) {
                // EPIPE/ECONNRESET: the backend closed the connection.
                hungUp = e instanceof SysError;
              } finally {
                f.close();
              }
              if (!hungUp) failures.push(`round ${round}: not closed by the backend within 10 s`);
              await tg.backend.waitDetached("A");
            }
          } finally {
            await probe.stop();
          }
          if (probe.error !== null) failures.push(`probe of P: ${probe.error}`);
          // A round trip takes milliseconds; 500 ms separates that from a 1 s blocking send.
          if (probe.worst >= 500) {
            failures.push(
              `GET_FEATURES on P while A's frontend did not read: worst ${
                probe.worst.toFixed(0)
              } ms of ${probe.latencies.length} probes`,
            );
          }
          assert.deepEqual(failures, [], failures.join("; "));
        },
      );

      await attack(
        "class 9: a frontend that connects again right after closing is served",
        async (tg) => {
          const from = tg.backend.events.length;
          let refused = 0, closedAt = -1;
          const gaps: number[] = [];
          let previous: NetRings | null = null;
          try {
            // 51 connections, each but the first made right after the last one closed.
            for (let i = 0; i <= 50; i++) {
              const f = await RawFrontend.connect(tg.sock.A);
              if (closedAt >= 0) gaps.push(performance.now() - closedAt);
              previous?.close();
              previous = null;
              try {
                await f.handshake({
                  protocol: protocolBits(PF.REPLY_ACK, PF.STATUS),
                  features: VERSION_1 | PROTOCOL_FEATURES_BIT,
                });
              } catch (e) {
                // Refused: closed before the reply, or before a later send (EPIPE).
                if (!/closed the connection|EPIPE|ECONNRESET/.test(text(e))) throw e;
                refused++;
                f.close();
                closedAt = performance.now();
                continue;
              }
              // Like a restarting QEMU: rings up and running, then gone again.
              previous = new NetRings({ num: 64 });
              try {
                await previous.start(f, { enable: true, status: true });
              } finally {
                f.close();
                closedAt = performance.now();
              }
            }
          } finally {
            previous?.close();
          }
          const inUse = tg.backend.events.slice(from).filter((e) =>
            e.device === "A" && e.type === "refused"
          );
          // The attacker did what it says: connected again within 1 ms of closing (median).
          gaps.sort((x, y) => x - y);
          const median = gaps[gaps.length >> 1];
          assert.ok(median < 1, `reconnected ${median.toFixed(3)} ms after the close (median)`);
          assert.equal(
            refused,
            0,
            `${refused} of 50 reconnections refused: ${inUse.slice(0, 1).map((e) => e.message)}`,
          );
          assert.equal(inUse.length, 0);
        },
      );

      await t.step({
        name: "two devices: B carried testpmd traffic with no loss and no stall of 100 ms",
        ignore: testpmd === null,
        async fn() {
          const tp = peer.tp;
          assert.ok(tp !== null && target !== null);
          assert.deepEqual(deaths, [], `the backend died under B's traffic: ${deaths.join("\n")}`);
          await tp.stopForwarding();
          const during = await target.backend.report();
          await tp.command("set fwd rxonly");
          await tp.startForwarding();
          await sleep(500);
          await tp.stopForwarding();
          const port = await tp.portStats(0);
          const after = (await target.backend.report()).B;
          assert.ok(port.txPackets > 1000, `frames circled (${port.txPackets} sent)`);
          assert.equal(port.rxPackets, port.txPackets, "testpmd received every frame it sent");
          assert.equal(after.queues[1].packets, port.txPackets, "B took every frame");
          assert.equal(after.queues[0].packets, port.rxPackets, "B delivered every frame");
          assert.equal(after.queues[0].drops + after.queues[0].errors, 0);
          console.log(
            `B: ${port.txPackets} frames, longest stall ${during.B.maxStallMs} ms, longest ` +
              `sample gap ${during.B.maxSampleGapMs} ms`,
          );
          assert.ok(
            during.B.maxStallMs < 100,
            `B stalled for ${during.B.maxStallMs} ms (longest gap between samples ` +
              `${during.B.maxSampleGapMs} ms)`,
          );
        },
      });
    } finally {
      await peer.tp?.close();
      for (const b of started) await b.stop();
      Deno.removeSync(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "class 4: a backend started with --allow-unsealed-memory accepts unsealed memory",
  async fn() {
    const dir = Deno.makeTempDirSync({ prefix: "vhost-unsealed-" });
    const path = `${dir}/U.sock`;
    const backend = await BackendProcess.start(["--socket", path, "--allow-unsealed-memory"]);
    const ram = new GuestRam(1 << 20, { sealable: false });
    try {
      const f = await session(path);
      try {
        // The operator's opt-in: accepted, and this test does not shrink it (that would kill it).
        const a = await f.ack(R.SET_MEM_TABLE, memTable([ram.region()]), [ram.fd]);
        assert.equal(a, 0n, "an unsealed memfd is accepted with --allow-unsealed-memory");
      } finally {
        f.close();
      }
      assert.ok(backend.alive());
      assert.ok(await getFeaturesLatency(path, 1000) < 1000);
    } finally {
      ram.close();
      await backend.stop();
      Deno.removeSync(dir, { recursive: true });
    }
  },
});
