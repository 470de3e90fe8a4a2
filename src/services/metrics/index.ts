/**
 * Prometheus metrics of the daemon, by concern: what the daemon provides
 * (source.ts), counters that never go down and their label values
 * (totals.ts), the families of /metrics as a table (families.ts) built into
 * a private prom-client Registry (registry.ts; the pre-aggregated batch-size
 * histogram in histogram.ts), and the HTTP server (server.ts) with its
 * OpenMetrics and gzip negotiation (exposition.ts). This module is what the
 * rest of the tree imports.
 */
export * from './source';
export { labelText } from './totals';
export { createMetricsRegistry } from './registry';
export { acceptsGzip, openMetricsText, OPENMETRICS_CONTENT_TYPE, wantsOpenMetrics } from './exposition';
export { DEFAULT_METRICS_ADDRESS, parseMetricsAddress, startMetricsServer, type MetricsServer } from './server';
