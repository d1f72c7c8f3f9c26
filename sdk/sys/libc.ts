/**
 * The libc symbol table: the one place in the SDK that calls `Deno.dlopen`.
 * The library is opened on first use, so importing the SDK needs no FFI
 * permission until a system call is made; each thread (the main thread and
 * every Worker) opens its own handle.
 *
 * Types are chosen to keep BigInt off hot paths. `read`, `write`, `sendmsg`
 * and `recvmsg` return `ssize_t`, declared here as `i32` because Linux never
 * transfers more than `0x7ffff000` bytes per call, so the low 32 bits carry
 * the whole value (and -1 stays -1). 64-bit parameters (`size_t`, `off_t`,
 * `nfds_t`) take a `bigint`: a plain number there sends Deno down its slow
 * call path, so datapath callers keep the bigint of the last length they
 * passed and convert only when the length changes.
 *
 * @module
 */

const SYMBOLS = {
  __errno_location: { parameters: [], result: "pointer" },
  close: { parameters: ["i32"], result: "i32" },
  read: { parameters: ["i32", "buffer", "usize"], result: "i32" },
  write: { parameters: ["i32", "buffer", "usize"], result: "i32" },
  pread: { parameters: ["i32", "buffer", "usize", "i64"], result: "i32" },
  pwrite: { parameters: ["i32", "buffer", "usize", "i64"], result: "i32" },
  fdatasync: { parameters: ["i32"], result: "i32" },
  fallocate: { parameters: ["i32", "i32", "i64", "i64"], result: "i32" },
  open: { parameters: ["buffer", "i32", "u32"], result: "i32" },
  fstat: { parameters: ["i32", "buffer"], result: "i32" },
  fcntl: { parameters: ["i32", "i32", "i64"], result: "i32" },
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  socketpair: { parameters: ["i32", "i32", "i32", "buffer"], result: "i32" },
  bind: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  listen: { parameters: ["i32", "i32"], result: "i32" },
  accept4: { parameters: ["i32", "pointer", "pointer", "i32"], result: "i32" },
  connect: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  shutdown: { parameters: ["i32", "i32"], result: "i32" },
  sendmsg: { parameters: ["i32", "buffer", "i32"], result: "i32" },
  recvmsg: { parameters: ["i32", "buffer", "i32"], result: "i32" },
  memfd_create: { parameters: ["buffer", "u32"], result: "i32" },
  ftruncate: { parameters: ["i32", "i64"], result: "i32" },
  mmap: { parameters: ["pointer", "usize", "i32", "i32", "i32", "i64"], result: "pointer" },
  munmap: { parameters: ["pointer", "usize"], result: "i32" },
  sysconf: { parameters: ["i32"], result: "i64" },
  sched_setaffinity: { parameters: ["i32", "usize", "buffer"], result: "i32" },
  eventfd: { parameters: ["u32", "i32"], result: "i32" },
  // ioctl is variadic; on x86-64 the third argument travels in a register
  // whether it is an integer or a pointer, so two fixed prototypes cover it.
  ioctl: { parameters: ["i32", "usize", "i64"], result: "i32" },
  ioctl_buffer: { name: "ioctl", parameters: ["i32", "usize", "buffer"], result: "i32" },
  poll: { parameters: ["buffer", "u64", "i32"], result: "i32" },
  // Runs on a thread of Deno's blocking pool; errno of that thread is not
  // observable from JavaScript (see poll.ts for how failures are recovered).
  poll_nonblocking: {
    name: "poll",
    parameters: ["buffer", "u64", "i32"],
    result: "i32",
    nonblocking: true,
  },
} as const satisfies Deno.ForeignLibraryInterface;

/** The bound libc functions. */
export type LibcSymbols = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

let symbols: LibcSymbols | undefined;
let errnoView: Deno.UnsafePointerView | undefined;

/**
 * The libc functions of this thread, opening `libc.so.6` on first use.
 *
 * @throws Deno.errors.NotCapable without `--allow-ffi`.
 */
export function libc(): LibcSymbols {
  if (symbols === undefined) {
    symbols = Deno.dlopen("libc.so.6", SYMBOLS).symbols;
    // errno is thread-local: its address is fixed for the life of this
    // thread, and JavaScript of one isolate always runs on the same thread.
    const where = symbols.__errno_location();
    if (where === null) throw new Error("libc returned no errno location");
    errnoView = new Deno.UnsafePointerView(where);
  }
  return symbols;
}

/**
 * The calling thread's `errno`. Valid only when read right after a failed
 * synchronous call through {@linkcode libc}, before any other call.
 */
export function lastErrno(): number {
  if (errnoView === undefined) libc();
  return errnoView!.getInt32();
}
