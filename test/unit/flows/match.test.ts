/**
 * The per-flow test (match.ts) that the linear walk and the index share:
 * port sets, CIDR sets over the key's address words, the protocol mask, byte
 * matches and the promiscuous-ping rule — case by case, and flowContains()
 * against a model of nfqlb's rule on the reference capture's real packets
 * (test/fixtures/reference/hashkey/k1: TCP, UDP, SCTP, ICMP, fragments,
 * IPv6 with extension headers, truncated packets).
 */
import { inetNtop6 } from '../../../src/base/inet';
import {
  flowContains, Flow, headerLength, inCidrs, inRanges, isPromiscuousPing, loadAddressWords, matchBytes, protoBit,
  PROTO_BIT_SCTP, PROTO_BIT_TCP, PROTO_BIT_UDP,
} from '../../../src/flows/match';
import { compileFlow, type FlowDefinition } from '../../../src/flows/parse';
import { classify, PacketInfo, RC_INVALID } from '../../../src/packet/classify';
import { IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, KEY_ID, keyDport, keyProto, keySport } from '../../../src/packet/hashkey';
import { icmpEcho, ipv4, ipv6, tcp, udp } from '../../helpers/packets';
import { prng } from '../../helpers/prng';
import { readJsonl, referencePath } from '../../helpers/reference';

function flow(def: Omit<FlowDefinition<string>, 'name' | 'target'>): Flow<string> {
  const f = compileFlow<string>({ name: 'f', target: 't', ...def });
  if (typeof f === 'string') throw new Error(`compileFlow refused ${JSON.stringify(def)}: ${f}`);
  return f;
}

function classified(pkt: Uint8Array, udpencap = 0): PacketInfo {
  const info = new PacketInfo();
  classify(pkt, 0, pkt.length, udpencap, info);
  return info;
}

/** Whether flow f contains the packet, as the walk calls flowContains(). */
function contains(f: Flow<string>, info: PacketInfo, pkt: Uint8Array, ping = false): boolean {
  const w = new Int32Array(8);
  loadAddressWords(info.key, w);
  const proto = keyProto(info.key);
  return flowContains(f, w, proto, keySport(info.key), keyDport(info.key), ping && isPromiscuousPing(info.key, proto), info, pkt);
}

