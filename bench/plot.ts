/**
 * A small SVG line plot, no dependencies: delivered ratio against offered
 * rate, one line per implementation/setting. Used by bench/run.ts; also a
 * command to put several bench results in one plot:
 *
 *   node bench/dist/bench/plot.js bench/results/A.json [B.json ...] > plot.svg
 *
 * (compiled by `npx tsc -p bench`)
 *
 * A comparison result (mode 'compare') is drawn as grouped bars instead: one
 * group per point, one bar per implementation.
 */
import * as fs from 'node:fs';

/** One line of a plot: points (x packets/s, y a ratio). */
export interface Series {
  label: string;
  points: Array<{ x: number; y: number }>;
  dashed?: boolean;
  dotted?: boolean;
  color?: string;
}

/** One group of bars per category; values[i] for categories[i] (NaN: no bar). */
export interface BarSeries {
  label: string;
  values: number[];
  color?: string;
}

/** A horizontal dashed line at y (with a label in line plots). */
export interface Target {
  y: number;
  label?: string;
}

/** What the plots read of a bench result (bench/results/*.json). */
export interface PlottedResult {
  mode: string;
  date: string;
  machine: { nproc: number };
  implementation?: { label: string };
  implementations?: Array<{ key: string; label: string }>;
  points?: Array<{ id: string; label: string }>;
  summary?: Array<{ point?: string; impl?: string; ratio: number; group?: string; setting?: string; sources?: string; offeredPps?: number }>;
  runs?: Array<{ setting?: string; family?: number; sources?: string; offeredPps?: number; ratio?: number }>;
}

const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf', '#7f7f7f', '#bcbd22'];

