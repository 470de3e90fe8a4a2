/**
 * LB-tier decisions (--lbshm), ours against the original nfqlb 1.2.0, packet
 * by packet: each daemon in turn in a namespace, the same tables made by its
 * own CLI, the same fragments and non-fragments sent one at a time, and the
 * fwmark of every accepted packet read back through NFLOG (a FORWARD rule
 * logs each packet with its mark; a dropped packet never gets there).
 *
 * Phases, each with fresh fragment ids (sources owned by either LB):
 *   1. tier [101 102], own 101: fragments owned by 102 leave with mark 102;
 *   2. `init` again with --ownfw=102 (same shape, so in place): a tier with
 *      no active LB, every fragment handled here;
 *   3. activate 101 102 again: now 101's fragments are forwarded;
 *   4. deactivate 102 (own 102): every fragment goes to 101;
 *   5. as 1, and a target deactivated between the first fragments and the
 *      later ones: later fragments keep their first fragment's target.
 * Non-fragments never look at the tier. Then, ours only (nfqlb maps its
 * tables once and would read a re-shaped or truncated file wrongly):
 *   6. the tier re-created with another shape: followed once reopened;
 *   7. the tier file truncated: decisions go on from the last good copy.
 *
 * Compared byte for byte: every decision, except IPv6 fragments that the
 * LB handles itself: nfqlb 1.2.0 reads an IPv6 first fragment's ports from
 * the fragment header, a known divergence; there ours must give
 * the 5-tuple's target. Both flowlb and lb.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { hashKey, hashKeyAddresses } from '../../src/packet/hashkey';
import { closeTable, openTable } from '../../src/tables/tablefile';
import {
  addAddress,
  addRoute,
  addVethPair,
  cleanupAll,
  createNetns,
  DaemonProcess,
  installQueueRule,
  killProcess,
  macOf,
  nsExec,
  spawnInNs,
  sysctl,
  uniqueShmName,
} from '../../testbed/testbed';
import { fragments, FrameSender, udpKey } from '../helpers/fragsend-lbtier';
import { describeUnless, netnsUnavailable, originalUnavailable } from '../helpers/skip';
import { until } from '../helpers/wait';
import { cli, ORIGINAL, Partner, type Impl } from './partners';

jest.setTimeout(240000);

const VIP4 = '192.0.2.1';
const VIP6 = '2001:db8::1';
const PORT = 5001;
const NOFLOW_PORT = 6000;
const OWN = 101;
const OTHER = 102;
const NOLB = 8888;
const NOTARGETS = 7777;
const NFLOG_GROUP = 5;
const SOURCES = 8;

type Mode = 'flowlb' | 'lb';

interface Pkt {
  /** The same packet role in every phase: family, kind, source, fragment number. */
  label: string;
  family: 4 | 6;
  src: string;
  sport: number;
  dport: number;
  /** -1: not a fragment; 0: first; n: later. */
  frag: number;
  bytes: Uint8Array;
}

/** One key per packet, the same from the bytes sent and the bytes logged after forwarding (TTL changed). */
function packetKey(p: Uint8Array): string {
  if (p[0] >> 4 === 4) {
    return `4:${Buffer.from(p.subarray(12, 16)).toString('hex')}:${Buffer.from(p.subarray(4, 8)).toString('hex')}`;
  }
  const src = Buffer.from(p.subarray(8, 24)).toString('hex');
  if (p[6] === 44) return `6:${src}:${Buffer.from(p.subarray(42, 48)).toString('hex')}`;
  return `6:${src}:sport${(p[40] << 8) | p[41]}`;
}

function udp6(src: string, dst: string, sport: number, dport: number): Uint8Array {
  // A one-fragment "datagram" minus the fragment header: reuse fragments() for the checksum, then strip it.
  const [f] = fragments({ src, dst, sport, dport, payload: new Uint8Array(16), id: 0, chunk: 1024 });
  const out = new Uint8Array(f.length - 8);
  out.set(f.subarray(0, 40));
  out[4] = 0;
  out[5] = f.length - 48;
  out[6] = 17;
  out.set(f.subarray(48), 40);
  return out;
}

