/**
 * How much CPU other processes took while a run was measured. The machine
 * has few CPUs and is shared, so a busy neighbour (a test suite, a VM)
 * shows up as noise; every run records it so results can be judged.
 * Read from `/proc/stat` (all CPUs' busy ticks) and `/proc/PID/stat` (our
 * processes' user+system ticks).
 *
 * @module
 */

/** Busy ticks of the machine and of a set of our processes, at one moment. */
export interface CpuSnapshot {
  /** `performance.now()` when taken. */
  time: number;
  /** Busy ticks (everything but idle and iowait) summed over CPUs. */
  busy: number;
  /** user+system ticks of our processes. */
  ours: number;
}

/** Clock ticks per second of `/proc` counters (USER_HZ, 100 on Linux). */
const USER_HZ = 100;

function machineBusy(): number {
  const line = Deno.readTextFileSync("/proc/stat").split("\n", 1)[0];
  // cpu user nice system idle iowait irq softirq steal guest guest_nice
  const f = line.trim().split(/\s+/).slice(1).map(Number);
  return f[0] + f[1] + f[2] + f[5] + f[6] + f[7];
}

function processTicks(pid: number): number {
  try {
    const text = Deno.readTextFileSync(`/proc/${pid}/stat`);
    // The command name may hold spaces; fields restart after its ")".
    const f = text.slice(text.lastIndexOf(")") + 2).split(" ");
    return Number(f[11]) + Number(f[12]);
  } catch {
    return 0;
  }
}

/** Snapshot the machine and `pids` (our processes; this process is always included). */
export function cpuSnapshot(pids: readonly number[]): CpuSnapshot {
  let ours = processTicks(Deno.pid);
  for (const p of pids) ours += processTicks(p);
  return { time: performance.now(), busy: machineBusy(), ours };
}

/**
 * CPUs' worth of time other processes used between two snapshots (0.5 =
 * half of one CPU). Never negative; tick granularity makes it approximate.
 */
export function foreignCpus(a: CpuSnapshot, b: CpuSnapshot): number {
  const seconds = (b.time - a.time) / 1000;
  if (seconds <= 0) return 0;
  return Math.max(0, (b.busy - a.busy) - (b.ours - a.ours)) / USER_HZ / seconds;
}
