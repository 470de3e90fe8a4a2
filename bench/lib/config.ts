/**
 * The bench's options (command line and environment, see bench/run.ts) and
 * the small helpers every part uses.
 */
import * as os from 'node:os';
import * as path from 'node:path';
import { ROOT } from '../../testbed/testbed';

export { ROOT };

/** A load's rate: packets per second, or 'max' (trafgen as fast as it goes). */
export type Rate = number | 'max';
export type Family = 4 | 6;
export type Sources = 'many' | 'one';
export type Pacing = 'steady' | 'bursts';

export const argv = process.argv.slice(2);
export type Mode = 'compare' | 'detail' | 'sweep' | 'profile' | 'queue-memory';
export const MODE: Mode = argv.includes('--sweep')
  ? 'sweep'
  : argv.includes('--profile')
    ? 'profile'
    : argv.includes('--queue-memory')
      ? 'queue-memory'
      : argv.includes('--detail')
        ? 'detail'
        : 'compare';
export const QUICK = process.env.BENCH_QUICK === '1';
export const SECONDS = Number(process.env.BENCH_SECONDS || (QUICK ? 1 : 3));
export const REPEAT = Number(process.env.BENCH_REPEAT || (MODE === 'sweep' ? 2 : MODE === 'compare' && !QUICK ? 3 : 1));
export const RATES: Rate[] = QUICK ? [50000, 100000, 'max'] : [25000, 50000, 100000, 150000, 'max'];
export const BIN = process.env.NFQLB_BIN ? path.resolve(process.env.NFQLB_BIN) : path.join(ROOT, 'bin', 'nfqlb');
export const OURS = !process.env.NFQLB_BIN;
export const ORIGINAL = process.env.NFQLB_ORIGINAL
  ? path.resolve(process.env.NFQLB_ORIGINAL)
  : path.resolve(ROOT, '..', 'shared', 'reference', 'nfqlb-1.2.0', 'nfqlb');
export const NULLQ_SRC = process.env.NULLQ_SRC ? path.resolve(process.env.NULLQ_SRC) : path.resolve(ROOT, '..', 'shared', 'reference', 'nullq', 'nullq.c');
export const OUT_DIR = process.env.BENCH_OUT ? path.resolve(process.env.BENCH_OUT) : path.join(ROOT, 'bench', 'results');
/** The compiled helper programs (tcp.js, clients.js), beside the compiled bench. */
const PROGRAMS = path.resolve(__dirname, '..');
export const TCP_JS = path.join(PROGRAMS, 'tcp.js');
export const CLIENTS_JS = path.join(PROGRAMS, 'clients.js');
export const PROBE_PY = path.join(ROOT, 'bench', 'probe.py');
/** The latency probe (bench/probe.py): its UDP port (in the load's flow) and packets/s beside every comparison run (0: off). */
export const PROBE_PORT = 5003;
export const PROBE_RATE = Number(process.env.BENCH_PROBE_RATE ?? 500);
export const ECHO_PORT = 4001;
export const CHURN_RATE = 50000;
export const CHURN_PER_SECOND = 100;

export const QUIET_MAX_MS = Number(process.env.BENCH_QUIET_MAX_MS || (QUICK ? 3000 : 10000));
/** Total waiting allowed per bench run, so a machine that is never idle still ends in time. */
export const QUIET_BUDGET_MS = Number(process.env.BENCH_QUIET_BUDGET_MS || (QUICK ? 20000 : 120000));
/** Cores used by other processes during a daemon run above which the pair is run again (at most RETRIES times). */
export const DISTURBED_CORES = 0.3;
export const RETRIES = Number(process.env.BENCH_RETRIES || (QUICK ? 0 : 2));

/**
 * Rounds of a comparison point: REPEAT, and at least BENCH_BURST_REPEAT
 * (default 5, 1 with BENCH_QUICK) for trafgen's bursts, whose result swings
 * from round to round (reported as min/median/max).
 */
export const BURST_REPEAT = Number(process.env.BENCH_BURST_REPEAT || (QUICK ? 1 : 5));

/**
 * Queues per daemon in the comparison (its --queue range and the NFQUEUE
 * rule's --queue-balance): BENCH_QUEUES, default 4 (Meridio's 0:3); `cores`
 * = one per CPU, at least 4 — the mode for checking the projection of
 * docs/performance.md ("More cores") on a larger machine, with
 * BENCH_WORKERS=default,cores (`cores` there = --workers=<CPUs - 1>).
 */
export const QUEUES = process.env.BENCH_QUEUES === 'cores' ? Math.max(4, os.cpus().length) : Number(process.env.BENCH_QUEUES || 4);

/** Meridio v1.2.8's stateless-lb: `nfqlb flowlb --promiscuous_ping --queue=0:3 --qlength=1024 --hash_mode=0`. */
export const MERIDIO = ['--promiscuous_ping', '--queue=0:3', '--qlength=1024', '--hash_mode=0'];
/** The same without its queue range, for the comparison, where every daemon has its own. */
export const MERIDIO_FLOWLB = MERIDIO.filter((a) => !a.startsWith('--queue='));

export const say = (text = ''): void => {
  process.stdout.write(`${text}\n`);
};
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
export const pick = <T extends object>(o: T, keys: Array<keyof T>): Partial<T> =>
  Object.fromEntries(keys.filter((k) => o[k] !== undefined).map((k) => [k, o[k]])) as Partial<T>;
export const median = (xs: number[]): number => {
  const s = xs.filter(Number.isFinite).sort((a, b) => a - b);
  return s.length === 0 ? NaN : s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
/** `x` to `d` decimals, right-aligned in `w` ('-' when it is no number). */
export const fmt = (x: number | null | undefined, w: number, d = 0): string =>
  (x === null || x === undefined || !Number.isFinite(x) ? '-' : x.toFixed(d)).padStart(w);
