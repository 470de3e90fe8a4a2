/**
 * Metrics hygiene (src/services/metrics.ts): series of deleted flows and released
 * tables keep their last value for the retention and at least one scrape,
 * then go; nfqlb_build_info; one unit per family (the split verdict and
 * fragment store families, old names still there); no_target per table; the
 * default metrics without the gauges promtool rejects; OpenMetrics and gzip
 * when the client asks, plain text otherwise; `promtool check metrics` clean
 * on a full scrape (when promtool is installed).
 */
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { BatchSizeHistogram, FwmarkCounter, LabeledCounter } from '../../../../src/base/counters';
import {
  acceptsGzip, createMetricsRegistry, openMetricsText, SERIES_RETENTION_MS, startMetricsServer, wantsOpenMetrics,
  type ControlRequestCount, type FlowCount, type MetricsServer, type MetricsSource, type QueueCounts, type QueueErrorCount,
  type ReasonCount, type TargetCounts,
} from '../../../../src/services/metrics';
import { NFQLB_COMPAT_VERSION, PACKAGE_VERSION } from '../../../../src/base/version';
import { promtool, promtoolUnavailable } from '../../../helpers/promtool';
import { describeUnless } from '../../../helpers/skip';

class Source implements MetricsSource {
  flowList: FlowCount[] = [];
  targetList: TargetCounts[] = [];
  queueErrorList: QueueErrorCount[] = [];
  batchSizes = new BatchSizeHistogram();
  control = new LabeledCounter();
  store: { slots: number; inUse: number } | null = null;
  ready(): boolean {
    return true;
  }
  queues(): readonly QueueCounts[] {
    return [];
  }
  reasons(): readonly ReasonCount[] {
    return [{ name: 'target', count: 1 }];
  }
  flows(): readonly FlowCount[] {
    return this.flowList;
  }
  targets(): readonly TargetCounts[] {
    return this.targetList;
  }
  controlRequests(): readonly ControlRequestCount[] {
    return this.control.entries();
  }
  queueErrors(): readonly QueueErrorCount[] {
    return this.queueErrorList;
  }
  fragmentStore(): { slots: number; inUse: number; events: { event: string; count: number }[] } | null {
    return this.store === null ? null : { ...this.store, events: [{ event: 'stored', count: 3 }] };
  }
}

