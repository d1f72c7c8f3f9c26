/**
 * The ifcvf driver on real kernel VFIO, without the hardware: boot a QEMU
 * guest with an emulated IOMMU and a virtio-net NIC behind it, bind the NIC
 * to vfio-pci, and run the SDK inside the guest (the host's Deno over 9p):
 * the ifcvf driver in generic mode drives the NIC through `/dev/vfio`, and
 * the SDK's TypeScript vhost-user frontend attaches to it as a VM would.
 *
 *   deno run -A examples/vfio_vm.ts [--frames N] [--infra] [--setup]
 *
 * The NIC's QEMU backend is a UDP socket pair on 127.0.0.1, so this program
 * sees the wire:
 *
 * - frames the frontend transmits leave through QEMU's device (DMA reads
 *   through the IOMMU) and must arrive here byte-identical;
 * - frames sent from here must land in the frontend's receive buffers (DMA
 *   writes), the guest program checking them and the MSI-X-driven call fd;
 * - after the round the guest program stops the device, checks the rings'
 *   state (GET_VRING_BASE) and that generic mode refuses to resume at a
 *   non-zero index instead of replaying old descriptors.
 *
 * `--infra` only proves the plumbing: VFIO bound, `/dev/vfio/N` present,
 * Deno started from the host root inside the guest.
 *
 * Exit status: 0 pass, 1 fail, 2 usage or missing host tools.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { firstDifference, identifyFrame, testFrame } from "../testing/guest/frames.ts";
import {
  GUEST_TOOLS,
  installHostTools,
  MissingToolsError,
  requireHostTools,
} from "../testing/guest/host_tools.ts";
import { QemuVm } from "../testing/guest/qemu.ts";
import { UdpPeer } from "../testing/guest/udp_peer.ts";
import { prepareVfioGuest, scratchDirFor, vfioGuestArgs } from "../testing/guest/vfio_guest.ts";

const HELP = `Usage: deno run -A examples/vfio_vm.ts [options]

Run the ifcvf driver (generic mode) on real kernel VFIO inside a QEMU guest
with an emulated Intel IOMMU; the SDK's TypeScript frontend exchanges frames
with this program through QEMU's virtio-net device.

Options:
  --frames <N>   frames each way per round, 1 to 128 (default 16; one round, then the
                 device is stopped and a resume at the saved index refused)
  --seed <N>     seed of the test frames (default: random)
  --infra        only check the plumbing: VFIO bound, Deno runs in the guest
  --cpus <N>     guest CPUs (default 2)
  --json         print the result as one JSON line at the end
  --verbose      echo the guest console
  --setup        install missing host packages with apt-get first
  --help         this text

Needs qemu-system-x86_64 and a static busybox:
  apt-get install qemu-system-x86 busybox-static
The guest kernel (Debian's linux-image-amd64) is fetched once with apt-get
download and cached in \${XDG_CACHE_HOME:-~/.cache}/vhost-mdev/guest.
`;

/** Phase timings and frame counts of a run. */
interface VfioResult {
  pass: boolean;
  mode: "infra" | "program";
  reasons: string[];
  framesToHost: number;
  framesToGuest: number;
  timings: Record<string, number>;
}

function usage(message: string): never {
  console.error(`error: ${message} (see --help)`);
  Deno.exit(2);
}

/** The repository root (this file is examples/vfio_vm.ts). */
function repoRoot(): string {
  return new URL("..", import.meta.url).pathname.replace(/\/$/, "");
}

