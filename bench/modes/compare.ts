/**
 * The comparison (the default mode): this project's daemon (each variant:
 * --ours-args or BENCH_WORKERS), the original nfqlb 1.2.0 and the floor
 * (nullq), all running at once (4 queues each: 0:3, 4:7, ...), measured
 * point by point (compare-points.ts) in the same run with the same packets,
 * pacing and baseline, with a latency probe beside every run and the
 * daemon's CPU by thread. Tables: compare-report.ts.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tb from '../../testbed/testbed';
import { configure, type Bed } from '../lib/bed';
import {
  argv,
  BIN,
  BURST_REPEAT,
  DISTURBED_CORES,
  fmt,
  median,
  ORIGINAL,
  OURS,
  pick,
  PROBE_PORT,
  PROBE_RATE,
  QUEUES,
  QUICK,
  REPEAT,
  RETRIES,
  say,
  SECONDS,
  sleep,
} from '../lib/config';
import { buildFloor, Floor, floorRoutes, Implementation, type DaemonRun, type Impl } from '../lib/impls';
import { PACKAGE_VERSION } from '../../src/base/version';
import { startProbeReceivers, withProbe, type ProbeDelays, type ProbeReceiver } from '../lib/probe';
import { machine } from '../lib/results';
import { calibrate, cpuOrNaN, generator, loadRun, quiet, quietLog, type LoadResult } from '../lib/rounds';
import { writeResults } from '../lib/results';
import { threadCpu, threadGroups, threadShares, type ThreadGroup, type ThreadShare } from '../lib/threads';
import { COMPARE_POINTS, roundsOf, setManyFlows, type BesideStats, type ComparePoint } from './compare-points';
import { printCompare, printFloor, type CompareCell } from './compare-report';

/** One run of one implementation at one point in one round. */
export interface CompareRun {
  point: string;
  impl: string;
  round: number;
  order: number;
  baseline: { offered: number; delivered: number; seconds: number; offeredPps: number; foreignCores: number; probe?: ProbeDelays };
  probe?: ProbeDelays;
  addedLatencyUs?: number;
  addedLatencyP99Us?: number;
  offered: number;
  offeredPps: number;
  delivered: number;
  ratio: number;
  deliveredFraction: number;
  queueDropped: number;
  userDropped: number;
  leftWaiting: number;
  cpuSeconds: number | undefined;
  cpuUsPerPacket: number;
  cpuCores: number;
  threads: ThreadShare[];
  threadGroups: ThreadGroup[];
  beside?: BesideStats;
  companionCores?: number;
  trafgenCores: number;
  foreignCores: number;
  idleDaemonCores: number;
  disturbed: boolean;
  daemonEnded?: string;
}

/**
 * The variants of this project's daemon: each `--ours-args="..."` argument
 * of bench/run.ts is one (an empty one is the defaults); without any,
 * BENCH_WORKERS (default "default,1,2") gives one variant per value: `default`
 * (no extra option) or N (`--workers=N`). A variant whose options the
 * daemon's `flowlb --help` does not list is skipped with one line.
 */
function oursVariants(): string[][] {
  const given = argv.filter((a) => a.startsWith('--ours-args=')).map((a) => a.slice('--ours-args='.length).trim().split(/\s+/).filter(Boolean));
  if (given.length > 0) return given;
  return (process.env.BENCH_WORKERS ?? 'default,1,2')
    .split(',')
    .map((x) => x.trim())
    .filter((x) => x !== '')
    .map((x) => (x === 'default' ? [] : x === 'cores' ? [`--workers=${Math.max(1, os.cpus().length - 1)}`] : [`--workers=${x}`]));
}

/**
 * The floor's variants (BENCH_FLOOR, comma-separated: `default` = nullq's
 * own defaults, else nullq options separated by spaces, e.g.
 * "default,--sockets=queue"; `off` = no floor). Default: `default`.
 */
function floorVariants(): string[][] {
  const spec = (process.env.BENCH_FLOOR ?? 'default').trim();
  if (spec === 'off' || spec === '') return [];
  return spec
    .split(',')
    .map((x) => x.trim())
    .filter((x) => x !== '')
    .map((x) => (x === 'default' ? [] : x.split(/\s+/)));
}

