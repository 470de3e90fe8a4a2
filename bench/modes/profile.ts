/**
 * --profile: where the time goes at 100k pps (BENCH_PROFILE_RATE; one
 * 5-tuple with BENCH_PROFILE_SOURCES=one): perf stat, perf trace's syscall
 * summary, perf record (the machine by process and object, the daemon by
 * object and by its main calls), and node --cpu-prof of this project's
 * daemon. BENCH_PROFILE_KEEP=DIR keeps perf.data and the .cpuprofile.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tb from '../../testbed/testbed';
import { configure, loadConfig, setFlows, trafgenOptions, type Bed } from '../lib/bed';
import { OURS, OUT_DIR, ROOT, say, sleep } from '../lib/config';
import type { Implementation } from '../lib/impls';
import { compactJson, machine, stamp } from '../lib/results';

/** What a V8 .cpuprofile holds (the parts read here). */
interface CpuProfile {
  nodes: Array<{ id: number; callFrame: { functionName: string; url: string; lineNumber: number }; children?: number[] }>;
  samples: number[];
  timeDeltas: number[];
}

interface CpuProfileSummary {
  wallMs: number;
  idleMs: number;
  gcMs: number;
  programMs: number;
  jsMs: number;
  top: Array<{ name: string; where: string; pctOfBusy: number; ms: number; caller: string }>;
  packets?: number;
  jsUsPerPacket?: number;
}

