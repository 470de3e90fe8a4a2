#!/usr/bin/env node
'use strict';
// Writes deploy/grafana/nfqlb-dashboard.json, the Grafana dashboard of
// nfqlb-ts (docs/operations.md), from the panel list below: one place for the
// PromQL, which test/unit/deploy.test.ts checks against a recorded scrape.
//   node scripts/gen-dashboard.js          write it
//   node scripts/gen-dashboard.js --check  exit 1 if it is stale
const fs = require('node:fs');
const path = require('node:path');

const outFile = path.join(__dirname, '..', 'deploy', 'grafana', 'nfqlb-dashboard.json');
/** Every expression selects this, so the instance variable and the PodMonitor's job apply everywhere. */
const SEL = 'job="nfqlb", instance=~"$instance"';
const RI = '$__rate_interval';

/** [row title, [panel title, unit, description, [[expr, legend], ...]], ...] */
const ROWS = [
  ['Traffic', [
    ['Packets per second per target', 'pps', 'Packets sent to each target (fwmark), by table.', [
      [`sum by (target, fwmark) (rate(nfqlb_target_packets_total{${SEL}}[${RI}]))`, '{{target}} fwmark {{fwmark}}'],
    ]],
    ['Share of each target in its table', 'percentunit', 'How the table spreads its packets: each fwmark\'s part of its table\'s packets.', [
      [`sum by (target, fwmark) (rate(nfqlb_target_packets_total{${SEL}}[${RI}])) / ignoring (fwmark) group_left sum by (target) (rate(nfqlb_target_packets_total{${SEL}}[${RI}]))`, '{{target}} fwmark {{fwmark}}'],
    ]],
    ['Packets by verdict', 'pps', 'Verdicts given per second (accept: forwarded with a fwmark; drop).', [
      [`sum by (verdict) (rate(nfqlb_packets_total{${SEL}}[${RI}]))`, '{{verdict}}'],
    ]],
    ['Active targets per table', 'short', 'Active slots of each open target table.', [
      [`max by (target) (nfqlb_table_active_targets{${SEL}})`, '{{target}}'],
    ]],
  ]],
  ['Drops', [
    ['Decisions by reason', 'pps', 'Packets by decision: target is load-balanced; no_flow, no_target, invalid and the fragment reasons are dropped unless a *_fwmark option says otherwise.', [
      [`sum by (reason) (rate(nfqlb_decisions_total{${SEL}, reason!="target"}[${RI}]))`, '{{reason}}'],
    ]],
    ['no_target drops per table', 'pps', 'Packets of flows whose table had no active target.', [
      [`sum by (target) (rate(nfqlb_table_no_target_total{${SEL}}[${RI}]))`, '{{target}}'],
    ]],
  ]],
  ['Queues', [
    ['Queue depth', 'short', 'Packets waiting in each NFQUEUE for a verdict.', [
      [`max by (queue) (nfqlb_queue_waiting{${SEL}})`, 'queue {{queue}}'],
    ]],
    ['Kernel queue drops', 'pps', 'Packets the kernel dropped: queue full (raise --qlength) or socket buffer full.', [
      [`sum by (queue) (rate(nfqlb_queue_dropped_total{${SEL}}[${RI}]))`, 'full, queue {{queue}}'],
      [`sum by (queue) (rate(nfqlb_queue_user_dropped_total{${SEL}}[${RI}]))`, 'socket, queue {{queue}}'],
    ]],
    ['Batch size', 'short', 'Packets per receive batch: median, 99th percentile and mean.', [
      [`histogram_quantile(0.5, sum by (le) (rate(nfqlb_batch_size_bucket{${SEL}}[${RI}])))`, 'p50'],
      [`histogram_quantile(0.99, sum by (le) (rate(nfqlb_batch_size_bucket{${SEL}}[${RI}])))`, 'p99'],
      [`sum(rate(nfqlb_batch_size_sum{${SEL}}[${RI}])) / sum(rate(nfqlb_batch_size_count{${SEL}}[${RI}]))`, 'mean'],
    ]],
    ['Verdict and queue errors', 'ops', 'Failed verdict sends, the packets in them, verdicts the kernel refused, receive errors.', [
      [`sum by (queue) (rate(nfqlb_verdict_send_errors_total{${SEL}}[${RI}]))`, 'send errors, queue {{queue}}'],
      [`sum by (queue) (rate(nfqlb_verdict_unsent_packets_total{${SEL}}[${RI}]))`, 'unsent packets, queue {{queue}}'],
      [`sum by (queue) (rate(nfqlb_verdict_refused_total{${SEL}}[${RI}]))`, 'refused, queue {{queue}}'],
      [`sum by (queue, reason) (rate(nfqlb_queue_errors_total{${SEL}}[${RI}]))`, '{{reason}}, queue {{queue}}'],
    ]],
  ]],
  ['Configuration', [
    ['Control requests', 'reqps', 'Requests on the control socket by action and result, and those refused before handling.', [
      [`sum by (action, result) (rate(nfqlb_control_requests_total{${SEL}}[${RI}]))`, '{{action}} {{result}}'],
      [`sum by (reason) (rate(nfqlb_control_refused_total{${SEL}}[${RI}]))`, 'refused: {{reason}}'],
    ]],
    ['Flows', 'short', 'Flows defined now.', [
      [`sum by (instance) (nfqlb_flows{${SEL}})`, '{{instance}}'],
    ]],
    ['Matches per flow', 'pps', 'Packets matched by each flow.', [
      [`sum by (flow) (rate(nfqlb_flow_matches_total{${SEL}}[${RI}]))`, '{{flow}}'],
    ]],
  ]],
  ['Fragments', [
    ['Fragment table', 'ops', 'First fragments stored and rejected (table full), lookups, entries freed after --ft_ttl.', [
      [`sum(rate(nfqlb_fragment_inserts_total{${SEL}}[${RI}]))`, 'inserts'],
      [`sum(rate(nfqlb_fragment_rejected_total{${SEL}}[${RI}]))`, 'rejected'],
      [`sum(rate(nfqlb_fragment_lookups_total{${SEL}}[${RI}]))`, 'lookups'],
      [`sum(rate(nfqlb_fragment_expired_total{${SEL}}[${RI}]))`, 'expired'],
    ]],
    ['Fragment table entries', 'short', 'Datagrams in the fragment table now, against its home slots.', [
      [`sum(nfqlb_fragment_entries{${SEL}})`, 'entries'],
      [`sum(nfqlb_fragment_table_size{${SEL}})`, 'size'],
    ]],
  ]],
  ['Process', [
    ['CPU', 'percentunit', 'CPU time of the daemon (every thread), in cores.', [
      [`sum by (instance) (rate(process_cpu_seconds_total{${SEL}}[${RI}]))`, '{{instance}}'],
    ]],
    ['Memory', 'bytes', 'Resident memory and the JavaScript heap in use.', [
      [`sum by (instance) (process_resident_memory_bytes{${SEL}})`, 'resident {{instance}}'],
      [`sum by (instance) (nodejs_heap_size_used_bytes{${SEL}})`, 'heap {{instance}}'],
    ]],
  ]],
];

