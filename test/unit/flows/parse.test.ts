/**
 * Flow definitions from text (parse.ts): nfqlb's flowDefine() errors in its
 * words and order, its list syntaxes (protocols, CIDRs, port sets, byte-match
 * statements) with their sscanf/strtol quirks, the compiled Flow's words, and
 * the listing texts back. FlowSet.define() is compileFlow() plus the insert,
 * so the listing tests go through a set to see nfqlb's JSON.
 */
import { checkFlowName, compileFlow, matchText, portsText, protoName } from '../../../src/flows/parse';
import { CIDR_WORDS, Flow, inRanges, MATCH_WORDS, PROTO_BIT_SCTP, PROTO_BIT_TCP, PROTO_BIT_UDP } from '../../../src/flows/match';
import { FlowSet } from '../../../src/flows/flowset';
import { IPPROTO_ICMP, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP } from '../../../src/packet/hashkey';

interface Tgt {
  name: string;
}
const T_A: Tgt = { name: 'tshm-a' };

function daemonSet(): FlowSet<Tgt> {
  return new FlowSet<Tgt>({ targetName: (t) => t.name });
}

function compiled(over: Record<string, unknown>): Flow<Tgt> {
  const f = compileFlow<Tgt>({ name: 'f', target: T_A, ...over });
  if (typeof f === 'string') throw new Error(`compileFlow refused ${JSON.stringify(over)}: ${f}`);
  return f;
}

