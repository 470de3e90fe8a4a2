#!/usr/bin/env node
'use strict';
// Draws deploy/grafana/nfqlb-dashboard.json from real recorded data, for the
// docs: every panel's expressions are evaluated by a Prometheus over
// test/fixtures/metrics/recorded.om.gz (scripts/recorded-prometheus.js), drawn
// as SVG line charts on the dashboard's own grid, and headless Chromium
// takes the picture. Grafana itself is not needed (nor installed here): the
// panels show what Grafana would query, not its look.
//   sudo node scripts/render-dashboard.js [OUT.png]   (default docs/dashboard.png)
// Needs: root, prometheus, promtool, chromium, npx tsc -p testbed.
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { startRecordedPrometheus, concreteExpr } = require('./recorded-prometheus');

const ROOT = path.join(__dirname, '..');
const OUT = path.resolve(process.argv[2] ?? path.join(ROOT, 'docs', 'dashboard.png'));
const RECORDED = path.join(ROOT, 'test', 'fixtures', 'metrics', 'recorded.om.gz');
const dashboard = JSON.parse(fs.readFileSync(path.join(ROOT, 'deploy', 'grafana', 'nfqlb-dashboard.json'), 'utf8'));

const COL = 66; // px per grid column (24 columns)
const ROW = 30; // px per grid row
const COLORS = ['#73bf69', '#f2cc0c', '#8ab8ff', '#ff780a', '#f2495c', '#5794f2', '#b877d9', '#fade2a', '#37872d', '#c4162a', '#1f60c4', '#8f3bb8'];

const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

function legend(format, metric) {
  return format.replace(/\{\{\s*(\w+)\s*\}\}/g, (_, k) => metric[k] ?? '');
}

function fmt(v, unit) {
  if (unit === 'percentunit') return `${(v * 100).toFixed(0)}%`;
  if (unit === 'bytes') return v >= 1 << 20 ? `${(v / (1 << 20)).toFixed(0)} MiB` : `${(v / 1024).toFixed(0)} KiB`;
  if (Math.abs(v) >= 1000) return `${(v / 1000).toFixed(1)}k`;
  if (v !== 0 && Math.abs(v) < 1) return v.toPrecision(2);
  return Number.isInteger(v) ? String(v) : v.toFixed(v < 10 ? 2 : 1);
}

function chart(panel, series, start, end) {
  const w = panel.gridPos.w * COL - 12;
  const h = panel.gridPos.h * ROW - 12;
  const unit = panel.fieldConfig.defaults.unit;
  const plot = { x: 56, y: 30, w: w - 70, h: h - 30 - 20 - 16 * Math.min(4, Math.ceil(series.length / 3)) };
  let max = 0;
  for (const s of series) for (const [, v] of s.values) if (Number.isFinite(v) && v > max) max = v;
  if (max === 0) max = 1;
  max *= 1.1;
  const X = (t) => plot.x + ((t - start) / (end - start)) * plot.w;
  const Y = (v) => plot.y + plot.h - (v / max) * plot.h;
  let svg = `<svg width="${w}" height="${h}" xmlns="http://www.w3.org/2000/svg">`;
  svg += `<text x="8" y="18" class="title">${esc(panel.title)}</text>`;
  for (let i = 0; i <= 4; i++) {
    const v = (max / 4) * i;
    svg += `<line x1="${plot.x}" x2="${plot.x + plot.w}" y1="${Y(v)}" y2="${Y(v)}" class="grid"/><text x="${plot.x - 6}" y="${Y(v) + 4}" class="axis" text-anchor="end">${esc(fmt(v, unit))}</text>`;
  }
  for (let m = 0; m <= Math.floor((end - start) / 60); m++) {
    const t = start + m * 60;
    svg += `<text x="${X(t)}" y="${plot.y + plot.h + 14}" class="axis" text-anchor="middle">${new Date(t * 1000).toISOString().slice(11, 16)}</text>`;
  }
  series.forEach((s, i) => {
    const c = COLORS[i % COLORS.length];
    let d = '';
    let pen = 'M';
    for (const [t, v] of s.values) {
      if (!Number.isFinite(v)) {
        pen = 'M';
        continue;
      }
      d += `${pen}${X(t).toFixed(1)},${Y(v).toFixed(1)} `;
      pen = 'L';
    }
    svg += `<path d="${d}" stroke="${c}" fill="none" stroke-width="1.5"/>`;
  });
  const shown = series.slice(0, 12);
  shown.forEach((s, i) => {
    const lx = 8 + (i % 3) * Math.floor((w - 16) / 3);
    const ly = plot.y + plot.h + 32 + Math.floor(i / 3) * 16;
    svg += `<rect x="${lx}" y="${ly - 8}" width="10" height="3" fill="${COLORS[i % COLORS.length]}"/><text x="${lx + 14}" y="${ly - 3}" class="legend">${esc(s.name.slice(0, 34))}</text>`;
  });
  if (series.length === 0) svg += `<text x="${w / 2}" y="${h / 2}" class="axis" text-anchor="middle">No data</text>`;
  return `${svg}</svg>`;
}

