/**
 * The scenarios --detail runs besides its rates: activation churn under
 * load, RSS over a minute, TCP connections per second and round trips.
 */
import * as tb from '../../testbed/testbed';
import { openTable, closeTable } from '../../src/tables/tablefile';
import { loadConfig, trafgenOptions, type Bed } from '../lib/bed';
import { CHURN_PER_SECOND, CHURN_RATE, ECHO_PORT, median, OURS, say, sleep, TCP_JS, type Family } from '../lib/config';
import { decisions, type DaemonRun, type Decisions, type Implementation } from '../lib/impls';
import { quiet } from '../lib/rounds';

export interface ChurnResult {
  seconds: number;
  offeredPps: number;
  offered: number;
  delivered: number;
  lost: number;
  perTarget: Record<string, number>;
  commands: number;
  commandsPerSecond: number;
  via: string;
  cliCommandMs: number;
  queueDropped: number;
  userDropped: number;
  noTarget: number | null;
  invalid: number | null;
  dropVerdicts: number | null;
  metrics: boolean;
  pass?: boolean;
}

/**
 * 50k pps (IPv4, many flows) while target t4 is deactivated and activated
 * again CHURN_PER_SECOND times a second (3 targets stay active). nfqlb-ts:
 * through the table library the CLI uses (src/tables/tablefile.ts, the same
 * code as `nfqlb activate/deactivate`), because starting a Node.js CLI 100
 * times a second does not fit on a small machine; another binary: its CLI.
 */
export async function churn(bed: Bed, impl: Implementation, d: DaemonRun, shm: string, { seconds }: { seconds: number }): Promise<ChurnResult> {
  const t4 = bed.targets[bed.targets.length - 1];
  const viaCli = !OURS || process.env.BENCH_CHURN === 'cli';
  // What one CLI command costs, for the report.
  const cliMs: number[] = [];
  for (let i = 0; i < 3; i++) {
    const t0 = process.hrtime.bigint();
    impl.cliOk(['activate', `--index=${t4.id - 1}`, `--shm=${shm}`, `${t4.fwmark}`]);
    cliMs.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  tb.setMarking(bed, 'queue', 0, 3);
  await quiet();
  const c0 = tb.loadCounts(bed, 4);
  const q0 = tb.queueDrops(bed.lb);
  const m0 = decisions(impl.scrape(d));
  const table = viaCli ? null : openTable(shm, true);
  let commands = 0;
  let stop = false;
  const churner = (async (): Promise<number> => {
    const t0 = Date.now();
    while (!stop) {
      const active = commands % 2 === 1; // even: deactivate, odd: activate
      if (table === null) {
        await new Promise((resolve) => {
          const args = active ? ['activate', `--index=${t4.id - 1}`, `--shm=${shm}`, `${t4.fwmark}`] : ['deactivate', `--index=${t4.id - 1}`, `--shm=${shm}`];
          tb.spawnInNs(bed.lb, impl.bin, args, { stdio: 'ignore' }).once('exit', resolve);
        });
      } else if (active) table.activateIndex(t4.id - 1, t4.fwmark);
      else table.deactivateIndex(t4.id - 1);
      commands++;
      const wait = t0 + (commands * 1000) / CHURN_PER_SECOND - Date.now();
      await sleep(Math.max(0, wait));
    }
    return (commands * 1000) / (Date.now() - t0);
  })();
  const g = await tb.runTrafgen(bed.gw, 'lb0', loadConfig(bed, 4, 'many'), trafgenOptions(4, CHURN_RATE, CHURN_RATE * seconds));
  stop = true;
  const cmdRate = await churner;
  if (table !== null) {
    table.activateIndex(t4.id - 1, t4.fwmark);
    closeTable(table);
  } else impl.cliOk(['activate', `--index=${t4.id - 1}`, `--shm=${shm}`, `${t4.fwmark}`]);
  await sleep(300);
  const c = tb.loadDelta(c0, tb.loadCounts(bed, 4));
  const q1 = tb.queueDrops(bed.lb);
  const m1 = decisions(impl.scrape(d));
  const delta = (k: keyof Decisions): number | null => (m0 === null || m1 === null ? null : (m1[k] ?? 0) - (m0[k] ?? 0));
  const r: ChurnResult = {
    seconds: g.seconds,
    offeredPps: Math.round(c.offered / g.seconds),
    offered: c.offered,
    delivered: c.delivered,
    lost: c.offered - c.delivered,
    perTarget: c.perTarget,
    commands,
    commandsPerSecond: cmdRate,
    via: viaCli ? 'cli' : 'library (src/tables/tablefile.ts)',
    cliCommandMs: median(cliMs),
    queueDropped: q1.queueDropped - q0.queueDropped,
    userDropped: q1.userDropped - q0.userDropped,
    noTarget: delta('no_target'),
    invalid: delta('invalid'),
    dropVerdicts: delta('drop'),
    metrics: m1 !== null,
  };
  // The change must cost nothing: no packet without a target or dropped by the
  // daemon; with metrics, losses from a full queue (the daemon not scheduled in
  // time, nothing to do with the change) are reported apart.
  r.pass = r.metrics
    ? r.noTarget === 0 && r.invalid === 0 && r.dropVerdicts === 0 && r.lost === r.queueDropped + r.userDropped
    : r.lost === 0;
  return r;
}

export interface RssResult {
  rate: number;
  seconds: number;
  offered: number;
  delivered: number;
  samplesKiB: number[];
  firstKiB: number;
  lastKiB: number;
  maxKiB: number;
  minKiB: number;
  flat: boolean;
}

/** RSS once a second over `seconds` at `rate` (IPv4, many flows). */
export async function rssRun(bed: Bed, d: DaemonRun, { rate, seconds }: { rate: number; seconds: number }): Promise<RssResult> {
  tb.setMarking(bed, 'queue', 0, 3);
  await quiet();
  const c0 = tb.loadCounts(bed, 4);
  const samples: number[] = [];
  let running = true;
  const sampler = (async (): Promise<void> => {
    while (running) {
      await sleep(1000);
      if (running) samples.push(tb.memoryKiB(d.pid).rss);
    }
  })();
  const g = await tb.runTrafgen(bed.gw, 'lb0', loadConfig(bed, 4, 'many'), trafgenOptions(4, rate, Math.round(rate * seconds)));
  running = false;
  await sampler;
  await sleep(300);
  const c = tb.loadDelta(c0, tb.loadCounts(bed, 4));
  const first = samples[0];
  const last = samples[samples.length - 1];
  const max = Math.max(...samples);
  const min = Math.min(...samples);
  return {
    rate,
    seconds: g.seconds,
    offered: c.offered,
    delivered: c.delivered,
    samplesKiB: samples,
    firstKiB: first,
    lastKiB: last,
    maxKiB: max,
    minKiB: min,
    flat: max <= first * 1.1 && last <= first * 1.1 && min >= first * 0.9,
  };
}

/** Runs a bench/tcp.ts client in the gateway; returns its JSON. */
function tcpClient<R>(bed: Bed, args: string[], timeoutMs: number): R {
  const r = tb.nsExec(bed.gw, process.execPath, [TCP_JS, ...args], { timeoutMs, allowFail: true });
  if (r.status !== 0) throw new Error(`tcp.js ${args.join(' ')}: ${r.stderr}`);
  return JSON.parse(r.stdout) as R;
}

export async function startEchoServers(bed: Bed): Promise<void> {
  for (const t of bed.targets) {
    const child = tb.spawnInNs(t.ns, process.execPath, [TCP_JS, 'echo', `${ECHO_PORT}`]);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`echo server of ${t.name} did not start`)), 10000);
      child.stdout?.on('data', (b: Buffer) => {
        if (b.toString().includes('listening')) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.once('exit', (code) => reject(new Error(`echo server of ${t.name} exited ${code}`)));
    });
  }
}

