/**
 * Network namespaces for end-to-end tests (root only).
 *
 * Everything is created inside namespaces named `nfqlbts-<pid>-<n>-<tag>` and
 * registered, so `cleanupAll()` (call it from afterAll) kills the processes and
 * deletes the namespaces even when a test failed halfway. Every command that
 * changes network configuration runs with `ip -n <ns>` or `ip netns exec <ns>`
 * and refuses a namespace that this process did not create: nothing is ever
 * added to the root namespace. Use documentation addresses only
 * (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32).
 */
import { ChildProcess, spawn, spawnSync, SpawnOptions } from 'node:child_process';
import * as fs from 'node:fs';

export const NS_PREFIX = `nfqlbts-${process.pid}-`;

const namespaces = new Set<string>();
const processes = new Set<ChildProcess>();
let counter = 0;

export interface RunResult {
  status: number;
  stdout: string;
  stderr: string;
}

/** Runs a command synchronously; throws with its output unless allowFail. */
export function run(cmd: string, args: string[], opts: { allowFail?: boolean; input?: string } = {}): RunResult {
  const r = spawnSync(cmd, args, { encoding: 'utf8', input: opts.input, timeout: 30000 });
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

/** Creates a namespace with lo up; returns its name. */
export function createNetns(tag: string): string {
  const name = `${NS_PREFIX}${++counter}-${tag}`.slice(0, 60);
  run('ip', ['netns', 'add', name]);
  namespaces.add(name);
  run('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
  // No duplicate address detection: IPv6 addresses are usable at once.
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
export function nsExec(ns: string, cmd: string, args: string[], opts: { allowFail?: boolean; input?: string } = {}): RunResult {
  return run('ip', ['netns', 'exec', own(ns), cmd, ...args], opts);
}

/** `ip -n <ns> args...` */
export function ipn(ns: string, ...args: string[]): RunResult {
  return run('ip', ['-n', own(ns), ...args]);
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

export function addRoute(ns: string, dst: string, via: string): void {
  ipn(ns, ...(dst.includes(':') ? ['-6'] : []), 'route', 'add', dst, 'via', via);
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
}

/**
 * Sends packets to `vip` arriving in `ns` (prerouting) to NFQUEUE queue `first`
 * (or balanced over first..last). Tries an nftables `queue` rule first and falls
 * back to the xtables NFQUEUE target through iptables-nft, because some kernels
 * (this one) lack the nft queue expression.
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
  if (nsExec(ns, 'nft', ['-f', '-'], { allowFail: true, input: nft }).status === 0) return { backend: 'nft' };
  nsExec(ns, 'nft', ['delete', 'table', 'inet', table], { allowFail: true });
  const target =
    last === first ? ['--queue-num', `${first}`] : ['--queue-balance', `${first}:${last}`];
  nsExec(ns, v6 ? 'ip6tables' : 'iptables', [
    '-t', 'mangle', '-A', 'PREROUTING', '-d', vip, '-j', 'NFQUEUE', ...target,
    ...(opts.bypass ? ['--queue-bypass'] : []),
  ]);
  return { backend: 'iptables' };
}

/** Adds a counting-only rule to mangle INPUT for packets to `dst` carrying `mark`. */
export function addMarkCounter(ns: string, dst: string, mark: number): void {
  nsExec(ns, dst.includes(':') ? 'ip6tables' : 'iptables', [
    '-t', 'mangle', '-A', 'INPUT', '-d', dst, '-m', 'mark', '--mark', `${mark}`,
  ]);
}

/** Packet counters of the addMarkCounter rules: one entry per rule. */
export function markCounters(ns: string, v6 = false): Array<{ dst: string; mark: number; packets: number }> {
  const out = nsExec(ns, v6 ? 'ip6tables-save' : 'iptables-save', ['-c', '-t', 'mangle']).stdout;
  const rules: Array<{ dst: string; mark: number; packets: number }> = [];
  for (const line of out.split('\n')) {
    const m = /^\[(\d+):\d+\] -A INPUT -d ([^/\s]+)(?:\/\d+)? -m mark --mark (0x[0-9a-f]+|\d+)/.exec(line);
    if (m) rules.push({ dst: m[2], mark: Number(m[3]), packets: Number(m[1]) });
  }
  return rules;
}

/** Packets counted by the addMarkCounter(ns, dst, mark) rule (0 when absent). */
export function markCount(ns: string, dst: string, mark: number): number {
  const rule = markCounters(ns, dst.includes(':')).find((r) => r.dst === dst && r.mark === mark);
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

/** Kills every registered process and deletes every namespace this process made. */
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
}

function listTestNamespaces(): string[] {
  const out = run('ip', ['netns', 'list'], { allowFail: true }).stdout;
  return out
    .split('\n')
    .map((l) => l.split(' ')[0])
    .filter((n) => /^nfqlbts-\d+-/.test(n));
}