function esc(text: unknown): string {
  return String(text).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/**
 * series: [{ label, points: [{ x, y }], dashed? }]; x in packets/s, y a ratio.
 * Returns the SVG text. The y axis spans 0..max(1.05, highest y); x 0..highest x.
 */
export function svgPlot(
  series: Series[],
  { title = '', xLabel = 'offered rate (kpps)', yLabel = 'delivered ratio', width = 760, height = 440, targets = [] as Target[] } = {},
): string {
  const left = 60;
  const right = 250;
  const top = 36;
  const bottom = 50;
  const pw = width - left - right;
  const ph = height - top - bottom;
  const all = series.flatMap((s) => s.points).filter((p) => Number.isFinite(p.x) && Number.isFinite(p.y));
  const xMax = Math.max(1, ...all.map((p) => p.x)) * 1.05;
  const yMax = Math.max(1.05, ...all.map((p) => p.y));
  const sx = (x: number): number => left + (x / xMax) * pw;
  const sy = (y: number): number => top + ph - (y / yMax) * ph;
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`);
  out.push(`<rect width="${width}" height="${height}" fill="white"/>`);
  out.push(`<text x="${left}" y="20" font-size="14" font-weight="bold">${esc(title)}</text>`);
  // Grid and ticks.
  const xStep = niceStep(xMax / 1000, 8) * 1000;
  for (let x = 0; x <= xMax; x += xStep) {
    out.push(`<line x1="${sx(x).toFixed(1)}" y1="${top}" x2="${sx(x).toFixed(1)}" y2="${top + ph}" stroke="#e5e5e5"/>`);
    out.push(`<text x="${sx(x).toFixed(1)}" y="${top + ph + 16}" text-anchor="middle">${Math.round(x / 1000)}</text>`);
  }
  for (let y = 0; y <= yMax + 1e-9; y += 0.1) {
    out.push(`<line x1="${left}" y1="${sy(y).toFixed(1)}" x2="${left + pw}" y2="${sy(y).toFixed(1)}" stroke="#e5e5e5"/>`);
    out.push(`<text x="${left - 6}" y="${(sy(y) + 4).toFixed(1)}" text-anchor="end">${y.toFixed(1)}</text>`);
  }
  for (const t of targets) {
    out.push(`<line x1="${left}" y1="${sy(t.y).toFixed(1)}" x2="${left + pw}" y2="${sy(t.y).toFixed(1)}" stroke="#999" stroke-dasharray="2,3"/>`);
    out.push(`<text x="${left + pw - 4}" y="${(sy(t.y) - 4).toFixed(1)}" text-anchor="end" fill="#777">${esc(t.label ?? '')}</text>`);
  }
  out.push(`<rect x="${left}" y="${top}" width="${pw}" height="${ph}" fill="none" stroke="#333"/>`);
  out.push(`<text x="${left + pw / 2}" y="${height - 12}" text-anchor="middle">${esc(xLabel)}</text>`);
  out.push(`<text transform="translate(16,${top + ph / 2}) rotate(-90)" text-anchor="middle">${esc(yLabel)}</text>`);
  // Lines and legend.
  series.forEach((s, i) => {
    const color = s.color ?? COLORS[i % COLORS.length];
    const pts = s.points.filter((p) => Number.isFinite(p.x) && Number.isFinite(p.y)).sort((a, b) => a.x - b.x);
    const dash = s.dotted ? ' stroke-dasharray="2,3"' : s.dashed ? ' stroke-dasharray="6,4"' : '';
    if (pts.length > 1) {
      out.push(`<polyline fill="none" stroke="${color}" stroke-width="2"${dash} points="${pts.map((p) => `${sx(p.x).toFixed(1)},${sy(p.y).toFixed(1)}`).join(' ')}"/>`);
    }
    for (const p of pts) out.push(`<circle cx="${sx(p.x).toFixed(1)}" cy="${sy(p.y).toFixed(1)}" r="3" fill="${color}"/>`);
    const ly = top + 10 + i * 18;
    out.push(`<line x1="${left + pw + 14}" y1="${ly}" x2="${left + pw + 40}" y2="${ly}" stroke="${color}" stroke-width="2"${dash}/>`);
    out.push(`<text x="${left + pw + 46}" y="${ly + 4}">${esc(s.label)}</text>`);
  });
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}

/**
 * Grouped bars: one group per category, one bar per series, the value
 * printed above each bar. series: [{ label, values }] with values[i] for
 * categories[i] (NaN: no bar). y from 0 to max(1.05, highest value).
 */
export function svgBars(
  categories: string[],
  series: BarSeries[],
  { title = '', yLabel = 'delivered ratio', width = 900, height = 460, targets = [] as Target[] } = {},
): string {
  const left = 60;
  const right = 20;
  const top = 36 + 18 * series.length;
  const bottom = 90;
  const pw = width - left - right;
  const ph = height - top - bottom;
  const all = series.flatMap((s) => s.values).filter(Number.isFinite);
  const yMax = Math.max(1.05, ...all);
  const sy = (y: number): number => top + ph - (y / yMax) * ph;
  const groupW = pw / Math.max(1, categories.length);
  const barW = (groupW * 0.8) / Math.max(1, series.length);
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`);
  out.push(`<rect width="${width}" height="${height}" fill="white"/>`);
  out.push(`<text x="${left}" y="20" font-size="14" font-weight="bold">${esc(title)}</text>`);
  series.forEach((s, i) => {
    const color = s.color ?? COLORS[i % COLORS.length];
    out.push(`<rect x="${left}" y="${30 + i * 18}" width="12" height="12" fill="${color}"/>`);
    out.push(`<text x="${left + 18}" y="${40 + i * 18}">${esc(s.label)}</text>`);
  });
  for (let y = 0; y <= yMax + 1e-9; y += 0.1) {
    out.push(`<line x1="${left}" y1="${sy(y).toFixed(1)}" x2="${left + pw}" y2="${sy(y).toFixed(1)}" stroke="#e5e5e5"/>`);
    out.push(`<text x="${left - 6}" y="${(sy(y) + 4).toFixed(1)}" text-anchor="end">${y.toFixed(1)}</text>`);
  }
  for (const t of targets) {
    out.push(`<line x1="${left}" y1="${sy(t.y).toFixed(1)}" x2="${left + pw}" y2="${sy(t.y).toFixed(1)}" stroke="#999" stroke-dasharray="2,3"/>`);
  }
  categories.forEach((c, ci) => {
    const gx = left + ci * groupW + groupW * 0.1;
    series.forEach((s, si) => {
      const v = s.values[ci];
      if (!Number.isFinite(v)) return;
      const x = gx + si * barW;
      out.push(`<rect x="${x.toFixed(1)}" y="${sy(v).toFixed(1)}" width="${(barW - 2).toFixed(1)}" height="${(sy(0) - sy(v)).toFixed(1)}" fill="${s.color ?? COLORS[si % COLORS.length]}"/>`);
      out.push(`<text x="${(x + barW / 2).toFixed(1)}" y="${(sy(v) - 3).toFixed(1)}" text-anchor="middle" font-size="10">${v.toFixed(3)}</text>`);
    });
    // Category labels, wrapped at commas so long labels fit under their group.
    String(c)
      .split(/,\s*/)
      .forEach((line, li) => out.push(`<text x="${(left + ci * groupW + groupW / 2).toFixed(1)}" y="${top + ph + 16 + li * 14}" text-anchor="middle" font-size="11">${esc(line)}</text>`));
  });
  out.push(`<rect x="${left}" y="${top}" width="${pw}" height="${ph}" fill="none" stroke="#333"/>`);
  out.push(`<text transform="translate(16,${top + ph / 2}) rotate(-90)" text-anchor="middle">${esc(yLabel)}</text>`);
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}

