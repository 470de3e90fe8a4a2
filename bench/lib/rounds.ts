/**
 * One load run and the runs around it: waiting for a quiet machine, a
 * baseline (kernel marking, HMARK) and a daemon run of the same packets, the
 * generator's calibration, and the settings of --detail and --sweep.
 */
import type { ChildProcess } from 'node:child_process';
import * as tb from '../../testbed/testbed';
import {
  DISTURBED_CORES,
  fmt,
  median,
  pick,
  QUICK,
  QUIET_BUDGET_MS,
  QUIET_MAX_MS,
  REPEAT,
  RETRIES,
  say,
  SECONDS,
  sleep,
  type Family,
  type Pacing,
  type Rate,
  type Sources,
} from './config';
import { loadConfig, trafgenOptions, type Bed } from './bed';
import { queueRange, type DaemonRun } from './impls';

/** How often the bench waited for a quiet machine, and what it found. */
export const quietLog = { waitedMs: 0, notQuiet: 0, disturbedRuns: 0, retries: 0 };

/**
 * Waits until the machine is idle (less than 0.25 of a CPU busy over 300 ms:
 * other people's tests on a shared machine), at most BENCH_QUIET_MAX_MS.
 * Loss through a queue comes from the daemon not being scheduled, so a run
 * next to someone's jest says little about the daemon.
 */
export async function quiet(): Promise<void> {
  const t0 = Date.now();
  for (;;) {
    const a = tb.machineCpuSeconds();
    await sleep(300);
    const b = tb.machineCpuSeconds();
    const busy = (b.busy - a.busy) / 0.3;
    if (busy < 0.25) break;
    if (Date.now() - t0 > QUIET_MAX_MS || quietLog.waitedMs + Date.now() - t0 > QUIET_BUDGET_MS) {
      quietLog.notQuiet++;
      break;
    }
  }
  quietLog.waitedMs += Date.now() - t0;
}

/** The generator's packets/s when unpaced: calibrated at start (calibrate()). */
export const generator = { maxPps: 230000 };

/** CPU seconds of a process so far, NaN when it is gone. */
export function cpuOrNaN(pid: number): number {
  try {
    return tb.cpuSeconds(pid);
  } catch {
    return NaN;
  }
}

export interface LoadRunOptions {
  family: Family;
  sources: Sources;
  rate: Rate;
  count: number;
  marking: 'queue' | 'hmark';
  daemons?: DaemonRun[];
  queues?: [number, number];
  size?: number;
  /** CPU-bound processes beside the run. */
  hog?: number;
  pacing?: Pacing;
  /** Processes the point runs on purpose beside the daemon (clients): theirs is not "other people's" CPU. */
  companions?: number[];
  /** Run when the load is sent, before the queues drain. */
  afterSend?: (() => Promise<void>) | null;
}

export interface LoadResult {
  busyCores: number;
  foreignCores: number;
  hogCores: number;
  companionCores: number;
  trafgenCores: number;
  sent: number;
  seconds: number;
  offered: number;
  offeredPps: number;
  delivered: number;
  perTarget: Record<string, number>;
  queueDropped: number;
  userDropped: number;
  leftWaiting: number;
  cpuSeconds: number | undefined;
}

/**
 * Sends `count` packets (family, sources) at `rate` (or as fast as trafgen
 * goes) through `marking` and returns what was offered and delivered. With
 * daemons: their CPU time and the kernel's queue drops over the run.
 */
