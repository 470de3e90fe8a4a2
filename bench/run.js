#!/usr/bin/env node
'use strict';
/**
 * The performance bench (npm run bench; root). Topology: testbed/testbed.ts's
 * gateway → LB → 4 targets, in network namespaces. trafgen in the gateway
 * sends small UDP packets to the VIP; the LB either queues them to a daemon
 * (`-j NFQUEUE --queue-balance A:B`, daemon `flowlb --queue=A:B`) or lets the
 * kernel mark them by a hash of the 5-tuple (`-j HMARK`, the baseline); the
 * targets count and drop them. A daemon's figure is always the ratio of what
 * it delivered to what the kernel's own path delivered for the same packets
 * in the same run.
 *
 * Modes (arguments):
 *   (none)     the comparison: this project's daemon (each variant: see
 *              --ours-args) and the original nfqlb 1.2.0, all running (4
 *              queues each: 0:3, 4:7, ...), measured point by point in the
 *              same run with the same packets, pacing and baseline
 *              (COMPARE_POINTS: steady 100k and 200k packets/s, trafgen's
 *              bursts at 100k, one 5-tuple at 150k, IPv6, 5,000 and 10,000
 *              flows checked before the packets' flow, 10,000 flows with
 *              metrics scrapers + trace clients + idle control connections
 *              (bench/clients.js), and Meridio's flowlb line on both sides);
 *              beside them the floor (../shared/reference/nullq, built into
 *              /tmp), and a latency probe (bench/probe.py) beside every run; daemon
 *              CPU µs per delivered packet in total and per thread (from
 *              /proc/PID/task/*\/stat, grouped by thread name). Without the
 *              original: ours only, said in one line. BENCH_QUICK=1: 1 s per
 *              run, one round.
 *   --ours-args="--opt=v ..."  (repeatable) the variants of this project's
 *              daemon to compare, each with these extra flowlb options
 *              (`--ours-args=` is the defaults). Without it: BENCH_WORKERS.
 *              A variant whose option `flowlb --help` does not list is
 *              skipped with one line.
 *   --detail   this project alone: rates 25k..max, IPv4 and IPv6, settings
 *              default/meridio/+hog; activation churn under 50k pps; RSS over
 *              60 s; TCP connections/s and round-trip latency.
 *   --sweep    the option sweeps behind the defaults (batch, qlength,
 *              rcvbuf, queues, processes); IPv4 at 100k pps and max.
 *   --profile  where the time goes at 100k pps: perf trace syscall summary,
 *              perf stat, perf record (kernel vs user), node --cpu-prof.
 *   --queue-memory  what a full queue costs the kernel, by qlength,
 *              SO_RCVBUF and frame size (the daemon stopped with SIGSTOP).
 *   --table=RESULT.json  prints the tables of a comparison already run.
 *
 * Environment: NFQLB_BIN ("ours": another nfqlb-compatible binary in place of
 * bin/nfqlb; also the one binary of --detail/--sweep/--profile),
 * NFQLB_ORIGINAL (the original nfqlb; default
 * ../shared/reference/nfqlb-1.2.0/nfqlb relative to the repository),
 * BENCH_QUICK=1, BENCH_SECONDS (per run), BENCH_REPEAT (rounds/runs per
 * point, median kept), BENCH_POINTS (comparison point ids, comma-separated),
 * BENCH_SETTINGS ("name=--opt=v --opt2=v;name2=..." instead of default and
 * meridio in --detail), BENCH_OUT (results directory), BENCH_WORKERS
 * (comparison: this project's variants, comma-separated, `default` = no
 * extra option, N = --workers=N, `cores` = --workers=<CPUs - 1>; default
 * "default,1,2"), BENCH_FLOOR (the floor's variants: `default`, nullq
 * options, `off`), NULLQ_SRC / NULLQ_BIN (the floor's source or a built
 * binary), BENCH_BURST_REPEAT (rounds of the burst points, default 5),
 * BENCH_PROBE_RATE (latency probe packets/s, default 500, 0 = off),
 * BENCH_QUEUES (queues per daemon, default 4, `cores`), BENCH_SWEEP (--sweep
 * groups; burst-defaults is the queue length / receive buffer / batch sweep
 * on the bursty 100k point).
 *
 * Results: a table on stdout, bench/results/<date>-<label>.json and .svg.
 * Everything made is removed at the end, also on failure or Ctrl-C.
 */
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawnSync } = require('node:child_process');

const ROOT = path.resolve(__dirname, '..');
let tb;
let shmLib;
try {
  tb = require(path.join(ROOT, 'testbed', 'dist', 'testbed', 'testbed.js'));
  shmLib = require(path.join(ROOT, 'dist', 'tables', 'tablefile.js'));
} catch (err) {
  process.stderr.write(`bench: dist/ is not built (${err.message.split('\n')[0]}); run bash scripts/setup.sh\n`);
  process.exit(1);
}
const { svgPlot, seriesOf, compareSvg } = require('./plot');

const argv = process.argv.slice(2);
const MODE = argv.includes('--sweep')
  ? 'sweep'
  : argv.includes('--profile')
    ? 'profile'
    : argv.includes('--queue-memory')
      ? 'queue-memory'
      : argv.includes('--detail')
        ? 'detail'
        : 'compare';
const QUICK = process.env.BENCH_QUICK === '1';
const SECONDS = Number(process.env.BENCH_SECONDS || (QUICK ? 1 : 3));
const REPEAT = Number(process.env.BENCH_REPEAT || (MODE === 'sweep' ? 2 : MODE === 'compare' && !QUICK ? 3 : 1));
const RATES = QUICK ? [50000, 100000, 'max'] : [25000, 50000, 100000, 150000, 'max'];
const BIN = process.env.NFQLB_BIN ? path.resolve(process.env.NFQLB_BIN) : path.join(ROOT, 'bin', 'nfqlb');
const OURS = !process.env.NFQLB_BIN;
const ORIGINAL = process.env.NFQLB_ORIGINAL
  ? path.resolve(process.env.NFQLB_ORIGINAL)
  : path.resolve(ROOT, '..', 'shared', 'reference', 'nfqlb-1.2.0', 'nfqlb');
const OUT_DIR = process.env.BENCH_OUT ? path.resolve(process.env.BENCH_OUT) : path.join(__dirname, 'results');
const TCP_JS = path.join(__dirname, 'tcp.js');
const PROBE_PY = path.join(__dirname, 'probe.py');
/** The latency probe (bench/probe.py): its UDP port (in the load's flow) and packets/s beside every comparison run (0: off). */
const PROBE_PORT = 5003;
const PROBE_RATE = Number(process.env.BENCH_PROBE_RATE ?? 500);
const ECHO_PORT = 4001;
const CHURN_RATE = 50000;
const CHURN_PER_SECOND = 100;

/** Meridio v1.2.8's stateless-lb: `nfqlb flowlb --promiscuous_ping --queue=0:3 --qlength=1024 --hash_mode=0`. */
const MERIDIO = ['--promiscuous_ping', '--queue=0:3', '--qlength=1024', '--hash_mode=0'];
/** The same without its queue range, for the comparison, where every daemon has its own. */
const MERIDIO_FLOWLB = MERIDIO.filter((a) => !a.startsWith('--queue='));

