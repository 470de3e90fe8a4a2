/**
 * classify(): parity with nfqlb's getHashKey() over the reference captures,
 * proof that nothing outside pkt[off, off+len) is read, property tests over
 * random and mutated packets, and hand-written cases for the rules that matter.
 */
import { djb2, hashKey, hashKeyAddresses, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, KEY_LEN } from '../../../src/packet/hashkey';
import {
  classify, PacketInfo, RC_FIRST_FRAGMENT, RC_ICMP_ERROR, RC_ICMP_OTHER, RC_INVALID, RC_LATER_FRAGMENT,
  RC_OTHER_PROTO, RC_UDP_ENCAP,
} from '../../../src/packet/classify';
import { fromHex, readJsonl, toHex } from '../../helpers/reference';
import { prng } from '../../helpers/prng';

interface HashkeyLine {
  i: number;
  hex: string;
  udpencap: number;
  expect: 'parity' | 'correct' | 'reject' | 'robust';
  rc?: number;
  key?: string;
  hash0?: number;
  hash1?: number;
  hashAddr?: number;
  reference?: { rc: number; fragid?: number };
}

const FILES = ['k1', 'k2'];
const LINES: Record<string, HashkeyLine[]> = {};
for (const f of FILES) LINES[f] = readJsonl<HashkeyLine>(`hashkey/${f}.jsonl`);
const ALL: HashkeyLine[] = FILES.flatMap((f) => LINES[f]);

/** Everything classify() reports, as a comparable value. */
function snapshot(info: PacketInfo, off: number) {
  return {
    rc: info.rc,
    key: toHex(info.key),
    ipVersion: info.ipVersion,
    proto: info.proto,
    sport: info.sport,
    dport: info.dport,
    fragId: info.fragId,
    // Relative to the packet start so results at different offsets compare.
    l4Offset: info.l4Offset < 0 ? info.l4Offset : info.l4Offset - off,
    l4Len: info.l4Len,
    icmpType: info.icmpType,
    icmpCode: info.icmpCode,
  };
}


const LEAD = 13;
const TAIL = 80;
const FILLS = ['zero', 'ones', 'random'] as const;
const fillRandom = prng(0xdecaf);

/**
 * Classifies `pkt` (its first `len` bytes) inside a larger buffer at offset
 * LEAD, with the bytes before and after it set to one garbage pattern.
 */
function classifyEmbedded(pkt: Uint8Array, len: number, udpencap: number, fill: (typeof FILLS)[number], info: PacketInfo) {
  const buf = new Uint8Array(LEAD + pkt.length + TAIL);
  if (fill === 'ones') buf.fill(0xff);
  if (fill === 'random') for (let i = 0; i < buf.length; i++) buf[i] = (fillRandom() * 256) | 0;
  buf.set(pkt.subarray(0, len), LEAD);
  // Whatever follows the range in the big buffer is not the packet: garble the
  // real packet's tail too, so a read past `len` sees a different value.
  if (fill !== 'zero') for (let i = LEAD + len; i < LEAD + pkt.length; i++) buf[i] ^= 0x5a;
  classify(buf, LEAD, len, udpencap, info);
  return snapshot(info, LEAD);
}

function classifyTight(pkt: Uint8Array, len: number, udpencap: number, info: PacketInfo) {
  const copy = pkt.slice(0, len);
  classify(copy, 0, len, udpencap, info);
  return snapshot(info, 0);
}

/**
 * The out-of-bounds proof for pkt[0, len): the result of a tight copy equals
 * the result inside every garbage filling. Returns a description of the first
 * difference, or null.
 */
function boundsProof(pkt: Uint8Array, len: number, udpencap: number, info: PacketInfo): string | null {
  const tight = classifyTight(pkt, len, udpencap, info);
  for (const fill of FILLS) {
    const got = classifyEmbedded(pkt, len, udpencap, fill, info);
    const a = JSON.stringify(tight);
    const b = JSON.stringify(got);
    if (a !== b) return `len=${len} fill=${fill}: tight ${a} embedded ${b}`;
  }
  return null;
}