export async function loadRun(
  bed: Bed,
  { family, sources, rate, count, marking, daemons = [], queues = [0, 3], size, hog = 0, pacing = 'steady', companions = [], afterSend = null }: LoadRunOptions,
): Promise<LoadResult> {
  tb.setMarking(bed, marking, queues[0], queues[1]);
  const c0 = tb.loadCounts(bed, family);
  const q0 = tb.queueDrops(bed.lb);
  const cpu0 = daemons.reduce((s, d) => s + tb.cpuSeconds(d.pid), 0);
  const companionCpu = (): number =>
    companions.reduce((s, pid) => {
      try {
        return s + tb.cpuSeconds(pid);
      } catch {
        return s;
      }
    }, 0);
  const comp0 = companionCpu();
  const m0 = tb.machineCpuSeconds();
  let hogCpu = 0;
  const hogs: ChildProcess[] = Array.from({ length: hog }, () => tb.spawnInNs(bed.gw, 'sh', ['-c', 'while :; do :; done'], { stdio: 'ignore' }));
  let g: tb.TrafgenResult;
  try {
    g = await tb.runTrafgen(bed.gw, 'lb0', loadConfig(bed, family, sources, size), trafgenOptions(family, rate, count, size, pacing));
  } finally {
    for (const h of hogs) {
      try {
        hogCpu += tb.cpuSeconds(h.pid as number);
      } catch {
        // Already gone.
      }
      await tb.killProcess(h, 500);
    }
  }
  const m1 = tb.machineCpuSeconds();
  const compCpu = companionCpu() - comp0;
  const cpuAtSend = daemons.reduce((s, d) => s + cpuOrNaN(d.pid), 0) - cpu0;
  // E.g. the clients beside the daemon stop with the load, so that the queue drains as it would after it.
  if (afterSend) await afterSend();
  // Let the queues drain: what is still waiting is not lost yet. (Up to 10 s:
  // a daemon whose event loop is held by a long scrape answers late, and what
  // it answers after the count would be counted in the next run.)
  const end = Date.now() + 10000;
  await sleep(100);
  while (marking === 'queue' && tb.queueDrops(bed.lb).waiting > 0 && Date.now() < end) await sleep(50);
  const c = tb.loadDelta(c0, tb.loadCounts(bed, family));
  const q1 = tb.queueDrops(bed.lb);
  // A daemon that ended meanwhile (nfqlb dies of SIGPIPE when a trace client leaves): its CPU up to the end of the load.
  const cpuNow = daemons.reduce((s, d) => s + cpuOrNaN(d.pid), 0) - cpu0;
  const cpu = Number.isNaN(cpuNow) ? cpuAtSend : cpuNow;
  return {
    busyCores: (m1.busy - m0.busy) / g.seconds,
    // What neither trafgen nor the daemon used: other people's processes (and ksoftirqd).
    // (The daemon's CPU over the same window as the machine's: up to the end of the load.)
    foreignCores: (m1.busy - m0.busy - (Number.isNaN(cpuAtSend) ? 0 : cpuAtSend) - g.cpuSeconds - hogCpu - compCpu) / g.seconds,
    hogCores: hogCpu / g.seconds,
    companionCores: compCpu / g.seconds,
    trafgenCores: g.cpuSeconds / g.seconds,
    sent: g.sent,
    seconds: g.seconds,
    offered: c.offered,
    offeredPps: c.offered / g.seconds,
    delivered: c.delivered,
    perTarget: c.perTarget,
    queueDropped: q1.queueDropped - q0.queueDropped,
    userDropped: q1.userDropped - q0.userDropped,
    leftWaiting: q1.waiting,
    cpuSeconds: daemons.length > 0 ? cpu : undefined,
  };
}

/** A daemon setting of --detail and --sweep. */
export interface Setting {
  name: string;
  args: string[];
  hog?: number;
  pacing?: Pacing;
  size?: number;
  queues?: [number, number];
  group?: string;
  /** --sweep's processes group: a second daemon with these options. */
  second?: string[];
}

/** One point of --detail or --sweep (the run with the median ratio). */
export interface PointRow {
  setting: string;
  args: string;
  family: Family;
  sources: Sources;
  rate: Rate;
  count: number;
  offeredPps: number;
  lbOfferedPps: number;
  baseline: Partial<LoadResult>;
  lb: Partial<LoadResult>;
  ratio: number;
  ratios: number[];
  disturbed: boolean;
  deliveredFraction: number;
  cpuUsPerPacket: number | null;
  cpuShare: number | null;
  rssKiB: number | null;
  group?: string;
  round?: number;
}

/** A point: baseline then daemon, REPEAT times; the run with the median ratio is kept, all ratios listed. */
export async function point(
  bed: Bed,
  setting: Setting,
  daemons: DaemonRun[],
  { family, sources, rate, seconds = SECONDS, repeat = REPEAT }: { family: Family; sources: Sources; rate: Rate; seconds?: number; repeat?: number },
): Promise<PointRow> {
  const count = Math.round((rate === 'max' ? generator.maxPps : rate) * seconds);
  const tries: Array<{ base: LoadResult; lb: LoadResult; ratio: number; disturbed: boolean }> = [];
  for (let i = 0; i < repeat; i++) {
    let best: (typeof tries)[number] | null = null;
    for (let attempt = 0; attempt <= RETRIES; attempt++) {
      await quiet();
      const opts = { family, sources, rate, count, size: setting.size, hog: setting.hog ?? 0, pacing: setting.pacing };
      const base = await loadRun(bed, { ...opts, marking: 'hmark' });
      const lb = await loadRun(bed, { ...opts, marking: 'queue', daemons, queues: setting.queues });
      const t = { base, lb, ratio: lb.delivered / base.delivered, disturbed: lb.foreignCores > DISTURBED_CORES };
      if (best === null || lb.foreignCores < best.lb.foreignCores) best = t;
      if (!t.disturbed) break;
      quietLog.disturbedRuns++;
      if (attempt < RETRIES) quietLog.retries++;
    }
    if (best !== null) tries.push(best);
  }
  const ratios = tries.map((t) => t.ratio);
  const m = median(ratios);
  const kept = tries.reduce((best, t) => (Math.abs(t.ratio - m) < Math.abs(best.ratio - m) ? t : best), tries[0]);
  const { base, lb } = kept;
  const mem = daemons.length > 0 ? tb.memoryKiB(daemons[0].pid) : null;
  const row: PointRow = {
    setting: setting.name,
    args: setting.args.join(' '),
    family,
    sources,
    rate,
    count,
    offeredPps: Math.round(base.offeredPps),
    lbOfferedPps: Math.round(lb.offeredPps),
    baseline: pick(base, ['offered', 'delivered', 'seconds', 'busyCores', 'foreignCores']),
    lb: pick(lb, ['offered', 'delivered', 'seconds', 'queueDropped', 'userDropped', 'cpuSeconds', 'trafgenCores', 'foreignCores', 'hogCores', 'perTarget']),
    ratio: m,
    ratios,
    disturbed: kept.disturbed,
    deliveredFraction: lb.delivered / lb.offered,
    cpuUsPerPacket: lb.cpuSeconds === undefined ? null : (lb.cpuSeconds * 1e6) / lb.delivered,
    cpuShare: lb.cpuSeconds === undefined ? null : lb.cpuSeconds / lb.seconds,
    rssKiB: mem?.rss ?? null,
  };
  printRow(row);
  return row;
}

