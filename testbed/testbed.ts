/**
 * A test bed of network namespaces for the end-to-end tests and the demo
 * (root only). Two parts:
 *
 *  1. Namespace helpers (also used by test/native/queue.test.ts through
 *     test/helpers/netns.ts). Everything is created inside namespaces named
 *     `<prefix><n>-<tag>` and registered, so cleanupAll() kills the processes,
 *     deletes the namespaces and unlinks the shm objects even when a test
 *     failed halfway. The prefix is `nfqlbts-<pid>-<random>-` (or
 *     $NFQLB_TESTBED_PREFIX, which must also start with `nfqlbts-<pid>-`).
 *     Every command that changes network configuration runs with `ip -n <ns>`
 *     or `ip netns exec <ns>` and refuses a namespace this process did not
 *     create: nothing is ever added to the root namespace. Documentation
 *     addresses only (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24,
 *     2001:db8::/32).
 *
 *  2. The seed's traffic path (class Testbed):
 *
 *        gw ──── lb ──┬── t1   (VIPs on lo, TCP server on :4000 answering "t1")
 *                     ├── t2
 *                     ├── t3
 *                     └── t4
 *
 *     gw (the client) routes the VIPs to lb. lb sends packets for the VIPs to
 *     NFQUEUE (`--queue-balance 0:3`); the daemon marks them with the
 *     target's fwmark and one `ip rule fwmark F table F` + default route via
 *     the target per target (IPv4 and IPv6) forwards them. Targets answer
 *     from the VIP and route back through lb to gw.
 *
 * The helper programs the test bed runs inside namespaces (TCP server, TCP
 * client, UDP sender, raw control-socket client) are this file's command
 * line: `node testbed/dist/testbed/testbed.js <server|client|udp|raw> ...`, so they
 * need the compiled test bed (`npx tsc -p testbed`, done by scripts/setup.sh).
 */
import { ChildProcess, spawn, spawnSync, SpawnOptions } from 'node:child_process';
import * as dgram from 'node:dgram';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { NFQUEUE_PROC_FILE, parseQueueProc, type QueueProcEntry } from '../src/addon/queue';

// ---------------------------------------------------------------------------
// Part 1: namespace helpers

/** The repository root: this file runs as testbed/testbed.ts (jest) or testbed/dist/testbed/testbed.js (compiled). */
export const ROOT = findRoot(__dirname);
function findRoot(dir: string): string {
  while (!fs.existsSync(path.join(dir, 'package.json'))) {
    const up = path.dirname(dir);
    if (up === dir) throw new Error(`testbed: no package.json above ${__dirname}`);
    dir = up;
  }
  return dir;
}
export const NFQLB_BIN = path.join(ROOT, 'bin', 'nfqlb');
export const TESTBED_JS = path.join(ROOT, 'testbed', 'dist', 'testbed', 'testbed.js');

function defaultPrefix(): string {
  const env = process.env.NFQLB_TESTBED_PREFIX;
  if (env !== undefined && /^nfqlbts-\d+-[a-z0-9-]*$/.test(env)) return env.endsWith('-') ? env : `${env}-`;
  return `nfqlbts-${process.pid}-${Math.random().toString(36).slice(2, 6)}-`;
}

export const NS_PREFIX = defaultPrefix();

const namespaces = new Set<string>();
const processes = new Set<ChildProcess>();
const shmObjects = new Set<string>();
let traceShmExisted: boolean | null = null;
let counter = 0;

export interface RunResult {
  status: number;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  allowFail?: boolean;
  input?: string;
  env?: NodeJS.ProcessEnv;
  timeoutMs?: number;
}

/** Runs a command synchronously; throws with its output unless allowFail. */
export function run(cmd: string, args: string[], opts: RunOptions = {}): RunResult {
  const r = spawnSync(cmd, args, {
    encoding: 'utf8',
    input: opts.input,
    timeout: opts.timeoutMs ?? 30000,
    env: opts.env === undefined ? process.env : { ...process.env, ...opts.env },
    maxBuffer: 64 * 1024 * 1024,
  });
  const res: RunResult = {
    status: r.status ?? -1,
    stdout: r.stdout ?? '',
    stderr: (r.stderr ?? '') + (r.error ? String(r.error) : ''),
  };
  if (res.status !== 0 && !opts.allowFail) {
    throw new Error(`command failed (${res.status}): ${cmd} ${args.join(' ')}\n${res.stderr}${res.stdout}`);
  }
  return res;
}

/** True when network namespaces can be made here (root, `ip netns` works). */
export function canUseNetns(): boolean {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return false;
  return run('ip', ['netns', 'list'], { allowFail: true }).status === 0;
}

function own(ns: string): string {
  if (!ns.startsWith(NS_PREFIX) || !namespaces.has(ns)) {
    throw new Error(`refusing to touch namespace '${ns}': not created by this test process`);
  }
  return ns;
}

