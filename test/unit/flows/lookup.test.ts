/**
 * The flow index must decide exactly as nfqlb's priority-ordered walk
 * (FlowSet.lookupLinear): the same flow, the same lastUdpencap, the same
 * match counters — over random flow sets and real packets through classify(),
 * and in the cases that are easy to get wrong (promiscuous ping, the hidden
 * udpencap flow, ties, overlapping CIDRs of one flow, wide port ranges).
 */
import { FlowIndex, SYNC_BUILD_MAX_FLOWS } from '../../../src/flows/lookup';
import type { Flow } from '../../../src/flows/match';
import type { FlowOverlay } from '../../../src/flows/overlay';
import { FlowSet, type TargetSource } from '../../../src/flows/flowset';
import { IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP } from '../../../src/packet/hashkey';
import { classify, PacketInfo, RC_INVALID } from '../../../src/packet/classify';
import { prng } from '../../helpers/prng';
import { icmpEcho, ipv4, ipv6, tcp, udp } from '../../helpers/packets';

interface Tgt {
  name: string;
}

/** Every name opens (a fresh object per acquire is fine: nothing here counts references). */
const targets: TargetSource<Tgt> = {
  acquire: (name) => ({ name }),
  release: () => undefined,
};

type Rnd = () => number;

function int(rnd: Rnd, n: number): number {
  return Math.floor(rnd() * n);
}

function pick<T>(rnd: Rnd, xs: readonly T[]): T {
  return xs[int(rnd, xs.length)];
}

// A small address and port universe, so that random flows and packets meet often.
const V4_HOSTS = ['192.0.2.1', '192.0.2.2', '192.0.2.77', '192.0.2.200', '198.51.100.1', '198.51.100.130', '203.0.113.9', '10.0.0.1'];
const V6_HOSTS = ['2001:db8::1', '2001:db8::2', '2001:db8::1:5', '2001:db8:1::9', '2001:db8:ffff::1', 'fd00::1'];
const V4_PREFIXES = [0, 1, 8, 16, 20, 24, 25, 27, 30, 31, 32, 32, 32];
const V6_PREFIXES = [0, 16, 32, 48, 64, 96, 112, 120, 126, 127, 128, 128, 128];
const PORTS = [53, 80, 443, 1000, 1001, 1023, 1024, 2000, 2047, 2048, 4000, 5000, 9899, 65535];
const MATCHES = ['tcp[13:1]&0x02=0x02', 'tcp[13:1]=0x10', 'tcp[0:2]=1000', 'udp[2:2]=80', 'udp[4:2]&0xfff0=0x0010', 'udp[0:1]=3', 'sctp[8:4]=0', 'sctp[0:2]&0xff00=0x1300'];

function randomCidr(rnd: Rnd): string {
  const r = rnd();
  if (r < 0.5) return `${pick(rnd, V4_HOSTS)}/${pick(rnd, V4_PREFIXES)}`;
  if (r < 0.9) return `${pick(rnd, V6_HOSTS)}/${pick(rnd, V6_PREFIXES)}`;
  // IPv6 notation for IPv4-mapped space, which IPv4 packets fall in.
  return `::ffff:${pick(rnd, V4_HOSTS)}/${96 + pick(rnd, V4_PREFIXES)}`;
}

function randomCidrs(rnd: Rnd): string | undefined {
  if (rnd() < 0.3) return undefined;
  // Mostly a few, sometimes the 32 nfqlb allows (overlaps and duplicates included).
  const n = rnd() < 0.05 ? 32 : 1 + int(rnd, 4);
  return Array.from({ length: n }, () => randomCidr(rnd)).join(',');
}

function randomPorts(rnd: Rnd): string | undefined {
  const r = rnd();
  if (r < 0.35) return undefined;
  if (r < 0.38) return ''; // no port at all
  const n = 1 + int(rnd, 4);
  return Array.from({ length: n }, () => {
    const p = pick(rnd, PORTS);
    const k = rnd();
    if (k < 0.5) return `${p}`;
    if (k < 0.8) return `${p}-${Math.min(65535, p + int(rnd, 3000))}`;
    const lo = 1 + int(rnd, 1000);
    return `${lo}-${Math.min(65535, lo + int(rnd, 65535))}`; // wide: many blocks
  }).join(',');
}

