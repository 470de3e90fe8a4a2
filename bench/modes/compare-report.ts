/**
 * The tables of a comparison (bench/modes/compare.ts; also --table=RESULT.json):
 * per point and implementation the delivered ratio, CPU per packet by thread,
 * the clients beside, the same in Markdown, and the targets of issues 11, 19
 * and 21 as the run reads them.
 */
import { fmt, say } from '../lib/config';
import { groupsOf, threadText, type ThreadGroup, type ThreadShare } from '../lib/threads';
import type { BesideStats } from './compare-points';

/** The median over rounds of one implementation at one point (the run nearest the median ratio gives the threads). */
export interface CompareCell {
  point: string;
  impl: string;
  ratio: number;
  ratios: number[];
  ratioMin: number;
  ratioMax: number;
  offeredPps: number;
  baselineDeliveredFraction: number;
  deliveredFraction: number;
  queueDropped: number;
  userDropped: number;
  cpuUsPerPacket: number;
  cpuCores: number;
  addedLatencyUs: number;
  addedLatencyP99Us: number;
  probeP50Us: number;
  baseProbeP50Us: number;
  threads: ThreadShare[];
  threadGroups?: ThreadGroup[];
  beside?: BesideStats;
  disturbedRuns: number;
}

/** What the tables read of an implementation (a live one, or one of a results file). */
export interface ReportedImpl {
  key: string;
  label: string;
  isFloor?: boolean;
  extraArgs?: string[];
}

/** What the tables read of a point. */
export interface ReportedPoint {
  id: string;
  label: string;
  pacing: string;
}

/** What the tables read of a comparison result. */
export interface ReportedCompare {
  date: string;
  rounds: number;
  secondsPerRun: number;
  summary: CompareCell[];
}

/** Issue 11's targets, for this project's variants: met or not, in one line each. */
const TARGETS = [
  { point: 'v4-steady-200k', min: 0.99 },
  { point: 'v4-bursts-100k', min: 0.95 },
  { point: 'v4-one-150k', min: 0.99 },
  { point: 'v4-flows10k-100k', min: 0.99 },
  { point: 'v4-flows10k-busy', min: 0.99 },
];

/** The summary cell of (pt, impl); a point/implementation pair always has one. */
function cellFinder(result: ReportedCompare): (pt: ReportedPoint, impl: ReportedImpl) => CompareCell {
  return (pt, impl) => {
    const c = result.summary.find((s) => s.point === pt.id && s.impl === impl.key);
    if (c === undefined) throw new Error(`no summary of ${impl.key} at ${pt.id} in the result`);
    return c;
  };
}