/** Creates a namespace with lo up and no IPv6 duplicate address detection; returns its name. */
export function createNetns(tag: string): string {
  const name = `${NS_PREFIX}${++counter}-${tag}`.slice(0, 60);
  run('ip', ['netns', 'add', name]);
  namespaces.add(name);
  run('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
  nsExec(name, 'sysctl', ['-q', '-w', 'net.ipv6.conf.all.accept_dad=0', 'net.ipv6.conf.default.accept_dad=0'], {
    allowFail: true,
  });
  return name;
}

export function deleteNetns(ns: string): void {
  own(ns);
  run('ip', ['netns', 'del', ns], { allowFail: true });
  namespaces.delete(ns);
}

/** `ip netns exec <ns> cmd args...`, synchronously. */
export function nsExec(ns: string, cmd: string, args: string[], opts: RunOptions = {}): RunResult {
  return run('ip', ['netns', 'exec', own(ns), cmd, ...args], opts);
}

/** `ip -n <ns> args...` */
export function ipn(ns: string, ...args: string[]): RunResult {
  return run('ip', ['-n', own(ns), ...args]);
}

/** Sets sysctls (`key=value`) inside a namespace. */
export function sysctl(ns: string, ...settings: string[]): void {
  nsExec(ns, 'sysctl', ['-q', '-w', ...settings]);
}

/** A veth pair with one end in each namespace (created there directly), both up. */
export function addVethPair(nsA: string, ifA: string, nsB: string, ifB: string): void {
  own(nsA);
  own(nsB);
  ipn(nsA, 'link', 'add', ifA, 'type', 'veth', 'peer', 'name', ifB, 'netns', nsB);
  ipn(nsA, 'link', 'set', ifA, 'up');
  ipn(nsB, 'link', 'set', ifB, 'up');
}

export function addAddress(ns: string, dev: string, cidr: string): void {
  ipn(ns, 'addr', 'add', cidr, 'dev', dev, ...(cidr.includes(':') ? ['nodad'] : []));
}

/** `ip route add dst via gw [table T]` (IPv6 when dst has a colon; dst may be "default"). */
export function addRoute(ns: string, dst: string, via: string, table?: number): void {
  const v6 = dst.includes(':') || via.includes(':');
  ipn(ns, ...(v6 ? ['-6'] : []), 'route', 'add', dst, 'via', via, ...(table === undefined ? [] : ['table', `${table}`]));
}

/** `ip rule add fwmark F table T` for IPv4 and IPv6. */
export function addFwmarkRule(ns: string, fwmark: number, table: number): void {
  ipn(ns, '-4', 'rule', 'add', 'fwmark', `${fwmark}`, 'table', `${table}`);
  ipn(ns, '-6', 'rule', 'add', 'fwmark', `${fwmark}`, 'table', `${table}`);
}

export function macOf(ns: string, dev: string): string {
  const info = JSON.parse(ipn(ns, '-j', 'link', 'show', dev).stdout) as Array<{ address: string }>;
  return info[0].address;
}

/** Static neighbour entry, so the first packets do not wait for ARP/ND. */
export function addNeighbour(ns: string, dev: string, addr: string, mac: string): void {
  ipn(ns, 'neigh', 'replace', addr, 'lladdr', mac, 'dev', dev, 'nud', 'permanent');
}

export interface QueueRule {
  backend: 'nft' | 'iptables';
  ns: string;
  vip: string;
  /** The nft table holding the rule (backend nft). */
  table?: string;
}

/**
 * Sends packets to `vip` arriving in `ns` (prerouting) to NFQUEUE queue `first`
 * (or balanced over first..last), with a packet counter. Tries an nftables
 * `queue` rule first and falls back to the xtables NFQUEUE target through
 * iptables-nft, because some kernels (this one) lack the nft queue expression.
 */
export function installQueueRule(
  ns: string,
  vip: string,
  first: number,
  last: number = first,
  opts: { bypass?: boolean } = {},
): QueueRule {
  own(ns);
  const v6 = vip.includes(':');
  const range = last === first ? `${first}` : `${first}-${last}`;
  const table = `nfqlbts${++counter}`; // one table per rule: a failed attempt removes only its own
  const nft =
    `table inet ${table} {\n` +
    `  chain pre { type filter hook prerouting priority mangle; ` +
    `${v6 ? 'ip6' : 'ip'} daddr ${vip} counter queue ${opts.bypass ? 'flags bypass ' : ''}num ${range}; }\n` +
    `}\n`;
  if (nsExec(ns, 'nft', ['-f', '-'], { allowFail: true, input: nft }).status === 0) return { backend: 'nft', ns, vip, table };
  nsExec(ns, 'nft', ['delete', 'table', 'inet', table], { allowFail: true });
  const target = last === first ? ['--queue-num', `${first}`] : ['--queue-balance', `${first}:${last}`];
  nsExec(ns, v6 ? 'ip6tables' : 'iptables', [
    '-t', 'mangle', '-A', 'PREROUTING', '-d', vip, '-j', 'NFQUEUE', ...target,
    ...(opts.bypass ? ['--queue-bypass'] : []),
  ]);
  return { backend: 'iptables', ns, vip };
}

/** Packets counted so far by a rule from installQueueRule. */
export function queueRuleCount(rule: QueueRule): number {
  if (rule.backend === 'nft') {
    const text = nsExec(rule.ns, 'nft', ['list', 'table', 'inet', rule.table as string]).stdout;
    const m = /counter packets (\d+)/.exec(text);
    return m === null ? 0 : Number(m[1]);
  }
  const v6 = rule.vip.includes(':');
  const text = nsExec(rule.ns, v6 ? 'ip6tables-save' : 'iptables-save', ['-c', '-t', 'mangle']).stdout;
  let total = 0;
  for (const line of text.split('\n')) {
    const m = /^\[(\d+):\d+\] -A PREROUTING -d ([^/\s]+)(?:\/\d+)? .*-j NFQUEUE/.exec(line);
    if (m !== null && m[2] === rule.vip) total += Number(m[1]);
  }
  return total;
}

/** Adds a counting-only rule to mangle `chain` (default INPUT) for packets to `dst` carrying `mark`. */
export function addMarkCounter(ns: string, dst: string, mark: number, chain = 'INPUT'): void {
  nsExec(ns, dst.includes(':') ? 'ip6tables' : 'iptables', [
    '-t', 'mangle', '-A', chain, '-d', dst, '-m', 'mark', '--mark', `${mark}`,
  ]);
}

/** Packet counters of the addMarkCounter rules of `chain`: one entry per rule. */
export function markCounters(ns: string, v6 = false, chain = 'INPUT'): Array<{ dst: string; mark: number; packets: number }> {
  const out = nsExec(ns, v6 ? 'ip6tables-save' : 'iptables-save', ['-c', '-t', 'mangle']).stdout;
  const rules: Array<{ dst: string; mark: number; packets: number }> = [];
  const re = new RegExp(`^\\[(\\d+):\\d+\\] -A ${chain} -d ([^/\\s]+)(?:/\\d+)? -m mark --mark (0x[0-9a-f]+|\\d+)`);
  for (const line of out.split('\n')) {
    const m = re.exec(line);
    if (m) rules.push({ dst: m[2], mark: Number(m[3]), packets: Number(m[1]) });
  }
  return rules;
}

/** Packets counted by the addMarkCounter(ns, dst, mark, chain) rule (0 when absent). */
export function markCount(ns: string, dst: string, mark: number, chain = 'INPUT'): number {
  const rule = markCounters(ns, dst.includes(':'), chain).find((r) => r.dst === dst && r.mark === mark);
  return rule?.packets ?? 0;
}

/** Spawns `ip netns exec <ns> cmd args` (registered: killed by cleanupAll). */
export function spawnInNs(ns: string, cmd: string, args: string[], opts: SpawnOptions = {}): ChildProcess {
  const child = spawn('ip', ['netns', 'exec', own(ns), cmd, ...args], { stdio: ['pipe', 'pipe', 'pipe'], ...opts });
  processes.add(child);
  child.once('exit', () => processes.delete(child));
  return child;
}

function waitExit(child: ChildProcess, ms: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    child.once('exit', () => {
      clearTimeout(t);
      resolve();
    });
  });
}

/** Kills a registered process (SIGTERM, then SIGKILL after `graceMs`). */
export async function killProcess(child: ChildProcess, graceMs = 2000): Promise<void> {
  if (child.exitCode === null && child.signalCode === null) {
    child.kill('SIGTERM');
    await waitExit(child, graceMs);
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await waitExit(child, graceMs);
    }
  }
  processes.delete(child);
}

