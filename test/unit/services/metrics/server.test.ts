/**
 * The metrics HTTP server (services/metrics/server.ts), end to end over the
 * registry (the counters themselves are in counters.test.ts): the server
 * exports exactly what a fake daemon reports — names, labels, values, deltas
 * between scrapes, counters that never go down when the source restarts a
 * count, a valid cumulative histogram, /proc queue lines matched on queue AND
 * portid — plus the health routes, HTTP errors and listen errors. A scrape
 * with 1,000 flows has every series.
 */
import * as http from 'node:http';
import { register as globalRegistry } from 'prom-client';
import { BATCH_SIZE_BUCKETS, BatchSizeHistogram, FwmarkCounter, LabeledCounter } from '../../../../src/base/counters';
import { NfqlbError } from '../../../../src/base/errors';
import { createLogger } from '../../../../src/base/log';
import {
  parseMetricsAddress, startMetricsServer,
  type ControlRequestCount, type FlowCount, type MetricsLog, type MetricsServer, type MetricsSource,
  type QueueCounts, type ReasonCount, type TargetCounts,
} from '../../../../src/services/metrics';
import type { QueueProcEntry } from '../../../../src/addon/queue';

// ---------------------------------------------------------------------------
// Helpers

const REASONS = ['target', 'no_flow', 'no_target', 'invalid', 'fragment_hit', 'fragment_miss'];

/** A daemon stand-in whose numbers the tests set directly. */
class FakeSource implements MetricsSource {
  isReady = false;
  queueList: QueueCounts[] = [];
  reasonCounts = new Float64Array(REASONS.length);
  flowList: FlowCount[] = [];
  targetList: TargetCounts[] = [];
  batchSizes = new BatchSizeHistogram();
  control = new LabeledCounter();
  throwOnFlows = false;

  ready(): boolean {
    return this.isReady;
  }
  queues(): readonly QueueCounts[] {
    return this.queueList;
  }
  reasons(): readonly ReasonCount[] {
    return REASONS.map((name, i) => ({ name, count: this.reasonCounts[i] }));
  }
  flows(): readonly FlowCount[] {
    if (this.throwOnFlows) throw new Error('boom');
    return this.flowList;
  }
  targets(): readonly TargetCounts[] {
    return this.targetList;
  }
  controlRequests(): readonly ControlRequestCount[] {
    return this.control.entries();
  }
}

function procEntry(queue: number, portid: number, waiting: number, queueDropped: number, userDropped: number): QueueProcEntry {
  return { queue, portid, waiting, copyMode: 2, copyRange: 1500, queueDropped, userDropped, lastId: 0 };
}

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** One request on a fresh connection (agent: false), so no pooled socket outlives a test. */
function request(port: number, path: string, method = 'GET'): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, method, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

interface Exposition {
  samples: Sample[];
  types: Map<string, string>;
}

/** Parses the Prometheus text format strictly enough that a malformed line fails the test. */
function parseExposition(text: string): Exposition {
  const samples: Sample[] = [];
  const types = new Map<string, string>();
  for (const line of text.split('\n')) {
    if (line === '') continue;
    if (line.startsWith('# HELP ')) continue;
    const t = /^# TYPE (\S+) (counter|gauge|histogram|summary|untyped)$/.exec(line);
    if (t !== null) {
      types.set(t[1], t[2]);
      continue;
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (m === null) throw new Error(`bad exposition line: ${line}`);
    const labels: Record<string, string> = {};
    if (m[2] !== undefined && m[2] !== '') {
      // Sticky regexp: each label must start exactly where the previous one ended.
      const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)/y;
      let lm: RegExpExecArray | null;
      while ((lm = re.exec(m[2])) !== null) {
        labels[lm[1]] = lm[2].replace(/\\(.)/g, (_x, c: string) => (c === 'n' ? '\n' : c));
        if (lm[3] === '') break;
      }
      if (lm === null) throw new Error(`bad labels: ${line}`);
    }
    const v = m[3] === '+Inf' ? Infinity : m[3] === '-Inf' ? -Infinity : Number(m[3]);
    // prom-client writes NaN as "Nan" (event loop lag before its first sample);
    // Prometheus parses floats with Go's ParseFloat, which ignores case there.
    if (Number.isNaN(v) && m[3].toLowerCase() !== 'nan') throw new Error(`bad value: ${line}`);
    samples.push({ name: m[1], labels, value: v });
  }
  return { samples, types };
}