async function main(): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: Deno.args,
      options: {
        frames: { type: "string", default: "16" },
        seed: { type: "string" },
        cpus: { type: "string", default: "2" },
        infra: { type: "boolean", default: false },
        json: { type: "boolean", default: false },
        verbose: { type: "boolean", default: false },
        setup: { type: "boolean", default: false },
        help: { type: "boolean", default: false },
      },
      strict: true,
      allowPositionals: false,
    });
  } catch (e) {
    usage((e as Error).message);
  }
  const flags = parsed.values;
  if (flags.help) {
    console.log(HELP);
    return 0;
  }
  const frames = Number(flags.frames);
  if (!Number.isInteger(frames) || frames < 1 || frames > 128) usage("--frames: 1 to 128");
  const cpus = Number(flags.cpus);
  if (!Number.isInteger(cpus) || cpus < 1 || cpus > 8) usage("--cpus: 1 to 8");
  const seed = flags.seed !== undefined ? Number(flags.seed) : Math.floor(Math.random() * 2 ** 31);
  if (!Number.isInteger(seed) || seed < 0 || seed >= 2 ** 32) usage("--seed: 0 to 2^32-1");
  const mode = flags.infra ? "infra" : "program";
  const log = (line: string) => console.log(line);
  const timings: Record<string, number> = {};
  const t0 = performance.now();
  let t = t0;
  const lap = (name: string) => {
    const now = performance.now();
    timings[name] = Math.round(now - t);
    t = now;
  };

  if (flags.setup) await installHostTools(GUEST_TOOLS, log);
  let tools: Map<string, string>;
  try {
    tools = await requireHostTools(GUEST_TOOLS);
  } catch (e) {
    if (e instanceof MissingToolsError) {
      console.error(`error: ${e.message}`);
      return 2;
    }
    throw e;
  }
  const guest = await prepareVfioGuest(tools.get("busybox")!, (l) => log(`image: ${l}`));
  lap("image_ms");
  log(`image: kernel ${guest.release}, initramfs ${guest.initrd}`);

  const root = repoRoot();
  const deno = Deno.execPath();
  const script = `${root}/testing/guest/vfio_guest_main.ts`;
  const scratch = await scratchDirFor([root, deno]);
  const peer = await UdpPeer.bind();
  const qemuPort = await UdpPeer.freePort();
  let vm: QemuVm | null = null;
  const onSignal = () => {
    vm?.close().finally(() => Deno.exit(130));
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  const reasons: string[] = [];
  let framesToHost = 0;
  let framesToGuest = 0;
  try {
    vm = QemuVm.launch({
      qemu: tools.get("qemu-system-x86_64"),
      args: vfioGuestArgs(guest, {
        mode,
        deno,
        cwd: root,
        script,
        frames,
        seed,
        hostPort: peer.port,
        qemuPort,
        memoryMiB: 2048,
        cpus,
        scratch,
        verboseKernel: flags.verbose,
      }),
      log,
      onConsoleLine: flags.verbose ? (l) => log(`  console| ${l}`) : undefined,
    });
    log(
      `guest: QEMU started (pid ${vm.pid}): q35 + intel-iommu, NIC on udp 127.0.0.1:${qemuPort} ` +
        `<-> 127.0.0.1:${peer.port}, seed ${seed}`,
    );
    const failed =
      /vm-init: (FAILED[^\n]*|no PCI[^\n]*|[^\n]*did not appear[^\n]*|[^\n]*no IOMMU group[^\n]*)/;
    const step = async (re: RegExp, timeoutMs: number, what: string) => {
      const m = await vm!.waitFor(new RegExp(`${re.source}|${failed.source}`), { timeoutMs, what });
      if (m[0].startsWith("vm-init: ") && failed.test(m[0]) && !re.test(m[0])) {
        throw new Error(`the guest failed: ${m[0]}`);
      }
      return m;
    };
    await step(/vm-init: userspace up/, 120_000, "the guest kernel to boot (generic kernel, TCG)");
    lap("boot_ms");
    await step(/vm-init: modules loaded/, 60_000, "vfio, vfio-pci, virtio-pci and 9p modules");
    lap("modules_ms");
    const bound = await step(
      /vm-init: vfio bound[^\n]*(?=\r?\n)/,
      30_000,
      "the NIC to bind to vfio-pci",
    );
    log(`guest: ${bound[0].replace("vm-init: ", "")}`);
    lap("vfio_bind_ms");
    await step(/vm-init: host root mounted/, 30_000, "the host root over 9p");
    lap("mount_ms");
    if (mode === "infra") {
      const up = await step(
        /vfio-guest: deno up[^\n]*(?=\r?\n)/,
        180_000,
        "Deno to start inside the guest",
      );
      lap("deno_start_ms");
      log(`guest: ${up[0]}`);
      await step(/vm-init: done/, 60_000, "the guest to finish");
    } else {
      await step(/vfio-guest: started[^\n]*(?=\r?\n)/, 180_000, "Deno to start the guest program");
      lap("deno_start_ms");
      await runRounds(vm, peer, qemuPort, frames, seed, reasons, log, timings, (n) => {
        framesToHost += n;
      }, (n) => {
        framesToGuest += n;
      });
      lap("rounds_ms");
    }
    await Promise.race([vm.exited, new Promise((r) => setTimeout(r, 10_000))]);
  } catch (e) {
    reasons.push((e as Error).message);
  } finally {
    Deno.removeSignalListener("SIGINT", onSignal);
    Deno.removeSignalListener("SIGTERM", onSignal);
    await vm?.close();
    await peer.close();
  }
  timings.total_ms = Math.round(performance.now() - t0);
  const result: VfioResult = {
    pass: reasons.length === 0,
    mode,
    reasons,
    framesToHost,
    framesToGuest,
    timings,
  };
  log("");
  log(
    `timing: ${
      Object.entries(timings).map(([k, v]) => `${k.replace(/_ms$/, "")} ${v} ms`).join(", ")
    }`,
  );
  if (mode === "program") log(`frames: ${framesToHost} guest->host, ${framesToGuest} host->guest`);
  const guestConsole = vm as QemuVm | null;
  if (
    !result.pass && guestConsole && !flags.verbose &&
    !reasons.some((r) => r.includes("--- guest console"))
  ) {
    log(
      `--- guest console (last lines) ---\n${guestConsole.consoleTail(30)}\n--- end of console ---`,
    );
  }
  log(result.pass ? "PASS" : `FAIL: ${reasons.join("\n")}`);
  if (flags.json) console.log(JSON.stringify(result));
  return result.pass ? 0 : 1;
}