/**
 * A shm name no other test run uses (`tshm-<pid>-<random>-<tag>`), registered
 * so cleanupAll() unlinks /dev/shm/<name>. Also notes whether nfqlb-trace
 * existed, so that cleanupAll() removes it only when this run made it.
 */
export function uniqueShmName(tag: string): string {
  noteTraceShm();
  const name = `tshm-${NS_PREFIX.slice('nfqlbts-'.length)}${tag}`;
  shmObjects.add(name);
  return name;
}

/** Registers an shm object made under another name for cleanup. */
export function registerShm(name: string): void {
  noteTraceShm();
  shmObjects.add(name);
}

/** Call before starting a daemon: remembers whether /dev/shm/nfqlb-trace was there. */
export function noteTraceShm(): void {
  if (traceShmExisted === null) traceShmExisted = fs.existsSync('/dev/shm/nfqlb-trace');
}

function unlinkShm(name: string): void {
  try {
    fs.unlinkSync(`/dev/shm/${name}`);
  } catch {
    // Already gone.
  }
}

/** Kills every registered process, deletes every namespace and shm object this process made. */
export async function cleanupAll(): Promise<void> {
  await Promise.all([...processes].map((p) => killProcess(p, 1000)));
  for (const ns of [...namespaces]) deleteNetns(ns);
  // Leftovers of this process's earlier failures, and of test processes that died.
  for (const ns of listTestNamespaces()) {
    const pid = Number(/^nfqlbts-(\d+)-/.exec(ns)?.[1]);
    if (ns.startsWith(NS_PREFIX) || !fs.existsSync(`/proc/${pid}`)) {
      run('ip', ['netns', 'del', ns], { allowFail: true });
    }
  }
  for (const name of shmObjects) unlinkShm(name);
  shmObjects.clear();
  if (traceShmExisted === false) unlinkShm('nfqlb-trace');
  traceShmExisted = null;
}