/** Structural invariants of any result. */
function invariants(info: PacketInfo, off: number, len: number): string | null {
  const rc = info.rc;
  if (rc === RC_INVALID) {
    if (info.key.some((b) => b !== 0)) return 'invalid with a non-zero key';
    if (info.l4Offset !== -1 || info.proto !== 0 || info.sport !== 0 || info.dport !== 0) return 'invalid with fields set';
    return null;
  }
  if (rc < 0 || (rc & ~63) !== 0) return `rc out of range ${rc}`;
  if ((rc & RC_LATER_FRAGMENT) !== 0 && rc !== RC_LATER_FRAGMENT) return `later fragment with other bits ${rc}`;
  if ((rc & RC_ICMP_ERROR) !== 0 && (rc & RC_FIRST_FRAGMENT) !== 0) return `fragmented ICMP error ${rc}`;
  if (info.ipVersion !== 4 && info.ipVersion !== 6) return `ipVersion ${info.ipVersion}`;
  if (info.l4Offset !== -1) {
    if (info.l4Offset < off || info.l4Offset >= off + len) return `l4Offset ${info.l4Offset} outside`;
    if (info.l4Offset + info.l4Len !== off + len) return 'l4Len does not reach the packet end';
  }
  const k = info.key;
  if (info.proto !== (k[34] | (k[35] << 8)) && rc !== RC_LATER_FRAGMENT) return 'proto differs from key';
  if (info.sport !== ((k[36] << 8) | k[37]) || info.dport !== ((k[38] << 8) | k[39])) {
    if (rc !== RC_LATER_FRAGMENT) return 'ports differ from key';
  }
  return null;
}

describe('classify: parity with the nfqlb reference (hashkey/k1, k2)', () => {
  const info = new PacketInfo();

  test.each(FILES)('%s: every line', (f) => {
    const counts: Record<string, { total: number; ok: number }> = {};
    const failures: string[] = [];
    for (const line of LINES[f]) {
      const pkt = fromHex(line.hex);
      const c = (counts[line.expect] ??= { total: 0, ok: 0 });
      c.total++;
      let rc: number;
      try {
        rc = classify(pkt, 0, pkt.length, line.udpencap, info);
      } catch (e) {
        failures.push(`${f} i=${line.i} threw ${(e as Error).message}`);
        continue;
      }
      let bad: string | null = null;
      if (line.expect === 'reject') {
        if (rc !== RC_INVALID) bad = `rc ${rc}, want -1`;
      } else if (line.expect === 'robust') {
        bad = invariants(info, 0, pkt.length);
      } else {
        const got = rc === RC_INVALID
          ? { rc }
          : { rc, key: toHex(info.key), hash0: hashKey(info.key, 0), hash1: hashKey(info.key, 1), hashAddr: hashKeyAddresses(info.key) };
        const want = line.rc === RC_INVALID
          ? { rc: line.rc }
          : { rc: line.rc, key: line.key, hash0: line.hash0, hash1: line.hash1, hashAddr: line.hashAddr };
        if (JSON.stringify(got) !== JSON.stringify(want)) bad = `got ${JSON.stringify(got)} want ${JSON.stringify(want)}`;
        else bad = invariants(info, 0, pkt.length);
      }
      if (bad === null) c.ok++;
      else failures.push(`${f} i=${line.i} (${line.expect}) ${bad}`);
    }
    // eslint-disable-next-line no-console
    console.log(`${f}: ${Object.entries(counts).map(([k, v]) => `${k} ${v.ok}/${v.total}`).join(', ')}`);
    expect(failures).toEqual([]);
    expect(LINES[f].length).toBe(920);
    expect(counts.parity.total).toBeGreaterThan(700);
    expect(counts.correct.total).toBeGreaterThan(100);
  });

  test('the reference exercises every classification bit', () => {
    const seen = new Set<number>();
    for (const line of ALL) {
      if ((line.expect === 'parity' || line.expect === 'correct') && line.rc !== undefined) seen.add(line.rc);
    }
    for (const rc of [RC_INVALID, 0, 1, 2, 4, 5, 8, 16, 32]) expect(seen).toContain(rc);
  });

  test("first fragments: fragId is nfqlb's fragid (the wire ident read big-endian)", () => {
    let checked = 0;
    for (const line of ALL) {
      const fragid = line.reference?.fragid;
      if (fragid === undefined || line.rc === RC_INVALID) continue;
      const pkt = fromHex(line.hex);
      classify(pkt, 0, pkt.length, line.udpencap, info);
      // nfqlb stores the raw wire bytes in a little-endian integer.
      const swapped = (((fragid & 0xff) << 24) | ((fragid & 0xff00) << 8) | ((fragid >>> 8) & 0xff00) | (fragid >>> 24)) >>> 0;
      expect(info.rc & RC_FIRST_FRAGMENT).toBe(RC_FIRST_FRAGMENT);
      expect(info.fragId).toBe(swapped);
      checked++;
    }
    expect(checked).toBeGreaterThan(50);
  });

  test('later fragments: fragId equals the id in the key', () => {
    let checked = 0;
    for (const line of ALL) {
      if (line.expect !== 'parity' || line.rc !== RC_LATER_FRAGMENT) continue;
      const pkt = fromHex(line.hex);
      classify(pkt, 0, pkt.length, line.udpencap, info);
      const k = info.key;
      const id = info.ipVersion === 4 ? (k[32] << 8) | k[33] : ((k[32] << 24) | (k[33] << 16) | (k[34] << 8) | k[35]) >>> 0;
      expect(info.fragId).toBe(id);
      expect(info.l4Offset).toBe(-1);
      checked++;
    }
    expect(checked).toBeGreaterThan(100);
  });
});

