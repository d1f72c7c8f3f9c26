// A kit device's queue handler for the kit's tests; what it does is the
// device option `mode`:
//   fill        write the option `byte` over the whole writable area
//   echo        copy the readable bytes back into the writable area
//   bad-length  claim one byte more than the request can hold
//   stuck       spin forever on a 13-byte request (a Worker that never stops)
//   fail-start  fail in onStart

import { serveQueue } from "@vhost-mdev/sdk/soft";

let fill = new Uint8Array(0);

serveQueue((request) => {
  switch (request.options.mode) {
    case "fill": {
      if (fill.length < request.writable) fill = new Uint8Array(request.writable);
      fill.fill(Number(request.options.byte));
      request.write(fill.subarray(0, request.writable));
      return request.writable;
    }
    case "echo": {
      const data = request.readable;
      const n = Math.min(data.length, request.writable);
      request.write(data.subarray(0, n));
      return n;
    }
    case "bad-length":
      return request.writable + 1;
    case "stuck":
      if (request.writable === 13) { for (;;) { /* never returns */ } }
      return 0;
    default:
      throw new Error(`unknown mode ${request.options.mode}`);
  }
}, {
  onStart(info) {
    if (info.options.mode === "fail-start") throw new Error("the test device refuses to start");
  },
});
