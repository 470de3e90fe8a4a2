/** The machine a run was on, and the results files (bench/results/<date>-<name>.json and .svg). */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { compareSvg, seriesOf, svgPlot, type PlottedResult } from '../plot';
import { OUT_DIR, say } from './config';

export interface Machine {
  nproc: number;
  cpu: string | undefined;
  kernel: string;
  memMiB: number;
  node: string;
  trafgen: string;
}

export function machine(): Machine {
  const cpu = (/^model name\s*:\s*(.*)$/m.exec(fs.readFileSync('/proc/cpuinfo', 'utf8')) ?? [])[1] ?? os.cpus()[0]?.model;
  const trafgen = spawnSync('trafgen', ['--version'], { encoding: 'utf8' }).stdout.split('\n')[0];
  return { nproc: os.cpus().length, cpu, kernel: os.release(), memMiB: Math.round(os.totalmem() / 2 ** 20), node: process.version, trafgen };
}

/** Local date and time, YYYY-MM-DD-HHMM: the results files' prefix. */
export function stamp(): string {
  const d = new Date();
  const p = (n: number): string => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}-${p(d.getHours())}${p(d.getMinutes())}`;
}

/** JSON with one line per run and numbers to 4 significant digits: small enough to commit. */
export function compactJson(result: object): string {
  const round = (_k: string, v: unknown): unknown => (typeof v === 'number' && !Number.isInteger(v) ? Number(v.toPrecision(4)) : v);
  const line = (v: unknown): string => JSON.stringify(v, round);
  const fields = Object.entries(result).map(([k, v]) =>
    Array.isArray(v) && v.length > 0 && typeof v[0] === 'object' ? `"${k}": [\n  ${v.map(line).join(',\n  ')}\n]` : `"${k}": ${line(v)}`,
  );
  return `{\n${fields.join(',\n')}\n}\n`;
}

/** Writes `<stamp>-<name>.json` (and, with `plot`, the .svg of a comparison or of the runs) to OUT_DIR. */
export function writeResults(result: PlottedResult, name: string, { plot = true, stamped = true } = {}): void {
  fs.mkdirSync(OUT_DIR, { recursive: true });
  const base = path.join(OUT_DIR, stamped ? `${stamp()}-${name}` : name);
  fs.writeFileSync(`${base}.json`, compactJson(result));
  let svg: string | null = null;
  if (plot && result.mode === 'compare') svg = compareSvg(result);
  else if (plot) {
    const series = seriesOf(result);
    if (series.length > 0) {
      svg = svgPlot(series, {
        title: `${result.implementation?.label}: delivered through the LB / by the kernel alone (${result.machine.nproc} CPUs)`,
        targets: [
          { y: 0.95, label: '0.95' },
          { y: 0.8, label: '0.80' },
        ],
      });
    }
  }
  if (svg !== null) fs.writeFileSync(`${base}.svg`, svg);
  say(`\nresults: ${path.relative(process.cwd(), base)}.json${svg !== null ? ` and .svg` : ''}`);
}
