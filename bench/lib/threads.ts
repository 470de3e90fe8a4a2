/** A daemon's CPU by thread (/proc/<pid>/task/<tid>/stat), grouped by thread name. */
import * as fs from 'node:fs';

export interface ThreadShare {
  tid: number;
  name: string;
  cpuSeconds: number;
  cores: number;
  usPerPacket: number;
}

export interface ThreadGroup {
  name: string;
  threads: number;
  usPerPacket: number;
  cores: number;
  /** µs/packet of each thread, busiest first. */
  each: number[];
}

/** CPU seconds of each thread of `pid` so far (Map tid → { name, seconds }), from /proc/<pid>/task. */
export function threadCpu(pid: number): Map<string, { name: string; seconds: number }> {
  const out = new Map<string, { name: string; seconds: number }>();
  let tids: string[] = [];
  try {
    tids = fs.readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tids) {
    try {
      const stat = fs.readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      out.set(tid, { name: stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')), seconds: (Number(f[11]) + Number(f[12])) / 100 });
    } catch {
      // The thread ended in between.
    }
  }
  return out;
}

/**
 * The threads that used CPU between two threadCpu() readings, busiest first:
 * CPU seconds, cores over `seconds` and µs per delivered packet. The
 * process's first thread (tid = pid) is named `main`, the others by their
 * comm (worker threads that name themselves show under their own name).
 */
export function threadShares(pid: number, before: ReturnType<typeof threadCpu>, after: ReturnType<typeof threadCpu>, seconds: number, delivered: number): ThreadShare[] {
  return [...after.entries()]
    .map(([tid, t]) => {
      const cpu = t.seconds - (before.get(tid)?.seconds ?? 0);
      return { tid: Number(tid), name: Number(tid) === pid ? 'main' : t.name, cpuSeconds: cpu, cores: cpu / seconds, usPerPacket: delivered > 0 ? (cpu * 1e6) / delivered : NaN };
    })
    .filter((t) => t.cpuSeconds > 0)
    .sort((a, b) => b.cpuSeconds - a.cpuSeconds);
}

/** Threads grouped by name: [{ name, threads, usPerPacket, cores, each: [µs/packet of each thread, busiest first] }]. */
export function threadGroups(threads: Array<Pick<ThreadShare, 'name' | 'usPerPacket' | 'cores'>>): ThreadGroup[] {
  const groups = new Map<string, ThreadGroup>();
  for (const t of threads) {
    const g = groups.get(t.name) ?? { name: t.name, threads: 0, usPerPacket: 0, cores: 0, each: [] };
    g.threads++;
    g.usPerPacket += t.usPerPacket;
    g.cores += t.cores;
    g.each.push(t.usPerPacket);
    groups.set(t.name, g);
  }
  return [...groups.values()].sort((a, b) => b.usPerPacket - a.usPerPacket);
}

/** `main 2.10 + node×4 0.31 (0.20 0.08)`: µs per delivered packet by thread name; threads of a name listed when several are busy. */
export function threadText(groups: ThreadGroup[]): string {
  return groups
    .filter((g) => g.usPerPacket >= 0.01)
    .map((g) => {
      const busy = g.each.filter((x) => x >= 0.05);
      return `${g.name}${g.threads > 1 ? `×${g.threads}` : ''} ${g.usPerPacket.toFixed(2)}${busy.length > 1 ? ` (${busy.map((x) => x.toFixed(2)).join(' ')})` : ''}`;
    })
    .join(' + ');
}

/** A cell's thread groups; for results written before they existed, from each thread's share of the cores. */
export function groupsOf(c: { threadGroups?: ThreadGroup[]; threads?: ThreadShare[]; cpuUsPerPacket: number }): ThreadGroup[] {
  if (c.threadGroups) return c.threadGroups;
  const cores = (c.threads ?? []).reduce((sum, t) => sum + t.cores, 0);
  return threadGroups((c.threads ?? []).map((t) => ({ ...t, usPerPacket: cores > 0 ? (c.cpuUsPerPacket * t.cores) / cores : NaN })));
}