function randomProtocols(rnd: Rnd): string | undefined {
  if (rnd() < 0.3) return undefined;
  const ps = ['tcp', 'udp', 'sctp'].filter(() => rnd() < 0.5);
  return ps.length === 0 ? 'udp' : ps.join(',');
}

/** A random flow set: names from a pool of `names` (so some commands redefine a flow in place), random priorities. */
function randomFlowSet(rnd: Rnd, names: number): FlowSet<Tgt> {
  const set = new FlowSet<Tgt>({ targetName: (t) => t.name, promiscuousPing: rnd() < 0.5 });
  // Few priorities (many ties) or spread ones.
  const prios = rnd() < 0.5 ? [0, 1, 2, 5, 100, -1] : [int(rnd, 1 << 30), -int(rnd, 1 << 30), 0, int(rnd, 1 << 30)];
  randomCommand.names.set(set, names);
  randomCommand.prios.set(set, prios);
  return set;
}

/** One random flow-set (or, 1 in 20, flow-delete) command, as the control server gets it. */
function randomCommand(rnd: Rnd, set: FlowSet<Tgt>): void {
  const name = `f${int(rnd, randomCommand.names.get(set) ?? 1)}`;
  if (rnd() < 0.05) {
    set.applyDelete(name, targets);
    return;
  }
  const encap = rnd() < 0.08;
  const reply = set.applySet(
    {
      name,
      target: `t${int(rnd, 3)}`,
      priority: pick(rnd, randomCommand.prios.get(set) ?? [0]),
      protocols: encap ? 'sctp' : randomProtocols(rnd),
      dsts: randomCidrs(rnd),
      srcs: rnd() < 0.7 ? undefined : randomCidrs(rnd),
      dports: randomPorts(rnd),
      sports: rnd() < 0.8 ? undefined : randomPorts(rnd),
      match: rnd() < 0.85 ? undefined : Array.from({ length: 1 + int(rnd, 2) }, () => pick(rnd, MATCHES)).join(','),
      udpencap: encap ? pick(rnd, [9899, 5000, 80]) : 0,
    },
    targets,
  );
  // An existing flow cannot change udpencap; anything else must be accepted.
  if (reply !== 'OK' && reply !== 'FAIL: Alter udpencap not allowed') throw new Error(`flow-set refused: ${reply}`);
}
randomCommand.names = new WeakMap<FlowSet<Tgt>, number>();
randomCommand.prios = new WeakMap<FlowSet<Tgt>, number[]>();

function sctp(sport: number, dport: number): number[] {
  return [sport >> 8, sport & 0xff, dport >> 8, dport & 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 4];
}

