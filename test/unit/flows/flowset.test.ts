/**
 * The flow set (flowset.ts): the flow-set lines of the reference scenarios
 * must list exactly as nfqlb listed them, every flow-set error of
 * reference/cli/errors.txt must come out with nfqlb's text, matching follows
 * nfqlb's rules (checked case by case and against a naive model on random
 * flows and packets), and nothing a user or a packet can send makes define()
 * or lookup() throw. Parsing alone: parse.test.ts; the per-flow test:
 * match.test.ts; the fields and the CLI-side checks: fields.test.ts.
 */
import * as fs from 'node:fs';
import { atoi } from '../../../src/base/catoi';
import { checkFlowSetArgs, flowCmdFromArgs, type FlowSetArgs } from '../../../src/flows/fields';
import type { Flow } from '../../../src/flows/match';
import { checkFlowName } from '../../../src/flows/parse';
import { FlowSet, type TargetSource } from '../../../src/flows/flowset';
import { inetPton6 } from '../../../src/base/inet';
import { IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, KEY_LEN } from '../../../src/packet/hashkey';
import { classify, PacketInfo, RC_ICMP_ERROR, RC_ICMP_OTHER, RC_UDP_ENCAP } from '../../../src/packet/classify';
import { referencePath } from '../../helpers/reference';
import { prng } from '../../helpers/prng';

// ---------------------------------------------------------------------------
// Helpers

/** A stand-in for the table registry: counts references so leaks show. */
interface Tgt {
  name: string;
  refs: number;
}
class FakeTargets implements TargetSource<Tgt> {
  readonly open = new Map<string, Tgt>();
  constructor(private readonly existing: string[]) {}
  acquire(name: string): Tgt | null {
    if (!this.existing.includes(name)) return null;
    let t = this.open.get(name);
    if (t === undefined) {
      t = { name, refs: 0 };
      this.open.set(name, t);
    }
    t.refs++;
    return t;
  }
  release(t: Tgt): void {
    t.refs--;
    if (t.refs === 0) this.open.delete(t.name);
  }
  totalRefs(): number {
    let n = 0;
    for (const t of this.open.values()) n += t.refs;
    return n;
  }
}

function daemonSet(promiscuousPing = false): FlowSet<Tgt> {
  return new FlowSet<Tgt>({ targetName: (t) => t.name, promiscuousPing });
}

/** A command line as the reference .cmds files have them: split on spaces, --k=v options. */
function parseLine(line: string): { cmd: string; args: Record<string, string> } {
  const [cmd, ...rest] = line.trim().split(' ');
  const args: Record<string, string> = {};
  for (const r of rest) {
    const m = /^--([^=]+)(?:=(.*))?$/.exec(r);
    if (m !== null) args[m[1]] = m[2] ?? '';
  }
  return { cmd, args };
}

/** Runs the flow-set / flow-delete lines of a scenario the way the daemon would see them. */
function replay(lines: string[], set: FlowSet<Tgt>, targets: FakeTargets): string[] {
  const replies: string[] = [];
  for (const line of lines) {
    const { cmd, args } = parseLine(line);
    if (cmd === 'flow-set') {
      const err = checkFlowSetArgs(args as FlowSetArgs);
      replies.push(err ?? set.applySet(flowCmdFromArgs(args as FlowSetArgs), targets));
    } else if (cmd === 'flow-delete') {
      replies.push(set.applyDelete(args.name, targets));
    }
  }
  return replies;
}

function ref(file: string): string {
  return fs.readFileSync(referencePath(file), 'utf8');
}

/** 16 key bytes for an address: IPv6 text, or IPv4 dotted quad as ::ffff:a.b.c.d. */
function addrBytes(a: string): Uint8Array {
  const b = new Uint8Array(16);
  if (!inetPton6(a.includes(':') ? a : `::ffff:${a}`, b)) throw new Error(`bad address ${a}`);
  return b;
}

interface PacketSpec {
  src: string;
  dst: string;
  proto: number;
  sport?: number;
  dport?: number;
  id?: number;
  rc?: number;
  /** L4 header bytes; the packet is 20 zero bytes (a stand-in IP header) then these. */
  l4?: number[];
}

/** A PacketInfo written by hand, as classify() would leave it, plus its packet buffer. */
function packet(p: PacketSpec): { info: PacketInfo; pkt: Uint8Array } {
  const info = new PacketInfo();
  info.key.set(addrBytes(p.src), 0);
  info.key.set(addrBytes(p.dst), 16);
  const id = p.id ?? 0;
  info.key[32] = id >> 8;
  info.key[33] = id & 0xff;
  info.key[34] = p.proto & 0xff;
  info.key[35] = p.proto >> 8;
  const sport = p.sport ?? 0;
  const dport = p.dport ?? 0;
  info.key[36] = sport >> 8;
  info.key[37] = sport & 0xff;
  info.key[38] = dport >> 8;
  info.key[39] = dport & 0xff;
  info.rc = p.rc ?? (p.proto === IPPROTO_ICMP || p.proto === IPPROTO_ICMPV6 ? RC_ICMP_OTHER : 0);
  info.ipVersion = p.src.includes(':') ? 6 : 4;
  info.proto = p.proto;
  info.sport = sport;
  info.dport = dport;
  const l4 = p.l4 ?? [];
  const pkt = new Uint8Array(20 + l4.length);
  pkt.set(l4, 20);
  info.l4Offset = 20;
  info.l4Len = l4.length;
  return { info, pkt };
}

/** The name of the flow a packet matches, or null. */
function match(set: FlowSet<Tgt>, p: PacketSpec): string | null {
  const { info, pkt } = packet(p);
  const f = set.lookup(info, pkt);
  return f === null ? null : f.name;
}

const T_A: Tgt = { name: 'tshm-a', refs: 1 };
const T_B: Tgt = { name: 'tshm-b', refs: 1 };


// ---------------------------------------------------------------------------
// Reference parity