describe('classify: never reads outside pkt[off, off+len)', () => {
  const info = new PacketInfo();

  test.each(FILES)('%s: whole packets in garbage-filled buffers', (f) => {
    const failures: string[] = [];
    for (const line of LINES[f]) {
      const pkt = fromHex(line.hex);
      const bad = boundsProof(pkt, pkt.length, line.udpencap, info);
      if (bad !== null) failures.push(`i=${line.i} ${bad}`);
    }
    expect(failures).toEqual([]);
  });

  test.each(FILES)('%s: every truncated prefix (len 0..n)', (f) => {
    const failures: string[] = [];
    let runs = 0;
    for (const line of LINES[f]) {
      const pkt = fromHex(line.hex);
      for (let len = 0; len <= pkt.length; len++) {
        const bad = boundsProof(pkt, len, line.udpencap, info) ?? invariants(info, LEAD, len);
        runs++;
        if (bad !== null) {
          failures.push(`i=${line.i} ${bad}`);
          break;
        }
      }
    }
    expect(failures).toEqual([]);
    expect(runs).toBeGreaterThan(50000);
  });

  test('a range that is not inside the buffer is invalid', () => {
    const pkt = fromHex(ALL.find((l) => l.expect === 'parity' && l.rc === 0)!.hex);
    expect(classify(pkt, 0, pkt.length + 1, 0, info)).toBe(RC_INVALID);
    expect(classify(pkt, -1, pkt.length, 0, info)).toBe(RC_INVALID);
    expect(classify(pkt, 1, pkt.length, 0, info)).toBe(RC_INVALID);
    expect(classify(pkt, 0, 0, 0, info)).toBe(RC_INVALID);
    expect(classify(pkt, 0, pkt.length, 0, info)).toBe(0);
  });
});

describe('classify: property tests (seeded)', () => {
  const info = new PacketInfo();
  const refs = ALL.map((l) => ({ pkt: fromHex(l.hex), udpencap: l.udpencap }));

  function check(pkt: Uint8Array, udpencap: number, what: string, failures: string[]): void {
    let bad: string | null;
    try {
      classify(pkt, 0, pkt.length, udpencap, info);
      bad = invariants(info, 0, pkt.length) ?? boundsProof(pkt, pkt.length, udpencap, info);
    } catch (e) {
      bad = `threw ${(e as Error).message}`;
    }
    if (bad !== null && failures.length < 10) failures.push(`${what} ${toHex(pkt)}: ${bad}`);
  }

  test('random packets, mostly with an IPv4/IPv6 version nibble', () => {
    const rnd = prng(1);
    const failures: string[] = [];
    for (let n = 0; n < 3000; n++) {
      const pkt = new Uint8Array((rnd() * 130) | 0);
      for (let i = 0; i < pkt.length; i++) pkt[i] = (rnd() * 256) | 0;
      if (pkt.length > 0 && rnd() < 0.9) pkt[0] = (rnd() < 0.5 ? 0x40 : 0x60) | (pkt[0] & 0x0f);
      // Steer the protocol/next-header byte toward the interesting values.
      const protos = [0, 1, 6, 17, 43, 44, 58, 60, 132, 47];
      const p = protos[(rnd() * protos.length) | 0];
      if (pkt.length > 9 && pkt[0] >> 4 !== 6) {
        pkt[9] = p;
        if (rnd() < 0.7) pkt[0] = 0x45;
        if (rnd() < 0.5) pkt[6] &= 0x20;
      }
      if (pkt.length > 6 && pkt[0] >> 4 === 6) pkt[6] = p;
      check(pkt, rnd() < 0.5 ? 0 : 9899, `random#${n}`, failures);
    }
    expect(failures).toEqual([]);
  });

  test('mutated reference packets: bit flips, truncation, length fields', () => {
    const rnd = prng(2);
    const failures: string[] = [];
    for (let n = 0; n < 4000; n++) {
      const ref = refs[(rnd() * refs.length) | 0];
      let pkt = ref.pkt.slice();
      const kind = n % 4;
      if (kind === 0) {
        const flips = 1 + ((rnd() * 4) | 0);
        for (let j = 0; j < flips; j++) {
          const bit = (rnd() * pkt.length * 8) | 0;
          pkt[bit >> 3] ^= 1 << (bit & 7);
        }
      } else if (kind === 1) {
        pkt = pkt.slice(0, (rnd() * pkt.length) | 0);
      } else if (kind === 2) {
        // Header length / next-header fields, where a parser goes astray.
        const v = pkt[0] >> 4;
        const r = (rnd() * 256) | 0;
        if (v === 4) {
          const which = (rnd() * 3) | 0;
          if (which === 0) pkt[0] = 0x40 | (r & 0x0f);
          else if (which === 1) pkt[2] = r;
          else if (pkt.length > 28) pkt[20 + ((pkt[0] & 0x0f) * 4 - 20) + 8 + (rnd() < 0.5 ? 0 : 1)] = r;
        } else {
          const at = [4, 5, 6, 40, 41, 48, 49, 56, 57][(rnd() * 9) | 0];
          if (at < pkt.length) pkt[at] = r;
        }
      } else {
        // Any byte, any value, then maybe cut.
        pkt[(rnd() * pkt.length) | 0] = (rnd() * 256) | 0;
        if (rnd() < 0.5) pkt = pkt.slice(0, (rnd() * (pkt.length + 1)) | 0);
      }
      check(pkt, ref.udpencap, `mutant#${n}`, failures);
    }
    expect(failures).toEqual([]);
  });
});

