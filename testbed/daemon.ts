/** nfqlb's command line and its daemon (`nfqlb flowlb` / `nfqlb lb`) inside a namespace. */
import { ChildProcess } from 'node:child_process';
import { nsExec, run, sleep, type RunResult } from './netns';
import { killProcess, NFQLB_BIN, noteTraceShm, spawnInNs, uniqueShmName } from './processes';

/** Runs `nfqlb args...` (bin/nfqlb), inside `ns` when given. Never throws. */
export function nfqlb(args: string[], opts: { ns?: string; env?: NodeJS.ProcessEnv; input?: string } = {}): RunResult {
  const argv = [NFQLB_BIN, ...args];
  const r = opts.ns === undefined
    ? run(process.execPath, argv, { allowFail: true, env: opts.env, input: opts.input })
    : nsExec(opts.ns, process.execPath, argv, { allowFail: true, env: opts.env, input: opts.input });
  return r;
}

/** Like nfqlb() but throws unless the exit code is 0. */
export function nfqlbOk(args: string[], opts: { ns?: string; env?: NodeJS.ProcessEnv } = {}): RunResult {
  const r = nfqlb(args, opts);
  if (r.status !== 0) throw new Error(`nfqlb ${args.join(' ')} failed (${r.status}): ${r.stderr}${r.stdout}`);
  return r;
}

// The daemon's packet-thread mode, chosen for every daemon the tests start from
// one place: $NFQLB_TEST_WORKERS unset starts the daemon as it is (its own
// default); `1` (or any N) adds `--workers=N` to every `flowlb`/`lb` that
// DaemonProcess starts, unless the test passes --workers itself. jest.config.js
// runs the traffic-path suites again with NFQLB_TEST_WORKERS=1 and =2.

/** Environment variable naming the worker mode of the daemons the tests start. */
export const WORKERS_ENV = 'NFQLB_TEST_WORKERS';

/** The --workers value asked for by $NFQLB_TEST_WORKERS, or null for the daemon's default. */
export function requestedWorkers(): string | null {
  const v = process.env[WORKERS_ENV];
  return v === undefined || v === '' ? null : v;
}

const workersSupport = new Map<string, boolean>();

/** True when `nfqlb <command> --help` lists --workers (asked once per command and process). */
export function supportsWorkers(command: string): boolean {
  let known = workersSupport.get(command);
  if (known === undefined) {
    const r = run(process.execPath, [NFQLB_BIN, command, '--help'], { allowFail: true });
    known = /^\s*--workers[= ]/m.test(r.stdout + r.stderr);
    workersSupport.set(command, known);
  }
  return known;
}

/** Why the worker mode asked for cannot be had (the suite skips), or null when it can or none was asked for. */
export function workersUnavailable(): string | null {
  const n = requestedWorkers();
  if (n === null || supportsWorkers('flowlb')) return null;
  return `${WORKERS_ENV}=${n} asks for --workers=${n}, but \`nfqlb flowlb --help\` lists no --workers (not in this build)`;
}

/** Arguments to add to the daemon command line `args` for the worker mode asked for (see above). */
export function daemonWorkerArgs(args: string[]): string[] {
  const n = requestedWorkers();
  const command = args[0];
  if (n === null || (command !== 'flowlb' && command !== 'lb')) return [];
  if (args.some((a) => /^--?workers(=|$)/.test(a))) return [];
  return supportsWorkers(command) ? [`--workers=${n}`] : [];
}

/** A `nfqlb flowlb` / `nfqlb lb` process running inside a namespace. */
export class DaemonProcess {
  stdout = '';
  stderr = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  private constructor(
    readonly child: ChildProcess,
    readonly ns: string,
    readonly args: string[],
  ) {
    child.stdout?.setEncoding('utf8');
    child.stderr?.setEncoding('utf8');
    child.stdout?.on('data', (d: string) => {
      this.stdout += d;
    });
    child.stderr?.on('data', (d: string) => {
      this.stderr += d;
    });
    this.exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  }

  /** The daemon's pid (`ip netns exec` execs, so it is the child's). */
  get pid(): number {
    return this.child.pid as number;
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /**
   * Spawns `nfqlb <args>` in `ns` and waits until it logs "started" (resolves)
   * or exits (rejects with its output).
   */
  static async start(ns: string, args: string[], env: NodeJS.ProcessEnv = {}, timeoutMs = 10000): Promise<DaemonProcess> {
    noteTraceShm();
    const d = DaemonProcess.spawn(ns, args, env);
    const end = Date.now() + timeoutMs;
    while (!/"msg":"started"/.test(d.stderr)) {
      if (!d.running) {
        await d.exited;
        throw new Error(`nfqlb ${d.args.join(' ')} exited (${d.child.exitCode}) before it started:\n${d.stdout}${d.stderr}`);
      }
      if (Date.now() > end) {
        await killProcess(d.child);
        throw new Error(`nfqlb ${d.args.join(' ')} did not start in ${timeoutMs} ms:\n${d.stdout}${d.stderr}`);
      }
      await sleep(20);
    }
    return d;
  }

  /** Spawns without waiting (for start-up failures). */
  static spawn(ns: string, args: string[], env: NodeJS.ProcessEnv = {}): DaemonProcess {
    args = [...args, ...daemonWorkerArgs(args)];
    noteTraceShm();
    // /dev/shm is shared by all namespaces: a daemon's fragment statistics get a private name unless the test names them.
    if ((args[0] === 'flowlb' || args[0] === 'lb') && !args.some((a) => a.startsWith('--ft_shm'))) args = [...args, `--ft_shm=${uniqueShmName('ftshm')}`];
    return new DaemonProcess(
      spawnInNs(ns, process.execPath, [NFQLB_BIN, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] }),
      ns,
      args,
    );
  }

  /** Sends `signal` and waits for the exit; returns the exit code and how long it took. */
  async stop(signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 5000): Promise<{ code: number | null; signal: NodeJS.Signals | null; ms: number }> {
    const t0 = Date.now();
    if (this.running) this.child.kill(signal);
    let timer: NodeJS.Timeout | undefined;
    const r = await Promise.race([this.exited, new Promise<null>((resolve) => (timer = setTimeout(() => resolve(null), timeoutMs)))]);
    clearTimeout(timer);
    if (r === null) {
      await killProcess(this.child);
      throw new Error(`nfqlb ${this.args.join(' ')} did not exit within ${timeoutMs} ms of ${signal}`);
    }
    return { ...r, ms: Date.now() - t0 };
  }
}