describe('reference listings (multi scenario)', () => {
  const lines = ref('decisions/multi.cmds').split('\n');
  const set = daemonSet();
  const targets = new FakeTargets(['tshm-a', 'tshm-b']);
  const replies = replay(lines, set, targets);

  test('every flow-set line is accepted', () => {
    expect(replies).toEqual(['OK', 'OK', 'OK', 'OK', 'OK', 'OK']);
  });

  test('flow-list is byte-identical (order included)', () => {
    expect(set.list()).toBe(ref('cli/multi.flow-list.json'));
  });

  test('flow-list-names is byte-identical', () => {
    expect(set.listNames()).toBe(ref('cli/multi.flow-list-names.json'));
  });

  test('flow-list --name=fa-syn is the bare object without a trailing newline', () => {
    expect(set.list('fa-syn')).toBe(ref('cli/multi.flow-list-fa-syn.json'));
    expect(set.list('no-such-flow')).toBe('');
  });

  test('only the real flows hold table references', () => {
    expect(targets.open.get('tshm-a')?.refs).toBe(3);
    expect(targets.open.get('tshm-b')?.refs).toBe(3);
  });
});

describe('reference scenarios trench and empty', () => {
  test('trench: the Meridio flow', () => {
    const set = daemonSet(true);
    const targets = new FakeTargets(['tshm-stream-a-i']);
    expect(replay(ref('decisions/trench.cmds').split('\n'), set, targets)).toEqual(['OK']);
    expect(set.listNames()).toBe('[\n  "tshm-stream-a-i-flow-a"\n]\n');
  });

  test('empty: a deleted flow is gone and its table released', () => {
    const set = daemonSet();
    const targets = new FakeTargets(['tshm-e', 'tshm-f']);
    expect(replay(ref('decisions/empty.cmds').split('\n'), set, targets)).toEqual(['OK', 'OK', 'OK', 'OK']);
    expect(set.listNames()).toBe('[\n  "to-f",\n  "to-empty"\n]\n');
    expect(targets.open.get('tshm-f')?.refs).toBe(1);
  });
});

describe('reference/cli/errors.txt', () => {
  const text = ref('cli/errors.txt').split('\n');
  const cases: Array<{ line: string; rc: number; out: string }> = [];
  for (let i = 0; i + 1 < text.length; i += 2) {
    const m = /^ {2}rc=(\d+) out=(.*)$/.exec(text[i + 1]);
    if (m === null) throw new Error(`errors.txt line ${i + 2}: ${text[i + 1]}`);
    cases.push({ line: text[i], rc: Number(m[1]), out: m[2] });
  }
  const flowCases = cases.filter((c) => /^flow-(set|delete) /.test(c.line) && c.line.includes('--name='));

  test('the file has the flow-set cases this test expects', () => {
    expect(flowCases.length).toBe(11);
  });

  test.each(flowCases)('$line', ({ line, rc, out }) => {
    const { cmd, args } = parseLine(line);
    // tshm-nope does not exist: the registry refuses it, as for e7.
    const targets = new FakeTargets(['tshm-a']);
    const set = daemonSet();
    let reply: string;
    let code: number;
    if (cmd === 'flow-delete') {
      reply = set.applyDelete(args.name, targets);
      code = reply === 'OK' ? 0 : 255;
    } else {
      const err = checkFlowSetArgs(args as FlowSetArgs);
      if (err !== null) {
        reply = err;
        code = 1;
      } else {
        reply = set.applySet(flowCmdFromArgs(args as FlowSetArgs), targets);
        code = reply === 'OK' ? 0 : 255;
      }
    }
    // errors.txt joins output lines with '|'.
    expect(`${reply}|`).toBe(out);
    expect(code).toBe(rc);
    // A refused flow leaves nothing behind, not even a table reference.
    if (code !== 0) {
      expect(set.size).toBe(0);
      expect(targets.totalRefs()).toBe(0);
    }
  });
});

// ---------------------------------------------------------------------------
// define(): parsing and errors

// ---------------------------------------------------------------------------
// Order, replace, delete

describe('order, replace and delete', () => {
  test('higher priority first; equal priorities keep first-definition order; a redefined flow keeps its place', () => {
    const set = daemonSet();
    set.define({ name: 'a', target: T_A, priority: 5 });
    set.define({ name: 'b', target: T_A, priority: 5 });
    set.define({ name: 'c', target: T_A, priority: 10 });
    set.define({ name: 'd', target: T_A, priority: 5 });
    expect(set.flows.map((f) => f.name)).toEqual(['c', 'a', 'b', 'd']);
    set.define({ name: 'a', target: T_A, priority: 5, protocols: 'tcp' });
    expect(set.flows.map((f) => f.name)).toEqual(['c', 'a', 'b', 'd']);
    set.define({ name: 'd', target: T_A, priority: 20 });
    expect(set.flows.map((f) => f.name)).toEqual(['d', 'c', 'a', 'b']);
    set.define({ name: 'c', target: T_A, priority: 1 });
    expect(set.flows.map((f) => f.name)).toEqual(['d', 'a', 'b', 'c']);
  });

  test('re-prioritise changes which flow matches (nfqlb flow-test)', () => {
    const set = daemonSet();
    set.define({ name: 'p200', target: T_A, priority: 200 });
    set.define({ name: 'pX', target: T_B, priority: 100 });
    const p: PacketSpec = { src: '1.1.1.1', dst: '2.2.2.2', proto: IPPROTO_TCP, dport: 1 };
    expect(match(set, p)).toBe('p200');
    set.define({ name: 'pX', target: T_B, priority: 400 });
    expect(match(set, p)).toBe('pX');
  });

  test('replacing a flow restarts its match counter; a failed define changes nothing', () => {
    const set = daemonSet();
    set.define({ name: 'f', target: T_A, protocols: 'tcp' });
    match(set, { src: '1.1.1.1', dst: '2.2.2.2', proto: IPPROTO_TCP, dport: 1 });
    expect(set.get('f')?.matches).toBe(1);
    expect(set.define({ name: 'f', target: T_A, protocols: 'bogus' })).toBe('Invalid protocols');
    expect(set.get('f')?.matches).toBe(1);
    expect(set.define({ name: 'f', target: T_A, protocols: 'tcp,udp' })).toBeNull();
    expect(set.get('f')?.matches).toBe(0);
  });

  test('delete returns the flow (target, udpencap), or null', () => {
    const set = daemonSet();
    set.define({ name: 'a', target: T_A, udpencap: 1234 });
    expect(set.delete('nope')).toBeNull();
    const f = set.delete('a') as Flow<Tgt>;
    expect(f.target).toBe(T_A);
    expect(f.udpencap).toBe(1234);
    expect(set.size).toBe(0);
  });
});