describe('define', () => {
  const def = (over: Record<string, unknown>): string | null =>
    daemonSet().define({ name: 'f', target: T_A, ...over });

  test('error texts and their order', () => {
    expect(def({ name: undefined })).toBe('No name');
    // nfqlb's server reads a line into 1024 bytes: longer names would be cut (see names as bytes, below).
    expect(def({ name: 'x'.repeat(1017) })).toBeNull();
    expect(def({ name: 'x'.repeat(1018) })).toBe('Name too long: at most 1017 bytes');
    expect(def({ protocols: 'tcp,icmp' })).toBe('Invalid protocols');
    expect(def({ dports: '0' })).toBe('Invalid dports');
    expect(def({ sports: '70000' })).toBe('Invalid dports'); // nfqlb's text for sports too
    expect(def({ dsts: '10.0.0.1' })).toBe('Invalid dsts');
    expect(def({ srcs: '10.0.0.0/33' })).toBe('Invalid srcs');
    expect(def({ match: 'tcp[2:3]=1' })).toBe("Match [tcp[2:3]=1] Doesn't match regexp");
    expect(def({ match: 'tcp[18:4]=1' })).toBe('Match [tcp[18:4]=1] Out of bounds');
    expect(def({ match: `tcp[1:1]=${'1'.repeat(60)}` })).toBe(`Match [tcp[1:1]=${'1'.repeat(60)}] String too long`);
    // Checked in nfqlb's order: protocols, dports, sports, dsts, srcs, match.
    expect(def({ protocols: 'x', dports: '0', dsts: 'bad', match: 'bad' })).toBe('Invalid protocols');
    expect(def({ dports: '0', dsts: 'bad' })).toBe('Invalid dports');
    expect(def({ dsts: 'bad', srcs: 'bad', match: 'bad' })).toBe('Invalid dsts');
    expect(def({ srcs: 'bad', match: 'bad' })).toBe('Invalid srcs');
  });

  test('a long match statement error is cut like nfqlb cuts it (128-byte buffer)', () => {
    const stmt = `tcp[1:1]=${'1'.repeat(200)}`;
    const err = def({ match: stmt }) as string;
    expect(err.length).toBe(127);
    expect(err.startsWith(`Match [${stmt.slice(0, 50)}`)).toBe(true);
  });

  test('protocols: any case, repeats, listed in tcp, udp, sctp order', () => {
    const set = daemonSet();
    expect(set.define({ name: 'p', target: T_A, protocols: 'SCTP,udp, Tcp ,tcp' })).toBeNull();
    expect(set.list('p')).toContain('"protocols": [ "tcp", "udp", "sctp" ]');
  });

  test('empty lists mean "not given", except for ports', () => {
    const set = daemonSet();
    expect(set.define({ name: 'e', target: T_A, protocols: '', dsts: ',', srcs: ' ', match: ',,' })).toBeNull();
    expect(set.list('e')).toBe('{\n  "name": "e",\n  "priority": 0,\n  "matches_count": 0,\n  "user_ref": "tshm-a"\n}');
    // nfqlb keeps an empty port set: listed empty, matches no port.
    expect(set.define({ name: 'e', target: T_A, protocols: 'udp', dports: '' })).toBeNull();
    expect(set.list('e')).toContain('"dports": [\n\n  ]');
    const f = compileFlow({ name: 'e', target: T_A, protocols: 'udp', dports: '' }) as Flow<Tgt>;
    expect(f.dports).toEqual(new Int32Array(0));
    expect(inRanges(f.dports as Int32Array, 80)).toBe(false);
  });

  test('CIDRs: IPv4 mapped, prefixes shifted by 96, addresses masked, ≤ 32', () => {
    const set = daemonSet();
    const dsts = '10.1.2.3/24,0.0.0.0/0,2001:DB8::1/32,::/0,::ffff:1.2.3.4/128,1:2:3:4:5:6:7:8/128,fe80::c000:0:0:1/65';
    expect(set.define({ name: 'c', target: T_A, dsts })).toBeNull();
    expect(set.list('c')).toContain(
      '"dests": [\n    "::ffff:10.1.2.0/120",\n    "::ffff:0.0.0.0/96",\n    "2001:db8::/32",\n    "::/0",\n' +
        '    "::ffff:1.2.3.4/128",\n    "1:2:3:4:5:6:7:8/128",\n    "fe80::8000:0:0:0/65"\n  ]',
    );
    const many = Array.from({ length: 33 }, (_, i) => `10.0.0.${i}/32`);
    expect(set.define({ name: 'c', target: T_A, dsts: many.slice(0, 32).join(',') })).toBeNull();
    expect(set.define({ name: 'c', target: T_A, dsts: many.join(',') })).toBe('Invalid dsts');
  });

  test('CIDR texts nfqlb refuses', () => {
    for (const bad of ['192.0.2.300/32', '192.0.2.1', '192.0.2.01/32', '1.2.3/24', '1.2.3.4/33', '::/129', '1::2::3/64', 'fe80::1%eth0/64',
      '1:2:3:4:5:6:7:8:9/128', '1:2:3:4:5:6:7::8/128', ':1::/64', '1::/', '1::/x', '1.2.3.4/-1', 'x/8']) {
      expect([bad, daemonSet().define({ name: 'c', target: T_A, dsts: bad })]).toEqual([bad, 'Invalid dsts']);
    }
    // sscanf("%u") stops at the first non-digit, so trailing text after the prefix is ignored.
    expect(daemonSet().define({ name: 'c', target: T_A, dsts: '10.0.0.0/8x' })).toBeNull();
  });

  test('ports: sorted, merged, listed as nfqlb lists them', () => {
    const set = daemonSet();
    expect(set.define({ name: 'p', target: T_A, protocols: 'tcp', dports: '5000-6000,4000 80,81-90,6001,65535,1', sports: '40000-50000, 1-1023' })).toBeNull();
    expect(set.list('p')).toContain('"dports": [\n    "1",\n    "80-90",\n    "4000",\n    "5000-6001",\n    "65535"\n  ]');
    expect(set.list('p')).toContain('"sports": [\n    "1-1023",\n    "40000-50000"\n  ]');
    for (const bad of ['0', '65536', '90-80', '0-80', '1-65536', 'x', '-5', '5-', '1x-5', '80abc-']) {
      expect([bad, daemonSet().define({ name: 'p', target: T_A, protocols: 'tcp', dports: bad })]).toEqual([bad, 'Invalid dports']);
    }
    // sscanf quirks nfqlb lives with: trailing text, a '+' sign, leading zeros.
    expect(set.define({ name: 'q', target: T_A, protocols: 'tcp', dports: '80abc,+443,0022' })).toBeNull();
    expect(set.list('q')).toContain('"dports": [\n    "22",\n    "80",\n    "443"\n  ]');
  });

  test('match statements: normalised listing, octal and hex numbers, masks', () => {
    const set = daemonSet();
    const m = 'tcp[12:2]&0x01ff=0x0002,udp[2 : 2] = 53,sctp[8:4] & 0xffffffff = 0x1,tcp[010:1]=010,tcp[13:1]&0x0=2';
    expect(set.define({ name: 'm', target: T_A, match: m })).toBeNull();
    expect(set.list('m')).toContain(
      '"match": [\n    "tcp[12:2]&0x1ff=0x2",\n    "udp[2:2]=0x35",\n    "sctp[8:4]&0xffffffff=0x1",\n    "tcp[8:1]=0x8",\n    "tcp[13:1]=0x2"\n  ]',
    );
    for (const bad of ['TCP[1:1]=1', ' tcp[1:1]=1', 'udp[ 2:2]=1', 'tcp[1:1]=0X1', 'tcp[1:1]&0xFF=1', 'icmp[0:1]=8', 'tcp[1:1]=', 'tcp[1]=1']) {
      expect(daemonSet().define({ name: 'm', target: T_A, match: bad })).toBe(`Match [${bad}] Doesn't match regexp`);
    }
    expect(daemonSet().define({ name: 'm', target: T_A, match: 'udp[6:4]=0' })).toBe('Match [udp[6:4]=0] Out of bounds');
    expect(daemonSet().define({ name: 'm', target: T_A, match: 'sctp[10:2]=0,udp[6:2]=0,tcp[18:2]=0' })).toBeNull();
    expect(daemonSet().define({ name: 'm', target: T_A, match: 'tcp[99999999999999999999:1]=0' })).toBe('Match [tcp[99999999999999999999:1]=0] Out of bounds');
  });

  test('priority prints as C %u; the listing omits unset keys; trace sets omit user_ref', () => {
    const set = daemonSet();
    set.define({ name: 'neg', target: T_A, priority: -1, udpencap: 9899 });
    expect(set.list('neg')).toBe('{\n  "name": "neg",\n  "priority": 4294967295,\n  "udpencap": 9899,\n  "matches_count": 0,\n  "user_ref": "tshm-a"\n}');
    const trace = new FlowSet<string>({ promiscuousPing: true });
    trace.define({ name: 'tf', target: 'tf', protocols: 'udp' });
    expect(trace.list()).toBe('[{\n  "name": "tf",\n  "priority": 0,\n  "protocols": [ "udp" ],\n  "matches_count": 0\n}]\n');
  });

  test('empty set listings', () => {
    expect(daemonSet().list()).toBe('[]\n');
    expect(daemonSet().listNames()).toBe('[]\n');
  });
});

