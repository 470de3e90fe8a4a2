/**
 * What a scraper asked for and the text it gets: the Accept and
 * Accept-Encoding negotiation of /metrics, and the registry in OpenMetrics 1.0
 * text (the Prometheus text format is prom-client's own registry.metrics()).
 */
import type { Registry } from 'prom-client';

/** The OpenMetrics 1.0 media type (what Prometheus asks for first when it may). */
export const OPENMETRICS_CONTENT_TYPE = 'application/openmetrics-text; version=1.0.0; charset=utf-8';

/** Whether an Accept header asks for OpenMetrics (any q > 0). */
export function wantsOpenMetrics(accept: string | undefined): boolean {
  if (accept === undefined) return false;
  for (const part of accept.split(',')) {
    const [type, ...params] = part.split(';').map((p) => p.trim().toLowerCase());
    if (type !== 'application/openmetrics-text') continue;
    const q = params.find((p) => p.startsWith('q='));
    if (q === undefined || Number(q.slice(2)) > 0) return true;
  }
  return false;
}

/** Whether an Accept-Encoding header allows gzip (any q > 0). */
export function acceptsGzip(acceptEncoding: string | undefined): boolean {
  if (acceptEncoding === undefined) return false;
  for (const part of acceptEncoding.split(',')) {
    const [coding, ...params] = part.split(';').map((p) => p.trim().toLowerCase());
    if (coding !== 'gzip' && coding !== 'x-gzip') continue;
    const q = params.find((p) => p.startsWith('q='));
    if (q === undefined || Number(q.slice(2)) > 0) return true;
  }
  return false;
}

function omEscapeLabel(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

function omValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}

/**
 * The registry in OpenMetrics 1.0 text. Written here from getMetricsAsJSON()
 * because prom-client's own OpenMetrics output needs a registry created for it
 * and renames the counters it formats (it strips `_total` from each metric
 * object for good), which would break the next text-format scrape. Counter
 * families are named without `_total`, their samples with it, as the format
 * requires; the text ends with `# EOF`.
 */
export async function openMetricsText(registry: Registry): Promise<string> {
  type Family = { name: string; help: string; type: string; values: { value: number; labels: Record<string, string | number | undefined>; metricName?: string }[] };
  const families = (await registry.getMetricsAsJSON()) as unknown as Family[];
  let out = '';
  for (const m of families) {
    const counter = m.type === 'counter';
    const family = counter ? m.name.replace(/_total$/, '') : m.name;
    const type = m.type === 'histogram' || m.type === 'gauge' || counter || m.type === 'summary' ? m.type : 'unknown';
    out += `# TYPE ${family} ${type}\n# HELP ${family} ${m.help.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"')}\n`;
    for (const v of m.values) {
      const sample = v.metricName ?? (counter ? `${family}_total` : m.name);
      const labels = Object.entries(v.labels)
        .filter(([, lv]) => lv !== undefined)
        .map(([k, lv]) => `${k}="${omEscapeLabel(String(lv))}"`)
        .join(',');
      out += `${sample}${labels === '' ? '' : `{${labels}}`} ${omValue(v.value)}\n`;
    }
  }
  return `${out}# EOF\n`;
}
