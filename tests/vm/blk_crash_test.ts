// Crash-safe reconnect of a vhost-user-blk backend with inflight tracking
// (INFLIGHT_SHMFD): a Linux guest under QEMU writes a stream of 64 KiB
// O_DIRECT writes to its disk while the host kills the backend process with
// SIGKILL in the middle and starts it again on the same socket and file.
// QEMU (`reconnect=1`) reconnects and hands the inflight region back; the
// new backend resubmits the write that was in flight; the guest sees no I/O
// error, and what it wrote, what it reads back and what the host finds in
// the backing file agree.
//
// The backend is the blk device with each write slowed down (so the kill
// lands while a write is in flight). The negative check runs the same
// scenario against a backend that acknowledges resubmitted writes without
// doing them: the sums must then disagree, which shows the check sees a
// lost write. (A backend without INFLIGHT_SHMFD is not a failing case for
// this device: its rings complete in order, and QEMU, finding the backend
// gone, restarts the ring at used.idx, which redoes the same requests.)

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { prepareGuestKernel } from "../../testing/guest/guest_kernel.ts";
import { GUEST_TOOLS, requireHostTools } from "../../testing/guest/host_tools.ts";
import { buildInitramfs, initScript } from "../../testing/guest/initramfs.ts";
import { kernelBootArgs, QemuVm } from "../../testing/guest/qemu.ts";
import { sharedMemoryArgs } from "../../testing/guest/vhost_user_nic.ts";
import { skipGuestTest } from "./example_process.ts";

const ROOT = new URL("../..", import.meta.url).pathname;
const CHUNKS = 32; // 64 KiB writes: 2 MiB
const OFFSET_CHUNKS = 16; // from 1 MiB into the disk
const WRITE_DELAY_MS = 250;

/** A backend process: `deno task serve` with the crash test's blk device. */
class Backend {
  readonly lines: string[] = [];
  readonly #child: Deno.ChildProcess;
  readonly #done: Promise<unknown>;
  #ready!: () => void;
  readonly ready: Promise<void>;

  constructor(file: string, socket: string, extra: string[]) {
    this.ready = new Promise((resolve) => this.#ready = resolve);
    this.#child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "cli/serve.ts",
        "--driver",
        "./tests/vm/crash_blk_driver.ts",
        "--file",
        file,
        "--socket",
        socket,
        "--write-delay-ms",
        String(WRITE_DELAY_MS),
        ...extra,
      ],
      cwd: ROOT,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).spawn();
    this.#done = Promise.all([this.#pump(this.#child.stdout), this.#pump(this.#child.stderr)]);
  }

  async #pump(stream: ReadableStream<Uint8Array>): Promise<void> {
    let partial = "";
    for await (const text of stream.pipeThrough(new TextDecoderStream())) {
      const parts = (partial + text).split("\n");
      partial = parts.pop() ?? "";
      for (const l of parts) {
        this.lines.push(l);
        if (/^ready:/.test(l)) this.#ready();
      }
    }
  }

  /** SIGKILL, and wait until it is gone. */
  async kill(): Promise<void> {
    try {
      this.#child.kill("SIGKILL");
    } catch {
      // already gone
    }
    await this.#child.status;
    await this.#done;
  }
}

async function sha256(path: string, offset: number, length: number): Promise<string> {
  const bytes = (await Deno.readFile(path)).subarray(offset, offset + length);
  return createHash("sha256").update(bytes).digest("hex");
}

interface CrashRun {
  rc: number;
  ioErrors: number;
  written: string;
  readBack: string;
  hostFile: string;
  first: string[];
  second: string[];
}

