import assert from "node:assert/strict";
import {
  ArpOp,
  buildArpReply,
  buildArpRequest,
  buildEthernet,
  buildIcmpEcho,
  buildUdp,
  EtherType,
  FrameError,
  parseArp,
  parseEthernet,
  parseIcmpEcho,
  parseIpv4,
  parseMac,
  parseUdp,
  respond,
} from "@vhost-mdev/testing";

const A = { mac: "02:00:00:00:00:01", ip: "10.0.0.1" };
const B = { mac: "02:00:00:00:00:02", ip: "10.0.0.2" };

// The checksum itself is sdk/net's, tested in tests/net/checksum_test.ts.

Deno.test("Ethernet frames are padded to 60 bytes and parse back", () => {
  const f = buildEthernet({
    dst: B.mac,
    src: A.mac,
    etherType: 0x88b5,
    payload: new Uint8Array([9, 8]),
  });
  assert.equal(f.length, 60);
  assert.deepEqual([...f.subarray(0, 14)], [2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x88, 0xb5]);
  const e = parseEthernet(f);
  assert.equal(e.dst, B.mac);
  assert.equal(e.src, A.mac);
  assert.equal(e.etherType, 0x88b5);
  assert.equal(e.vlan, -1);
  assert.deepEqual([...e.payload.subarray(0, 3)], [9, 8, 0]);
  assert.throws(() => parseEthernet(new Uint8Array(13)), FrameError);
  assert.throws(() => parseMac("02:00:00:00:00"), /not a MAC/);
  const tagged = new Uint8Array(64);
  tagged.set([0x81, 0x00, 0x00, 0x05, 0x08, 0x06], 12);
  assert.deepEqual([parseEthernet(tagged).vlan, parseEthernet(tagged).etherType], [
    5,
    EtherType.ARP,
  ]);
});

Deno.test("ARP request and reply have the RFC 826 layout", () => {
  const req = buildArpRequest({ srcMac: A.mac, srcIp: A.ip, targetIp: B.ip });
  assert.equal(parseEthernet(req).dst, "ff:ff:ff:ff:ff:ff");
  assert.deepEqual([...req.subarray(12, 22)], [0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1]);
  assert.deepEqual([...req.subarray(38, 42)], [10, 0, 0, 2]);
  const arp = parseArp(parseEthernet(req).payload);
  assert.deepEqual(arp, {
    op: ArpOp.REQUEST,
    senderMac: A.mac,
    senderIp: A.ip,
    targetMac: "00:00:00:00:00:00",
    targetIp: B.ip,
  });
  const rep = parseArp(
    parseEthernet(buildArpReply({ srcMac: B.mac, srcIp: B.ip, dstMac: A.mac, dstIp: A.ip }))
      .payload,
  );
  assert.equal(rep.op, ArpOp.REPLY);
  assert.equal(rep.senderMac, B.mac);
  assert.throws(() => parseArp(new Uint8Array(27)), FrameError);
});

Deno.test("ICMP echo round trip with checksums, and corruption is caught", () => {
  const data = new TextEncoder().encode("hello, virtio");
  const ping = buildIcmpEcho({
    type: "request",
    id: 0x1234,
    seq: 7,
    data,
    srcMac: A.mac,
    dstMac: B.mac,
    srcIp: A.ip,
    dstIp: B.ip,
  });
  const ip = parseIpv4(parseEthernet(ping).payload);
  assert.equal(ip.totalLength, 20 + 8 + data.length);
  assert.equal(ip.ttl, 64);
  const p = parseIcmpEcho(ping);
  assert.equal(p.type, "request");
  assert.equal(p.id, 0x1234);
  assert.equal(p.seq, 7);
  assert.deepEqual(p.data, data);
  const bad = ping.slice();
  bad[14 + 20 + 8] ^= 1;
  assert.throws(() => parseIcmpEcho(bad), /ICMP echo: bad checksum/);
  const badIp = ping.slice();
  badIp[14 + 8] ^= 1; // TTL
  assert.throws(() => parseIcmpEcho(badIp), /bad header checksum/);
});

Deno.test("respond answers ARP and ping for its address only", () => {
  const arpReply = respond(buildArpRequest({ srcMac: A.mac, srcIp: A.ip, targetIp: B.ip }), B);
  assert.ok(arpReply);
  const a = parseArp(parseEthernet(arpReply).payload);
  assert.deepEqual([a.op, a.senderMac, a.senderIp, a.targetMac, a.targetIp], [
    2,
    B.mac,
    B.ip,
    A.mac,
    A.ip,
  ]);
  assert.equal(parseEthernet(arpReply).dst, A.mac);
  assert.equal(
    respond(buildArpRequest({ srcMac: A.mac, srcIp: A.ip, targetIp: "10.0.0.9" }), B),
    null,
  );

  const data = new Uint8Array([1, 2, 3, 4, 5]);
  const ping = buildIcmpEcho({
    type: "request",
    id: 9,
    seq: 3,
    data,
    srcMac: A.mac,
    dstMac: B.mac,
    srcIp: A.ip,
    dstIp: B.ip,
  });
  const pong = respond(ping, B);
  assert.ok(pong);
  const r = parseIcmpEcho(pong);
  assert.deepEqual(
    [r.type, r.id, r.seq, r.srcMac, r.dstMac, r.srcIp, r.dstIp],
    ["reply", 9, 3, B.mac, A.mac, B.ip, A.ip],
  );
  assert.deepEqual(r.data, data);
  assert.equal(respond(ping, { mac: B.mac, ip: "10.0.0.3" }), null);
  assert.equal(respond(new Uint8Array(5), B), null);
  assert.equal(respond(pong, A), null); // a reply is not answered
});

Deno.test("UDP frames carry a checksum that parseUdp verifies", () => {
  const f = buildUdp({
    srcMac: A.mac,
    dstMac: B.mac,
    srcIp: A.ip,
    dstIp: B.ip,
    srcPort: 9,
    dstPort: 9,
    data: new Uint8Array([0xaa, 0xbb, 0xcc]),
  });
  assert.equal(f.length, 60);
  const u = parseUdp(f);
  assert.deepEqual([u.srcPort, u.dstPort, [...u.data]], [9, 9, [0xaa, 0xbb, 0xcc]]);
  const bad = f.slice();
  bad[14 + 20 + 8] ^= 0xff;
  assert.throws(() => parseUdp(bad), /UDP: bad checksum/);
});