const say = (text = '') => process.stdout.write(`${text}\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const pick = (o, keys) => Object.fromEntries(keys.filter((k) => o[k] !== undefined).map((k) => [k, o[k]]));
const median = (xs) => {
  const s = xs.filter(Number.isFinite).sort((a, b) => a - b);
  return s.length === 0 ? NaN : s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

// ---------------------------------------------------------------------------
// The implementation under test: its CLI and its daemon, in the LB namespace

/** First and last queue of a `--queue=` argument (default 2, nfqlb's). */
function queueRange(args) {
  const a = args.find((x) => x.startsWith('--queue='));
  const m = /^--queue=(\d+)(?::(\d+))?$/.exec(a ?? '--queue=2');
  return [Number(m[1]), Number(m[2] ?? m[1])];
}

/** Metrics ports handed out so far (127.0.0.1:19657 and up, in the LB namespace). */
let metricsPortsUsed = 0;

class Implementation {
  /**
   * `bin` in the LB namespace. Options: label, key (a short id for JSON),
   * env (for every CLI command and the daemon: e.g. NFQLB_FLOW_ADDRESS, so
   * that two daemons in one namespace each have their own control socket),
   * daemonArgs (added to every `flowlb`: e.g. its own --trace_address).
   */
  constructor(bed, { bin = BIN, label, key = 'ours', env = {}, daemonArgs = [] } = {}) {
    this.bed = bed;
    this.bin = bin;
    this.key = key;
    this.env = env;
    this.daemonArgs = daemonArgs;
    const v = this.cli(['version']);
    this.version = (v.stdout + v.stderr).trim().split('\n').join(' ') || '?';
    this.label = label ?? (OURS ? 'nfqlb-ts' : path.basename(bin));
    const help = this.cli(['flowlb', '--help']);
    this.help = help.stdout + help.stderr;
  }

  /** `bin args` in the LB namespace (never throws). */
  cli(args, env = {}) {
    return tb.nsExec(this.bed.lb, this.bin, args, { allowFail: true, env: { ...this.env, ...env }, timeoutMs: 30000 });
  }

  cliOk(args, env = {}) {
    const r = this.cli(args, env);
    if (r.status !== 0) throw new Error(`${path.basename(this.bin)} ${args.join(' ')} failed (${r.status}): ${r.stderr}${r.stdout}`);
    return r;
  }

  /** True when `flowlb --help` lists --name. */
  supports(name) {
    return this.help.includes(`--${name}`);
  }

  /**
   * Starts `BIN flowlb args` and waits until its queues are bound and its
   * control socket answers. env.NFQLB_FLOW_ADDRESS picks the control socket.
   * Adds --metrics_address=127.0.0.1:<port> when the binary has the option.
   */
  async start(args, env = {}) {
    const extra = [];
    let metricsPort = null;
    if (this.supports('metrics_address')) {
      metricsPort = 19657 + metricsPortsUsed++;
      extra.push(`--metrics_address=127.0.0.1:${metricsPort}`);
    }
    const all = ['flowlb', ...args, ...this.daemonArgs, ...extra];
    env = { ...this.env, ...env };
    const child = tb.spawnInNs(this.bed.lb, this.bin, all, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    const d = { child, args: all, env, pid: child.pid, log: '', metricsPort, queues: queueRange(args) };
    const keep = (buf) => {
      d.log = (d.log + buf.toString()).slice(-20000);
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    const [first, last] = d.queues;
    const deadline = Date.now() + 15000;
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`${all.join(' ')} exited: ${d.log}`);
      const bound = new Set(tb.queueProcIn(this.bed.lb).map((e) => e.queue));
      let all4 = true;
      for (let q = first; q <= last; q++) all4 = all4 && bound.has(q);
      if (all4 && this.cli(['flow-list-names'], env).status === 0) break;
      if (Date.now() > deadline) {
        await tb.killProcess(child);
        throw new Error(`${all.join(' ')} did not bind its queues in 15 s: ${d.log}`);
      }
      await sleep(100);
    }
    return d;
  }

  async stop(d) {
    const exited = new Promise((r) => (d.child.exitCode !== null || d.child.signalCode !== null ? r() : d.child.once('exit', r)));
    d.child.kill('SIGTERM');
    const t = await Promise.race([exited.then(() => true), sleep(5000).then(() => false)]);
    if (!t) await tb.killProcess(d.child);
  }

  /** Prometheus text of the daemon, or null without a metrics endpoint. */
  scrape(d) {
    return d.metricsPort === null ? null : tb.scrapeMetrics(this.bed.lb, d.metricsPort);
  }
}

/**
 * The floor (issue 21): ../shared/reference/nullq, a minimal C consumer that
 * binds the queues and marks every packet from a cheap hash, nothing else.
 * It has no CLI, tables or flows: start() takes only the queue range and
 * --qlength from a point's options (plus the variant's own nullq options,
 * BENCH_FLOOR), and marks 1..4, which the bench routes like the targets'
 * fwmarks (floorRoutes). Built by buildFloor() into /tmp (shared/ is
 * read-only).
 */
class Floor {
  constructor(bed, bin, { key, extra = [] }) {
    this.bed = bed;
    this.bin = bin;
    this.key = key;
    this.isFloor = true;
    this.env = {};
    this.daemonArgs = [];
    this.extraArgs = extra;
    this.version = 'nullq';
    this.label = `nullq (floor)${extra.length ? ` ${extra.join(' ')}` : ''}`;
  }

  supports() {
    return false;
  }

  scrape() {
    return null;
  }

  /** `nullq --queue=A:B [--qlength=N] extra...`; waits for `nullq ready` and its queues in the kernel's table. */
  async start(args) {
    const keep = args.filter((a) => a.startsWith('--queue=') || a.startsWith('--qlength='));
    const all = [...keep, ...this.extraArgs];
    const child = tb.spawnInNs(this.bed.lb, this.bin, all, { env: process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    const d = { child, args: all, env: {}, pid: child.pid, log: '', metricsPort: null, queues: queueRange(args) };
    const keepLog = (buf) => {
      d.log = (d.log + buf.toString()).slice(-20000);
    };
    child.stdout.on('data', keepLog);
    child.stderr.on('data', keepLog);
    const [first, last] = d.queues;
    const deadline = Date.now() + 15000;
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`nullq ${all.join(' ')} exited: ${d.log}`);
      const bound = new Set(tb.queueProcIn(this.bed.lb).map((e) => e.queue));
      let allBound = d.log.includes('nullq ready');
      for (let q = first; q <= last; q++) allBound = allBound && bound.has(q);
      if (allBound) break;
      if (Date.now() > deadline) {
        await tb.killProcess(child);
        throw new Error(`nullq ${all.join(' ')} did not bind its queues in 15 s: ${d.log}`);
      }
      await sleep(50);
    }
    return d;
  }

  async stop(d) {
    return Implementation.prototype.stop.call(this, d);
  }
}

const NULLQ_SRC = process.env.NULLQ_SRC ? path.resolve(process.env.NULLQ_SRC) : path.resolve(ROOT, '..', 'shared', 'reference', 'nullq', 'nullq.c');

/** gcc -O2 nullq.c into /tmp (NULLQ_BIN: a built one instead); null with one line when neither is there. */
function buildFloor() {
  if (process.env.NULLQ_BIN) return path.resolve(process.env.NULLQ_BIN);
  if (!fs.existsSync(NULLQ_SRC)) {
    say(`bench: the floor's source is not at ${NULLQ_SRC} (set NULLQ_SRC or NULLQ_BIN): measuring without the floor`);
    return null;
  }
  const out = path.join(os.tmpdir(), `nfqlb-bench-nullq-${process.pid}`);
  const r = spawnSync('gcc', ['-O2', '-Wall', '-o', out, NULLQ_SRC, '-lnetfilter_queue', '-lmnl', '-lpthread'], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`building the floor failed: gcc -O2 -Wall -o ${out} ${NULLQ_SRC} -lnetfilter_queue -lmnl -lpthread: ${r.stderr}${r.error ?? ''}`);
  process.on('exit', () => fs.rmSync(out, { force: true }));
  return out;
}

/** nullq marks 1..N (N = 4 targets): these marks are routed to the targets like their own fwmarks. */
function floorRoutes(bed) {
  bed.targets.forEach((t, i) => tb.addFwmarkRule(bed.lb, i + 1, t.table));
}

/** nfqlb_decisions_total of `reason` and drop verdicts from Prometheus text (null without). */
function decisions(text) {
  if (text === null) return null;
  return {
    no_target: tb.metricSum(text, 'nfqlb_decisions_total', { reason: 'no_target' }),
    invalid: tb.metricSum(text, 'nfqlb_decisions_total', { reason: 'invalid' }),
    drop: tb.metricSum(text, 'nfqlb_packets_total', { verdict: 'drop' }),
  };
}

// ---------------------------------------------------------------------------
// The test bed

const TABLE = { M: 10000, N: 100 }; // Meridio: --M=100*maxTargets --N=maxTargets

function buildBed() {
  const bed = tb.Testbed.build();
  tb.addLoadCounters(bed);
  bed.mac = tb.macOf(bed.lb, 'gw0');
  return bed;
}

/**
 * trafgen's options for a run: `rate` 'max' is trafgen as fast as it goes;
 * a number is paced 'steady' (token bucket on the gateway's link) or, with
 * pacing 'bursts', trafgen's own --rate (each second's packets back to back).
 */
function trafgenOptions(family, rate, count, size, pacing = 'steady') {
  if (rate === 'max') return { count };
  return { count, rate, steady: pacing === 'steady' ? { frameBytes: tb.frameBytes({ family, size }) } : undefined };
}

/** trafgen's packet configuration for (family, sources, frame size). */
function loadConfig(bed, family, sources, size) {
  return tb.trafgenConfig({ family, dstMac: bed.mac, sources, size });
}

/** Meridio's table and flows for the bench, through the implementation's CLI. */
function configure(bed, impl, shm, env = {}) {
  impl.cliOk(['init', `--shm=${shm}`, `--M=${TABLE.M}`, `--N=${TABLE.N}`]);
  for (const t of bed.targets) impl.cliOk(['activate', `--index=${t.id - 1}`, `--shm=${shm}`, `${t.fwmark}`]);
  setFlows(bed, impl, shm, env);
}

function setFlows(bed, impl, shm, env = {}) {
  const dsts = `--dsts=${bed.vip4}/32,${bed.vip6}/128`;
  impl.cliOk(['flow-set', `--name=${shm}-udp`, `--target=${shm}`, '--prio=1', '--protocols=udp', dsts, `--dports=${tb.LOAD_PORT},${PROBE_PORT}`], env);
  impl.cliOk(['flow-set', `--name=${shm}-tcp`, `--target=${shm}`, '--prio=1', '--protocols=tcp', dsts, `--dports=${bed.port},${ECHO_PORT}`], env);
}

// ---------------------------------------------------------------------------
// One load run

const QUIET_MAX_MS = Number(process.env.BENCH_QUIET_MAX_MS || (QUICK ? 3000 : 10000));
/** Total waiting allowed per bench run, so a machine that is never idle still ends in time. */
const QUIET_BUDGET_MS = Number(process.env.BENCH_QUIET_BUDGET_MS || (QUICK ? 20000 : 120000));
/** Cores used by other processes during a daemon run above which the pair is run again (at most RETRIES times). */
const DISTURBED_CORES = 0.3;
const RETRIES = Number(process.env.BENCH_RETRIES || (QUICK ? 0 : 2));
const quietLog = { waitedMs: 0, notQuiet: 0, disturbedRuns: 0, retries: 0 };

