import assert from "node:assert/strict";
import { MAX_REPLY_SIZE, respond } from "@vhost-mdev/sdk/net";
import {
  buildArpReply,
  buildArpRequest,
  buildIcmpEcho,
  buildUdp,
  parseArp,
  parseEthernet,
  parseIcmpEcho,
  parseIpv4,
} from "@vhost-mdev/testing";

const ME = { mac: "02:00:00:00:00:02", ip: "10.0.0.2" };
const PEER = { mac: "02:00:00:00:00:01", ip: "10.0.0.1" };
const PEER_ARP = { srcMac: PEER.mac, srcIp: PEER.ip };
const MAC = new Uint8Array([2, 0, 0, 0, 0, 2]);
const IP = new Uint8Array([10, 0, 0, 2]);

/** The responder's answer to `frame` placed at `at` of a larger buffer, or null. */
function answer(frame: Uint8Array, at = 0): Uint8Array | null {
  const inBuf = new Uint8Array(at + frame.length + 3).fill(0x5a);
  inBuf.set(frame, at);
  const out = new Uint8Array(7 + MAX_REPLY_SIZE).fill(0xa5);
  const n = respond(inBuf, at, frame.length, out, 7, MAC, IP);
  return n === 0 ? null : out.slice(7, 7 + n);
}

function ping(dstIp: string, data = new Uint8Array([1, 2, 3, 4, 5])): Uint8Array {
  return buildIcmpEcho({
    type: "request",
    id: 0x1234,
    seq: 7,
    data,
    srcMac: PEER.mac,
    dstMac: ME.mac,
    srcIp: PEER.ip,
    dstIp,
  });
}

Deno.test("responder: answers an ARP request for its address", () => {
  const reply = answer(buildArpRequest({ srcMac: PEER.mac, srcIp: PEER.ip, targetIp: ME.ip }), 5);
  assert.ok(reply);
  assert.equal(reply.length, 42);
  const eth = parseEthernet(reply);
  assert.deepEqual([eth.dst, eth.src, eth.etherType], [PEER.mac, ME.mac, 0x0806]);
  const a = parseArp(eth.payload);
  assert.deepEqual(
    [a.op, a.senderMac, a.senderIp, a.targetMac, a.targetIp],
    [2, ME.mac, ME.ip, PEER.mac, PEER.ip],
  );
});

Deno.test("responder: answers an ICMP echo request with a checksummed echo reply", () => {
  for (const size of [5, 56, 1400]) {
    const data = new Uint8Array(size).map((_, i) => i * 3);
    const reply = answer(ping(ME.ip, data), 3);
    assert.ok(reply, `a ${size}-byte ping`);
    const e = parseIcmpEcho(reply); // verifies the IPv4 and ICMP checksums
    assert.deepEqual(
      [e.type, e.id, e.seq, e.srcMac, e.dstMac, e.srcIp, e.dstIp],
      ["reply", 0x1234, 7, ME.mac, PEER.mac, ME.ip, PEER.ip],
    );
    assert.deepEqual(e.data, data);
    assert.equal(parseIpv4(parseEthernet(reply).payload).ttl, 64);
  }
});

Deno.test("responder: ignores what is not an ARP request or echo request for its address", () => {
  const ignored: [string, Uint8Array][] = [
    ["ARP for another address", buildArpRequest({ ...PEER_ARP, targetIp: "10.0.0.9" })],
    [
      "an ARP reply",
      buildArpReply({ srcMac: PEER.mac, srcIp: PEER.ip, dstMac: ME.mac, dstIp: ME.ip }),
    ],
    ["a ping for another address", ping("10.0.0.3")],
    [
      "an echo reply",
      buildIcmpEcho({
        type: "reply",
        id: 1,
        seq: 1,
        data: new Uint8Array(4),
        srcMac: PEER.mac,
        dstMac: ME.mac,
        srcIp: PEER.ip,
        dstIp: ME.ip,
      }),
    ],
    [
      "UDP",
      buildUdp({
        srcMac: PEER.mac,
        dstMac: ME.mac,
        srcIp: PEER.ip,
        dstIp: ME.ip,
        srcPort: 7,
        dstPort: 7,
        data: new Uint8Array(8),
      }),
    ],
    ["IPv6", ipv6()],
    ["a runt", new Uint8Array(10)],
    ["a truncated ping", ping(ME.ip).subarray(0, 14 + 20 + 4)],
    ["a fragment", fragment(ping(ME.ip))],
  ];
  for (const [what, frame] of ignored) assert.equal(answer(frame), null, what);
});

function ipv6(): Uint8Array {
  const f = ping(ME.ip);
  f[12] = 0x86;
  f[13] = 0xdd;
  return f;
}

function fragment(frame: Uint8Array): Uint8Array {
  const f = frame.slice();
  f[14 + 6] |= 0x20; // more fragments
  return f;
}