export function printCompare(result: ReportedCompare, impls: ReportedImpl[], points: ReportedPoint[]): void {
  const cellOf = cellFinder(result);
  const text = (c: CompareCell): string => `${fmt(c.ratio, 5, 3)} [${c.ratios.map((x) => x.toFixed(2)).join(' ')}] ${fmt(c.cpuUsPerPacket, 5, 1)} µs q${Number.isFinite(c.queueDropped) ? c.queueDropped : '-'}`;
  const W = Math.max(...impls.map((i) => i.label.length), ...points.flatMap((pt) => impls.map((impl) => text(cellOf(pt, impl)).length))) + 3;
  const L = Math.max(...points.map((pt) => pt.label.length)) + 2;
  say(`\n== comparison, ${result.date.slice(0, 16).replace('T', ' ')} UTC: delivered through the daemon / delivered by the kernel alone (HMARK), same packets, same run`);
  say(`   median of ${result.rounds} round(s) of ${result.secondsPerRun} s [each round]; daemon CPU µs per delivered packet; kernel queue drops (median)`);
  say(`${''.padEnd(L)}${impls.map((i) => `│ ${i.label.padEnd(W - 2)}`).join('')}`);
  for (const pt of points) say(`${pt.label.padEnd(L)}${impls.map((impl) => `│ ${text(cellOf(pt, impl)).padEnd(W - 2)}`).join('')}`);
  const K = Math.max(...impls.map((i) => i.key.length)) + 1;
  say('\ndaemon CPU per delivered packet by thread (µs; main = the process\'s first thread; run nearest the median ratio), and in cores:');
  for (const pt of points) {
    for (const impl of impls) {
      const c = cellOf(pt, impl);
      const cores = c.threads.reduce((sum, t) => sum + t.cores, 0);
      say(`  ${pt.id.padEnd(20)} ${impl.key.padEnd(K)} ${fmt(c.cpuUsPerPacket, 5, 2)} µs = ${threadText(groupsOf(c)) || '-'}  [${cores.toFixed(2)} cores]`);
    }
  }
  const withClients = points.filter((pt) => impls.some((impl) => cellOf(pt, impl).beside));
  if (withClients.length > 0) {
    say('\nclients beside the daemon (run nearest the median): scrapes done (median/max ms), trace clients open at the end, idle control connections open at the end (reconnects):');
    for (const pt of withClients) {
      for (const impl of impls) {
        const b = cellOf(pt, impl).beside;
        if (!b) continue;
        say(`  ${pt.id.padEnd(20)} ${impl.key.padEnd(K)} scrapes ${b.scrapes ?? '-'} (${b.scrapeMsMedian ?? '-'}/${b.scrapeMsMax ?? '-'} ms, ${b.scrapeFailures ?? 0} failed); trace ${b.openAtEnd?.trace ?? '-'} open; idle ${b.openAtEnd?.idle ?? '-'} open (${b.idleConnects ?? '-'} connects, ${b.idleErrors ?? 0} errors)`);
      }
    }
  }
  // The same table in Markdown, for docs/performance.md.
  say('\nMarkdown (ratio; daemon CPU per delivered packet, total: by thread):\n');
  say(`| point | ${impls.map((i) => i.label).join(' | ')} |`);
  say(`|---|${impls.map(() => '---|').join('')}`);
  for (const pt of points) {
    const cells = impls.map((impl) => {
      const c = cellOf(pt, impl);
      return `${c.ratio.toFixed(3)} (${c.cpuUsPerPacket.toFixed(1)} µs: ${threadText(groupsOf(c)) || '-'})`;
    });
    say(`| ${pt.label} | ${cells.join(' | ')} |`);
  }
  // Issue 11's targets, as read from this run.
  const original = impls.find((i) => i.key === 'original');
  const ours = impls.filter((i) => i !== original && !i.isFloor);
  const lines: string[] = [];
  for (const impl of ours) {
    for (const t of TARGETS) {
      const pt = points.find((p) => p.id === t.point);
      if (pt === undefined) continue;
      const c = cellOf(pt, impl);
      lines.push(`  ${impl.key.padEnd(K)} ${t.point.padEnd(20)} ratio ≥ ${t.min}: ${c.ratio >= t.min ? 'met' : 'NOT met'} (${c.ratio.toFixed(3)})`);
    }
    if (original) {
      const worse = points.filter((pt) => cellOf(pt, impl).cpuUsPerPacket > cellOf(pt, original).cpuUsPerPacket);
      lines.push(`  ${impl.key.padEnd(K)} CPU per packet ≤ nfqlb's at every point: ${worse.length === 0 ? 'met' : `NOT met at ${worse.map((p) => p.id).join(', ')}`}`);
    }
  }
  const dflt = ours.find((i) => (i.extraArgs ?? []).length === 0 && i.key === 'ours');
  const one = ours.find((i) => (i.extraArgs ?? []).join(' ') === '--workers=1');
  if (dflt && one) {
    const worse = points.filter((pt) => cellOf(pt, dflt).ratio < cellOf(pt, one).ratio - 0.005);
    lines.push(`  default no worse than --workers=1 (ratio, 0.005 slack): ${worse.length === 0 ? 'met' : `NOT met at ${worse.map((p) => `${p.id} ${cellOf(p, dflt).ratio.toFixed(3)} < ${cellOf(p, one).ratio.toFixed(3)}`).join(', ')}`}`);
  }
  if (lines.length > 0) {
    say('\nissue 11 targets, as this run reads them (a shared machine moves these; see quiet below):');
    for (const l of lines) say(l);
  }
}

/**
 * Issue 21 and issue 19 point 3, as this run reads them: for each of this
 * project's variants at each point, its delivered ratio beside the floor's
 * and nfqlb's, and its CPU per packet ÷ the floor's and ÷ nfqlb's; then the
 * targets met or not. Bursts: min/median/max over the rounds.
 */
