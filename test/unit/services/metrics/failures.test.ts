/**
 * The failure metrics: verdict and queue errors per queue and reason (a
 * re-bound queue restarts its count without the counter going down), refused
 * control requests per reason, table faults, flows-file write errors. A
 * source without these methods exports the metrics with no series.
 */
import { BatchSizeHistogram, KeyCounter } from '../../../../src/base/counters';
import { createMetricsRegistry, type MetricsSource, type QueueErrorCount } from '../../../../src/services/metrics';

function source(extra: Partial<MetricsSource> = {}): MetricsSource {
  return {
    ready: () => true,
    queues: () => [],
    reasons: () => [],
    flows: () => [],
    targets: () => [],
    batchSizes: new BatchSizeHistogram(),
    controlRequests: () => [],
    ...extra,
  };
}

function value(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

describe('failure metrics', () => {
  it('splits queue errors into verdict errors and queue errors, by queue and reason', async () => {
    let errors: QueueErrorCount[] = [
      { queueNum: 0, portid: 10, reason: 'send', count: 3 },
      { queueNum: 0, portid: 10, reason: 'kernel', count: 1 },
      { queueNum: 0, portid: 10, reason: 'enobufs', count: 7 },
      { queueNum: 1, portid: 11, reason: 'parse', count: 2 },
    ];
    const refused = new KeyCounter();
    refused.inc('timeout', 4);
    refused.inc('invalid_param');
    const registry = createMetricsRegistry(
      source({
        queueErrors: () => errors,
        controlRefused: () => refused.entries(),
        tableFaults: () => [{ target: 'tshm-a', fault: 'truncated', count: 2 }],
        flowsFileErrors: () => 5,
      }),
      { readQueueProc: () => [] },
    );
    let text = await registry.metrics();
    expect(value(text, 'nfqlb_verdict_errors_total{queue="0",reason="send"}')).toBe(3);
    expect(value(text, 'nfqlb_verdict_errors_total{queue="0",reason="kernel"}')).toBe(1);
    expect(value(text, 'nfqlb_verdict_errors_total{queue="0",reason="enobufs"}')).toBeUndefined();
    expect(value(text, 'nfqlb_queue_errors_total{queue="0",reason="enobufs"}')).toBe(7);
    expect(value(text, 'nfqlb_queue_errors_total{queue="1",reason="parse"}')).toBe(2);
    expect(value(text, 'nfqlb_control_refused_total{reason="timeout"}')).toBe(4);
    expect(value(text, 'nfqlb_control_refused_total{reason="invalid_param"}')).toBe(1);
    expect(value(text, 'nfqlb_table_faults_total{target="tshm-a",fault="truncated"}')).toBe(2);
    expect(value(text, 'nfqlb_flows_file_errors_total')).toBe(5);

    // Queue 0 re-bound (new portid, counts from 0): the exported total keeps growing.
    errors = [{ queueNum: 0, portid: 20, reason: 'send', count: 2 }];
    text = await registry.metrics();
    expect(value(text, 'nfqlb_verdict_errors_total{queue="0",reason="send"}')).toBe(5);
  });

  it('exports no series when the source has no failure methods', async () => {
    const text = await createMetricsRegistry(source(), { readQueueProc: () => [] }).metrics();
    expect(text).toContain('# TYPE nfqlb_verdict_errors_total counter');
    expect(text).not.toMatch(/^nfqlb_verdict_errors_total\{/m);
    expect(value(text, 'nfqlb_flows_file_errors_total')).toBe(0);
  });
});