// ---------------------------------------------------------------------------
// Hand-written cases. Packets are built field by field so each test shows
// exactly what it depends on.

function ipv4(proto: number, src: number[], dst: number[], payload: number[], opts: { id?: number; frag?: number } = {}): Uint8Array {
  const len = 20 + payload.length;
  const id = opts.id ?? 0x1234;
  const frag = opts.frag ?? 0;
  return Uint8Array.from([
    0x45, 0, len >> 8, len & 0xff, id >> 8, id & 0xff, frag >> 8, frag & 0xff, 64, proto, 0, 0,
    ...src, ...dst, ...payload,
  ]);
}

function ipv6(nxt: number, src: number[], dst: number[], payload: number[]): Uint8Array {
  const len = payload.length;
  return Uint8Array.from([0x60, 0, 0, 0, len >> 8, len & 0xff, nxt, 64, ...src, ...dst, ...payload]);
}

const be16 = (v: number) => [v >> 8, v & 0xff];
const ports = (s: number, d: number) => [...be16(s), ...be16(d)];
const tcp = (s: number, d: number) => [...ports(s, d), 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0];
const udp = (s: number, d: number, body: number[] = []) => [...ports(s, d), ...be16(8 + body.length), 0, 0, ...body];
const sctp = (s: number, d: number) => [...ports(s, d), 0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0];

const CLIENT4 = [198, 51, 100, 2];
const VIP4 = [192, 0, 2, 1];
const OTHER4 = [203, 0, 113, 9];
const CLIENT6 = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
const VIP6 = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const MAPPED = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];

function run(pkt: Uint8Array, udpencap = 0): PacketInfo {
  const info = new PacketInfo();
  classify(pkt, 0, pkt.length, udpencap, info);
  return info;
}

