/**
 * One vhost-user session: a connected frontend driving one device. Decodes
 * every frontend request, calls the device core, replies, and owns the
 * backend channel (`SET_BACKEND_REQ_FD`) for config-change and host-notifier
 * messages.
 *
 * A malformed message ({@linkcode ProtocolError}) fails the session: it is
 * logged with its reason, the connection closed, the device reset and every
 * fd and mapping of the session released. A refused request
 * ({@linkcode RequestRefused}) gets a non-zero ack when the frontend asked for
 * one (`REPLY_ACK`), and otherwise fails the session the same way.
 *
 * @module
 */

import { ProtocolError, RequestRefused } from "../core/errors.ts";
import { message as errorMessage, type VhostMdevDevice } from "../core/device.ts";
import { GuestMemoryError } from "../memory/guest_memory.ts";
import type { DeviceDescription } from "../ops.ts";
import { close, fstat, S_IFMT, S_IFSOCK, SysError } from "../sys/mod.ts";
import {
  BackendRequest,
  FrontendRequest,
  frontendRequestName,
  HeaderFlag,
  MAX_MEM_SLOTS,
  ProtocolFeatureBit,
} from "../uapi/vhost_user.ts";
import { bit, hasBit, VirtioDeviceId, VirtioFeatureBit } from "../uapi/virtio.ts";
import { IotlbMessageType } from "../uapi/vhost.ts";
import { MessageSocket } from "./connection.ts";
import {
  decodeConfig,
  decodeInflightDescription,
  decodeIotlbMessage,
  decodeLogDescription,
  decodeMemTable,
  decodeRarpMac,
  decodeSingleRegion,
  decodeU64,
  decodeVringAddr,
  decodeVringFileIndex,
  decodeVringState,
  encodeConfig,
  encodeInflightDescription,
  encodeIotlbMessage,
  encodeMessage,
  encodeReply,
  encodeU64,
  encodeVringArea,
  encodeVringState,
  expectFds,
  expectSize,
  type VhostUserMessage,
} from "./message.ts";

/** Protocol features the SDK offers. */
export const OFFERED_PROTOCOL_FEATURES: bigint = [
  ProtocolFeatureBit.MQ,
  ProtocolFeatureBit.REPLY_ACK,
  ProtocolFeatureBit.CONFIG,
  ProtocolFeatureBit.STATUS,
  ProtocolFeatureBit.BACKEND_REQ,
  ProtocolFeatureBit.BACKEND_SEND_FD,
  ProtocolFeatureBit.HOST_NOTIFIER,
  ProtocolFeatureBit.CONFIGURE_MEM_SLOTS,
  ProtocolFeatureBit.RESET_DEVICE,
].reduce((m, b) => m | bit(b), 0n);

/**
 * Protocol features offered for a device: the SDK's, `LOG_SHMFD` when its
 * driver logs dirty pages (`ops.setLog`), `RARP` when it announces
 * (`ops.announce`) and `INFLIGHT_SHMFD` when it tracks inflight requests
 * (`inflight`), plus those its description adds, minus those it removes.
 *
 * @throws RangeError for a bit number outside 0..63.
 */
export function offeredProtocolFeatures(description: DeviceDescription): bigint {
  const mask = (bits: readonly number[] = []) =>
    bits.reduce((m, b) => {
      if (!Number.isInteger(b) || b < 0 || b > 63) {
        throw new RangeError(`protocol feature bit ${b} is not a bit number from 0 to 63`);
      }
      return m | bit(b);
    }, 0n);
  const p = description.protocolFeatures;
  const ops = description.ops;
  const own = (ops.setLog ? bit(ProtocolFeatureBit.LOG_SHMFD) : 0n) |
    (ops.announce ? bit(ProtocolFeatureBit.RARP) : 0n) |
    (description.inflight ? bit(ProtocolFeatureBit.INFLIGHT_SHMFD) : 0n);
  return (OFFERED_PROTOCOL_FEATURES | own | mask(p?.add)) & ~mask(p?.remove);
}

