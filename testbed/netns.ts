/**
 * Network namespaces and links: everything the test bed makes is inside
 * namespaces named `<prefix><n>-<tag>` and registered, so cleanupAll()
 * deletes them even when a test failed halfway. The prefix is
 * `nfqlbts-<pid>-<random>-` (or $NFQLB_TESTBED_PREFIX, which must also start
 * with `nfqlbts-<pid>-`). Every command that changes network configuration
 * runs with `ip -n <ns>` or `ip netns exec <ns>` and refuses a namespace this
 * process did not create: nothing is ever added to the root namespace.
 * Documentation addresses only (192.0.2.0/24, 198.51.100.0/24,
 * 203.0.113.0/24, 2001:db8::/32).
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';

function defaultPrefix(): string {
  const env = process.env.NFQLB_TESTBED_PREFIX;
  if (env !== undefined && /^nfqlbts-\d+-[a-z0-9-]*$/.test(env)) return env.endsWith('-') ? env : `${env}-`;
  return `nfqlbts-${process.pid}-${Math.random().toString(36).slice(2, 6)}-`;
}

export const NS_PREFIX = defaultPrefix();

const namespaces = new Set<string>();
let counter = 0;

/** A number no other namespace or rule of this process has had (names of namespaces and nft tables). */
export function nextId(): number {
  return ++counter;
}

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

/** The namespace, when this process created it; throws otherwise (nothing outside the test bed is touched). */
export function own(ns: string): string {
  if (!ns.startsWith(NS_PREFIX) || !namespaces.has(ns)) {
    throw new Error(`refusing to touch namespace '${ns}': not created by this test process`);
  }
  return ns;
}

/** Creates a namespace with lo up and no IPv6 duplicate address detection; returns its name. */
export function createNetns(tag: string): string {
  const name = `${NS_PREFIX}${nextId()}-${tag}`.slice(0, 60);
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

/** Deletes every namespace this process made, and the leftovers of test processes that died. */
export function deleteAllNetns(): void {
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

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