/**
 * Follow the guest program's rounds: on `round R rx-ready` send this round's
 * frames to the guest; on `round R sent N` check that the N frames this
 * round's indices name arrived here byte-identical; end on the program's
 * `PASS`/`FAIL` line.
 */
async function runRounds(
  vm: QemuVm,
  peer: UdpPeer,
  qemuPort: number,
  frames: number,
  seed: number,
  reasons: string[],
  log: (line: string) => void,
  timings: Record<string, number>,
  countToHost: (n: number) => void,
  countToGuest: (n: number) => void,
): Promise<void> {
  // Each marker must end with its newline: the console may hold half a line.
  const marker =
    /vfio-guest: (round (\d+) (rx-ready|sent (\d+)|received (\d+) ok)|device running[^\n]*|stopped; [^\n]*|PASS[^\n]*|FAIL[^\n]*)(?=\r?\n)/;
  let checked = 0; // frames of peer.received already verified
  let started = performance.now();
  while (true) {
    const m = await vm.waitFor(marker, {
      timeoutMs: 120_000,
      what: "the guest program's next step",
    });
    const what = m[1];
    if (what.startsWith("stopped; ")) {
      log(`guest: ${what}`);
      continue;
    }
    if (what.startsWith("device running")) {
      timings.device_start_ms = Math.round(performance.now() - started);
      log(`guest: ${what}`);
      continue;
    }
    if (what.startsWith("PASS")) {
      log(`guest: ${what}`);
      // A device that replayed old descriptors after the restart would send extra frames.
      await new Promise((r) => setTimeout(r, 500));
      if (peer.received.length !== checked) {
        reasons.push(
          `${
            peer.received.length - checked
          } frames reached the host beyond the ${checked} the guest sent`,
        );
      }
      return;
    }
    if (what.startsWith("FAIL")) {
      reasons.push(`guest program: ${what}`);
      return;
    }
    const round = Number(m[2]);
    const base = round * frames;
    if (m[3] === "rx-ready") {
      started = performance.now();
      for (let i = 0; i < frames; i++) {
        await peer.send(testFrame("to-guest", base + i, seed), qemuPort);
      }
      countToGuest(frames);
      log(`host: round ${round}: sent ${frames} frames to the guest's NIC`);
    } else if (m[4] !== undefined) {
      const n = Number(m[4]);
      if (!(await peer.waitForCount(checked + n, 10_000))) {
        reasons.push(
          `round ${round}: the guest sent ${n} frames, ${
            peer.received.length - checked
          } reached the host`,
        );
        return;
      }
      const got = peer.received.slice(checked, checked + n);
      const arrived = peer.received.length - checked;
      checked += n;
      for (let i = 0; i < n; i++) {
        const id = identifyFrame(got[i]);
        const expected = testFrame("to-host", base + i, seed);
        const diff = firstDifference(got[i], expected);
        if (diff >= 0) {
          const replay = id !== null && id.direction === "to-host" && id.seed === seed &&
              id.index < base
            ? `: that is frame ${id.index % frames} of round ${Math.floor(id.index / frames)}, ` +
              "sent again: the device replayed descriptors it had completed, so its ring state " +
              "did not survive the stop/start"
            : "";
          reasons.push(
            `round ${round}: frame ${i} differs at byte ${diff} (got ${got[i].length} bytes` +
              `${id ? `, test frame #${id.index} of seed ${id.seed}` : ", not a test frame"}; ` +
              `expected ${expected.length} bytes, test frame #${base + i}; ${arrived} frames ` +
              `arrived this round)${replay}`,
          );
          return;
        }
      }
      countToHost(n);
      timings[`round${round}_ms`] = Math.round(performance.now() - started);
      log(`host: round ${round}: ${n} frames from the guest arrived byte-identical`);
    } else {
      log(`guest: round ${round}: received ${m[5]} frames, checked in the frontend's buffers`);
    }
  }
}

if (import.meta.main) {
  try {
    Deno.exit(await main());
  } catch (e) {
    console.error(`error: ${e instanceof Error ? e.message : e}`);
    Deno.exit(1);
  }
}
