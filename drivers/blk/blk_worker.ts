/**
 * The blk device's queue handler: one Worker per running ring, each with
 * its own fd on the backing file, serving requests with
 * {@linkcode BlkRequestServer}.
 *
 * @module
 */

import { serveQueue } from "@vhost-mdev/sdk/soft";
import { BlockFile } from "./block_file.ts";
import { CAPACITY_OPTION } from "./limits.ts";
import { parseBlkOptions } from "./options.ts";
import { BlkRequestServer } from "./request_server.ts";

let file: BlockFile | null = null;
let server: BlkRequestServer | null = null;

serveQueue((request) => server!.serve(request), {
  maxReadable: 4096,
  onStart(info) {
    const options = parseBlkOptions(info.options);
    const capacitySectors = Number(info.options[CAPACITY_OPTION]);
    if (!Number.isSafeInteger(capacitySectors) || capacitySectors < 0) {
      throw new Error(`blk: the ${CAPACITY_OPTION} the driver measured is missing`);
    }
    file = BlockFile.open(options.file, options);
    server = new BlkRequestServer(file, { ...options, capacitySectors });
  },
  onStop() {
    file?.close();
    file = null;
    server = null;
  },
});
