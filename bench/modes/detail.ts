/**
 * --detail: this project alone (or NFQLB_BIN): rates 25k..max, IPv4 and
 * IPv6, settings default/meridio/+hog (BENCH_SETTINGS); activation churn
 * under 50k pps; RSS over 60 s; TCP connections/s and round-trip latency.
 */
import * as tb from '../../testbed/testbed';
import { configure, type Bed } from '../lib/bed';
import { CHURN_PER_SECOND, CHURN_RATE, MERIDIO, QUICK, RATES, REPEAT, say, SECONDS, type Rate } from '../lib/config';
import type { Implementation } from '../lib/impls';
import { machine, writeResults, type Machine } from '../lib/results';
import { calibrate, generator, HEADER, point, quietLog, settingsFromEnv, withQueues, type PointRow } from '../lib/rounds';
import { churn, rssRun, startEchoServers, tcpRuns, type ChurnResult, type RssResult, type TcpRow } from './detail-runs';

interface DetailResult {
  date: string;
  mode: 'detail';
  quick: boolean;
  quiet: typeof quietLog;
  secondsPerRun: number;
  repeat: number;
  machine: Machine;
  implementation: { label: string; bin: string; version: string };
  generatorMaxPps: number;
  runs: PointRow[];
  peakRssKiB: Record<string, number>;
  churn?: ChurnResult;
  memory?: RssResult;
  tcp?: TcpRow[];
}

export async function detailMode(bed: Bed, impl: Implementation): Promise<void> {
  const settings = withQueues(settingsFromEnv([
    { name: 'default', args: ['--queue=0:3'] },
    { name: 'meridio', args: MERIDIO },
    // The defaults on a shared machine: one CPU-bound process beside every run (baseline too).
    { name: 'default+hog', args: ['--queue=0:3'], hog: 1 },
  ]).filter((st) => !QUICK || !st.hog || process.env.BENCH_SETTINGS));
  const shm = tb.uniqueShmName('bench');
  const result: DetailResult = { date: new Date().toISOString(), mode: 'detail', quick: QUICK, quiet: quietLog, secondsPerRun: SECONDS, repeat: REPEAT, machine: machine(), implementation: { label: impl.label, bin: impl.bin, version: impl.version }, generatorMaxPps: 0, runs: [], peakRssKiB: {} };
  await calibrate(bed);
  result.generatorMaxPps = generator.maxPps;
  for (const [si, setting] of settings.entries()) {
    say(`\n== ${setting.name}: flowlb ${setting.args.join(' ')}${setting.hog ? ` (with ${setting.hog} CPU-bound process${setting.hog > 1 ? 'es' : ''} beside it)` : ''}${setting.pacing === 'bursts' ? ' (trafgen --rate bursts)' : ''}`);
    const d = await impl.start(setting.args);
    configure(bed, impl, shm);
    say(HEADER);
    for (const family of [4, 6] as const) {
      for (const rate of RATES) result.runs.push(await point(bed, setting, [d], { family, sources: 'many', rate }));
    }
    for (const rate of [100000, 'max'] as Rate[]) result.runs.push(await point(bed, setting, [d], { family: 4, sources: 'one', rate }));
    if (si === 0) {
      const churnSeconds = QUICK ? 5 : 10;
      say(`\nactivation churn: ${CHURN_RATE} pps IPv4 for ${churnSeconds} s, t4 deactivated/activated ${CHURN_PER_SECOND} times a second`);
      const c = await churn(bed, impl, d, shm, { seconds: churnSeconds });
      result.churn = c;
      say(
        `  offered ${c.offered}, delivered ${c.delivered}, lost ${c.lost}; queue drops ${c.queueDropped}, user drops ${c.userDropped}; ` +
          `no_target ${c.noTarget ?? 'n/a (no metrics endpoint)'}, invalid ${c.invalid ?? 'n/a'}, drop verdicts ${c.dropVerdicts ?? 'n/a'}; ${c.commands} commands (${c.commandsPerSecond.toFixed(0)}/s, via ${c.via}; one CLI command takes ${c.cliCommandMs.toFixed(0)} ms); t4 got ${c.perTarget.t4}: ${c.pass ? 'PASS' : 'FAIL'}`,
      );
      if (!QUICK) {
        const lossless = result.runs.filter((r) => r.setting === setting.name && r.family === 4 && r.sources === 'many' && r.lb.delivered === r.lb.offered && r.lb.queueDropped === 0);
        const rate = lossless.length === 0 ? 25000 : Math.max(...lossless.map((r) => (r.rate === 'max' ? r.lbOfferedPps : r.rate)));
        say(`\nRSS over 60 s at ${rate} pps (highest lossless rate above)`);
        const m = await rssRun(bed, d, { rate, seconds: 60 });
        result.memory = m;
        say(`  RSS first ${(m.firstKiB / 1024).toFixed(1)} MiB, last ${(m.lastKiB / 1024).toFixed(1)} MiB, max ${(m.maxKiB / 1024).toFixed(1)} MiB, min ${(m.minKiB / 1024).toFixed(1)} MiB: ${m.flat ? 'flat (within 10%)' : 'NOT flat'}; delivered ${m.delivered}/${m.offered}`);
      }
      say('\nTCP: new connections/s (16 at a time) and 1-byte round trips on 8 connections');
      await bed.startServers();
      await startEchoServers(bed);
      result.tcp = tcpRuns(bed, { seconds: QUICK ? 2 : 5, count: QUICK ? 1000 : 4000 });
    }
    result.peakRssKiB[setting.name] = tb.memoryKiB(d.pid).hwm;
    say(`peak RSS (VmHWM) of ${setting.name}: ${(result.peakRssKiB[setting.name] / 1024).toFixed(1)} MiB`);
    await impl.stop(d);
  }
  summary(result);
  writeResults(result, `${impl.label}${QUICK ? '-quick' : ''}`);
}

function summary(result: DetailResult): void {
  say('\n== summary (ratio = delivered through the LB / delivered with kernel marking, same packets)');
  const rateText = (r: PointRow, max: string): string => (r.rate === 'max' ? max : `${r.rate / 1000}k`);
  for (const setting of [...new Set(result.runs.map((r) => r.setting))]) {
    for (const family of [4, 6]) {
      const rs = result.runs.filter((r) => r.setting === setting && r.family === family && r.sources === 'many');
      if (rs.length === 0) continue;
      say(`  ${setting.padEnd(10)} IPv${family}: ${rs.map((r) => `${rateText(r, `max(${Math.round(r.lbOfferedPps / 1000)}k)`)} ${r.ratio.toFixed(3)}`).join('  ')}`);
    }
    const one = result.runs.filter((r) => r.setting === setting && r.sources === 'one');
    if (one.length > 0) say(`  ${setting.padEnd(10)} 1 flow: ${one.map((r) => `${rateText(r, 'max')} ${r.ratio.toFixed(3)}`).join('  ')}`);
  }
  const at = (setting: string, rate: Rate): PointRow | undefined => result.runs.find((r) => r.setting === setting && r.family === 4 && r.sources === 'many' && r.rate === rate);
  for (const setting of [...new Set(result.runs.map((r) => r.setting))]) {
    const a = at(setting, 100000);
    const b = at(setting, 'max');
    if (a && b) say(`  target (${setting}, IPv4): ≥ 0.95 at 100k: ${a.ratio >= 0.95 ? 'met' : 'NOT met'} (${a.ratio.toFixed(3)}); ≥ 0.80 at max: ${b.ratio >= 0.8 ? 'met' : 'NOT met'} (${b.ratio.toFixed(3)})`);
  }
}