/** A random packet: UDP/TCP/SCTP (also SCTP in UDP), ICMP echo and errors, other protocols, fragments, truncated headers. */
function randomPacket(rnd: Rnd): Uint8Array {
  const v6 = rnd() < 0.4;
  const hosts = v6 ? V6_HOSTS : V4_HOSTS;
  const src = rnd() < 0.9 ? pick(rnd, hosts) : v6 ? `2001:db8::${int(rnd, 65536).toString(16)}` : `198.51.100.${int(rnd, 256)}`;
  const dst = rnd() < 0.9 ? pick(rnd, hosts) : v6 ? `2001:db8::${int(rnd, 65536).toString(16)}` : `192.0.2.${int(rnd, 256)}`;
  const port = (): number => (rnd() < 0.8 ? pick(rnd, PORTS) : 1 + int(rnd, 65535));
  const icmp = v6 ? IPPROTO_ICMPV6 : IPPROTO_ICMP;
  let proto: number;
  let l4: number[];
  const r = rnd();
  if (r < 0.25) {
    proto = IPPROTO_UDP;
    l4 = udp(port(), port(), rnd() < 0.3 ? sctp(port(), port()) : [int(rnd, 256), 0, 0x12, 0x34]);
  } else if (r < 0.45) {
    proto = IPPROTO_TCP;
    l4 = tcp(port(), port(), pick(rnd, [0x02, 0x10, 0x12]));
    if (rnd() < 0.1) l4 = l4.slice(0, 4 + int(rnd, 16)); // too short for a byte match
  } else if (r < 0.6) {
    proto = IPPROTO_SCTP;
    l4 = sctp(port(), port());
  } else if (r < 0.75) {
    proto = icmp;
    const echo = icmpEcho(rnd() < 0.8 ? 1 + int(rnd, 65535) : 0);
    if (v6) echo[0] = 128;
    l4 = echo;
  } else if (r < 0.85) {
    // An ICMP error about a datagram from dst to src.
    proto = icmp;
    const innerProto = pick(rnd, [IPPROTO_UDP, IPPROTO_TCP, IPPROTO_SCTP, 47]);
    const inner = innerProto === IPPROTO_UDP ? udp(port(), port()) : innerProto === IPPROTO_TCP ? tcp(port(), port()) : innerProto === IPPROTO_SCTP ? sctp(port(), port()) : [0, 0, 0, 0];
    const ip = v6 ? ipv6(dst, src, innerProto, inner) : ipv4(dst, src, innerProto, inner);
    l4 = [v6 ? 1 : 3, v6 ? 4 : 1, 0, 0, 0, 0, 0, 0, ...ip];
  } else {
    proto = pick(rnd, [47, 50, 0]);
    l4 = [1, 2, 3, 4, 5, 6, 7, 8];
  }
  const frag = rnd();
  if (v6) {
    if (frag < 0.1) {
      const later = rnd() < 0.5;
      const off = later ? 8 * (1 + int(rnd, 100)) : 0;
      return ipv6(src, dst, 44, [proto, 0, off >> 8, (off & 0xf8) | 1, 0, 0, 0x12, int(rnd, 256), ...l4]);
    }
    return ipv6(src, dst, proto, l4);
  }
  if (frag < 0.1) return ipv4(src, dst, proto, l4, { id: 1 + int(rnd, 65535), moreFragments: true, fragOffset: rnd() < 0.5 ? 0 : 1 + int(rnd, 100) });
  return ipv4(src, dst, proto, l4);
}

/** The outcome of one lookup, compared field by field: flow, udpencap, match counter changes. */
class Outcome {
  flow: Flow<Tgt> | null = null;
  udpencap = 0;
  counted = new Float64Array(1024);

  /** Runs `lookup` and records its outcome; the match counters are left as they were. */
  record(flows: readonly Flow<Tgt>[], lookup: () => Flow<Tgt> | null, udpencap: () => number): void {
    for (let i = 0; i < flows.length; i++) this.counted[i] = flows[i].matches;
    this.flow = lookup();
    this.udpencap = udpencap();
    for (let i = 0; i < flows.length; i++) {
      const m = flows[i].matches;
      flows[i].matches = this.counted[i];
      this.counted[i] = m - this.counted[i];
    }
  }

  equals(o: Outcome, n: number): boolean {
    if (this.flow !== o.flow || this.udpencap !== o.udpencap) return false;
    for (let i = 0; i < n; i++) if (this.counted[i] !== o.counted[i]) return false;
    return true;
  }

  text(n: number): string {
    return JSON.stringify({ flow: this.flow?.name ?? null, udpencap: this.udpencap, counted: Array.from(this.counted.subarray(0, n)) });
  }
}

