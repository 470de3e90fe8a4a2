/**
 * Fragments through a live daemon in network namespaces, with kernel
 * reassembly kept out of the LB namespace: nothing there uses conntrack (the
 * queue rule is a plain mangle NFQUEUE rule; no NAT, no state match, no
 * NOTRACK rule, whose CT target would itself enable nf_defrag), so every
 * fragment reaches the queue on its own. The daemon's counters prove it: one
 * fragment_hit per later fragment.
 *
 *  - in order: UDP datagrams of 3-10 fragments, IPv4 and IPv6, arrive whole,
 *    once, at the target `nfqlb fwmark` names for their 5-tuple; with
 *    --reassembler every entry is freed at the last fragment;
 *  - a flood of never-completed datagrams (first fragments with distinct ids,
 *    later fragments without a first): the table stays within
 *    --ft_size + --ft_buckets, its entries time out after --ft_ttl (the
 *    active count falls back to 0), TCP keeps working meanwhile, and
 *    `nfqlb stats` of ours and of the original print the same;
 *  - the original daemon's ftshm, printed by both `nfqlb stats`.
 *
 * Needs root; the original nfqlb parts skip with one line without it.
 */
import * as fs from 'fs';
import { readFragStats, type FragStats } from '../../src/fragments/stats';
import {
  cleanupAll, metricSum, nsExec, ports, registerShm, scrapeMetrics, Testbed, uniqueShmName, type TargetInfo,
} from '../../testbed/testbed';
import { fragmentsOf, nfqlbStats, payloadLength, sendPackets, startUdpSink, type Datagram, type UdpSink } from '../helpers/fragsend';
import { Partner } from '../interop/partners';
import { waitFor } from '../helpers/wait';
import { describeUnless, netnsUnavailable, originalUnavailable } from '../helpers/skip';

const describeNs = describeUnless(netnsUnavailable());
jest.setTimeout(180000);

const METRICS_PORT = 19663;
const UDP_PORT = 5001;
const FT_SIZE = 64;
const FT_BUCKETS = 32;
const FT_TTL = 400;

/** Fragment tables of the daemon: one per packet thread (named nfqlb-pkt<i>), or the main thread's one. */
function fragmentTables(pid: number): number {
  const tasks = fs.readdirSync(`/proc/${pid}/task`);
  const packetThreads = tasks.filter((t) => {
    try {
      return fs.readFileSync(`/proc/${pid}/task/${t}/comm`, 'utf8').startsWith('nfqlb-pkt');
    } catch {
      return false; // the thread ended meanwhile
    }
  }).length;
  return Math.max(1, packetThreads);
}

const log = (msg: string): void => {
  // eslint-disable-next-line no-console
  console.log(msg);
};

/** GET /metrics from inside the LB namespace. */
function metrics(ns: string): string {
  const text = scrapeMetrics(ns, METRICS_PORT);
  if (text === null) throw new Error('no metrics from the daemon');
  return text;
}

