#!/usr/bin/env node
'use strict';
// Records real scrapes of a live daemon for the dashboard's checks and its
// picture (docs/operations.md): builds the test bed (network namespaces, as
// root), runs `nfqlb flowlb` with two streams, sends UDP from many source
// ports at a steady rate, and plays a timeline an operator would see: a
// target goes and comes back, one table loses every target for a while, flows
// are set and deleted, a failed flow-set and a line on the control socket that
// is not a request. Every
// STEP_S seconds the daemon is scraped in OpenMetrics; the scrapes are merged
// into one OpenMetrics file with a timestamp on each sample, families grouped
// (what `promtool tsdb create-blocks-from openmetrics` reads).
//   sudo node scripts/record-metrics.js [OUT]   (default test/fixtures/metrics/recorded.om.gz)
// Needs: npx tsc -p . && npx tsc -p testbed.
const fs = require('node:fs');
const path = require('node:path');
const ROOT = path.join(__dirname, '..');
const tbm = require(path.join(ROOT, 'testbed', 'dist', 'testbed', 'testbed.js'));

const OUT = process.argv[2] ?? path.join(ROOT, 'test', 'fixtures', 'metrics', 'recorded.om.gz');
const PORT = 19658;
const STEP_S = 3;
const DURATION_S = 240;
/** Families kept in the recording: the daemon's, and the process figures the dashboard shows. */
const KEEP = /^(?!nfqlb_verdict_errors$|nfqlb_fragment_store_slots$)(nfqlb_|process_cpu_seconds(_total)?|process_resident_memory_bytes|nodejs_heap_size_used_bytes|nodejs_eventloop_lag_p99_seconds|up$)/;

function scrape(ns) {
  const script = `fetch('http://127.0.0.1:${PORT}/metrics', { headers: { Accept: 'application/openmetrics-text;version=1.0.0' } })` +
    '.then(async (r) => { if (r.status !== 200) process.exit(1); process.stdout.write(await r.text()); }, () => process.exit(1))';
  const r = tbm.nsExec(ns, process.execPath, ['-e', script], { allowFail: true });
  return r.status === 0 ? r.stdout : null;
}

/** One line on the control socket that is not a request (counted in nfqlb_control_refused_total), connected as nfqlb connects. */
function junkControlLine(ns) {
  const sockets = JSON.stringify(path.join(ROOT, 'dist', 'addon', 'sockets.js'));
  const script = `require(${sockets}).connectTo({ unix: Buffer.from('nfqlb') }, 5000).then((s) => { s.end('\\x01junk\\n'); s.on('data', () => {}); s.on('close', () => process.exit(0)); s.on('error', () => process.exit(1)); })`;
  tbm.nsExec(ns, process.execPath, ['-e', script], { allowFail: true, timeoutMs: 20000 });
}

/** Traffic: UDP to the VIP from `ports` source ports, one datagram each every `everyMs`. */
function trafficScript(vip, dport, src, firstPort, ports, everyMs) {
  return `const d = require('node:dgram'); const socks = [];
    for (let i = 0; i < ${ports}; i++) { const s = d.createSocket('udp4'); s.bind(${firstPort} + i, '${src}'); s.on('error', () => {}); socks.push(s); }
    const b = Buffer.alloc(64, 0x41);
    setInterval(() => { for (const s of socks) s.send(b, ${dport}, '${vip}', () => {}); }, ${everyMs});`;
}