describe('classify: hand-written cases', () => {
  test('IPv4 TCP: key layout, addresses as ::ffff:a.b.c.d, proto little-endian, ports network order', () => {
    const info = run(ipv4(IPPROTO_TCP, CLIENT4, VIP4, tcp(33527, 4000)));
    expect(info.rc).toBe(0);
    expect(Array.from(info.key)).toEqual([...MAPPED, ...CLIENT4, ...MAPPED, ...VIP4, 0, 0, 6, 0, ...ports(33527, 4000)]);
    expect([info.ipVersion, info.proto, info.sport, info.dport]).toEqual([4, 6, 33527, 4000]);
    expect([info.l4Offset, info.l4Len]).toEqual([20, 20]);
    expect([info.icmpType, info.icmpCode, info.fragId]).toEqual([-1, -1, 0]);
  });

  test('SCTP with hash_mode 1 hashes only the ports, so every path of a multihomed association agrees', () => {
    const a = run(ipv4(IPPROTO_SCTP, CLIENT4, VIP4, sctp(5000, 80)));
    const b = run(ipv4(IPPROTO_SCTP, OTHER4, VIP4, sctp(5000, 80)));
    expect(a.rc).toBe(0);
    expect(a.proto).toBe(IPPROTO_SCTP);
    expect(hashKey(a.key, 1)).toBe(djb2(Uint8Array.from(ports(5000, 80)), 0, 4));
    expect(hashKey(a.key, 1)).toBe(hashKey(b.key, 1));
    expect(hashKey(a.key, 0)).not.toBe(hashKey(b.key, 0));
    expect(hashKey(a.key, 0)).toBe(djb2(a.key, 0, KEY_LEN));
    // TCP is not affected by the mode.
    const t = run(ipv4(IPPROTO_TCP, CLIENT4, VIP4, tcp(5000, 80)));
    expect(hashKey(t.key, 1)).toBe(hashKey(t.key, 0));
  });

  test('SCTP over UDP: UDP to the udpencap port is keyed as SCTP on the inner SCTP header', () => {
    const pkt = ipv4(IPPROTO_UDP, CLIENT4, VIP4, udp(40000, 9899, sctp(7000, 7001)));
    const encap = run(pkt, 9899);
    expect(encap.rc).toBe(RC_UDP_ENCAP);
    expect([encap.proto, encap.sport, encap.dport]).toEqual([IPPROTO_SCTP, 7000, 7001]);
    expect(encap.l4Offset).toBe(28);
    expect(encap.l4Len).toBe(12);
    // Without the port (flowlb's first pass), it is plain UDP.
    const plain = run(pkt, 0);
    expect([plain.rc, plain.proto, plain.sport, plain.dport, plain.l4Offset]).toEqual([0, IPPROTO_UDP, 40000, 9899, 20]);
    // The inner SCTP ports must be present.
    expect(run(pkt.slice(0, 28 + 3), 9899).rc).toBe(RC_INVALID);
    expect(run(pkt.slice(0, 28 + 4), 9899).rc).toBe(RC_UDP_ENCAP);
  });

  test('ICMP error: keyed on the embedded datagram with addresses and ports swapped, so it reaches the connection\'s target', () => {
    // The server (VIP:4000) sent to the client (:33527) and the client's side answered "port unreachable".
    const inner = [...ipv4(IPPROTO_UDP, VIP4, CLIENT4, udp(4000, 33527, [1, 2, 3, 4]))];
    const err = run(ipv4(1, OTHER4, VIP4, [3, 3, 0, 0, 0, 0, 0, 0, ...inner]));
    const forward = run(ipv4(IPPROTO_UDP, CLIENT4, VIP4, udp(33527, 4000)));
    expect(err.rc).toBe(RC_ICMP_ERROR);
    expect(toHex(err.key)).toBe(toHex(forward.key));
    expect([err.sport, err.dport, err.proto]).toEqual([33527, 4000, IPPROTO_UDP]);
    expect([err.icmpType, err.icmpCode]).toEqual([3, 3]);
    // l4Offset is the embedded datagram's UDP header: 20 outer + 8 ICMP + 20 inner.
    expect(err.l4Offset).toBe(48);
  });

  test('ICMPv6 packet too big with an embedded TCP segment; SCTP-over-UDP checks the embedded source port', () => {
    const innerTcp = [...ipv6(IPPROTO_TCP, VIP6, CLIENT6, tcp(443, 50000))];
    const e = run(ipv6(58, CLIENT6, VIP6, [2, 0, 0, 0, 0, 0, 5, 0, ...innerTcp]));
    expect(e.rc).toBe(RC_ICMP_ERROR);
    expect(Array.from(e.key.subarray(0, 16))).toEqual(CLIENT6);
    expect(Array.from(e.key.subarray(16, 32))).toEqual(VIP6);
    expect([e.sport, e.dport, e.icmpType]).toEqual([50000, 443, 2]);
    const innerEncap = [...ipv6(IPPROTO_UDP, VIP6, CLIENT6, udp(9899, 40000, sctp(7001, 7000)))];
    const s = run(ipv6(58, CLIENT6, VIP6, [1, 4, 0, 0, 0, 0, 0, 0, ...innerEncap]), 9899);
    expect(s.rc).toBe(RC_ICMP_ERROR | RC_UDP_ENCAP);
    expect([s.proto, s.sport, s.dport]).toEqual([IPPROTO_SCTP, 7000, 7001]);
  });

  test('ICMP echo request: echo id (wire order) in key bytes 32-33, proto 1; echo reply has no id', () => {
    const req = run(ipv4(1, CLIENT4, VIP4, [8, 0, 0, 0, 0xe6, 0x00, 0, 1]));
    expect(req.rc).toBe(RC_ICMP_OTHER);
    expect([req.key[32], req.key[33], req.key[34], req.key[35]]).toEqual([0xe6, 0x00, 1, 0]);
    expect([req.icmpType, req.l4Offset]).toEqual([8, 20]);
    const rep = run(ipv4(1, CLIENT4, VIP4, [0, 0, 0, 0, 0xe6, 0x00, 0, 1]));
    expect([rep.rc, rep.key[32], rep.key[33], rep.key[34]]).toEqual([RC_ICMP_OTHER, 0, 0, 1]);
    // The id must be inside the packet (nfqlb reads it anyway).
    expect(run(ipv4(1, CLIENT4, VIP4, [8, 0, 0, 0, 0xe6])).rc).toBe(RC_INVALID);
    const v6 = run(ipv6(58, CLIENT6, VIP6, [128, 0, 0, 0, 0x12, 0x34, 0, 1]));
    expect([v6.rc, v6.key[32], v6.key[33], v6.key[34], v6.icmpType]).toEqual([RC_ICMP_OTHER, 0x12, 0x34, 58, 128]);
  });

  test('other protocols: addresses and proto only', () => {
    const gre = run(ipv4(47, CLIENT4, VIP4, [0, 0, 0x08, 0x00]));
    expect([gre.rc, gre.proto, gre.sport, gre.dport, gre.l4Offset]).toEqual([RC_OTHER_PROTO, 47, 0, 0, -1]);
  });

  test('IPv4 fragments: first keeps the ports and the id; later = addresses + id, and both name the same datagram', () => {
    const first = run(ipv4(IPPROTO_UDP, CLIENT4, VIP4, udp(1000, 2000, [9, 9, 9, 9]), { id: 0xabcd, frag: 0x2000 }));
    expect([first.rc, first.sport, first.dport, first.fragId]).toEqual([RC_FIRST_FRAGMENT, 1000, 2000, 0xabcd]);
    // nfqlb's key for a first fragment has no id: it hashes like an unfragmented packet.
    expect([first.key[32], first.key[33]]).toEqual([0, 0]);
    const later = run(ipv4(IPPROTO_UDP, CLIENT4, VIP4, [1, 2, 3, 4, 5, 6, 7, 8], { id: 0xabcd, frag: 185 }));
    expect(later.rc).toBe(RC_LATER_FRAGMENT);
    expect(Array.from(later.key.subarray(32))).toEqual([0xab, 0xcd, 0, 0, 0, 0, 0, 0]);
    expect([later.proto, later.sport, later.dport, later.fragId, later.l4Offset]).toEqual([0, 0, 0, 0xabcd, -1]);
    expect(toHex(later.key.subarray(0, 32))).toBe(toHex(first.key.subarray(0, 32)));
    // Last fragment (MF clear, offset set) is a later fragment too.
    expect(run(ipv4(IPPROTO_UDP, CLIENT4, VIP4, [1, 2, 3, 4], { frag: 370 })).rc).toBe(RC_LATER_FRAGMENT);
    // A fragmented ICMP error is refused.
    expect(run(ipv4(1, CLIENT4, VIP4, [3, 3, 0, 0, 0, 0, 0, 0], { frag: 0x2000 })).rc).toBe(RC_INVALID);
  });

  test('IPv6 fragments: first fragment ports come from the L4 header after the fragment header (divergence)', () => {
    const ident = [0x9b, 0x8e, 0x79, 0xbb];
    const fh = (off: number, m: number) => [IPPROTO_UDP, 0, ...be16((off << 3) | m), ...ident];
    const first = run(ipv6(44, CLIENT6, VIP6, [...fh(0, 1), ...udp(1111, 2222, [1, 2, 3, 4])]));
    expect([first.rc, first.proto, first.sport, first.dport]).toEqual([RC_FIRST_FRAGMENT, IPPROTO_UDP, 1111, 2222]);
    expect(first.fragId).toBe(0x9b8e79bb);
    expect(first.l4Offset).toBe(48);
    const later = run(ipv6(44, CLIENT6, VIP6, [...fh(3, 0), 1, 2, 3, 4, 5, 6, 7, 8]));
    expect(later.rc).toBe(RC_LATER_FRAGMENT);
    expect(Array.from(later.key.subarray(32))).toEqual([...ident, 0, 0, 0, 0]);
    expect(later.fragId).toBe(0x9b8e79bb);
    expect(toHex(later.key.subarray(0, 32))).toBe(toHex(first.key.subarray(0, 32)));
  });

  test('IPv6 extension headers are (hdrlen+1)*8 bytes (divergence: nfqlb rejects hdrlen 0)', () => {
    const hbh = [60, 0, 1, 4, 0, 0, 0, 0]; // hop-by-hop, 8 bytes, next: destination options
    const dst = [IPPROTO_TCP, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]; // 16 bytes, next: TCP
    const info = run(ipv6(0, CLIENT6, VIP6, [...hbh, ...dst, ...tcp(5555, 80)]));
    expect([info.rc, info.proto, info.sport, info.dport, info.l4Offset]).toEqual([0, IPPROTO_TCP, 5555, 80, 64]);
  });

  test('bounds are exact: valid when the bytes the key needs are present, nfqlb\'s extra byte not required', () => {
    const pkt = ipv4(IPPROTO_TCP, CLIENT4, VIP4, tcp(1, 2));
    expect(run(pkt.slice(0, 24)).rc).toBe(0);
    expect(run(pkt.slice(0, 23)).rc).toBe(RC_INVALID);
    expect(run(pkt.slice(0, 19)).rc).toBe(RC_INVALID);
    // A bare IPv4 header of an ICMP packet: addresses + proto (reference k1 i=904).
    const bare = run(ipv4(1, CLIENT4, VIP4, []));
    expect([bare.rc, bare.proto, bare.icmpType, bare.l4Offset]).toEqual([RC_ICMP_OTHER, 1, -1, -1]);
    // ihl below 5 is invalid.
    const badIhl = pkt.slice();
    badIhl[0] = 0x44;
    expect(run(badIhl).rc).toBe(RC_INVALID);
  });

  test('a version nibble other than 6 is parsed as IPv4, as the reference did (k1 i=905)', () => {
    const pkt = ipv4(IPPROTO_TCP, CLIENT4, VIP4, tcp(1, 2));
    pkt[0] = 0x55;
    const info = run(pkt);
    expect([info.rc, info.ipVersion, info.sport, info.dport]).toEqual([0, 4, 1, 2]);
  });

  test('invalid resets every field of a reused PacketInfo', () => {
    const info = new PacketInfo();
    const good = ipv4(IPPROTO_TCP, CLIENT4, VIP4, tcp(1, 2));
    classify(good, 0, good.length, 0, info);
    expect(info.rc).toBe(0);
    classify(good, 0, 22, 0, info);
    expect(snapshot(info, 0)).toEqual({
      rc: -1, key: '00'.repeat(40), ipVersion: 4, proto: 0, sport: 0, dport: 0, fragId: 0,
      l4Offset: -1, l4Len: 0, icmpType: -1, icmpCode: -1,
    });
  });
});