describe('the parts of the test', () => {
  test('protocol bits and the header a byte match may address', () => {
    expect([IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP, IPPROTO_ICMP].map(protoBit)).toEqual([PROTO_BIT_TCP, PROTO_BIT_UDP, PROTO_BIT_SCTP, 0]);
    expect([IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP, IPPROTO_ICMPV6].map(headerLength)).toEqual([20, 8, 12, 0]);
  });

  test('inRanges = a scan of the pairs, on random sorted disjoint sets and every port at their edges', () => {
    const rnd = prng(3);
    for (let round = 0; round < 200; round++) {
      const pairs: number[] = [];
      let at = 1 + Math.floor(rnd() * 100);
      while (at <= 65535 && pairs.length < 2 * 20) {
        const hi = Math.min(65535, at + Math.floor(rnd() * (rnd() < 0.3 ? 5000 : 3)));
        pairs.push(at, hi);
        at = hi + 2 + Math.floor(rnd() * 3000);
      }
      const r = Int32Array.from(pairs);
      const probes = [0, 65535, ...pairs.flatMap((p) => [p - 1, p, p + 1])];
      for (const v of probes) {
        let want = false;
        for (let i = 0; i < pairs.length; i += 2) if (v >= pairs[i] && v <= pairs[i + 1]) want = true;
        if (inRanges(r, v) !== want) throw new Error(`inRanges([${pairs.join(',')}], ${v}) should be ${want}`);
      }
    }
    expect(inRanges(new Int32Array(0), 80)).toBe(false);
  });

  test('address words: big-endian, source 0-3, destination 4-7', () => {
    const info = classified(ipv4('192.0.2.1', '198.51.100.2', IPPROTO_UDP, udp(1, 2)));
    const w = new Int32Array(8);
    loadAddressWords(info.key, w);
    expect(Array.from(w)).toEqual([0, 0, 0xffff, (0xc0000201 | 0), 0, 0, 0xffff, (0xc6336402 | 0)]);
  });

  test('inCidrs: prefix edges, IPv4 inside ::ffff:0:0/96, any of several', () => {
    const w = new Int32Array(8);
    const at = (addr: string, cidrs: string): boolean => {
      const info = classified(addr.includes(':') ? ipv6('2001:db8::99', addr, IPPROTO_UDP, udp(1, 2)) : ipv4('203.0.113.99', addr, IPPROTO_UDP, udp(1, 2)));
      loadAddressWords(info.key, w);
      return inCidrs(flow({ dsts: cidrs }).dsts as Int32Array, w, 4);
    };
    expect(at('192.0.2.255', '192.0.2.0/24')).toBe(true);
    expect(at('192.0.3.0', '192.0.2.0/24')).toBe(false);
    expect(at('192.0.2.1', '::ffff:192.0.2.0/120')).toBe(true);
    expect(at('192.0.2.1', '0.0.0.0/0')).toBe(true);
    expect(at('2001:db8::1', '0.0.0.0/0')).toBe(false); // /0 of IPv4 is ::ffff:0:0/96
    expect(at('2001:db8::1', '::/0')).toBe(true);
    expect(at('2001:db8:0:0:7fff:ffff:ffff:ffff', '2001:db8::/65')).toBe(true);
    expect(at('2001:db8:0:0:8000::', '2001:db8::/65')).toBe(false);
    expect(at('2001:db8::2', '2001:db8::1/128,198.51.100.0/24,2001:db8::2/128')).toBe(true);
  });

  test('promiscuous ping: ICMP and ICMPv6 with a non-zero echo id', () => {
    const key = new Uint8Array(40);
    expect(isPromiscuousPing(key, IPPROTO_ICMP)).toBe(false);
    key[KEY_ID + 1] = 1;
    expect(isPromiscuousPing(key, IPPROTO_ICMP)).toBe(true);
    expect(isPromiscuousPing(key, IPPROTO_ICMPV6)).toBe(true);
    expect(isPromiscuousPing(key, IPPROTO_UDP)).toBe(false);
    const echo = classified(ipv4('192.0.2.1', '198.51.100.2', IPPROTO_ICMP, icmpEcho(0x1234)));
    expect(isPromiscuousPing(echo.key, IPPROTO_ICMP)).toBe(true);
  });

  test('matchBytes: 1, 2 and 4 bytes, masks, statements of another protocol ignored, the whole header needed', () => {
    const syn = ipv4('192.0.2.1', '198.51.100.2', IPPROTO_TCP, tcp(1000, 80, 0x02));
    const info = classified(syn);
    const m = (s: string): Uint32Array => flow({ match: s }).match as Uint32Array;
    expect(matchBytes(m('tcp[13:1]&0x02=0x02'), IPPROTO_TCP, info, syn)).toBe(true);
    expect(matchBytes(m('tcp[13:1]&0x10=0x10'), IPPROTO_TCP, info, syn)).toBe(false);
    expect(matchBytes(m('tcp[0:2]=1000,tcp[2:2]=80'), IPPROTO_TCP, info, syn)).toBe(true);
    expect(matchBytes(m('tcp[0:4]=0x03e80050'), IPPROTO_TCP, info, syn)).toBe(true);
    expect(matchBytes(m('tcp[0:4]=0x03e80051'), IPPROTO_TCP, info, syn)).toBe(false);
    expect(matchBytes(m('udp[0:2]=1,sctp[0:1]=9'), IPPROTO_TCP, info, syn)).toBe(true);
    // A TCP header cut to 19 bytes: nothing can be read, nothing matches.
    const short = syn.slice(0, syn.length - 1);
    expect(matchBytes(m('tcp[0:1]=3'), IPPROTO_TCP, info, short)).toBe(false);
    // Protocols without a byte-match header pass.
    expect(matchBytes(m('tcp[0:1]=3'), IPPROTO_ICMP, info, syn)).toBe(true);
  });

  test('flowContains: the protocol mask and the ports; a promiscuous ping only by its addresses', () => {
    const syn = ipv4('192.0.2.1', '198.51.100.2', IPPROTO_TCP, tcp(1000, 80));
    const s = classified(syn);
    expect(contains(flow({ protocols: 'tcp', dports: '80', sports: '1000' }), s, syn)).toBe(true);
    expect(contains(flow({ protocols: 'udp', dports: '80' }), s, syn)).toBe(false);
    expect(contains(flow({ protocols: 'tcp', dports: '81-90' }), s, syn)).toBe(false);
    expect(contains(flow({ protocols: 'tcp', sports: '1-999' }), s, syn)).toBe(false);
    expect(contains(flow({ srcs: '192.0.2.1/32', dsts: '198.51.100.0/24' }), s, syn)).toBe(true);
    expect(contains(flow({ srcs: '192.0.2.2/32' }), s, syn)).toBe(false);
    const ping = ipv4('192.0.2.1', '198.51.100.2', IPPROTO_ICMP, icmpEcho(7));
    const p = classified(ping);
    const tcpOnly = flow({ protocols: 'tcp', dports: '80', dsts: '198.51.100.2/32' });
    expect(contains(tcpOnly, p, ping, false)).toBe(false);
    expect(contains(tcpOnly, p, ping, true)).toBe(true);
    expect(contains(flow({ protocols: 'tcp', dsts: '198.51.100.3/32' }), p, ping, true)).toBe(false);
  });
});

