/**
 * The implementations under test, each run in the LB namespace: a daemon
 * with nfqlb's command line (this project's bin/nfqlb, NFQLB_BIN, or the
 * original nfqlb 1.2.0), and the floor (nullq).
 */
import { spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tb from '../../testbed/testbed';
import type { RunResult } from '../../testbed/testbed';
import { BIN, NULLQ_SRC, OURS, say, sleep } from './config';
import type { Bed } from './bed';

/** A daemon started by an implementation. */
export interface DaemonRun {
  child: ChildProcess;
  args: string[];
  env: NodeJS.ProcessEnv;
  pid: number;
  /** The end of its output (stdout and stderr). */
  log: string;
  metricsPort: number | null;
  queues: [number, number];
}

/** First and last queue of a `--queue=` argument (default 2, nfqlb's). */
export function queueRange(args: string[]): [number, number] {
  const a = args.find((x) => x.startsWith('--queue='));
  const m = /^--queue=(\d+)(?::(\d+))?$/.exec(a ?? '--queue=2');
  if (m === null) throw new Error(`bench: bad queue option ${a}`);
  return [Number(m[1]), Number(m[2] ?? m[1])];
}

/** Metrics ports handed out so far (127.0.0.1:19657 and up, in the LB namespace). */
let metricsPortsUsed = 0;

/** Spawns `bin args` in the LB namespace, keeping the end of its output in the run's log. */
function spawnDaemon(bed: Bed, bin: string, args: string[], env: NodeJS.ProcessEnv, metricsPort: number | null, queues: [number, number]): DaemonRun {
  const child = tb.spawnInNs(bed.lb, bin, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const d: DaemonRun = { child, args, env, pid: child.pid as number, log: '', metricsPort, queues };
  const keep = (buf: Buffer): void => {
    d.log = (d.log + buf.toString()).slice(-20000);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  return d;
}

/** True when every queue of the run is bound in the LB namespace. */
function queuesBound(bed: Bed, d: DaemonRun): boolean {
  const bound = new Set(tb.queueProcIn(bed.lb).map((e) => e.queue));
  for (let q = d.queues[0]; q <= d.queues[1]; q++) if (!bound.has(q)) return false;
  return true;
}

/** SIGTERM, then SIGKILL when it has not exited after 5 s. */
async function stopDaemon(d: DaemonRun): Promise<void> {
  const exited = new Promise<void>((r) => (d.child.exitCode !== null || d.child.signalCode !== null ? r() : d.child.once('exit', () => r())));
  d.child.kill('SIGTERM');
  const t = await Promise.race([exited.then(() => true), sleep(5000).then(() => false)]);
  if (!t) await tb.killProcess(d.child);
}

export interface ImplementationOptions {
  bin?: string;
  label?: string;
  /** A short id for JSON. */
  key?: string;
  /** For every CLI command and the daemon: e.g. NFQLB_FLOW_ADDRESS, so that two daemons in one namespace each have their own control socket. */
  env?: NodeJS.ProcessEnv;
  /** Added to every `flowlb`: e.g. its own --trace_address. */
  daemonArgs?: string[];
}

export class Implementation {
  readonly isFloor = false as const;
  readonly bin: string;
  key: string;
  readonly env: NodeJS.ProcessEnv;
  readonly daemonArgs: string[];
  readonly version: string;
  label: string;
  readonly help: string;
  /** The comparison's: the variant's own words (options and env:NAME=value), its queue range, its table. */
  extraArgs?: string[];
  queues: [number, number] = [0, 3];
  shm?: string;

  /** `bin` in the LB namespace. */
  constructor(
    readonly bed: Bed,
    { bin = BIN, label, key = 'ours', env = {}, daemonArgs = [] }: ImplementationOptions = {},
  ) {
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
  cli(args: string[], env: NodeJS.ProcessEnv = {}): RunResult {
    return tb.nsExec(this.bed.lb, this.bin, args, { allowFail: true, env: { ...this.env, ...env }, timeoutMs: 30000 });
  }

  cliOk(args: string[], env: NodeJS.ProcessEnv = {}): RunResult {
    const r = this.cli(args, env);
    if (r.status !== 0) throw new Error(`${path.basename(this.bin)} ${args.join(' ')} failed (${r.status}): ${r.stderr}${r.stdout}`);
    return r;
  }

  /** True when `flowlb --help` lists --name. */
  supports(name: string): boolean {
    return this.help.includes(`--${name}`);
  }

  /**
   * Starts `BIN flowlb args` and waits until its queues are bound and its
   * control socket answers. env.NFQLB_FLOW_ADDRESS picks the control socket.
   * Adds --metrics_address=127.0.0.1:<port> when the binary has the option.
   */
  async start(args: string[], env: NodeJS.ProcessEnv = {}): Promise<DaemonRun> {
    const extra: string[] = [];
    let metricsPort: number | null = null;
    if (this.supports('metrics_address')) {
      metricsPort = 19657 + metricsPortsUsed++;
      extra.push(`--metrics_address=127.0.0.1:${metricsPort}`);
    }
    const all = ['flowlb', ...args, ...this.daemonArgs, ...extra];
    env = { ...this.env, ...env };
    const d = spawnDaemon(this.bed, this.bin, all, env, metricsPort, queueRange(args));
    const { child } = d;
    const deadline = Date.now() + 15000;
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`${all.join(' ')} exited: ${d.log}`);
      if (queuesBound(this.bed, d) && this.cli(['flow-list-names'], env).status === 0) break;
      if (Date.now() > deadline) {
        await tb.killProcess(child);
        throw new Error(`${all.join(' ')} did not bind its queues in 15 s: ${d.log}`);
      }
      await sleep(100);
    }
    return d;
  }

  stop(d: DaemonRun): Promise<void> {
    return stopDaemon(d);
  }

  /** Prometheus text of the daemon, or null without a metrics endpoint. */
  scrape(d: DaemonRun): string | null {
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
export class Floor {
  readonly isFloor = true as const;
  readonly env: NodeJS.ProcessEnv = {};
  readonly daemonArgs: string[] = [];
  readonly version = 'nullq';
  readonly key: string;
  readonly label: string;
  readonly extraArgs: string[];
  queues: [number, number] = [0, 3];

  constructor(
    readonly bed: Bed,
    readonly bin: string,
    { key, extra = [] }: { key: string; extra?: string[] },
  ) {
    this.key = key;
    this.extraArgs = extra;
    this.label = `nullq (floor)${extra.length ? ` ${extra.join(' ')}` : ''}`;
  }

  supports(): boolean {
    return false;
  }

  scrape(): null {
    return null;
  }

  /** `nullq --queue=A:B [--qlength=N] extra...`; waits for `nullq ready` and its queues in the kernel's table. */
  async start(args: string[]): Promise<DaemonRun> {
    const keep = args.filter((a) => a.startsWith('--queue=') || a.startsWith('--qlength='));
    const all = [...keep, ...this.extraArgs];
    const d = spawnDaemon(this.bed, this.bin, all, {}, null, queueRange(args));
    const { child } = d;
    const deadline = Date.now() + 15000;
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`nullq ${all.join(' ')} exited: ${d.log}`);
      if (d.log.includes('nullq ready') && queuesBound(this.bed, d)) break;
      if (Date.now() > deadline) {
        await tb.killProcess(child);
        throw new Error(`nullq ${all.join(' ')} did not bind its queues in 15 s: ${d.log}`);
      }
      await sleep(50);
    }
    return d;
  }

  stop(d: DaemonRun): Promise<void> {
    return stopDaemon(d);
  }
}

/** An implementation of the comparison: a daemon with nfqlb's command line, or the floor. */
export type Impl = Implementation | Floor;

/** gcc -O2 nullq.c into /tmp (NULLQ_BIN: a built one instead); null with one line when neither is there. */
export function buildFloor(): string | null {
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
export function floorRoutes(bed: Bed): void {
  bed.targets.forEach((t, i) => tb.addFwmarkRule(bed.lb, i + 1, t.table));
}

/** Decisions counted by a daemon's metrics. */
export interface Decisions {
  no_target: number;
  invalid: number;
  drop: number;
}

/** nfqlb_decisions_total of `reason` and drop verdicts from Prometheus text (null without). */
export function decisions(text: string | null): Decisions | null {
  if (text === null) return null;
  return {
    no_target: tb.metricSum(text, 'nfqlb_decisions_total', { reason: 'no_target' }),
    invalid: tb.metricSum(text, 'nfqlb_decisions_total', { reason: 'invalid' }),
    drop: tb.metricSum(text, 'nfqlb_packets_total', { verdict: 'drop' }),
  };
}