/** The value of the one sample with this name and exactly these labels, or undefined. */
function valueOf(e: Exposition, name: string, labels: Record<string, string> = {}): number | undefined {
  const want = JSON.stringify(Object.entries(labels).sort());
  const hits = e.samples.filter((s) => s.name === name && JSON.stringify(Object.entries(s.labels).sort()) === want);
  if (hits.length > 1) throw new Error(`duplicate series ${name} ${want}`);
  return hits[0]?.value;
}

function seriesOf(e: Exposition, name: string): Sample[] {
  return e.samples.filter((s) => s.name === name);
}

async function scrape(server: MetricsServer): Promise<Exposition> {
  const r = await request(server.port, '/metrics');
  expect(r.status).toBe(200);
  expect(r.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/);
  return parseExposition(r.body);
}

// ---------------------------------------------------------------------------
// Counters

describe('metrics server', () => {
  let source: FakeSource;
  let proc: QueueProcEntry[];
  let server: MetricsServer;

  beforeEach(async () => {
    source = new FakeSource();
    proc = [];
    server = await startMetricsServer('127.0.0.1:0', source, undefined, { readQueueProc: () => proc });
  });
  afterEach(async () => {
    await server.close();
  });

  test('listens on the actual port and reports it', () => {
    expect(server.port).toBeGreaterThan(0);
    expect(server.address).toBe(`127.0.0.1:${server.port}`);
  });

  test('exports every metric with exact names, labels and values', async () => {
    const t1 = new FwmarkCounter();
    t1.add(101, 7);
    t1.add(0, 2);
    t1.add(-1, 1);
    source.queueList = [
      { queueNum: 0, portid: 1000, accepted: 10, dropped: 1 },
      { queueNum: 3, portid: 1003, accepted: 5, dropped: 0 },
    ];
    source.reasonCounts.set([12, 2, 1, 0, 0, 1]);
    source.flowList = [
      { name: 'tshm-a-f1', target: 'tshm-a', matches: 9 },
      { name: 'f "quoted"\\', target: null, matches: 3 },
    ];
    source.targetList = [{ name: 'tshm-a', activeTargets: 2, fwmarks: t1 }];
    for (const s of [1, 1, 3, 64, 2000]) source.batchSizes.observe(s);
    source.control.inc('set', 'ok', 2);
    source.control.inc('list', 'ok');
    proc = [
      procEntry(0, 1000, 4, 6, 7),
      procEntry(3, 1003, 0, 1, 0),
      procEntry(1, 999, 50, 50, 50), // another process's queue
      procEntry(3, 2222, 60, 60, 60), // same number, another portid: not ours
    ];

    const e = await scrape(server);
    const types = Object.fromEntries(
      ['nfqlb_packets_total', 'nfqlb_decisions_total', 'nfqlb_flow_matches_total', 'nfqlb_target_packets_total',
        'nfqlb_batch_size', 'nfqlb_queue_waiting', 'nfqlb_queue_dropped_total', 'nfqlb_queue_user_dropped_total',
        'nfqlb_flows', 'nfqlb_table_active_targets', 'nfqlb_control_requests_total'].map((n) => [n, e.types.get(n)]),
    );
    expect(types).toEqual({
      nfqlb_packets_total: 'counter', nfqlb_decisions_total: 'counter', nfqlb_flow_matches_total: 'counter',
      nfqlb_target_packets_total: 'counter', nfqlb_batch_size: 'histogram', nfqlb_queue_waiting: 'gauge',
      nfqlb_queue_dropped_total: 'counter', nfqlb_queue_user_dropped_total: 'counter', nfqlb_flows: 'gauge',
      nfqlb_table_active_targets: 'gauge', nfqlb_control_requests_total: 'counter',
    });

    expect(seriesOf(e, 'nfqlb_packets_total')).toHaveLength(4);
    expect(valueOf(e, 'nfqlb_packets_total', { queue: '0', verdict: 'accept' })).toBe(10);
    expect(valueOf(e, 'nfqlb_packets_total', { queue: '0', verdict: 'drop' })).toBe(1);
    expect(valueOf(e, 'nfqlb_packets_total', { queue: '3', verdict: 'accept' })).toBe(5);
    expect(valueOf(e, 'nfqlb_packets_total', { queue: '3', verdict: 'drop' })).toBe(0);

    expect(seriesOf(e, 'nfqlb_decisions_total')).toHaveLength(REASONS.length);
    REASONS.forEach((reason, i) => expect(valueOf(e, 'nfqlb_decisions_total', { reason })).toBe([12, 2, 1, 0, 0, 1][i]));

    expect(seriesOf(e, 'nfqlb_flow_matches_total')).toHaveLength(2);
    expect(valueOf(e, 'nfqlb_flow_matches_total', { flow: 'tshm-a-f1', target: 'tshm-a' })).toBe(9);
    // Label values are escaped in the text and come back intact.
    expect(valueOf(e, 'nfqlb_flow_matches_total', { flow: 'f "quoted"\\', target: '' })).toBe(3);

    expect(seriesOf(e, 'nfqlb_target_packets_total')).toHaveLength(3);
    expect(valueOf(e, 'nfqlb_target_packets_total', { target: 'tshm-a', fwmark: '101' })).toBe(7);
    expect(valueOf(e, 'nfqlb_target_packets_total', { target: 'tshm-a', fwmark: '0' })).toBe(2);
    expect(valueOf(e, 'nfqlb_target_packets_total', { target: 'tshm-a', fwmark: '-1' })).toBe(1);

    expect(seriesOf(e, 'nfqlb_queue_waiting')).toHaveLength(2);
    expect(valueOf(e, 'nfqlb_queue_waiting', { queue: '0' })).toBe(4);
    expect(valueOf(e, 'nfqlb_queue_waiting', { queue: '3' })).toBe(0);
    expect(valueOf(e, 'nfqlb_queue_dropped_total', { queue: '0' })).toBe(6);
    expect(valueOf(e, 'nfqlb_queue_dropped_total', { queue: '3' })).toBe(1);
    expect(valueOf(e, 'nfqlb_queue_user_dropped_total', { queue: '0' })).toBe(7);
    expect(seriesOf(e, 'nfqlb_queue_user_dropped_total')).toHaveLength(2);

    expect(valueOf(e, 'nfqlb_flows')).toBe(2);
    expect(valueOf(e, 'nfqlb_table_active_targets', { target: 'tshm-a' })).toBe(2);
    expect(valueOf(e, 'nfqlb_control_requests_total', { action: 'set', result: 'ok' })).toBe(2);
    expect(valueOf(e, 'nfqlb_control_requests_total', { action: 'list', result: 'ok' })).toBe(1);

    // Histogram: cumulative buckets, +Inf = count, sum.
    const buckets = seriesOf(e, 'nfqlb_batch_size_bucket');
    expect(buckets.map((b) => b.labels.le)).toEqual([...BATCH_SIZE_BUCKETS.map(String), '+Inf']);
    expect(buckets.map((b) => b.value)).toEqual([2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 4, 5]);
    expect(valueOf(e, 'nfqlb_batch_size_count')).toBe(5);
    expect(valueOf(e, 'nfqlb_batch_size_sum')).toBe(2069);

    // prom-client's default metrics are on the same registry.
    expect(e.types.get('process_cpu_user_seconds_total')).toBe('counter');
    expect(e.types.get('nodejs_heap_size_total_bytes')).toBe('gauge');
    expect(valueOf(e, 'process_resident_memory_bytes')).toBeGreaterThan(0);

    // ... and nothing went to the global registry.
    expect(globalRegistry.getSingleMetric('nfqlb_packets_total')).toBeUndefined();
  });

  test('names with quotes, backslashes, newlines, UTF-8 bytes and NUL make valid label values', async () => {
    const bytes = (text: string): string => Buffer.from(text, 'utf8').toString('latin1');
    source.flowList = [
      { name: bytes('café'), target: bytes('tshm-€'), matches: 3 },
      { name: 'a"b\\c\nd', target: 't', matches: 4 },
      { name: 'nul\0x', target: 't', matches: 5 },
      { name: '\xff\xfe', target: 't', matches: 6 },
    ];
    source.targetList = [{ name: bytes('tshm-€'), activeTargets: 2, fwmarks: new FwmarkCounter() }];
    const r = await request(server.port, '/metrics');
    expect(r.body).not.toContain('\0');
    expect(r.body).toContain('nfqlb_flow_matches_total{flow="a\\"b\\\\c\\nd",target="t"} 4\n');
    expect(r.body).toContain('nfqlb_flow_matches_total{flow="café",target="tshm-€"} 3\n');
    const e = parseExposition(r.body);
    expect(valueOf(e, 'nfqlb_flow_matches_total', { flow: 'a"b\\c\nd', target: 't' })).toBe(4);
    expect(valueOf(e, 'nfqlb_flow_matches_total', { flow: 'nul\ufffdx', target: 't' })).toBe(5);
    expect(valueOf(e, 'nfqlb_flow_matches_total', { flow: '\xff\xfe', target: 't' })).toBe(6);
    expect(valueOf(e, 'nfqlb_table_active_targets', { target: 'tshm-€' })).toBe(2);
  });

  test('counters rise by the right deltas and never go down', async () => {
    const fw = new FwmarkCounter();
    fw.add(1, 5);
    const flowA = { id: 'a' };
    source.queueList = [{ queueNum: 2, portid: 77, accepted: 100, dropped: 10 }];
    source.flowList = [
      { name: 'a', target: 't', matches: 50, instance: flowA },
      { name: 'b', target: 't', matches: 20 },
      { name: 'gone', target: 't', matches: 4 },
    ];
    source.targetList = [{ name: 't', activeTargets: 1, fwmarks: fw }];
    proc = [procEntry(2, 77, 1, 30, 3)];
    let e = await scrape(server);
    expect(valueOf(e, 'nfqlb_flow_matches_total', { flow: 'a', target: 't' })).toBe(50);

    source.queueList[0].accepted = 130;
    source.queueList[0].dropped = 11;
    source.reasonCounts[0] = 8;
    source.reasonCounts[0] += 4;
    // Flow a set again: a new Flow object whose count restarted and already passed the old one.
    source.flowList = [
      { name: 'a', target: 't', matches: 60, instance: { id: 'a2' } },
      // Flow b restarted without an identity: noticed because the count went down.
      { name: 'b', target: 't', matches: 3 },
      // Flow c is new; flow "gone" was deleted.
      { name: 'c', target: 'u', matches: 1 },
    ];
    fw.add(1, 2);
    fw.add(2, 9);
    source.control.inc('delete', 'ok');
    proc = [procEntry(2, 77, 0, 35, 3)];
    e = await scrape(server);

    expect(valueOf(e, 'nfqlb_packets_total', { queue: '2', verdict: 'accept' })).toBe(130);
    expect(valueOf(e, 'nfqlb_packets_total', { queue: '2', verdict: 'drop' })).toBe(11);
    expect(valueOf(e, 'nfqlb_decisions_total', { reason: 'target' })).toBe(12);
    expect(valueOf(e, 'nfqlb_flow_matches_total', { flow: 'a', target: 't' })).toBe(110);
    expect(valueOf(e, 'nfqlb_flow_matches_total', { flow: 'b', target: 't' })).toBe(23);
    expect(valueOf(e, 'nfqlb_flow_matches_total', { flow: 'c', target: 'u' })).toBe(1);
    // A deleted flow's counter stays (a counter must not vanish and return lower).
    expect(valueOf(e, 'nfqlb_flow_matches_total', { flow: 'gone', target: 't' })).toBe(4);
    expect(valueOf(e, 'nfqlb_flows')).toBe(3);
    expect(valueOf(e, 'nfqlb_target_packets_total', { target: 't', fwmark: '1' })).toBe(7);
    expect(valueOf(e, 'nfqlb_target_packets_total', { target: 't', fwmark: '2' })).toBe(9);
    expect(valueOf(e, 'nfqlb_queue_dropped_total', { queue: '2' })).toBe(35);
    expect(valueOf(e, 'nfqlb_queue_waiting', { queue: '2' })).toBe(0);
    expect(valueOf(e, 'nfqlb_control_requests_total', { action: 'delete', result: 'ok' })).toBe(1);

    // Same numbers again: no change at all.
    const again = await scrape(server);
    for (const name of ['nfqlb_packets_total', 'nfqlb_flow_matches_total', 'nfqlb_target_packets_total', 'nfqlb_queue_dropped_total']) {
      expect(seriesOf(again, name)).toEqual(seriesOf(e, name));
    }

    // The queue is re-bound (new portid): fresh kernel counters restart from 0.
    // The table is reopened: a new FwmarkCounter.
    source.queueList[0].portid = 78;
    proc = [procEntry(2, 78, 2, 4, 1)];
    const fw2 = new FwmarkCounter();
    fw2.add(1, 1);
    source.targetList = [{ name: 't', activeTargets: 0, fwmarks: fw2 }];
    e = await scrape(server);
    expect(valueOf(e, 'nfqlb_queue_dropped_total', { queue: '2' })).toBe(39);
    expect(valueOf(e, 'nfqlb_queue_user_dropped_total', { queue: '2' })).toBe(4);
    expect(valueOf(e, 'nfqlb_queue_waiting', { queue: '2' })).toBe(2);
    expect(valueOf(e, 'nfqlb_target_packets_total', { target: 't', fwmark: '1' })).toBe(8);
    expect(valueOf(e, 'nfqlb_target_packets_total', { target: 't', fwmark: '2' })).toBe(9);
    expect(valueOf(e, 'nfqlb_table_active_targets', { target: 't' })).toBe(0);

    // The queue's proc line vanishes: the gauge goes, the counters stay.
    proc = [];
    e = await scrape(server);
    expect(seriesOf(e, 'nfqlb_queue_waiting')).toHaveLength(0);
    expect(valueOf(e, 'nfqlb_queue_dropped_total', { queue: '2' })).toBe(39);
    // Tables closed: gauge series go.
    source.targetList = [];
    e = await scrape(server);
    expect(seriesOf(e, 'nfqlb_table_active_targets')).toHaveLength(0);
    expect(valueOf(e, 'nfqlb_target_packets_total', { target: 't', fwmark: '1' })).toBe(8);
  });

  test('histogram stays cumulative and consistent across scrapes', async () => {
    let e = await scrape(server);
    expect(seriesOf(e, 'nfqlb_batch_size_bucket').map((b) => b.value)).toEqual(new Array(12).fill(0));
    expect(valueOf(e, 'nfqlb_batch_size_count')).toBe(0);
    expect(valueOf(e, 'nfqlb_batch_size_sum')).toBe(0);

    const sizes: number[] = [];
    for (let i = 0; i < 500; i++) sizes.push((i * 37) % 1500);
    for (const s of sizes.slice(0, 200)) source.batchSizes.observe(s);
    await scrape(server);
    for (const s of sizes.slice(200)) source.batchSizes.observe(s);
    e = await scrape(server);
    const buckets = seriesOf(e, 'nfqlb_batch_size_bucket');
    BATCH_SIZE_BUCKETS.forEach((le, i) => expect(buckets[i].value).toBe(sizes.filter((s) => s <= le).length));
    expect(buckets[buckets.length - 1]).toEqual({ name: 'nfqlb_batch_size_bucket', labels: { le: '+Inf' }, value: 500 });
    for (let i = 1; i < buckets.length; i++) expect(buckets[i].value).toBeGreaterThanOrEqual(buckets[i - 1].value);
    expect(valueOf(e, 'nfqlb_batch_size_count')).toBe(500);
    expect(valueOf(e, 'nfqlb_batch_size_sum')).toBe(sizes.reduce((a, b) => a + b, 0));

    // A replaced histogram (the daemon restarted its pipeline) adds on, never subtracts.
    source.batchSizes = new BatchSizeHistogram();
    source.batchSizes.observe(3);
    e = await scrape(server);
    expect(valueOf(e, 'nfqlb_batch_size_count')).toBe(501);
    expect(valueOf(e, 'nfqlb_batch_size_bucket', { le: '4' })).toBe(sizes.filter((s) => s <= 4).length + 1);
  });

  test('reads the proc table once per scrape', async () => {
    let reads = 0;
    await server.close();
    server = await startMetricsServer('127.0.0.1:0', source, undefined, {
      readQueueProc: () => {
        reads++;
        return [procEntry(0, 1, 0, 0, 0)];
      },
    });
    source.queueList = [{ queueNum: 0, portid: 1, accepted: 0, dropped: 0 }];
    await scrape(server);
    expect(reads).toBe(1);
    await scrape(server);
    expect(reads).toBe(2);
  });

  test('a failing proc read costs the queue lines, not the scrape', async () => {
    const warnings: string[] = [];
    const log: MetricsLog = { info: () => {}, warn: (_o, msg) => warnings.push(msg) };
    await server.close();
    server = await startMetricsServer('127.0.0.1:0', source, log, {
      readQueueProc: () => {
        throw new NfqlbError('cannot read proc', 'NFQLB_ERR_QUEUE_PROC');
      },
    });
    source.queueList = [{ queueNum: 0, portid: 1, accepted: 1, dropped: 0 }];
    const e = await scrape(server);
    expect(valueOf(e, 'nfqlb_packets_total', { queue: '0', verdict: 'accept' })).toBe(1);
    expect(seriesOf(e, 'nfqlb_queue_waiting')).toHaveLength(0);
    await scrape(server);
    expect(warnings).toHaveLength(1); // once per distinct error, not per scrape
  });

  test('a source that throws gives 500, and the next scrape works', async () => {
    source.throwOnFlows = true;
    const r = await request(server.port, '/metrics');
    expect(r.status).toBe(500);
    source.throwOnFlows = false;
    await scrape(server);
  });

  test('/healthz, /readyz, 404, 405, HEAD and query strings', async () => {
    expect(await request(server.port, '/healthz')).toMatchObject({ status: 200, body: 'ok\n' });
    expect((await request(server.port, '/readyz')).status).toBe(503);
    source.isReady = true;
    expect(await request(server.port, '/readyz')).toMatchObject({ status: 200, body: 'ready\n' });
    source.isReady = false;
    expect((await request(server.port, '/readyz?verbose=1')).status).toBe(503);
    expect((await request(server.port, '/')).status).toBe(404);
    expect((await request(server.port, '/metricsx')).status).toBe(404);
    expect((await request(server.port, '/nope', 'POST')).status).toBe(404);
    for (const method of ['POST', 'PUT', 'DELETE']) {
      const r = await request(server.port, '/metrics', method);
      expect(r.status).toBe(405);
      expect(r.headers.allow).toBe('GET, HEAD');
    }
    expect((await request(server.port, '/healthz', 'POST')).status).toBe(405);
    const head = await request(server.port, '/metrics', 'HEAD');
    expect(head.status).toBe(200);
    expect(head.body).toBe('');
    expect((await request(server.port, '/metrics?name[]=x')).status).toBe(200);
  });

  test('EADDRINUSE gives NFQLB_ERR_METRICS_LISTEN saying what to do', async () => {
    const err = await startMetricsServer(`127.0.0.1:${server.port}`, source).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NfqlbError);
    expect(err).toMatchObject({ code: 'NFQLB_ERR_METRICS_LISTEN', errnoName: 'EADDRINUSE' });
    expect((err as Error).message).toMatch(/--metrics_address/);
    expect((err as Error).message).toMatch(/off/);
    // The first server is unharmed.
    expect((await request(server.port, '/healthz')).status).toBe(200);
  });

  test('close() is idempotent and frees the port', async () => {
    const port = server.port;
    await Promise.all([server.close(), server.close()]);
    server = await startMetricsServer(`127.0.0.1:${port}`, source);
    expect(server.port).toBe(port);
  });

  test('a scrape with 1,000 flows and 1,000 fwmark series has every series, with the values of that scrape', async () => {
    for (let i = 0; i < 1000; i++) {
      source.flowList.push({ name: `tshm-stream${i % 10}-flow${i}`, target: `tshm-stream${i % 10}`, matches: i * 3, instance: i });
    }
    for (let t = 0; t < 10; t++) {
      const fw = new FwmarkCounter();
      for (let k = 0; k < 100; k++) fw.add(t * 100 + k, k);
      source.targetList.push({ name: `tshm-stream${t}`, activeTargets: 100, fwmarks: fw });
    }
    source.queueList = [0, 1, 2, 3].map((q) => ({ queueNum: q, portid: 10 + q, accepted: 1e6, dropped: 10 }));
    proc = [0, 1, 2, 3].map((q) => procEntry(q, 10 + q, 0, 0, 0));
    // How long a scrape takes is the bench's to report (timings are not asserted in tests).
    let e: Exposition | undefined;
    for (let i = 0; i < 10; i++) {
      for (const f of source.flowList) f.matches++;
      const r = await request(server.port, '/metrics');
      expect(r.status).toBe(200);
      if (i === 9) e = parseExposition(r.body);
    }
    expect(seriesOf(e!, 'nfqlb_flow_matches_total')).toHaveLength(1000);
    expect(valueOf(e!, 'nfqlb_flow_matches_total', { flow: 'tshm-stream7-flow997', target: 'tshm-stream7' })).toBe(997 * 3 + 10);
    expect(seriesOf(e!, 'nfqlb_target_packets_total')).toHaveLength(1000);
  });
});

