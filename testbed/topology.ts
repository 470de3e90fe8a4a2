/**
 * The seed's traffic path (class Testbed):
 *
 *     gw ──── lb ──┬── t1   (VIPs on lo, TCP server on :4000 answering "t1")
 *                  ├── t2
 *                  ├── t3
 *                  └── t4
 *
 * gw (the client) routes the VIPs to lb. lb sends packets for the VIPs to
 * NFQUEUE (`--queue-balance 0:3`); the daemon marks them with the target's
 * fwmark and one `ip rule fwmark F table F` + default route via the target
 * per target (IPv4 and IPv6) forwards them. Targets answer from the VIP and
 * route back through lb to gw. Also what the tests read from its TCP
 * connections (distribution, targets kept).
 */
import { ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import { DaemonProcess, nfqlb } from './daemon';
import { addAddress, addFwmarkRule, addNeighbour, addRoute, addVethPair, createNetns, macOf, nsExec, sysctl, type RunResult } from './netns';
import { cleanupAll, registerShm, spawnInNs, TESTBED_JS } from './processes';
import { installQueueRule, queueRuleCount, type QueueRule } from './rules';

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