export async function profileMode(bed: Bed, impl: Implementation): Promise<void> {
  const shm = tb.uniqueShmName('profile');
  const seconds = 6;
  const rate = Number(process.env.BENCH_PROFILE_RATE || 100000);
  // BENCH_PROFILE_SOURCES=one: one 5-tuple (one queue), as the v4-one-150k point.
  const sources = process.env.BENCH_PROFILE_SOURCES === 'one' ? 'one' : 'many';
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nfqlb-bench-prof-'));
  const report: Record<string, unknown> = { date: new Date().toISOString(), mode: 'profile', rate, sources, machine: machine(), implementation: { label: impl.label, bin: impl.bin, version: impl.version } };
  try {
    const d = await impl.start(['--queue=0:3']);
    configure(bed, impl, shm);
    tb.setMarking(bed, 'queue', 0, 3);
    const load = (): Promise<tb.TrafgenResult> => tb.runTrafgen(bed.gw, 'lb0', loadConfig(bed, 4, sources), trafgenOptions(4, rate, rate * seconds));
    // Runs `cmd` for the 3 s in the middle of a 6 s load; returns its output and the load's delivered fraction.
    const during = async (cmd: string, args: string[]): Promise<{ output: string; deliveredFraction: number; packetsInWindow: number }> => {
      const c0 = tb.loadCounts(bed, 4);
      const p = load();
      await sleep(1500);
      const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 20000, maxBuffer: 1 << 26 });
      await p;
      await sleep(300);
      const c = tb.loadDelta(c0, tb.loadCounts(bed, 4));
      return { output: (r.stdout ?? '') + (r.stderr ?? ''), deliveredFraction: c.delivered / c.offered, packetsInWindow: Math.round(3 * rate * (c.delivered / c.offered)) };
    };
    const perfStat = await during('perf', ['stat', '-e', 'task-clock,context-switches,cpu-migrations,page-faults', '-p', `${d.pid}`, '--', 'sleep', '3']);
    report.perfStat = perfStat;
    say(perfStat.output);
    const syscalls = await during('perf', ['trace', '-s', '-p', `${d.pid}`, '--', 'sleep', '3']);
    report.syscalls = syscalls;
    say(syscalls.output);
    const data = path.join(dir, 'perf.data');
    report.perfRecord = (await during('perf', ['record', '-e', 'cpu-clock', '-F', '2999', '-a', '-g', '-o', data, '--', 'sleep', '3'])).deliveredFraction;
    const perfReport = (args: string[]): string[] =>
      spawnSync('perf', ['report', '-i', data, '--stdio', ...args], { encoding: 'utf8', maxBuffer: 1 << 26 })
        .stdout.split('\n')
        .filter((l) => /%/.test(l) && !l.startsWith('#'));
    // The whole machine by process and object; then the daemon alone: by object, and the
    // inclusive share of the calls that matter (verdict send, receive, the JS callback).
    const byCommDso = perfReport(['--no-children', '--sort', 'comm,dso', '-g', 'none', '--percent-limit', '1']).join('\n');
    report.perfByCommDso = byCommDso;
    say('\nperf record -a, whole machine by process and object:');
    say(byCommDso);
    // (`--pid` drops the kernel's line here, so filter `--sort pid,dso` instead.)
    const own = perfReport(['--no-children', '--sort', 'pid,dso', '-g', 'none'])
      .map((l) => /^\s*([\d.]+)%\s+(\d+):\S+\s+(.*?)\s*$/.exec(l))
      .filter((m): m is RegExpExecArray => m !== null && Number(m[2]) === d.pid)
      .map((m) => ({ dso: m[3], pct: Number(m[1]) }));
    const ownTotal = own.reduce((a, x) => a + x.pct, 0);
    const byDso = own.map((x) => ({ ...x, pctOfDaemon: (100 * x.pct) / ownTotal }));
    report.perfDaemonByDso = byDso;
    say(`\nthe daemon alone, by object (${ownTotal.toFixed(1)}% of the machine's samples):`);
    for (const x of byDso) if (x.pctOfDaemon >= 0.3) say(`  ${x.pctOfDaemon.toFixed(1).padStart(5)}%  ${x.dso}`);
    const keys = /\b(__libc_sendto|__recvmmsg|nfqnl_recv_verdict|netlink_recvmsg|do_softirq\.part\.0|epoll_pwait|__schedule|napi_make_callback|ReadRound|Dispatch|HandlePacket|SendVerdicts)\s*$/;
    const calls = new Map<string, number>();
    for (const l of perfReport(['--children', '--sort', 'pid,sym', '-g', 'none'])) {
      const m = /^\s*([\d.]+)%\s+([\d.]+)%\s+(\d+):\S+\s+\[[.k]\]\s+(.*?)\s*$/.exec(l);
      if (m === null || Number(m[3]) !== d.pid || !keys.test(m[4])) continue;
      const name = m[4].replace(/^.*::/, '');
      calls.set(name, (calls.get(name) ?? 0) + Number(m[1]));
    }
    const daemonCalls = [...calls.entries()].map(([name, pct]) => ({ name, pctOfDaemon: (100 * pct) / ownTotal }));
    report.perfDaemonCalls = daemonCalls;
    say('\nthe daemon alone, time inside each of its main calls (inclusive, % of the daemon):');
    for (const c of daemonCalls) say(`  ${c.pctOfDaemon.toFixed(1).padStart(5)}%  ${c.name}`);
    await impl.stop(d);
    if (OURS) {
      // The JS profile: the same daemon under node --cpu-prof.
      const profDir = path.join(dir, 'cpuprof');
      const child = tb.spawnInNs(bed.lb, process.execPath, ['--cpu-prof', `--cpu-prof-dir=${profDir}`, path.join(ROOT, 'bin', 'nfqlb'), 'flowlb', '--queue=0:3', ...impl.daemonArgs.filter((a) => a.startsWith('--ft_shm='))], { stdio: ['ignore', 'pipe', 'pipe'] });
      child.stdout?.resume();
      child.stderr?.resume();
      const deadline = Date.now() + 15000;
      while (new Set(tb.queueProcIn(bed.lb).map((e) => e.queue)).size < 4 && Date.now() < deadline) await sleep(100);
      await sleep(500);
      setFlows(bed, impl, shm);
      await load();
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
      const files = fs.existsSync(profDir) ? fs.readdirSync(profDir) : [];
      if (files.length > 0) {
        const cp = summarizeCpuProfile(JSON.parse(fs.readFileSync(path.join(profDir, files[0]), 'utf8')) as CpuProfile);
        const packets = rate * seconds;
        const jsUsPerPacket = (cp.jsMs * 1000) / packets;
        cp.packets = packets;
        cp.jsUsPerPacket = jsUsPerPacket;
        report.cpuProfile = cp;
        say(`\nnode --cpu-prof of the daemon over its life (${(cp.wallMs / 1000).toFixed(1)} s, ${packets} packets): JavaScript ${cp.jsMs.toFixed(0)} ms (${jsUsPerPacket.toFixed(2)} µs/packet, start-up included), GC ${cp.gcMs.toFixed(0)} ms, native outside JS ${cp.programMs.toFixed(0)} ms, idle ${cp.idleMs.toFixed(0)} ms (the addon's receive/send time counts as idle or program: V8 only sees its own threads' state)`);
        say('self time, % of the non-idle samples:');
        for (const f of cp.top) say(`  ${f.pctOfBusy.toFixed(1).padStart(5)}%  ${f.ms.toFixed(1).padStart(7)} ms  ${f.name}  ${f.where}${f.caller ? `  (from ${f.caller})` : ''}`);
      }
    }
  } finally {
    // BENCH_PROFILE_KEEP=DIR keeps perf.data and the .cpuprofile there (large: not for the repository).
    if (process.env.BENCH_PROFILE_KEEP) fs.cpSync(dir, process.env.BENCH_PROFILE_KEEP, { recursive: true });
    fs.rmSync(dir, { recursive: true, force: true });
  }
  fs.mkdirSync(OUT_DIR, { recursive: true });
  const file = path.join(OUT_DIR, `${stamp()}-${impl.label}-profile.json`);
  fs.writeFileSync(file, compactJson(report));
  say(`\nresults: ${path.relative(process.cwd(), file)}`);
}

