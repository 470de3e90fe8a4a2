/**
 * The registry behind /metrics: one private prom-client Registry (never the
 * global one, so tests and embedders can run several side by side) holding
 * every family of METRIC_FAMILIES (families.ts) plus prom-client's default
 * process and Node.js metrics.
 *
 * Nothing here runs per packet. At scrape time prom-client calls each
 * metric's `collect()`; those read the daemon's numbers through MetricsSource
 * (one ScrapeReadings per registry) and fold them into prom-client, counters
 * through MonotonicTotals so that they never go down.
 */
import { collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client';
import { readQueueProc } from '../../addon/queue';
import { PreaggregatedHistogram } from './histogram';
import { METRIC_FAMILIES, type MetricFamily } from './families';
import { ScrapeReadings } from './readings';
import { SERIES_RETENTION_MS, type MetricsOptions, type MetricsSource } from './source';
import { labelKey, MonotonicTotals, type Labels, type Retention } from './totals';

/**
 * An unlabelled gauge without a sample in a scrape where its family read
 * nothing (prom-client's unlabelled Gauge always shows one, 0 after reset()):
 * a family that does not apply (no --tun) is absent rather than a misleading 0.
 */
class OptionalGauge extends Gauge {
  private shown = false;

  markShown(): void {
    this.shown = true;
  }

  override async get(): Promise<Awaited<ReturnType<Gauge['get']>>> {
    this.shown = false;
    const family = await super.get();
    return this.shown ? family : { ...family, values: [] };
  }
}

/** Adds one family of the table to `registry`. */
function register(registry: Registry, family: MetricFamily, readings: ScrapeReadings, retention: Retention): void {
  const registers = [registry];
  const { name, help } = family;
  switch (family.kind) {
    case 'counter': {
      const labelNames = family.labelNames ?? [];
      const totals = new MonotonicTotals<string>(retention);
      const count = (labels: Labels<string>, value: number, instance?: unknown): void => {
        totals.update(labelKey(...labelNames.map((l) => labels[l])), labels, value, instance);
      };
      const counter: Counter<string> = new Counter({
        name,
        help,
        labelNames,
        registers,
        collect() {
          if (family.read(readings, count) === false) return;
          for (const labels of family.seeded ?? []) totals.seed(labelKey(...labelNames.map((l) => labels[l])), labels);
          totals.writeTo(counter);
        },
      });
      return;
    }
    case 'gauge': {
      const labelNames = family.labelNames ?? [];
      if (family.optional === true) {
        const gauge: OptionalGauge = new OptionalGauge({
          name,
          help,
          registers,
          collect() {
            family.read(readings, (_labels, value) => {
              gauge.set(value);
              gauge.markShown();
            });
          },
        });
        return;
      }
      const gauge: Gauge<string> = new Gauge({
        name,
        help,
        labelNames,
        registers,
        collect() {
          // A labelled gauge is a reading of now: forget the label sets not read.
          if (labelNames.length > 0) gauge.reset();
          family.read(readings, (labels, value) => gauge.set(labels, value));
        },
      });
      return;
    }
    case 'histogram':
      new PreaggregatedHistogram(name, help, registry, () => family.read(readings));
      return;
  }
}

/** Gauges of collectDefaultMetrics() named like counters, which fail `promtool check metrics`; each is the sum of its labelled sibling. */
const REJECTED_DEFAULT_METRICS = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'];

/**
 * Builds a fresh Registry with every nfqlb metric plus prom-client's default
 * process and Node.js metrics, all reading `source` at scrape time
 * (`await registry.metrics()`). Exported for tests and embedders;
 * startMetricsServer() uses it. Note: collectDefaultMetrics() starts an event
 * loop delay monitor that lives as long as the process (prom-client has no
 * way to stop it); call this once per process in production.
 */
export function createMetricsRegistry(source: MetricsSource, options: MetricsOptions = {}): Registry {
  const registry = new Registry();
  const readings = new ScrapeReadings(source, options.readQueueProc ?? readQueueProc, options.log);
  const retention: Retention = { ms: options.seriesRetentionMs ?? SERIES_RETENTION_MS, now: options.now ?? Date.now };
  for (const family of METRIC_FAMILIES) register(registry, family, readings, retention);
  collectDefaultMetrics({ register: registry });
  for (const name of REJECTED_DEFAULT_METRICS) registry.removeSingleMetric(name);
  return registry;
}