/** The implementations of the comparison: ours (bin/nfqlb or NFQLB_BIN, each variant), and the original when it is there. */
function compareImplementations(bed: Bed): Impl[] {
  const tag = `${process.pid}`;
  const impls: Impl[] = [];
  const make = (key: string, bin: string, label: (i: Implementation) => string, extraAndEnv: string[] = []): void => {
    // `env:NAME=value` words of a variant are the daemon's environment (e.g. env:NFQLB_QUEUE_SOCKETS=queue), not options.
    const extra = extraAndEnv.filter((a) => !a.startsWith('env:'));
    const varEnv = Object.fromEntries(extraAndEnv.filter((a) => a.startsWith('env:')).map((a) => [a.slice(4, a.indexOf('=')), a.slice(a.indexOf('=') + 1)]));
    // All daemons run at once in the LB namespace: each has its own control and trace sockets and queues.
    const impl = new Implementation(bed, {
      bin,
      key,
      env: { ...varEnv, NFQLB_FLOW_ADDRESS: `unix:nfqlb-bench-${key}-${tag}` },
      daemonArgs: [`--trace_address=unix:nfqlb-trace-bench-${key}-${tag}`],
    });
    const missing = extra.map((a) => /^--([^=]+)/.exec(a)?.[1]).filter((name): name is string => name !== undefined && !impl.supports(name));
    if (missing.length > 0) {
      say(`bench: ${path.basename(bin)} flowlb has no --${missing.join(', --')}: variant "${extra.join(' ')}" skipped`);
      return;
    }
    impl.daemonArgs.push(...extra);
    impl.extraArgs = extraAndEnv;
    if (impl.supports('ft_shm')) impl.daemonArgs.push(`--ft_shm=${tb.uniqueShmName(`ft-${key}`)}`);
    impl.label = label(impl);
    impl.queues = [QUEUES * impls.length, QUEUES * impls.length + QUEUES - 1];
    impls.push(impl);
  };
  for (const extra of oursVariants()) {
    const suffix = extra.length === 0 ? '' : `-${extra.map((a) => a.replace(/^--|^env:NFQLB_/, '').replace(/[^A-Za-z0-9]+/g, '')).join('-')}`;
    const base = (i: Implementation): string => (OURS ? `nfqlb-ts ${PACKAGE_VERSION}` : `${path.basename(BIN)} ${i.version} (NFQLB_BIN)`);
    make(`ours${suffix}`, BIN, (i) => `${base(i)}${extra.length ? ` ${extra.join(' ')}` : ''}`, extra);
  }
  if (fs.existsSync(ORIGINAL)) make('original', ORIGINAL, (i) => `nfqlb ${i.version} (original)`);
  else say(`bench: the original nfqlb is not at ${ORIGINAL} (set NFQLB_ORIGINAL): measuring ${impls.map((i) => i.label).join(', ')} only`);
  const floors = floorVariants();
  const floorBin = floors.length > 0 ? buildFloor() : null;
  if (floorBin !== null) {
    floorRoutes(bed);
    for (const extra of floors) {
      const suffix = extra.length === 0 ? '' : `-${extra.map((a) => a.replace(/^--/, '').replace(/[^A-Za-z0-9]+/g, '')).join('-')}`;
      const f = new Floor(bed, floorBin, { key: `floor${suffix}`, extra });
      f.queues = [QUEUES * impls.length, QUEUES * impls.length + QUEUES - 1];
      impls.push(f);
    }
  }
  if (impls.length === 0) throw new Error('nothing to measure: every variant was skipped and the original is absent');
  return impls;
}

/** Waits (at most 10 s) until no packet waits in any queue: what a previous run left must not reach the targets during the next one. */
async function drained(bed: Bed): Promise<void> {
  const end = Date.now() + 10000;
  while (tb.queueDrops(bed.lb).waiting > 0 && Date.now() < end) await sleep(50);
}

/** The best of an implementation's attempts at one round of a point. */
interface Attempt {
  lb: LoadResult;
  probe: ProbeDelays | null;
  idleCores: number;
  threads: ThreadShare[];
  besideStats: BesideStats | null;
  ended: string | null;
  disturbed: boolean;
}

