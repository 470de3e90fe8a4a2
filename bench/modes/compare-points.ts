/**
 * The points of the comparison (bench/modes/compare.ts). Every point is
 * measured for every implementation in the same round, right after one
 * kernel-marking (HMARK) run of the same packets, whose delivered count is
 * the denominator of both ratios. To add a point, add an entry:
 *   id, label; family 4|6; sources 'many' (random source addresses and
 *   ports: all queues) or 'one' (one 5-tuple: one queue); rate (packets/s);
 *   pacing 'steady' (a token bucket on the generator's link spreads the
 *   packets evenly) or 'bursts' (trafgen's own --rate, which sends each
 *   second's packets back to back at the generator's speed and then sleeps
 *   out the second).
 * Optional: seconds (per run; default BENCH_SECONDS); size (frame bytes);
 * daemonArgs (more flowlb options) and flows (that many more flows, all
 * checked before the load's flow: setManyFlows) — points that share both run
 * with their own daemons, started for them; setup({ bed, impl, shm }) before
 * the point's rounds, for each implementation; beside({ bed, impl, daemon })
 * started before each of the implementation's runs, returning { pid, stop }
 * (the process's CPU is not counted as disturbance; stop() resolves with
 * what it counted): e.g. besideClients() — metrics scrapers, trace clients,
 * idle control connections.
 */
import type { ChildProcess } from 'node:child_process';
import * as tb from '../../testbed/testbed';
import { BURST_REPEAT, CLIENTS_JS, MERIDIO_FLOWLB, REPEAT, say, sleep, type Family, type Pacing, type Sources } from '../lib/config';
import type { Bed } from '../lib/bed';
import type { DaemonRun, Implementation } from '../lib/impls';

/** What clients.js beside counted (its JSON line), or the end of its output. */
export type BesideStats = Record<string, unknown> & {
  scrapes?: number;
  scrapeMsMedian?: number | null;
  scrapeMsMax?: number | null;
  scrapeFailures?: number;
  openAtEnd?: { trace: number; idle: number };
  idleConnects?: number;
  idleErrors?: number;
};

/** A process beside a daemon run. */
export interface Beside {
  pid: number;
  stop: () => Promise<BesideStats>;
}

export interface ComparePoint {
  id: string;
  label: string;
  family: Family;
  sources: Sources;
  rate: number;
  pacing: Pacing;
  seconds?: number;
  size?: number;
  daemonArgs?: string[];
  flows?: number;
  setup?: (ctx: { bed: Bed; impl: Implementation; shm: string | undefined }) => Promise<void>;
  beside?: (ctx: { bed: Bed; impl: Implementation; daemon: DaemonRun }) => Promise<Beside>;
}

export const COMPARE_POINTS: ComparePoint[] = [
  { id: 'v4-steady-100k', label: 'IPv4, steady 100k packets/s', family: 4, sources: 'many', rate: 100000, pacing: 'steady' },
  { id: 'v4-steady-200k', label: 'IPv4, steady 200k packets/s', family: 4, sources: 'many', rate: 200000, pacing: 'steady' },
  { id: 'v4-bursts-100k', label: 'IPv4, bursts: trafgen --rate 100000pps', family: 4, sources: 'many', rate: 100000, pacing: 'bursts' },
  { id: 'v4-one-150k', label: 'IPv4, one 5-tuple (one queue), steady 150k', family: 4, sources: 'one', rate: 150000, pacing: 'steady' },
  { id: 'v6-steady-100k', label: 'IPv6, steady 100k packets/s', family: 6, sources: 'many', rate: 100000, pacing: 'steady' },
  { id: 'v6-bursts-100k', label: 'IPv6, bursts: trafgen --rate 100000pps', family: 6, sources: 'many', rate: 100000, pacing: 'bursts' },
  // Thousands of flows, all checked before the packets' flow (higher priority, other ports).
  { id: 'v4-flows5k-100k', label: 'IPv4, steady 100k, 5,000 flows (packets\' flow last)', family: 4, sources: 'many', rate: 100000, pacing: 'steady', flows: 5000 },
  { id: 'v4-flows10k-100k', label: 'IPv4, steady 100k, 10,000 flows (packets\' flow last)', family: 4, sources: 'many', rate: 100000, pacing: 'steady', flows: 10000 },
  {
    id: 'v4-flows10k-busy',
    label: 'same + 3 scrapers, 16 trace, 1,000 idle control',
    family: 4,
    sources: 'many',
    rate: 100000,
    pacing: 'steady',
    flows: 10000,
    beside: besideClients({ scrapers: 3, traceClients: 16, idle: 1000 }),
  },
  // Meridio's own flowlb line (its --qlength=1024 is nfqlb's default) for this project and nfqlb alike (issue 19 point 3);
  // the floor gets its --qlength=1024. The bench gives each daemon its own queue range in place of Meridio's 0:3.
  { id: 'v4-meridio-steady-100k', label: 'Meridio\'s line, IPv4, steady 100k', family: 4, sources: 'many', rate: 100000, pacing: 'steady', daemonArgs: MERIDIO_FLOWLB },
  { id: 'v4-meridio-steady-200k', label: 'Meridio\'s line, IPv4, steady 200k', family: 4, sources: 'many', rate: 200000, pacing: 'steady', daemonArgs: MERIDIO_FLOWLB },
  { id: 'v4-meridio-bursts-100k', label: 'Meridio\'s line, IPv4, bursts 100k', family: 4, sources: 'many', rate: 100000, pacing: 'bursts', daemonArgs: MERIDIO_FLOWLB },
  { id: 'v4-meridio-one-150k', label: 'Meridio\'s line, IPv4, one 5-tuple, steady 150k', family: 4, sources: 'one', rate: 150000, pacing: 'steady', daemonArgs: MERIDIO_FLOWLB },
];