const KNOWN_REQUESTS = new Set<number>(Object.values(FrontendRequest));

/** Longest run of message handling before a session lets the event loop turn, in ms. */
const TURN_SLICE_MS = 2;

/** One frontend connection bound to a device. */
export class VhostUserSession {
  /** Describes the peer in logs. */
  readonly description: string;
  #socket: MessageSocket;
  #device: VhostMdevDevice;
  #protocolFeatures = 0n;
  readonly #offered: bigint;
  #protocolAcked = false;
  #backend: MessageSocket | null = null;
  #ended = false;
  #endReason = "";

  /**
   * Bind a connected socket to a device.
   *
   * @param fd A connected socket; the session owns it from now on.
   * @param description How the peer is named in logs.
   */
  constructor(fd: number, device: VhostMdevDevice, description: string) {
    this.#socket = new MessageSocket(fd);
    this.#device = device;
    this.#offered = offeredProtocolFeatures(device.description);
    this.description = description;
  }

  /**
   * Serve requests until the frontend leaves or a message fails the session.
   * Resolves with the reason; never rejects. The caller must have attached the session to
   * the device; the session detaches itself.
   */
  async run(): Promise<string> {
    const dev = this.#device;
    let slice = performance.now();
    try {
      for (;;) {
        // Messages already buffered are read without a real wait, so a
        // frontend that floods requests would keep this loop on the
        // microtask queue and starve every other session and timer: give
        // the event loop a turn after each slice.
        if (performance.now() - slice > TURN_SLICE_MS) {
          await new Promise((resolve) => setTimeout(resolve, 0));
          slice = performance.now();
        }
        const m = await this.#socket.read();
        if (!m) {
          this.#end(
            this.#socket.failure ||
              (this.#socket.closed ? this.#endReason || "closed" : "frontend disconnected"),
          );
          break;
        }
        await this.#dispatch(m);
      }
    } catch (e) {
      const why = errorMessage(e);
      dev.events.emit("error", `${this.description}: session failed: ${why}`);
      this.#end(why);
    } finally {
      this.#socket.close();
      this.#backend?.close();
      this.#backend = null;
      try {
        await dev.detach(this, this.#endReason);
      } catch (e) {
        dev.events.emit("error", `${this.description}: detaching failed: ${errorMessage(e)}`);
      }
    }
    return this.#endReason;
  }

  /**
   * Whether the session is over or ending: closed, failed, or its frontend
   * has hung up (its detach from the device may still be running).
   */
  get ending(): boolean {
    return this.#ended || this.#socket.peerClosed();
  }

  /** End the session from outside (server shutdown). */
  close(reason = "backend shut down"): void {
    this.#end(reason);
    this.#socket.close();
  }

  #end(reason: string): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#endReason = reason;
  }

  /** Device owner hook: config space changed. */
  notifyConfigChange(): void {
    if (!this.#backend || !hasBit(this.#protocolFeatures, ProtocolFeatureBit.CONFIG)) return;
    this.#sendBackend(
      encodeMessage(BackendRequest.CONFIG_CHANGE_MSG, HeaderFlag.VERSION, new Uint8Array(0)),
      [],
    );
  }