describe('flowContains on the reference capture', () => {
  interface Line {
    hex: string;
    udpencap: number;
  }
  const lines = readJsonl<Line>(referencePath('hashkey', 'k1.jsonl'));

  test('= a model of the rule (bigint prefixes, port and protocol lists) for random flows over real packets', () => {
    const rnd = prng(11);
    const packets = lines
      .map((l) => Uint8Array.from(Buffer.from(l.hex, 'hex')))
      .map((pkt, i) => ({ pkt, info: classified(pkt, lines[i].udpencap) }))
      .filter((p) => p.info.rc !== RC_INVALID);
    expect(packets.length).toBeGreaterThan(500);
    const addrOf = (key: Uint8Array, at: number): bigint => BigInt(`0x${Buffer.from(key.subarray(at, at + 16)).toString('hex')}`);
    const inPrefix = (a: bigint, net: bigint, len: number): boolean => len === 0 || a >> BigInt(128 - len) === net >> BigInt(128 - len);
    const protos = ['tcp', 'udp', 'sctp'];
    const numbers = [IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP];
    let hits = 0;
    let misses = 0;
    for (let round = 0; round < 400; round++) {
      // Addresses taken from the capture, so that the flows and the packets meet.
      const cidr = (): { net: bigint; len: number; text: string } => {
        const p = packets[Math.floor(rnd() * packets.length)];
        const key = p.info.key.subarray(rnd() < 0.5 ? 0 : 16);
        const len = Math.floor(rnd() * 129);
        return { net: addrOf(key, 0), len, text: `${inetNtop6(key, 0)}/${len}` };
      };
      const dsts = rnd() < 0.6 ? Array.from({ length: 1 + Math.floor(rnd() * 3) }, cidr) : null;
      const srcs = rnd() < 0.4 ? Array.from({ length: 1 + Math.floor(rnd() * 3) }, cidr) : null;
      const protoSet = rnd() < 0.6 ? protos.filter(() => rnd() < 0.5) : [];
      const protoList = protoSet.length > 0 ? protoSet : null;
      const range = (): [number, number] => {
        const lo = 1 + Math.floor(rnd() * 65535);
        return [lo, Math.min(65535, lo + (rnd() < 0.5 ? 0 : Math.floor(rnd() * 20000)))];
      };
      const dports = protoList !== null && rnd() < 0.5 ? Array.from({ length: 1 + Math.floor(rnd() * 3) }, range) : null;
      const f = flow({
        dsts: dsts?.map((c) => c.text).join(','),
        srcs: srcs?.map((c) => c.text).join(','),
        protocols: protoList?.join(','),
        dports: dports?.map(([lo, hi]) => `${lo}-${hi}`).join(','),
      });
      for (const { pkt, info } of packets) {
        const key = info.key;
        const proto = keyProto(key);
        const dport = keyDport(key);
        const addrsOk = (dsts === null || dsts.some((c) => inPrefix(addrOf(key, 16), c.net, c.len))) &&
          (srcs === null || srcs.some((c) => inPrefix(addrOf(key, 0), c.net, c.len)));
        const protoOk = protoList === null || protoList.some((p) => numbers[protos.indexOf(p)] === proto);
        const portsOk = dports === null || dports.some(([lo, hi]) => dport >= lo && dport <= hi);
        const want = addrsOk && protoOk && portsOk;
        const got = contains(f, info, pkt);
        if (got !== want) throw new Error(`flow ${JSON.stringify({ dsts, srcs, protoList, dports }, (_, v) => (typeof v === 'bigint' ? v.toString(16) : v))} packet ${Buffer.from(pkt).toString('hex')}: ${got}, model ${want}`);
        if (want) hits++;
        else misses++;
      }
    }
    // The random flows both take and leave packets, often.
    expect(hits).toBeGreaterThan(10000);
    expect(misses).toBeGreaterThan(10000);
  });
});