/** Rounds of a point: REPEAT, and at least BURST_REPEAT for trafgen's bursts. */
export const roundsOf = (pt: ComparePoint): number => (pt.pacing === 'bursts' ? Math.max(REPEAT, BURST_REPEAT) : REPEAT);

/** Output of a child process, stdout and stderr together. */
function collect(child: ChildProcess): () => string {
  let out = '';
  child.stdout?.on('data', (b: Buffer) => (out += b.toString()));
  child.stderr?.on('data', (b: Buffer) => (out += b.toString()));
  return () => out;
}

/**
 * `count` flows through the implementation's control socket (bench/clients.ts
 * flows, in the LB namespace): udp to the VIPs, dports 20000.., priorities
 * 2.. — all above the load's flow (priority 1), so every one of them is
 * checked, and misses, before the load's flow matches.
 */
export async function setManyFlows(bed: Bed, impl: Implementation, shm: string, count: number): Promise<{ count: number; failed: number; ms: number; firstError: string | null }> {
  const child = tb.spawnInNs(
    bed.lb,
    process.execPath,
    [CLIENTS_JS, 'flows', `--address=${impl.env.NFQLB_FLOW_ADDRESS}`, `--count=${count}`, `--target=${shm}`, `--dsts=${bed.vip4}/32,${bed.vip6}/128`, '--dport-base=20000', '--prio-base=2', `--prefix=${shm}-x`],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const out = collect(child);
  const code = await new Promise((r) => child.once('exit', r));
  if (code !== 0) throw new Error(`clients.js flows for ${impl.key} exited ${code}: ${out()}`);
  const res = JSON.parse(out().trim().split('\n').pop() ?? '') as { count: number; failed: number; ms: number; firstError: string | null };
  if (res.failed > 0) throw new Error(`${impl.key}: ${res.failed} of ${count} flow-set requests failed (first: ${res.firstError})`);
  say(`  ${impl.key}: ${count} flows set in ${(res.ms / 1000).toFixed(1)} s`);
  return res;
}

/**
 * A `beside` hook: bench/clients.ts beside in the LB namespace for the run —
 * metrics scrapers (only where the daemon has a metrics endpoint), trace
 * clients on the daemon's trace address, idle control connections. Returns
 * { pid, stop }, stop() resolving with the clients' counts.
 */
export function besideClients({ scrapers, traceClients, idle }: { scrapers: number; traceClients: number; idle: number }): NonNullable<ComparePoint['beside']> {
  return async ({ bed, impl, daemon }) => {
    const trace = (impl.daemonArgs.find((a) => a.startsWith('--trace_address=')) ?? '').slice('--trace_address='.length);
    const args = [CLIENTS_JS, 'beside', `--trace=${trace}`, `--trace-clients=${traceClients}`, `--control=${impl.env.NFQLB_FLOW_ADDRESS}`, `--idle=${idle}`];
    if (daemon.metricsPort !== null) args.push(`--metrics-port=${daemon.metricsPort}`, `--scrapers=${scrapers}`);
    const child = tb.spawnInNs(bed.lb, process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const out = collect(child);
    const deadline = Date.now() + 10000;
    while (!out().includes('ready\n') && child.exitCode === null && Date.now() < deadline) await sleep(50);
    if (!out().includes('ready\n')) {
      await tb.killProcess(child);
      throw new Error(`clients.js beside did not start: ${out()}`);
    }
    // Let the scrapers and the reconnecting idle clients reach their pace before the load.
    await sleep(500);
    return {
      pid: child.pid as number,
      stop: async () => {
        const exited = new Promise<void>((r) => (child.exitCode !== null ? r() : child.once('exit', () => r())));
        child.kill('SIGTERM');
        await Promise.race([exited, sleep(5000)]);
        if (child.exitCode === null) await tb.killProcess(child);
        const line = out().split('\n').find((l) => l.startsWith('{'));
        return line ? (JSON.parse(line) as BesideStats) : { error: out().slice(-500) };
      },
    };
  };
}
