// The crash test device's queue handler: the blk device's own request server,
// each write first sleeping `write-delay-ms`, and with `lose-resubmitted` a
// resubmitted write answered OK without being done.

import { serveQueue } from "@vhost-mdev/sdk/soft";
import { BlockFile } from "../../drivers/blk/block_file.ts";
import { CAPACITY_OPTION } from "../../drivers/blk/limits.ts";
import { parseBlkOptions } from "../../drivers/blk/options.ts";
import { BlkRequestServer } from "../../drivers/blk/request_server.ts";

const VIRTIO_BLK_T_OUT = 1;
let file: BlockFile | null = null;
let server: BlkRequestServer | null = null;
let delayMs = 0;
let lose = false;
const sleeper = new Int32Array(new SharedArrayBuffer(4));
const header = new Uint8Array(16);

serveQueue((request) => {
  request.read(header);
  const out = new DataView(header.buffer).getUint32(0, true) === VIRTIO_BLK_T_OUT;
  if (out && delayMs > 0) Atomics.wait(sleeper, 0, 0, delayMs);
  if (out && lose && request.resubmitted) {
    request.write(new Uint8Array([0]), request.writable - 1);
    return request.writable;
  }
  return server!.serve(request);
}, {
  maxReadable: 4096,
  onStart(info) {
    const options = parseBlkOptions(info.options);
    delayMs = Number(info.options["write-delay-ms"] ?? "0");
    lose = info.options["lose-resubmitted"] === "true";
    file = BlockFile.open(options.file, options);
    server = new BlkRequestServer(file, {
      ...options,
      capacitySectors: Number(info.options[CAPACITY_OPTION]),
    });
  },
  onStop() {
    file?.close();
    file = null;
    server = null;
  },
});
