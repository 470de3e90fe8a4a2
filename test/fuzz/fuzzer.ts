/**
 * The fuzzer behind `npm run fuzz` (scripts/fuzz.js) and test/unit/fuzz.test.ts.
 *
 * Drives the parsers that see untrusted input — the packet classifier and the
 * decision pipeline (packets from the network), the flow-argument parsers and
 * the control-request parser (bytes from the control socket), the config
 * reader and the pcap reader (files) — with random inputs and mutations of
 * the reference captures and configurations (test/fixtures/reference).
 *
 * Each case checks:
 *  - no exception escapes, except NfqlbError where the contract says so
 *    (config: NFQLB_ERR_CONFIG on one line that names FILE:LINE; pcap:
 *    NFQLB_ERR_PCAP);
 *  - no read outside the input: packets are classified (and decided) inside a
 *    larger buffer with random garbage before and after, pcap files are parsed
 *    from inside a larger buffer, and the results must equal those of the
 *    exact input;
 *  - identical results on identical input (a second run, fresh state) and, for
 *    the control parser, whatever the chunking of the bytes.
 * A case is reproducible from (seed, case number): see `describeCase`.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { applyConfig } from '../../src/replay/config';
import { findCommand, parseCommandLine } from '../../src/cli/main';

const parser = { find: findCommand, parse: parseCommandLine };
import { NfqlbError } from '../../src/base/errors';
import { checkFlowSetArgs, FLOW_FIELDS, flowCmdFromArgs, flowOption, type FlowSetArgs } from '../../src/flows/fields';
import { FlowSet } from '../../src/flows/flowset';
import { inetNtop6, inetPton6 } from '../../src/base/inet';
import { RequestParser, encodeRequest, type ControlRequest } from '../../src/services/control';
import { MaglevTable } from '../../src/tables/maglev';
import { classify, PacketInfo } from '../../src/packet/classify';
import { parsePcap } from '../../src/replay/pcap';
import { Pipeline } from '../../src/datapath/pipeline';
import { Target, TargetRegistry } from '../../src/tables/targets';

// ---------------------------------------------------------------------------
// Randomness

/** mulberry32: small, fast, and a case reproduces from its seed. */
export class Rng {
  private a: number;
  constructor(seed: number) {
    this.a = seed >>> 0;
  }
  /** A uint32. */
  u32(): number {
    this.a = (this.a + 0x6d2b79f5) >>> 0;
    let t = this.a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }
  /** An integer in [0, n). */
  int(n: number): number {
    return n <= 0 ? 0 : this.u32() % n;
  }
  chance(p: number): boolean {
    return this.u32() / 4294967296 < p;
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)];
  }
  bytes(n: number): Uint8Array {
    const b = new Uint8Array(n);
    for (let i = 0; i < n; i += 4) {
      const v = this.u32();
      b[i] = v;
      if (i + 1 < n) b[i + 1] = v >>> 8;
      if (i + 2 < n) b[i + 2] = v >>> 16;
      if (i + 3 < n) b[i + 3] = v >>> 24;
    }
    return b;
  }
}

// ---------------------------------------------------------------------------
// Seeds from the reference directory

const REFERENCE = process.env.NFQLB_REFERENCE_DIR ?? path.join(__dirname, '..', 'fixtures', 'reference');

export interface Corpus {
  packets: Uint8Array[];
  pcaps: Uint8Array[];
  configs: { name: string; text: string }[];
  flowArgs: FlowSetArgs[];
}

function flowArgsOf(line: string): FlowSetArgs | null {
  const words = line.trim().split(/\s+/);
  if (words[0] === 'nfqlb') words.shift();
  if (words[0] !== 'flow-set') return null;
  const args: Record<string, string> = {};
  for (const w of words.slice(1)) {
    const m = /^--([^=]+)=(.*)$/.exec(w);
    if (m !== null) args[m[1]] = m[2];
  }
  return args as FlowSetArgs;
}

let corpus: Corpus | null = null;