describe('addresses', () => {
  test('parses HOST:PORT and [IPv6]:PORT, rejects the rest with NFQLB_ERR_METRICS_ADDRESS', () => {
    expect(parseMetricsAddress('0.0.0.0:9657')).toEqual({ host: '0.0.0.0', port: 9657 });
    expect(parseMetricsAddress('[::]:9657')).toEqual({ host: '::', port: 9657 });
    expect(parseMetricsAddress('[fe80::1%eth0]:1')).toEqual({ host: 'fe80::1%eth0', port: 1 });
    expect(parseMetricsAddress('localhost:0')).toEqual({ host: 'localhost', port: 0 });
    for (const bad of ['off', '9657', ':9657', '::1:9657', '[::1]', '[::1]:', 'host:65536', 'host:port', '1.2.3.4:9657x', '']) {
      expect(() => parseMetricsAddress(bad)).toThrow(expect.objectContaining({ code: 'NFQLB_ERR_METRICS_ADDRESS' }));
    }
  });

  test('listens on IPv6 [::1]:0 when the host has IPv6', async () => {
    const source = new FakeSource();
    let s: MetricsServer;
    try {
      s = await startMetricsServer('[::1]:0', source);
    } catch (err) {
      // Containers without IPv6 cannot bind ::1; that is the environment, not the code.
      expect(err).toMatchObject({ code: 'NFQLB_ERR_METRICS_LISTEN', errnoName: 'EADDRNOTAVAIL' });
      return;
    }
    expect(s.address).toBe(`[::1]:${s.port}`);
    const body = await new Promise<number>((resolve, reject) => {
      http.get({ host: '::1', port: s.port, path: '/healthz', agent: false }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      }).on('error', reject);
    });
    expect(body).toBe(200);
    await s.close();
  });

  test('a pino logger fits MetricsLog', async () => {
    const lines: string[] = [];
    const logger = createLogger(6, { write: (l: string) => lines.push(l) });
    const log: MetricsLog = logger;
    const s = await startMetricsServer('127.0.0.1:0', new FakeSource(), log);
    await s.close();
    expect(lines.some((l) => l.includes('metrics: listening'))).toBe(true);
  });
});