/** The packets of one phase: per family and source a 3-fragment datagram to the flow port and one non-fragment; and some odd ones. */
function phasePackets(phase: number): Pkt[] {
  const pkts: Pkt[] = [];
  for (const family of [4, 6] as const) {
    const vip = family === 4 ? VIP4 : VIP6;
    const source = (i: number): string => (family === 4 ? `198.51.100.${20 + i}` : `2001:db8:1::${(0x20 + i).toString(16)}`);
    const datagram = (kind: string, i: number, dport: number, id: number, frags: number[] = [0, 1, 2]): void => {
      const src = source(i);
      const sport = 41000 + i;
      const all = fragments({ src, dst: vip, sport, dport, payload: new Uint8Array(140), id, chunk: 64 });
      for (const j of frags) pkts.push({ label: `${family}:${kind}:${i}:${j}`, family, src, sport, dport, frag: j, bytes: all[j] });
    };
    const idBase = (family === 4 ? 0x100 : 0x10000) * phase;
    for (let i = 0; i < SOURCES; i++) datagram('dgram', i, PORT, idBase + i);
    for (let i = 0; i < SOURCES; i++) {
      const src = source(i);
      const sport = 42000 + phase * 16 + i;
      const bytes = family === 4 ? fragments({ src, dst: vip, sport, dport: PORT, payload: new Uint8Array(16), id: idBase + 0x40 + i, chunk: 1024 })[0] : udp6(src, vip, sport, PORT);
      pkts.push({ label: `${family}:plain:${i}`, family, src, sport, dport: PORT, frag: -1, bytes });
    }
    // Later fragments whose first never came; a datagram no flow matches.
    datagram('orphan', 0, PORT, idBase + 0x50, [1, 2]);
    datagram('orphan', 1, PORT, idBase + 0x51, [2]);
    datagram('noflow', 2, NOFLOW_PORT, idBase + 0x52);
    datagram('noflow', 3, NOFLOW_PORT, idBase + 0x53);
  }
  return pkts;
}

/** NFLOG capture (pcap, LINKTYPE_NFLOG) → packet key → fwmark (0 when the record has none). */
function readNflog(file: string): Map<string, number> {
  const out = new Map<string, number>();
  let buf: Buffer;
  try {
    buf = fs.readFileSync(file);
  } catch {
    return out;
  }
  let off = 24;
  while (off + 16 <= buf.length) {
    const incl = buf.readUInt32LE(off + 8);
    const rec = buf.subarray(off + 16, off + 16 + incl);
    off += 16 + incl;
    if (rec.length < incl) break;
    let mark = 0;
    let payload: Buffer | null = null;
    // 4-byte NFLOG header, then TLVs: u16 length (with the header), u16 type, host order; padded to 4.
    for (let t = 4; t + 4 <= rec.length; ) {
      const len = rec.readUInt16LE(t);
      const type = rec.readUInt16LE(t + 2) & 0x7fff;
      if (len < 4) break;
      if (type === 2) mark = rec.readUInt32BE(t + 4); // NFULA_MARK
      if (type === 9) payload = rec.subarray(t + 4, t + len); // NFULA_PAYLOAD
      t += (len + 3) & ~3;
    }
    if (payload !== null) out.set(packetKey(payload), mark);
  }
  return out;
}

/** The LB the tier table `t` gives `src` → VIP4 to. */
function ownerOf(t: Snapshot, src: string): number {
  return t.fwmarkOf(hashKeyAddresses(udpKey(src, VIP4, 0, 0)));
}

/** A source address (198.51.100.100-249, apart from the phases' sources) that `ok` accepts. */
function probeSource(ok: (src: string) => boolean): string {
  for (let i = 100; i < 250; i++) if (ok(`198.51.100.${i}`)) return `198.51.100.${i}`;
  throw new Error('no probe source: widen the range');
}

/** A label → 'drop' or the fwmark, per phase. */
type Decisions = Array<Record<string, number | 'drop'>>;

/** A copy of a table as it was: its own fwmark and hash → fwmark. */
interface Snapshot {
  own: number;
  fwmarkOf: (hash: number) => number;
}

function snapshot(shm: string): Snapshot {
  const t = openTable(shm);
  try {
    const M = t.M;
    const lookupCopy = Int32Array.from(t.lookup);
    const activeCopy = Int32Array.from(t.active);
    return {
      own: t.ownFwmark,
      fwmarkOf: (h) => {
        const slot = lookupCopy[(h >>> 0) % M];
        return slot >= 0 ? activeCopy[slot] : -1;
      },
    };
  } finally {
    closeTable(t);
  }
}