/** One round of one point: the kernel's path, then every implementation (their order turns with the round). */
async function comparePoint(bed: Bed, impls: Impl[], daemons: DaemonRun[], pt: ComparePoint, round: number, revive: (i: number) => Promise<void>, probes: ProbeReceiver[] | null): Promise<CompareRun[]> {
  const seconds = pt.seconds ?? SECONDS;
  const count = Math.round(pt.rate * seconds);
  const opts = { family: pt.family, sources: pt.sources, rate: pt.rate, count, size: pt.size, pacing: pt.pacing };
  await drained(bed);
  await quiet();
  const [base, baseProbe] = await withProbe(bed, probes, pt.family, seconds, (companions) => loadRun(bed, { ...opts, marking: 'hmark', companions }));
  const rows: CompareRun[] = [];
  for (let k = 0; k < impls.length; k++) {
    const i = (k + round) % impls.length;
    const impl = impls[i];
    const d = daemons[i];
    let best: Attempt | null = null;
    for (let attempt = 0; attempt <= RETRIES; attempt++) {
      await drained(bed);
      await quiet();
      const beside = pt.beside && !impl.isFloor ? await pt.beside({ bed, impl, daemon: d }) : null;
      // The daemons not under test idle meanwhile; what they use is recorded, to show it is nothing.
      const idle = daemons.filter((x) => x !== d);
      const idle0 = idle.reduce((sum, x) => sum + tb.cpuSeconds(x.pid), 0);
      let lb: LoadResult;
      let t0: ReturnType<typeof threadCpu>;
      let t1: ReturnType<typeof threadCpu>;
      let besideStats: BesideStats | null = null;
      let stopped = false;
      let tAtSend: ReturnType<typeof threadCpu> | null = null;
      let probe: ProbeDelays | null = null;
      const stopBeside = async (): Promise<void> => {
        if (beside && !stopped) {
          stopped = true;
          tAtSend = threadCpu(d.pid);
          besideStats = await beside.stop();
        }
      };
      try {
        t0 = threadCpu(d.pid);
        [lb, probe] = await withProbe(bed, probes, pt.family, seconds, (companions) =>
          loadRun(bed, { ...opts, marking: 'queue', daemons: [d], queues: impl.queues, companions: [...companions, ...(beside ? [beside.pid] : [])], afterSend: stopBeside }),
        );
        t1 = threadCpu(d.pid);
      } finally {
        await stopBeside();
      }
      // A daemon that ended is reported and started again (with its flows) for the next runs.
      await sleep(100);
      let ended: string | null = null;
      if (d.child.exitCode !== null || d.child.signalCode !== null) {
        ended = d.child.signalCode ?? `exit ${d.child.exitCode}`;
        say(`  ${impl.key}'s daemon ended during ${pt.id} (${ended}); its last output: ${d.log.slice(-300).replace(/\n/g, ' | ')}`);
        await revive(i);
      }
      const idleCores = (idle.reduce((sum, x) => sum + cpuOrNaN(x.pid), 0) - idle0) / lb.seconds;
      const threads = threadShares(d.pid, t0, ended && tAtSend ? tAtSend : t1, lb.seconds, lb.delivered);
      if (ended) {
        // The kernel's queue counters start again with the new daemon.
        lb.queueDropped = NaN;
        lb.userDropped = NaN;
      }
      const run: Attempt = { lb, probe, idleCores, threads, besideStats, ended, disturbed: lb.foreignCores > DISTURBED_CORES };
      if (ended) {
        best = run;
        break;
      }
      if (best === null || lb.foreignCores < best.lb.foreignCores) best = run;
      if (!run.disturbed) break;
      quietLog.disturbedRuns++;
      if (attempt < RETRIES) quietLog.retries++;
    }
    if (best === null) continue;
    const { lb } = best;
    rows.push({
      point: pt.id,
      impl: impl.key,
      round,
      order: k,
      baseline: { offered: base.offered, delivered: base.delivered, seconds: base.seconds, offeredPps: base.offeredPps, foreignCores: base.foreignCores, probe: baseProbe ?? undefined },
      probe: best.probe ?? undefined,
      // What the daemon adds to a packet's way: the probe's median delay through it minus through HMARK in the same round.
      addedLatencyUs: best.probe && baseProbe ? best.probe.p50Us - baseProbe.p50Us : undefined,
      addedLatencyP99Us: best.probe && baseProbe ? best.probe.p99Us - baseProbe.p99Us : undefined,
      offered: lb.offered,
      offeredPps: lb.offeredPps,
      delivered: lb.delivered,
      ratio: lb.delivered / base.delivered,
      deliveredFraction: lb.delivered / lb.offered,
      queueDropped: lb.queueDropped,
      userDropped: lb.userDropped,
      leftWaiting: lb.leftWaiting,
      cpuSeconds: lb.cpuSeconds,
      cpuUsPerPacket: ((lb.cpuSeconds ?? NaN) * 1e6) / lb.delivered,
      cpuCores: (lb.cpuSeconds ?? NaN) / lb.seconds,
      threads: best.threads,
      threadGroups: threadGroups(best.threads),
      beside: best.besideStats ?? undefined,
      companionCores: best.besideStats ? lb.companionCores : undefined,
      trafgenCores: lb.trafgenCores,
      foreignCores: lb.foreignCores,
      idleDaemonCores: best.idleCores,
      disturbed: best.disturbed,
      daemonEnded: best.ended ?? undefined,
    });
  }
  return rows;
}

