// A bounded fuzz run of every target, part of the normal suite, and proof
// that the invariant checkers catch what they are meant to catch: a
// translation outside its region, a chain segment past its region, an
// engine error in a session's end reason, and a failing property reported
// with a seed and path that replay it. `deno task fuzz` runs the same
// targets for longer.

import assert from "node:assert/strict";
import { DescriptorChain, GuestMemory } from "@vhost-mdev/sdk";
import { fc, type FuzzReport, InvariantBroken, runProperty } from "./arbitraries.ts";
import { type FuzzCommand, parseCommand, randomSeed } from "./fuzz.ts";
import { fuzzMemory, translationProblem } from "./memory_fuzz.ts";
import { fuzzPackedRing } from "./packed_ring_fuzz.ts";
import { chainProblem, fuzzRing } from "./ring_fuzz.ts";
import { fuzzSession, untypedFailure } from "./session_fuzz.ts";

const seed = randomSeed();
console.log(`fuzz seed ${seed} (replay: deno run -A tests/fuzz/fuzz.ts --seed ${seed} --target T)`);

/** Fails with everything needed to replay the failing case. */
function assertClean(r: FuzzReport): void {
  assert.equal(
    r.failures,
    0,
    `${r.target} failed: ${r.error}\ncase: ${r.counterexample}\n` +
      `replay: deno run -A tests/fuzz/fuzz.ts --seed ${r.seed} --target ${r.target} --path ${r.path}`,
  );
  assert.ok(r.runs > 0, `${r.target} ran no case`);
}

/** A table of two adjacent regions inside one larger buffer, so a bad view can run past them. */
function adjacentRegions() {
  const buffer = new Uint8Array(3 * 4096);
  return GuestMemory.fromBuffers([
    { gpa: 0x10000, uva: 0x7000_0000_0000, bytes: buffer.subarray(0, 4096) },
    { gpa: 0x11000, uva: 0x7000_0000_1000, bytes: buffer.subarray(4096, 8192) },
  ]);
}

Deno.test("translation checker: a view running past its region is caught", () => {
  const memory = adjacentRegions();
  const [a] = memory.regions;
  const q = { space: "gpa" as const, address: 0x10ff8, length: 16 };
  // The honest table refuses it; a broken one that returned this view must be flagged.
  assert.equal(memory.find(q.address, q.length), -1);
  const view = new Uint8Array(a.bytes.buffer, a.bytes.byteOffset + 0xff8, 16);
  assert.match(
    translationProblem(memory.regions, q, { call: "bytes", bytes: view }) ?? "",
    /no region holds/,
  );
  assert.match(
    translationProblem(memory.regions, q, { call: "find", index: 0 }) ?? "",
    /does not hold the range/,
  );
  // Inside, but one byte off: also caught.
  const inside = { space: "gpa" as const, address: 0x10010, length: 8 };
  assert.match(
    translationProblem(memory.regions, inside, {
      call: "hostAddress",
      address: a.address + 0x11,
    }) ?? "",
    /region 0 has it at/,
  );
  assert.equal(
    translationProblem(memory.regions, inside, { call: "bytes", bytes: memory.bytes(0x10010, 8) }),
    null,
  );
  memory.close();
});

Deno.test("chain checker: a segment past its region's end is caught", () => {
  const regions = [{ gpa: 0x10000, size: 4096 }];
  const chain = new DescriptorChain();
  chain.reset(0);
  chain.descriptors = 1;
  chain.addSegment(0x10000 + 4088, 16, 0, 4088, false);
  assert.match(chainProblem(regions, chain, { num: 8, maxChain: 8 }) ?? "", /outside region 0/);
  chain.reset(0);
  chain.descriptors = 1;
  chain.addSegment(0x10000 + 4080, 16, 0, 4080, false);
  assert.equal(chainProblem(regions, chain, { num: 8, maxChain: 8 }), null);
});

Deno.test("session checker: engine errors in reasons are caught, typed ones pass", () => {
  assert.ok(untypedFailure("SET_VRING_ADDR: Cannot read properties of undefined (reading 'desc')"));
  assert.ok(untypedFailure("TypeError: x is not a function"));
  assert.equal(untypedFailure("SET_VRING_NUM: payload is 5 bytes, expected 8"), null);
  assert.equal(untypedFailure("frontend disconnected"), null);
});

Deno.test("a broken property is reported with a seed and a path that replay it", async () => {
  // A "table" that answers one byte past the truth: the checker must fail it.
  const cases = fc.tuple(fc.nat(4095), fc.integer({ min: 1, max: 64 }));
  const property = fc.property(cases, ([offset, length]) => {
    const memory = adjacentRegions();
    try {
      const q = { space: "gpa" as const, address: 0x10000 + offset, length };
      if (memory.find(q.address, q.length) < 0) return;
      const address = memory.hostAddress(q.address, q.length) + 1;
      const problem = translationProblem(memory.regions, q, { call: "hostAddress", address });
      if (problem) throw new InvariantBroken(problem);
    } finally {
      memory.close();
    }
  });
  const report = await runProperty("broken", property, { seed, numRuns: 50 });
  assert.equal(report.failures, 1);
  assert.ok(report.path, "a failure names its path");
  assert.match(report.error ?? "", /InvariantBroken: hostAddress/);
  const again = await runProperty("broken", property, {
    seed,
    path: report.path,
    numRuns: 1,
  });
  assert.equal(again.failures, 1, "the path replays the failure");
  assert.equal(again.counterexample, report.counterexample);
});

Deno.test("fuzz command line: targets, seed, replay", () => {
  assert.deepEqual(parseCommand(["--seconds", "6", "--seed", "7", "--target", "ring"]), {
    seconds: 6,
    seed: 7,
    targets: ["ring"],
    runs: undefined,
    path: undefined,
    watchdog: 120,
  });
  assert.equal(
    (parseCommand(["--seed", "7", "--target", "ring", "--path", "3:1"]) as FuzzCommand).runs,
    1,
  );
  assert.throws(
    () => parseCommand(["--target", "disk"]),
    /not one of session, ring, packed-ring, memory/,
  );
  assert.throws(() => parseCommand(["--path", "3:1"]), /give --seed and --target/);
  assert.match(parseCommand(["--help"]) as string, /usage:/);
});

Deno.test("fuzz ring: bounded run", async () => {
  assertClean(await fuzzRing({ seed, numRuns: 400, seconds: 2 }));
});

Deno.test("fuzz packed-ring: bounded run", async () => {
  assertClean(await fuzzPackedRing({ seed, numRuns: 400, seconds: 2 }));
});

Deno.test("fuzz memory: bounded run", async () => {
  assertClean(await fuzzMemory({ seed, numRuns: 200, seconds: 2 }));
});

Deno.test("fuzz session: bounded run", async () => {
  assertClean(await fuzzSession({ seed, numRuns: 40, seconds: 4 }));
});