describe('applySet / applyDelete (the control server)', () => {
  const sctpCmd = { name: 's', target: 'tshm-a', priority: 7, protocols: 'sctp', dports: '4000', dsts: '192.0.2.1/32', udpencap: 9899 };

  test('udpencap adds the hidden "#name" flow before the flow; delete removes both', () => {
    const set = daemonSet();
    const targets = new FakeTargets(['tshm-a', 'tshm-b']);
    expect(set.applySet(sctpCmd, targets)).toBe('OK');
    expect(set.listNames()).toBe('[\n  "#s",\n  "s"\n]\n');
    expect(set.list('#s')).toBe(
      '{\n  "name": "#s",\n  "priority": 7,\n  "protocols": [ "udp" ],\n  "dests": [\n    "::ffff:192.0.2.1/128"\n  ],\n' +
        '  "dports": [\n    "9899"\n  ],\n  "udpencap": 9899,\n  "matches_count": 0,\n  "user_ref": "NULL"\n}',
    );
    expect(targets.totalRefs()).toBe(1);
    // Re-set: same udpencap is fine, and does not take another reference (nfqlb issue 9).
    expect(set.applySet(sctpCmd, targets)).toBe('OK');
    expect(set.size).toBe(2);
    expect(targets.totalRefs()).toBe(1);
    expect(set.applySet({ ...sctpCmd, udpencap: 8000 }, targets)).toBe('FAIL: Alter udpencap not allowed');
    expect(set.applySet({ ...sctpCmd, udpencap: 0 }, targets)).toBe('FAIL: Alter udpencap not allowed');
    expect(set.applyDelete('s', targets)).toBe('OK');
    expect(set.size).toBe(0);
    expect(targets.totalRefs()).toBe(0);
  });

  test('udpencap needs protocols exactly sctp (server side)', () => {
    const set = daemonSet();
    const targets = new FakeTargets(['tshm-a']);
    for (const protocols of [undefined, 'tcp', 'sctp,tcp', 'sctp,sctp']) {
      expect(set.applySet({ ...sctpCmd, protocols }, targets)).toBe('FAIL: only sctp for updencap');
    }
    expect(set.applySet({ ...sctpCmd, protocols: ' SCTP ' }, targets)).toBe('OK');
    expect(set.size).toBe(2);
  });

  test('errors of the hidden flow come first; a refused flow leaves no hidden flow', () => {
    const set = daemonSet();
    const targets = new FakeTargets(['tshm-a']);
    expect(set.applySet({ ...sctpCmd, dports: '0', dsts: 'bad' }, targets)).toBe('Invalid dsts');
    expect(set.applySet({ ...sctpCmd, dports: '0' }, targets)).toBe('Invalid dports');
    expect(set.size).toBe(0);
    expect(targets.totalRefs()).toBe(0);
  });

  test('changing the target takes the new table and releases the old one', () => {
    const set = daemonSet();
    const targets = new FakeTargets(['tshm-a', 'tshm-b']);
    expect(set.applySet({ name: 'f', target: 'tshm-a' }, targets)).toBe('OK');
    expect(set.applySet({ name: 'f', target: 'WRONG' }, targets)).toBe("FAIL: Couldn't create new load-balancer");
    expect(set.get('f')?.target?.name).toBe('tshm-a');
    expect(set.applySet({ name: 'f', target: 'tshm-b' }, targets)).toBe('OK');
    expect([...targets.open.keys()]).toEqual(['tshm-b']);
    expect(set.applySet({ name: 'g', target: 'nope' }, targets)).toBe("FAIL: Couldn't create load-balancer");
    expect(set.applySet({ target: 'tshm-a' }, targets)).toBe('No name');
    expect(targets.totalRefs()).toBe(1);
    expect(set.applyDelete(undefined, targets)).toBe('FAIL: no name');
    expect(set.applyDelete('does-not-exist', targets)).toBe('OK');
    expect(set.applyDelete('f', targets)).toBe('OK');
    expect(targets.totalRefs()).toBe(0);
  });
});

// ---------------------------------------------------------------------------
// Matching