/** The value of one sample line `name{labels} value` in a text scrape, or undefined. */
function sample(text: string, name: string, labels = ''): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${name}${labels === '' ? ' ' : `{${labels}} `}`));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
}

describe('series of things that went away', () => {
  it('a deleted flow keeps its last value for the retention and one scrape, then goes; the others stay', async () => {
    let now = 1_000_000;
    const src = new Source();
    const a = { name: 'a', target: 't', matches: 5 };
    const b = { name: 'b', target: 't', matches: 7 };
    src.flowList = [a, b];
    const reg = createMetricsRegistry(src, { now: () => now, seriesRetentionMs: 10_000 });
    const flowA = 'nfqlb_flow_matches_total';
    expect(sample(await reg.metrics(), flowA, 'flow="b",target="t"')).toBe(7);
    src.flowList = [a]; // b deleted
    now += 1000;
    expect(sample(await reg.metrics(), flowA, 'flow="b",target="t"')).toBe(7);
    now += 10_000; // the retention since it was first missed, and it was shown since
    const gone = await reg.metrics();
    expect(sample(gone, flowA, 'flow="b",target="t"')).toBeUndefined();
    expect(sample(gone, flowA, 'flow="a",target="t"')).toBe(5);
    // After 50 set/delete cycles only the live flow is left.
    for (let i = 0; i < 50; i++) {
      src.flowList = [a, { name: `c${i}`, target: 't', matches: i }];
      await reg.metrics();
      src.flowList = [a];
      now += 20_000;
      await reg.metrics();
    }
    now += 20_000;
    const text = await reg.metrics();
    expect(text.split('\n').filter((l) => l.startsWith(`${flowA}{`))).toEqual(['nfqlb_flow_matches_total{flow="a",target="t"} 5']);
  });

  it('a series that went away is shown at least once even when the next scrape comes after the retention', async () => {
    let now = 0;
    const src = new Source();
    src.flowList = [{ name: 'x', target: 't', matches: 3 }];
    const reg = createMetricsRegistry(src, { now: () => now, seriesRetentionMs: 1000 });
    await reg.metrics();
    src.flowList = [];
    now += 120_000;
    expect(sample(await reg.metrics(), 'nfqlb_flow_matches_total', 'flow="x",target="t"')).toBe(3);
    now += 120_000;
    expect(sample(await reg.metrics(), 'nfqlb_flow_matches_total', 'flow="x",target="t"')).toBeUndefined();
  });

  it('a released table loses its fwmark, no_target and active-target series; one that comes back starts anew', async () => {
    let now = 0;
    const src = new Source();
    const fw = new FwmarkCounter();
    fw.add(101, 4);
    src.targetList = [{ name: 'tshm-a', activeTargets: 0, fwmarks: fw, noTarget: 9 }];
    const reg = createMetricsRegistry(src, { now: () => now });
    const first = await reg.metrics();
    expect(sample(first, 'nfqlb_table_no_target_total', 'target="tshm-a"')).toBe(9);
    expect(sample(first, 'nfqlb_target_packets_total', 'target="tshm-a",fwmark="101"')).toBe(4);
    expect(sample(first, 'nfqlb_table_active_targets', 'target="tshm-a"')).toBe(0);
    src.targetList = [];
    now += 1;
    const after = await reg.metrics();
    expect(sample(after, 'nfqlb_table_no_target_total', 'target="tshm-a"')).toBe(9);
    expect(sample(after, 'nfqlb_table_active_targets', 'target="tshm-a"')).toBeUndefined(); // a gauge is a reading of now
    now += SERIES_RETENTION_MS;
    const later = await reg.metrics();
    expect(sample(later, 'nfqlb_table_no_target_total', 'target="tshm-a"')).toBeUndefined();
    expect(sample(later, 'nfqlb_target_packets_total', 'target="tshm-a",fwmark="101"')).toBeUndefined();
    const fw2 = new FwmarkCounter();
    fw2.add(101, 1);
    src.targetList = [{ name: 'tshm-a', activeTargets: 1, fwmarks: fw2, noTarget: 0 }];
    const back = await reg.metrics();
    expect(sample(back, 'nfqlb_target_packets_total', 'target="tshm-a",fwmark="101"')).toBe(1);
  });
});

describe('families', () => {
  it('exports nfqlb_build_info with the version, the nfqlb release and Node.js', async () => {
    const text = await createMetricsRegistry(new Source()).metrics();
    expect(sample(text, 'nfqlb_build_info', `version="${PACKAGE_VERSION}",nfqlb_compat="${NFQLB_COMPAT_VERSION}",node="${process.version}"`)).toBe(1);
    expect(text).toMatch(/^# TYPE nfqlb_build_info gauge$/m);
  });

  it('exports nfqlb_ready as /readyz answers (0 when ready() throws)', async () => {
    const src = new Source();
    let state: boolean | Error = true;
    src.ready = (): boolean => {
      if (state instanceof Error) throw state;
      return state;
    };
    const reg = createMetricsRegistry(src);
    expect(sample(await reg.metrics(), 'nfqlb_ready')).toBe(1);
    state = false;
    expect(sample(await reg.metrics(), 'nfqlb_ready')).toBe(0);
    state = new Error('boom');
    expect(sample(await reg.metrics(), 'nfqlb_ready')).toBe(0);
  });

  it('exports the control series alerts watch at 0 from the start, so the first failure is an increase', async () => {
    const src = new Source();
    const reg = createMetricsRegistry(src);
    const first = await reg.metrics();
    expect(sample(first, 'nfqlb_control_requests_total', 'action="set",result="fail"')).toBe(0);
    expect(sample(first, 'nfqlb_control_requests_total', 'action="delete",result="ok"')).toBe(0);
    expect(sample(first, 'nfqlb_control_refused_total', 'reason="invalid_param"')).toBe(0);
    src.control.inc('set', 'fail');
    const next = await reg.metrics();
    expect(sample(next, 'nfqlb_control_requests_total', 'action="set",result="fail"')).toBe(1);
    src.control.inc('set', 'fail');
    expect(sample(await reg.metrics(), 'nfqlb_control_requests_total', 'action="set",result="fail"')).toBe(2);
  });

  it('splits verdict errors by unit and keeps the old family one release', async () => {
    const src = new Source();
    src.queueErrorList = [
      { queueNum: 0, portid: 1, reason: 'send', count: 2 },
      { queueNum: 0, portid: 1, reason: 'unsent', count: 64 },
      { queueNum: 0, portid: 1, reason: 'kernel', count: 1 },
      { queueNum: 0, portid: 1, reason: 'enobufs', count: 5 },
    ];
    const text = await createMetricsRegistry(src).metrics();
    expect(sample(text, 'nfqlb_verdict_send_errors_total', 'queue="0"')).toBe(2);
    expect(sample(text, 'nfqlb_verdict_unsent_packets_total', 'queue="0"')).toBe(64);
    expect(sample(text, 'nfqlb_verdict_refused_total', 'queue="0"')).toBe(1);
    expect(sample(text, 'nfqlb_queue_errors_total', 'queue="0",reason="enobufs"')).toBe(5);
    expect(sample(text, 'nfqlb_verdict_errors_total', 'queue="0",reason="unsent"')).toBe(64);
    expect(text).toMatch(/^# HELP nfqlb_verdict_errors_total DEPRECATED/m);
  });

  it('splits the fragment store slots into in_use and max (old family kept), all absent without a store', async () => {
    const src = new Source();
    const reg = createMetricsRegistry(src);
    expect(await reg.metrics()).not.toMatch(/^nfqlb_fragment_store_slots/m);
    src.store = { slots: 128, inUse: 3 };
    const text = await reg.metrics();
    expect(sample(text, 'nfqlb_fragment_store_slots_in_use')).toBe(3);
    expect(sample(text, 'nfqlb_fragment_store_slots_max')).toBe(128);
    expect(sample(text, 'nfqlb_fragment_store_slots', 'state="max"')).toBe(128);
  });

  it('has no default gauge named like a counter', async () => {
    const text = await createMetricsRegistry(new Source()).metrics();
    expect(text).not.toMatch(/^# TYPE nodejs_active_\w+_total gauge$/m);
    expect(text).toMatch(/^# TYPE nodejs_active_handles gauge$/m);
    expect(text).toMatch(/^process_cpu_user_seconds_total /m);
  });
});

describe('content negotiation', () => {
  it('reads Accept and Accept-Encoding as Prometheus sends them', () => {
    expect(wantsOpenMetrics('application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1')).toBe(true);
    expect(wantsOpenMetrics('text/plain;version=0.0.4;q=1,*/*;q=0.1')).toBe(false);
    expect(wantsOpenMetrics('application/openmetrics-text;q=0')).toBe(false);
    expect(wantsOpenMetrics(undefined)).toBe(false);
    expect(acceptsGzip('gzip')).toBe(true);
    expect(acceptsGzip('deflate, gzip;q=0.5')).toBe(true);
    expect(acceptsGzip('gzip;q=0, identity')).toBe(false);
    expect(acceptsGzip(undefined)).toBe(false);
  });

  let server: MetricsServer;
  const src = new Source();
  beforeAll(async () => {
    src.flowList = [{ name: 'f "1"', target: 't', matches: 2 }];
    server = await startMetricsServer('127.0.0.1:0', src);
  });
  afterAll(() => server.close());

  function get(headers: Record<string, string>): Promise<{ headers: http.IncomingHttpHeaders; body: Buffer }> {
    return new Promise((resolve, reject) => {
      http.get({ host: '127.0.0.1', port: server.port, path: '/metrics', headers, agent: false }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ headers: res.headers, body: Buffer.concat(chunks) }));
      }).on('error', reject);
    });
  }

  it('answers OpenMetrics when asked, counters as families without _total, ending # EOF', async () => {
    const r = await get({ Accept: 'application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5' });
    expect(r.headers['content-type']).toBe('application/openmetrics-text; version=1.0.0; charset=utf-8');
    const text = r.body.toString('utf8');
    expect(text).toMatch(/^# TYPE nfqlb_flow_matches counter$/m);
    expect(text).toContain('nfqlb_flow_matches_total{flow="f \\"1\\"",target="t"} 2\n');
    expect(text).toMatch(/^nfqlb_batch_size_bucket\{le="\+Inf"\} 0$/m);
    expect(text.endsWith('# EOF\n')).toBe(true);
    // The plain scrape after it still has its _total names (prom-client's own OpenMetrics would rename them).
    const plain = (await get({})).body.toString('utf8');
    expect(plain).toMatch(/^# TYPE nfqlb_flow_matches_total counter$/m);
    expect(plain).not.toContain('# EOF');
  });

  it('gzips when the client accepts it, and only then', async () => {
    const z = await get({ 'Accept-Encoding': 'gzip' });
    expect(z.headers['content-encoding']).toBe('gzip');
    expect(Number(z.headers['content-length'])).toBe(z.body.length);
    expect(zlib.gunzipSync(z.body).toString('utf8')).toMatch(/^nfqlb_flow_matches_total\{flow="f \\"1\\"",target="t"\} 2$/m);
    const plain = await get({});
    expect(plain.headers['content-encoding']).toBeUndefined();
    expect(plain.body.toString('utf8')).toMatch(/^nfqlb_build_info\{/m);
  });
});

describeUnless(promtoolUnavailable())('promtool', () => {
  /** A source with every optional family present, so the lint sees them all. */
  function fullSource(): Source {
    const src = new Source();
    const fw = new FwmarkCounter();
    fw.add(5001, 10);
    src.flowList = [{ name: 'tshm-s-f', target: 'tshm-s', matches: 10 }];
    src.targetList = [{ name: 'tshm-s', activeTargets: 1, fwmarks: fw, noTarget: 1 }];
    src.queueErrorList = [{ queueNum: 0, portid: 1, reason: 'send', count: 1 }, { queueNum: 0, portid: 1, reason: 'recv', count: 1 }];
    src.store = { slots: 16, inUse: 1 };
    src.control.inc('set', 'ok');
    src.batchSizes.observe(3);
    return src;
  }

  it('check metrics finds nothing in a full scrape', async () => {
    const text = await createMetricsRegistry(fullSource()).metrics();
    const r = promtool(['check', 'metrics'], text);
    expect(r.stdout + r.stderr).toBe('');
    expect(r.status).toBe(0);
  });

  it('reads the OpenMetrics scrape (tsdb create-blocks-from openmetrics, which parses it strictly)', async () => {
    const text = await openMetricsText(createMetricsRegistry(fullSource()));
    // create-blocks-from wants a timestamp on every sample.
    const stamped = text.replace(/^([^#\n].*)$/gm, '$1 1700000000');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nfqlb-om-'));
    try {
      fs.writeFileSync(path.join(dir, 'scrape.om'), stamped);
      const r = promtool(['tsdb', 'create-blocks-from', 'openmetrics', path.join(dir, 'scrape.om'), path.join(dir, 'data')]);
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
