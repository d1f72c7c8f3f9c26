// Worker for iotlb_test.ts: reads a shared IOTLB without a lock while the
// main thread changes it. The first message is `{ shared, control, fixed,
// bases, pages, delta }`: `fixed` is an entry the main thread never touches;
// the others lie in `pages` pages from each of `bases` and map `iova` to
// `iova + delta`. The worker posts `"ready"`,
// then translates in a loop until `control[0]` is 1, publishing its lookups
// in `control[1]`, and ends with `{ lookups, wrongFixed, wrongOther, hitsOther }`.

import { type IotlbEntry, IotlbView, type SharedIotlb } from "../../sdk/memory/iotlb.ts";
import { IotlbAccess } from "../../sdk/uapi/vhost.ts";

/** What the test sends. */
export interface ReaderSetup {
  shared: SharedIotlb;
  control: SharedArrayBuffer;
  fixed: IotlbEntry;
  bases: number[];
  pages: number;
  delta: number;
}

/** What the worker answers at the end. */
export interface ReaderResult {
  lookups: number;
  wrongFixed: number;
  wrongOther: number;
  hitsOther: number;
}

const self = globalThis as unknown as {
  onmessage: ((e: MessageEvent<ReaderSetup>) => void) | null;
  postMessage(m: "ready" | ReaderResult): void;
};

const PAGE = 0x1000;

self.onmessage = (e) => {
  const { shared, fixed, bases, pages, delta } = e.data;
  const control = new Int32Array(e.data.control);
  const view = new IotlbView(shared);
  let lookups = 0, wrongFixed = 0, wrongOther = 0, hitsOther = 0;
  self.postMessage("ready");
  for (let round = 0; Atomics.load(control, 0) === 0; round++) {
    // The fixed entry: every lookup must hit, at the right address and span.
    const off = (round * 0x321) % fixed.size;
    const got = view.translate(fixed.iova + off, IotlbAccess.READ);
    if (got !== fixed.uaddr + off || view.span !== fixed.size - off) wrongFixed++;
    const range = view.translateRange(fixed.iova, fixed.size, IotlbAccess.READ_WRITE);
    if (range !== fixed.uaddr) wrongFixed++;
    // A churned page: a miss or a permission fault is fine, a hit must be right.
    const base = bases[round % bases.length];
    const iova = base + ((round >> 1) % pages) * PAGE + (round & 0xff);
    const other = view.translate(iova, IotlbAccess.READ);
    if (other >= 0) {
      hitsOther++;
      if (other !== iova + delta || view.span <= 0 || iova + view.span > base + pages * PAGE) {
        wrongOther++;
      }
    } else if (other !== -1 && other !== -2) {
      wrongOther++;
    }
    lookups += 3;
    if ((round & 0x3ff) === 0) Atomics.store(control, 1, lookups);
  }
  self.postMessage({ lookups, wrongFixed, wrongOther, hitsOther });
};