describe('flow index = linear walk', () => {
  test('random flow sets (1..200 flows, changed between rounds) × random packets: same flow, udpencap and match counts; at least 100,000 pairs', () => {
    const rnd = prng(0xf10e1d);
    const info = new PacketInfo();
    const index = new FlowIndex<Tgt>();
    const linear = new Outcome();
    const indexed = new Outcome();
    const wanted = Number(process.env.FLOWINDEX_PAIRS ?? 100_000);
    let pairs = 0;
    let matched = 0;
    let viaHidden = 0;
    let largest = 0;
    const mismatches: string[] = [];
    for (let s = 0; pairs < wanted; s++) {
      const size = rnd() < 0.1 ? 1 + int(rnd, 5) : 1 + int(rnd, 200);
      const set = randomFlowSet(rnd, Math.ceil(size * (0.8 + 0.4 * rnd())));
      for (let c = 0; set.size < size && c < 2 * size; c++) randomCommand(rnd, set);
      for (let round = 0; round < 4; round++) {
        // Later rounds: a few more commands, as a running daemon gets them.
        if (round > 0) for (let c = int(rnd, 4); c >= 0; c--) randomCommand(rnd, set);
        const flows = set.flows;
        largest = Math.max(largest, flows.length);
        index.build(flows);
        for (let p = 0; p < 100; p++) {
          const pkt = randomPacket(rnd);
          if (rnd() < 0.2) set.promiscuousPing = !set.promiscuousPing;
          for (let pass = 0; pass < 2; pass++) {
            // Second pass: what the pipeline does when a hidden flow's udpencap is the packet's UDP port.
            if (pass === 1) {
              const encap = set.lastUdpencap;
              if (encap === 0 || info.proto !== IPPROTO_UDP || info.dport !== encap) break;
            }
            const rc = classify(pkt, 0, pkt.length, pass === 0 ? 0 : set.lastUdpencap, info);
            linear.record(flows, () => set.lookupLinear(info, pkt), () => set.lastUdpencap);
            indexed.record(flows, () => index.lookup(info, pkt, set.promiscuousPing), () => index.lastUdpencap);
            pairs++;
            if (linear.flow !== null) matched++;
            if (flows.some((f, i) => f.target === null && linear.counted[i] > 0)) viaHidden++;
            if (!linear.equals(indexed, flows.length) && mismatches.length < 5) {
              mismatches.push(`set ${s} round ${round} packet ${p} pass ${pass} rc ${rc}: linear ${linear.text(flows.length)} index ${indexed.text(flows.length)}\n` +
                `packet ${Buffer.from(pkt).toString('hex')}\nflows ${set.list()}`);
            }
          }
        }
      }
    }
    expect(mismatches).toEqual([]);
    expect(pairs).toBeGreaterThanOrEqual(wanted);
    expect(largest).toBeGreaterThanOrEqual(150);
    // The random sets must exercise both outcomes and the hidden flows.
    expect(matched).toBeGreaterThan(pairs / 5);
    expect(pairs - matched).toBeGreaterThan(pairs / 20);
    expect(viaHidden).toBeGreaterThan(pairs / 1000);
  });
});

