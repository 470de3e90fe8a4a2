/**
 * What the bench and the tests measure: load offered and delivered (the
 * counting rules of rules.ts), the kernel's queue counters, CPU and memory of
 * a process and of the machine, the daemon's Prometheus metrics.
 */
import * as fs from 'node:fs';
import { NFQUEUE_PROC_FILE, parseQueueProc, type QueueProcEntry } from '../src/addon/queue';
import { nsExec } from './netns';
import { offeredCount, udpSinkCount } from './rules';
import type { Testbed } from './topology';

export interface LoadCounts {
  /** Reached the LB's PREROUTING. */
  offered: number;
  /** Reached a target, per target name. */
  perTarget: Record<string, number>;
  delivered: number;
}

/** Reads the addLoadCounters counters (one family, or both). */
export function loadCounts(tb: Testbed, family?: 4 | 6): LoadCounts {
  const perTarget: Record<string, number> = {};
  let delivered = 0;
  for (const t of tb.targets) {
    perTarget[t.name] = udpSinkCount(t.ns, family);
    delivered += perTarget[t.name];
  }
  return { offered: offeredCount(tb, family), perTarget, delivered };
}

/** What happened between two loadCounts() readings (b after a). */
export function loadDelta(a: LoadCounts, b: LoadCounts): LoadCounts {
  const perTarget: Record<string, number> = {};
  for (const name of Object.keys(b.perTarget)) perTarget[name] = b.perTarget[name] - (a.perTarget[name] ?? 0);
  return { offered: b.offered - a.offered, perTarget, delivered: b.delivered - a.delivered };
}
/** The NFQUEUE table (/proc/net/netfilter/nfnetlink_queue) as seen inside `ns`. */
export function queueProcIn(ns: string): QueueProcEntry[] {
  return parseQueueProc(nsExec(ns, 'cat', [NFQUEUE_PROC_FILE], { allowFail: true }).stdout);
}

/** Sums of the kernel's queue counters over the queues bound in `ns`. */
export function queueDrops(ns: string): { queueDropped: number; userDropped: number; waiting: number } {
  const sum = { queueDropped: 0, userDropped: 0, waiting: 0 };
  for (const e of queueProcIn(ns)) {
    sum.queueDropped += e.queueDropped;
    sum.userDropped += e.userDropped;
    sum.waiting += e.waiting;
  }
  return sum;
}

/** Busy and total CPU seconds of the whole machine so far (first line of /proc/stat; idle and iowait are not busy). */
export function machineCpuSeconds(): { busy: number; total: number } {
  const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1, 9).map(Number);
  const total = f.reduce((a, b) => a + b, 0);
  return { busy: (total - f[3] - f[4]) / CLOCK_TICKS, total: total / CLOCK_TICKS };
}

/** GET http://127.0.0.1:<port>/metrics from inside `ns`: the Prometheus text, or null when nothing answers 200. */
export function scrapeMetrics(ns: string, port: number): string | null {
  const script =
    `fetch('http://127.0.0.1:${port}/metrics').then(async (r) => { if (r.status !== 200) process.exit(1); process.stdout.write(await r.text()); }, () => process.exit(1))`;
  const r = nsExec(ns, process.execPath, ['-e', script], { allowFail: true });
  return r.status === 0 ? r.stdout : null;
}

/** Sum of the samples of `metric` whose labels include all of `labels`, in Prometheus text. */
export function metricSum(text: string, metric: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$/.exec(line);
    if (m === null || m[1] !== metric) continue;
    const have: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="([^"]*)"/g)) have[l[1]] = l[2];
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) sum += Number(m[3]);
  }
  return sum;
}

/** CPU seconds (user + system, all threads) a process used so far, from /proc/<pid>/stat. */
export function cpuSeconds(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // Fields 14 and 15 of proc(5) (utime, stime) are 11 and 12 after the comm.
  return (Number(f[11]) + Number(f[12])) / CLOCK_TICKS;
}

/** USER_HZ: 100 on every Linux architecture Node runs on. */
const CLOCK_TICKS = 100;

/** Resident set now and its peak, in KiB (VmRSS, VmHWM of /proc/<pid>/status). */
export function memoryKiB(pid: number): { rss: number; hwm: number } {
  const text = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (key: string): number => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? NaN);
  return { rss: kib('VmRSS'), hwm: kib('VmHWM') };
}