/** The median over rounds of one implementation at one point (the run nearest the median ratio gives the threads). */
function compareCell(runs: CompareRun[], pt: ComparePoint, impl: Impl): CompareCell {
  const rs = runs.filter((r) => r.point === pt.id && r.impl === impl.key);
  const ratio = median(rs.map((r) => r.ratio));
  const kept = rs.reduce<CompareRun | null>((b, r) => (b === null || Math.abs(r.ratio - ratio) < Math.abs(b.ratio - ratio) ? r : b), null);
  return {
    point: pt.id,
    impl: impl.key,
    ratio,
    ratios: rs.map((r) => r.ratio),
    ratioMin: Math.min(...rs.map((r) => r.ratio)),
    ratioMax: Math.max(...rs.map((r) => r.ratio)),
    offeredPps: median(rs.map((r) => r.offeredPps)),
    baselineDeliveredFraction: median(rs.map((r) => r.baseline.delivered / r.baseline.offered)),
    deliveredFraction: median(rs.map((r) => r.deliveredFraction)),
    queueDropped: median(rs.map((r) => r.queueDropped)),
    userDropped: median(rs.map((r) => r.userDropped)),
    cpuUsPerPacket: median(rs.map((r) => r.cpuUsPerPacket)),
    cpuCores: median(rs.map((r) => r.cpuCores)),
    addedLatencyUs: median(rs.map((r) => r.addedLatencyUs ?? NaN)),
    addedLatencyP99Us: median(rs.map((r) => r.addedLatencyP99Us ?? NaN)),
    probeP50Us: median(rs.map((r) => r.probe?.p50Us ?? NaN)),
    baseProbeP50Us: median(rs.map((r) => r.baseline.probe?.p50Us ?? NaN)),
    threads: kept?.threads ?? [],
    threadGroups: kept?.threadGroups ?? [],
    beside: kept?.beside,
    disturbedRuns: rs.filter((r) => r.disturbed).length,
  };
}