function listTestNamespaces(): string[] {
  const out = run('ip', ['netns', 'list'], { allowFail: true }).stdout;
  return out
    .split('\n')
    .map((l) => l.split(' ')[0])
    .filter((n) => /^nfqlbts-\d+-/.test(n));
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------
// Part 2: nfqlb and its daemon

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

// ---------------------------------------------------------------------------
// Part 3: the seed's topology

export interface TargetInfo {
  /** Target name, also what its server answers ("t1"...). */
  name: string;
  ns: string;
  /** Meridio's target id (1..N); its slot is id-1. */
  id: number;
  fwmark: number;
  /** Routing table of its `ip rule fwmark`. */
  table: number;
  addr4: string;
  addr6: string;
}

export interface ConnectResult {
  sport: number;
  /** What the server answered (its name), or null. */
  target: string | null;
  /** errno code or "timeout" when no answer. */
  error?: string;
}

export interface TestbedOptions {
  /** Number of targets (1..16), default 4. */
  targets?: number;
  /** Port of the targets' TCP servers, default 4000. */
  port?: number;
  /** Log every nfqlb command and its output (the demo). */
  echo?: (line: string) => void;
}

export const VIP4 = '192.0.2.1';
export const VIP6 = '2001:db8::1';
export const CLIENT4 = '198.51.100.1';
export const CLIENT6 = '2001:db8:1::1';
const LB4 = '198.51.100.2';
const LB6 = '2001:db8:1::2';

/**
 * The seed's traffic path. build() makes it; destroy() (or cleanupAll())
 * removes every namespace, process and shm object it made.
 */
export class Testbed {
  readonly gw: string;
  readonly lb: string;
  readonly targets: TargetInfo[] = [];
  readonly port: number;
  readonly queueRules: QueueRule[] = [];
  readonly vip4 = VIP4;
  readonly vip6 = VIP6;
  readonly client4 = CLIENT4;
  readonly client6 = CLIENT6;
  daemon: DaemonProcess | null = null;
  private readonly servers: ChildProcess[] = [];
  private readonly echo: ((line: string) => void) | undefined;

  private constructor(opts: TestbedOptions) {
    this.port = opts.port ?? 4000;
    this.echo = opts.echo;
    this.gw = createNetns('gw');
    this.lb = createNetns('lb');
  }

  /** Builds the namespaces, links, addresses, routes and queue rules (servers: startServers()). */
  static build(opts: TestbedOptions = {}): Testbed {
    if (!fs.existsSync(TESTBED_JS)) throw new Error(`${TESTBED_JS} is missing: build first (npx tsc -p testbed)`);
    const n = opts.targets ?? 4;
    if (!(n >= 1 && n <= 16)) throw new Error('targets: 1..16');
    const tb = new Testbed(opts);
    const { gw, lb } = tb;
    addVethPair(gw, 'lb0', lb, 'gw0');
    addAddress(gw, 'lb0', `${CLIENT4}/24`);
    addAddress(gw, 'lb0', `${CLIENT6}/64`);
    addAddress(lb, 'gw0', `${LB4}/24`);
    addAddress(lb, 'gw0', `${LB6}/64`);
    addRoute(gw, `${VIP4}/32`, LB4);
    addRoute(gw, `${VIP6}/128`, LB6);
    addNeighbour(gw, 'lb0', LB4, macOf(lb, 'gw0'));
    addNeighbour(gw, 'lb0', LB6, macOf(lb, 'gw0'));
    addNeighbour(lb, 'gw0', CLIENT4, macOf(gw, 'lb0'));
    addNeighbour(lb, 'gw0', CLIENT6, macOf(gw, 'lb0'));
    sysctl(
      lb,
      'net.ipv4.ip_forward=1',
      'net.ipv6.conf.all.forwarding=1',
      'net.ipv4.conf.all.rp_filter=0',
      'net.ipv4.conf.default.rp_filter=0',
    );
    for (let id = 1; id <= n; id++) {
      const ns = createNetns(`t${id}`);
      const t: TargetInfo = {
        name: `t${id}`,
        ns,
        id,
        fwmark: 100 + id,
        table: 100 + id,
        addr4: `203.0.113.${8 * id + 2}`,
        addr6: `2001:db8:2:${id}::2`,
      };
      const lb4 = `203.0.113.${8 * id + 1}`;
      const lb6 = `2001:db8:2:${id}::1`;
      addVethPair(lb, `t${id}`, ns, 'eth0');
      addAddress(lb, `t${id}`, `${lb4}/29`);
      addAddress(lb, `t${id}`, `${lb6}/64`);
      addAddress(ns, 'eth0', `${t.addr4}/29`);
      addAddress(ns, 'eth0', `${t.addr6}/64`);
      addAddress(ns, 'lo', `${VIP4}/32`);
      addAddress(ns, 'lo', `${VIP6}/128`);
      addRoute(ns, 'default', lb4);
      addRoute(ns, 'default', lb6);
      addNeighbour(ns, 'eth0', lb4, macOf(lb, `t${id}`));
      addNeighbour(ns, 'eth0', lb6, macOf(lb, `t${id}`));
      addNeighbour(lb, `t${id}`, t.addr4, macOf(ns, 'eth0'));
      addNeighbour(lb, `t${id}`, t.addr6, macOf(ns, 'eth0'));
      addFwmarkRule(lb, t.fwmark, t.table);
      addRoute(lb, 'default', t.addr4, t.table);
      addRoute(lb, 'default', t.addr6, t.table);
      tb.targets.push(t);
    }
    // Meridio's queue rule: every packet to a VIP goes to queues 0-3.
    tb.queueRules.push(installQueueRule(lb, VIP4, 0, 3));
    tb.queueRules.push(installQueueRule(lb, VIP6, 0, 3));
    return tb;
  }

  /** Starts a TCP server on every target (port `port`, or this.port) that answers the target's name. */
  async startServers(port = this.port): Promise<void> {
    await Promise.all(
      this.targets.map(async (t) => {
        const child = spawnInNs(t.ns, process.execPath, [TESTBED_JS, 'server', t.name, `${port}`]);
        this.servers.push(child);
        await waitForLine(child, /^listening/, 10000, `server of ${t.name}`);
      }),
    );
  }

  /** The target with this fwmark, or undefined. */
  byFwmark(fwmark: number): TargetInfo | undefined {
    return this.targets.find((t) => t.fwmark === fwmark);
  }

  byName(name: string): TargetInfo | undefined {
    return this.targets.find((t) => t.name === name);
  }

  /** `nfqlb args...` in the LB namespace (echoed when the test bed echoes). */
  nfqlb(args: string[], env: NodeJS.ProcessEnv = {}): RunResult {
    const r = nfqlb(args, { ns: this.lb, env });
    if (this.echo !== undefined) {
      this.echo(`$ nfqlb ${args.join(' ')}`);
      const text = (r.stdout + r.stderr).replace(/\n$/, '');
      if (text !== '') this.echo(text);
      if (r.status !== 0) this.echo(`(exit ${r.status})`);
    }
    return r;
  }

  /** Like nfqlb() but throws unless it exits 0. */
  nfqlbOk(args: string[], env: NodeJS.ProcessEnv = {}): RunResult {
    const r = this.nfqlb(args, env);
    if (r.status !== 0) throw new Error(`nfqlb ${args.join(' ')} failed (${r.status}): ${r.stderr}${r.stdout}`);
    return r;
  }

  /**
   * Meridio's configuration of one stream: `init --M=10000 --N=100`, then
   * `activate --index=id-1 FWMARK` for every target in `active` (default all).
   */
  initTable(shm: string, active: TargetInfo[] = this.targets, shape: { M: number; N: number } = { M: 10000, N: 100 }): void {
    registerShm(shm);
    this.nfqlbOk(['init', `--shm=${shm}`, `--M=${shape.M}`, `--N=${shape.N}`]);
    for (const t of active) this.activate(shm, t);
  }

  activate(shm: string, t: TargetInfo): void {
    this.nfqlbOk(['activate', `--index=${t.id - 1}`, `--shm=${shm}`, `${t.fwmark}`]);
  }

  deactivate(shm: string, t: TargetInfo): void {
    this.nfqlbOk(['deactivate', `--index=${t.id - 1}`, `--shm=${shm}`]);
  }

  /** Meridio's flow for the stream: TCP to both VIPs, port `port`. */
  setFlow(name: string, shm: string, extra: string[] = []): void {
    this.nfqlbOk(['flow-set', `--name=${name}`, `--target=${shm}`, '--prio=1', '--protocols=tcp', `--dsts=${VIP4}/32,${VIP6}/128`, `--dports=${this.port}`, ...extra]);
  }

  /** Starts `nfqlb <args>` in the LB namespace (stopping one that runs) and waits until it is ready. */
  async startDaemon(args: string[] = ['flowlb', '--promiscuous_ping', '--queue=0:3', '--qlength=1024', '--hash_mode=0'], env: NodeJS.ProcessEnv = {}): Promise<DaemonProcess> {
    await this.stopDaemon();
    if (this.echo !== undefined) this.echo(`$ nfqlb ${args.join(' ')} &`);
    this.daemon = await DaemonProcess.start(this.lb, args, env);
    if (this.echo !== undefined && this.daemon.stdout !== '') this.echo(this.daemon.stdout.replace(/\n$/, ''));
    return this.daemon;
  }

  /** SIGTERM to the daemon, if one runs; returns its exit (null when none ran). */
  async stopDaemon(): Promise<{ code: number | null; ms: number } | null> {
    const d = this.daemon;
    this.daemon = null;
    if (d === null || !d.running) return null;
    return d.stop('SIGTERM');
  }

  /**
   * Opens one TCP connection per source port from the gateway to `vip`:`dport`
   * (at most `concurrency` at a time) and reads what the server answers.
   */
  connect(vip: string, sports: number[], opts: { dport?: number; concurrency?: number; timeoutMs?: number } = {}): ConnectResult[] {
    const src = vip.includes(':') ? CLIENT6 : CLIENT4;
    const r = nsExec(this.gw, process.execPath, [
      TESTBED_JS, 'client', `--dst=${vip}`, `--port=${opts.dport ?? this.port}`, `--src=${src}`,
      `--sports=${rangeList(sports)}`, `--concurrency=${opts.concurrency ?? 32}`, `--timeout=${opts.timeoutMs ?? 4000}`,
    ], { timeoutMs: 120000 });
    return JSON.parse(r.stdout) as ConnectResult[];
  }

  /** ICMP echo from the gateway to `vip` (raw socket, python3): replies received. */
  ping(vip: string, count = 3, timeoutS = 2): { sent: number; received: number } {
    const r = nsExec(this.gw, 'python3', ['-c', PING_PY, vip.includes(':') ? '6' : '4', vip, `${count}`, `${timeoutS}`]);
    return JSON.parse(r.stdout) as { sent: number; received: number };
  }

  /** Sends `count` UDP datagrams from the gateway to vip:dport (source port `sport`). */
  sendUdp(vip: string, dport: number, count: number, sport = 33000): void {
    const src = vip.includes(':') ? CLIENT6 : CLIENT4;
    nsExec(this.gw, process.execPath, [TESTBED_JS, 'udp', `--dst=${vip}`, `--port=${dport}`, `--src=${src}`, `--sport=${sport}`, `--count=${count}`]);
  }

  /** Packets counted by the NFQUEUE rules (both VIPs). */
  queuedPackets(): number {
    return this.queueRules.reduce((sum, rule) => sum + queueRuleCount(rule), 0);
  }

  /** Stops the daemon and the servers and removes everything (same as cleanupAll for this process). */
  async destroy(): Promise<void> {
    try {
      await this.stopDaemon();
    } catch {
      // cleanupAll kills it.
    }
    await cleanupAll();
  }
}

/** Connections per target name ("(failed)" for the ones without an answer). */
export function distribution(results: ConnectResult[]): Map<string, number> {
  const m = new Map<string, number>();
  for (const r of results) {
    const k = r.target ?? '(failed)';
    m.set(k, (m.get(k) ?? 0) + 1);
  }
  return new Map([...m.entries()].sort((a, b) => a[0].localeCompare(b[0])));
}

/** mconnect's summary: failed connects, then one line per target with its count and share. */
export function formatDistribution(results: ConnectResult[], targets: string[] = []): string {
  const d = distribution(results);
  const failed = d.get('(failed)') ?? 0;
  d.delete('(failed)');
  for (const t of targets) if (!d.has(t)) d.set(t, 0);
  const total = results.length;
  const lines = [`Failed connects; ${failed}`];
  const width = Math.max(8, ...[...d.keys()].map((k) => k.length));
  for (const [name, count] of [...d.entries()].sort((a, b) => a[0].localeCompare(b[0]))) {
    const pct = total === 0 ? 0 : (100 * count) / total;
    lines.push(`${name.padEnd(width)} ${String(count).padStart(5)}  ${pct.toFixed(1).padStart(5)}%`);
  }
  return lines.join('\n');
}

/** Source port -> target name, for the connections that got an answer. */
export function targetsByPort(results: ConnectResult[]): Map<number, string> {
  const m = new Map<number, string>();
  for (const r of results) if (r.target !== null) m.set(r.sport, r.target);
  return m;
}

/**
 * Of the connections that were not on `gone` before (source port → target),
 * how many are on the same target now: Maglev's promise when one target
 * leaves is that only its own connections move.
 */
export function keptTargets(before: Map<number, string>, now: Map<number, string>, gone: string): { kept: number; of: number } {
  let kept = 0;
  let of = 0;
  for (const [sport, name] of before) {
    if (name === gone) continue;
    of++;
    if (now.get(sport) === name) kept++;
  }
  return { kept, of };
}

/** [20000, 20001, 20002, 35000] -> "20000-20002,35000" (portList's input). */
function rangeList(list: number[]): string {
  const parts: string[] = [];
  for (let i = 0; i < list.length; ) {
    let j = i;
    while (j + 1 < list.length && list[j + 1] === list[j] + 1) j++;
    parts.push(j === i ? `${list[i]}` : `${list[i]}-${list[j]}`);
    i = j + 1;
  }
  return parts.join(',');
}

/** An integer range [from, from+count). */
export function ports(from: number, count: number): number[] {
  return Array.from({ length: count }, (_, i) => from + i);
}

function waitForLine(child: ChildProcess, re: RegExp, timeoutMs: number, what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    let buf = '';
    let err = '';
    const t = setTimeout(() => reject(new Error(`${what}: no ${re} within ${timeoutMs} ms; stderr: ${err}`)), timeoutMs);
    child.stderr?.on('data', (d: Buffer) => {
      err += d.toString();
    });
    child.stdout?.on('data', (d: Buffer) => {
      buf += d.toString();
      if (buf.split('\n').some((l) => re.test(l))) {
        clearTimeout(t);
        resolve();
      }
    });
    child.once('exit', (code) => {
      clearTimeout(t);
      reject(new Error(`${what} exited (${code}): ${err}`));
    });
  });
}

