/**
 * The two implementations as test partners: the original nfqlb 1.2.0 (found
 * through NFQLB_ORIGINAL, default ../shared/reference/nfqlb-1.2.0/nfqlb beside
 * the repository) and this project's bin/nfqlb. Command lines and daemons of
 * either, run inside network namespaces of the test bed, with byte-exact
 * output.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { NFQLB_BIN, nsExec, sleep, spawnInNs, killProcess } from '../../testbed/testbed';
import { ORIGINAL, originalUnavailable } from '../helpers/skip';

export { ORIGINAL };

/** True when the original binary is there and runs (`nfqlb version`). */
export function originalPresent(): boolean {
  return originalUnavailable() === null;
}

export type Impl = 'original' | 'ours';
export const IMPLS: Impl[] = ['original', 'ours'];
export const other = (impl: Impl): Impl => (impl === 'original' ? 'ours' : 'original');

/** The command that starts `nfqlb` of an implementation. */
export function nfqlbCommand(impl: Impl): [string, string[]] {
  return impl === 'original' ? [ORIGINAL, []] : [process.execPath, [NFQLB_BIN]];
}

export interface CliResult {
  rc: number;
  /** Bytes as latin1 text: a byte-exact comparison that jest can print. */
  stdout: string;
  stderr: string;
}

/** Runs `nfqlb args` of `impl` (inside `ns` when given), never throws. */
export function cli(impl: Impl, args: string[], opts: { ns?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): CliResult {
  const [cmd, pre] = nfqlbCommand(impl);
  const argv = opts.ns === undefined ? [cmd, ...pre, ...args] : ['ip', 'netns', 'exec', opts.ns, cmd, ...pre, ...args];
  // nsExec refuses namespaces this process did not make; check through it first.
  if (opts.ns !== undefined) nsExec(opts.ns, 'true', []);
  const r = spawnSync(argv[0], argv.slice(1), {
    env: { ...process.env, ...opts.env },
    timeout: opts.timeoutMs ?? 20000,
    maxBuffer: 64 << 20,
  });
  return { rc: r.status ?? -1, stdout: (r.stdout ?? Buffer.alloc(0)).toString('latin1'), stderr: (r.stderr ?? Buffer.alloc(0)).toString('latin1') };
}

/** Latin1 text (bytes) back to what a UTF-8 terminal shows, for messages. */
export const shown = (bytes: string): string => Buffer.from(bytes, 'latin1').toString('utf8');

/** Abstract unix sockets listening in `ns`, as `ss -xl` names them ("@nfqlb"). */
export function listeningAbstract(ns: string): string[] {
  const text = nsExec(ns, 'ss', ['-xlH']).stdout;
  const names: string[] = [];
  for (const line of text.split('\n')) {
    const m = /^\S+\s+\S+\s+\d+\s+\d+\s+(@\S*)/.exec(line);
    if (m !== null) names.push(m[1]);
  }
  return names.sort();
}

/**
 * A flowlb daemon of either implementation inside a network namespace and a
 * private /dev/shm of its own (a mount namespace with a tmpfs): its tables and
 * its `nfqlb-trace` (log level, trace mask) are shared only with the command
 * lines run through cli()/spawn(), so tests on this machine cannot change
 * them under it, nor it theirs.
 */
export class Partner {
  stdout = '';
  stderr = '';
  private constructor(
    readonly impl: Impl,
    readonly ns: string,
    readonly child: ChildProcess,
  ) {}

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** What the daemon wrote on stderr so far. */
  get err(): string {
    return this.stderr;
  }

  /** The daemon's pid: `ip netns exec`, `unshare` and `sh -c exec` all exec, so it is the child's. */
  get pid(): number {
    return this.child.pid as number;
  }

  /**
   * Starts `nfqlb flowlb args` of `impl` in `ns` with a private /dev/shm
   * (unless privateShm is false: the machine's /dev/shm) and waits until its control and trace servers listen and its queues are bound.
   */
  static async start(impl: Impl, ns: string, args: string[], opts: { privateShm?: boolean } = {}): Promise<Partner> {
    const [cmd, pre] = nfqlbCommand(impl);
    const argv = [cmd, ...pre, 'flowlb', ...(impl === 'ours' ? ['--metrics_address=off'] : []), ...args];
    const child =
      opts.privateShm === false
        ? spawnInNs(ns, argv[0], argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] })
        : spawnInNs(
            ns,
            'unshare',
            ['-m', '--propagation', 'private', 'sh', '-c', 'mount -t tmpfs -o size=256m,mode=1777 tmpfs /dev/shm && exec "$@"', 'sh', ...argv],
            { stdio: ['ignore', 'pipe', 'pipe'] },
          );
    const p = new Partner(impl, ns, child);
    child.stdout?.setEncoding('latin1');
    child.stderr?.setEncoding('latin1');
    child.stdout?.on('data', (d: string) => (p.stdout += d));
    child.stderr?.on('data', (d: string) => (p.stderr += d));
    const q = /^--queue=(\d+)(?::(\d+))?$/.exec(args.find((a) => a.startsWith('--queue=')) ?? '--queue=2');
    const queues = q === null ? 1 : Number(q[2] ?? q[1]) - Number(q[1]) + 1;
    const end = Date.now() + 15000;
    for (;;) {
      const names = listeningAbstract(ns);
      const bound = (p.stdout.match(/^queue_length=/gm) ?? []).length >= queues;
      if (names.includes('@nfqlb') && names.includes('@nfqlb-trace') && bound) return p;
      if (!p.running || Date.now() > end) {
        await killProcess(child);
        throw new Error(`${impl} nfqlb flowlb ${args.join(' ')} did not start:\n${p.stdout}${p.stderr}`);
      }
      await sleep(20);
    }
  }

  /** `nsenter` into the daemon's network and mount namespaces. */
  private argv(impl: Impl, args: string[]): string[] {
    const [cmd, pre] = nfqlbCommand(impl);
    return ['-t', `${this.pid}`, '-m', '-n', cmd, ...pre, ...args];
  }

  /** `nfqlb args` of `impl` beside this daemon (same network namespace and /dev/shm). */
  cli(impl: Impl, args: string[], env: NodeJS.ProcessEnv = {}): CliResult {
    const r = spawnSync('nsenter', this.argv(impl, args), { env: { ...process.env, ...env }, timeout: 20000, maxBuffer: 64 << 20 });
    return { rc: r.status ?? -1, stdout: (r.stdout ?? Buffer.alloc(0)).toString('latin1'), stderr: (r.stderr ?? Buffer.alloc(0)).toString('latin1') };
  }

  /** A long-running `nfqlb args` of `impl` beside this daemon (kill it with killProcess). */
  spawn(impl: Impl, args: string[]): ChildProcess {
    return spawn('nsenter', this.argv(impl, args), { stdio: ['ignore', 'pipe', 'pipe'] });
  }

  async stop(): Promise<void> {
    await killProcess(this.child);
  }
}

