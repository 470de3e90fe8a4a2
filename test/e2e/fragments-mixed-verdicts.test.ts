/**
 * Batch verdicts with fragments: the fragments of many
 * datagrams, interleaved so that later fragments that came before their first
 * (kept in the store with --tun, and DROPPED) sit in the middle of runs of
 * accepted fragments, are queued while the daemon is stopped (SIGSTOP) and
 * received in full batches when it goes on. Every datagram must arrive whole at
 * the target of its 5-tuple (`nfqlb fwmark`), for every worker mode; the store
 * counts every kept copy and re-injects it. Conntrack is kept out of the LB
 * namespace (raw NOTRACK), so the queue sees single fragments.
 */
import { cleanupAll, ipn, metricSum, nsExec, scrapeMetrics, Testbed, uniqueShmName, type TargetInfo } from '../../testbed/testbed';
import { arrivalsAt, fragmentsOf, sendPackets, startUdpSink, type Datagram, type UdpSink } from '../helpers/fragsend';
import { describeUnless, netnsUnavailable } from '../helpers/skip';
import { until } from '../helpers/wait';

const describeNs = describeUnless(netnsUnavailable());
jest.setTimeout(180000);

const PORT = 5003;
const TUN = 'h4tun0';
const METRICS = 19772;

describeNs('interleaved fragments of a queued burst, with --tun: every datagram whole at its target', () => {
  let tb: Testbed;
  let shm: string;
  const sinks: UdpSink[] = [];
  const expected = new Map<number, TargetInfo>();
  let nextTag = 1;
  let nextId = 300;

  function targetFor(sport: number): TargetInfo {
    let t = expected.get(sport);
    if (t === undefined) {
      const r = tb.nfqlbOk(['fwmark', `--shm=${shm}`, '--proto=udp', `--src=${tb.client4}:${sport}`, `--dst=${tb.vip4}:${PORT}`, '--hash_mode=0']);
      t = tb.byFwmark((JSON.parse(r.stdout) as { fwmark: number }).fwmark)!;
      expected.set(sport, t);
    }
    return t;
  }

  beforeAll(async () => {
    tb = Testbed.build();
    nsExec(tb.lb, 'iptables', ['-t', 'raw', '-A', 'PREROUTING', '-j', 'CT', '--notrack']);
    ipn(tb.lb, 'tuntap', 'add', TUN, 'mode', 'tun');
    ipn(tb.lb, 'link', 'set', TUN, 'mtu', '1500', 'up');
    for (const t of tb.targets) sinks.push(await startUdpSink(t.name, t.ns, PORT, [tb.vip4]));
    shm = uniqueShmName('hfrag');
    tb.initTable(shm);
  });

  afterAll(async () => {
    if (tb !== undefined) await tb.destroy();
    await cleanupAll();
  });

  it.each([['default workers', []], ['--workers=1', ['--workers=1']], ['--workers=2', ['--workers=2']]] as Array<[string, string[]]>)('%s', async (_name, extra) => {
    await tb.startDaemon(['flowlb', '--queue=0:3', '--hash_mode=0', `--tun=${TUN}`, `--metrics_address=127.0.0.1:${METRICS}`, ...extra]);
    tb.nfqlbOk(['flow-set', '--name=hfrag', `--target=${shm}`, '--prio=1', '--protocols=udp', `--dsts=${tb.vip4}/32`, `--dports=${PORT}`]);
    const metrics = (): string => scrapeMetrics(tb.lb, METRICS) ?? '';
    const stored0 = metricSum(metrics(), 'nfqlb_fragment_store_total', { event: 'stored' });
    // 24 datagrams of 4 fragments: the even ones in order, the odd ones last fragment first; one fragment of
    // each datagram in turn, so accepted fragments and kept (dropped) ones alternate in the queue.
    const ds: Datagram[] = Array.from({ length: 24 }, (_, i) => ({
      family: 4 as const, src: tb.client4, dst: tb.vip4, sport: 42000 + i, dport: PORT, tag: nextTag++, fragId: nextId++, parts: 4,
    }));
    const frags = ds.map((d, i) => (i % 2 === 0 ? fragmentsOf(d) : fragmentsOf(d).reverse()));
    const packets: Uint8Array[] = [];
    for (let k = 0; k < 4; k++) for (const f of frags) packets.push(f[k]);
    const pid = tb.daemon!.pid;
    process.kill(pid, 'SIGSTOP');
    try {
      expect(sendPackets(tb.gw, packets)).toBe(packets.length);
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    await until(() => ds.every((d) => arrivalsAt(sinks).has(d.tag)), `${ds.length} datagrams at the targets`);
    const got = arrivalsAt(sinks);
    for (const d of ds) {
      expect({ tag: d.tag, sport: d.sport, ...got.get(d.tag) }).toEqual({ tag: d.tag, sport: d.sport, targets: [targetFor(d.sport).name], whole: true });
    }
    expect(new Set(ds.map((d) => targetFor(d.sport).name)).size).toBeGreaterThan(1);
    // The odd datagrams' 3 later fragments came before their first: kept, dropped, re-injected.
    expect(metricSum(metrics(), 'nfqlb_fragment_store_total', { event: 'stored' }) - stored0).toBe(12 * 3);
    const text = metrics();
    // The burst came in batches of more than one packet.
    expect(metricSum(text, 'nfqlb_batch_size_count')).toBeLessThan(metricSum(text, 'nfqlb_batch_size_sum') / 4);
    await tb.stopDaemon();
  });
});