interface Run {
  decisions: Decisions;
  packets: Pkt[][];
  /** The tier and target tables as each phase began. */
  tiers: Snapshot[];
  targets: Snapshot[];
}

async function runDaemon(impl: Impl, mode: Mode, withOursOnlyPhases: boolean): Promise<Run> {
  const cliNs = createNetns('lbd-cli');
  const lbNs = createNetns('lbd-lb');
  const sinkNs = createNetns('lbd-sink');
  sysctl(lbNs, 'net.ipv4.ip_forward=1', 'net.ipv6.conf.all.forwarding=1', 'net.ipv4.conf.all.rp_filter=0', 'net.ipv4.conf.default.rp_filter=0');
  addVethPair(cliNs, 'c0', lbNs, 'cli');
  addVethPair(lbNs, 'sink', sinkNs, 'lb');
  addAddress(lbNs, 'sink', '203.0.113.1/30');
  addAddress(sinkNs, 'lb', '203.0.113.2/30');
  addAddress(lbNs, 'sink', '2001:db8:ff:1::1/64');
  addAddress(sinkNs, 'lb', '2001:db8:ff:1::2/64');
  // Every accepted packet, whatever its mark, is forwarded to the sink and logged on the way.
  addRoute(lbNs, VIP4, '203.0.113.2');
  addRoute(lbNs, VIP6, '2001:db8:ff:1::2');
  installQueueRule(lbNs, VIP4, 0);
  installQueueRule(lbNs, VIP6, 0);
  for (const [tool, vip] of [['iptables', VIP4], ['ip6tables', VIP6]]) {
    nsExec(lbNs, tool, ['-t', 'mangle', '-A', 'FORWARD', '-d', vip, '-j', 'NFLOG', '--nflog-group', `${NFLOG_GROUP}`]);
  }

  const own = (args: string[]): void => {
    const r = cli(impl, args);
    if (r.rc !== 0) throw new Error(`${impl} nfqlb ${args.join(' ')}: ${r.stderr}`);
  };
  const tierShm = uniqueShmName(`lbd-tier-${impl}-${mode}`);
  const targetShm = uniqueShmName(`lbd-targets-${impl}-${mode}`);
  own(['init', `--shm=${targetShm}`, '--M=997', '--N=8']);
  own(['activate', `--shm=${targetShm}`, '1', '2', '3']);
  own(['init', `--shm=${tierShm}`, `--ownfw=${OWN}`, '--M=31', '--N=4']);
  own(['activate', `--shm=${tierShm}`, `${OWN}`, `${OTHER}`]);

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nfqlbts-lbd-'));
  const capture = path.join(dir, 'nflog.pcap');
  const dump = spawnInNs(lbNs, 'tcpdump', ['-i', `nflog:${NFLOG_GROUP}`, '-U', '-s', '0', '-w', capture]);
  let dumpErr = '';
  dump.stderr?.on('data', (d: Buffer) => (dumpErr += d.toString()));
  await until(() => /listening on/.test(dumpErr), 'tcpdump on nflog');

  const common = ['--queue=0', `--lbshm=${tierShm}`, `--ft_shm=${uniqueShmName(`lbd-ft-${impl}-${mode}`)}`, `--notargets_fwmark=${NOTARGETS}`, '--ft_ttl=60000'];
  let daemonErr: () => string;
  let child: ChildProcess;
  if (mode === 'flowlb') {
    const args = [...common, `--nolb_fwmark=${NOLB}`];
    if (impl === 'ours') {
      const d = await DaemonProcess.start(lbNs, ['flowlb', '--metrics_address=off', ...args]);
      daemonErr = () => d.stderr;
      child = d.child;
    } else {
      const p = await Partner.start('original', lbNs, args, { privateShm: false });
      daemonErr = () => p.stderr;
      child = p.child;
    }
    const set = cli(impl, ['flow-set', '--name=udp', `--target=${targetShm}`, '--protocols=udp', `--dsts=${VIP4}/32,${VIP6}/128`, `--dports=${PORT}`], { ns: lbNs });
    expect(set.stdout.replace(/\0/g, '').trim()).toBe('OK');
  } else {
    const args = ['lb', `--tshm=${targetShm}`, ...common];
    if (impl === 'ours') {
      const d = await DaemonProcess.start(lbNs, [...args, '--metrics_address=off']);
      daemonErr = () => d.stderr;
      child = d.child;
    } else {
      const p = spawnInNs(lbNs, ORIGINAL, args, { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      p.stdout?.on('data', (d: Buffer) => (out += d.toString()));
      p.stderr?.on('data', (d: Buffer) => (err += d.toString()));
      await until(() => /queue_length=/.test(out) || p.exitCode !== null, 'nfqlb lb to bind its queue');
      if (p.exitCode !== null) throw new Error(`nfqlb lb exited: ${out}${err}`);
      daemonErr = () => err;
      child = p;
    }
  }

  const sender = new FrameSender(cliNs);
  const srcMac = macOf(cliNs, 'c0');
  const dstMac = macOf(lbNs, 'cli');
  let sentinelPort = 30000;
  /** Sends the packets one by one, then a marked-through sentinel, and waits for the sentinel in the log. */
  const sendPhase = async (pkts: Pkt[]): Promise<Record<string, number | 'drop'>> => {
    for (const p of pkts) await sender.send('c0', srcMac, dstMac, p.bytes);
    const sentinel = fragments({ src: '198.51.100.250', dst: VIP4, sport: ++sentinelPort, dport: PORT, payload: new Uint8Array(8), id: sentinelPort, chunk: 1024 })[0];
    await sender.send('c0', srcMac, dstMac, sentinel);
    await until(() => readNflog(capture).has(packetKey(sentinel)), 'the sentinel in the NFLOG capture');
    const marks = readNflog(capture);
    const result: Record<string, number | 'drop'> = {};
    for (const p of pkts) result[p.label] = marks.get(packetKey(p.bytes)) ?? 'drop';
    return result;
  };

  let probeId = 0x6000;
  /** Sends later fragments from `src` (a new datagram each time, so never one this LB knows) until one leaves with mark `want`. */
  const probeUntil = async (src: string, want: number, what: string): Promise<void> => {
    const giveUp = Date.now() + 20000;
    for (;;) {
      const bytes = fragments({ src, dst: VIP4, sport: 1, dport: PORT, payload: new Uint8Array(140), id: ++probeId, chunk: 64 })[1];
      const got = await sendPhase([{ label: 'probe', family: 4, src, sport: 1, dport: PORT, frag: 1, bytes }]);
      if (got.probe === want) return;
      if (Date.now() > giveUp) throw new Error(`gave up waiting for ${what} (the probe got ${got.probe})`);
    }
  };
  const decisions: Decisions = [];
  const packets: Pkt[][] = [];
  const tiers: Snapshot[] = [];
  const targets: Snapshot[] = [];
  /** Sends phase n's packets; with `between`, first the non-later ones, then `between()`, then the later fragments. */
  const phase = async (n: number, tier: Snapshot = snapshot(tierShm), between?: () => void): Promise<void> => {
    const pkts = phasePackets(n);
    packets.push(pkts);
    tiers.push(tier);
    targets.push(snapshot(targetShm));
    if (between === undefined) {
      decisions.push(await sendPhase(pkts));
      return;
    }
    const early = await sendPhase(pkts.filter((p) => p.frag <= 0));
    between();
    decisions.push({ ...early, ...(await sendPhase(pkts.filter((p) => p.frag > 0))) });
  };
  try {
    await phase(1);
    own(['init', `--shm=${tierShm}`, `--ownfw=${OTHER}`, '--M=31', '--N=4']);
    await phase(2);
    own(['activate', `--shm=${tierShm}`, `${OWN}`, `${OTHER}`]);
    await phase(3);
    own(['deactivate', `--shm=${tierShm}`, `${OTHER}`]);
    await phase(4);
    // A target goes away between the first and the later fragments: the later ones follow the first.
    own(['init', `--shm=${tierShm}`, `--ownfw=${OWN}`, '--M=31', '--N=4']);
    own(['activate', `--shm=${tierShm}`, `${OWN}`, `${OTHER}`]);
    await phase(5, undefined, () => own(['deactivate', `--shm=${targetShm}`, '1']));
    if (withOursOnlyPhases) {
      // Another shape: a new file (ours unlinks and re-creates), picked up at the next table check.
      const before = (daemonErr().match(/table re-created; reopened/g) ?? []).length;
      const old = tiers[tiers.length - 1];
      own(['init', `--shm=${tierShm}`, `--ownfw=${OWN}`, '--M=61', '--N=5']);
      own(['activate', `--shm=${tierShm}`, `${OTHER}`, `${OWN}`]);
      const reshaped = snapshot(tierShm);
      await until(() => (daemonErr().match(/table re-created; reopened/g) ?? []).length > before, 'the daemon to reopen the re-shaped tier table');
      // Every packet path has it (with packet threads, each checks its own copy): a fragment only the new table sends away.
      await probeUntil(probeSource((src) => ownerOf(old, src) === OWN && ownerOf(reshaped, src) === OTHER), OTHER, 'the re-shaped tier table in use');
      await phase(6, reshaped);
      // Truncated: served from the copy taken at the last check.
      fs.truncateSync(`/dev/shm/${tierShm}`, 64);
      await until(() => /"fault":"truncated"/.test(daemonErr()), 'the daemon to notice the truncated tier table');
      await probeUntil(probeSource((src) => ownerOf(reshaped, src) === OTHER), OTHER, 'the copy of the truncated tier table in use');
      await phase(7, reshaped);
    }
  } finally {
    sender.close();
    await killProcess(child);
    await killProcess(dump);
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return { decisions, packets, tiers, targets };
}

/** What a correct LB tier decides for `p`, given the tier and target tables of its phase (`firstChoice`: what first fragments got). */
function expected(mode: Mode, p: Pkt, tier: Snapshot, targets: Snapshot, firstChoice: Map<string, number | 'drop'>): number | 'drop' {
  const vip = p.family === 4 ? VIP4 : VIP6;
  const key = udpKey(p.src, vip, p.sport, p.dport);
  const dgram = p.label.replace(/:\d+$/, '');
  if (p.frag >= 0) {
    const fw = tier.fwmarkOf(hashKeyAddresses(key));
    if (fw >= 0 && fw !== tier.own) return fw;
    if (p.frag > 0) return firstChoice.get(dgram) ?? 'drop';
  }
  if (mode === 'flowlb' && p.dport !== PORT) return NOLB; // no flow: nothing remembered
  const t = targets.fwmarkOf(hashKey(key, 1));
  if (t < 0) return NOTARGETS;
  if (p.frag === 0) firstChoice.set(dgram, t);
  return t;
}

describeUnless(netnsUnavailable() ?? originalUnavailable())('LB tier decisions: ours and nfqlb 1.2.0 packet by packet', () => {
  afterAll(async () => {
    await cleanupAll();
  });

  for (const mode of ['flowlb', 'lb'] as const) {
    it(`${mode} --lbshm: the same fwmark for every packet; ours as the model says in every phase`, async () => {
      const original = await runDaemon('original', mode, false);
      const ours = await runDaemon('ours', mode, true);
      const diffs: string[] = [];
      const forwardingPhases = new Set<number>();
      for (let ph = 0; ph < original.decisions.length; ph++) {
        for (const p of original.packets[ph]) {
          const o = original.decisions[ph][p.label];
          const t = ours.decisions[ph][p.label];
          if (o === OTHER || o === OWN) forwardingPhases.add(ph + 1);
          // See the file comment: IPv6 fragments handled here differ by design.
          const localV6Fragment = p.family === 6 && p.frag >= 0 && o !== OWN && o !== OTHER;
          if (!localV6Fragment && o !== t) diffs.push(`phase ${ph + 1} ${p.label}: nfqlb ${o}, ours ${t}`);
        }
      }
      expect(diffs).toEqual([]);
      expect([...forwardingPhases].sort()).toEqual([1, 3, 4, 5]);

      // Ours, every phase (5 and 6 included) and every packet, against the model.
      const wrong: string[] = [];
      for (let ph = 0; ph < ours.decisions.length; ph++) {
        const firstChoice = new Map<string, number | 'drop'>();
        for (const p of ours.packets[ph]) {
          const want = expected(mode, p, ours.tiers[ph], ours.targets[ph], firstChoice);
          if (ours.decisions[ph][p.label] !== want) wrong.push(`phase ${ph + 1} ${p.label}: want ${want}, ours ${ours.decisions[ph][p.label]}`);
        }
      }
      expect(wrong).toEqual([]);
      expect(ours.decisions.length).toBe(7);
    });
  }
});