describe('lookup', () => {
  test('CIDR edges: IPv4 /32, /24, /0 and IPv6 /128, /64, /0, /65', () => {
    const set = daemonSet();
    set.define({ name: 'v4-32', target: T_A, priority: 9, dsts: '192.0.2.1/32' });
    set.define({ name: 'v4-24', target: T_A, priority: 8, dsts: '192.0.2.0/24' });
    set.define({ name: 'v6-128', target: T_A, priority: 7, dsts: '2001:db8::1/128' });
    set.define({ name: 'v6-65', target: T_A, priority: 6, dsts: '2001:db8::8000:0:0:0/65' });
    set.define({ name: 'v6-64', target: T_A, priority: 5, dsts: '2001:db8::/64' });
    set.define({ name: 'v4-0', target: T_A, priority: 4, dsts: '0.0.0.0/0' });
    set.define({ name: 'v6-0', target: T_A, priority: 3, dsts: '::/0' });
    const to = (dst: string): string | null => match(set, { src: '10.0.0.1', dst, proto: IPPROTO_TCP, dport: 80 });
    expect(to('192.0.2.1')).toBe('v4-32');
    expect(to('192.0.2.0')).toBe('v4-24');
    expect(to('192.0.2.255')).toBe('v4-24');
    expect(to('192.0.3.0')).toBe('v4-0');
    expect(to('192.0.1.255')).toBe('v4-0');
    expect(to('255.255.255.255')).toBe('v4-0');
    expect(to('2001:db8::1')).toBe('v6-128');
    expect(to('2001:db8::2')).toBe('v6-64');
    expect(to('2001:db8::7fff:ffff:ffff:ffff')).toBe('v6-64');
    expect(to('2001:db8::8000:0:0:0')).toBe('v6-65');
    expect(to('2001:db8::ffff:ffff:ffff:ffff')).toBe('v6-65');
    expect(to('2001:db8:0:1::')).toBe('v6-0');
    expect(to('::')).toBe('v6-0');
    // An IPv4 prefix never covers a native IPv6 address, and ::/0 covers mapped IPv4.
    set.delete('v4-0');
    expect(to('192.0.3.0')).toBe('v6-0');
  });

  test('source CIDRs', () => {
    const set = daemonSet();
    set.define({ name: 's', target: T_A, srcs: '198.51.100.0/24,2001:db8:100::/48' });
    expect(match(set, { src: '198.51.100.77', dst: '1.1.1.1', proto: IPPROTO_UDP })).toBe('s');
    expect(match(set, { src: '198.51.101.77', dst: '1.1.1.1', proto: IPPROTO_UDP })).toBeNull();
    expect(match(set, { src: '2001:db8:100:ffff::1', dst: '::1', proto: IPPROTO_UDP })).toBe('s');
    expect(match(set, { src: '2001:db8:101::1', dst: '::1', proto: IPPROTO_UDP })).toBeNull();
  });

  test('port range edges, protocols, priority order', () => {
    const set = daemonSet();
    set.define({ name: 'web', target: T_A, priority: 100, protocols: 'tcp', dports: '80,443,8000-8080' });
    set.define({ name: 'low', target: T_B, priority: 1, protocols: 'tcp,udp', sports: '1-1023' });
    const tcp = (dport: number, sport = 5000): string | null => match(set, { src: '1.1.1.1', dst: '2.2.2.2', proto: IPPROTO_TCP, sport, dport });
    expect(tcp(80)).toBe('web');
    expect(tcp(443)).toBe('web');
    expect(tcp(7999)).toBeNull();
    expect(tcp(8000)).toBe('web');
    expect(tcp(8080)).toBe('web');
    expect(tcp(8081)).toBeNull();
    expect(tcp(8081, 1023)).toBe('low');
    expect(tcp(8081, 1)).toBe('low');
    expect(tcp(8081, 1024)).toBeNull();
    expect(match(set, { src: '1.1.1.1', dst: '2.2.2.2', proto: IPPROTO_UDP, sport: 53, dport: 80 })).toBe('low');
    expect(match(set, { src: '1.1.1.1', dst: '2.2.2.2', proto: IPPROTO_SCTP, sport: 53, dport: 80 })).toBeNull();
    expect(match(set, { src: '1.1.1.1', dst: '2.2.2.2', proto: IPPROTO_TCP, sport: 0, dport: 0 })).toBeNull();
  });

  test('a flow without protocols matches any protocol, ICMP included; one with protocols does not', () => {
    const set = daemonSet();
    set.define({ name: 'tcp', target: T_A, priority: 2, protocols: 'tcp', dsts: '192.0.2.1/32' });
    set.define({ name: 'any', target: T_B, priority: 1, dsts: '192.0.2.1/32,2001:db8::1/128' });
    expect(match(set, { src: '1.1.1.1', dst: '192.0.2.1', proto: IPPROTO_ICMP, id: 7 })).toBe('any');
    expect(match(set, { src: '::2', dst: '2001:db8::1', proto: IPPROTO_ICMPV6 })).toBe('any');
    expect(match(set, { src: '1.1.1.1', dst: '192.0.2.1', proto: 47 })).toBe('any');
    expect(match(set, { src: '1.1.1.1', dst: '192.0.2.1', proto: IPPROTO_TCP, dport: 1 })).toBe('tcp');
  });

  test('promiscuous ping: echo requests with an id match on addresses alone', () => {
    for (const ping of [false, true]) {
      const set = daemonSet(ping);
      set.define({ name: 'web', target: T_A, priority: 5, protocols: 'tcp', dsts: '20.0.0.1/32', dports: '4000' });
      set.define({ name: 'other', target: T_B, priority: 9, protocols: 'udp', dsts: '30.0.0.0/8' });
      const echo = (dst: string, id: number): string | null => match(set, { src: '10.0.0.1', dst, proto: IPPROTO_ICMP, id });
      expect(echo('20.0.0.1', 4711)).toBe(ping ? 'web' : null);
      expect(echo('30.1.1.1', 4711)).toBe(ping ? 'other' : null);
      expect(echo('40.0.0.1', 4711)).toBeNull();
      expect(echo('20.0.0.1', 0)).toBeNull();
      expect(match(set, { src: '2001:db8::9', dst: '20.0.0.1', proto: IPPROTO_ICMPV6, id: 1 })).toBe(ping ? 'web' : null);
      // Other protocols still need their ports.
      expect(match(set, { src: '10.0.0.1', dst: '20.0.0.1', proto: IPPROTO_TCP, dport: 80 })).toBeNull();
    }
  });

  test('byte match: mask, value, AND, other-protocol statements ignored, short headers', () => {
    const set = daemonSet();
    set.define({ name: 'syn', target: T_A, priority: 2, protocols: 'tcp,udp', match: 'tcp[12:2]&0x01ff=0x0002,tcp[0:2]=1234,udp[0:1]=0xff' });
    set.define({ name: 'rest', target: T_B, priority: 1 });
    const tcpHdr = (sport: number, flags: number): number[] => {
      const h = new Array<number>(20).fill(0);
      h[0] = sport >> 8;
      h[1] = sport & 0xff;
      h[12] = 0x50;
      h[13] = flags;
      return h;
    };
    const tcp = (l4: number[]): string | null => match(set, { src: '1.1.1.1', dst: '2.2.2.2', proto: IPPROTO_TCP, sport: 1234, dport: 443, l4 });
    expect(tcp(tcpHdr(1234, 0x02))).toBe('syn');
    expect(tcp(tcpHdr(1234, 0x12))).toBe('rest'); // SYN+ACK: masked value 0x12
    expect(tcp(tcpHdr(1235, 0x02))).toBe('rest'); // second statement fails
    const ns = tcpHdr(1234, 0x02);
    ns[12] = 0x51; // NS flag is inside the 0x1ff mask
    expect(tcp(ns)).toBe('rest');
    const high = tcpHdr(1234, 0x02);
    high[12] = 0xf0; // data offset bits are outside the mask
    expect(tcp(high)).toBe('syn');
    // The whole fixed TCP header must be there (nfqlb), and nothing is read beyond the packet.
    expect(tcp(tcpHdr(1234, 0x02).slice(0, 19))).toBe('rest');
    expect(tcp([])).toBe('rest');
    // UDP packets only see the udp statement.
    const udp = (b0: number): string | null => match(set, { src: '1.1.1.1', dst: '2.2.2.2', proto: IPPROTO_UDP, l4: [b0, 0, 0, 53, 0, 8, 0, 0] });
    expect(udp(0xff)).toBe('syn');
    expect(udp(0xfe)).toBe('rest');
    // ICMP errors carry the reverse direction: statements are ignored, as in nfqlb.
    const { info, pkt } = packet({ src: '1.1.1.1', dst: '2.2.2.2', proto: IPPROTO_TCP, sport: 1, dport: 2, rc: RC_ICMP_ERROR, l4: [0, 1, 0, 2, 0, 0, 0, 0] });
    expect(set.lookup(info, pkt)?.name).toBe('syn');
  });

  test('l4 bounds come from both info.l4Len and the buffer', () => {
    const set = daemonSet();
    set.define({ name: 'm', target: T_A, match: 'udp[6:2]=0x1234' });
    const { info, pkt } = packet({ src: '1.1.1.1', dst: '2.2.2.2', proto: IPPROTO_UDP, l4: [0, 1, 0, 2, 0, 8, 0x12, 0x34] });
    expect(set.lookup(info, pkt)?.name).toBe('m');
    info.l4Len = 7;
    expect(set.lookup(info, pkt)).toBeNull();
    info.l4Len = 100;
    expect(set.lookup(info, pkt.subarray(0, 27))).toBeNull();
    info.l4Offset = -1;
    expect(set.lookup(info, pkt)).toBeNull();
  });

  test('match counters count every match, hidden flows included', () => {
    const set = daemonSet();
    const targets = new FakeTargets(['tshm-a', 'tshm-b']);
    replay(ref('decisions/multi.cmds').split('\n'), set, targets);
    const udpTo = (dst: string, dport: number, src = '203.0.113.5'): string | null => match(set, { src, dst, proto: IPPROTO_UDP, sport: 1000, dport });
    // SCTP over UDP to a destination fb-any also covers: nfqlb's hidden flow
    // only records the udpencap and the catch-all flow wins (reference
    // decisions, packets 28, 59, 104: hashed on the outer UDP header).
    expect(udpTo('192.0.2.1', 9899)).toBe('fb-any');
    expect(set.lastUdpencap).toBe(0);
    expect(set.get('#sctp-encap')?.matches).toBe(1);
    expect(set.get('fb-any')?.matches).toBe(1);
    expect(JSON.parse(set.list('#sctp-encap')).matches_count).toBe(1);
    // With no catch-all behind it, the hidden flow's udpencap is what is left.
    set.delete('fb-any');
    expect(udpTo('192.0.2.1', 9899)).toBeNull();
    expect(set.lastUdpencap).toBe(9899);
    expect(set.get('#sctp-encap')?.matches).toBe(2);
    // The re-classified packet (SCTP inside) then finds the SCTP flow.
    expect(match(set, { src: '203.0.113.5', dst: '192.0.2.1', proto: IPPROTO_SCTP, sport: 5000, dport: 4000, rc: RC_UDP_ENCAP, l4: new Array(12).fill(0) })).toBe('sctp-encap');
    expect(set.get('sctp-encap')?.matches).toBe(1);
    expect(udpTo('192.0.2.55', 5500, '198.51.100.9')).toBe('fb-udp');
    expect(set.lastUdpencap).toBe(0);
  });

  test('with classify(): a real IPv4 TCP SYN against the multi flows', () => {
    const set = daemonSet();
    replay(ref('decisions/multi.cmds').split('\n'), set, new FakeTargets(['tshm-a', 'tshm-b']));
    const pkt = new Uint8Array(40);
    pkt.set([0x45, 0, 0, 40, 0, 1, 0, 0, 64, 6, 0, 0, 10, 0, 0, 1, 192, 0, 2, 1], 0);
    pkt.set([0x30, 0x39, 0x01, 0xbb, 0, 0, 0, 0, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0], 20);
    const info = new PacketInfo();
    expect(classify(pkt, 0, pkt.length, 0, info)).toBe(0);
    expect(set.lookup(info, pkt)?.name).toBe('fa-syn');
    pkt[33] = 0x10; // ACK
    classify(pkt, 0, pkt.length, 0, info);
    expect(set.lookup(info, pkt)?.name).toBe('fa-web');
  });
});