/** The reference captures and configurations, read once. */
export function loadCorpus(): Corpus {
  if (corpus !== null) return corpus;
  const packets: Uint8Array[] = [];
  for (const f of ['hashkey/k1.jsonl', 'hashkey/k2.jsonl']) {
    for (const line of fs.readFileSync(path.join(REFERENCE, f), 'utf8').split('\n')) {
      const m = /"hex":\s*"([0-9a-fA-F]*)"/.exec(line);
      if (m !== null) packets.push(Uint8Array.from(Buffer.from(m[1], 'hex')));
    }
  }
  const pcaps: Uint8Array[] = [];
  const configs: { name: string; text: string }[] = [];
  const flowArgs: FlowSetArgs[] = [];
  const decisions = path.join(REFERENCE, 'decisions');
  for (const f of fs.readdirSync(decisions).sort()) {
    const full = path.join(decisions, f);
    if (f.endsWith('.pcap')) {
      const data = Uint8Array.from(fs.readFileSync(full));
      pcaps.push(data);
      for (const r of parsePcap(data).records) if (r.ip !== null) packets.push(Uint8Array.from(r.ip));
    } else if (f.endsWith('.cmds')) {
      const text = fs.readFileSync(full, 'utf8');
      // Tables of M=211: building a Maglev table of M=10000 costs tens of ms, and the size is not what is fuzzed.
      configs.push({ name: f, text: text.replace(/--M=\d+/g, '--M=211') });
      for (const line of text.split('\n')) {
        const a = flowArgsOf(line);
        if (a !== null) flowArgs.push(a);
      }
    }
  }
  for (const f of ['hashkey/k1.pcap', 'hashkey/k2.pcap']) pcaps.push(Uint8Array.from(fs.readFileSync(path.join(REFERENCE, f))));
  for (const line of fs.readFileSync(path.join(REFERENCE, 'cli', 'errors.txt'), 'utf8').split('\n')) {
    const a = flowArgsOf(line);
    if (a !== null) flowArgs.push(a);
  }
  corpus = { packets, pcaps, configs, flowArgs };
  return corpus;
}

// ---------------------------------------------------------------------------
// Mutators

const INTERESTING_BYTES = [0, 1, 2, 4, 5, 6, 8, 0x0f, 0x10, 0x11, 0x20, 0x2c, 0x3a, 0x3c, 0x40, 0x45, 0x46, 0x4f, 0x60, 0x7f, 0x80, 0x84, 0xfe, 0xff];
const INTERESTING_16 = [0, 1, 0x7f, 0x80, 0xff, 0x100, 0x1fff, 0x2000, 0x3fff, 0x4000, 0x7fff, 0x8000, 0xfffe, 0xffff, 9899, 80, 4000];
const INTERESTING_32 = [0, 1, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff, 65535, 65536, 262144, 262145, 0xa1b2c3d4, 0xd4c3b2a1, 0xa1b23c4d, 0x4d3cb2a1, 0x0a0d0d0a];

/** One to four byte-level mutations (flip, interesting values, insert, delete, cut, extend, splice). */
export function mutateBytes(rng: Rng, input: Uint8Array, others: readonly Uint8Array[]): Uint8Array {
  let b: Uint8Array = Uint8Array.from(input);
  const rounds = 1 + rng.int(4);
  for (let r = 0; r < rounds; r++) {
    const at = rng.int(b.length + 1);
    switch (rng.int(10)) {
      case 0:
        if (b.length > 0) b[at % b.length] ^= 1 << rng.int(8);
        break;
      case 1:
        if (b.length > 0) b[at % b.length] = rng.pick(INTERESTING_BYTES);
        break;
      case 2:
        if (b.length > 1) {
          const v = rng.pick(INTERESTING_16);
          const p = at % (b.length - 1);
          b[p] = v >> 8;
          b[p + 1] = v & 0xff;
        }
        break;
      case 3:
        if (b.length > 3) {
          const v = rng.pick(INTERESTING_32);
          const p = at % (b.length - 3);
          const le = rng.chance(0.5);
          for (let i = 0; i < 4; i++) b[p + i] = (v >>> (le ? 8 * i : 24 - 8 * i)) & 0xff;
        }
        break;
      case 4: {
        const n = 1 + rng.int(16);
        b = concat(b.subarray(0, at), rng.bytes(n), b.subarray(at));
        break;
      }
      case 5: {
        const n = 1 + rng.int(Math.max(1, b.length >> 2));
        b = concat(b.subarray(0, at), b.subarray(Math.min(b.length, at + n)));
        break;
      }
      case 6:
        b = b.slice(0, at);
        break;
      case 7:
        b = concat(b, rng.bytes(1 + rng.int(64)));
        break;
      case 8: {
        const o = rng.pick(others);
        const from = rng.int(o.length + 1);
        b = concat(b.subarray(0, at), o.subarray(from, from + rng.int(64)));
        break;
      }
      default:
        if (b.length > 0) b[at % b.length] = rng.u32() & 0xff;
    }
  }
  return b;
}

