/**
 * Metrics, readiness, log level and trace of a live daemon in network
 * namespaces: a known number of packets is sent and the scraped counters must
 * equal it, per verdict, per flow and per fwmark. The whole scrape passes
 * `promtool check metrics` (when promtool is installed); a table that loses
 * its last target counts no_target under its name and logs one warn line, and
 * one line when a target is back; a failed flow-set is a warn line.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { canUseNetns, cleanupAll, nsExec, spawnInNs, killProcess, sleep, Testbed, uniqueShmName, NFQLB_BIN, metricSum, scrapeMetrics } from '../../testbed/testbed';
import { httpGetInNs } from '../helpers/http';
import { promtool, promtoolUnavailable } from '../helpers/promtool';
import { describeUnless, e2eUnavailable } from '../helpers/skip';

const describeNs = describeUnless(e2eUnavailable());
jest.setTimeout(120000);

const METRICS_PORT = 19657;

describeNs('observing a live daemon', () => {
  let tb: Testbed;
  let shm: string;

  beforeAll(async () => {
    tb = Testbed.build();
    shm = uniqueShmName('obs');
    tb.initTable(shm);
    await tb.startDaemon(['flowlb', '--queue=0:3', '--hash_mode=0', `--metrics_address=127.0.0.1:${METRICS_PORT}`]);
    tb.setFlow('obs-udp', shm, ['--protocols=udp', `--dsts=${tb.vip4}/32,${tb.vip6}/128`, '--dports=5001']);
  });

  afterAll(async () => {
    await tb?.destroy();
    await cleanupAll();
  });

  it('serves /healthz and /readyz (ready once the queues are bound), 404 elsewhere', () => {
    expect(httpGetInNs(tb.lb, METRICS_PORT, '/healthz').status).toBe(200);
    expect(httpGetInNs(tb.lb, METRICS_PORT, '/readyz').status).toBe(200);
    expect(httpGetInNs(tb.lb, METRICS_PORT, '/nope').status).toBe(404);
  });

  it('counts exactly what was sent, per verdict, reason, flow and fwmark', () => {
    const before = scrapeMetrics(tb.lb, METRICS_PORT) ?? '';
    const sports = [40001, 40002, 40003, 40004, 40005, 40006];
    const perSport = 7;
    const expectedByFwmark = new Map<number, number>();
    const expect1 = (src: string, dst: string, n: number): void => {
      const fw = JSON.parse(tb.nfqlbOk(['fwmark', `--shm=${shm}`, '--proto=udp', `--src=${src}`, `--dst=${dst}`, '--hash_mode=0']).stdout) as { fwmark: number };
      expectedByFwmark.set(fw.fwmark, (expectedByFwmark.get(fw.fwmark) ?? 0) + n);
    };
    for (const sport of sports) {
      tb.sendUdp(tb.vip4, 5001, perSport, sport);
      expect1(`${tb.client4}:${sport}`, `${tb.vip4}:5001`, perSport);
    }
    tb.sendUdp(tb.vip6, 5001, 5, 40100);
    expect1(`[${tb.client6}]:40100`, `[${tb.vip6}]:5001`, 5);
    tb.sendUdp(tb.vip4, 5002, 9, 40200); // no flow: dropped (nolb_fwmark -1)
    const matched = sports.length * perSport + 5;
    const text = scrapeMetrics(tb.lb, METRICS_PORT) ?? '';
    const delta = (metric: string, labels: Record<string, string> = {}): number => metricSum(text, metric, labels) - metricSum(before, metric, labels);

    expect(delta('nfqlb_packets_total', { verdict: 'accept' })).toBe(matched);
    expect(delta('nfqlb_packets_total', { verdict: 'drop' })).toBe(9);
    expect(delta('nfqlb_decisions_total', { reason: 'target' })).toBe(matched);
    expect(delta('nfqlb_decisions_total', { reason: 'no_flow' })).toBe(9);
    expect(delta('nfqlb_decisions_total', { reason: 'no_target' })).toBe(0);
    expect(delta('nfqlb_flow_matches_total', { flow: 'obs-udp', target: shm })).toBe(matched);
    expect(delta('nfqlb_target_packets_total', { target: shm })).toBe(matched);
    expect(expectedByFwmark.size).toBeGreaterThan(1);
    for (const [fw, n] of expectedByFwmark) {
      expect(delta('nfqlb_target_packets_total', { target: shm, fwmark: String(fw) })).toBe(n);
    }
    expect(metricSum(text, 'nfqlb_flows')).toBe(1);
    expect(metricSum(text, 'nfqlb_table_active_targets', { target: shm })).toBe(4);
    expect(metricSum(text, 'nfqlb_control_requests_total', { action: 'set', result: 'ok' })).toBeGreaterThanOrEqual(1);
    expect(metricSum(text, 'nfqlb_batch_size_count')).toBeGreaterThan(0);
    expect(text).toMatch(/^nfqlb_queue_waiting\{queue="0"\} 0$/m);
    expect(text).toMatch(/^process_resident_memory_bytes /m);
    // matches_count in flow-list agrees with the counter.
    const list = JSON.parse(tb.nfqlbOk(['flow-list', '--name=obs-udp']).stdout) as { matches_count: number };
    expect(list.matches_count).toBe(metricSum(text, 'nfqlb_flow_matches_total', { flow: 'obs-udp' }));
  });

  it('the whole scrape is clean for promtool check metrics', () => {
    const why = promtoolUnavailable();
    if (why !== null) {
      console.warn(`skipped: ${why}`);
      return;
    }
    const text = scrapeMetrics(tb.lb, METRICS_PORT) ?? '';
    expect(text).toMatch(/^nfqlb_build_info\{version="[^"]+",nfqlb_compat="1\.2\.0",node="v[^"]+"\} 1$/m);
    const r = promtool(['check', 'metrics'], text);
    expect(r.stdout + r.stderr).toBe('');
    expect(r.status).toBe(0);
  });

  it('a real Prometheus scrapes it (OpenMetrics, gzip): up, every family, the same counts', async () => {
    if (promtoolUnavailable() !== null) {
      console.warn('skipped: prometheus is not installed (apt-get install prometheus)');
      return;
    }
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nfqlb-prom-'));
    fs.writeFileSync(path.join(dir, 'prometheus.yml'),
      `scrape_configs:\n  - job_name: nfqlb\n    scrape_interval: 1s\n    static_configs:\n      - targets: ['127.0.0.1:${METRICS_PORT}']\n`);
    // At loglevel 7 each scrape is a debug line saying what was negotiated.
    tb.nfqlbOk(['loglevel', '7']);
    for (let i = 0; i < 100 && !/"loglevel":7,"msg":"log level changed"/.test(tb.daemon?.stderr ?? ''); i++) await sleep(100);
    const prom = spawnInNs(tb.lb, 'prometheus', [`--config.file=${path.join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${path.join(dir, 'data')}`,
      '--web.listen-address=127.0.0.1:19090', '--log.level=warn']);
    const query = (q: string): { metric: Record<string, string>; value: [number, string] }[] => {
      const script = `fetch('http://127.0.0.1:19090/api/v1/query?query=' + encodeURIComponent(${JSON.stringify(q)})).then(async (r) => process.stdout.write(JSON.stringify((await r.json()).data?.result ?? [])), () => process.stdout.write('[]'))`;
      return JSON.parse(nsExec(tb.lb, process.execPath, ['-e', script]).stdout || '[]') as { metric: Record<string, string>; value: [number, string] }[];
    };
    try {
      let up: { value: [number, string] }[] = [];
      for (let i = 0; i < 100 && (up.length === 0 || up[0].value[1] !== '1'); i++) {
        await sleep(200);
        up = query('up{job="nfqlb"}');
      }
      expect(up.map((r) => r.value[1])).toEqual(['1']);
      // What it stored is what /metrics says now (flow matches do not move without traffic).
      const text = scrapeMetrics(tb.lb, METRICS_PORT) ?? '';
      const stored = query('nfqlb_flow_matches_total{flow="obs-udp"}');
      expect(stored.map((r) => Number(r.value[1]))).toEqual([metricSum(text, 'nfqlb_flow_matches_total', { flow: 'obs-udp' })]);
      expect(query('nfqlb_build_info').length).toBe(1);
      expect(query('nfqlb_packets_total').length).toBe(8); // 4 queues x accept|drop
      expect(Number(query('scrape_samples_scraped{job="nfqlb"}')[0].value[1])).toBeGreaterThan(100);
      // Scrapes come every second; the level change is seen within one (a loaded machine: give it time).
      const negotiated = /"openMetrics":true,"gzip":true,"msg":"metrics: scrape"/;
      for (let i = 0; i < 100 && !negotiated.test(tb.daemon?.stderr ?? ''); i++) await sleep(100);
      expect(tb.daemon?.stderr).toMatch(negotiated);
    } finally {
      tb.nfqlbOk(['loglevel', '5']);
      await killProcess(prom);
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a table without active target: no_target counted under its name, a warn line, a line when one is back', async () => {
    const empty = uniqueShmName('obs-empty');
    tb.initTable(empty, tb.targets.slice(0, 1));
    tb.nfqlbOk(['flow-set', '--name=obs-empty', `--target=${empty}`, '--prio=2', '--protocols=udp', `--dsts=${tb.vip4}/32`, '--dports=5004']);
    const before = scrapeMetrics(tb.lb, METRICS_PORT) ?? '';
    tb.deactivate(empty, tb.targets[0]);
    const lost = new RegExp(`"level":40,.*"target":"${empty}".*"msg":"table has no active target`);
    for (let i = 0; i < 200 && !lost.test(tb.daemon?.stderr ?? ''); i++) await sleep(50);
    expect(tb.daemon?.stderr).toMatch(lost);
    tb.sendUdp(tb.vip4, 5004, 6, 42000);
    const text = scrapeMetrics(tb.lb, METRICS_PORT) ?? '';
    expect(metricSum(text, 'nfqlb_table_no_target_total', { target: empty }) - metricSum(before, 'nfqlb_table_no_target_total', { target: empty })).toBe(6);
    expect(metricSum(text, 'nfqlb_table_no_target_total', { target: shm })).toBe(0);
    expect(metricSum(text, 'nfqlb_table_active_targets', { target: empty })).toBe(0);
    tb.activate(empty, tb.targets[0]);
    const back = new RegExp(`"level":30,.*"target":"${empty}".*"msg":"table has active targets again"`);
    for (let i = 0; i < 200 && !back.test(tb.daemon?.stderr ?? ''); i++) await sleep(50);
    expect(tb.daemon?.stderr).toMatch(back);
    // The deleted flow's series is still there at the next scrape, with its last value (removed after the retention).
    tb.nfqlbOk(['flow-delete', '--name=obs-empty']);
    const after = scrapeMetrics(tb.lb, METRICS_PORT) ?? '';
    expect(metricSum(after, 'nfqlb_flows')).toBe(1);
    expect(after).toMatch(new RegExp(`^nfqlb_flow_matches_total\\{flow="obs-empty",target="${empty}"\\} 6$`, 'm'));
  });

  it('a flow that lived between two scrapes is seen with every packet it matched, in every worker mode', () => {
    const before = scrapeMetrics(tb.lb, METRICS_PORT) ?? '';
    expect(before).not.toMatch(/flow="obs-brief"/);
    tb.nfqlbOk(['flow-set', '--name=obs-brief', `--target=${shm}`, '--prio=3', '--protocols=udp', `--dsts=${tb.vip4}/32`, '--dports=5006']);
    tb.sendUdp(tb.vip4, 5006, 7, 43000);
    tb.nfqlbOk(['flow-delete', '--name=obs-brief']);
    const after = scrapeMetrics(tb.lb, METRICS_PORT) ?? '';
    expect(metricSum(after, 'nfqlb_flow_matches_total', { flow: 'obs-brief', target: shm })).toBe(7);
    expect(metricSum(after, 'nfqlb_flows')).toBe(1);
  });

  it('a failed flow-set is a warn line, and refused control lines are counted once', async () => {
    const r = tb.nfqlb(['flow-set', '--name=obs-bad', '--target=obs-no-such-table', '--protocols=udp']);
    expect(r.status).not.toBe(0);
    const line = /"level":40,[^\n]*"flow":"obs-bad"[^\n]*"msg":"flow-set failed"/;
    for (let i = 0; i < 200 && !line.test(tb.daemon?.stderr ?? ''); i++) await sleep(50);
    expect(tb.daemon?.stderr).toMatch(line);
    expect(tb.daemon?.stderr).toMatch(/"level":40,[^\n]*"target":"obs-no-such-table"[^\n]*"msg":"cannot open table"/);
    // One junk line on the control socket, connected as nfqlb connects (src/addon/sockets.ts, compiled).
    const before = scrapeMetrics(tb.lb, METRICS_PORT) ?? '';
    const sockets = JSON.stringify(path.join(__dirname, '..', '..', 'dist', 'addon', 'sockets.js'));
    const junk = `require(${sockets}).connectTo({ unix: Buffer.from('nfqlb') }, 5000).then((s) => { s.end('\\x01junk\\n'); s.on('data', () => {}); s.on('close', () => process.exit(0)); s.on('error', () => process.exit(1)); })`;
    nsExec(tb.lb, process.execPath, ['-e', junk], { timeoutMs: 20000 });
    let text = before;
    for (let i = 0; i < 200 && metricSum(text, 'nfqlb_control_refused_total') === metricSum(before, 'nfqlb_control_refused_total'); i++) {
      await sleep(50);
      text = scrapeMetrics(tb.lb, METRICS_PORT) ?? '';
    }
    expect(metricSum(text, 'nfqlb_control_refused_total') - metricSum(before, 'nfqlb_control_refused_total')).toBe(1);
    expect(metricSum(text, 'nfqlb_control_requests_total') - metricSum(before, 'nfqlb_control_requests_total')).toBe(0);
    expect(text).not.toMatch(/^nfqlb_control_requests_total\{action="invalid"/m);
    expect(tb.daemon?.stderr).toMatch(/"level":40,[^\n]*"msg":"control requests refused"/);
  });

  it('a start failure is one JSON line (fatal) and nfqlb\'s one human line, saying the same', () => {
    // The control socket is the running daemon's: this one cannot start.
    const r = tb.nfqlb(['flowlb', '--queue=9', '--metrics_address=off']);
    expect(r.status).not.toBe(0);
    const lines = r.stderr.split('\n').filter((l) => l !== '');
    const json = lines.filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { level: number; msg: string; err: string });
    const fatal = json.filter((l) => l.level >= 50);
    expect(fatal).toHaveLength(1);
    expect(fatal[0]).toMatchObject({ level: 60, msg: 'start failed' });
    const human = lines.filter((l) => !l.startsWith('{'));
    expect(human).toHaveLength(1);
    expect(human[0]).toContain(fatal[0].err);
  });

  it('nfqlb loglevel changes the running daemon', async () => {
    // An earlier test may have changed it already: count the lines.
    const changed = (): number => ((tb.daemon?.stderr ?? '').match(/"loglevel":7,"msg":"log level changed"/g) ?? []).length;
    const before = changed();
    expect(tb.nfqlbOk(['loglevel', '7']).stdout).toBe('loglevel=7\n');
    expect(tb.nfqlbOk(['loglevel']).stdout).toBe('loglevel=7\n');
    // The daemon looks once a second; its stderr reaches us through the event loop.
    for (let i = 0; i < 200 && changed() === before; i++) await sleep(50);
    expect(changed()).toBe(before + 1);
    // At 7 (pino debug) each control request is a line.
    tb.nfqlbOk(['flow-list-names']);
    const debug = /"level":20,[^\n]*"action":"list-names"[^\n]*"msg":"control request"/;
    for (let i = 0; i < 200 && !debug.test(tb.daemon?.stderr ?? ''); i++) await sleep(50);
    expect(tb.daemon?.stderr).toMatch(debug);
    tb.nfqlbOk(['loglevel', '5']);
  });

  it('a trace client sees lines for packets matching a trace-flow and none for others', async () => {
    tb.nfqlbOk(['trace-flow-set', '--name=tf', '--protocols=udp', '--dports=5001']);
    const client = spawnInNs(tb.lb, process.execPath, [NFQLB_BIN, 'trace', '--selection=flows']);
    let out = '';
    client.stdout?.setEncoding('utf8');
    client.stdout?.on('data', (d: string) => {
      out += d;
    });
    for (let i = 0; i < 50 && !out.includes('Trace active'); i++) await sleep(50);
    tb.sendUdp(tb.vip4, 5001, 3, 41000);
    tb.sendUdp(tb.vip4, 5003, 4, 41001);
    for (let i = 0; i < 200 && (out.match(/Match for trace-flow: tf/g) ?? []).length < 3; i++) await sleep(50);
    await killProcess(client);
    expect(out).toMatch(/^Mask=0x00000040\n/);
    expect(out).toContain('Trace active, mask=0x00000040');
    expect((out.match(/Match for trace-flow: tf\n/g) ?? []).length).toBe(3);
    expect(out).toMatch(new RegExp(`proto=udp, len=\\d+, ::ffff:${tb.client4} 41000 -> ::ffff:${tb.vip4} 5001\\ntarget=${shm}, fwmark=\\d+\\n`));
    expect(out).not.toContain('41001');
    tb.nfqlbOk(['trace-flow-delete', '--name=tf']);
  });
});