export async function compareMode(bed: Bed): Promise<void> {
  const wanted = process.env.BENCH_POINTS ? process.env.BENCH_POINTS.split(',').map((x) => x.trim()) : null;
  for (const id of wanted ?? []) {
    if (!COMPARE_POINTS.some((p) => p.id === id)) throw new Error(`unknown point ${id} in BENCH_POINTS; points: ${COMPARE_POINTS.map((p) => p.id).join(', ')}`);
  }
  const points = COMPARE_POINTS.filter((p) => wanted === null || wanted.includes(p.id));
  const impls = compareImplementations(bed);
  for (const impl of impls) say(`  ${impl.key}: ${impl.label}: ${impl.bin} (queues ${impl.queues.join(':')})`);
  const result = {
    date: new Date().toISOString(),
    mode: 'compare',
    quick: QUICK,
    secondsPerRun: SECONDS,
    rounds: REPEAT,
    queuesPerDaemon: QUEUES,
    burstRounds: Math.max(REPEAT, BURST_REPEAT),
    method:
      'trafgen in a generator namespace sends 60-byte UDP (IPv6: 66) to the VIP; the LB namespace queues it to the daemon (-j NFQUEUE --queue-balance) or marks it in the kernel (-j HMARK) for the baseline; 4 targets count. Each round of each point: one HMARK run, then each implementation (order turning by round); ratio = delivered through the daemon / delivered by HMARK. steady: tc tbf on the generator link paces evenly (bursts of at most 32 frames); bursts: trafgen --rate Npps alone (each second the N packets back to back, then idle).',
    machine: machine(),
    loadAverage: { start: os.loadavg(), end: [] as number[] },
    quiet: quietLog,
    implementations: impls.map((i) => ({ key: i.key, label: i.label, bin: i.bin, version: i.version, queues: i.queues, extraArgs: i.extraArgs ?? [] })),
    points: points.map((p) => ({ ...pick(p, ['id', 'label', 'family', 'sources', 'rate', 'pacing', 'seconds', 'size', 'daemonArgs', 'flows']), id: p.id, label: p.label, beside: p.beside ? true : undefined })),
    runs: [] as CompareRun[],
    summary: [] as CompareCell[],
    probe: null as { port: number; rate: number } | null,
    generatorMaxPps: 0,
  };
  // trafgen's bursts leave at the generator's own speed: measured once, for reading the burst points.
  await calibrate(bed);
  const probes = await startProbeReceivers(bed);
  result.probe = probes === null ? null : { port: PROBE_PORT, rate: PROBE_RATE };
  result.generatorMaxPps = generator.maxPps;
  // Points that need other daemon options or another number of flows run with their own daemons.
  const groups = new Map<string, ComparePoint[]>();
  for (const pt of points) {
    const key = JSON.stringify({ args: pt.daemonArgs ?? [], flows: pt.flows ?? 0 });
    groups.set(key, [...(groups.get(key) ?? []), pt]);
  }
  for (const [key, groupPoints] of groups) {
    const { args: extra, flows } = JSON.parse(key) as { args: string[]; flows: number };
    const daemons: DaemonRun[] = [];
    const startFor = async (impl: Impl): Promise<DaemonRun> => {
      const d = await impl.start([`--queue=${impl.queues[0]}:${impl.queues[1]}`, ...extra]);
      if (impl.isFloor) return d; // no table, no flows: the floor marks from a hash
      impl.shm = impl.shm ?? tb.uniqueShmName(`cmp-${impl.key}`);
      configure(bed, impl, impl.shm);
      return d;
    };
    const revive = async (i: number): Promise<void> => {
      daemons[i] = await startFor(impls[i]);
      const impl = impls[i];
      if (flows > 0 && !impl.isFloor) await setManyFlows(bed, impl, impl.shm as string, flows);
    };
    try {
      for (const impl of impls) daemons.push(await startFor(impl));
      // All daemons at once (each its own socket): the wall time is the slowest one's.
      if (flows > 0) await Promise.all(impls.filter((impl): impl is Implementation => !impl.isFloor).map((impl) => setManyFlows(bed, impl, impl.shm as string, flows)));
      for (const pt of groupPoints) {
        if (pt.setup) for (const impl of impls) if (!impl.isFloor) await pt.setup({ bed, impl, shm: impl.shm });
      }
      say(`\npoint                round impl          offered/s  base.deliv  lb.deliv  ratio  q.drop  u.drop  µs/pkt  cores  other${extra.length ? `   (flowlb ${extra.join(' ')})` : ''}${flows ? `   (${flows} more flows)` : ''}`);
      const rounds = Math.max(...groupPoints.map(roundsOf));
      for (let round = 0; round < rounds; round++) {
        for (const pt of groupPoints.filter((p) => round < roundsOf(p))) {
          for (const r of await comparePoint(bed, impls, daemons, pt, round, revive, probes)) {
            result.runs.push(r);
            say(
              `${pt.id.padEnd(20)} ${String(round).padStart(5)} ${r.impl.padEnd(12)} ${fmt(r.offeredPps, 10)}  ${fmt(r.baseline.delivered, 10)} ${fmt(r.delivered, 9)}  ${fmt(r.ratio, 5, 3)} ${fmt(r.queueDropped, 7)} ${fmt(r.userDropped, 7)}  ${fmt(r.cpuUsPerPacket, 6, 1)}  ${fmt(r.cpuCores, 5, 2)}  ${fmt(r.foreignCores, 5, 2)}${r.disturbed ? '!' : ''}${r.leftWaiting > 0 ? `  (${r.leftWaiting} still queued after 10 s: counted as lost)` : ''}${r.daemonEnded ? `  (the daemon ended: ${r.daemonEnded}; started again)` : ''}`,
            );
          }
        }
      }
    } finally {
      for (const d of daemons) await impls[daemons.indexOf(d)].stop(d);
    }
  }
  for (const r of probes ?? []) r.child.kill('SIGTERM');
  result.loadAverage.end = os.loadavg();
  for (const pt of points) for (const impl of impls) result.summary.push(compareCell(result.runs, pt, impl));
  printCompare(result, impls, points);
  printFloor(result, impls, points);
  say(`\nmachine: other processes used ${median(result.runs.map((r) => r.foreignCores)).toFixed(2)} cores (median over the daemon runs); ${quietLog.disturbedRuns} run(s) disturbed (> ${DISTURBED_CORES}), ${quietLog.retries} repeated; load average ${result.loadAverage.start.map((x) => x.toFixed(2)).join(' ')} at the start, ${result.loadAverage.end.map((x) => x.toFixed(2)).join(' ')} at the end`);
  writeResults(result, `compare${QUICK ? '-quick' : ''}`);
}