function concat(...parts: Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

const INTERESTING_TEXT = [
  '', ' ', ',', ',,', '/', '//', '-', ':', '::', '[', ']', '=', '&', '0x', '%', '\0', '\n', '\t', 'é', '\u{1F600}', '\\',
  '0', '1', '-1', '+1', '65535', '65536', '4294967295', '4294967296', '99999999999999999999', '0-0', '1-', '-5', '80-70',
  '/0', '/32', '/33', '/128', '/129', '/-1', '0.0.0.0', '255.255.255.255', '256.1.1.1', '1.2.3', '01.2.3.4', '::1', '::ffff:1.2.3.4',
  '2001:db8::', '2001:db8::/48', 'fe80::1%eth0', '1:2:3:4:5:6:7:8:9', 'tcp', 'udp', 'sctp', 'icmp', 'ping', 'TCP', 'tcp,udp',
  'tcp[12:2]', 'tcp[0:4]=0x12345678', 'udp[7:1]&0xff=1', 'sctp[8:4]=0', 'tcp[9999:2]=1', 'tcp[12:2]&0x01ff=0x0002', 'tcp[-1:2]=1',
];

/** Mutates text: interesting tokens inserted or replacing a span, characters dropped, cut, doubled. */
export function mutateText(rng: Rng, s: string): string {
  let t = s;
  const rounds = 1 + rng.int(3);
  for (let r = 0; r < rounds; r++) {
    const at = rng.int(t.length + 1);
    switch (rng.int(7)) {
      case 0:
        t = t.slice(0, at) + rng.pick(INTERESTING_TEXT) + t.slice(at);
        break;
      case 1:
        t = t.slice(0, at) + rng.pick(INTERESTING_TEXT) + t.slice(at + 1 + rng.int(6));
        break;
      case 2:
        t = t.slice(0, at) + t.slice(at + 1);
        break;
      case 3:
        t = t.slice(0, at);
        break;
      case 4:
        t = t + t;
        break;
      case 5:
        t = t.slice(0, at) + String.fromCharCode(rng.int(rng.chance(0.9) ? 128 : 0x3000)) + t.slice(at);
        break;
      default:
        t = rng.pick(INTERESTING_TEXT);
    }
  }
  return t;
}

// ---------------------------------------------------------------------------
// Checks

export class FuzzFailure extends Error {}

/** The input of the case being run, kept for the report when a check fails. */
let currentInput: Uint8Array | string = '';

function fail(why: string): never {
  throw new FuzzFailure(why);
}

function sameInfo(a: PacketInfo, b: PacketInfo, shift: number): string | null {
  for (let i = 0; i < a.key.length; i++) if (a.key[i] !== b.key[i]) return `key byte ${i}: ${a.key[i]} vs ${b.key[i]}`;
  if (a.rc !== b.rc) return `rc ${a.rc} vs ${b.rc}`;
  if (a.ipVersion !== b.ipVersion || a.proto !== b.proto || a.sport !== b.sport || a.dport !== b.dport || a.fragId !== b.fragId) {
    return `fields ${JSON.stringify([a.ipVersion, a.proto, a.sport, a.dport, a.fragId])} vs ${JSON.stringify([b.ipVersion, b.proto, b.sport, b.dport, b.fragId])}`;
  }
  const l4b = b.l4Offset < 0 ? b.l4Offset : b.l4Offset - shift;
  if (a.l4Offset !== l4b || a.l4Len !== b.l4Len) return `l4 ${a.l4Offset}/${a.l4Len} vs ${l4b}/${b.l4Len}`;
  if (a.icmpType !== b.icmpType || a.icmpCode !== b.icmpCode) return `icmp ${a.icmpType}/${a.icmpCode} vs ${b.icmpType}/${b.icmpCode}`;
  return null;
}

/** The packet inside `pre` garbage bytes before and `post` after (fill: a byte, or random). */
function embed(rng: Rng, pkt: Uint8Array, pre: number, post: number, fill: number): Uint8Array {
  const buf = fill >= 0 ? new Uint8Array(pre + pkt.length + post).fill(fill) : rng.bytes(pre + pkt.length + post);
  buf.set(pkt, pre);
  return buf;
}

interface PacketState {
  infoA: PacketInfo;
  infoB: PacketInfo;
  /** Two identical pipelines each: one sees exact packets, the other embedded ones. */
  flowPipes: [Pipeline<MaglevTable>, Pipeline<MaglevTable>];
  lbPipes: [Pipeline<MaglevTable>, Pipeline<MaglevTable>];
  now: number;
}

function packetState(c: Corpus): PacketState {
  const multi = c.configs.find((x) => x.name === 'multi.cmds') ?? c.configs[0];
  const mk = (): [Pipeline<MaglevTable>, Pipeline<MaglevTable>] => {
    const cfg = applyConfig(multi.text, multi.name, parser);
    return [
      new Pipeline(cfg.flows, { hashMode: 1, nolbFwmark: 8888, notargetsFwmark: 7777, fragmentCapacity: 64, fragmentHashSize: 32, fragmentTtlMs: 50 }),
      new Pipeline<MaglevTable>(null, {
        fixedTarget: cfg.targets.acquire('tshm-a') ?? undefined,
        sctpEncap: 9899,
        hashMode: 0,
        fragmentCapacity: 64,
        fragmentHashSize: 32,
        fragmentTtlMs: 50,
      }),
    ];
  };
  const a = mk();
  const b = mk();
  return { infoA: new PacketInfo(), infoB: new PacketInfo(), flowPipes: [a[0], b[0]], lbPipes: [a[1], b[1]], now: 0 };
}

function decideBoth(pipes: [Pipeline<MaglevTable>, Pipeline<MaglevTable>], exact: Uint8Array, buf: Uint8Array, pre: number, now: number): void {
  const [pa, pb] = pipes;
  const fa = pa.decide(exact, 0, exact.length, now);
  const fb = pb.decide(buf, pre, exact.length, now);
  const la = pa.last;
  const lb = pb.last;
  if (fa !== fb || la.reason !== lb.reason || la.hash !== lb.hash || la.flow?.name !== lb.flow?.name || la.target?.name !== lb.target?.name) {
    fail(`pipeline decided differently inside a larger buffer: ${fa}/${la.reason}/${la.hash}/${la.flow?.name} vs ${fb}/${lb.reason}/${lb.hash}/${lb.flow?.name}`);
  }
}

function packetCase(rng: Rng, c: Corpus, st: PacketState): Uint8Array {
  let pkt: Uint8Array;
  const kind = rng.int(20);
  if (kind === 0) pkt = rng.bytes(rng.int(80));
  else if (kind < 4) pkt = rng.pick(c.packets);
  else pkt = mutateBytes(rng, rng.pick(c.packets), c.packets);
  currentInput = pkt;
  const udpencap = rng.pick([0, 0, 9899, 4000, rng.int(65536)]);
  const { infoA, infoB } = st;
  const rcA = classify(pkt, 0, pkt.length, udpencap, infoA);
  if (rcA !== infoA.rc) fail(`classify returned ${rcA}, info.rc is ${infoA.rc}`);
  if (infoA.l4Offset >= 0 && infoA.l4Offset + infoA.l4Len > pkt.length) fail(`l4 range ${infoA.l4Offset}+${infoA.l4Len} beyond the packet (${pkt.length})`);
  for (const fill of [0x00, 0xff, -1]) {
    const pre = rng.int(24);
    const buf = embed(rng, pkt, pre, 1 + rng.int(64), fill);
    classify(buf, pre, pkt.length, udpencap, infoB);
    const diff = sameInfo(infoA, infoB, pre);
    if (diff !== null) fail(`classify differs inside a larger buffer (pre=${pre}, fill=${fill}): ${diff}`);
  }
  // The same input again on the same objects: identical.
  classify(pkt, 0, pkt.length, udpencap, infoB);
  const again = sameInfo(infoA, infoB, 0);
  if (again !== null) fail(`classify differs on a second run: ${again}`);
  // A range outside the buffer is invalid, not a read beyond it.
  if (classify(pkt, 1, pkt.length, udpencap, infoB) !== -1 || classify(pkt, -1, 1, udpencap, infoB) !== -1) fail('classify accepted a range outside the buffer');

  st.now += rng.int(20);
  const pre = rng.int(24);
  const buf = embed(rng, pkt, pre, 1 + rng.int(64), -1);
  decideBoth(st.flowPipes, pkt, buf, pre, st.now);
  decideBoth(st.lbPipes, pkt, buf, pre, st.now);
  return pkt;
}

const FLOW_KEYS = FLOW_FIELDS.map(flowOption);

interface FlowState {
  tables: Map<string, MaglevTable>;
  registry: TargetRegistry<MaglevTable>;
  info: PacketInfo;
  addr: Uint8Array;
  addr2: Uint8Array;
}

function flowState(): FlowState {
  const tables = new Map<string, MaglevTable>();
  for (const n of ['tshm-a', 'tshm-b']) {
    const t = MaglevTable.create(97, 4, 0, n);
    t.activate([1, 2]);
    tables.set(n, t);
  }
  return {
    tables,
    registry: new TargetRegistry<MaglevTable>({ open: (n) => tables.get(n) ?? null, close: () => undefined }),
    info: new PacketInfo(),
    addr: new Uint8Array(16),
    addr2: new Uint8Array(16),
  };
}

function flowCase(rng: Rng, c: Corpus, st: FlowState): string {
  const base: FlowSetArgs = { ...rng.pick(c.flowArgs) };
  const args: Record<string, string | undefined> = { ...base };
  const rounds = 1 + rng.int(3);
  for (let r = 0; r < rounds; r++) {
    const k = rng.pick(FLOW_KEYS);
    if (rng.chance(0.1)) args[k] = undefined;
    else if (rng.chance(0.05)) args[k] = 'x'.repeat(990 + rng.int(20));
    else args[k] = mutateText(rng, args[k] ?? (rng.pick(c.flowArgs)[k] ?? ''));
  }
  const fa = args as FlowSetArgs;
  const described = JSON.stringify(fa);
  currentInput = described;
  const client = checkFlowSetArgs(fa);
  if (client !== null && typeof client !== 'string') fail('checkFlowSetArgs returned a non-string');
  const cmd = flowCmdFromArgs(fa);
  const run = (): [string, string] => {
    const set = new FlowSet<Target<MaglevTable>>({ targetName: (t) => t.name });
    const reply = set.applySet(cmd, st.registry);
    return [reply, set.list()];
  };
  const [r1, l1] = run();
  const [r2, l2] = run();
  if (typeof r1 !== 'string' || r1 !== r2 || l1 !== l2) fail(`applySet not deterministic: ${r1} / ${r2}`);
  if (r1 === 'OK') {
    try {
      JSON.parse(l1);
    } catch {
      fail(`flow-list is not JSON: ${l1.slice(0, 200)}`);
    }
    // The flow must take packets without a throw.
    const set = new FlowSet<Target<MaglevTable>>({ targetName: (t) => t.name });
    set.applySet(cmd, st.registry);
    for (let i = 0; i < 4; i++) {
      const pkt = mutateBytes(rng, rng.pick(loadCorpus().packets), loadCorpus().packets);
      classify(pkt, 0, pkt.length, cmd.udpencap ?? 0, st.info);
      if (st.info.rc !== -1) set.lookup(st.info, pkt);
    }
  }
  // Addresses as the flow parser reads them: what parses prints back to the same bytes.
  const text = mutateText(rng, rng.pick(['2001:db8::1', '::ffff:192.0.2.1', '1:2:3:4:5:6:7:8', '::', 'fe80::', '2001:db8:0:0:1::1']));
  if (inetPton6(text, st.addr)) {
    const printed = inetNtop6(st.addr);
    if (!inetPton6(printed, st.addr2) || st.addr.some((v, i) => v !== st.addr2[i])) fail(`inet_ntop6 of ${JSON.stringify(text)} gives ${printed}, which does not parse back`);
  }
  return described;
}

const ACTIONS = ['set', 'delete', 'list', 'list-names', 'trace-set', 'trace-delete', 'trace-list', 'trace-list-names', 'loglevel', 'bogus', ''];

function requestBytes(rng: Rng, c: Corpus): string {
  if (rng.chance(0.05)) return Buffer.from(rng.bytes(rng.int(2000))).toString('latin1');
  const fa = rng.pick(c.flowArgs);
  const req: ControlRequest = {
    action: rng.pick(ACTIONS), name: fa.name, target: fa.target, priority: fa.prio, protocols: fa.protocols, dsts: fa.dsts,
    srcs: fa.srcs, dports: fa.dports, sports: fa.sports, match: fa.match, udpencap: fa.udpencap,
  };
  let text = encodeRequest(req);
  if (rng.chance(0.7)) text = mutateText(rng, text);
  if (rng.chance(0.3)) {
    const bytes = Buffer.from(text, 'latin1');
    text = Buffer.from(mutateBytes(rng, bytes, [bytes])).toString('latin1');
  }
  if (rng.chance(0.05)) text = `${'k'.repeat(rng.int(1100))}:${'v'.repeat(rng.int(17000))}\n` + text;
  return text;
}

function controlCase(rng: Rng, c: Corpus): string {
  const text = requestBytes(rng, c);
  currentInput = text;
  const whole = new RequestParser();
  whole.push(text);
  const chunked = new RequestParser();
  let at = 0;
  while (at < text.length && !chunked.done) {
    const n = 1 + rng.int(rng.chance(0.5) ? 8 : 600);
    chunked.push(text.slice(at, at + n));
    at += n;
  }
  // Refused either way is the same outcome; which limit is hit first may depend on the chunks.
  const same = whole.error !== null ? chunked.error !== null : chunked.error === null && JSON.stringify(whole.request) === JSON.stringify(chunked.request);
  if (whole.done !== chunked.done || !same) {
    fail(`the request parses differently in chunks: ${JSON.stringify([whole.done, whole.error, whole.request])} vs ${JSON.stringify([chunked.done, chunked.error, chunked.request])}`);
  }
  if (whole.error !== null && (whole.error.includes('\n') || whole.error.length > 200)) fail(`refusal is not one short line: ${JSON.stringify(whole.error.slice(0, 300))}`);
  for (const v of Object.values(whole.request)) if (typeof v !== 'string' || v.includes('\n')) fail('a request value spans lines');
  return text;
}

function configCase(rng: Rng, c: Corpus): string {
  const base = rng.pick(c.configs);
  let lines = base.text.split('\n');
  const rounds = 1 + rng.int(3);
  for (let r = 0; r < rounds; r++) {
    const i = rng.int(lines.length);
    switch (rng.int(5)) {
      case 0:
        lines.splice(i, 1);
        break;
      case 1:
        lines.splice(i, 0, lines[rng.int(lines.length)] ?? '');
        break;
      case 2: {
        // Mutate one word, keeping --M small: a big table is legal but slow, not a finding.
        const words = (lines[i] ?? '').split(' ');
        const w = rng.int(words.length);
        words[w] = mutateText(rng, words[w]);
        if (/^--M=/.test(words[w])) words[w] = `--M=${rng.int(2000)}`;
        lines[i] = words.join(' ');
        break;
      }
      case 3:
        lines[i] = mutateText(rng, lines[i] ?? '');
        if (/--M=\d{5,}/.test(lines[i])) lines[i] = lines[i].replace(/--M=\d+/, '--M=997');
        break;
      default:
        lines = lines.slice(0, i);
    }
  }
  const text = lines.join('\n');
  currentInput = text;
  const file = 'fuzz.cmds';
  const run = (): string => {
    try {
      const cfg = applyConfig(text, file, parser);
      return `ok flows=${cfg.flows.size} daemon=${cfg.daemon?.command ?? '-'} ${cfg.flows.list()}`;
    } catch (err) {
      if (!(err instanceof NfqlbError)) fail(`config reader threw ${(err as Error)?.constructor?.name}: ${(err as Error)?.message}`);
      if (err.code !== 'NFQLB_ERR_CONFIG') fail(`config error with code ${err.code}: ${err.message}`);
      if (!new RegExp(`^${file.replace('.', '\\.')}:\\d+: `).test(err.message) || err.message.includes('\n')) fail(`config error is not one FILE:LINE: line: ${JSON.stringify(err.message)}`);
      return `error ${err.message}`;
    }
  };
  const a = run();
  const b = run();
  if (a !== b) fail(`config reader not deterministic: ${a.slice(0, 100)} / ${b.slice(0, 100)}`);
  return text;
}

function pcapCase(rng: Rng, c: Corpus): Uint8Array {
  const base = rng.pick(c.pcaps);
  let data: Uint8Array;
  if (rng.chance(0.7)) {
    // Keep the mutations near the start: record headers and link headers are where the parser works.
    const head = base.subarray(0, Math.min(base.length, 24 + rng.int(400)));
    data = mutateBytes(rng, head, c.pcaps);
  } else {
    data = mutateBytes(rng, base, c.pcaps);
  }
  currentInput = data;
  const parse = (bytes: Uint8Array): string => {
    try {
      const p = parsePcap(bytes, 'fuzz.pcap');
      let sum = `lt=${p.linkType} n=${p.records.length} err=${p.error?.message ?? '-'}`;
      for (const r of p.records) {
        if (r.ip !== null) {
          if (r.ip.buffer !== bytes.buffer || r.ip.byteOffset < bytes.byteOffset || r.ip.byteOffset + r.ip.length > bytes.byteOffset + bytes.length) {
            fail(`record ${r.index} is a view outside the input`);
          }
          sum += ` ${r.index}:${r.ip.length}:${Buffer.from(r.ip.subarray(0, 8)).toString('hex')}`;
        }
        if (!Number.isFinite(r.timeMs)) fail(`record ${r.index} has time ${r.timeMs}`);
      }
      if (p.error !== null && (!(p.error instanceof NfqlbError) || p.error.code !== 'NFQLB_ERR_PCAP')) fail('pcap error of the wrong kind');
      return sum;
    } catch (err) {
      if (err instanceof FuzzFailure) throw err;
      if (!(err instanceof NfqlbError) || err.code !== 'NFQLB_ERR_PCAP') fail(`pcap reader threw ${(err as Error)?.constructor?.name}: ${(err as Error)?.message}`);
      if (err.message.includes('\n')) fail('pcap error spans lines');
      return `error ${err.message}`;
    }
  };
  const a = parse(data);
  const pre = 1 + rng.int(16);
  const post = 1 + rng.int(64);
  const outer = new Uint8Array(pre + data.length + post);
  outer.set(rng.bytes(pre), 0);
  outer.set(data, pre);
  outer.set(rng.bytes(post), pre + data.length);
  const b = parse(outer.subarray(pre, pre + data.length));
  if (a !== b) fail(`pcap parses differently inside a larger buffer: ${a.slice(0, 160)} / ${b.slice(0, 160)}`);
  return data;
}

// ---------------------------------------------------------------------------
// Driver

export const TARGETS = ['packet', 'flow-args', 'control', 'config', 'pcap'] as const;
export type TargetName = (typeof TARGETS)[number];
/**
 * Share of cases per target, per thousand. A config case costs ~50 ms (a yargs
 * parse per line, ~3 ms each), a packet case ~0.07 ms: configs get 0.3%.
 */
const WEIGHTS: Record<TargetName, number> = { packet: 600, 'flow-args': 150, control: 150, config: 3, pcap: 97 };

export interface Finding {
  target: TargetName;
  /** Case number: with the seed it reproduces the input. */
  case: number;
  problem: string;
  /** The input, hex for bytes, JSON for text (cut at 4 KB). */
  input: string;
}

export interface FuzzReport {
  seed: number;
  cases: number;
  perTarget: Record<TargetName, number>;
  findings: Finding[];
  ms: number;
}

export interface FuzzOptions {
  cases: number;
  seed: number;
  /** Only these targets (default all). */
  targets?: readonly TargetName[];
  /** Called every `progressEvery` cases. */
  progress?: (done: number, report: FuzzReport) => void;
  progressEvery?: number;
  /** Stop collecting after this many findings (default 50). */
  maxFindings?: number;
}

function pickTarget(rng: Rng, targets: readonly TargetName[]): TargetName {
  let total = 0;
  for (const t of targets) total += WEIGHTS[t];
  let x = rng.int(total);
  for (const t of targets) {
    if (x < WEIGHTS[t]) return t;
    x -= WEIGHTS[t];
  }
  return targets[0];
}

/** Runs `cases` cases from `seed`; findings are returned, never thrown. */
export function runFuzz(opts: FuzzOptions): FuzzReport {
  const c = loadCorpus();
  const targets = opts.targets ?? TARGETS;
  const report: FuzzReport = { seed: opts.seed, cases: 0, perTarget: { packet: 0, 'flow-args': 0, control: 0, config: 0, pcap: 0 }, findings: [], ms: 0 };
  const pst = packetState(c);
  const fst = flowState();
  const maxFindings = opts.maxFindings ?? 50;
  const seen = new Set<string>();
  const start = Date.now();
  for (let n = 0; n < opts.cases; n++) {
    // Each case has its own generator, so case n reproduces alone.
    const rng = new Rng(Math.imul(opts.seed ^ 0x5bd1e995, 0x9e3779b1) ^ n);
    const target = pickTarget(rng, targets);
    report.perTarget[target]++;
    currentInput = '';
    try {
      switch (target) {
        case 'packet':
          packetCase(rng, c, pst);
          break;
        case 'flow-args':
          flowCase(rng, c, fst);
          break;
        case 'control':
          controlCase(rng, c);
          break;
        case 'config':
          configCase(rng, c);
          break;
        case 'pcap':
          pcapCase(rng, c);
          break;
      }
    } catch (err) {
      const problem = err instanceof FuzzFailure ? err.message : `uncaught ${(err as Error)?.constructor?.name}: ${(err as Error)?.message}\n${(err as Error)?.stack?.split('\n').slice(1, 4).join('\n')}`;
      const kind = `${target}: ${problem.replace(/\d+/g, 'N').slice(0, 80)}`;
      if (!seen.has(kind) && report.findings.length < maxFindings) {
        seen.add(kind);
        report.findings.push({ target, case: n, problem, input: describeInput(currentInput) });
      }
    }
    report.cases = n + 1;
    if (opts.progress !== undefined && (n + 1) % (opts.progressEvery ?? 100000) === 0) {
      report.ms = Date.now() - start;
      opts.progress(n + 1, report);
    }
  }
  report.ms = Date.now() - start;
  return report;
}

function describeInput(input: Uint8Array | string): string {
  return typeof input === 'string' ? JSON.stringify(input.slice(0, 4096)) : Buffer.from(input.subarray(0, 4096)).toString('hex');
}