export function printFloor(result: ReportedCompare, impls: ReportedImpl[], points: ReportedPoint[]): void {
  const cellOf = cellFinder(result);
  const floor = impls.find((i) => i.key === 'floor');
  const original = impls.find((i) => i.key === 'original');
  const ours = impls.filter((i) => !i.isFloor && i !== original);
  if (!floor) return;
  const K = Math.max(...impls.map((i) => i.key.length)) + 1;
  const spread = (c: CompareCell): string => (c.ratios.length > 1 ? `${c.ratioMin.toFixed(3)}/${c.ratio.toFixed(3)}/${c.ratioMax.toFixed(3)}` : c.ratio.toFixed(3));
  say(`\n== against the floor (nullq) and nfqlb, same run: ratio (min/median/max when several rounds), CPU µs per delivered packet, ÷ floor, ÷ nfqlb; latency added per packet (probe median and p99 through the daemon minus through HMARK, µs)`);
  for (const pt of points) {
    const f = cellOf(pt, floor);
    const o = original ? cellOf(pt, original) : null;
    say(`  ${pt.id}`);
    for (const impl of [...ours, ...impls.filter((i) => i.isFloor && i !== floor), ...(original ? [original] : []), floor]) {
      const c = cellOf(pt, impl);
      say(`    ${impl.key.padEnd(K)} ${spread(c).padEnd(19)} ${fmt(c.cpuUsPerPacket, 5, 2)} µs  ${fmt(c.cpuUsPerPacket / f.cpuUsPerPacket, 5, 2)}× floor  ${o ? `${fmt(c.cpuUsPerPacket / o.cpuUsPerPacket, 5, 2)}× nfqlb` : '           '}  +${fmt(c.addedLatencyUs, 1, 0)} µs (p99 +${fmt(c.addedLatencyP99Us, 1, 0)})`);
    }
  }
  say('\nMarkdown (ratio min/median/max; CPU µs per delivered packet; ÷ floor, ÷ nfqlb):\n');
  const shown = [...ours, ...(original ? [original] : []), ...impls.filter((i) => i.isFloor)];
  say(`| point | ${shown.map((i) => i.label).join(' | ')} |`);
  say(`|---|${shown.map(() => '---|').join('')}`);
  for (const pt of points) {
    const f = cellOf(pt, floor);
    const o = original ? cellOf(pt, original) : null;
    const cells = shown.map((impl) => {
      const c = cellOf(pt, impl);
      const rel = impl === floor ? '' : `, ${(c.cpuUsPerPacket / f.cpuUsPerPacket).toFixed(2)}× floor${o && impl !== original ? `, ${(c.cpuUsPerPacket / o.cpuUsPerPacket).toFixed(2)}× nfqlb` : ''}`;
      const lat = Number.isFinite(c.addedLatencyUs) ? `; +${c.addedLatencyUs.toFixed(0)} µs latency` : '';
      return `${spread(c)}; ${c.cpuUsPerPacket.toFixed(2)} µs${rel}${lat}`;
    });
    say(`| ${pt.label} | ${cells.join(' | ')} |`);
  }
  const lines: string[] = [];
  const dflt = ours.find((i) => i.key === 'ours');
  const isMeridio = (pt: ReportedPoint): boolean => pt.id.startsWith('v4-meridio-');
  if (dflt) {
    // Issue 21 point 2: the issue's table points, the default options.
    const issue21 = ['v4-steady-100k', 'v4-steady-200k', 'v4-bursts-100k', 'v4-one-150k', 'v4-meridio-bursts-100k'];
    for (const id of issue21) {
      const pt = points.find((p) => p.id === id);
      if (!pt) continue;
      const c = cellOf(pt, dflt);
      const f = cellOf(pt, floor);
      const x = c.cpuUsPerPacket / f.cpuUsPerPacket;
      lines.push(`  21.2 ${id.padEnd(24)} CPU ≤ 1.10× floor: ${x <= 1.1 ? 'met' : 'NOT met'} (${x.toFixed(2)}×); ratio ≥ floor's: ${c.ratio >= f.ratio ? 'met' : 'NOT met'} (${c.ratio.toFixed(3)} vs ${f.ratio.toFixed(3)})`);
    }
    for (const id of ['v6-steady-100k', 'v6-bursts-100k']) {
      const pt = points.find((p) => p.id === id);
      if (!pt) continue;
      const c = cellOf(pt, dflt);
      const f = cellOf(pt, floor);
      lines.push(`  21.2 ${id.padEnd(24)} IPv6: ${(c.cpuUsPerPacket / f.cpuUsPerPacket).toFixed(2)}× floor, ratio ${c.ratio.toFixed(3)} vs floor ${f.ratio.toFixed(3)}`);
    }
  }
  // Issue 19 point 3: Meridio's line.
  for (const impl of ours) {
    for (const pt of points.filter(isMeridio)) {
      const c = cellOf(pt, impl);
      const o = original ? cellOf(pt, original) : null;
      const f = cellOf(pt, floor);
      const cpu = o ? `; CPU ≤ nfqlb's: ${c.cpuUsPerPacket <= o.cpuUsPerPacket ? 'met' : 'NOT met'} (${c.cpuUsPerPacket.toFixed(2)} vs ${o.cpuUsPerPacket.toFixed(2)} µs)` : '';
      if (pt.pacing === 'bursts') {
        const ok = c.ratio >= f.ratio && (!o || c.ratio >= o.ratio);
        lines.push(`  19.3 ${impl.key.padEnd(K)} ${pt.id.padEnd(24)} median ≥ nfqlb's and floor's: ${ok ? 'met' : 'NOT met'} (${spread(c)} vs nfqlb ${o ? spread(o) : '-'}, floor ${spread(f)})${cpu}`);
      } else {
        const low = Math.min(...c.ratios);
        lines.push(`  19.3 ${impl.key.padEnd(K)} ${pt.id.padEnd(24)} ≥ 0.99 every round: ${low >= 0.99 ? 'met' : 'NOT met'} (lowest ${low.toFixed(3)})${cpu}`);
      }
    }
  }
  if (lines.length > 0) {
    say('\nissue 21 / issue 19.3 targets, as this run reads them:');
    for (const l of lines) say(l);
  }
}