// ---------------------------------------------------------------------------
// IPv6 fragments per RFC 8200 with extension headers before the fragment
// header, and the fragment geometry the reassembly bookkeeping reads.

describe('classify: IPv6 fragments after extension headers (RFC 8200)', () => {
  const ident = [0xfe, 0xdc, 0xba, 0x98];
  /** Fragment header: next header, offset in 8-byte units, M flag. */
  const frag = (nxt: number, off: number, m: number): number[] => [nxt, 0, ...be16((off << 3) | m), ...ident];
  /** An extension header of (hdrlen+1)*8 bytes: next header, hdrlen, then padding. */
  const ext = (nxt: number, hdrlen: number): number[] => [nxt, hdrlen, ...Array((hdrlen + 1) * 8 - 2).fill(1)];
  const HOPOPTS = 0;
  const ROUTING = 43;
  const FRAGMENT = 44;
  const DSTOPTS = 60;

  test('hop-by-hop, routing and destination options before the fragment header: ports from the UDP header after it, 32-bit id', () => {
    // 8 + 24 + 16 bytes of extension headers, each (hdrlen+1)*8 (nfqlb would walk hdrlen*8 and reject hdrlen 0).
    const chain = [...ext(ROUTING, 0), ...ext(DSTOPTS, 2), ...ext(FRAGMENT, 1)];
    const body = udp(5353, 53, Array(32).fill(7));
    const first = run(ipv6(HOPOPTS, CLIENT6, VIP6, [...chain, ...frag(IPPROTO_UDP, 0, 1), ...body]));
    expect([first.rc, first.proto, first.sport, first.dport]).toEqual([RC_FIRST_FRAGMENT, IPPROTO_UDP, 5353, 53]);
    expect(first.l4Offset).toBe(40 + 48 + 8);
    expect(first.fragId).toBe(0xfedcba98);
    expect([first.fragOffset, first.fragLength, first.fragMore]).toEqual([0, body.length, 1]);
    // The key is the 5-tuple's, as for an unfragmented packet: no id in it.
    const whole = run(ipv6(IPPROTO_UDP, CLIENT6, VIP6, body));
    expect(toHex(first.key)).toBe(toHex(whole.key));

    const later = run(ipv6(HOPOPTS, CLIENT6, VIP6, [...chain, ...frag(IPPROTO_UDP, 5, 0), 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]));
    expect(later.rc).toBe(RC_LATER_FRAGMENT);
    expect(later.fragId).toBe(0xfedcba98);
    expect(Array.from(later.key.subarray(32))).toEqual([...ident, 0, 0, 0, 0]);
    expect(toHex(later.key.subarray(0, 32))).toBe(toHex(first.key.subarray(0, 32)));
    expect([later.fragOffset, later.fragLength, later.fragMore]).toEqual([40, 10, 0]);
  });

  test('a destination options header after the fragment header (fragmentable part) is walked too', () => {
    const first = run(ipv6(FRAGMENT, CLIENT6, VIP6, [...frag(DSTOPTS, 0, 1), ...ext(IPPROTO_TCP, 0), ...tcp(40000, 443)]));
    expect([first.rc, first.proto, first.sport, first.dport, first.l4Offset]).toEqual([RC_FIRST_FRAGMENT, IPPROTO_TCP, 40000, 443, 56]);
    expect([first.fragOffset, first.fragLength, first.fragMore]).toEqual([0, 8 + 20, 1]);
  });

  test('the first fragment names the same datagram as the later ones with or without extension headers', () => {
    const withExt = run(ipv6(HOPOPTS, CLIENT6, VIP6, [...ext(FRAGMENT, 0), ...frag(IPPROTO_UDP, 0, 1), ...udp(1, 2, [0, 0, 0, 0, 0, 0, 0, 0])]));
    const without = run(ipv6(FRAGMENT, CLIENT6, VIP6, [...frag(IPPROTO_UDP, 2, 1), 0, 0, 0, 0, 0, 0, 0, 0]));
    expect([withExt.rc, without.rc]).toEqual([RC_FIRST_FRAGMENT, RC_LATER_FRAGMENT]);
    expect(withExt.fragId).toBe(without.fragId);
    expect(toHex(withExt.key.subarray(0, 32))).toBe(toHex(without.key.subarray(0, 32)));
  });

  test('an extension header chain cut short, or a fragment header cut short, is invalid; nothing is read past the end', () => {
    const full = ipv6(HOPOPTS, CLIENT6, VIP6, [...ext(ROUTING, 1), ...ext(FRAGMENT, 0), ...frag(IPPROTO_UDP, 0, 1), ...udp(1, 2)]);
    // Cut inside the routing header, inside the fragment header, inside the UDP ports.
    for (const cut of [41, 40 + 16 + 4, 40 + 16 + 8 + 6, 40 + 16 + 8 + 8 + 3]) {
      const pkt = new Uint8Array(full.buffer.slice(0, cut));
      expect(run(pkt).rc).toBe(RC_INVALID);
    }
    expect(run(full).rc).toBe(RC_FIRST_FRAGMENT);
  });

  test("fragment geometry comes from the headers' length fields, so a packet cut by the copy range still counts whole", () => {
    const data = Array(1232).fill(3);
    const pkt = ipv6(FRAGMENT, CLIENT6, VIP6, [...frag(IPPROTO_UDP, 0, 1), ...udp(7, 8, data)]);
    const cut = run(pkt.subarray(0, 100));
    expect([cut.rc, cut.fragOffset, cut.fragLength, cut.fragMore]).toEqual([RC_FIRST_FRAGMENT, 0, 8 + data.length, 1]);
    const v4 = run(ipv4(IPPROTO_UDP, CLIENT4, VIP4, Array(800).fill(0), { frag: 0x2000 | 185 }).subarray(0, 40));
    expect([v4.rc, v4.fragOffset, v4.fragLength, v4.fragMore]).toEqual([RC_LATER_FRAGMENT, 185 * 8, 800, 1]);
    const last4 = run(ipv4(IPPROTO_UDP, CLIENT4, VIP4, Array(16).fill(0), { frag: 370 }));
    expect([last4.fragOffset, last4.fragLength, last4.fragMore]).toEqual([370 * 8, 16, 0]);
    // A payload length shorter than the headers: the length is unknown (-1), the key still valid.
    const bogus = ipv6(FRAGMENT, CLIENT6, VIP6, [...frag(IPPROTO_UDP, 1, 1), 1, 2, 3, 4]);
    bogus[4] = 0;
    bogus[5] = 2;
    expect([run(bogus).rc, run(bogus).fragLength]).toEqual([RC_LATER_FRAGMENT, -1]);
    // Not a fragment: no geometry.
    const plain = run(ipv6(IPPROTO_UDP, CLIENT6, VIP6, udp(1, 2)));
    expect([plain.fragOffset, plain.fragLength, plain.fragMore]).toEqual([0, -1, 0]);
  });
});
