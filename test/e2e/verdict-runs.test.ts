/**
 * The batch verdicts (NFQNL_MSG_VERDICT_BATCH for runs of
 * consecutive ids with one verdict and mark): a burst of UDP from several
 * 5-tuples, interleaved, with datagrams that match no flow (dropped) in the
 * middle of runs, is queued while the daemon is stopped (SIGSTOP), so it is
 * received in full batches when it goes on (SIGCONT). Every datagram must then
 * get the verdict and the fwmark of its own decision: per source port, all its
 * datagrams are forwarded with ONE target's fwmark, none is lost, and none of
 * the dropped ones is forwarded. The same burst through the original nfqlb
 * gives every 5-tuple the same fwmark. Runs for our default worker mode,
 * --workers=1 (single loop) and --workers=2, and the original; also after
 * signals, after a restart with a burst queued, in lb mode, and with a full
 * queue (with and without --fail_open).
 */
import { addRoute, cleanupAll, metricSum, nsExec, scrapeMetrics, Testbed, uniqueShmName } from '../../testbed/testbed';
import { describeUnless, netnsUnavailable, originalUnavailable } from '../helpers/skip';
import { waitFor } from '../helpers/wait';
import { Partner, type Impl } from '../interop/partners';

/** How long a wait may take before the test gives up (ms). */
const GIVE_UP_MS = 15000;

const describeNs = describeUnless(netnsUnavailable());
jest.setTimeout(120000);

const FLOW_PORT = 5003;
const METRICS_PORT = 19771;
const DROP_PORT = 5005;
/** One round of the burst, in send order: source ports; 41007 and 41008 go to DROP_PORT (no flow: dropped). */
const ROUND = [41001, 41001, 41002, 41007, 41003, 41003, 41003, 41004, 41008, 41005, 41006, 41001, 41002, 41002, 41007, 41007];
const DROPPED = new Set([41007, 41008]);
const ROUNDS = 15;
const SPORTS = [...new Set(ROUND)].sort();

const SENDER_PY = `
import socket, sys
src, dst, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
order = [int(p) for p in sys.argv[4].split(',')]
drop = set(int(p) for p in sys.argv[5].split(','))
socks = {}
for p in set(order):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((src, p))
    socks[p] = s
for r in range(rounds):
    for i, p in enumerate(order):
        socks[p].sendto(b'burst %d %d' % (r, i), (dst, ${DROP_PORT} if p in drop else ${FLOW_PORT}))
`;

interface Counts {
  /** Forwarded datagrams by source port and fwmark. */
  byMark: Map<number, Map<number, number>>;
  /** Forwarded datagrams by source port, whatever the mark. */
  bySport: Map<number, number>;
  /** Forwarded datagrams to DROP_PORT. */
  dropPort: number;
}

function forwardCounts(ns: string): Counts {
  const out = nsExec(ns, 'iptables-save', ['-c', '-t', 'mangle']).stdout;
  const c: Counts = { byMark: new Map(), bySport: new Map(), dropPort: 0 };
  for (const line of out.split('\n')) {
    const m = /^\[(\d+):\d+\] -A FORWARD .*$/.exec(line);
    if (m === null) continue;
    const packets = Number(m[1]);
    const sport = /--sport (\d+)/.exec(line);
    const mark = /--mark (0x[0-9a-f]+|\d+)/.exec(line);
    if (/--dport (\d+)/.exec(line)?.[1] === String(DROP_PORT)) c.dropPort += packets;
    else if (sport !== null && mark !== null) {
      const per = c.byMark.get(Number(sport[1])) ?? new Map<number, number>();
      per.set(Number(mark[1]), packets);
      c.byMark.set(Number(sport[1]), per);
    } else if (sport !== null) c.bySport.set(Number(sport[1]), packets);
  }
  return c;
}