// ---------------------------------------------------------------------------
// Properties

const FRAGMENTS = {
  protocols: ['tcp', 'udp', 'sctp', 'TCP', 'Sctp', 'icmp', '', ',', ' ', 'tcp,udp', 'udp sctp', 'x'],
  cidrs: ['10.0.0.0/8', '192.0.2.1/32', '0.0.0.0/0', '::/0', '2001:db8::/32', 'fe80::1/128', '1.2.3.4', '300.1.1.1/8', '::ffff:1.2.3.4/120',
    '1::2::3/64', '10.0.0.0/-1', '10.0.0.0/999999999999', '::1.2.3.4/128', ':::/1', '1.2.3.4/24/5', '', '/', 'a/8'],
  ports: ['80', '1-65535', '443,8000-8080', '65535', '0', '65535', '65536', '5-1', '1-2-3', '', ',', '+7', '-7', '7-', '99999999999', '00080', '1 2 3', '\t9'],
  match: ['tcp[12:2]&0x1ff=0x2', 'udp[0:4]=1', 'sctp[8:4]&0xffffffff=0xffffffff', 'tcp[19:1]=255', 'tcp[20:1]=0', 'TCP[1:1]=1',
    'tcp[1:3]=1', 'udp[07:1]=07', 'udp[09:1]=09', 'tcp[1:1]=0x', '', ' ', 'sctp[0:2] = 0x100000000000000000', 'tcp [1:1]=1'],
};