describeNs('fragments through a live daemon, no reassembly in the LB namespace', () => {
  let tb: Testbed;
  let daemonPid: number;
  let shm: string;
  let ftShm: string;
  let sinks: UdpSink[] = [];
  let nextId = 1;
  let nextTag = 1;

  const vip = (f: 4 | 6): string => (f === 4 ? tb.vip4 : tb.vip6);
  const client = (f: 4 | 6): string => (f === 4 ? tb.client4 : tb.client6);
  const received = (tag: number): Array<{ target: string; length: number; ok: boolean }> =>
    sinks.flatMap((s) => s.received.filter((r) => r.tag === tag).map((r) => ({ target: s.name, length: r.length, ok: r.ok })));
  /** A UDP datagram of `parts` fragments from the client to the VIP, with a new tag and fragment id. */
  const datagram = (f: 4 | 6, sport: number, parts: number, fragBytes = 1200): Datagram => ({
    family: f, src: client(f), dst: vip(f), sport, dport: UDP_PORT, tag: nextTag++, fragId: nextId++, parts, fragBytes,
  });

  /** The target the daemon must choose for a UDP 5-tuple (hash_mode 0), by `nfqlb fwmark`. */
  function expectedTarget(f: 4 | 6, sport: number): TargetInfo {
    const src = f === 4 ? `${client(f)}:${sport}` : `[${client(f)}]:${sport}`;
    const dst = f === 4 ? `${vip(f)}:${UDP_PORT}` : `[${vip(f)}]:${UDP_PORT}`;
    const r = tb.nfqlbOk(['fwmark', `--shm=${shm}`, '--proto=udp', `--src=${src}`, `--dst=${dst}`, '--hash_mode=0']);
    const t = tb.byFwmark((JSON.parse(r.stdout) as { fwmark: number }).fwmark);
    if (t === undefined) throw new Error(`no target for ${r.stdout}`);
    return t;
  }

  /** Whole datagrams of 3..10 fragments, one per count, sent in order; returns what was sent. */
  function sendWhole(f: 4 | 6, sportBase: number): Datagram[] {
    const sent: Datagram[] = [];
    for (let n = 3; n <= 10; n++) sent.push(datagram(f, sportBase + n, n));
    const packets = sent.flatMap(fragmentsOf);
    expect(sendPackets(tb.gw, packets)).toBe(sent.reduce((a, d) => a + d.parts, 0));
    return sent;
  }

  async function expectArrivedWhole(f: 4 | 6, sent: Datagram[]): Promise<void> {
    await waitFor(`the IPv${f} datagrams at the sinks`, () => sent.filter((d) => received(d.tag).length > 0).length, (n) => n === sent.length);
    for (const d of sent) {
      const expected = expectedTarget(f, d.sport);
      expect({ tag: d.tag, got: received(d.tag) }).toEqual({ tag: d.tag, got: [{ target: expected.name, length: payloadLength(d), ok: true }] });
    }
  }

  beforeAll(async () => {
    tb = Testbed.build();
    await tb.startServers();
    shm = uniqueShmName('frag');
    ftShm = uniqueShmName('ftshm');
    tb.initTable(shm);
    daemonPid = (await tb.startDaemon([
      'flowlb', '--queue=0:3', '--hash_mode=0', `--ft_shm=${ftShm}`, `--ft_size=${FT_SIZE}`, `--ft_buckets=${FT_BUCKETS}`,
      `--ft_ttl=${FT_TTL}`, '--reassembler=64', `--metrics_address=127.0.0.1:${METRICS_PORT}`,
    ])).pid;
    tb.setFlow('frag-tcp', shm);
    tb.nfqlbOk(['flow-set', '--name=frag-udp', `--target=${shm}`, '--prio=0', '--protocols=udp', `--dsts=${tb.vip4}/32,${tb.vip6}/128`, `--dports=${UDP_PORT}`]);
    sinks = await Promise.all(tb.targets.map((t) => startUdpSink(t.name, t.ns, UDP_PORT, [tb.vip4, tb.vip6])));
  });

  afterAll(async () => {
    if (tb !== undefined) await tb.destroy();
    await cleanupAll();
  });

  it('the LB namespace does not track connections (so the kernel does not reassemble there)', () => {
    const rules = nsExec(tb.lb, 'iptables-save', []).stdout + nsExec(tb.lb, 'ip6tables-save', []).stdout;
    expect(rules).not.toMatch(/^\*nat|conntrack|--ctstate|--state|-j CT|NOTRACK/m);
  });

  it.each([4, 6] as const)('IPv%s: datagrams of 3-10 fragments sent in order arrive whole, once, at the target their 5-tuple hashes to', async (f) => {
    const before = metrics(tb.lb);
    const sent = sendWhole(f, f === 4 ? 41000 : 42000);
    await expectArrivedWhole(f, sent);
    const after = metrics(tb.lb);
    const delta = (metric: string, labels: Record<string, string> = {}): number => metricSum(after, metric, labels) - metricSum(before, metric, labels);
    // Every fragment was queued on its own: one decision per first fragment, one hit per later one.
    expect(delta('nfqlb_decisions_total', { reason: 'fragment_hit' })).toBe(sent.reduce((a, d) => a + d.parts - 1, 0));
    expect(delta('nfqlb_fragment_inserts_total')).toBe(sent.length);
    // --reassembler: each entry was freed at its datagram's last fragment, not by the ttl.
    expect(delta('nfqlb_fragment_reassembled_total')).toBe(sent.length);
    expect(delta('nfqlb_fragment_expired_total')).toBe(0);
    expect(metricSum(after, 'nfqlb_fragment_entries')).toBe(0);
    const targets = new Set(sent.map((d) => received(d.tag)[0].target));
    log(`IPv${f}: ${sent.length} datagrams of 3-10 fragments whole at ${[...targets].sort().join(', ')}`);
  });

  it('a flood of never-completed datagrams stays within ft_size + ft_buckets, times out after ft_ttl, and TCP keeps working', async () => {
    // Each packet thread has a table of its own, and the metrics and ftshm hold their sum.
    const tables = fragmentTables(daemonPid);
    const perTable = FT_SIZE + FT_BUCKETS;
    const capacity = perTable * tables;
    const bucketsMax = FT_BUCKETS * tables;
    const before = metrics(tb.lb);
    const beforeStats = readFragStats(ftShm);
    let firsts = 0;
    let laters = 0;
    let maxActive = 0;
    for (let round = 0; round < 4; round++) {
      for (const f of [4, 6] as const) {
        // Datagrams of two small fragments: only the first of one, only the second of another.
        const packets: Uint8Array[] = [];
        for (let i = 0; i < 500; i++) {
          packets.push(fragmentsOf(datagram(f, 10000 + ((round * 500 + i) % 50000), 2, 64))[0]);
          packets.push(fragmentsOf(datagram(f, 10000, 2, 64))[1]);
        }
        sendPackets(tb.gw, packets);
        firsts += 500;
        laters += 500;
      }
      const m = metrics(tb.lb);
      const active = metricSum(m, 'nfqlb_fragment_entries');
      maxActive = Math.max(maxActive, active);
      expect(active).toBeLessThanOrEqual(capacity);
      expect(metricSum(m, 'nfqlb_fragment_buckets_used')).toBeLessThanOrEqual(bucketsMax);
      const s = readFragStats(ftShm);
      expect(s.active).toBeLessThanOrEqual(capacity);
      expect(s.bucketsUsed).toBeLessThanOrEqual(bucketsMax);
      // TCP is not fragmented and never waits for the table.
      const results = tb.connect(tb.vip4, ports(30000 + round * 10, 10));
      expect(results.filter((r) => r.target === null)).toEqual([]);
    }
    const during = metrics(tb.lb);
    const delta = (metric: string, labels: Record<string, string> = {}): number => metricSum(during, metric, labels) - metricSum(before, metric, labels);
    const stored = delta('nfqlb_fragment_inserts_total');
    const rejected = delta('nfqlb_fragment_rejected_total');
    const missed = delta('nfqlb_decisions_total', { reason: 'fragment_miss' });
    log(`flood: ${firsts} first fragments (${stored} seen by the table, ${rejected} refused: table full), ${laters} later fragments without a first (${missed} dropped as fragment_miss); most entries seen ${maxActive} of ${capacity}`);
    // The fragments reached the daemon one by one (a few may be lost to a full kernel queue on a busy machine).
    expect(stored).toBeGreaterThanOrEqual(0.9 * firsts);
    expect(missed).toBeGreaterThanOrEqual(0.9 * laters);
    expect(rejected).toBeGreaterThan(0);
    expect(stored - rejected).toBeGreaterThanOrEqual(perTable);

    // No fragment for longer than the ttl: housekeeping frees everything and says so in ftshm and the metrics.
    // ftshm is written once a second, so it may still show the table emptied between two rounds: wait until
    // it has counted every entry the flood made as ended: expired, or (a later fragment that happened to
    // complete one) reassembled.
    const made = stored - rejected;
    const quiet = await waitFor(
      `the fragment table to empty after the ttl, all ${made} entries ended`,
      () => readFragStats(ftShm),
      (s) => s.active === 0 && s.bucketsUsed === 0 && s.objGC - beforeStats.objGC + (s.reAssembled - beforeStats.reAssembled) >= made,
    );
    expect(quiet.objGC - beforeStats.objGC).toBeGreaterThanOrEqual(perTable);
    expect(metricSum(metrics(tb.lb), 'nfqlb_fragment_entries')).toBe(0);

    // The table takes datagrams again.
    const sent = sendWhole(4, 43000);
    await expectArrivedWhole(4, sent);

    // `nfqlb stats` of both implementations print the same on the file this daemon writes (read while it is unchanged).
    if (originalUnavailable() === null) {
      await waitFor('two equal reads of ftshm around the original\'s', () => {
        const a = nfqlbStats('ours', ftShm);
        const theirs = nfqlbStats('original', ftShm);
        const b = nfqlbStats('ours', ftShm);
        return { a, theirs, b };
      }, (r) => r.a.stdout === r.b.stdout && r.a.stdout === r.theirs.stdout && r.a.rc === 0 && r.theirs.rc === 0);
      log(`nfqlb stats (ours = original):\n${nfqlbStats('ours', ftShm).stdout}`);
    } else {
      log(`skipped the original's nfqlb stats: ${originalUnavailable()}`);
    }
  });

  const itOriginal = originalUnavailable() === null ? it : it.skip;
  itOriginal("the original daemon's ftshm: our `nfqlb stats` prints what the original prints", async () => {
    await tb.stopDaemon();
    const origShm = uniqueShmName('ftshm-orig');
    registerShm(origShm);
    const partner = await Partner.start('original', tb.lb, ['--queue=0:3', `--ft_shm=${origShm}`, `--ft_size=${FT_SIZE}`, `--ft_buckets=${FT_BUCKETS}`], { privateShm: false });
    try {
      const set = partner.cli('original', ['flow-set', '--name=frag-udp', `--target=${shm}`, '--prio=0', '--protocols=udp', `--dsts=${tb.vip4}/32,${tb.vip6}/128`, `--dports=${UDP_PORT}`]);
      expect(set.rc).toBe(0);
      const sent = sendWhole(4, 44000);
      await expectArrivedWhole(4, sent);
      const s: FragStats = await waitFor('the original to count the first fragments', () => readFragStats(origShm), (x) => x.inserts >= sent.length);
      expect([s.size, s.bucketsMax, Number(s.ttlNanos / 1000000n)]).toEqual([FT_SIZE, FT_BUCKETS, 200]);
      const theirs = nfqlbStats('original', origShm);
      expect(theirs.rc).toBe(0);
      expect(nfqlbStats('ours', origShm)).toEqual(theirs);
    } finally {
      await partner.stop();
    }
  });
});