export const HEADER =
  'setting        fam flows rate     offered/s  base.deliv  lb.deliv  ratio  lb/off  q.drop  u.drop  cpu µs/pkt  cpu%  other  rss MiB';

function printRow(r: PointRow): void {
  say(
    `${r.setting.padEnd(14)} v${r.family}  ${(r.sources === 'one' ? '1' : 'many').padEnd(5)} ${String(r.rate).padEnd(7)} ${fmt(r.offeredPps, 10)}  ${fmt(r.baseline.delivered, 10)} ${fmt(r.lb.delivered, 9)}  ${fmt(r.ratio, 5, 3)}  ${fmt(r.deliveredFraction, 6, 3)} ${fmt(r.lb.queueDropped, 7)} ${fmt(r.lb.userDropped, 7)}  ${fmt(r.cpuUsPerPacket, 10, 2)}  ${fmt(r.cpuShare === null ? NaN : r.cpuShare * 100, 4)}  ${fmt(r.lb.foreignCores, 5, 2)}${r.disturbed ? '!' : ' '} ${fmt(r.rssKiB === null ? NaN : r.rssKiB / 1024, 7, 1)}`,
  );
}

/** The generator's max: the best of two unpaced runs through kernel marking, on a quiet machine. */
export async function calibrate(bed: Bed): Promise<void> {
  let best: LoadResult | null = null;
  for (let i = 0; i < 2; i++) {
    await quiet();
    const g = await loadRun(bed, { family: 4, sources: 'many', rate: 'max', count: QUICK ? 200000 : 400000, marking: 'hmark' });
    if (best === null || g.offeredPps > best.offeredPps) best = g;
  }
  if (best === null) return;
  generator.maxPps = Math.round(best.offeredPps);
  say(`generator max (trafgen --rate 10^7, one process, kernel marking): ${generator.maxPps} pps; delivered ${best.delivered}/${best.offered}`);
}

/**
 * BENCH_SETTINGS="name=--opt=v --opt2;name2=..." (instead of `dflt`).
 * Pseudo-options, not passed to the daemon: --bench-hog=N runs N CPU-bound
 * processes beside every run of that setting (a shared machine);
 * --bench-pacing=bursts sends with trafgen's own --rate (each second's
 * packets back to back) instead of evenly paced packets.
 */
export function settingsFromEnv(dflt: Setting[]): Setting[] {
  const spec = process.env.BENCH_SETTINGS;
  if (!spec) return dflt;
  return spec
    .split(';')
    .filter((s) => s.trim() !== '')
    .map((s) => {
      const i = s.indexOf('=');
      const words = s.slice(i + 1).trim().split(/\s+/).filter(Boolean);
      const hog = words.find((w) => w.startsWith('--bench-hog='));
      const pacing = words.find((w) => w.startsWith('--bench-pacing='));
      return {
        name: s.slice(0, i).trim(),
        args: words.filter((w) => w !== hog && w !== pacing),
        hog: hog === undefined ? 0 : Number(hog.split('=')[1]),
        pacing: pacing === undefined ? 'steady' : (pacing.split('=')[1] as Pacing),
      };
    });
}

export function withQueues(settings: Setting[]): Setting[] {
  return settings.map((s) => ({ ...s, queues: queueRange(s.args.some((a) => a.startsWith('--queue=')) ? s.args : ['--queue=0:3']), args: s.args.some((a) => a.startsWith('--queue=')) ? s.args : ['--queue=0:3', ...s.args] }));
}