/** Boot the guest, kill the backend mid-stream, restart it, collect the sums. */
async function crashRun(extra: string[]): Promise<CrashRun> {
  const log = (l: string) => console.log(`  ${l}`);
  const tools = await requireHostTools(GUEST_TOOLS);
  const kernel = await prepareGuestKernel({
    flavour: "cloud",
    modules: ["virtio_pci", "virtio_blk"],
    log,
  });
  const body = `
echo "vm-crash: sectors=$(cat /sys/block/vda/size)"
dd if=/dev/urandom of=/tmp/data bs=64k count=${CHUNKS} 2>/dev/null || return 1
written=$(sha256sum /tmp/data | cut -d' ' -f1)
echo "vm-crash: writing"
if dd if=/tmp/data of=/dev/vda bs=64k seek=${OFFSET_CHUNKS} oflag=direct 2>/tmp/dd.err; then rc=0; else rc=$?; cat /tmp/dd.err; fi
sync
echo 3 > /proc/sys/vm/drop_caches
back=$(dd if=/dev/vda bs=64k skip=${OFFSET_CHUNKS} count=${CHUNKS} iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)
ioerr=$(dmesg | grep -c 'I/O error')
echo "vm-crash: rc=$rc ioerrors=$ioerr written=$written read=$back"
`;
  const initrd = await buildInitramfs({
    init: initScript({ modules: kernel.modules.map((m) => m.name), body }),
    modules: kernel.modules,
    busybox: tools.get("busybox")!,
    log,
  });
  const dir = await Deno.makeTempDir({ prefix: "blk_crash" });
  const file = `${dir}/disk.img`, socket = `${dir}/blk.sock`;
  await Deno.writeFile(file, new Uint8Array(0));
  await Deno.truncate(file, 16 << 20);
  let backend = new Backend(file, socket, extra);
  const first = backend;
  let vm: QemuVm | null = null;
  try {
    await first.ready;
    vm = QemuVm.launch({
      qemu: tools.get("qemu-system-x86_64"),
      log,
      args: [
        ...kernelBootArgs({ kernel: kernel.image, initrd, append: "quiet", memoryMiB: 256 }),
        ...sharedMemoryArgs("256M"),
        "-chardev",
        `socket,id=c0,path=${socket},reconnect=1`,
        "-device",
        "vhost-user-blk-pci,chardev=c0,num-queues=1",
      ],
    });
    await vm.waitFor(/vm-crash: writing/, {
      timeoutMs: 180_000,
      what: "the guest to start writing",
    });
    // Let a few writes go through, then kill the backend mid-write.
    await new Promise((r) => setTimeout(r, 4 * WRITE_DELAY_MS + WRITE_DELAY_MS / 2));
    log("killing the backend (SIGKILL)");
    await first.kill();
    await new Promise((r) => setTimeout(r, 300));
    backend = new Backend(file, socket, extra);
    await backend.ready;
    log("backend started again; QEMU reconnects");
    const m = await vm.waitFor(
      /vm-crash: rc=(\d+) ioerrors=(\d+) written=([0-9a-f]{64}) read=([0-9a-f]{64})/,
      { timeoutMs: 240_000, what: "the guest to finish its writes and read them back" },
    );
    await vm.waitFor(/vm-init: done/, { timeoutMs: 30_000, what: "the guest to finish" });
    return {
      rc: Number(m[1]),
      ioErrors: Number(m[2]),
      written: m[3],
      readBack: m[4],
      hostFile: await sha256(file, OFFSET_CHUNKS << 16, CHUNKS << 16),
      first: first.lines,
      second: backend.lines,
    };
  } finally {
    await vm?.close();
    await first.kill();
    await backend.kill();
    await Deno.remove(dir, { recursive: true });
  }
}

/** The number of requests the restarted backend said it resubmits. */
function resubmitted(lines: string[]): number {
  let n = 0;
  for (const l of lines) {
    const m = /resubmitting (\d+) request/.exec(l);
    if (m) n += Number(m[1]);
  }
  return n;
}

const ignore = await skipGuestTest("the blk crash test");

Deno.test({
  name: "blk crash: backend killed mid-write and restarted; QEMU reconnects, the in-flight " +
    "write is resubmitted, no I/O error, every byte verifies",
  ignore,
  async fn() {
    const r = await crashRun([]);
    console.log(r.second.filter((l) => /inflight|resubmit|ready/.test(l)).join("\n"));
    assert.ok(
      r.second.some((l) => /inflight region taken from the frontend/.test(l)),
      `QEMU handed the region back (SET_INFLIGHT_FD):\n${r.second.join("\n")}`,
    );
    assert.ok(
      resubmitted(r.second) >= 1,
      `the restarted backend resubmitted the write in flight:\n${r.second.join("\n")}`,
    );
    assert.equal(r.rc, 0, "dd saw no error");
    assert.equal(r.ioErrors, 0, "the guest kernel logged no I/O error");
    assert.equal(r.readBack, r.written, "the guest reads back what it wrote");
    assert.equal(r.hostFile, r.written, "the backing file holds every byte the guest wrote");
  },
});

Deno.test({
  name: "blk crash, negative: a backend that acknowledges resubmitted writes without doing " +
    "them is caught (the sums disagree)",
  ignore,
  async fn() {
    const r = await crashRun(["--lose-resubmitted", "true"]);
    assert.ok(resubmitted(r.second) >= 1, `a write was in flight:\n${r.second.join("\n")}`);
    assert.equal(r.rc, 0, "the guest was told its writes succeeded");
    assert.notEqual(r.hostFile, r.written, "the backing file lacks the lost write");
    assert.notEqual(r.readBack, r.written, "the guest reads back something else");
  },
});