/** The bars of a comparison result: categories are its points, series its implementations (median ratios). */
export function barsOf(result: PlottedResult): { categories: string[]; series: BarSeries[] } {
  const points = result.points ?? [];
  const categories = points.map((p) => p.label);
  const series = (result.implementations ?? []).map((impl) => ({
    label: impl.label,
    values: points.map((p) => (result.summary ?? []).find((c) => c.point === p.id && c.impl === impl.key)?.ratio ?? NaN),
  }));
  return { categories, series };
}

/** The SVG of a comparison result (see barsOf). */
export function compareSvg(result: PlottedResult): string {
  const { categories, series } = barsOf(result);
  return svgBars(categories, series, {
    title: `Delivered through the daemon / by the kernel alone (HMARK), same run ${result.date.slice(0, 10)}, ${result.machine.nproc} CPUs`,
    targets: [{ y: 1 }],
  });
}

/** A round step (1, 2 or 5 × 10^k) giving about `n` intervals over `span`. */
function niceStep(span: number, n: number): number {
  const raw = span / n;
  const p = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 5, 10]) if (m * p >= raw) return m * p;
  return 10 * p;
}

/**
 * The plot series of one bench result (bench/run.ts's JSON): one line per
 * implementation, setting, family and sources; for a sweep, the medians of
 * its summary (groups: only those, when given).
 */
export function seriesOf(result: PlottedResult, { groups }: { groups?: string[] } = {}): Series[] {
  const lines = new Map<string, Array<{ x: number; y: number }>>();
  const add = (label: string, x: number | undefined, y: number | undefined): void => {
    if (x === undefined || y === undefined || !Number.isFinite(x) || !Number.isFinite(y)) return;
    const line = lines.get(label) ?? [];
    line.push({ x, y });
    lines.set(label, line);
  };
  const impl = result.implementation?.label ?? '?';
  if (result.mode === 'sweep') {
    for (const c of result.summary ?? []) {
      if (groups && !groups.includes(c.group ?? '')) continue;
      add(`${impl} ${c.setting}${c.sources === 'one' ? ' 1 flow' : ''}`, c.offeredPps, c.ratio);
    }
  } else {
    for (const r of result.runs ?? []) add(`${impl} ${r.setting} IPv${r.family}${r.sources === 'one' ? ' 1 flow' : ''}`, r.offeredPps, r.ratio);
  }
  return [...lines.entries()].map(([label, points]) => ({ label, points, dashed: label.includes('1 flow') }));
}

function main(): void {
  const args = process.argv.slice(2);
  const files = args.filter((a) => !a.startsWith('--'));
  const opt = (name: string): string | undefined => args.find((a) => a.startsWith(`--${name}=`))?.split('=')[1];
  if (files.length === 0) {
    process.stderr.write('usage: node bench/dist/bench/plot.js [--groups=g1,g2] [--title=...] RESULT.json [RESULT.json ...] > plot.svg\n');
    process.exit(2);
  }
  const results = files.map((f) => JSON.parse(fs.readFileSync(f, 'utf8')) as PlottedResult);
  if (results.length === 1 && results[0].mode === 'compare') {
    process.stdout.write(compareSvg(results[0]));
    process.exit(0);
  }
  const groups = opt('groups')?.split(',');
  const series = results.filter((r) => r.mode !== 'compare').flatMap((r) => seriesOf(r, { groups }));
  process.stdout.write(
    svgPlot(series, {
      title: opt('title') ?? 'Delivered through the LB / delivered by the kernel alone (HMARK)',
      targets: [
        { y: 0.95, label: '0.95' },
        { y: 0.8, label: '0.80' },
      ],
    }),
  );
}

if (require.main === module) main();
