/**
 * Run a guest example (`examples/vm.ts`, `examples/vfio_vm.ts`) as a child
 * Deno process for a test: its progress lines are echoed as they come (so a
 * slow boot shows what it waits for), its `--json` result line is parsed,
 * and it is killed if it outlives the test's budget.
 *
 * Also the skip rule for guest tests: without QEMU or a static busybox a test
 * is skipped with the reason, except under `CI=true`, where it must run.
 *
 * @module
 */

import {
  BUSYBOX_STATIC,
  findProgram,
  installCommand,
  QEMU,
} from "../../testing/guest/host_tools.ts";

/** Why guest tests cannot run here, or `null` when they can. */
export async function guestTestsUnavailable(): Promise<string | null> {
  const missing: string[] = [];
  for (const tool of [QEMU, BUSYBOX_STATIC]) {
    const path = await findProgram(tool.program);
    if (path === null || (tool.check && (await tool.check(path)) !== null)) {
      missing.push(tool.program);
    }
  }
  if (missing.length === 0) return null;
  return `${missing.join(" and ")} missing; install with: ${
    installCommand([QEMU, BUSYBOX_STATIC])
  }`;
}

/**
 * Whether a guest test should be ignored: true (after printing why) when the
 * host tools are missing and `CI` is not `true`. Under CI a missing tool is
 * not a reason to skip: the test runs and fails with the install command.
 */
export async function skipGuestTest(name: string): Promise<boolean> {
  const reason = await guestTestsUnavailable();
  if (reason === null) return false;
  if (Deno.env.get("CI") === "true") return false;
  console.log(`skipping ${name}: ${reason}`);
  return true;
}

/** What an example run produced. */
export interface ExampleRun {
  /** Exit code. */
  code: number;
  /** Every stdout and stderr line. */
  lines: string[];
  /** The parsed `--json` line (the last line starting with `{`), if any. */
  result: Record<string, unknown> | null;
}

/**
 * Run `deno run -A <example> ...args` from the repository root, echoing its
 * output with `prefix`, killing it after `timeoutMs`.
 */
export async function runExample(
  example: string,
  args: readonly string[],
  options: { timeoutMs: number; prefix: string },
): Promise<ExampleRun> {
  const root = new URL("../..", import.meta.url).pathname;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", example, ...args],
    cwd: root,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  const lines: string[] = [];
  const pump = async (stream: ReadableStream<Uint8Array>) => {
    let partial = "";
    for await (const text of stream.pipeThrough(new TextDecoderStream())) {
      const parts = (partial + text).split("\n");
      partial = parts.pop() ?? "";
      for (const l of parts) {
        lines.push(l);
        if (!l.startsWith("{")) console.log(`${options.prefix}${l}`);
      }
    }
    if (partial) lines.push(partial);
  };
  let timedOut = false;
  let exited = false;
  child.status.then(() => {
    exited = true;
  });
  let escalation: ReturnType<typeof setTimeout> | undefined;
  const signal = (sig: Deno.Signal) => {
    try {
      child.kill(sig);
    } catch {
      // already gone
    }
  };
  // SIGTERM first: the example then kills its QEMU before exiting.
  const timer = setTimeout(() => {
    timedOut = true;
    signal("SIGTERM");
    escalation = setTimeout(() => signal("SIGKILL"), 15_000);
  }, options.timeoutMs);
  try {
    const [status] = await Promise.all([child.status, pump(child.stdout), pump(child.stderr)]);
    if (timedOut) {
      throw new Error(`${example} did not finish within ${options.timeoutMs / 1000} s`);
    }
    const json = lines.filter((l) => l.startsWith("{")).at(-1);
    return { code: status.code, lines, result: json ? JSON.parse(json) : null };
  } finally {
    clearTimeout(timer);
    if (!exited) {
      signal("SIGTERM");
      await child.status;
    }
    clearTimeout(escalation);
  }
}