describe('compileFlow: the compiled words', () => {
  test('a flow without lists has no parts: it matches everything', () => {
    const f = compiled({});
    expect([f.protoMask, f.dsts, f.srcs, f.dports, f.sports, f.match, f.priority, f.udpencap]).toEqual([0, null, null, null, null, null, 0, 0]);
    expect(f.target).toBe(T_A);
    expect(f.matches).toBe(0);
  });

  test('protocols become bits; priority is C int, udpencap 16 bits; a hidden flow has no target', () => {
    expect(compiled({ protocols: 'udp,SCTP' }).protoMask).toBe(PROTO_BIT_UDP | PROTO_BIT_SCTP);
    expect(compiled({ protocols: 'tcp' }).protoMask).toBe(PROTO_BIT_TCP);
    expect(compiled({ priority: 2 ** 32 + 5, udpencap: 65536 + 9899 })).toMatchObject({ priority: 5, udpencap: 9899 });
    expect(compileFlow<Tgt>({ name: '#f', target: null })).toMatchObject({ name: '#f', target: null });
  });

  test('CIDRs: four address words then four mask words, big-endian; IPv4 in ::ffff:0:0/96', () => {
    const f = compiled({ dsts: '192.0.2.77/24', srcs: '2001:db8::1/33' });
    const d = f.dsts as Int32Array;
    expect(d.length).toBe(CIDR_WORDS);
    expect(Array.from(d.subarray(0, 4))).toEqual([0, 0, 0xffff, (192 << 24) | (0 << 16) | (2 << 8) | 0]);
    expect(Array.from(d.subarray(4, 8))).toEqual([-1, -1, -1, (0xffffff00 | 0)]);
    const s = f.srcs as Int32Array;
    expect(Array.from(s.subarray(0, 4))).toEqual([0x20010db8, 0, 0, 0]);
    expect(Array.from(s.subarray(4, 8))).toEqual([-1, (0x80000000 | 0), 0, 0]);
    expect(f.dstsText).toEqual(['::ffff:192.0.2.0/120']);
    expect(f.srcsText).toEqual(['2001:db8::/33']);
  });

  test('ports: sorted, merged [lo, hi] pairs', () => {
    expect(Array.from(compiled({ dports: '90,80-85,86,1000-2000,1500' }).dports as Int32Array)).toEqual([80, 86, 90, 90, 1000, 2000]);
    expect(Array.from(compiled({ sports: '65535,1' }).sports as Int32Array)).toEqual([1, 1, 65535, 65535]);
  });

  test('match statements: proto, offset, length, mask, value per statement', () => {
    const m = compiled({ match: 'tcp[13:1]&0x12=0x02,udp[0:2]=53,sctp[8:4]=0xffffffff' }).match as Uint32Array;
    expect(m.length).toBe(3 * MATCH_WORDS);
    expect(Array.from(m)).toEqual([IPPROTO_TCP, 13, 1, 0x12, 2, IPPROTO_UDP, 0, 2, 0, 53, IPPROTO_SCTP, 8, 4, 0, 0xffffffff]);
    // Mask and value keep their low 32 bits (strtol's long cut as nfqlb stores it).
    expect(Array.from((compiled({ match: 'tcp[0:4]=0x1ffffffff' }).match as Uint32Array).subarray(3))).toEqual([0, 0xffffffff]);
  });

  test('the header bounds per protocol: tcp 20, udp 8, sctp 12 bytes', () => {
    expect(typeof compileFlow({ name: 'f', target: T_A, match: 'tcp[16:4]=0' })).not.toBe('string');
    expect(compileFlow({ name: 'f', target: T_A, match: 'tcp[17:4]=0' })).toBe('Match [tcp[17:4]=0] Out of bounds');
    expect(typeof compileFlow({ name: 'f', target: T_A, match: 'udp[7:1]=0' })).not.toBe('string');
    expect(compileFlow({ name: 'f', target: T_A, match: 'udp[7:2]=0' })).toBe('Match [udp[7:2]=0] Out of bounds');
    expect(typeof compileFlow({ name: 'f', target: T_A, match: 'sctp[11:1]=0' })).not.toBe('string');
    expect(compileFlow({ name: 'f', target: T_A, match: 'sctp[12:1]=0' })).toBe('Match [sctp[12:1]=0] Out of bounds');
  });
});

