/**
 * System calls for the SDK: the only module that loads libc (with
 * `Deno.dlopen`, so programs need `--allow-ffi`). UNIX sockets with fd
 * passing, memfd and `mmap`, eventfd, `ioctl` and `poll`. Every failure
 * throws {@linkcode SysError} naming the call and its errno.
 *
 * Datapath calls ({@linkcode pollSync}, {@linkcode PollSet},
 * {@linkcode eventfdRead}, {@linkcode eventfdWrite}, {@linkcode read},
 * {@linkcode write}) reuse per-thread buffers and make no BigInt, so a
 * Worker can loop on them without allocating.
 *
 * @example Pass a memfd over a socket pair
 * ```ts
 * import {
 *   close, ftruncate, memfdCreate, mmap, recvMsg, sendMsg, socketPair,
 * } from "@vhost-mdev/sdk/sys";
 *
 * const [a, b] = socketPair();
 * const memfd = memfdCreate("example");
 * ftruncate(memfd, 4096);
 * sendMsg(a, new Uint8Array([1]), [memfd]);
 * const { fds } = recvMsg(b, new Uint8Array(1));
 * const mine = mmap(memfd, 4096);
 * const theirs = mmap(fds[0], 4096);
 * new Uint8Array(mine.buffer)[0] = 42;
 * console.log(new Uint8Array(theirs.buffer)[0]); // 42
 * mine.unmap();
 * theirs.unmap();
 * for (const fd of [a, b, memfd, ...fds]) close(fd);
 * ```
 *
 * @module
 */

export { Errno, errnoDescription, errnoName, SysError } from "./error.ts";
export { ERRNO_TABLE, type ErrnoEntry } from "./errno_table.ts";
export {
  addSeals,
  close,
  dup,
  F_ADD_SEALS,
  F_DUPFD_CLOEXEC,
  F_GET_SEALS,
  F_GETFD,
  F_GETFL,
  F_SEAL_GROW,
  F_SEAL_SEAL,
  F_SEAL_SHRINK,
  F_SEAL_WRITE,
  F_SETFD,
  F_SETFL,
  FALLOC_FL_KEEP_SIZE,
  FALLOC_FL_PUNCH_HOLE,
  FALLOC_FL_ZERO_RANGE,
  fallocate,
  fcntl,
  FD_CLOEXEC,
  fdatasync,
  type FileStatus,
  fstat,
  getSeals,
  O_CLOEXEC,
  O_CREAT,
  O_DIRECT,
  O_NONBLOCK,
  O_PATH,
  O_RDONLY,
  O_RDWR,
  O_TRUNC,
  O_WRONLY,
  open,
  openFdCount,
  pread,
  pwrite,
  read,
  S_IFCHR,
  S_IFMT,
  S_IFREG,
  S_IFSOCK,
  setNonBlocking,
  write,
} from "./fd.ts";
export {
  accept,
  bindUnix,
  connectUnix,
  DEFAULT_MAX_FDS,
  listen,
  MSG_CMSG_CLOEXEC,
  MSG_CTRUNC,
  MSG_DONTWAIT,
  MSG_NOSIGNAL,
  MSG_TRUNC,
  type ReceivedMessage,
  recvMsg,
  sendMsg,
  SHUT_RD,
  SHUT_RDWR,
  SHUT_WR,
  shutdown,
  SOCK_CLOEXEC,
  SOCK_NONBLOCK,
  SOCK_STREAM,
  type SocketOptions,
  socketPair,
  unixSocket,
} from "./socket.ts";
export { AF_UNIX, SUN_PATH_SIZE } from "./sockaddr.ts";
export {
  CMSG_LEN_OFFSET,
  CMSG_LEVEL,
  CMSG_TYPE,
  cmsgAlign,
  CMSGHDR_SIZE,
  cmsgLen,
  cmsgSpace,
  cmsgSpaceForFds,
  IOV_BASE,
  IOV_LEN,
  IOVEC_SIZE,
  MSG_CONTROL,
  MSG_CONTROLLEN,
  MSG_FLAGS,
  MSG_IOV,
  MSG_IOVLEN,
  MSG_NAME,
  MSG_NAMELEN,
  MSGHDR_SIZE,
  SCM_MAX_FD,
  SCM_RIGHTS,
  SOL_SOCKET,
} from "./msghdr.ts";
export {
  ftruncate,
  MAP_ANONYMOUS,
  MAP_FIXED,
  MAP_NORESERVE,
  MAP_POPULATE,
  MAP_PRIVATE,
  MAP_SHARED,
  Mapping,
  memfdCreate,
  type MemfdOptions,
  MFD_ALLOW_SEALING,
  MFD_CLOEXEC,
  mmap,
  mmapAnonymous,
  type MmapOptions,
  pageSize,
  pointerOf,
  PROT_NONE,
  PROT_READ,
  PROT_WRITE,
  viewOf,
} from "./memory.ts";
export {
  describeFd,
  EFD_CLOEXEC,
  EFD_NONBLOCK,
  EFD_SEMAPHORE,
  eventfd,
  eventfdIsSemaphore,
  type EventfdOptions,
  eventfdRead,
  eventfdSignal,
  eventfdWrite,
  isEventfd,
} from "./eventfd.ts";
export { FIOCLEX, FIONBIO, FIONCLEX, FIONREAD, ioctl } from "./ioctl.ts";
export {
  pollAsync,
  POLLERR,
  type PollFd,
  POLLFD_SIZE,
  POLLHUP,
  POLLIN,
  POLLNVAL,
  POLLOUT,
  POLLPRI,
  POLLRDHUP,
  PollSet,
  pollSync,
} from "./poll.ts";
export { pinThread } from "./affinity.ts";