/** One request/reply at a time over a worker.js process (see there). */
export class Worker {
  private readonly pending: Array<(line: string) => void> = [];
  readonly child: ChildProcess;

  constructor(impl: Impl, ns: string | undefined, env: NodeJS.ProcessEnv = {}) {
    const script = path.join(__dirname, 'worker.js');
    const args = [script, impl, ORIGINAL];
    this.child =
      ns === undefined
        ? spawn(process.execPath, args, { stdio: ['pipe', 'pipe', 'inherit'], env: { ...process.env, ...env } })
        : spawnInNs(ns, process.execPath, args, { stdio: ['pipe', 'pipe', 'inherit'], env: { ...process.env, ...env } });
    const rl = readline.createInterface({ input: this.child.stdout as NodeJS.ReadableStream });
    rl.on('line', (line) => this.pending.shift()?.(line));
  }

  /** Runs one command line; rejects when it has not finished within `timeoutMs` (a command that hangs is a finding too). */
  run(argv: string[], env: Record<string, string | null> = {}, timeoutMs = 30000): Promise<{ rc: number; stdout: Buffer; stderr: Buffer }> {
    return new Promise((resolve, reject) => {
      const onExit = (): void => reject(new Error('worker exited'));
      const timer = setTimeout(() => reject(new Error(`nfqlb ${argv.join(' ')} did not finish within ${timeoutMs} ms`)), timeoutMs);
      this.child.once('exit', onExit);
      this.pending.push((line) => {
        clearTimeout(timer);
        this.child.off('exit', onExit);
        const r = JSON.parse(line) as { rc: number; stdout: string; stderr: string };
        resolve({ rc: r.rc, stdout: Buffer.from(r.stdout, 'base64'), stderr: Buffer.from(r.stderr, 'base64') });
      });
      this.child.stdin?.write(`${JSON.stringify({ argv, env })}\n`);
    });
  }

  async close(): Promise<void> {
    this.child.stdin?.end();
    await killProcess(this.child, 3000);
  }
}