/** ICMP echo over a raw socket: argv family(4|6) dst count timeout_s; prints {"sent","received"}. */
const PING_PY = `
import json, os, select, socket, struct, sys, time
fam, dst, count, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
v6 = fam == '6'
if v6:
    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6); req, rep = 128, 129
else:
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP); req, rep = 8, 0
ident = (os.getpid() & 0xfffe) | 1
def csum(b):
    if len(b) % 2: b += b'\\0'
    x = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    x = (x >> 16) + (x & 0xffff); x += x >> 16
    return ~x & 0xffff
got = 0
for seq in range(count):
    payload = b'nfqlb-ts testbed ping'
    pkt = struct.pack('!BBHHH', req, 0, 0, ident, seq) + payload
    if not v6:
        pkt = struct.pack('!BBHHH', req, 0, csum(pkt), ident, seq) + payload
    s.sendto(pkt, (dst, 0))
    end = time.time() + timeout
    while True:
        left = end - time.time()
        if left <= 0: break
        r, _, _ = select.select([s], [], [], left)
        if not r: break
        data, _ = s.recvfrom(4096)
        if not v6: data = data[(data[0] & 0xf) * 4:]
        if len(data) >= 8:
            t, c, ck, i, sq = struct.unpack('!BBHHH', data[:8])
            if t == rep and i == ident and sq == seq:
                got += 1
                break
print(json.dumps({"sent": count, "received": got}))
`;

// ---------------------------------------------------------------------------
// Part 5: load and measurement (bench/run.js and test/e2e/activation.test.ts)
//
// UDP load comes from trafgen (netsniff-ng) in the gateway namespace, counted
// where it is offered (a counting rule first in the LB's mangle PREROUTING)
// and where it is delivered (a DROP rule in each target's raw PREROUTING, so
// the targets spend nothing on it and send no ICMP back). The LB marks the
// packets either through NFQUEUE and the daemon ('queue', as Testbed.build
// sets it up) or by the kernel alone with `-j HMARK` over the 5-tuple
// ('hmark', the baseline without user space). trafgen runs with
// --no-sock-mem and --notouch-irq: it would otherwise retune the global
// net.core.*mem sysctls and IRQ affinities, which are not per namespace.

/** UDP destination port of the load helpers. */
export const LOAD_PORT = 5002;
const OFFERED_COMMENT = 'nfqlbts-offered';
const SINK_COMMENT = 'nfqlbts-sink';

/** What trafgen sends: one family, many flows or one. */
export interface UdpLoadSpec {
  family: 4 | 6;
  /** MAC of the LB's interface toward the gateway (macOf(tb.lb, 'gw0')). */
  dstMac: string;
  /**
   * 'many': sources 198.51.100.10-250 (one after the other) or
   * 2001:db8:1::1:0-ffff (random), random source ports: every queue of a
   * --queue-balance gets its share. 'one': the gateway's address, source port
   * 40000: a single flow, so a single queue.
   */
  sources: 'many' | 'one';
  dport?: number;
  /** Ethernet frame bytes (default 60 for IPv4, 66 for IPv6; at least those). */
  size?: number;
}