/** Self time per function of a V8 .cpuprofile (top 25), and the time in JavaScript, GC and native code ("(program)"). */
function summarizeCpuProfile(prof: CpuProfile): CpuProfileSummary {
  const self = new Map<string, number>();
  const byId = new Map(prof.nodes.map((n) => [n.id, n]));
  const parentOf = new Map<number, CpuProfile['nodes'][number]>();
  for (const n of prof.nodes) for (const c of n.children ?? []) parentOf.set(c, n);
  const callers = new Map<string, Map<string, number>>(); // key -> Map(caller name -> time)
  const dt = new Map<number, number>();
  for (let i = 0; i < prof.samples.length; i++) dt.set(prof.samples[i], (dt.get(prof.samples[i]) ?? 0) + (prof.timeDeltas[i] ?? 0));
  let total = 0;
  const special: Record<string, number> = { '(idle)': 0, '(program)': 0, '(garbage collector)': 0 };
  for (const [id, t] of dt) {
    const node = byId.get(id);
    if (node === undefined) continue;
    const cf = node.callFrame;
    if (cf.functionName in special) special[cf.functionName] += t;
    const key = `${cf.functionName || '(anonymous)'}\t${cf.url ? `${path.basename(cf.url)}:${cf.lineNumber + 1}` : ''}`;
    self.set(key, (self.get(key) ?? 0) + t);
    const parent = parentOf.get(id);
    if (parent !== undefined) {
      const pcf = parent.callFrame;
      const pk = `${pcf.functionName || '(anonymous)'}${pcf.url ? ` ${path.basename(pcf.url)}:${pcf.lineNumber + 1}` : ''}`;
      const of = callers.get(key) ?? new Map<string, number>();
      of.set(pk, (of.get(pk) ?? 0) + t);
      callers.set(key, of);
    }
    total += t;
  }
  const busy = total - special['(idle)'];
  const top = [...self.entries()]
    .filter(([k]) => !k.startsWith('(idle)'))
    .sort((a, b) => b[1] - a[1])
    .slice(0, 25)
    .map(([k, t]) => {
      const [name, where] = k.split('\t');
      const c = [...(callers.get(k) ?? new Map<string, number>()).entries()].sort((a, b) => b[1] - a[1])[0];
      return { name, where, pctOfBusy: (100 * t) / busy, ms: t / 1000, caller: c?.[0] ?? '' };
    });
  return {
    wallMs: total / 1000,
    idleMs: special['(idle)'] / 1000,
    gcMs: special['(garbage collector)'] / 1000,
    programMs: special['(program)'] / 1000,
    jsMs: (busy - special['(program)'] - special['(garbage collector)']) / 1000,
    top,
  };
}