function pick<T>(rnd: () => number, xs: readonly T[]): T {
  return xs[Math.floor(rnd() * xs.length)];
}

/** Random edits: nfqlb's parsers must survive whatever arrives on the socket. */
function mutate(rnd: () => number, s: string): string {
  const chars = '0123456789abcdefx:./-,[]&= \t#"\\\u00e9\u{1f600}';
  let out = s;
  const n = Math.floor(rnd() * 4);
  for (let i = 0; i < n; i++) {
    const at = Math.floor(rnd() * (out.length + 1));
    const op = rnd();
    if (op < 0.4) out = out.slice(0, at) + pick(rnd, [...chars]) + out.slice(at);
    else if (op < 0.7) out = out.slice(0, at) + out.slice(at + 1);
    else out = out.slice(0, at) + pick(rnd, [...chars]) + out.slice(at + 1);
  }
  return out;
}

function randomList(rnd: () => number, pool: readonly string[], sep: string): string | undefined {
  if (rnd() < 0.6) return undefined;
  // The first few entries of each pool are valid; mostly use those so that
  // both outcomes are common.
  const n = 1 + Math.floor(rnd() * 3);
  const parts = Array.from({ length: n }, () => (rnd() < 0.8 ? pool[Math.floor(rnd() * 4)] : pick(rnd, pool)));
  const s = parts.join(sep);
  return rnd() < 0.15 ? mutate(rnd, s) : s;
}