function macBytes(mac: string): string {
  return mac.split(':').map((b) => `0x${b}`).join(', ');
}

/**
 * A trafgen packet configuration for `spec`: IPv4 frames of 60 bytes
 * (14 Ethernet + 20 IP + 8 UDP + 18 payload), IPv6 frames of 66 (14 + 40 + 8 + 4),
 * or `size`, to VIP4 / VIP6, checksums filled in by trafgen.
 */
export function trafgenConfig(spec: UdpLoadSpec): string {
  const dport = spec.dport ?? LOAD_PORT;
  const many = spec.sources === 'many';
  const eth = `${macBytes(spec.dstMac)}, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01`;
  const sport = many ? 'drnd(2)' : 'c16(40000)';
  if (spec.family === 4) {
    const src = many ? '198, 51, 100, dinc(10, 250)' : CLIENT4.split('.').join(', ');
    const payload = Math.max(18, (spec.size ?? 0) - 42);
    return (
      `{ ${eth}, c16(0x0800),\n` +
      `  0x45, 0x00, c16(${28 + payload}), drnd(2), 0x40, 0x00, 64, 17, csumip(14, 33),\n` +
      `  ${src}, ${VIP4.split('.').join(', ')},\n` +
      `  ${sport}, c16(${dport}), c16(${8 + payload}), csumudp(14, 34),\n` +
      `  fill(0x42, ${payload}) }\n`
    );
  }
  const payload = Math.max(4, (spec.size ?? 0) - 62);
  // 2001:db8:1::1:RRRR (never the gateway's ::1 or the LB's ::2), or 2001:db8:1::1.
  const src = many
    ? '0x20, 0x01, 0x0d, 0xb8, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0x00, 0x01, drnd(2)'
    : '0x20, 0x01, 0x0d, 0xb8, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x01';
  const dst = '0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x01';
  return (
    `{ ${eth}, c16(0x86dd),\n` +
    `  0x60, 0, 0, 0, c16(${8 + payload}), 17, 64,\n` +
    `  ${src},\n  ${dst},\n` +
    `  ${sport}, c16(${dport}), c16(${8 + payload}), csumudp6(14, 54),\n` +
    `  fill(0x42, ${payload}) }\n`
  );
}

export interface TrafgenResult {
  /** Packets trafgen says it sent. */
  sent: number;
  /** Seconds trafgen says it took (its own clock), or the wall time around it. */
  seconds: number;
  /** sent / seconds. */
  pps: number;
  /** CPU seconds trafgen and its worker used (user + system, from the shell's `times`). */
  cpuSeconds: number;
}

/** Ethernet frame bytes of trafgenConfig(spec). */
export function frameBytes(spec: Pick<UdpLoadSpec, 'family' | 'size'>): number {
  return Math.max(spec.family === 4 ? 60 : 66, spec.size ?? 0);
}

export interface TrafgenOptions {
  /** Packets to send. */
  count: number;
  /** Packets per second; none: as fast as trafgen goes (its --rate path at 10^7). */
  rate?: number;
  /**
   * With `rate`: frame bytes of the configuration (frameBytes()), to pace the
   * packets evenly. trafgen's --rate alone sends each second's packets back to
   * back at full speed and then waits for the next second (bursts of `rate`
   * packets); with `steady`, a token bucket (tc tbf) on `dev` releases them at
   * `rate` with bursts of at most 32 frames, for the time of the run.
   */
  steady?: { frameBytes: number };
  timeoutMs?: number;
}

/** Packets waiting in the root qdisc of `dev` in `ns`. */
function qdiscBacklog(ns: string, dev: string): number {
  const r = nsExec(ns, 'tc', ['-s', '-j', 'qdisc', 'show', 'dev', dev], { allowFail: true });
  try {
    const q = (JSON.parse(r.stdout) as Array<{ qlen?: number }>)[0];
    return q?.qlen ?? 0;
  } catch {
    return 0;
  }
}

/**
 * Runs trafgen in `ns` on `dev` (one process: --cpus 1) until it has sent
 * `count` packets (see TrafgenOptions for the pacing). Resolves when the
 * last packet has left `dev`, with what trafgen reports and the time from
 * start to the last packet; rejects when it fails. The process is
 * registered: cleanupAll() kills it.
 */
export async function runTrafgen(ns: string, dev: string, config: string, opts: TrafgenOptions): Promise<TrafgenResult> {
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'nfqlbts-trafgen-')), 'load.cfg');
  fs.writeFileSync(file, config);
  const rate = Math.round(opts.rate ?? 10_000_000);
  const args = ['--no-sock-mem', '--notouch-irq', '--cpus', '1', '--dev', dev, '--conf', file, '--num', `${opts.count}`, '--rate', `${rate}pps`];
  const steady = opts.rate !== undefined && opts.steady !== undefined;
  if (steady) {
    const frame = opts.steady!.frameBytes;
    // `limit`: room for a second and a half of packets, so trafgen's own bursts wait here, none dropped.
    nsExec(ns, 'tc', [
      'qdisc', 'replace', 'dev', dev, 'root', 'tbf', 'rate', `${rate * frame * 8}bit`, 'burst', `${32 * frame}`, 'limit', `${Math.ceil(rate * frame * 1.5)}`,
    ]);
    args.push('--qdisc-path');
  }
  const t0 = process.hrtime.bigint();
  try {
    // Through a shell whose `times` reports what trafgen and its worker used.
    const script = 'trafgen "$@"; rc=$?; echo "times:"; times; exit $rc';
    const child = spawnInNs(ns, 'sh', ['-c', script, 'sh', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
    });
    child.stderr?.on('data', (d: Buffer) => {
      out += d.toString();
    });
    const timeoutMs = opts.timeoutMs ?? 60_000 + (opts.count / Math.min(rate, 100_000)) * 2000;
    const code = await new Promise<number | null>((resolve) => {
      const t = setTimeout(() => void killProcess(child, 500), timeoutMs);
      child.once('exit', (c) => {
        clearTimeout(t);
        resolve(c);
      });
    });
    if (code !== 0) throw new Error(`trafgen ${args.join(' ')} exited ${code}: ${out.trim()}`);
    // trafgen is done when its packets are in the qdisc; the run ends when they have left it.
    const drainEnd = Date.now() + 10_000;
    while (steady && qdiscBacklog(ns, dev) > 0 && Date.now() < drainEnd) await sleep(10);
    const wall = Number(process.hrtime.bigint() - t0) / 1e9;
    const sent = Number(/(\d+) packets outgoing/.exec(out)?.[1] ?? NaN);
    const m = /(\d+) sec, (\d+) usec on CPU/.exec(out);
    const seconds = steady || m === null ? wall : Number(m[1]) + Number(m[2]) / 1e6;
    let cpuSeconds = NaN;
    const t = /times:\n.*\n(\d+)m([\d.]+)s (\d+)m([\d.]+)s/.exec(out);
    if (t !== null) cpuSeconds = Number(t[1]) * 60 + Number(t[2]) + Number(t[3]) * 60 + Number(t[4]);
    return { sent, seconds, pps: sent / seconds, cpuSeconds };
  } finally {
    if (steady) nsExec(ns, 'tc', ['qdisc', 'del', 'dev', dev, 'root'], { allowFail: true });
    fs.rmSync(path.dirname(file), { recursive: true, force: true });
  }
}

