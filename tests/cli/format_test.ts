// How `serve --stats` prints counters: each ring's declared counters by name.

import assert from "node:assert/strict";
import { formatStats } from "../../cli/format.ts";

Deno.test("stats line: declared counters by name, per ring, then the device's", () => {
  const line = formatStats(
    [{ queue: 0, requests: 5, bytes: 320 }, { queue: 1, requests: 2, bytes: 128 }],
    { resets: 1 },
    ["requests", "bytes"],
  );
  assert.equal(line, "q0 requests=5 bytes=320 | q1 requests=2 bytes=128 | device resets=1");
  // A counter a ring does not report is left out rather than printed as undefined.
  assert.equal(formatStats([{ queue: 2, packets: 1 }], {}, ["packets", "drops"]), "q2 packets=1");
});
