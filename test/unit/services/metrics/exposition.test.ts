/**
 * Negotiation of /metrics (Accept, Accept-Encoding with q-values) and the
 * OpenMetrics text: counter families without `_total`, samples with it,
 * escaped help and labels, `# EOF` at the end, and the Prometheus text of the
 * same registry left as it was.
 */
import { Counter, Gauge, Registry } from 'prom-client';
import { acceptsGzip, openMetricsText, wantsOpenMetrics } from '../../../../src/services/metrics/exposition';

describe('negotiation', () => {
  it('takes OpenMetrics when asked for with q > 0', () => {
    expect(wantsOpenMetrics(undefined)).toBe(false);
    expect(wantsOpenMetrics('text/plain')).toBe(false);
    expect(wantsOpenMetrics('application/openmetrics-text;version=1.0.0;q=0.5,text/plain;q=0.4')).toBe(true);
    expect(wantsOpenMetrics('Application/OpenMetrics-Text; q=0')).toBe(false);
  });

  it('takes gzip (or x-gzip) when allowed with q > 0', () => {
    expect(acceptsGzip(undefined)).toBe(false);
    expect(acceptsGzip('deflate, br')).toBe(false);
    expect(acceptsGzip('gzip')).toBe(true);
    expect(acceptsGzip('br;q=1, x-gzip;q=0.1')).toBe(true);
    expect(acceptsGzip('gzip;q=0')).toBe(false);
  });
});

describe('openMetricsText', () => {
  it('names counter families without _total and their samples with it, ends with # EOF', async () => {
    const registry = new Registry();
    new Counter({ name: 'x_events_total', help: 'a "help"\nline', labelNames: ['k'], registers: [registry] }).inc({ k: 'a"b' }, 2);
    new Gauge({ name: 'x_level', help: 'level', registers: [registry] }).set(Infinity);
    const text = await openMetricsText(registry);
    expect(text).toBe(
      '# TYPE x_events counter\n# HELP x_events a \\"help\\"\\nline\nx_events_total{k="a\\"b"} 2\n' +
        '# TYPE x_level gauge\n# HELP x_level level\nx_level +Inf\n# EOF\n',
    );
    // The registry itself is untouched: its own text still names the counter with _total.
    expect(await registry.metrics()).toContain('# TYPE x_events_total counter');
  });
});