describe('changes one at a time (the index follows without rebuilding)', () => {
  /** nfqlb's order, as FlowSet once made it: replace in place or append, then a stable sort by priority. */
  function referenceInsert(ref: Array<{ name: string; priority: number }>, name: string, priority: number): void {
    const i = ref.findIndex((r) => r.name === name);
    if (i >= 0) ref[i] = { name, priority };
    else ref.push({ name, priority });
    ref.sort((a, b) => b.priority - a.priority);
  }

  test('random flow-sets and flow-deletes on sets above the synchronous limit: after every change, the order is nfqlb\'s and lookup() = the linear walk', async () => {
    const rnd = prng(0x1dc4a9);
    const info = new PacketInfo();
    const linear = new Outcome();
    const indexed = new Outcome();
    const mismatches: string[] = [];
    let followed = 0;
    let withOverlay = 0;
    let withRemoved = 0;
    let steps = 0;
    for (let round = 0; round < 3; round++) {
      const names = SYNC_BUILD_MAX_FLOWS + 20 + int(rnd, 100);
      const set = new FlowSet<Tgt>({ targetName: (t) => t.name, promiscuousPing: round === 1 });
      const ref: Array<{ name: string; priority: number }> = [];
      // Few priorities, so most inserts are ties; a rare far one.
      const prios = [0, 1, 2, 2, 5, 100, -1, round === 2 ? 2 ** 31 : 7];
      const index = (set as unknown as { index: FlowIndex<Tgt> }).index;
      const internals = (index as unknown as { overlay: FlowOverlay<Tgt> }).overlay;
      for (let step = 0; step < 1200; step++) {
        const name = `f${int(rnd, names)}`;
        // Mostly sets until the set is big, then as many deletes as sets.
        if (set.size > SYNC_BUILD_MAX_FLOWS && rnd() < 0.45) {
          const had = set.get(name);
          set.applyDelete(name, targets);
          if (had !== undefined) {
            ref.splice(ref.findIndex((r) => r.name === name), 1);
            if (had.udpencap > 0) ref.splice(ref.findIndex((r) => r.name === `#${name}`), 1);
          }
        } else {
          const encap = rnd() < 0.2;
          const priority = pick(rnd, prios);
          const reply = set.applySet(
            {
              name,
              target: `t${int(rnd, 3)}`,
              priority,
              protocols: encap ? 'sctp' : randomProtocols(rnd),
              dsts: randomCidrs(rnd),
              srcs: rnd() < 0.8 ? undefined : randomCidrs(rnd),
              dports: randomPorts(rnd),
              udpencap: encap ? pick(rnd, [9899, 5000]) : 0,
            },
            targets,
          );
          if (reply === 'OK') {
            if (encap) referenceInsert(ref, `#${name}`, set.get(`#${name}`)!.priority);
            referenceInsert(ref, name, set.get(name)!.priority);
          } else if (reply !== 'FAIL: Alter udpencap not allowed') {
            throw new Error(`flow-set refused: ${reply}`);
          }
        }
        steps++;
        const flows = set.flows;
        const order = flows.map((f) => f.name).join(' ');
        const wantOrder = ref.map((r) => r.name).join(' ');
        if (order !== wantOrder && mismatches.length < 5) mismatches.push(`round ${round} step ${step}: order ${order}\nwanted ${wantOrder}`);
        if (index.flows === flows) {
          followed++;
          if (internals.flows.length > 0) withOverlay++;
          if (internals.removedCount > 0) withRemoved++;
        }
        for (let p = 0; p < 12; p++) {
          const pkt = randomPacket(rnd);
          const rc = classify(pkt, 0, pkt.length, 0, info);
          linear.record(flows, () => set.lookupLinear(info, pkt), () => set.lastUdpencap);
          indexed.record(flows, () => set.lookup(info, pkt), () => set.lastUdpencap);
          if (!linear.equals(indexed, flows.length) && mismatches.length < 5) {
            mismatches.push(`round ${round} step ${step} packet ${p} rc ${rc}: linear ${linear.text(flows.length)} index ${indexed.text(flows.length)}\npacket ${Buffer.from(pkt).toString('hex')}`);
          }
        }
        // One change per event-loop turn, as the control server gets them.
        await new Promise((resolve) => setImmediate(resolve));
      }
    }
    expect(mismatches).toEqual([]);
    // The overlay and the removed marks must have been what lookup() used, most of the time.
    expect(followed).toBeGreaterThan(steps * 0.9);
    expect(withOverlay).toBeGreaterThan(steps / 4);
    expect(withRemoved).toBeGreaterThan(steps / 4);
  });

  test('hidden udpencap flow in the base, winners and catch-alls in the overlay, promiscuous ping: as the linear walk', () => {
    const s = new FlowSet<Tgt>({ targetName: (t) => t.name });
    for (let i = 0; i < SYNC_BUILD_MAX_FLOWS; i++) s.applySet({ name: `fill${i}`, target: 't', priority: 3, dsts: `203.0.113.${i}/32` }, targets);
    expect(s.applySet({ name: 'encap', target: 'a', priority: 3, protocols: 'sctp', dsts: '192.0.2.1/32', udpencap: 9899 }, targets)).toBe('OK');
    const index = (s as unknown as { index: FlowIndex<Tgt> }).index;
    index.settle();
    const info = new PacketInfo();
    const linear = new Outcome();
    const indexed = new Outcome();
    const check = (pkt: Uint8Array): string | null => {
      classify(pkt, 0, pkt.length, 0, info);
      const flows = s.flows;
      expect(index.flows).toBe(flows);
      linear.record(flows, () => s.lookupLinear(info, pkt), () => s.lastUdpencap);
      indexed.record(flows, () => s.lookup(info, pkt), () => s.lastUdpencap);
      expect(indexed.text(flows.length)).toBe(linear.text(flows.length));
      return indexed.flow === null ? null : indexed.flow.name;
    };
    const encapPkt = ipv4('198.51.100.1', '192.0.2.1', IPPROTO_UDP, udp(5, 9899, sctp(1, 2)));
    expect(check(encapPkt)).toBeNull();
    // Above the hidden flow (an overlay winner): the hidden flow is not reached, not counted.
    s.applySet({ name: 'top', target: 'b', priority: 5, dsts: '192.0.2.0/24' }, targets);
    expect(check(encapPkt)).toBe('top');
    // Below it, at the same priority (a tie after it) and lower: the hidden flow counts, the catch-all wins.
    s.applyDelete('top', targets);
    s.applySet({ name: 'tie', target: 'b', priority: 3, dsts: '192.0.2.0/24' }, targets);
    s.applySet({ name: 'low', target: 'c', priority: 1 }, targets);
    expect(check(encapPkt)).toBe('tie');
    s.applyDelete('tie', targets);
    expect(check(encapPkt)).toBe('low');
    // The hidden flow itself re-defined (a new Flow in the overlay, the base one marked removed).
    s.applySet({ name: 'encap', target: 'a', priority: 3, protocols: 'sctp', dsts: '192.0.2.0/30', udpencap: 9899 }, targets);
    expect(check(encapPkt)).toBe('low');
    s.promiscuousPing = true;
    expect(check(ipv4('198.51.100.1', '192.0.2.1', IPPROTO_ICMP, icmpEcho(7)))).toBe('encap');
    expect(check(ipv4('198.51.100.1', '203.0.113.7', IPPROTO_ICMP, icmpEcho(7)))).toBe('fill7');
  });
});