/**
 * Counts (and drops) UDP to `vip`:`dport` arriving in target namespace `ns`:
 * one rule in the raw table's PREROUTING, before any routing or socket work.
 */
export function addUdpSink(ns: string, vip: string, dport: number = LOAD_PORT): void {
  nsExec(ns, vip.includes(':') ? 'ip6tables' : 'iptables', [
    '-t', 'raw', '-A', 'PREROUTING', '-d', vip, '-p', 'udp', '--dport', `${dport}`,
    '-m', 'comment', '--comment', SINK_COMMENT, '-j', 'DROP',
  ]);
}

/** Packets counted by the `comment` rules of `chain` in `table` of ns (IPv4 and IPv6 summed unless `family`). */
function commentCount(ns: string, table: string, chain: string, comment: string, family?: 4 | 6): number {
  let total = 0;
  for (const cmd of family === undefined ? ['iptables-save', 'ip6tables-save'] : [family === 4 ? 'iptables-save' : 'ip6tables-save']) {
    const text = nsExec(ns, cmd, ['-c', '-t', table]).stdout;
    for (const line of text.split('\n')) {
      const m = /^\[(\d+):\d+\] -A (\S+) .*--comment "?([^"\s]+)"?/.exec(line);
      if (m !== null && m[2] === chain && m[3] === comment) total += Number(m[1]);
    }
  }
  return total;
}

/** Packets counted by the addUdpSink rules of `ns` so far. */
export function udpSinkCount(ns: string, family?: 4 | 6): number {
  return commentCount(ns, 'raw', 'PREROUTING', SINK_COMMENT, family);
}

/** Adds a UDP sink (LOAD_PORT, both VIPs) to every target and the offered counter to the LB. */
export function addLoadCounters(tb: Testbed, dport: number = LOAD_PORT): void {
  for (const t of tb.targets) {
    addUdpSink(t.ns, tb.vip4, dport);
    addUdpSink(t.ns, tb.vip6, dport);
  }
  for (const vip of [tb.vip4, tb.vip6]) {
    // First in the chain, before the queue or HMARK rule (both are appended).
    nsExec(tb.lb, vip.includes(':') ? 'ip6tables' : 'iptables', [
      '-t', 'mangle', '-I', 'PREROUTING', '1', '-d', vip, '-p', 'udp', '--dport', `${dport}`,
      '-m', 'comment', '--comment', OFFERED_COMMENT,
    ]);
  }
}

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
  return { offered: commentCount(tb.lb, 'mangle', 'PREROUTING', OFFERED_COMMENT, family), perTarget, delivered };
}

/** What happened between two loadCounts() readings (b after a). */
export function loadDelta(a: LoadCounts, b: LoadCounts): LoadCounts {
  const perTarget: Record<string, number> = {};
  for (const name of Object.keys(b.perTarget)) perTarget[name] = b.perTarget[name] - (a.perTarget[name] ?? 0);
  return { offered: b.offered - a.offered, perTarget, delivered: b.delivered - a.delivered };
}

/** Removes a rule made by installQueueRule. */
export function removeQueueRule(rule: QueueRule): void {
  if (rule.backend === 'nft') {
    nsExec(rule.ns, 'nft', ['delete', 'table', 'inet', rule.table as string]);
    return;
  }
  const text = nsExec(rule.ns, rule.vip.includes(':') ? 'ip6tables-save' : 'iptables-save', ['-t', 'mangle']).stdout;
  for (const line of text.split('\n')) {
    const m = /^-A PREROUTING -d ([^/\s]+)(?:\/\d+)? (.*-j NFQUEUE.*)$/.exec(line);
    if (m === null || m[1] !== rule.vip) continue;
    nsExec(rule.ns, rule.vip.includes(':') ? 'ip6tables' : 'iptables', ['-t', 'mangle', '-D', 'PREROUTING', '-d', rule.vip, ...m[2].split(' ')]);
  }
}

const hmarkBeds = new WeakSet<Testbed>();

/**
 * How the LB marks packets to the VIPs:
 *  - 'queue': NFQUEUE over queues first..last (`--queue-balance`, or
 *    `--queue-num` when first == last), the daemon decides (Testbed.build's
 *    rules, re-made with this range);
 *  - 'hmark': the kernel alone, `-j HMARK --hmark-tuple src,dst,sport,dport,proto
 *    --hmark-mod <targets> --hmark-offset <first target's fwmark>`: the same
 *    forwarding path with no user space, the baseline of the bench.
 * Replaces whatever was there before. The offered counters stay first.
 */