describeNs('verdicts of a queued burst: every packet gets its own verdict and fwmark', () => {
  let tb: Testbed;
  const sent = new Map<number, number>();
  for (const p of ROUND) sent.set(p, (sent.get(p) ?? 0) + ROUNDS);
  const total = ROUND.length * ROUNDS;
  const accepted = [...sent].filter(([p]) => !DROPPED.has(p)).reduce((s, [, n]) => s + n, 0);
  /** The fwmark each source port got, by run. */
  const marks: Record<string, Map<number, number>> = {};

  beforeAll(() => {
    tb = Testbed.build();
    // A datagram to DROP_PORT accepted by mistake (with or without a mark) is forwarded, so it is counted.
    addRoute(tb.lb, `${tb.vip4}/32`, tb.targets[0].addr4);
    const ipt = (...args: string[]): void => void nsExec(tb.lb, 'iptables', ['-t', 'mangle', '-A', 'FORWARD', '-d', tb.vip4, '-p', 'udp', ...args]);
    ipt('--dport', `${DROP_PORT}`);
    for (const sport of SPORTS) {
      ipt('--sport', `${sport}`);
      for (const t of tb.targets) ipt('--sport', `${sport}`, '-m', 'mark', '--mark', `${t.fwmark}`);
    }
  });

  afterAll(async () => {
    await tb?.destroy();
    await cleanupAll();
  });

  const runs: Array<[string, Impl, string[]]> = [
    ['original nfqlb', 'original', []],
    ['ours, default workers', 'ours', []],
    ['ours, --workers=1', 'ours', ['--workers=1']],
    ['ours, --workers=2', 'ours', ['--workers=2']],
    ['ours, --workers=2, trace on', 'ours', ['--workers=2']],
    ['ours, default workers, after SIGHUP SIGUSR1 SIGUSR2 SIGPIPE SIGQUIT', 'ours', []],
    ['ours, default workers, restarted while a burst was queued', 'ours', []],
  ];

  /** Starts a daemon and gives it nfqlb's table and one UDP flow to FLOW_PORT. */
  async function startWithFlow(impl: Impl, extra: string[]): Promise<Partner> {
    // --queue-balance hashes the addresses: the whole burst goes to one queue, as one stream of consecutive ids.
    const metrics = impl === 'ours' ? [`--metrics_address=127.0.0.1:${METRICS_PORT}`] : [];
    const d = await Partner.start(impl, tb.lb, ['--queue=0:3', '--qlength=1024', ...metrics, ...extra]);
    const shm = uniqueShmName('hv');
    expect(d.cli(impl, ['init', `--shm=${shm}`, '--M=10000', '--N=100']).rc).toBe(0);
    for (const t of tb.targets) expect(d.cli(impl, ['activate', `--index=${t.id - 1}`, `--shm=${shm}`, `${t.fwmark}`]).rc).toBe(0);
    const set = d.cli(impl, ['flow-set', '--name=hv', `--target=${shm}`, '--prio=1', '--protocols=udp', `--dsts=${tb.vip4}/32`, `--dports=${FLOW_PORT}`]);
    expect([set.rc, set.stderr]).toEqual([0, '']);
    return d;
  }

  /** The burst, queued while `pid` is stopped. */
  function burstWhileStopped(pid: number): void {
    process.kill(pid, 'SIGSTOP');
    try {
      nsExec(tb.gw, 'python3', ['-c', SENDER_PY, tb.client4, tb.vip4, `${ROUNDS}`, ROUND.join(','), [...DROPPED].join(',')]);
    } finally {
      process.kill(pid, 'SIGCONT');
    }
  }

  it.each(runs)('%s', async (name, impl, extra) => {
    if (impl === 'original' && originalUnavailable() !== null) {
      process.stdout.write(`skipped: ${originalUnavailable()}\n`);
      return;
    }
    nsExec(tb.lb, 'iptables', ['-t', 'mangle', '-Z', 'FORWARD']);
    nsExec(tb.lb, 'iptables', ['-t', 'mangle', '-Z', 'PREROUTING']);
    if (name.includes('restarted')) {
      // The first daemon dies (SIGKILL) with the whole burst queued: the kernel drops what it held when its
      // socket goes; the next daemon's queue instance starts a new id sequence. Only one burst may arrive.
      const first = await startWithFlow(impl, extra);
      process.kill(first.pid, 'SIGSTOP');
      try {
        nsExec(tb.gw, 'python3', ['-c', SENDER_PY, tb.client4, tb.vip4, `${ROUNDS}`, ROUND.join(','), [...DROPPED].join(',')]);
      } finally {
        process.kill(first.pid, 'SIGKILL');
        process.kill(first.pid, 'SIGCONT');
      }
      await first.stop();
    }
    const d = await startWithFlow(impl, extra);
    try {
      if (name.includes('SIGHUP')) {
        for (const sig of ['SIGHUP', 'SIGUSR1', 'SIGUSR2', 'SIGPIPE', 'SIGQUIT'] as const) process.kill(d.pid, sig);
      }
      let trace: ReturnType<typeof d.spawn> | null = null;
      if (name.includes('trace')) {
        expect(d.cli(impl, ['trace-flow-set', '--name=hvt', '--protocols=udp']).rc).toBe(0);
        trace = d.spawn(impl, ['trace', '--selection=flows']);
      }
      burstWhileStopped(d.pid);
      const c = await waitFor(
        `${accepted} forwarded`,
        () => forwardCounts(tb.lb),
        (v) => [...v.bySport.values()].reduce((s, n) => s + n, 0) >= accepted,
        GIVE_UP_MS,
      );
      if (trace !== null) trace.kill('SIGTERM');
      const got = new Map<number, number>();
      for (const sport of SPORTS) {
        const expected = DROPPED.has(sport) ? 0 : sent.get(sport)!;
        expect([sport, c.bySport.get(sport) ?? 0]).toEqual([sport, expected]);
        const nonzero = [...(c.byMark.get(sport) ?? new Map<number, number>())].filter(([, n]) => n > 0);
        if (expected === 0) {
          expect([sport, nonzero]).toEqual([sport, []]);
        } else {
          // All datagrams of one 5-tuple with one target's fwmark.
          expect([sport, nonzero.length, nonzero[0]?.[1]]).toEqual([sport, 1, expected]);
          got.set(sport, nonzero[0][0]);
        }
      }
      expect(c.dropPort).toBe(0);
      marks[name] = got;
      if (impl === 'ours') {
        const text = await waitFor('/metrics with every packet', () => scrapeMetrics(tb.lb, METRICS_PORT) ?? '', (t) => metricSum(t, 'nfqlb_batch_size_sum') >= total, GIVE_UP_MS);
        expect(metricSum(text, 'nfqlb_batch_size_sum')).toBe(total);
        // The burst waited in the queue: it came in batches of more than one packet (else nothing was batched).
        expect(metricSum(text, 'nfqlb_batch_size_count')).toBeLessThan(total / 4);
        expect(metricSum(text, 'nfqlb_packets_total', { verdict: 'accept' })).toBe(accepted);
        expect(metricSum(text, 'nfqlb_packets_total', { verdict: 'drop' })).toBe(total - accepted);
        expect(metricSum(text, 'nfqlb_decisions_total')).toBe(total);
        expect(metricSum(text, 'nfqlb_decisions_total', { reason: 'no_flow' })).toBe(total - accepted);
      }
      // Spread over more than one target, so runs of different marks were interleaved.
      expect(new Set(got.values()).size).toBeGreaterThan(1);
      if (marks['original nfqlb'] !== undefined) {
        for (const [run, m] of Object.entries(marks)) expect([run, [...m]]).toEqual([run, [...marks['original nfqlb']]]);
      }
      if (impl === 'ours') {
        // Still running after everything above, and a clean stop.
        expect(d.running).toBe(true);
        const exited = new Promise<number | null>((resolve) => d.child.once('exit', (code) => resolve(code)));
        d.child.kill('SIGTERM');
        expect(await exited).toBe(0);
      }
    } finally {
      await d.stop();
    }
  });

  it.each([['default workers', []], ['--workers=2', ['--workers=2']]] as Array<[string, string[]]>)('ours, nfqlb lb, %s: no flows, every datagram of a 5-tuple to one target, the same targets as flowlb', async (_n, extra) => {
    nsExec(tb.lb, 'iptables', ['-t', 'mangle', '-Z', 'FORWARD']);
    const shm = uniqueShmName('hvlb');
    tb.initTable(shm);
    await tb.startDaemon(['lb', `--tshm=${shm}`, '--queue=0:3', '--qlength=1024', '--metrics_address=off', ...extra]);
    try {
      burstWhileStopped(tb.daemon!.pid);
      // No flows in lb mode: the DROP_PORT datagrams are balanced too.
      await waitFor(`${total} forwarded`, () => forwardCounts(tb.lb), (v) => [...v.bySport.values()].reduce((s, n) => s + n, 0) >= total, GIVE_UP_MS);
      const c = forwardCounts(tb.lb);
      for (const sport of SPORTS) {
        const nonzero = [...(c.byMark.get(sport) ?? new Map<number, number>())].filter(([, n]) => n > 0);
        expect([sport, c.bySport.get(sport), nonzero.length, nonzero[0]?.[1]]).toEqual([sport, sent.get(sport), 1, sent.get(sport)]);
        if (!DROPPED.has(sport) && marks['ours, default workers'] !== undefined) expect([sport, nonzero[0][0]]).toEqual([sport, marks['ours, default workers'].get(sport)]);
      }
      expect((await tb.stopDaemon())?.code).toBe(0);
    } finally {
      await tb.stopDaemon();
    }
  });

  // A queue of 100 and a burst of 240: the kernel queues the first 100 (consecutive ids, given batch verdicts),
  // and the other 140 are dropped by the kernel, or with --fail_open accepted by it without a mark.
  const QLENGTH = 100;
  const queueFullRuns: Array<[string, Impl, boolean]> = [
    ['original nfqlb, queue full', 'original', false],
    ['ours, default workers, queue full', 'ours', false],
    ['ours, --workers=1, queue full, --fail_open', 'ours', true],
    ['ours, default workers, queue full, --fail_open', 'ours', true],
  ];

  it.each(queueFullRuns)('%s', async (_name, impl, failOpen) => {
    if (impl === 'original' && originalUnavailable() !== null) {
      process.stdout.write(`skipped: ${originalUnavailable()}\n`);
      return;
    }
    nsExec(tb.lb, 'iptables', ['-t', 'mangle', '-Z', 'FORWARD']);
    const extra = [`--qlength=${QLENGTH}`, ...(failOpen ? ['--fail_open'] : []), ...(_name.includes('workers=1') ? ['--workers=1'] : [])];
    const metrics = impl === 'ours' ? [`--metrics_address=127.0.0.1:${METRICS_PORT}`] : [];
    const d = await Partner.start(impl, tb.lb, ['--queue=0:3', ...metrics, ...extra]);
    try {
      const shm = uniqueShmName('hq');
      expect(d.cli(impl, ['init', `--shm=${shm}`, '--M=10000', '--N=100']).rc).toBe(0);
      for (const t of tb.targets) expect(d.cli(impl, ['activate', `--index=${t.id - 1}`, `--shm=${shm}`, `${t.fwmark}`]).rc).toBe(0);
      expect(d.cli(impl, ['flow-set', '--name=hq', `--target=${shm}`, '--prio=1', '--protocols=udp', `--dsts=${tb.vip4}/32`, `--dports=${FLOW_PORT}`]).rc).toBe(0);
      burstWhileStopped(d.pid);
      const order: number[] = [];
      for (let r = 0; r < ROUNDS; r++) order.push(...ROUND);
      const queued = new Map<number, number>();
      const overflow = new Map<number, number>();
      order.forEach((p, i) => {
        const m = i < QLENGTH ? queued : overflow;
        m.set(p, (m.get(p) ?? 0) + 1);
      });
      const expectMarked = [...queued].filter(([p]) => !DROPPED.has(p)).reduce((s, [, n]) => s + n, 0);
      const expectUnmarked = failOpen ? total - QLENGTH : 0;
      const c = await waitFor(
        `${expectMarked + expectUnmarked} forwarded`,
        () => forwardCounts(tb.lb),
        (v) => [...v.bySport.values()].reduce((s, n) => s + n, 0) + v.dropPort >= expectMarked + expectUnmarked,
        GIVE_UP_MS,
      );
      for (const sport of SPORTS) {
        const marked = [...(c.byMark.get(sport) ?? new Map<number, number>())].filter(([, n]) => n > 0);
        const markedCount = marked.reduce((s, [, n]) => s + n, 0);
        const want = DROPPED.has(sport) ? 0 : queued.get(sport) ?? 0;
        expect([sport, markedCount, marked.length]).toEqual([sport, want, want > 0 ? 1 : 0]);
        if (!DROPPED.has(sport)) {
          expect([sport, (c.bySport.get(sport) ?? 0) - markedCount]).toEqual([sport, failOpen ? overflow.get(sport) ?? 0 : 0]);
        }
      }
      const overflowDropPort = [...overflow].filter(([p]) => DROPPED.has(p)).reduce((s, [, n]) => s + n, 0);
      expect(c.dropPort).toBe(failOpen ? overflowDropPort : 0);
      if (impl === 'ours') {
        const text = await waitFor('/metrics with every queued packet', () => scrapeMetrics(tb.lb, METRICS_PORT) ?? '', (t) => metricSum(t, 'nfqlb_batch_size_sum') >= QLENGTH, GIVE_UP_MS);
        expect(metricSum(text, 'nfqlb_batch_size_sum')).toBe(QLENGTH);
        expect(metricSum(text, 'nfqlb_packets_total')).toBe(QLENGTH);
        expect(metricSum(text, 'nfqlb_queue_dropped_total')).toBe(failOpen ? 0 : total - QLENGTH);
      }
    } finally {
      await d.stop();
    }
  });
});
