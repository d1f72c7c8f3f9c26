// `deno task serve --driver blk`: its options in --help, and a served
// read-only device with two queues (`--readonly` alone, `--queues 2`) that
// the test kit's guest driver reads from and cannot write to.

import assert from "node:assert/strict";
import { hasBit, VirtioBlkFeatureBit, VirtioBlkStatus } from "@vhost-mdev/sdk";
import { until, VhostUserFrontend, VirtioBlkDriver } from "@vhost-mdev/testing";
import { randomBytes } from "./rig.ts";

const SERVE = new URL("../../cli/serve.ts", import.meta.url).pathname;

Deno.test("serve --driver blk --help lists the blk options", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", SERVE, "--driver", "blk", "--help"],
    stdout: "piped",
  }).output();
  assert.equal(out.code, 0);
  const text = new TextDecoder().decode(out.stdout);
  assert.match(text, /Driver blk: virtio-blk/);
  for (const o of ["--file", "--readonly", "--direct", "--block-size", "--serial"]) {
    assert.match(text, new RegExp(`^  ${o}`, "m"), `${o} is listed`);
  }
});

Deno.test("serve --driver blk --file F --readonly --queues 2 serves a read-only disk on two queues", async () => {
  const dir = await Deno.makeTempDir({ prefix: "blk_cli" });
  const file = `${dir}/disk.img`, sock = `${dir}/blk.sock`;
  const content = randomBytes(1 << 20);
  await Deno.writeFile(file, content);
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      SERVE,
      "--driver",
      "blk",
      "--file",
      file,
      "--readonly",
      "--queues",
      "2",
      "--socket",
      sock,
    ],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const lines: string[] = [];
  const reading = (async () => {
    for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) lines.push(chunk);
  })();
  try {
    await until("the ready line", () => lines.join("").includes("ready: blk listening on"), 20000);
    const fe = await VhostUserFrontend.connect(sock, { memoryMiB: 16, replyTimeoutMs: 30_000 });
    try {
      const blk = await VirtioBlkDriver.start(fe, { queues: 2 });
      assert.ok(hasBit(blk.features, VirtioBlkFeatureBit.RO));
      assert.equal(blk.capacity, 2048n);
      const r = await blk.read(100, 4096, 1);
      assert.equal(r.status, VirtioBlkStatus.OK);
      assert.deepEqual(r.data, content.subarray(100 * 512, 100 * 512 + 4096));
      assert.equal(await blk.write(0, new Uint8Array(512), 0), VirtioBlkStatus.IOERR);
      await blk.stop();
    } finally {
      fe.close();
    }
    assert.deepEqual(await Deno.readFile(file), content);
  } finally {
    child.kill("SIGTERM");
    await child.status;
    await reading;
    await Deno.remove(dir, { recursive: true });
  }
});