async function main() {
  const prom = await startRecordedPrometheus(RECORDED);
  let html;
  let height = 0;
  try {
    const panels = dashboard.panels;
    const exprs = panels.filter((p) => p.type !== 'row').flatMap((p) => p.targets.map((t) => concreteExpr(t.expr)));
    const results = prom.queryRange(exprs, 3);
    let k = 0;
    let body = '';
    for (const p of panels) {
      const top = p.gridPos.y * ROW;
      height = Math.max(height, (p.gridPos.y + p.gridPos.h) * ROW);
      if (p.type === 'row') {
        body += `<div class="row" style="left:0;top:${top}px;width:${24 * COL}px">${esc(p.title)}</div>`;
        continue;
      }
      const series = [];
      for (const t of p.targets) {
        const r = results[k++];
        if (r.status !== 'success') throw new Error(`${r.expr}: ${r.error}`);
        for (const s of r.series) series.push({ name: legend(t.legendFormat, s.metric), values: s.values.map(([ts, v]) => [ts, Number(v)]) });
      }
      series.sort((a, b) => a.name.localeCompare(b.name));
      body += `<div class="panel" style="left:${p.gridPos.x * COL}px;top:${top}px;width:${p.gridPos.w * COL - 8}px;height:${p.gridPos.h * ROW - 8}px">${chart(p, series, prom.start, prom.end)}</div>`;
    }
    const when = `${new Date(prom.start * 1000).toISOString().slice(0, 16).replace('T', ' ')} UTC, ${Math.round((prom.end - prom.start) / 60)} min`;
    html = `<!doctype html><html><head><meta charset="utf-8"><style>
      body { margin: 0; background: #111217; font-family: sans-serif; color: #ccccdc; }
      .head { padding: 10px 12px; font-size: 18px; } .head small { color: #8e8e9e; font-size: 12px; margin-left: 12px; }
      .board { position: relative; margin: 0 8px; }
      .panel { position: absolute; background: #181b1f; border: 1px solid #2c3235; border-radius: 2px; padding: 2px; }
      .row { position: absolute; font-size: 14px; font-weight: bold; padding-top: 6px; }
      .title { fill: #ccccdc; font-size: 13px; font-weight: bold; } .axis { fill: #8e8e9e; font-size: 10px; }
      .legend { fill: #ccccdc; font-size: 10px; } .grid { stroke: #2c3235; stroke-width: 1; }
    </style></head><body><div class="head">${esc(dashboard.title)}<small>deploy/grafana/nfqlb-dashboard.json over a recorded run (scripts/record-metrics.js): ${esc(when)}</small></div>
    <div class="board" style="height:${height}px">${body}</div></body></html>`;
  } finally {
    await prom.close();
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nfqlb-render-'));
  try {
    const file = path.join(dir, 'dashboard.html');
    fs.writeFileSync(file, html);
    const r = spawnSync('chromium', ['--headless', '--no-sandbox', '--disable-gpu', '--hide-scrollbars', `--user-data-dir=${path.join(dir, 'profile')}`,
      `--window-size=${24 * COL + 16},${height + 50}`, `--screenshot=${OUT}`, `file://${file}`], { encoding: 'utf8', timeout: 120000 });
    if (r.status !== 0 || !fs.existsSync(OUT)) throw new Error(`chromium failed (${r.status}): ${r.stderr}`);
    if (process.env.KEEP_HTML) fs.copyFileSync(file, process.env.KEEP_HTML);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  process.stderr.write(`wrote ${OUT}\n`);
}

main().catch((err) => {
  process.stderr.write(`render-dashboard: ${err.stack ?? err}\n`);
  process.exit(1);
});