/**
 * Waits until the machine is idle (less than 0.25 of a CPU busy over 300 ms:
 * other people's tests on a shared machine), at most BENCH_QUIET_MAX_MS.
 * Loss through a queue comes from the daemon not being scheduled, so a run
 * next to someone's jest says little about the daemon.
 */
async function quiet() {
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

let generatorMax = 230000; // calibrated at start

/**
 * Sends `count` packets (family, sources) at `rate` (or as fast as trafgen
 * goes) through `marking` and returns what was offered and delivered. With
 * daemons: their CPU time and the kernel's queue drops over the run.
 */
/** CPU seconds of a process so far, NaN when it is gone. */
function cpuOrNaN(pid) {
  try {
    return tb.cpuSeconds(pid);
  } catch {
    return NaN;
  }
}

async function loadRun(bed, { family, sources, rate, count, marking, daemons = [], queues = [0, 3], size, hog = 0, pacing = 'steady', companions = [], afterSend = null }) {
  tb.setMarking(bed, marking, queues[0], queues[1]);
  const c0 = tb.loadCounts(bed, family);
  const q0 = tb.queueDrops(bed.lb);
  const cpu0 = daemons.reduce((s, d) => s + tb.cpuSeconds(d.pid), 0);
  // Processes the point runs on purpose beside the daemon (clients): theirs is not "other people's" CPU.
  const companionCpu = () => companions.reduce((s, pid) => {
    try {
      return s + tb.cpuSeconds(pid);
    } catch {
      return s;
    }
  }, 0);
  const comp0 = companionCpu();
  const m0 = tb.machineCpuSeconds();
  let hogCpu = 0;
  const hogs = Array.from({ length: hog }, () => tb.spawnInNs(bed.gw, 'sh', ['-c', 'while :; do :; done'], { stdio: 'ignore' }));
  let g;
  try {
    g = await tb.runTrafgen(bed.gw, 'lb0', loadConfig(bed, family, sources, size), trafgenOptions(family, rate, count, size, pacing));
  } finally {
    for (const h of hogs) {
      try {
        hogCpu += tb.cpuSeconds(h.pid);
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

/** A point: baseline then daemon, REPEAT times; the run with the median ratio is kept, all ratios listed. */
async function point(bed, setting, daemons, { family, sources, rate, seconds = SECONDS, repeat = REPEAT }) {
  const count = Math.round((rate === 'max' ? generatorMax : rate) * seconds);
  const tries = [];
  for (let i = 0; i < repeat; i++) {
    let best = null;
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
    tries.push(best);
  }
  const ratios = tries.map((t) => t.ratio);
  const m = median(ratios);
  const kept = tries.reduce((best, t) => (Math.abs(t.ratio - m) < Math.abs(best.ratio - m) ? t : best), tries[0]);
  const { base, lb } = kept;
  const mem = daemons.length > 0 ? tb.memoryKiB(daemons[0].pid) : null;
  const row = {
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

const HEADER =
  'setting        fam flows rate     offered/s  base.deliv  lb.deliv  ratio  lb/off  q.drop  u.drop  cpu µs/pkt  cpu%  other  rss MiB';

function printRow(r) {
  const f = (x, w, d = 0) => (x === null || x === undefined || !Number.isFinite(x) ? '-' : x.toFixed(d)).padStart(w);
  say(
    `${r.setting.padEnd(14)} v${r.family}  ${(r.sources === 'one' ? '1' : 'many').padEnd(5)} ${String(r.rate).padEnd(7)} ${f(r.offeredPps, 10)}  ${f(r.baseline.delivered, 10)} ${f(r.lb.delivered, 9)}  ${f(r.ratio, 5, 3)}  ${f(r.deliveredFraction, 6, 3)} ${f(r.lb.queueDropped, 7)} ${f(r.lb.userDropped, 7)}  ${f(r.cpuUsPerPacket, 10, 2)}  ${f(r.cpuShare === null ? NaN : r.cpuShare * 100, 4)}  ${f(r.lb.foreignCores, 5, 2)}${r.disturbed ? '!' : ' '} ${f(r.rssKiB === null ? NaN : r.rssKiB / 1024, 7, 1)}`,
  );
}

// ---------------------------------------------------------------------------
// Activation churn, RSS, TCP

/**
 * 50k pps (IPv4, many flows) while target t4 is deactivated and activated
 * again CHURN_PER_SECOND times a second (3 targets stay active). nfqlb-ts:
 * through the table library the CLI uses (src/addon/shm.ts, the same code as
 * `nfqlb activate/deactivate`), because starting a Node.js CLI 100 times a
 * second does not fit on a small machine; another binary: its CLI.
 */
async function churn(bed, impl, d, shm, { seconds }) {
  const t4 = bed.targets[bed.targets.length - 1];
  const viaCli = !OURS || process.env.BENCH_CHURN === 'cli';
  // What one CLI command costs, for the report.
  const cliMs = [];
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
  const table = viaCli ? null : shmLib.openTable(shm, true);
  let commands = 0;
  let stop = false;
  const churner = (async () => {
    const t0 = Date.now();
    while (!stop) {
      const active = commands % 2 === 1; // even: deactivate, odd: activate
      if (viaCli) {
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
    shmLib.closeTable(table);
  } else impl.cliOk(['activate', `--index=${t4.id - 1}`, `--shm=${shm}`, `${t4.fwmark}`]);
  await sleep(300);
  const c = tb.loadDelta(c0, tb.loadCounts(bed, 4));
  const q1 = tb.queueDrops(bed.lb);
  const m1 = decisions(impl.scrape(d));
  const delta = (k) => (m0 === null || m1 === null ? null : (m1[k] ?? 0) - (m0[k] ?? 0));
  const r = {
    seconds: g.seconds,
    offeredPps: Math.round(c.offered / g.seconds),
    offered: c.offered,
    delivered: c.delivered,
    lost: c.offered - c.delivered,
    perTarget: c.perTarget,
    commands,
    commandsPerSecond: cmdRate,
    via: viaCli ? 'cli' : 'library (src/addon/shm.ts)',
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

/** RSS once a second over `seconds` at `rate` (IPv4, many flows). */
async function rssRun(bed, d, { rate, seconds }) {
  tb.setMarking(bed, 'queue', 0, 3);
  await quiet();
  const c0 = tb.loadCounts(bed, 4);
  const samples = [];
  let running = true;
  const sampler = (async () => {
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

/** Runs a bench/tcp.js client in the gateway; returns its JSON. */
function tcpClient(bed, args, timeoutMs) {
  const r = tb.nsExec(bed.gw, process.execPath, [TCP_JS, ...args], { timeoutMs, allowFail: true });
  if (r.status !== 0) throw new Error(`tcp.js ${args.join(' ')}: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

async function startEchoServers(bed) {
  for (const t of bed.targets) {
    const child = tb.spawnInNs(t.ns, process.execPath, [TCP_JS, 'echo', `${ECHO_PORT}`]);
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`echo server of ${t.name} did not start`)), 10000);
      child.stdout.on('data', (b) => {
        if (b.toString().includes('listening')) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.once('exit', (code) => reject(new Error(`echo server of ${t.name} exited ${code}`)));
    });
  }
}

/** TCP new connections/s and round-trip latency, kernel marking vs through the daemon. */
function tcpRuns(bed, { seconds, count }) {
  const rows = [];
  for (const family of [4, 6]) {
    const vip = family === 4 ? bed.vip4 : bed.vip6;
    const src = family === 4 ? bed.client4 : bed.client6;
    for (const marking of ['hmark', 'queue']) {
      tb.setMarking(bed, marking, 0, 3);
      const cps = tcpClient(bed, ['cps', `--dst=${vip}`, `--port=${bed.port}`, `--src=${src}`, `--seconds=${seconds}`, '--concurrency=16'], (seconds + 30) * 1000);
      const rtt = tcpClient(bed, ['rtt', `--dst=${vip}`, `--port=${ECHO_PORT}`, `--src=${src}`, `--count=${count}`, '--conns=8'], 120000);
      const row = { family, path: marking === 'hmark' ? 'direct (HMARK)' : 'through the daemon', cps, rtt };
      rows.push(row);
      say(
        `tcp v${family} ${row.path.padEnd(19)} ${cps.cps.toFixed(0).padStart(6)} conn/s (failed ${cps.failed})   rtt p50 ${rtt.p50Us.toFixed(0)} µs  p99 ${rtt.p99Us.toFixed(0)} µs  (${rtt.samples} samples, ${rtt.failed} failed conns)`,
      );
    }
  }
  return rows;
}

// ---------------------------------------------------------------------------
// Machine and results

function machine() {
  const cpu = (/^model name\s*:\s*(.*)$/m.exec(fs.readFileSync('/proc/cpuinfo', 'utf8')) ?? [])[1] ?? os.cpus()[0]?.model;
  const trafgen = spawnSync('trafgen', ['--version'], { encoding: 'utf8' }).stdout.split('\n')[0];
  return { nproc: os.cpus().length, cpu, kernel: os.release(), memMiB: Math.round(os.totalmem() / 2 ** 20), node: process.version, trafgen };
}

function stamp() {
  const d = new Date();
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}-${p(d.getHours())}${p(d.getMinutes())}`;
}

/** JSON with one line per run and numbers to 4 significant digits: small enough to commit. */
function compactJson(result) {
  const round = (_k, v) => (typeof v === 'number' && !Number.isInteger(v) ? Number(v.toPrecision(4)) : v);
  const line = (v) => JSON.stringify(v, round);
  const fields = Object.entries(result).map(([k, v]) =>
    Array.isArray(v) && v.length > 0 && typeof v[0] === 'object' ? `"${k}": [\n  ${v.map(line).join(',\n  ')}\n]` : `"${k}": ${line(v)}`,
  );
  return `{\n${fields.join(',\n')}\n}\n`;
}

function writeResults(result, name, { plot = true, stamped = true } = {}) {
  fs.mkdirSync(OUT_DIR, { recursive: true });
  const base = path.join(OUT_DIR, stamped ? `${stamp()}-${name}` : name);
  fs.writeFileSync(`${base}.json`, compactJson(result));
  let svg = null;
  if (plot && result.mode === 'compare') svg = compareSvg(result);
  else if (plot) {
    const series = seriesOf(result);
    if (series.length > 0) {
      svg = svgPlot(series, {
        title: `${result.implementation.label}: delivered through the LB / by the kernel alone (${result.machine.nproc} CPUs)`,
        targets: [
          { y: 0.95, label: '0.95' },
          { y: 0.8, label: '0.80' },
        ],
      });
    }
  }
  if (svg !== null) fs.writeFileSync(`${base}.svg`, svg);
  say(`\nresults: ${path.relative(process.cwd(), base)}.json${svg !== null ? ` and .svg` : ''}`);
}

/**
 * BENCH_SETTINGS="name=--opt=v --opt2;name2=..." (instead of `dflt`).
 * Pseudo-options, not passed to the daemon: --bench-hog=N runs N CPU-bound
 * processes beside every run of that setting (a shared machine);
 * --bench-pacing=bursts sends with trafgen's own --rate (each second's
 * packets back to back) instead of evenly paced packets.
 */
function settingsFromEnv(dflt) {
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
        pacing: pacing === undefined ? 'steady' : pacing.split('=')[1],
      };
    });
}

function withQueues(settings) {
  return settings.map((s) => ({ ...s, queues: queueRange(s.args.some((a) => a.startsWith('--queue=')) ? s.args : ['--queue=0:3']), args: s.args.some((a) => a.startsWith('--queue=')) ? s.args : ['--queue=0:3', ...s.args] }));
}

/** The generator's max: the best of two unpaced runs through kernel marking, on a quiet machine. */
async function calibrate(bed) {
  let best = null;
  for (let i = 0; i < 2; i++) {
    await quiet();
    const g = await loadRun(bed, { family: 4, sources: 'many', rate: 'max', count: QUICK ? 200000 : 400000, marking: 'hmark' });
    if (best === null || g.offeredPps > best.offeredPps) best = g;
  }
  generatorMax = Math.round(best.offeredPps);
  say(`generator max (trafgen --rate 10^7, one process, kernel marking): ${generatorMax} pps; delivered ${best.delivered}/${best.offered}`);
}

// ---------------------------------------------------------------------------
// The comparison (default mode): this project's daemon and the original nfqlb

/**
 * The points of the comparison. Every point is measured for every
 * implementation in the same round, right after one kernel-marking (HMARK) run
 * of the same packets, whose delivered count is the denominator of both
 * ratios. To add a point, add an entry:
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
const COMPARE_POINTS = [
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

/**
 * Rounds of a point: REPEAT, and at least BENCH_BURST_REPEAT (default 5, 1
 * with BENCH_QUICK) for trafgen's bursts, whose result swings from round to
 * round (reported as min/median/max).
 */
const BURST_REPEAT = Number(process.env.BENCH_BURST_REPEAT || (QUICK ? 1 : 5));
const roundsOf = (pt) => (pt.pacing === 'bursts' ? Math.max(REPEAT, BURST_REPEAT) : REPEAT);

const CLIENTS_JS = path.join(__dirname, 'clients.js');

/**
 * `count` flows through the implementation's control socket (bench/clients.js
 * flows, in the LB namespace): udp to the VIPs, dports 20000.., priorities
 * 2.. — all above the load's flow (priority 1), so every one of them is
 * checked, and misses, before the load's flow matches.
 */
async function setManyFlows(bed, impl, shm, count) {
  const child = tb.spawnInNs(
    bed.lb,
    process.execPath,
    [CLIENTS_JS, 'flows', `--address=${impl.env.NFQLB_FLOW_ADDRESS}`, `--count=${count}`, `--target=${shm}`, `--dsts=${bed.vip4}/32,${bed.vip6}/128`, '--dport-base=20000', '--prio-base=2', `--prefix=${shm}-x`],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  child.stdout.on('data', (b) => (out += b.toString()));
  child.stderr.on('data', (b) => (out += b.toString()));
  const code = await new Promise((r) => child.once('exit', r));
  if (code !== 0) throw new Error(`clients.js flows for ${impl.key} exited ${code}: ${out}`);
  const res = JSON.parse(out.trim().split('\n').pop());
  if (res.failed > 0) throw new Error(`${impl.key}: ${res.failed} of ${count} flow-set requests failed (first: ${res.firstError})`);
  say(`  ${impl.key}: ${count} flows set in ${(res.ms / 1000).toFixed(1)} s`);
  return res;
}

/**
 * A `beside` hook: bench/clients.js beside in the LB namespace for the run —
 * metrics scrapers (only where the daemon has a metrics endpoint), trace
 * clients on the daemon's trace address, idle control connections. Returns
 * { pid, stop }, stop() resolving with the clients' counts.
 */
function besideClients({ scrapers, traceClients, idle }) {
  return async ({ bed, impl, daemon }) => {
    const trace = impl.daemonArgs.find((a) => a.startsWith('--trace_address=')).slice('--trace_address='.length);
    const args = [CLIENTS_JS, 'beside', `--trace=${trace}`, `--trace-clients=${traceClients}`, `--control=${impl.env.NFQLB_FLOW_ADDRESS}`, `--idle=${idle}`];
    if (daemon.metricsPort !== null) args.push(`--metrics-port=${daemon.metricsPort}`, `--scrapers=${scrapers}`);
    const child = tb.spawnInNs(bed.lb, process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (b) => (out += b.toString()));
    child.stderr.on('data', (b) => (out += b.toString()));
    const deadline = Date.now() + 10000;
    while (!out.includes('ready\n') && child.exitCode === null && Date.now() < deadline) await sleep(50);
    if (!out.includes('ready\n')) {
      await tb.killProcess(child);
      throw new Error(`clients.js beside did not start: ${out}`);
    }
    // Let the scrapers and the reconnecting idle clients reach their pace before the load.
    await sleep(500);
    return {
      pid: child.pid,
      stop: async () => {
        const exited = new Promise((r) => (child.exitCode !== null ? r() : child.once('exit', r)));
        child.kill('SIGTERM');
        await Promise.race([exited, sleep(5000)]);
        if (child.exitCode === null) await tb.killProcess(child);
        const line = out.split('\n').find((l) => l.startsWith('{'));
        return line ? JSON.parse(line) : { error: out.slice(-500) };
      },
    };
  };
}

/** CPU seconds of each thread of `pid` so far (Map tid → { name, seconds }), from /proc/<pid>/task. */
function threadCpu(pid) {
  const out = new Map();
  let tids = [];
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
function threadShares(pid, before, after, seconds, delivered) {
  return [...after.entries()]
    .map(([tid, t]) => {
      const cpu = t.seconds - (before.get(tid)?.seconds ?? 0);
      return { tid: Number(tid), name: Number(tid) === pid ? 'main' : t.name, cpuSeconds: cpu, cores: cpu / seconds, usPerPacket: delivered > 0 ? (cpu * 1e6) / delivered : NaN };
    })
    .filter((t) => t.cpuSeconds > 0)
    .sort((a, b) => b.cpuSeconds - a.cpuSeconds);
}

/** Threads grouped by name: [{ name, threads, usPerPacket, cores, each: [µs/packet of each thread, busiest first] }]. */
function threadGroups(threads) {
  const groups = new Map();
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

/**
 * The variants of this project's daemon: each `--ours-args="..."` argument
 * of bench/run.js is one (an empty one is the defaults); without any,
 * BENCH_WORKERS (default "default,1,2") gives one variant per value: `default`
 * (no extra option) or N (`--workers=N`). A variant whose options the
 * daemon's `flowlb --help` does not list is skipped with one line.
 */
function oursVariants() {
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
function floorVariants() {
  const spec = (process.env.BENCH_FLOOR ?? 'default').trim();
  if (spec === 'off' || spec === '') return [];
  return spec
    .split(',')
    .map((x) => x.trim())
    .filter((x) => x !== '')
    .map((x) => (x === 'default' ? [] : x.split(/\s+/)));
}

/**
 * Queues per daemon in the comparison (its --queue range and the NFQUEUE
 * rule's --queue-balance): BENCH_QUEUES, default 4 (Meridio's 0:3); `cores`
 * = one per CPU, at least 4 — the mode for checking the projection of
 * docs/performance.md ("More cores") on a larger machine, with
 * BENCH_WORKERS=default,cores (`cores` there = --workers=<CPUs - 1>).
 */
const QUEUES = process.env.BENCH_QUEUES === 'cores' ? Math.max(4, os.cpus().length) : Number(process.env.BENCH_QUEUES || 4);

/** The implementations of the comparison: ours (bin/nfqlb or NFQLB_BIN, each variant), and the original when it is there. */
function compareImplementations(bed) {
  const tag = `${process.pid}`;
  const impls = [];
  const make = (key, bin, label, extraAndEnv = []) => {
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
    const missing = extra.map((a) => /^--([^=]+)/.exec(a)?.[1]).filter((name) => name !== undefined && !impl.supports(name));
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
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
  for (const extra of oursVariants()) {
    const suffix = extra.length === 0 ? '' : `-${extra.map((a) => a.replace(/^--|^env:NFQLB_/, '').replace(/[^A-Za-z0-9]+/g, '')).join('-')}`;
    const base = (i) => (OURS ? `nfqlb-ts ${pkg.version}` : `${path.basename(BIN)} ${i.version} (NFQLB_BIN)`);
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

/**
 * The probe's receivers, one per target (bench/probe.py recv), started once
 * for the comparison; null when BENCH_PROBE_RATE=0.
 */
async function startProbeReceivers(bed) {
  if (!(PROBE_RATE > 0)) return null;
  const receivers = [];
  for (const t of bed.targets) {
    const child = tb.spawnInNs(t.ns, 'python3', [PROBE_PY, 'recv', `${PROBE_PORT}`], { stdio: ['ignore', 'pipe', 'pipe'] });
    const r = { child, out: '' };
    child.stdout.on('data', (b) => (r.out += b.toString()));
    child.stderr.on('data', (b) => (r.out += b.toString()));
    const deadline = Date.now() + 10000;
    while (!r.out.includes('ready\n') && child.exitCode === null && Date.now() < deadline) await sleep(20);
    if (!r.out.includes('ready\n')) throw new Error(`probe receiver in ${t.name} did not start: ${r.out}`);
    r.out = '';
    receivers.push(r);
  }
  return receivers;
}

/**
 * Runs `run(companionPids)` (a loadRun) with the probe sending beside it
 * (PROBE_RATE packets/s for the load's `seconds`, to the VIP of `family`);
 * returns [its result, the probe's delays: { count, sent, p50Us, p90Us, p99Us, maxUs } or null].
 */
async function withProbe(bed, receivers, family, seconds, run) {
  if (receivers === null) return [await run([]), null];
  const dst = family === 6 ? bed.vip6 : bed.vip4;
  const sender = tb.spawnInNs(bed.gw, 'python3', [PROBE_PY, 'send', dst, `${PROBE_PORT}`, `${PROBE_RATE}`, `${seconds}`], { stdio: ['ignore', 'pipe', 'pipe'] });
  let sout = '';
  sender.stdout.on('data', (b) => (sout += b.toString()));
  const senderDone = new Promise((r) => sender.once('exit', r));
  const result = await run([sender.pid]);
  await Promise.race([senderDone, sleep(5000)]);
  if (sender.exitCode === null) await tb.killProcess(sender);
  const delays = [];
  for (const r of receivers) {
    r.child.kill('SIGUSR1');
    const deadline = Date.now() + 3000;
    while (!r.out.includes('\n') && Date.now() < deadline) await sleep(10);
    const line = r.out.slice(0, r.out.indexOf('\n'));
    r.out = r.out.slice(r.out.indexOf('\n') + 1);
    try {
      delays.push(...JSON.parse(line).delaysUs);
    } catch {
      // A receiver that did not answer: its delays are missing from the figure.
    }
  }
  delays.sort((a, b) => a - b);
  const q = (p) => (delays.length === 0 ? NaN : delays[Math.min(delays.length - 1, Math.floor(p * delays.length))]);
  let sent = NaN;
  try {
    sent = JSON.parse(sout.trim().split('\n').pop()).sent;
  } catch {
    // No count from the sender.
  }
  return [result, { count: delays.length, sent, p50Us: q(0.5), p90Us: q(0.9), p99Us: q(0.99), maxUs: delays.length ? delays[delays.length - 1] : NaN }];
}

/** Waits (at most 10 s) until no packet waits in any queue: what a previous run left must not reach the targets during the next one. */
async function drained(bed) {
  const end = Date.now() + 10000;
  while (tb.queueDrops(bed.lb).waiting > 0 && Date.now() < end) await sleep(50);
}

/** One round of one point: the kernel's path, then every implementation (their order turns with the round). */
async function comparePoint(bed, impls, daemons, pt, round, revive, probes) {
  const seconds = pt.seconds ?? SECONDS;
  const count = Math.round(pt.rate * seconds);
  const opts = { family: pt.family, sources: pt.sources, rate: pt.rate, count, size: pt.size, pacing: pt.pacing };
  await drained(bed);
  await quiet();
  const [base, baseProbe] = await withProbe(bed, probes, pt.family, seconds, (companions) => loadRun(bed, { ...opts, marking: 'hmark', companions }));
  const rows = [];
  for (let k = 0; k < impls.length; k++) {
    const i = (k + round) % impls.length;
    const impl = impls[i];
    const d = daemons[i];
    let best = null;
    for (let attempt = 0; attempt <= RETRIES; attempt++) {
      await drained(bed);
      await quiet();
      const beside = pt.beside && !impl.isFloor ? await pt.beside({ bed, impl, daemon: d }) : null;
      // The daemons not under test idle meanwhile; what they use is recorded, to show it is nothing.
      const idle = daemons.filter((x) => x !== d);
      const idle0 = idle.reduce((sum, x) => sum + tb.cpuSeconds(x.pid), 0);
      let lb;
      let t0;
      let t1;
      let besideStats = null;
      let stopped = false;
      let tAtSend = null;
      let probe = null;
      const stopBeside = async () => {
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
      let ended = null;
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
      const run = { lb, probe, idleCores, threads, besideStats, ended, disturbed: lb.foreignCores > DISTURBED_CORES };
      if (ended) {
        best = run;
        break;
      }
      if (best === null || lb.foreignCores < best.lb.foreignCores) best = run;
      if (!run.disturbed) break;
      quietLog.disturbedRuns++;
      if (attempt < RETRIES) quietLog.retries++;
    }
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
      cpuUsPerPacket: (lb.cpuSeconds * 1e6) / lb.delivered,
      cpuCores: lb.cpuSeconds / lb.seconds,
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

const fmt = (x, w, d = 0) => (x === null || x === undefined || !Number.isFinite(x) ? '-' : x.toFixed(d)).padStart(w);

/** The median over rounds of one implementation at one point (the run nearest the median ratio gives the threads). */
function compareCell(runs, pt, impl) {
  const rs = runs.filter((r) => r.point === pt.id && r.impl === impl.key);
  const ratio = median(rs.map((r) => r.ratio));
  const kept = rs.reduce((b, r) => (b === null || Math.abs(r.ratio - ratio) < Math.abs(b.ratio - ratio) ? r : b), null);
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

/** `main 2.10 + node×4 0.31 (0.20 0.08)`: µs per delivered packet by thread name; threads of a name listed when several are busy. */
function threadText(groups) {
  return groups
    .filter((g) => g.usPerPacket >= 0.01)
    .map((g) => {
      const busy = g.each.filter((x) => x >= 0.05);
      return `${g.name}${g.threads > 1 ? `×${g.threads}` : ''} ${g.usPerPacket.toFixed(2)}${busy.length > 1 ? ` (${busy.map((x) => x.toFixed(2)).join(' ')})` : ''}`;
    })
    .join(' + ');
}

/** A cell's thread groups; for results written before they existed, from each thread's share of the cores. */
function groupsOf(c) {
  if (c.threadGroups) return c.threadGroups;
  const cores = (c.threads ?? []).reduce((sum, t) => sum + t.cores, 0);
  return threadGroups((c.threads ?? []).map((t) => ({ ...t, usPerPacket: cores > 0 ? (c.cpuUsPerPacket * t.cores) / cores : NaN })));
}

/** Issue 11's targets, for this project's variants: met or not, in one line each. */
const TARGETS = [
  { point: 'v4-steady-200k', min: 0.99 },
  { point: 'v4-bursts-100k', min: 0.95 },
  { point: 'v4-one-150k', min: 0.99 },
  { point: 'v4-flows10k-100k', min: 0.99 },
  { point: 'v4-flows10k-busy', min: 0.99 },
];

function printCompare(result, impls, points) {
  const cellOf = (pt, impl) => result.summary.find((s) => s.point === pt.id && s.impl === impl.key);
  const text = (c) => `${fmt(c.ratio, 5, 3)} [${c.ratios.map((x) => x.toFixed(2)).join(' ')}] ${fmt(c.cpuUsPerPacket, 5, 1)} µs q${Number.isFinite(c.queueDropped) ? c.queueDropped : '-'}`;
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
  const lines = [];
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
function printFloor(result, impls, points) {
  const cellOf = (pt, impl) => result.summary.find((s) => s.point === pt.id && s.impl === impl.key);
  const floor = impls.find((i) => i.key === 'floor');
  const original = impls.find((i) => i.key === 'original');
  const ours = impls.filter((i) => !i.isFloor && i !== original);
  if (!floor) return;
  const K = Math.max(...impls.map((i) => i.key.length)) + 1;
  const spread = (c) => (c.ratios.length > 1 ? `${c.ratioMin.toFixed(3)}/${c.ratio.toFixed(3)}/${c.ratioMax.toFixed(3)}` : c.ratio.toFixed(3));
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
  const lines = [];
  const dflt = ours.find((i) => i.key === 'ours');
  const isMeridio = (pt) => pt.id.startsWith('v4-meridio-');
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

async function compareMode(bed) {
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
    loadAverage: { start: os.loadavg() },
    quiet: quietLog,
    implementations: impls.map((i) => ({ key: i.key, label: i.label, bin: i.bin, version: i.version, queues: i.queues, extraArgs: i.extraArgs ?? [] })),
    points: points.map((p) => ({ ...pick(p, ['id', 'label', 'family', 'sources', 'rate', 'pacing', 'seconds', 'size', 'daemonArgs', 'flows']), beside: p.beside ? true : undefined })),
    runs: [],
    summary: [],
  };
  // trafgen's bursts leave at the generator's own speed: measured once, for reading the burst points.
  await calibrate(bed);
  const probes = await startProbeReceivers(bed);
  result.probe = probes === null ? null : { port: PROBE_PORT, rate: PROBE_RATE };
  result.generatorMaxPps = generatorMax;
  // Points that need other daemon options or another number of flows run with their own daemons.
  const groups = new Map();
  for (const pt of points) {
    const key = JSON.stringify({ args: pt.daemonArgs ?? [], flows: pt.flows ?? 0 });
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(pt);
  }
  for (const [key, groupPoints] of groups) {
    const { args: extra, flows } = JSON.parse(key);
    const daemons = [];
    const startFor = async (impl) => {
      const d = await impl.start([`--queue=${impl.queues[0]}:${impl.queues[1]}`, ...extra]);
      if (impl.isFloor) return d; // no table, no flows: the floor marks from a hash
      impl.shm = impl.shm ?? tb.uniqueShmName(`cmp-${impl.key}`);
      configure(bed, impl, impl.shm);
      return d;
    };
    const revive = async (i) => {
      daemons[i] = await startFor(impls[i]);
      if (flows > 0 && !impls[i].isFloor) await setManyFlows(bed, impls[i], impls[i].shm, flows);
    };
    try {
      for (const impl of impls) daemons.push(await startFor(impl));
      // All daemons at once (each its own socket): the wall time is the slowest one's.
      if (flows > 0) await Promise.all(impls.filter((impl) => !impl.isFloor).map((impl) => setManyFlows(bed, impl, impl.shm, flows)));
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

// ---------------------------------------------------------------------------
// Modes

async function detailMode(bed, impl) {
  const settings = withQueues(settingsFromEnv([
    { name: 'default', args: ['--queue=0:3'] },
    { name: 'meridio', args: MERIDIO },
    // The defaults on a shared machine: one CPU-bound process beside every run (baseline too).
    { name: 'default+hog', args: ['--queue=0:3'], hog: 1 },
  ]).filter((st) => !QUICK || !st.hog || process.env.BENCH_SETTINGS));
  const shm = tb.uniqueShmName('bench');
  const result = { date: new Date().toISOString(), mode: 'detail', quick: QUICK, quiet: quietLog, secondsPerRun: SECONDS, repeat: REPEAT, machine: machine(), implementation: { label: impl.label, bin: impl.bin, version: impl.version }, generatorMaxPps: 0, runs: [], peakRssKiB: {} };
  await calibrate(bed);
  result.generatorMaxPps = generatorMax;
  for (const [si, setting] of settings.entries()) {
    say(`\n== ${setting.name}: flowlb ${setting.args.join(' ')}${setting.hog ? ` (with ${setting.hog} CPU-bound process${setting.hog > 1 ? 'es' : ''} beside it)` : ''}${setting.pacing === 'bursts' ? ' (trafgen --rate bursts)' : ''}`);
    const d = await impl.start(setting.args);
    configure(bed, impl, shm);
    say(HEADER);
    for (const family of [4, 6]) {
      for (const rate of RATES) result.runs.push(await point(bed, setting, [d], { family, sources: 'many', rate }));
    }
    for (const rate of [100000, 'max']) result.runs.push(await point(bed, setting, [d], { family: 4, sources: 'one', rate }));
    if (si === 0) {
      const churnSeconds = QUICK ? 5 : 10;
      say(`\nactivation churn: ${CHURN_RATE} pps IPv4 for ${churnSeconds} s, t4 deactivated/activated ${CHURN_PER_SECOND} times a second`);
      result.churn = await churn(bed, impl, d, shm, { seconds: churnSeconds });
      const c = result.churn;
      say(
        `  offered ${c.offered}, delivered ${c.delivered}, lost ${c.lost}; queue drops ${c.queueDropped}, user drops ${c.userDropped}; ` +
          `no_target ${c.noTarget ?? 'n/a (no metrics endpoint)'}, invalid ${c.invalid ?? 'n/a'}, drop verdicts ${c.dropVerdicts ?? 'n/a'}; ${c.commands} commands (${c.commandsPerSecond.toFixed(0)}/s, via ${c.via}; one CLI command takes ${c.cliCommandMs.toFixed(0)} ms); t4 got ${c.perTarget.t4}: ${c.pass ? 'PASS' : 'FAIL'}`,
      );
      if (!QUICK) {
        const lossless = result.runs.filter((r) => r.setting === setting.name && r.family === 4 && r.sources === 'many' && r.lb.delivered === r.lb.offered && r.lb.queueDropped === 0);
        const rate = lossless.length === 0 ? 25000 : Math.max(...lossless.map((r) => (r.rate === 'max' ? r.lbOfferedPps : r.rate)));
        say(`\nRSS over 60 s at ${rate} pps (highest lossless rate above)`);
        result.memory = await rssRun(bed, d, { rate, seconds: 60 });
        const m = result.memory;
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

function summary(result) {
  say('\n== summary (ratio = delivered through the LB / delivered with kernel marking, same packets)');
  for (const setting of [...new Set(result.runs.map((r) => r.setting))]) {
    for (const family of [4, 6]) {
      const rs = result.runs.filter((r) => r.setting === setting && r.family === family && r.sources === 'many');
      if (rs.length === 0) continue;
      say(`  ${setting.padEnd(10)} IPv${family}: ${rs.map((r) => `${r.rate === 'max' ? `max(${Math.round(r.lbOfferedPps / 1000)}k)` : `${r.rate / 1000}k`} ${r.ratio.toFixed(3)}`).join('  ')}`);
    }
    const one = result.runs.filter((r) => r.setting === setting && r.sources === 'one');
    if (one.length > 0) say(`  ${setting.padEnd(10)} 1 flow: ${one.map((r) => `${r.rate === 'max' ? 'max' : `${r.rate / 1000}k`} ${r.ratio.toFixed(3)}`).join('  ')}`);
  }
  const at = (setting, rate) => result.runs.find((r) => r.setting === setting && r.family === 4 && r.sources === 'many' && r.rate === rate);
  for (const setting of [...new Set(result.runs.map((r) => r.setting))]) {
    const a = at(setting, 100000);
    const b = at(setting, 'max');
    if (a && b) say(`  target (${setting}, IPv4): ≥ 0.95 at 100k: ${a.ratio >= 0.95 ? 'met' : 'NOT met'} (${a.ratio.toFixed(3)}); ≥ 0.80 at max: ${b.ratio >= 0.8 ? 'met' : 'NOT met'} (${b.ratio.toFixed(3)})`);
  }
}

/**
 * The sweeps behind the defaults: one parameter at a time, IPv4, many flows
 * and one flow, at 100k pps and the generator's max. Settings of a group take
 * turns (round r of every setting, then round r+1), so that a noisy
 * neighbour hits them alike; each point's ratio is the median over rounds.
 * Groups: BENCH_SWEEP=batch,qlength,... (default all).
 */
async function sweepMode(bed, impl) {
  const q = ['--queue=0:3'];
  const groups = {
    batch: [16, 64, 256].map((b) => ({ name: `batch=${b}`, args: [...q, `--batch=${b}`] })),
    qlength: [1024, 4096, 16384].map((n) => ({ name: `qlength=${n}`, args: [...q, `--qlength=${n}`] })),
    // trafgen's own --rate: each second's packets back to back (how the issue's numbers were taken, as far as we can tell).
    bursts: [1024, 4096, 16384].map((n) => ({ name: `qlength=${n},bursts`, args: [...q, `--qlength=${n}`], pacing: 'bursts' })),
    // Issue 11 point 3: which queue length, receive buffer and batch absorb trafgen's bursts at 100k (bursts point only).
    'burst-defaults': [
      ...[1024, 4096, 8192, 16384, 32768].map((n) => ({ name: `q=${n}`, args: [...q, `--qlength=${n}`] })),
      ...[8192, 16384].map((n) => ({ name: `q=${n},batch=256`, args: [...q, `--qlength=${n}`, '--batch=256'] })),
      { name: 'q=16384,batch=16', args: [...q, '--qlength=16384', '--batch=16'] },
      // SO_RCVBUF twice nfqlb's rule: does the receive buffer bind before the queue length (60-byte frames)?
      { name: 'q=16384,rcvbuf=2x', args: [...q, '--qlength=16384', `--rcvbuf=${16384 * 1500}`] },
    ].map((st) => ({ ...st, pacing: 'bursts' })),
    // The same with one CPU-bound process beside the daemon: what a shared node does.
    'qlength-hog': [1024, 4096, 16384].map((n) => ({ name: `qlength=${n}+hog`, args: [...q, `--qlength=${n}`], hog: 1 })),
    // 1400-byte frames: messages of ~1.5 KB; does SO_RCVBUF (default qlength*mtu/2, doubled by the kernel) bind before qlength?
    rcvbuf: [
      { name: 'rcv=dflt,1400B', args: [...q, '--qlength=4096'], size: 1400, hog: 1 },
      { name: 'rcv=2x,1400B', args: [...q, '--qlength=4096', `--rcvbuf=${4096 * 1500}`], size: 1400, hog: 1 },
      { name: 'rcv=4x,1400B', args: [...q, '--qlength=4096', `--rcvbuf=${4096 * 3000}`], size: 1400, hog: 1 },
    ],
    queues: [
      { name: 'queues=0:3', args: ['--queue=0:3'] },
      { name: 'queues=0:1', args: ['--queue=0:1'] },
      { name: 'queues=0', args: ['--queue=0'] },
    ],
    // Two daemons on two queues each (as two threads would be), against one on four.
    processes: [
      { name: '1 proc x 4 q', args: ['--queue=0:3'] },
      { name: '2 procs x 2 q', args: ['--queue=0:1'], second: ['--queue=2:3', '--trace_address=unix:nfqlb-trace-bench-2'], queues: [0, 3] },
    ],
  };
  const chosen = process.env.BENCH_SWEEP ? process.env.BENCH_SWEEP.split(',') : Object.keys(groups);
  for (const g of chosen) if (!groups[g]) throw new Error(`unknown sweep group ${g}; groups: ${Object.keys(groups).join(', ')}`);
  const allPoints = [
    { family: 4, sources: 'many', rate: 100000 },
    { family: 4, sources: 'many', rate: 'max' },
    { family: 4, sources: 'one', rate: 100000 },
    { family: 4, sources: 'one', rate: 'max' },
  ];
  // Groups measured at one point only (the others would only cost time).
  const groupPoints = { 'burst-defaults': [{ family: 4, sources: 'many', rate: 100000 }] };
  const shm = tb.uniqueShmName('sweep');
  const name = `${impl.label}-sweep${process.env.BENCH_SWEEP ? `-${process.env.BENCH_SWEEP.replace(/,/g, '+')}` : ''}`;
  const file = `${stamp()}-${name}`;
  const result = { date: new Date().toISOString(), mode: 'sweep', quiet: quietLog, secondsPerRun: SECONDS, rounds: REPEAT, machine: machine(), implementation: { label: impl.label, bin: impl.bin, version: impl.version }, runs: [], summary: [] };
  await calibrate(bed);
  result.generatorMaxPps = generatorMax;
  for (const g of chosen) {
    const points = groupPoints[g] ?? allPoints;
    say(`\n== sweep ${g} (${REPEAT} rounds)`);
    say(HEADER);
    for (let round = 0; round < REPEAT; round++) {
      for (const s of groups[g]) {
        const setting = { ...s, queues: s.queues ?? queueRange(s.args), group: g };
        const daemons = [await impl.start(setting.args)];
        configure(bed, impl, shm);
        if (s.second) {
          const env = { NFQLB_FLOW_ADDRESS: 'unix:nfqlb-bench-2' };
          daemons.push(await impl.start(s.second, env));
          setFlows(bed, impl, shm, env);
        }
        for (const pt of points) {
          const row = await point(bed, setting, daemons, { ...pt, repeat: 1 });
          row.group = g;
          row.round = round;
          result.runs.push(row);
        }
        for (const d of daemons) await impl.stop(d);
      }
    }
    say(`\n   ${g}: median over rounds of the ratio (and of delivered/offered through the LB, queue drops, user drops, cpu µs/packet)`);
    for (const s of groups[g]) {
      const cells = points.map((pt) => {
        const rs = result.runs.filter((r) => r.group === g && r.setting === s.name && r.sources === pt.sources && r.rate === pt.rate);
        const cell = {
          setting: s.name,
          group: g,
          sources: pt.sources,
          rate: pt.rate,
          ratio: median(rs.map((r) => r.ratio)),
          ratios: rs.map((r) => r.ratio),
          deliveredFraction: median(rs.map((r) => r.deliveredFraction)),
          queueDropped: median(rs.map((r) => r.lb.queueDropped)),
          userDropped: median(rs.map((r) => r.lb.userDropped)),
          cpuUsPerPacket: median(rs.map((r) => r.cpuUsPerPacket)),
          offeredPps: median(rs.map((r) => r.lbOfferedPps)),
        };
        result.summary.push(cell);
        return cell;
      });
      say(
        `   ${s.name.padEnd(18)} ${cells
          .map((c) => `${c.sources === 'one' ? '1 flow' : 'many'} ${c.rate === 'max' ? `max(${Math.round(c.offeredPps / 1000)}k)` : `${c.rate / 1000}k`}: ${c.ratio.toFixed(3)} [${c.ratios.map((x) => x.toFixed(2)).join(' ')}] q${c.queueDropped} u${c.userDropped} ${c.cpuUsPerPacket.toFixed(2)}µs`)
          .join(' | ')}`,
      );
    }
    // Written after every group, so an interrupted sweep keeps what it measured.
    for (const r of result.runs) delete r.lb.perTarget;
    writeResults(result, file, { plot: false, stamped: false });
  }

}

/** Where the time goes at 100k pps: syscalls, context switches, kernel vs user samples, the JS profile. */
async function profileMode(bed, impl) {
  const shm = tb.uniqueShmName('profile');
  const seconds = 6;
  const rate = Number(process.env.BENCH_PROFILE_RATE || 100000);
  // BENCH_PROFILE_SOURCES=one: one 5-tuple (one queue), as the v4-one-150k point.
  const sources = process.env.BENCH_PROFILE_SOURCES === 'one' ? 'one' : 'many';
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nfqlb-bench-prof-'));
  const report = { date: new Date().toISOString(), mode: 'profile', rate, sources, machine: machine(), implementation: { label: impl.label, bin: impl.bin, version: impl.version } };
  try {
    const d = await impl.start(['--queue=0:3']);
    configure(bed, impl, shm);
    tb.setMarking(bed, 'queue', 0, 3);
    const load = () => tb.runTrafgen(bed.gw, 'lb0', loadConfig(bed, 4, sources), trafgenOptions(4, rate, rate * seconds));
    // Runs `cmd` for the 3 s in the middle of a 6 s load; returns its output and the load's delivered fraction.
    const during = async (cmd, args) => {
      const c0 = tb.loadCounts(bed, 4);
      const p = load();
      await sleep(1500);
      const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 20000, maxBuffer: 1 << 26 });
      await p;
      await sleep(300);
      const c = tb.loadDelta(c0, tb.loadCounts(bed, 4));
      return { output: (r.stdout ?? '') + (r.stderr ?? ''), deliveredFraction: c.delivered / c.offered, packetsInWindow: Math.round(3 * rate * (c.delivered / c.offered)) };
    };
    report.perfStat = await during('perf', ['stat', '-e', 'task-clock,context-switches,cpu-migrations,page-faults', '-p', `${d.pid}`, '--', 'sleep', '3']);
    say(report.perfStat.output);
    report.syscalls = await during('perf', ['trace', '-s', '-p', `${d.pid}`, '--', 'sleep', '3']);
    say(report.syscalls.output);
    const data = path.join(dir, 'perf.data');
    report.perfRecord = (await during('perf', ['record', '-e', 'cpu-clock', '-F', '2999', '-a', '-g', '-o', data, '--', 'sleep', '3'])).deliveredFraction;
    const perfReport = (args) =>
      spawnSync('perf', ['report', '-i', data, '--stdio', ...args], { encoding: 'utf8', maxBuffer: 1 << 26 })
        .stdout.split('\n')
        .filter((l) => /%/.test(l) && !l.startsWith('#'));
    // The whole machine by process and object; then the daemon alone: by object, and the
    // inclusive share of the calls that matter (verdict send, receive, the JS callback).
    report.perfByCommDso = perfReport(['--no-children', '--sort', 'comm,dso', '-g', 'none', '--percent-limit', '1']).join('\n');
    say('\nperf record -a, whole machine by process and object:');
    say(report.perfByCommDso);
    // (`--pid` drops the kernel's line here, so filter `--sort pid,dso` instead.)
    const own = perfReport(['--no-children', '--sort', 'pid,dso', '-g', 'none'])
      .map((l) => /^\s*([\d.]+)%\s+(\d+):\S+\s+(.*?)\s*$/.exec(l))
      .filter((m) => m !== null && Number(m[2]) === d.pid)
      .map((m) => ({ dso: m[3], pct: Number(m[1]) }));
    const ownTotal = own.reduce((a, x) => a + x.pct, 0);
    report.perfDaemonByDso = own.map((x) => ({ ...x, pctOfDaemon: (100 * x.pct) / ownTotal }));
    say(`\nthe daemon alone, by object (${ownTotal.toFixed(1)}% of the machine's samples):`);
    for (const x of report.perfDaemonByDso) if (x.pctOfDaemon >= 0.3) say(`  ${x.pctOfDaemon.toFixed(1).padStart(5)}%  ${x.dso}`);
    const keys = /\b(__libc_sendto|__recvmmsg|nfqnl_recv_verdict|netlink_recvmsg|do_softirq\.part\.0|epoll_pwait|__schedule|napi_make_callback|ReadRound|Dispatch|HandlePacket|SendVerdicts)\s*$/;
    const calls = new Map();
    for (const l of perfReport(['--children', '--sort', 'pid,sym', '-g', 'none'])) {
      const m = /^\s*([\d.]+)%\s+([\d.]+)%\s+(\d+):\S+\s+\[[.k]\]\s+(.*?)\s*$/.exec(l);
      if (m === null || Number(m[3]) !== d.pid || !keys.test(m[4])) continue;
      const name = m[4].replace(/^.*::/, '');
      calls.set(name, (calls.get(name) ?? 0) + Number(m[1]));
    }
    report.perfDaemonCalls = [...calls.entries()].map(([name, pct]) => ({ name, pctOfDaemon: (100 * pct) / ownTotal }));
    say('\nthe daemon alone, time inside each of its main calls (inclusive, % of the daemon):');
    for (const c of report.perfDaemonCalls) say(`  ${c.pctOfDaemon.toFixed(1).padStart(5)}%  ${c.name}`);
    await impl.stop(d);
    if (OURS) {
      // The JS profile: the same daemon under node --cpu-prof.
      const profDir = path.join(dir, 'cpuprof');
      const child = tb.spawnInNs(bed.lb, process.execPath, ['--cpu-prof', `--cpu-prof-dir=${profDir}`, path.join(ROOT, 'bin', 'nfqlb'), 'flowlb', '--queue=0:3', ...impl.daemonArgs.filter((a) => a.startsWith('--ft_shm='))], { stdio: ['ignore', 'pipe', 'pipe'] });
      child.stdout.resume();
      child.stderr.resume();
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
        const cp = summarizeCpuProfile(JSON.parse(fs.readFileSync(path.join(profDir, files[0]), 'utf8')));
        cp.packets = rate * seconds;
        cp.jsUsPerPacket = (cp.jsMs * 1000) / cp.packets;
        report.cpuProfile = cp;
        say(`\nnode --cpu-prof of the daemon over its life (${(cp.wallMs / 1000).toFixed(1)} s, ${cp.packets} packets): JavaScript ${cp.jsMs.toFixed(0)} ms (${cp.jsUsPerPacket.toFixed(2)} µs/packet, start-up included), GC ${cp.gcMs.toFixed(0)} ms, native outside JS ${cp.programMs.toFixed(0)} ms, idle ${cp.idleMs.toFixed(0)} ms (the addon's receive/send time counts as idle or program: V8 only sees its own threads' state)`);
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
function summarizeCpuProfile(prof) {
  const self = new Map();
  const byId = new Map(prof.nodes.map((n) => [n.id, n]));
  const parentOf = new Map();
  for (const n of prof.nodes) for (const c of n.children ?? []) parentOf.set(c, n);
  const callers = new Map(); // key -> Map(caller name -> time)
  const dt = new Map();
  for (let i = 0; i < prof.samples.length; i++) dt.set(prof.samples[i], (dt.get(prof.samples[i]) ?? 0) + (prof.timeDeltas[i] ?? 0));
  let total = 0;
  const special = { '(idle)': 0, '(program)': 0, '(garbage collector)': 0 };
  for (const [id, t] of dt) {
    const cf = byId.get(id).callFrame;
    if (cf.functionName in special) special[cf.functionName] += t;
    const key = `${cf.functionName || '(anonymous)'}\t${cf.url ? `${path.basename(cf.url)}:${cf.lineNumber + 1}` : ''}`;
    self.set(key, (self.get(key) ?? 0) + t);
    const parent = parentOf.get(id);
    if (parent !== undefined) {
      const pcf = parent.callFrame;
      const pk = `${pcf.functionName || '(anonymous)'}${pcf.url ? ` ${path.basename(pcf.url)}:${pcf.lineNumber + 1}` : ''}`;
      if (!callers.has(key)) callers.set(key, new Map());
      callers.get(key).set(pk, (callers.get(key).get(pk) ?? 0) + t);
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
      const c = [...(callers.get(k) ?? new Map()).entries()].sort((a, b) => b[1] - a[1])[0];
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

/**
 * What a full queue costs the kernel: the daemon is stopped (SIGSTOP), one
 * flow is sent until its queue is full, and the netlink socket's receive
 * memory (/proc/net/netlink Rmem) and the machine's slab growth are read; for
 * 60- and 1400-byte frames, qlength 1024/4096/16384, SO_RCVBUF by nfqlb's
 * rule (qlength*mtu/2) or qlength*(mtu+512).
 */
async function queueMemoryMode(bed, impl) {
  const shm = tb.uniqueShmName('qmem');
  const meminfo = () => Object.fromEntries(fs.readFileSync('/proc/meminfo', 'utf8').split('\n').filter(Boolean).map((l) => {
    const m = /^(\S+):\s+(\d+)/.exec(l);
    return [m[1], Number(m[2])];
  }));
  const result = { date: new Date().toISOString(), mode: 'queue-memory', machine: machine(), implementation: { label: impl.label, bin: impl.bin, version: impl.version }, runs: [] };
  say('qlength  rcvbuf asked  frame  waiting  q.drop  u.drop  Rmem (bytes)  per packet  slab growth (KiB)');
  for (const qlength of [1024, 4096, 16384]) {
    for (const size of [60, 1400]) {
      for (const rule of impl.supports('rcvbuf') ? ['nfqlb', 'mtu+512'] : ['nfqlb']) {
        const rcvbuf = rule === 'nfqlb' ? undefined : qlength * (1500 + 512);
        const d = await impl.start(['--queue=0:3', `--qlength=${qlength}`, ...(rcvbuf ? [`--rcvbuf=${rcvbuf}`] : [])]);
        configure(bed, impl, shm);
        tb.setMarking(bed, 'queue', 0, 3);
        const config = loadConfig(bed, 4, 'one', size);
        await tb.runTrafgen(bed.gw, 'lb0', config, { count: 1000, rate: 10000 });
        const q0 = tb.queueProcIn(bed.lb);
        const m0 = meminfo();
        process.kill(d.pid, 'SIGSTOP');
        try {
          await tb.runTrafgen(bed.gw, 'lb0', config, trafgenOptions(4, 50000, qlength + 2000, size));
          await sleep(200);
          const m1 = meminfo();
          const q1 = tb.queueProcIn(bed.lb);
          const full = q1.reduce((best, e) => (e.waiting > best.waiting ? e : best), q1[0]);
          const before = q0.find((e) => e.queue === full.queue);
          const rmem = tb.nsExec(bed.lb, 'cat', ['/proc/net/netlink']).stdout.split('\n')
            .map((l) => l.trim().split(/\s+/))
            .filter((f) => f[1] === '12' && Number(f[2]) === full.portid)
            .map((f) => Number(f[4]))[0];
          const r = { qlength, size, rcvbufRule: rule, rcvbuf: rcvbuf ?? Math.floor((qlength * 1500) / 2 / 4096) * 4096, waiting: full.waiting, queueDropped: full.queueDropped - before.queueDropped, userDropped: full.userDropped - before.userDropped, rmem, rmemPerPacket: rmem / full.waiting, slabKiB: m1.Slab - m0.Slab };
          result.runs.push(r);
          say(`${String(qlength).padStart(7)}  ${String(r.rcvbuf).padStart(12)}  ${String(size).padStart(5)}  ${String(r.waiting).padStart(7)}  ${String(r.queueDropped).padStart(6)}  ${String(r.userDropped).padStart(6)}  ${String(rmem).padStart(12)}  ${r.rmemPerPacket.toFixed(0).padStart(10)}  ${String(r.slabKiB).padStart(17)}`);
        } finally {
          process.kill(d.pid, 'SIGCONT');
          await impl.stop(d);
        }
      }
    }
  }
  writeResults(result, `${impl.label}-queue-memory`, { plot: false });
}

// ---------------------------------------------------------------------------

let cleaning = null;
function cleanup() {
  if (cleaning === null) cleaning = tb.cleanupAll();
  return cleaning;
}
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => {
    process.stderr.write(`\nbench: ${sig}, cleaning up\n`);
    cleanup().finally(() => process.exit(130));
  });
}

async function main() {
  const table = argv.find((a) => a.startsWith('--table='));
  if (table !== undefined) {
    // The tables of a comparison already run (no root needed): node bench/run.js --table=RESULT.json
    const result = JSON.parse(fs.readFileSync(table.slice('--table='.length), 'utf8'));
    if (result.mode !== 'compare') throw new Error(`${table.slice(8)} is not a comparison (mode ${result.mode})`);
    printCompare(result, result.implementations, result.points);
    return;
  }
  if (!tb.canUseNetns()) throw new Error('needs root and `ip netns` (network namespaces, NFQUEUE)');
  for (const tool of ['trafgen', 'iptables', 'ip6tables']) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) throw new Error(`${tool} is missing: run bash scripts/setup.sh`);
  }
  tb.noteTraceShm();
  const bed = buildBed();
  const m = machine();
  if (MODE === 'compare') {
    say(`bench: comparison${QUICK ? ', quick' : ''}; ${SECONDS} s per run, ${REPEAT} round(s) per point`);
    say(`machine: ${m.nproc} CPUs, ${m.cpu}, kernel ${m.kernel}, node ${m.node}, ${m.trafgen}`);
    await compareMode(bed);
    return;
  }
  const impl = new Implementation(bed);
  // Its fragment statistics go to a file of its own that cleanup removes, not the machine's /dev/shm/ftshm.
  if (impl.supports('ft_shm')) impl.daemonArgs.push(`--ft_shm=${tb.uniqueShmName('ft-bench')}`);
  say(`bench: ${impl.label} (${impl.bin}, ${impl.version}); mode ${MODE}${QUICK ? ', quick' : ''}; ${SECONDS} s per run, ${REPEAT} run(s) per point`);
  say(`machine: ${m.nproc} CPUs, ${m.cpu}, kernel ${m.kernel}, node ${m.node}, ${m.trafgen}`);
  if (MODE === 'sweep') await sweepMode(bed, impl);
  else if (MODE === 'profile') await profileMode(bed, impl);
  else if (MODE === 'queue-memory') await queueMemoryMode(bed, impl);
  else await detailMode(bed, impl);
}

main()
  .then(
    () => 0,
    (err) => {
      process.stderr.write(`bench failed: ${err && err.stack ? err.stack : err}\n`);
      return 1;
    },
  )
  .then(async (code) => {
    await cleanup();
    process.exit(code);
  });