interface Cps {
  completed: number;
  failed: number;
  seconds: number;
  cps: number;
  p50Ms: number;
  p99Ms: number;
}

interface Rtt {
  samples: number;
  failed: number;
  p50Us: number;
  p90Us: number;
  p99Us: number;
  maxUs: number;
  meanUs: number;
}

export interface TcpRow {
  family: Family;
  path: string;
  cps: Cps;
  rtt: Rtt;
}

/** TCP new connections/s and round-trip latency, kernel marking vs through the daemon. */
export function tcpRuns(bed: Bed, { seconds, count }: { seconds: number; count: number }): TcpRow[] {
  const rows: TcpRow[] = [];
  for (const family of [4, 6] as const) {
    const vip = family === 4 ? bed.vip4 : bed.vip6;
    const src = family === 4 ? bed.client4 : bed.client6;
    for (const marking of ['hmark', 'queue'] as const) {
      tb.setMarking(bed, marking, 0, 3);
      const cps = tcpClient<Cps>(bed, ['cps', `--dst=${vip}`, `--port=${bed.port}`, `--src=${src}`, `--seconds=${seconds}`, '--concurrency=16'], (seconds + 30) * 1000);
      const rtt = tcpClient<Rtt>(bed, ['rtt', `--dst=${vip}`, `--port=${ECHO_PORT}`, `--src=${src}`, `--count=${count}`, '--conns=8'], 120000);
      const row = { family, path: marking === 'hmark' ? 'direct (HMARK)' : 'through the daemon', cps, rtt };
      rows.push(row);
      say(
        `tcp v${family} ${row.path.padEnd(19)} ${cps.cps.toFixed(0).padStart(6)} conn/s (failed ${cps.failed})   rtt p50 ${rtt.p50Us.toFixed(0)} µs  p99 ${rtt.p99Us.toFixed(0)} µs  (${rtt.samples} samples, ${rtt.failed} failed conns)`,
      );
    }
  }
  return rows;
}