  /**
   * Send on the backend channel. A frontend that does not read it (or closed
   * it) loses the channel, with a warning; the session goes on.
   */
  #sendBackend(bytes: Uint8Array, fds: number[]): void {
    const backend = this.#backend;
    if (!backend) return;
    try {
      backend.send(bytes, fds);
    } catch (e) {
      backend.close();
      this.#backend = null;
      this.#device.events.emit(
        "warn",
        `${this.description}: backend channel closed: ${errorMessage(e)}`,
      );
    }
  }

  /**
   * Device owner hook: ask the frontend for a translation (an IOTLB miss on
   * the backend channel, vhost-user "IOMMU support"). False when there is no
   * backend channel.
   */
  sendIotlbMiss(iova: number, perm: number): boolean {
    if (!this.#backend || !hasBit(this.#protocolFeatures, ProtocolFeatureBit.BACKEND_REQ)) {
      return false;
    }
    const b = encodeIotlbMessage({
      iova: BigInt(iova),
      size: 0n,
      uaddr: 0n,
      perm,
      type: IotlbMessageType.MISS,
    });
    this.#sendBackend(encodeMessage(BackendRequest.IOTLB_MSG, HeaderFlag.VERSION, b), []);
    return this.#backend !== null;
  }

  /** Device owner hook: hand out (or take back) ring `q`'s doorbell. */
  setHostNotifier(q: number, area: { fd: number; offset: number; size: number } | null): void {
    const pf = this.#protocolFeatures;
    if (
      !this.#backend || !hasBit(pf, ProtocolFeatureBit.HOST_NOTIFIER) ||
      !hasBit(pf, ProtocolFeatureBit.BACKEND_SEND_FD)
    ) return;
    const b = encodeVringArea({
      index: q,
      noFd: !area,
      size: area?.size ?? 0,
      offset: area?.offset ?? 0,
    });
    this.#sendBackend(
      encodeMessage(BackendRequest.VRING_HOST_NOTIFIER_MSG, HeaderFlag.VERSION, b),
      area ? [area.fd] : [],
    );
  }

  async #dispatch(m: VhostUserMessage): Promise<void> {
    const name = frontendRequestName(m.request);
    const wantsAck = (m.flags & HeaderFlag.NEED_REPLY) !== 0 &&
      hasBit(this.#protocolFeatures, ProtocolFeatureBit.REPLY_ACK);
    try {
      if (!KNOWN_REQUESTS.has(m.request)) {
        throw new ProtocolError(`unknown request code ${m.request}`);
      }
      const replied = await this.#handle(m);
      if (wantsAck && !replied) this.#reply(m.request, encodeU64(0));
    } catch (e) {
      const refused = e instanceof RequestRefused || e instanceof GuestMemoryError ||
        e instanceof SysError;
      if (!refused || !wantsAck) {
        const text = errorMessage(e);
        throw new ProtocolError(text.startsWith(name) ? text : `${name}: ${text}`);
      }
      this.#device.events.emit("warn", `${this.description}: ${name} refused: ${errorMessage(e)}`);
      this.#reply(m.request, encodeU64(1));
    } finally {
      for (const fd of m.fds) if (fd >= 0) close(fd);
    }
  }

  #reply(request: number, payload: Uint8Array): void {
    this.#socket.send(encodeReply(request, payload));
  }

  /** Take fd `i` of `m`: the caller owns it and the session will not close it. */
  #take(m: VhostUserMessage, i: number): number {
    const fd = m.fds[i];
    m.fds[i] = -1;
    return fd;
  }

  /** Handle one request; returns true when it sent its own reply. */
  async #handle(m: VhostUserMessage): Promise<boolean> {
    const dev = this.#device;
    const R = FrontendRequest;
    const vhostUser = bit(VirtioFeatureBit.PROTOCOL_FEATURES);
    switch (m.request) {
      case R.GET_FEATURES:
        expectSize(m, 0);
        this.#reply(m.request, encodeU64(dev.getFeatures() | vhostUser));
        return true;
      case R.SET_FEATURES: {
        expectFds(m, 0);
        const f = decodeU64(m);
        this.#protocolAcked = (f & vhostUser) !== 0n;
        await dev.setFeatures(f & ~vhostUser);
        return false;
      }
      case R.SET_OWNER:
        expectFds(m, 0);
        return false;
      case R.RESET_OWNER:
      case R.RESET_DEVICE:
        expectFds(m, 0);
        await dev.reset();
        return false;
      case R.GET_PROTOCOL_FEATURES:
        expectSize(m, 0);
        this.#reply(m.request, encodeU64(this.#offered));
        return true;
      case R.SET_PROTOCOL_FEATURES: {
        const f = decodeU64(m);
        const extra = f & ~this.#offered;
        if (extra) {
          throw new RequestRefused(
            `SET_PROTOCOL_FEATURES 0x${f.toString(16)}: bits 0x${extra.toString(16)} not offered`,
          );
        }
        this.#protocolFeatures = f;
        return false;
      }
      case R.GET_QUEUE_NUM: {
        expectSize(m, 0);
        const n = dev.description.deviceId === VirtioDeviceId.NET
          ? Math.max(1, dev.numQueues >> 1)
          : dev.numQueues;
        this.#reply(m.request, encodeU64(n));
        return true;
      }
      case R.GET_MAX_MEM_SLOTS:
        expectSize(m, 0);
        this.#reply(m.request, encodeU64(MAX_MEM_SLOTS));
        return true;
      case R.SET_MEM_TABLE:
        await dev.setMemTable(decodeMemTable(m));
        return false;
      case R.ADD_MEM_REG: {
        expectFds(m, 1);
        await dev.addMemoryRegion(decodeSingleRegion(m, m.fds[0]));
        return false;
      }
      case R.REM_MEM_REG: {
        if (m.fds.length > 1) expectFds(m, 1);
        const r = decodeSingleRegion(m, -1);
        await dev.removeMemoryRegion(r.gpa, r.size);
        return false;
      }
      case R.SET_VRING_NUM: {
        expectFds(m, 0);
        const { index, num } = decodeVringState(m);
        await dev.setVringNum(index, num);
        return false;
      }
      case R.SET_VRING_BASE: {
        expectFds(m, 0);
        const { index, num } = decodeVringState(m);
        await dev.setVringBase(index, num);
        return false;
      }
      case R.SET_VRING_ADDR:
        expectFds(m, 0);
        await dev.setVringAddr(decodeVringAddr(m));
        return false;
      case R.GET_VRING_BASE: {
        expectFds(m, 0);
        const { index } = decodeVringState(m);
        const s = await dev.getVringBase(index);
        this.#reply(m.request, encodeVringState(s));
        return true;
      }
      case R.SET_VRING_KICK:
      case R.SET_VRING_CALL:
      case R.SET_VRING_ERR: {
        const { index, noFd } = decodeVringFileIndex(m);
        expectFds(m, noFd ? 0 : 1);
        if (index >= dev.numQueues) {
          throw new ProtocolError(
            `${frontendRequestName(m.request)}: ring index ${index} is out of range ` +
              `(the device has ${dev.numQueues} rings)`,
          );
        }
        const fd = noFd ? -1 : this.#take(m, 0);
        if (m.request === R.SET_VRING_KICK) {
          await dev.setVringKick(index, fd);
          // Without VHOST_USER_F_PROTOCOL_FEATURES a ring starts on its kick.
          if (!this.#protocolAcked) await dev.setVringEnable(index, true);
        } else if (m.request === R.SET_VRING_CALL) {
          await dev.setVringCall(index, fd);
        } else {
          await dev.setVringErr(index, fd);
        }
        return false;
      }
      case R.SET_VRING_ENABLE: {
        expectFds(m, 0);
        const { index, num } = decodeVringState(m);
        if (index >= dev.numQueues) {
          throw new ProtocolError(
            `SET_VRING_ENABLE: ring index ${index} is out of range (the device has ${dev.numQueues} rings)`,
          );
        }
        await dev.setVringEnable(index, num !== 0);
        return false;
      }
      case R.SET_STATUS:
        expectFds(m, 0);
        await dev.setStatus(Number(decodeU64(m) & 0xffffffffn));
        return false;
      case R.GET_STATUS:
        expectSize(m, 0);
        this.#reply(m.request, encodeU64(dev.status));
        return true;
      case R.GET_CONFIG: {
        const c = decodeConfig(m);
        let data: Uint8Array;
        try {
          data = dev.getConfig(c.offset, c.size);
        } catch (e) {
          dev.events.emit("warn", `GET_CONFIG refused: ${errorMessage(e)}`);
          data = new Uint8Array(0);
        }
        this.#reply(
          m.request,
          encodeConfig({ offset: c.offset, size: data.length, flags: c.flags, data }),
        );
        return true;
      }
      case R.SET_CONFIG: {
        const c = decodeConfig(m);
        dev.setConfig(c.offset, c.data.slice());
        return false;
      }
      case R.SET_LOG_BASE: {
        expectFds(m, 1);
        const { size, offset } = decodeLogDescription(m);
        // The fd stays in the message, which closes it: the mapping outlives it.
        await dev.setLogBase(m.fds[0], size, offset);
        // QEMU waits for a reply with no payload (it sends no NEED_REPLY).
        this.#reply(m.request, new Uint8Array(0));
        return true;
      }
      case R.GET_INFLIGHT_FD: {
        expectFds(m, 0);
        const d = decodeInflightDescription(m);
        const { fd, shape } = await dev.getInflightFd(d.numQueues, d.queueSize);
        try {
          this.#socket.send(encodeReply(m.request, encodeInflightDescription(shape)), [fd]);
        } finally {
          close(fd);
        }
        return true;
      }
      case R.SET_INFLIGHT_FD: {
        expectFds(m, 1);
        // The fd stays in the message, which closes it: the mapping outlives it.
        await dev.setInflightFd(m.fds[0], decodeInflightDescription(m));
        return false;
      }
      case R.SET_LOG_FD:
        // A log eventfd the SDK never signals: taken and closed.
        expectFds(m, 1);
        return false;
      case R.SEND_RARP:
        expectFds(m, 0);
        await dev.announce(decodeRarpMac(m));
        return false;
      case R.IOTLB_MSG: {
        expectFds(m, 0);
        const msg = decodeIotlbMessage(m);
        const limit = BigInt(Number.MAX_SAFE_INTEGER);
        if (msg.type === IotlbMessageType.UPDATE) {
          if (msg.iova + msg.size > limit || msg.uaddr + msg.size > limit) {
            throw new RequestRefused(
              `IOTLB update iova 0x${msg.iova.toString(16)} size 0x${msg.size.toString(16)} ` +
                `uaddr 0x${msg.uaddr.toString(16)}: ends beyond 2^53, outside any memory table`,
            );
          }
          await dev.iotlbUpdate({
            iova: Number(msg.iova),
            size: Number(msg.size),
            uaddr: Number(msg.uaddr),
            perm: msg.perm,
          });
        } else if (msg.type === IotlbMessageType.INVALIDATE) {
          // Nothing lives at or beyond 2^53; a range reaching past it (or a
          // size that wrapped to 0) means "to the end".
          if (msg.iova < limit) {
            const end = msg.iova + msg.size;
            const size = msg.size === 0n || end > limit ? 0 : Number(msg.size);
            await dev.iotlbInvalidate(Number(msg.iova), size);
          }
        } else {
          throw new RequestRefused(
            `IOTLB_MSG of type ${msg.type}: a frontend sends updates (2) and invalidations (3)`,
          );
        }
        return false;
      }
      case R.SET_BACKEND_REQ_FD: {
        expectFds(m, 1);
        // Until the channel is made, the fd stays in the message, which
        // closes it whatever happens.
        const fd = m.fds[0];
        if ((fstat(fd).mode & S_IFMT) !== S_IFSOCK) {
          throw new RequestRefused(`SET_BACKEND_REQ_FD: fd ${fd} is not a socket`);
        }
        const channel = new MessageSocket(fd);
        this.#take(m, 0);
        this.#backend?.close();
        this.#backend = channel;
        return false;
      }
      default:
        throw new RequestRefused(
          `${frontendRequestName(m.request)} is not supported by this backend`,
        );
    }
  }
}
