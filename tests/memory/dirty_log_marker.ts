// Worker for the concurrent-writers test of dirty_log_test.ts: says it is
// ready (word 0 of `sync`), waits for the go (word 1), marks every page `p`
// with `p % stride === index` once in the shared log, then adds 1 to the
// done counter (word 2).

import { DirtyLog, type SharedDirtyLog } from "../../sdk/memory/mod.ts";

interface Job {
  log: SharedDirtyLog;
  index: number;
  stride: number;
  sync: SharedArrayBuffer;
}

(globalThis as unknown as { onmessage: (e: MessageEvent<Job>) => void }).onmessage = (e) => {
  const { log: shared, index, stride, sync } = e.data;
  const log = DirtyLog.fromShared(shared);
  const words = new Int32Array(sync);
  Atomics.add(words, 0, 1);
  Atomics.wait(words, 1, 0, 10_000);
  for (let p = index; p < log.pages; p += stride) log.mark(p * 4096 + 100, 8);
  Atomics.add(words, 2, 1);
};