describe('properties', () => {
  test('random and mutated flow arguments never throw; errors leave the set unchanged; references never leak', () => {
    const rnd = prng(0x5eed);
    // applySet/applyDelete count table references; define/delete are the raw set operations.
    const server = daemonSet();
    const raw = daemonSet();
    const targets = new FakeTargets(['tshm-a', 'tshm-b']);
    let ok = 0;
    let failed = 0;
    for (let i = 0; i < 3000; i++) {
      const args: FlowSetArgs = {
        // Mostly a small pool of names, so flows get replaced and the sets stay small.
        name: rnd() < 0.02 ? undefined : rnd() < 0.1 ? mutate(rnd, pick(rnd, ['a', '#a', ''])) : pick(rnd, ['a', 'b', 'c', '#a', 'long-name']),
        target: pick(rnd, ['tshm-a', 'tshm-b', 'nope']),
        prio: rnd() < 0.5 ? undefined : mutate(rnd, pick(rnd, ['0', '100', '-5', '2147483647', 'x'])),
        protocols: randomList(rnd, FRAGMENTS.protocols, ','),
        dsts: randomList(rnd, FRAGMENTS.cidrs, ','),
        srcs: randomList(rnd, FRAGMENTS.cidrs, ','),
        dports: randomList(rnd, FRAGMENTS.ports, ','),
        sports: randomList(rnd, FRAGMENTS.ports, ','),
        match: randomList(rnd, FRAGMENTS.match, ','),
        udpencap: rnd() < 0.8 ? undefined : pick(rnd, ['0', '9899', '70000', 'x']),
      };
      expect(() => checkFlowSetArgs(args)).not.toThrow();
      const r1 = rnd();
      if (r1 < 0.1) {
        expect(server.applyDelete(args.name, targets)).toMatch(/^(OK|FAIL: no name)$/);
      } else if (r1 < 0.5) {
        const before = server.list();
        const reply = server.applySet(flowCmdFromArgs(args), targets);
        expect(typeof reply).toBe('string');
        if (reply === 'OK') ok++;
        else {
          failed++;
          expect(server.list()).toBe(before);
        }
      } else if (r1 < 0.55) {
        if (args.name !== undefined) raw.delete(args.name);
      } else {
        const before = raw.list();
        const r = raw.define({ name: args.name, priority: atoi(args.prio ?? '0'), target: T_A, protocols: args.protocols, dsts: args.dsts, srcs: args.srcs, dports: args.dports, sports: args.sports, match: args.match });
        if (r === null) ok++;
        else {
          failed++;
          expect(typeof r).toBe('string');
          expect(raw.list()).toBe(before);
        }
      }
      // Every real flow of the server holds exactly one reference; hidden flows none.
      expect(targets.totalRefs()).toBe(server.flows.filter((f) => f.target !== null).length);
      for (const set of [server, raw]) {
        for (let k = 1; k < set.flows.length; k++) {
          if (set.flows[k - 1].priority < set.flows[k].priority) throw new Error(`out of order: ${set.listNames()}`);
        }
      }
    }
    expect(ok).toBeGreaterThan(100);
    expect(failed).toBeGreaterThan(100);
  });

  test('random PacketInfo and packets never throw in lookup', () => {
    const rnd = prng(42);
    const set = daemonSet(true);
    set.define({ name: 'all', target: T_A, priority: 1 });
    set.define({ name: 'm', target: T_A, priority: 9, protocols: 'tcp,udp,sctp', match: 'tcp[16:4]&0xffff=7,udp[4:4]=8,sctp[8:4]=1' });
    set.define({ name: 'p', target: T_B, priority: 5, protocols: 'udp', dports: '1-100,200-300', sports: '5', dsts: '0.0.0.0/0,::/0', srcs: '10.0.0.0/8' });
    set.define({ name: '#hidden', target: null, priority: 20, protocols: 'udp', dports: '9899', udpencap: 9899 });
    const info = new PacketInfo();
    const protos = [0, 1, 6, 17, 58, 132, 255, 6 + 256, 17 * 256];
    for (let i = 0; i < 20000; i++) {
      for (let k = 0; k < KEY_LEN; k++) info.key[k] = rnd() < 0.5 ? 0 : Math.floor(rnd() * 256);
      const proto = pick(rnd, protos);
      info.key[34] = proto & 0xff;
      info.key[35] = proto >> 8;
      info.rc = pick(rnd, [-1, 0, 1, 2, 4, 8, 16, 32, 9, 12]);
      const len = Math.floor(rnd() * 80);
      const pkt = new Uint8Array(len);
      for (let k = 0; k < len; k++) pkt[k] = Math.floor(rnd() * 256);
      info.l4Offset = pick(rnd, [-1, 0, 20, 40, len, len + 5, Math.floor(rnd() * 100) - 10, NaN]);
      info.l4Len = pick(rnd, [0, 4, 8, 12, 20, len, 1000, -3, NaN]);
      set.promiscuousPing = rnd() < 0.5;
      const f = set.lookup(info, pkt);
      if (f !== null && !set.flows.includes(f)) throw new Error('lookup returned a flow that is not in the set');
    }
  });

  test('lookup agrees with a naive model on random valid flows and packets', () => {
    const rnd = prng(7);
    interface Cidr {
      bytes: Uint8Array;
      prefix: number;
      text: string;
    }
    interface Stmt {
      proto: number;
      offset: number;
      n: number;
      mask: number;
      value: number;
    }
    interface ModelFlow {
      name: string;
      priority: number;
      protos: number[] | null;
      dsts: Cidr[] | null;
      srcs: Cidr[] | null;
      dports: Array<[number, number]> | null;
      sports: Array<[number, number]> | null;
      match: Stmt[] | null;
    }
    const v4 = ['10.0.0.0/8', '10.1.2.0/24', '10.1.2.3/32', '0.0.0.0/0', '10.1.2.128/25'];
    const v6 = ['2001:db8::/32', '2001:db8::1/128', '::/0', 'fd00::/8', '2001:db8::/127'];
    const cidr = (t: string): Cidr => {
      const [a, p] = t.split('/');
      const v = !a.includes(':');
      return { bytes: addrBytes(a), prefix: Number(p) + (v ? 96 : 0), text: t };
    };
    const inCidr = (c: Cidr, a: Uint8Array): boolean => {
      for (let bit = 0; bit < c.prefix; bit++) {
        const m = 0x80 >> (bit % 8);
        if ((c.bytes[bit >> 3] & m) !== (a[bit >> 3] & m)) return false;
      }
      return true;
    };
    const hlen: Record<number, number> = { 6: 20, 17: 8, 132: 12 };
    const addrs = ['10.1.2.3', '10.1.2.4', '10.1.2.200', '10.9.9.9', '11.0.0.1', '2001:db8::1', '2001:db8::2', 'fd00::5', '2002::1', '::ffff:10.1.2.3'];

    for (let round = 0; round < 40; round++) {
      const ping = rnd() < 0.3;
      const set = daemonSet(ping);
      const model: ModelFlow[] = [];
      for (let i = 0; i < 12; i++) {
        const name = `f${Math.floor(rnd() * 8)}`;
        const priority = Math.floor(rnd() * 4);
        const protos = rnd() < 0.3 ? null : [IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP].filter(() => rnd() < 0.6);
        const cidrs = (): Cidr[] | null => (rnd() < 0.4 ? null : Array.from({ length: 1 + Math.floor(rnd() * 2) }, () => cidr(pick(rnd, rnd() < 0.5 ? v4 : v6))));
        const dsts = cidrs();
        const srcs = cidrs();
        const ranges = (): Array<[number, number]> | null =>
          rnd() < 0.5 ? null : Array.from({ length: Math.floor(rnd() * 3) }, () => {
            const a = 1 + Math.floor(rnd() * 60);
            return [a, a + Math.floor(rnd() * 30)] as [number, number];
          });
        const usePorts = protos !== null && protos.length > 0;
        const dports = usePorts ? ranges() : null;
        const sports = usePorts ? ranges() : null;
        const matchStmts: Stmt[] | null = rnd() < 0.6 ? null : Array.from({ length: 1 + Math.floor(rnd() * 2) }, () => {
          const proto = pick(rnd, [IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP]);
          const n = pick(rnd, [1, 2, 4]);
          const offset = Math.floor(rnd() * (hlen[proto] - n + 1));
          const mask = rnd() < 0.5 ? 0 : pick(rnd, [0x1, 0x3, 0xff, 0xf0f0]);
          return { proto, offset, n, mask, value: Math.floor(rnd() * 4) };
        });
        const err = set.define({
          name,
          priority,
          target: T_A,
          protocols: protos === null ? undefined : protos.map((p) => ({ 6: 'tcp', 17: 'udp', 132: 'sctp' })[p]).join(','),
          dsts: dsts?.map((c) => c.text).join(','),
          srcs: srcs?.map((c) => c.text).join(','),
          dports: dports?.map(([a, b]) => `${a}-${b}`).join(','),
          sports: sports?.map(([a, b]) => `${a}-${b}`).join(','),
          match: matchStmts?.map((s) => `${({ 6: 'tcp', 17: 'udp', 132: 'sctp' })[s.proto]}[${s.offset}:${s.n}]${s.mask ? `&0x${s.mask.toString(16)}` : ''}=${s.value}`).join(','),
        });
        expect(err).toBeNull();
        // An empty protocols list is "not given".
        const mf: ModelFlow = { name, priority, protos: protos !== null && protos.length === 0 ? null : protos, dsts, srcs, dports, sports, match: matchStmts };
        const at = model.findIndex((m) => m.name === name);
        if (at >= 0) model[at] = mf;
        else model.push(mf);
        model.sort((a, b) => b.priority - a.priority);
      }
      expect(set.flows.map((f) => f.name)).toEqual(model.map((m) => m.name));

      for (let i = 0; i < 500; i++) {
        const proto = pick(rnd, [IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP, IPPROTO_ICMP, IPPROTO_ICMPV6, 47]);
        const l4 = Array.from({ length: Math.floor(rnd() * 24) }, () => (rnd() < 0.5 ? Math.floor(rnd() * 4) : Math.floor(rnd() * 256)));
        const spec: PacketSpec = { src: pick(rnd, addrs), dst: pick(rnd, addrs), proto, sport: Math.floor(rnd() * 100), dport: Math.floor(rnd() * 100), id: rnd() < 0.5 ? 0 : 1 + Math.floor(rnd() * 9), l4 };
        const src = addrBytes(spec.src);
        const dst = addrBytes(spec.dst);
        let expected: string | null = null;
        for (const m of model) {
          if (m.dsts !== null && !m.dsts.some((c) => inCidr(c, dst))) continue;
          if (m.srcs !== null && !m.srcs.some((c) => inCidr(c, src))) continue;
          if (ping && (proto === IPPROTO_ICMP || proto === IPPROTO_ICMPV6) && spec.id !== 0) {
            expected = m.name;
            break;
          }
          if (m.protos !== null && !m.protos.includes(proto)) continue;
          if (m.dports !== null && !m.dports.some(([a, b]) => spec.dport! >= a && spec.dport! <= b)) continue;
          if (m.sports !== null && !m.sports.some(([a, b]) => spec.sport! >= a && spec.sport! <= b)) continue;
          if (m.match !== null && hlen[proto] !== undefined) {
            if (l4.length < hlen[proto]) continue;
            const okAll = m.match.every((s) => {
              if (s.proto !== proto) return true;
              let x = 0;
              for (let k = 0; k < s.n; k++) x = x * 256 + l4[s.offset + k];
              if (s.mask !== 0) x = (x & s.mask) >>> 0;
              return x === s.value;
            });
            if (!okAll) continue;
          }
          expected = m.name;
          break;
        }
        const got = match(set, spec);
        if (got !== expected) expect([spec, got]).toEqual([spec, expected]);
      }
    }
  });

  test('listings of random valid sets are JSON with the defined values', () => {
    const rnd = prng(99);
    const set = daemonSet();
    for (let i = 0; i < 50; i++) {
      set.define({
        name: `n${i}`,
        priority: Math.floor(rnd() * 1000) - 500,
        target: rnd() < 0.5 ? T_A : null,
        protocols: rnd() < 0.5 ? 'tcp,sctp' : undefined,
        dsts: rnd() < 0.5 ? '10.0.0.0/8,2001:db8::/48' : undefined,
        dports: rnd() < 0.5 ? `${1 + i},${100 + i}-${200 + i}` : undefined,
        match: rnd() < 0.5 ? `tcp[${i % 19}:1]=${i}` : undefined,
        udpencap: rnd() < 0.2 ? i : 0,
      });
    }
    const all = JSON.parse(set.list()) as Array<Record<string, unknown>>;
    expect(all.map((o) => o.name)).toEqual(JSON.parse(set.listNames()));
    for (const o of all) {
      expect(JSON.parse(set.list(o.name as string))).toEqual(o);
      expect(['tshm-a', 'NULL']).toContain(o.user_ref);
    }
  });
});

