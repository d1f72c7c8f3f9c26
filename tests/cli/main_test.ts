// `vhost-mdev <command>`: the one program the CLI package exports, handing
// each subcommand its own arguments.

import assert from "node:assert/strict";

const MAIN = new URL("../../cli/main.ts", import.meta.url).pathname;

async function run(args: string[]) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

Deno.test("vhost-mdev lists its commands, and hands each its own --help", async () => {
  const help = await run(["--help"]);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /serve +serve one device/);
  assert.match(help.stdout, /demo +the simulated device/);
  const serve = await run(["serve", "--help"]);
  assert.equal(serve.code, 0);
  assert.match(serve.stdout, /--driver <name\|module>/);
  const demo = await run(["demo", "--help"]);
  assert.equal(demo.code, 0);
  assert.match(demo.stdout, /--frontend/);
});

Deno.test("vhost-mdev refuses an unknown command and a missing one with exit code 2", async () => {
  const unknown = await run(["frobnicate"]);
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /unknown command "frobnicate"; commands: serve, demo/);
  const none = await run([]);
  assert.equal(none.code, 2);
  assert.match(none.stdout, /Usage: vhost-mdev <command>/);
});