function render() {
  const panels = [];
  let id = 1;
  let y = 0;
  for (const [rowTitle, list] of ROWS) {
    panels.push({ id: id++, type: 'row', title: rowTitle, collapsed: false, gridPos: { h: 1, w: 24, x: 0, y }, panels: [] });
    y += 1;
    list.forEach(([title, unit, description, targets], i) => {
      panels.push({
        id: id++,
        type: 'timeseries',
        title,
        description,
        datasource: { type: 'prometheus', uid: '${datasource}' },
        gridPos: { h: 8, w: 12, x: (i % 2) * 12, y: y + Math.floor(i / 2) * 8 },
        fieldConfig: { defaults: { unit, min: 0, custom: { lineWidth: 1, fillOpacity: 10, showPoints: 'never' } }, overrides: [] },
        options: { legend: { displayMode: 'list', placement: 'bottom', showLegend: true }, tooltip: { mode: 'multi', sort: 'desc' } },
        targets: targets.map(([expr, legendFormat], k) => ({
          datasource: { type: 'prometheus', uid: '${datasource}' },
          expr,
          legendFormat,
          range: true,
          refId: String.fromCharCode(65 + k),
        })),
      });
    });
    y += Math.ceil(list.length / 2) * 8;
  }
  const dashboard = {
    title: 'nfqlb-ts',
    uid: 'nfqlb-ts',
    description: 'The nfqlb-ts load balancer: traffic per target, drops, queues, configuration, fragments, process (docs/operations.md).',
    tags: ['nfqlb', 'meridio', 'load-balancer'],
    editable: true,
    graphTooltip: 1,
    refresh: '30s',
    schemaVersion: 39,
    time: { from: 'now-1h', to: 'now' },
    timezone: 'utc',
    templating: {
      list: [
        { name: 'datasource', type: 'datasource', query: 'prometheus', label: 'Data source', current: {} },
        {
          name: 'instance',
          type: 'query',
          label: 'Instance',
          datasource: { type: 'prometheus', uid: '${datasource}' },
          query: { query: 'label_values(nfqlb_build_info{job="nfqlb"}, instance)', refId: 'instance' },
          definition: 'label_values(nfqlb_build_info{job="nfqlb"}, instance)',
          includeAll: true,
          multi: true,
          allValue: '.*',
          refresh: 2,
          current: { text: 'All', value: '$__all' },
        },
      ],
    },
    annotations: { list: [] },
    panels,
  };
  return `${JSON.stringify(dashboard, null, 2)}\n`;
}

module.exports = { render, outFile, ROWS };

if (require.main === module) {
  const text = render();
  if (process.argv.includes('--check')) {
    const now = fs.existsSync(outFile) ? fs.readFileSync(outFile, 'utf8') : '';
    if (now !== text) {
      process.stderr.write(`${outFile} is stale: run node scripts/gen-dashboard.js\n`);
      process.exit(1);
    }
  } else {
    fs.mkdirSync(path.dirname(outFile), { recursive: true });
    fs.writeFileSync(outFile, text);
  }
}