export function setMarking(tb: Testbed, how: 'queue' | 'hmark', first = 0, last = 3): void {
  for (const rule of tb.queueRules.splice(0)) removeQueueRule(rule);
  const hmark = (vip: string, op: '-A' | '-D'): void => {
    nsExec(tb.lb, vip.includes(':') ? 'ip6tables' : 'iptables', [
      '-t', 'mangle', op, 'PREROUTING', '-d', vip, '-j', 'HMARK', '--hmark-tuple', 'src,dst,sport,dport,proto',
      '--hmark-mod', `${tb.targets.length}`, '--hmark-offset', `${tb.targets[0].fwmark}`, '--hmark-rnd', '0x6e66716c',
    ]);
  };
  if (hmarkBeds.has(tb)) {
    hmark(tb.vip4, '-D');
    hmark(tb.vip6, '-D');
    hmarkBeds.delete(tb);
  }
  if (how === 'hmark') {
    hmark(tb.vip4, '-A');
    hmark(tb.vip6, '-A');
    hmarkBeds.add(tb);
    return;
  }
  tb.queueRules.push(installQueueRule(tb.lb, tb.vip4, first, last));
  tb.queueRules.push(installQueueRule(tb.lb, tb.vip6, first, last));
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

// ---------------------------------------------------------------------------
// Part 4: the helper programs (node testbed/dist/testbed/testbed.js <command> --opt=value ...)

function options(argv: string[]): Record<string, string> {
  const o: Record<string, string> = {};
  for (const a of argv) {
    const m = /^--([a-z-]+)(?:=(.*))?$/.exec(a);
    if (m !== null) o[m[1]] = m[2] ?? 'true';
  }
  return o;
}

/** "20000-20003,35000" -> [20000, 20001, 20002, 20003, 35000] */
function portList(text: string): number[] {
  const out: number[] = [];
  for (const part of text.split(',')) {
    if (part === '') continue;
    const [a, b] = part.split('-').map(Number);
    for (let p = a; p <= (b ?? a); p++) out.push(p);
  }
  return out;
}

/** server NAME PORT: answers every connection with NAME\n and closes (server closes first: no TIME_WAIT at the client). */
function serverMain(name: string, port: number): void {
  const server = net.createServer((sock) => {
    sock.on('error', () => sock.destroy());
    sock.end(`${name}\n`);
  });
  server.listen({ host: '::', port, ipv6Only: false }, () => process.stdout.write(`listening ${name} ${port}\n`));
  process.on('SIGTERM', () => process.exit(0));
}

function connectOnce(dst: string, port: number, src: string | undefined, sport: number, timeoutMs: number): Promise<ConnectResult> {
  return new Promise((resolve) => {
    let data = '';
    let done = false;
    const sock = net.connect({ host: dst, port, localAddress: src, localPort: sport });
    const finish = (target: string | null, error?: string): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      resolve(error === undefined ? { sport, target } : { sport, target, error });
    };
    const timer = setTimeout(() => finish(null, 'timeout'), timeoutMs);
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => {
      data += d;
    });
    sock.on('end', () => {
      const name = data.trim();
      finish(name === '' ? null : name, name === '' ? 'empty' : undefined);
    });
    sock.on('error', (e: NodeJS.ErrnoException) => finish(null, e.code ?? e.message));
  });
}

/** client --dst --port --sports=LIST [--src] [--concurrency] [--timeout]: prints a JSON array of ConnectResult. */
async function clientMain(o: Record<string, string>): Promise<void> {
  const sports = portList(o.sports ?? '');
  const results: ConnectResult[] = new Array(sports.length);
  const concurrency = Math.max(1, Number(o.concurrency ?? 32));
  const timeoutMs = Number(o.timeout ?? 4000);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < sports.length) {
      const i = next++;
      results[i] = await connectOnce(o.dst, Number(o.port), o.src, sports[i], timeoutMs);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, sports.length) }, worker));
  process.stdout.write(JSON.stringify(results));
}

/** udp --dst --port --count [--src] [--sport]: sends count datagrams, 1 ms apart. */
async function udpMain(o: Record<string, string>): Promise<void> {
  const v6 = o.dst.includes(':');
  const sock = dgram.createSocket(v6 ? 'udp6' : 'udp4');
  await new Promise<void>((resolve) => sock.bind({ address: o.src, port: Number(o.sport ?? 0) }, () => resolve()));
  const count = Number(o.count ?? 1);
  for (let i = 0; i < count; i++) {
    await new Promise<void>((resolve, reject) => sock.send(`datagram ${i}\n`, Number(o.port), o.dst, (err) => (err ? reject(err) : resolve())));
    await sleep(1);
  }
  sock.close();
}

/**
 * raw --address=unix:NAME|tcp:H:P [--chunk=N --delay=MS] [--leave] [--wait=MS]:
 * a control-socket client that sends stdin byte for byte (in chunks of N
 * bytes, MS apart), never half-closes, and prints {"reply": hex, "text",
 * "ms", "closed", "closedAt"} once the server closes (or after --wait ms,
 * closed=false); closedAt is the wall-clock time of the close (ms).
 * --leave: close right after sending.
 */
async function rawMain(o: Record<string, string>): Promise<void> {
  const input = fs.readFileSync(0);
  const addr = o.address ?? 'unix:nfqlb';
  let where: { unix: Buffer } | { host: string; port: number };
  if (addr.startsWith('unix:')) where = { unix: Buffer.from(addr.slice(5)) };
  else {
    const m = /^tcp:(?:\[(.+)\]|([^:]+)):(\d+)$/.exec(addr);
    if (m === null) throw new Error(`bad address ${addr}`);
    where = { host: m[1] ?? m[2], port: Number(m[3]) };
  }
  const chunk = Number(o.chunk ?? input.length) || 1;
  const delay = Number(o.delay ?? 0);
  const waitMs = Number(o.wait ?? 15000);
  const t0 = Date.now();
  // Connected as nfqlb does (unpadded abstract name; src/addon/sockets.ts, loaded from
  // the compiled dist/ beside the native addon); a full listen backlog (EAGAIN)
  // is retried for up to 5 s, never the request.
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const { connectTo } = require(path.join(ROOT, 'dist', 'addon', 'sockets.js')) as typeof import('../src/addon/sockets');
  const sock = await connectTo(where, 5000);
  const chunks: Buffer[] = [];
  sock.on('data', (d: Buffer) => chunks.push(d));
  let closedAt = 0;
  const closed = new Promise<boolean>((resolve) => {
    sock.on('close', () => {
      closedAt = Date.now();
      resolve(true);
    });
    sock.on('error', () => undefined);
    setTimeout(() => resolve(false), waitMs).unref();
  });
  for (let off = 0; off < input.length; off += chunk) {
    sock.write(input.subarray(off, off + chunk));
    if (delay > 0) await sleep(delay);
  }
  if (o.leave === 'true') {
    sock.destroy();
    process.stdout.write(JSON.stringify({ left: true }));
    return;
  }
  const wasClosed = await closed;
  const reply = Buffer.concat(chunks);
  process.stdout.write(JSON.stringify({ reply: reply.toString('hex'), text: reply.toString('latin1'), ms: Date.now() - t0, closed: wasClosed, closedAt }));
  sock.destroy();
}

async function main(argv: string[]): Promise<void> {
  const [cmd, ...rest] = argv;
  const o = options(rest);
  switch (cmd) {
    case 'server':
      serverMain(rest[0], Number(rest[1] ?? 4000));
      return;
    case 'client':
      return clientMain(o);
    case 'udp':
      return udpMain(o);
    case 'raw':
      return rawMain(o);
    default:
      process.stderr.write('usage: testbed.js server NAME PORT | client --dst --port --sports | udp --dst --port --count | raw --address\n');
      process.exitCode = 2;
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).catch((err: Error) => {
    process.stderr.write(`testbed: ${err.message}\n`);
    process.exitCode = 1;
  });
}
