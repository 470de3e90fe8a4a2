/**
 * Packet threads (`--workers=N`) in a live daemon: queues 0:3 served by 2
 * threads, packets on every queue counted right per queue in /metrics, a
 * flow-set answered OK only once every thread uses it (the very next packets
 * are decided by the new flow), trace lines of packets decided in threads,
 * the bind error of a busy queue, and a clean stop.
 */
import { addAddress, cleanupAll, nsExec, spawnInNs, killProcess, sleep, Testbed, uniqueShmName, NFQLB_BIN, TESTBED_JS, DaemonProcess, metricSum, scrapeMetrics } from '../../testbed/testbed';
import { httpGetInNs } from '../helpers/http';
import { describeUnless, netnsUnavailable } from '../helpers/skip';

const describeNs = describeUnless(netnsUnavailable());
jest.setTimeout(120000);

const METRICS_PORT = 19658;

/** Client addresses on the gateway: --queue-balance hashes addresses (not ports), so many sources reach every queue. */
const SOURCES = Array.from({ length: 16 }, (_, i) => `198.51.100.${20 + i}`);

describeNs('packet threads (--workers=2 over --queue=0:3)', () => {
  let tb: Testbed;
  let shm: string;
  let shm2: string;

  beforeAll(async () => {
    tb = Testbed.build();
    shm = uniqueShmName('wk');
    shm2 = uniqueShmName('wk2');
    tb.initTable(shm);
    tb.initTable(shm2, [tb.targets[0]]);
    for (const src of SOURCES) addAddress(tb.gw, 'lb0', `${src}/24`);
    await tb.startDaemon(['flowlb', '--queue=0:3', '--workers=2', '--hash_mode=0', `--metrics_address=127.0.0.1:${METRICS_PORT}`]);
    tb.nfqlbOk(['flow-set', '--name=wk-udp', `--target=${shm}`, '--prio=1', '--protocols=udp', `--dsts=${tb.vip4}/32`, '--dports=5001']);
  });

  /** `count` datagrams from each of SOURCES to the IPv4 VIP, port 5001. */
  function sendFromAll(count: number, sport: number): void {
    for (const src of SOURCES) {
      nsExec(tb.gw, process.execPath, [TESTBED_JS, 'udp', `--dst=${tb.vip4}`, '--port=5001', `--src=${src}`, `--sport=${sport}`, `--count=${count}`]);
    }
  }

  afterAll(async () => {
    await tb?.destroy();
    await cleanupAll();
  });

  it('runs 2 threads, and nfqlb\'s line for each of the 4 queues', () => {
    expect(tb.daemon?.stderr).toMatch(/"workers":2[,}]/);
    expect((tb.daemon?.stdout.match(/^queue_length=16384, mtu=1500, SO_RCVBUF=\d+ \(\d+\)$/gm) ?? []).length).toBe(4);
    expect(httpGetInNs(tb.lb, METRICS_PORT, '/readyz').status).toBe(200);
  });

  it('serves every queue; per-queue counters in /metrics sum to what was sent', () => {
    const before = scrapeMetrics(tb.lb, METRICS_PORT) ?? '';
    sendFromAll(3, 42000);
    const sent = SOURCES.length * 3;
    const text = scrapeMetrics(tb.lb, METRICS_PORT) ?? '';
    const delta = (metric: string, labels: Record<string, string> = {}): number => metricSum(text, metric, labels) - metricSum(before, metric, labels);
    const perQueue = [0, 1, 2, 3].map((q) => delta('nfqlb_packets_total', { queue: String(q), verdict: 'accept' }));
    // --queue-balance spreads 16 sources over the 4 queues: every queue (so both threads) got some.
    for (const n of perQueue) expect(n).toBeGreaterThan(0);
    expect(perQueue.reduce((a, b) => a + b, 0)).toBe(sent);
    expect(delta('nfqlb_packets_total', { verdict: 'drop' })).toBe(0);
    expect(delta('nfqlb_decisions_total', { reason: 'target' })).toBe(sent);
    expect(delta('nfqlb_flow_matches_total', { flow: 'wk-udp', target: shm })).toBe(sent);
    expect(delta('nfqlb_target_packets_total', { target: shm })).toBe(sent);
    expect(metricSum(text, 'nfqlb_batch_size_count')).toBeGreaterThan(0);
    expect(text).toMatch(/^nfqlb_trace_channel_dropped_total 0$/m);
    const list = JSON.parse(tb.nfqlbOk(['flow-list', '--name=wk-udp']).stdout) as { matches_count: number };
    expect(list.matches_count).toBe(metricSum(text, 'nfqlb_flow_matches_total', { flow: 'wk-udp' }));
  });

  it('decides the packets right after a flow-set OK with the new flow, in every thread', () => {
    for (let round = 0; round < 3; round++) {
      // A higher-priority flow to the one-target table, then at once packets; then it goes again.
      tb.nfqlbOk(['flow-set', '--name=wk-new', `--target=${shm2}`, '--prio=5', '--protocols=udp', `--dsts=${tb.vip4}/32`, '--dports=5001']);
      const before = scrapeMetrics(tb.lb, METRICS_PORT) ?? '';
      sendFromAll(1, 43000 + round);
      const text = scrapeMetrics(tb.lb, METRICS_PORT) ?? '';
      const delta = (metric: string, labels: Record<string, string> = {}): number => metricSum(text, metric, labels) - metricSum(before, metric, labels);
      expect(delta('nfqlb_flow_matches_total', { flow: 'wk-new' })).toBe(SOURCES.length);
      expect(delta('nfqlb_flow_matches_total', { flow: 'wk-udp' })).toBe(0);
      expect(delta('nfqlb_target_packets_total', { target: shm2, fwmark: String(tb.targets[0].fwmark) })).toBe(SOURCES.length);
      for (const q of [0, 1, 2, 3]) expect(delta('nfqlb_packets_total', { queue: String(q), verdict: 'drop' })).toBe(0);
      tb.nfqlbOk(['flow-delete', '--name=wk-new']);
      const list = JSON.parse(tb.nfqlbOk(['flow-list']).stdout) as { name: string }[];
      expect(list.map((f) => f.name)).toEqual(['wk-udp']);
    }
  });

  it('a trace client sees the lines of packets decided in the threads', async () => {
    tb.nfqlbOk(['trace-flow-set', '--name=wtf', '--protocols=udp', '--dports=5001']);
    const client = spawnInNs(tb.lb, process.execPath, [NFQLB_BIN, 'trace', '--selection=flows']);
    let out = '';
    client.stdout?.setEncoding('utf8');
    client.stdout?.on('data', (d: string) => {
      out += d;
    });
    for (let i = 0; i < 50 && !out.includes('Trace active'); i++) await sleep(50);
    sendFromAll(1, 44000);
    for (let i = 0; i < 60 && (out.match(/Match for trace-flow: wtf/g) ?? []).length < SOURCES.length; i++) await sleep(50);
    await killProcess(client);
    expect((out.match(/Match for trace-flow: wtf\n/g) ?? []).length).toBe(SOURCES.length);
    for (const src of SOURCES) expect(out).toContain(`::ffff:${src} 44000 -> ::ffff:${tb.vip4} 5001\ntarget=${shm}, fwmark=`);
    // trace-flow matches are summed over the threads too.
    const tf = JSON.parse(tb.nfqlbOk(['trace-flow-list', '--name=wtf']).stdout) as { matches_count: number };
    expect(tf.matches_count).toBe(SOURCES.length);
    tb.nfqlbOk(['trace-flow-delete', '--name=wtf']);
  });

  it('a busy queue fails the start with the same one line as the single loop', async () => {
    const env = { NFQLB_FLOW_ADDRESS: `unix:wk-ctl-${process.pid}` };
    const args = (w: string): string[] => ['flowlb', '--queue=2:3', `--workers=${w}`, `--trace_address=unix:wk-tr-${process.pid}-${w}`, '--metrics_address=off'];
    const lines: string[] = [];
    for (const w of ['2', '0']) {
      const d = DaemonProcess.spawn(tb.lb, args(w), env);
      const r = await d.exited;
      expect(r.code).not.toBe(0);
      // The fatal JSON line beside the human one carries a time and a pid: compare what it says.
      const json = d.stderr.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { level: number; err: string; msg: string });
      const human = d.stderr.split('\n').filter((l) => !l.startsWith('{')).join('\n');
      lines.push(`${d.stdout}${human}${json.map((l) => `[${l.level} ${l.msg}: ${l.err}]`).join('')}`);
    }
    expect(lines[0]).toMatch(/queue 2 is bound by another process/);
    expect(lines[0]).toBe(lines[1]);
  });

  it('stops on SIGTERM with exit 0, queues unbound', async () => {
    const r = await tb.stopDaemon();
    expect(r?.code).toBe(0);
    const proc = nsExec(tb.lb, 'cat', ['/proc/net/netfilter/nfnetlink_queue']).stdout;
    expect(proc.trim()).toBe('');
  });
});