describe('cases', () => {
  function set(defs: Array<Parameters<FlowSet<Tgt>['applySet']>[0]>, ping = false): FlowSet<Tgt> {
    const s = new FlowSet<Tgt>({ targetName: (t) => t.name, promiscuousPing: ping });
    for (const d of defs) expect(s.applySet(d, targets)).toBe('OK');
    return s;
  }
  function decide(s: FlowSet<Tgt>, pkt: Uint8Array): { flow: string | null; udpencap: number } {
    const info = new PacketInfo();
    expect(classify(pkt, 0, pkt.length, 0, info)).not.toBe(RC_INVALID);
    const f = s.lookup(info, pkt);
    return { flow: f === null ? null : f.name, udpencap: s.lastUdpencap };
  }

  test('FlowSet.lookup uses the index at once after a change; many changes in one turn are built after it, linear meanwhile', async () => {
    const spy = jest.spyOn(FlowIndex.prototype, 'lookup');
    try {
      const s = new FlowSet<Tgt>({ targetName: (t) => t.name });
      const add = (i: number): void => {
        s.applySet({ name: `f${i}`, target: 't', priority: -i, protocols: 'udp', dsts: `192.0.2.${i % 256}/32`, dports: `${1000 + i}` }, targets);
      };
      for (let i = 0; i <= SYNC_BUILD_MAX_FLOWS; i++) add(i);
      let last = SYNC_BUILD_MAX_FLOWS;
      const pkt = (i: number): Uint8Array => ipv4('198.51.100.1', `192.0.2.${i % 256}`, IPPROTO_UDP, udp(5, 1000 + i));
      spy.mockClear();
      // The one flow beyond the synchronous build is in the index's overlay.
      expect(decide(s, pkt(last)).flow).toBe(`f${last}`);
      expect(spy).toHaveBeenCalledTimes(1);
      // More changes than the overlay takes: the base is rebuilt after the turn.
      for (let i = 0; i < 40; i++) add(++last);
      spy.mockClear();
      expect(decide(s, pkt(last)).flow).toBe(`f${last}`);
      expect(spy).not.toHaveBeenCalled();
      await new Promise((resolve) => setImmediate(resolve));
      expect(decide(s, pkt(last)).flow).toBe(`f${last}`);
      expect(spy).toHaveBeenCalledTimes(1);
      for (let i = SYNC_BUILD_MAX_FLOWS + 1; i <= last; i++) s.applyDelete(`f${i}`, targets);
      last = SYNC_BUILD_MAX_FLOWS;
      // A small set is indexed at once.
      s.applyDelete(`f${last}`, targets);
      for (let i = 1; i <= SYNC_BUILD_MAX_FLOWS; i++) s.applyDelete(`f${i}`, targets);
      spy.mockClear();
      expect(decide(s, ipv4('198.51.100.1', '192.0.2.0', IPPROTO_UDP, udp(5, 1000))).flow).toBe('f0');
      expect(spy).toHaveBeenCalledTimes(1);
    } finally {
      spy.mockRestore();
    }
  });

  test('promiscuous ping: the first flow whose addresses match, protocols and ports ignored', () => {
    const defs = [
      { name: 'web', target: 'a', priority: 5, protocols: 'tcp', dsts: '192.0.2.1/32', dports: '80' },
      { name: 'udp', target: 'b', priority: 9, protocols: 'udp', dsts: '192.0.2.0/24', dports: '53' },
    ];
    const echo = (id: number): Uint8Array => ipv4('198.51.100.1', '192.0.2.1', IPPROTO_ICMP, icmpEcho(id));
    expect(decide(set(defs, true), echo(7)).flow).toBe('udp');
    expect(decide(set(defs, true), echo(0)).flow).toBeNull();
    expect(decide(set(defs, false), echo(7)).flow).toBeNull();
  });

  test('hidden udpencap flow: counted, its udpencap left behind, a lower catch-all still wins', () => {
    const s = set([
      { name: 'encap', target: 'a', priority: 10, protocols: 'sctp', dsts: '192.0.2.1/32', udpencap: 9899 },
      { name: 'all', target: 'b', priority: 1, dsts: '192.0.2.0/24' },
    ]);
    const pkt = ipv4('198.51.100.1', '192.0.2.1', IPPROTO_UDP, udp(5, 9899, sctp(1, 2)));
    expect(decide(s, pkt)).toEqual({ flow: 'all', udpencap: 0 });
    expect(s.get('#encap')?.matches).toBe(1);
    s.applyDelete('all', targets);
    expect(decide(s, pkt)).toEqual({ flow: null, udpencap: 9899 });
    expect(s.get('#encap')?.matches).toBe(2);
  });

  test('equal priorities: the first defined wins, also after a redefinition in place', () => {
    const s = set([
      { name: 'x', target: 'a', priority: 3, dsts: '192.0.2.0/24' },
      { name: 'y', target: 'b', priority: 3, dsts: '192.0.2.1/32' },
    ]);
    const pkt = ipv4('198.51.100.1', '192.0.2.1', IPPROTO_TCP, tcp(1, 2));
    expect(decide(s, pkt).flow).toBe('x');
    s.applySet({ name: 'x', target: 'a', priority: 3, dsts: '192.0.2.0/25' }, targets);
    expect(decide(s, pkt).flow).toBe('x');
  });

  test("a flow's overlapping CIDRs count one match per packet", () => {
    const s = set([{ name: 'o', target: 'a', dsts: '192.0.2.0/24,192.0.2.1/32,192.0.2.1/32,0.0.0.0/0', srcs: '::/0,198.51.100.0/24' }]);
    decide(s, ipv4('198.51.100.1', '192.0.2.1', IPPROTO_UDP, udp(1, 2)));
    expect(s.get('o')?.matches).toBe(1);
  });

  test('wide and many port ranges, an empty port list, sctp and other protocols', () => {
    const s = set([
      { name: 'none', target: 'a', priority: 9, protocols: 'udp', dports: '' },
      { name: 'many', target: 'a', priority: 8, protocols: 'tcp,sctp', dports: Array.from({ length: 100 }, (_, i) => `${100 * i + 1}`).join(',') },
      { name: 'wide', target: 'b', priority: 7, protocols: 'udp', dports: '1-65535' },
      { name: 'rest', target: 'c', priority: 1 },
    ]);
    expect(decide(s, ipv4('198.51.100.1', '192.0.2.1', IPPROTO_UDP, udp(1, 65535))).flow).toBe('wide');
    expect(decide(s, ipv4('198.51.100.1', '192.0.2.1', IPPROTO_TCP, tcp(1, 9901))).flow).toBe('many');
    expect(decide(s, ipv4('198.51.100.1', '192.0.2.1', IPPROTO_SCTP, sctp(1, 9901))).flow).toBe('many');
    expect(decide(s, ipv4('198.51.100.1', '192.0.2.1', IPPROTO_TCP, tcp(1, 9902))).flow).toBe('rest');
    expect(decide(s, ipv6('2001:db8::1', '2001:db8::2', 47, [0, 0, 0, 0])).flow).toBe('rest');
  });
});