describe('listing texts and names', () => {
  test('portsText: single ports bare, ranges lo-hi', () => {
    expect(portsText(Int32Array.of(80, 80, 1000, 2000, 65535, 65535))).toEqual(['80', '1000-2000', '65535']);
    expect(portsText(new Int32Array(0))).toEqual([]);
  });

  test('matchText: hex, the mask only when there is one, cut where 1024 bytes end', () => {
    expect(matchText(Uint32Array.of(IPPROTO_TCP, 13, 1, 0x12, 2, IPPROTO_UDP, 0, 2, 0, 53))).toEqual(['tcp[13:1]&0x12=0x2', 'udp[0:2]=0x35']);
    const item = [IPPROTO_SCTP, 8, 4, 0xffffffff, 0xffffffff]; // "sctp[8:4]&0xffffffff=0xffffffff": 31 bytes
    const many = matchText(Uint32Array.from(Array.from({ length: 40 }, () => item).flat()));
    // 32 items and a comma each fill 1023 bytes; nothing is left for a 33rd.
    expect(many.length).toBe(32);
    expect(many.every((t) => t === 'sctp[8:4]&0xffffffff=0xffffffff')).toBe(true);
  });

  test('protoName: the byte-match protocols only', () => {
    expect([IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP, IPPROTO_ICMP].map(protoName)).toEqual(['tcp', 'udp', 'sctp', '']);
  });

  test('checkFlowName: empty, NUL, more than 1017 bytes (a byte string counts its chars, text its UTF-8)', () => {
    expect(checkFlowName('')).toBe('No name');
    expect(checkFlowName('a\0')).toBe('Invalid name: it contains a NUL byte');
    expect(checkFlowName('\xe9'.repeat(1017))).toBeNull(); // as the server reads it: 1017 bytes
    expect(checkFlowName('\xe9'.repeat(1018))).toBe('Name too long: at most 1017 bytes');
    expect(checkFlowName('€'.repeat(339))).toBeNull(); // 1017 UTF-8 bytes
    expect(checkFlowName('€'.repeat(339) + 'x')).toBe('Name too long: at most 1017 bytes');
    expect(checkFlowName('f-1')).toBeNull();
  });
});