/** A name as the daemon holds it: the UTF-8 bytes of `text`, one char per byte. */
const bytesOf = (text: string): string => Buffer.from(text, 'utf8').toString('latin1');
/** A listing as the daemon sends it (latin1 back to bytes) and as a client reads it (UTF-8). */
const wire = (listing: string): string => Buffer.from(listing, 'latin1').toString('utf8');

describe('names as bytes, and listings that are always JSON', () => {
  const odd = ['x€', 'x¬', 'café', 'a"b', 'a\\b', 'tab\there', 'nl\nx', '\u0001\u001f', '"},{"name":"injected', 'emoji😀', 'plain-name_1.2'];

  test('every name is its own flow, listed with the same bytes (no collisions)', () => {
    const set = daemonSet();
    for (const n of odd) expect(set.define({ name: bytesOf(n), target: T_A })).toBeNull();
    const names = JSON.parse(wire(set.listNames())) as string[];
    expect(names.slice().sort()).toEqual(odd.slice().sort());
    const all = JSON.parse(wire(set.list())) as Array<{ name: string; user_ref: string }>;
    expect(all.map((o) => o.name).sort()).toEqual(odd.slice().sort());
    for (const n of odd) expect((JSON.parse(wire(set.list(bytesOf(n)))) as { name: string }).name).toBe(n);
  });

  test('python3 json.loads accepts the listings too', () => {
    const set = daemonSet();
    for (const n of odd) set.define({ name: bytesOf(n), target: T_A, protocols: 'tcp' });
    const dir = fs.mkdtempSync('/tmp/nfqlbts-json-');
    try {
      const file = `${dir}/list.json`;
      fs.writeFileSync(file, Buffer.from(set.list(), 'latin1'));
      const { execFileSync } = require('node:child_process') as typeof import('node:child_process');
      const out = execFileSync('python3', ['-c', 'import json,sys; print(len(json.loads(open(sys.argv[1],"rb").read())))', file], { encoding: 'utf8' });
      expect(out.trim()).toBe(String(odd.length));
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('names nfqlb would cut or end early are refused, in the daemon and in the CLI', () => {
    const set = daemonSet();
    expect(set.define({ name: 'a\u0000b', target: T_A })).toBe('Invalid name: it contains a NUL byte');
    expect(set.define({ name: `${'\xc3\xa9'.repeat(508)}x`, target: T_A })).toBeNull(); // 1017 bytes
    expect(set.define({ name: '\xc3\xa9'.repeat(509), target: T_A })).toBe('Name too long: at most 1017 bytes');
    expect(checkFlowName('x'.repeat(1017))).toBeNull();
    expect(checkFlowSetArgs({ name: 'é'.repeat(509), target: 'tshm-a' })).toBe('name too long (at most 1017 bytes)');
    expect(checkFlowSetArgs({ name: 'é'.repeat(508), target: 'tshm-a' })).toBeNull();
    expect(checkFlowSetArgs({ name: 'a\nb', target: 'tshm-a' })).toBe('name contains a newline, which the control protocol cannot carry');
    expect(checkFlowSetArgs({ name: 'a', target: 'tshm-a', match: 'tcp[1:1]=1\n' })).toBe('match contains a newline, which the control protocol cannot carry');
    expect(set.listNames()).toBe(`[\n  "${'\xc3\xa9'.repeat(508)}x"\n]\n`);
  });

  test('plain names list exactly as nfqlb lists them', () => {
    const set = daemonSet();
    set.define({ name: 'tshm-stream-a-flow_1.x', target: T_A, protocols: 'tcp' });
    expect(set.listNames()).toBe('[\n  "tshm-stream-a-flow_1.x"\n]\n');
  });
});
