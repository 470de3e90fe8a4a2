'use strict';
// A Prometheus over recorded scrapes, for the dashboard's checks
// (test/unit/deploy.test.ts) and its picture (scripts/render-dashboard.js):
// `promtool tsdb create-blocks-from openmetrics` makes blocks from the
// recording, and a `prometheus` serving them listens on 127.0.0.1 inside a
// network namespace of its own (nothing in the root namespace); queries run
// there through the HTTP API. Needs root, prometheus and promtool, and the
// compiled test bed (npx tsc -p testbed).
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const zlib = require('node:zlib');
/** The compiled test bed, loaded when a server is started (concreteExpr needs none of it). */
const testbed = () => require(path.join(__dirname, '..', 'testbed', 'dist', 'testbed', 'testbed.js'));

const PORT = 9090;

/** First and last sample time of an OpenMetrics recording (seconds). */
function timeRange(text) {
  let min = Infinity;
  let max = -Infinity;
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const t = Number(line.slice(line.lastIndexOf(' ') + 1));
    if (t < min) min = t;
    if (t > max) max = t;
  }
  return { start: min, end: max };
}

/**
 * Starts it; resolves to { start, end, queryRange(exprs, step) -> results[], close() }.
 * queryRange takes many expressions and runs them in one process in the
 * namespace: each result is { expr, status, error?, series: [{ metric, values: [[t, v], ...] }] }.
 */
async function startRecordedPrometheus(omFile) {
  const tbm = testbed();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nfqlb-recorded-'));
  const data = path.join(dir, 'data');
  // The recording is kept gzipped in the repository (it is about 1 MB of text).
  const text = omFile.endsWith('.gz') ? zlib.gunzipSync(fs.readFileSync(omFile)).toString('utf8') : fs.readFileSync(omFile, 'utf8');
  const plain = path.join(dir, 'recorded.om');
  fs.writeFileSync(plain, text);
  const blocks = spawnSync('promtool', ['tsdb', 'create-blocks-from', 'openmetrics', plain, data], { encoding: 'utf8' });
  if (blocks.status !== 0) throw new Error(`promtool tsdb create-blocks-from openmetrics ${omFile}: ${blocks.stderr}`);
  const config = path.join(dir, 'prometheus.yml');
  fs.writeFileSync(config, 'global:\n  scrape_interval: 15s\n');
  const ns = tbm.createNetns('prom');
  const server = tbm.spawnInNs(ns, 'prometheus', [
    `--config.file=${config}`, `--storage.tsdb.path=${data}`, '--storage.tsdb.retention.time=100y',
    `--web.listen-address=127.0.0.1:${PORT}`, '--log.level=warn',
  ]);
  let log = '';
  server.stderr?.on('data', (d) => (log += d));
  const { start, end } = timeRange(text);
  const close = async () => {
    await tbm.killProcess(server);
    tbm.deleteNetns(ns);
    fs.rmSync(dir, { recursive: true, force: true });
  };
  const api = (script) => tbm.nsExec(ns, process.execPath, ['-e', script], { allowFail: true, timeoutMs: 120000 });
  // Ready when /-/ready answers 200 (blocks loaded).
  for (let i = 0; ; i++) {
    const r = api(`fetch('http://127.0.0.1:${PORT}/-/ready').then((r) => process.exit(r.status === 200 ? 0 : 1), () => process.exit(1))`);
    if (r.status === 0) break;
    if (i > 100 || server.exitCode !== null) {
      await close();
      throw new Error(`prometheus did not get ready: ${log}`);
    }
    await tbm.sleep(200);
  }
  const queryRange = (exprs, step = 15, from = start, to = end) => {
    const script = `(async () => {
      const exprs = ${JSON.stringify(exprs)};
      const out = [];
      for (const expr of exprs) {
        const q = new URLSearchParams({ query: expr, start: '${from}', end: '${to}', step: '${step}' });
        const r = await fetch('http://127.0.0.1:${PORT}/api/v1/query_range?' + q);
        const j = await r.json();
        out.push({ expr, status: j.status, error: j.error, series: j.status === 'success' ? j.data.result.map((s) => ({ metric: s.metric, values: s.values })) : [] });
      }
      process.stdout.write(JSON.stringify(out));
    })().catch((e) => { process.stderr.write(String(e)); process.exit(1); });`;
    const r = api(script);
    if (r.status !== 0) throw new Error(`query failed: ${r.stderr}`);
    return JSON.parse(r.stdout);
  };
  return { start, end, queryRange, close };
}

/** A dashboard expression with Grafana's variables replaced as a query would have them. */
function concreteExpr(expr) {
  return expr.replace(/\$__rate_interval/g, '1m').replace(/\$__interval/g, '15s').replace(/\$instance/g, '.*');
}

module.exports = { startRecordedPrometheus, concreteExpr, timeRange };
