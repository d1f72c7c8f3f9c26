// requirePeer: finds installed peers, skips missing ones, fails them in CI.

import assert from "node:assert/strict";
import { requirePeer } from "./peers.ts";

const MISSING = "vhost-mdev-no-such-peer";

async function withCi<T>(value: string | undefined, fn: () => Promise<T>): Promise<T> {
  const saved = Deno.env.get("CI");
  if (value === undefined) Deno.env.delete("CI");
  else Deno.env.set("CI", value);
  try {
    return await fn();
  } finally {
    if (saved === undefined) Deno.env.delete("CI");
    else Deno.env.set("CI", saved);
  }
}

Deno.test("requirePeer returns the absolute path of an installed binary", async () => {
  const sh = await requirePeer("sh");
  assert.ok(sh !== null && sh.startsWith("/") && sh.endsWith("/sh"), String(sh));
});

Deno.test("requirePeer skips a missing binary outside CI and fails it in CI", async () => {
  const printed: string[] = [];
  const log = console.log;
  console.log = (...args: unknown[]) => printed.push(args.join(" "));
  try {
    assert.equal(await withCi(undefined, () => requirePeer(MISSING)), null);
  } finally {
    console.log = log;
  }
  assert.deepEqual(printed, [`skipping: ${MISSING} not installed (apt-get install ${MISSING})`]);
  await withCi(
    "true",
    () => assert.rejects(() => requirePeer("dpdk-testpmd-" + MISSING), /missing in CI/),
  );
});