async function main() {
  const tb = tbm.Testbed.build();
  const families = new Map(); // family -> { header: string[], samples: string[] }
  const order = [];
  const children = [];
  try {
    const a = tbm.uniqueShmName('rec-a');
    const b = tbm.uniqueShmName('rec-b');
    tb.initTable(a);
    tb.initTable(b, tb.targets.slice(0, 2));
    await tb.startDaemon(['flowlb', '--queue=0:3', '--hash_mode=0', `--metrics_address=127.0.0.1:${PORT}`]);
    tb.nfqlbOk(['flow-set', '--name=stream-a-udp', `--target=${a}`, '--prio=1', '--protocols=udp', `--dsts=${tb.vip4}/32`, '--dports=5001']);
    tb.nfqlbOk(['flow-set', '--name=stream-b-udp', `--target=${b}`, '--prio=1', '--protocols=udp', `--dsts=${tb.vip4}/32`, '--dports=5002']);
    children.push(tbm.spawnInNs(tb.gw, process.execPath, ['-e', trafficScript(tb.vip4, 5001, tb.client4, 41000, 64, 40)]));
    children.push(tbm.spawnInNs(tb.gw, process.execPath, ['-e', trafficScript(tb.vip4, 5002, tb.client4, 42000, 24, 50)]));
    // No flow for port 5009: no_flow drops.
    children.push(tbm.spawnInNs(tb.gw, process.execPath, ['-e', trafficScript(tb.vip4, 5009, tb.client4, 43000, 4, 100)]));
    const timeline = new Map([
      [60, () => tb.deactivate(a, tb.targets[3])],
      [100, () => tb.activate(a, tb.targets[3])],
      [120, () => { tb.deactivate(b, tb.targets[0]); tb.deactivate(b, tb.targets[1]); }],
      [150, () => { tb.activate(b, tb.targets[0]); tb.activate(b, tb.targets[1]); }],
      [165, () => tb.nfqlbOk(['flow-set', '--name=stream-a-extra', `--target=${a}`, '--prio=2', '--protocols=tcp', `--dsts=${tb.vip4}/32`, '--dports=80'])],
      [180, () => tb.nfqlb(['flow-set', '--name=broken', '--target=rec-no-such-table', '--protocols=udp'])],
      [195, () => tb.nfqlbOk(['flow-delete', '--name=stream-a-extra'])],
      [210, () => junkControlLine(tb.lb)],
    ]);
    const t0 = Math.floor(Date.now() / 1000);
    for (let t = 0; t <= DURATION_S; t += STEP_S) {
      for (const [at, act] of timeline) if (at <= t && at > t - STEP_S) act();
      const wait = (t0 + t) * 1000 - Date.now();
      if (wait > 0) await tbm.sleep(wait);
      // The time of the scrape, not of the plan: on a loaded machine the loop lags, and rates must stay true.
      const ts = (Date.now() / 1000).toFixed(3);
      const text = scrape(tb.lb);
      const up = text === null ? 0 : 1;
      addSample(families, order, 'up', ['# TYPE up gauge', '# HELP up 1 when the scrape worked.'], `up{job="nfqlb",instance="lb-a:9657"} ${up} ${ts}`);
      if (text === null) continue;
      let family = null;
      for (const line of text.split('\n')) {
        if (line === '' || line === '# EOF') continue;
        const m = /^# (TYPE|HELP|UNIT) (\S+)/.exec(line);
        if (m !== null) {
          family = m[2];
          if (!families.has(family)) {
            families.set(family, { header: [], samples: [] });
            order.push(family);
          }
          const f = families.get(family);
          if (f.samples.length === 0 && !f.header.includes(line)) f.header.push(line);
          continue;
        }
        // Every series gets the labels a PodMonitor scrape would give it.
        const labelled = line.replace(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?/, (_, n, __, l) => `${n}{job="nfqlb",instance="lb-a:9657"${l ? `,${l}` : ''}}`);
        families.get(family).samples.push(`${labelled} ${ts}`);
      }
      process.stderr.write(`t=${t}s\r`);
    }
  } finally {
    for (const c of children) await tbm.killProcess(c);
    await tb.destroy();
    await tbm.cleanupAll();
  }
  let out = '';
  for (const name of order) {
    if (!KEEP.test(name)) continue;
    const f = families.get(name);
    if (f.samples.length === 0) continue;
    out += `${f.header.join('\n')}\n${f.samples.join('\n')}\n`;
  }
  out += '# EOF\n';
  fs.mkdirSync(path.dirname(OUT), { recursive: true });
  fs.writeFileSync(OUT, OUT.endsWith('.gz') ? require('node:zlib').gzipSync(out, { level: 9 }) : out);
  process.stderr.write(`\nwrote ${OUT} (${out.length} bytes)\n`);
}

function addSample(families, order, name, header, line) {
  if (!families.has(name)) {
    families.set(name, { header, samples: [] });
    order.push(name);
  }
  families.get(name).samples.push(line);
}

main().catch((err) => {
  process.stderr.write(`record-metrics: ${err.stack ?? err}\n`);
  process.exit(1);
});
