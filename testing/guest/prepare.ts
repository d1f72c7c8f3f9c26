/**
 * Fetch and build every guest image the examples use, ahead of time (CI runs
 * this before the tests, so a download problem shows up as such and not as a
 * test timeout):
 *
 *   deno run -A testing/guest/prepare.ts [--setup]
 *
 * Prints where each image is cached. Exit status 0 when all are ready, 1 on
 * a failure, 2 when host tools are missing (the message names the install
 * command; `--setup` runs it). The channels guest's helper is compiled with
 * `cc -static`; without a C compiler that image is skipped with a warning
 * (exit status 0), and the test that boots it reports the missing compiler.
 *
 * @module
 */

import { guestCacheDir } from "./cache_dir.ts";
import {
  GUEST_TOOLS,
  installHostTools,
  MissingToolsError,
  requireHostTools,
} from "./host_tools.ts";
import { prepareChannelsGuest } from "./channels_guest.ts";
import { preparePingGuest } from "./ping_guest.ts";
import { prepareVfioGuest } from "./vfio_guest.ts";

async function main(): Promise<number> {
  if (Deno.args.includes("--help")) {
    console.log(
      "Usage: deno run -A testing/guest/prepare.ts [--setup]\n\n" +
        "Fetch the guest kernels and build the guest images of examples/vm.ts,\n" +
        "examples/vfio_vm.ts and tests/vm/queue_count_test.ts into " +
        `${guestCacheDir()}.`,
    );
    return 0;
  }
  const log = (line: string) => console.log(line);
  if (Deno.args.includes("--setup")) await installHostTools(GUEST_TOOLS, log);
  let tools: Map<string, string>;
  try {
    tools = await requireHostTools(GUEST_TOOLS);
  } catch (e) {
    if (e instanceof MissingToolsError) {
      console.error(`error: ${e.message}`);
      return 2;
    }
    throw e;
  }
  const busybox = tools.get("busybox")!;
  const t0 = performance.now();
  const ping = await preparePingGuest(busybox, log);
  console.log(`ready: ping guest (${ping.release}): ${ping.kernel} + ${ping.initrd}`);
  const vfio = await prepareVfioGuest(busybox, log);
  console.log(`ready: vfio guest (${vfio.release}): ${vfio.kernel} + ${vfio.initrd}`);
  try {
    const channels = await prepareChannelsGuest(busybox, log);
    console.log(
      `ready: channels guest (${channels.release}): ${channels.kernel} + ${channels.initrd}`,
    );
  } catch (e) {
    // Only the queue-count test needs this image; it says the same when it runs.
    if (!(e instanceof MissingToolsError)) throw e;
    console.error(`warning: channels guest not built: ${e.message}`);
  }
  console.log(`guest images ready in ${Math.round(performance.now() - t0)} ms`);
  return 0;
}

if (import.meta.main) {
  try {
    Deno.exit(await main());
  } catch (e) {
    console.error(`error: ${(e as Error).message}`);
    Deno.exit(1);
  }
}
