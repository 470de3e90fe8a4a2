/**
 * The seed's traffic path through the real daemon (testbed/testbed.ts):
 * gateway ns → LB ns (NFQUEUE --queue-balance 0:3 for the two VIPs, one
 * `ip rule fwmark` per target) → 4 target namespaces with the VIPs on lo and
 * a TCP server on :4000 that answers its name. Configured with Meridio's
 * commands. Needs root and the compiled dist/; skipped without root. Every
 * namespace, process and shm object is removed in afterAll, also on failure.
 */
import {
  canUseNetns,
  cleanupAll,
  distribution,
  formatDistribution,
  markCount,
  addMarkCounter,
  addFwmarkRule,
  ports,
  keptTargets,
  targetsByPort,
  Testbed,
  uniqueShmName,
  type ConnectResult,
  type TargetInfo,
} from '../../testbed/testbed';
import { describeUnless, e2eUnavailable } from '../helpers/skip';

const describeNs = describeUnless(e2eUnavailable());

jest.setTimeout(120000);

const log = (msg: string): void => {
  // eslint-disable-next-line no-console
  console.log(msg);
};

/** Connections of `results` per target, with every target present. */
function counts(tb: Testbed, results: ConnectResult[]): Record<string, number> {
  const d = distribution(results);
  const out: Record<string, number> = {};
  for (const t of tb.targets) out[t.name] = d.get(t.name) ?? 0;
  if (d.has('(failed)')) out['(failed)'] = d.get('(failed)') as number;
  return out;
}

interface FlowListEntry {
  name: string;
  matches_count: number;
  user_ref: string;
}

describeNs('traffic through nfqlb flowlb (gateway → LB → 4 targets)', () => {
  let tb: Testbed;
  let shm: string;
  const FLOW = 'tshm-stream-flow';
  const UDP_FLOW = 'tshm-stream-udp';
  const SPORTS = ports(20000, 400);
  const first: Record<4 | 6, Map<number, string>> = { 4: new Map(), 6: new Map() };
  const vip = (f: 4 | 6): string => (f === 4 ? tb.vip4 : tb.vip6);

  function flowList(): FlowListEntry[] {
    const r = tb.nfqlbOk(['flow-list']);
    return JSON.parse(r.stdout) as FlowListEntry[];
  }

  function matches(name: string): number {
    const f = flowList().find((e) => e.name === name);
    if (f === undefined) throw new Error(`no flow ${name}`);
    return f.matches_count;
  }

  function setFlows(): void {
    tb.setFlow(FLOW, shm);
    // A UDP flow on its own port, to count datagrams exactly.
    tb.nfqlbOk(['flow-set', `--name=${UDP_FLOW}`, `--target=${shm}`, '--prio=0', '--protocols=udp', `--dsts=${tb.vip4}/32,${tb.vip6}/128`, '--dports=5001']);
  }

  beforeAll(async () => {
    const t0 = Date.now();
    tb = Testbed.build();
    await tb.startServers();
    shm = uniqueShmName('stream');
    tb.initTable(shm);
    await tb.startDaemon();
    setFlows();
    log(`traffic: set up in ${Date.now() - t0} ms`);
  });

  afterAll(async () => {
    if (tb !== undefined) await tb.destroy();
    await cleanupAll();
  });

  it.each([4, 6] as const)('spreads 400 TCP connections to the IPv%s VIP over the 4 targets (15-35%% each)', (f) => {
    const t0 = Date.now();
    const results = tb.connect(vip(f), SPORTS);
    const ms = Date.now() - t0;
    log(`IPv${f}: 400 connections in ${ms} ms\n${formatDistribution(results, tb.targets.map((t) => t.name))}`);
    expect(results.filter((r) => r.target === null)).toEqual([]);
    const c = counts(tb, results);
    for (const t of tb.targets) {
      expect(c[t.name]).toBeGreaterThanOrEqual(0.15 * 400);
      expect(c[t.name]).toBeLessThanOrEqual(0.35 * 400);
    }
    first[f] = targetsByPort(results);
  });

  it.each([4, 6] as const)('sends source port 35000 (IPv%s) to the target `nfqlb fwmark` names', (f) => {
    const src = f === 4 ? `${tb.client4}:35000` : `[${tb.client6}]:35000`;
    const dst = f === 4 ? `${tb.vip4}:4000` : `[${tb.vip6}]:4000`;
    const r = tb.nfqlbOk(['fwmark', `--shm=${shm}`, '--proto=tcp', `--src=${src}`, `--dst=${dst}`, '--hash_mode=0']);
    const { fwmark } = JSON.parse(r.stdout) as { fwmark: number };
    const expected = tb.byFwmark(fwmark);
    expect(expected).toBeDefined();
    const [res] = tb.connect(vip(f), [35000]);
    expect(res).toEqual({ sport: 35000, target: expected?.name });
  });

  it('after deactivate a target gets no new connection and ≥95% of the others keep their target; activate brings it back', () => {
    const gone: TargetInfo = tb.targets[3];
    tb.deactivate(shm, gone);
    for (const f of [4, 6] as const) {
      const results = tb.connect(vip(f), SPORTS);
      log(`IPv${f} with ${gone.name} deactivated:\n${formatDistribution(results, tb.targets.map((t) => t.name))}`);
      expect(results.filter((r) => r.target === null)).toEqual([]);
      expect(counts(tb, results)[gone.name]).toBe(0);
      const { kept, of } = keptTargets(first[f], targetsByPort(results), gone.name);
      log(`IPv${f}: ${kept} of ${of} connections not on ${gone.name} kept their target (${((100 * kept) / of).toFixed(1)}%)`);
      expect(kept / of).toBeGreaterThanOrEqual(0.95);
    }
    tb.activate(shm, gone);
    for (const f of [4, 6] as const) {
      const results = tb.connect(vip(f), SPORTS);
      const c = counts(tb, results);
      expect(c[gone.name]).toBeGreaterThanOrEqual(0.15 * 400);
      // Same active set, same table: every port is back where it was.
      const now = targetsByPort(results);
      const same = [...first[f]].filter(([sport, name]) => now.get(sport) === name).length;
      expect(same).toBe(first[f].size);
    }
  });

  it.each([4, 6] as const)('answers ping to the IPv%s VIP (--promiscuous_ping), replies routed back through the LB', (f) => {
    expect(tb.ping(vip(f), 3)).toEqual({ sent: 3, received: 3 });
  });

  it('drops TCP that matches no flow (port 5000)', () => {
    const results = tb.connect(tb.vip4, [21000, 21001], { dport: 5000, timeoutMs: 1500 });
    expect(results.map((r) => r.error)).toEqual(['timeout', 'timeout']);
  });

  it('counts every matched packet in matches_count (UDP datagrams, and TCP packets through the queue rule counter)', () => {
    const udpBefore = matches(UDP_FLOW);
    tb.sendUdp(tb.vip4, 5001, 37);
    tb.sendUdp(tb.vip6, 5001, 13, 33001);
    // The verdicts are sent before the datagrams reach the targets; give the daemon a moment anyway.
    const deadline = Date.now() + 3000;
    while (matches(UDP_FLOW) - udpBefore < 50 && Date.now() < deadline) {
      /* poll */
    }
    expect(matches(UDP_FLOW) - udpBefore).toBe(50);

    // Only TCP to port 4000 in this window: every queued packet matches the flow.
    const queuedBefore = tb.queuedPackets();
    const tcpBefore = matches(FLOW);
    const results = [...tb.connect(tb.vip4, ports(22000, 50)), ...tb.connect(tb.vip6, ports(22000, 50))];
    expect(results.filter((r) => r.target === null)).toEqual([]);
    const queued = tb.queuedPackets() - queuedBefore;
    // The clients' last packets may still wait in the queue for a moment.
    let matched = matches(FLOW) - tcpBefore;
    for (const end = Date.now() + 3000; matched < queued && Date.now() < end; ) matched = matches(FLOW) - tcpBefore;
    log(`100 TCP connections: ${queued} packets queued, ${matched} matched the flow`);
    expect(queued).toBeGreaterThanOrEqual(100 * 4);
    expect(matched).toBe(queued);
  });

  it('with --nolb_fwmark traffic that matches no flow gets that mark instead of being dropped', async () => {
    const NOLB = 999;
    const t1 = tb.targets[0];
    // Mark 999 routes to t1 (nothing listens on :5000 there: the connection is refused, so it got there).
    addFwmarkRule(tb.lb, NOLB, t1.table);
    addMarkCounter(tb.lb, tb.vip4, NOLB, 'FORWARD');
    const stopped = await tb.stopDaemon();
    expect(stopped?.code).toBe(0);
    await tb.startDaemon(['flowlb', '--promiscuous_ping', '--queue=0:3', '--qlength=1024', '--hash_mode=0', `--nolb_fwmark=${NOLB}`]);
    setFlows(); // flows live in the daemon: set them again, as Meridio does
    const results = tb.connect(tb.vip4, [21002, 21003], { dport: 5000, timeoutMs: 3000 });
    expect(results.map((r) => r.error)).toEqual(['ECONNREFUSED', 'ECONNREFUSED']);
    expect(markCount(tb.lb, tb.vip4, NOLB, 'FORWARD')).toBeGreaterThanOrEqual(2);
    // Port 4000 still goes by the flow.
    const ok = tb.connect(tb.vip4, ports(20000, 40));
    expect(ok.filter((r) => r.target === null)).toEqual([]);
    expect(targetsByPort(ok)).toEqual(new Map([...first[4]].filter(([p]) => p < 20040)));
  });

  it('follows a table re-created with another shape (nfqlb init with other M, N while flows use it)', async () => {
    // createTable unlinks and re-creates the file; the daemon must notice and reopen it.
    tb.nfqlbOk(['init', `--shm=${shm}`, '--M=20000', '--N=50']);
    tb.activate(shm, tb.targets[0]);
    tb.activate(shm, tb.targets[1]);
    const t0 = Date.now();
    let results: ConnectResult[] = [];
    for (;;) {
      results = tb.connect(tb.vip4, ports(23000, 100), { timeoutMs: 1500 });
      const c = counts(tb, results);
      if (c.t1 + c.t2 === 100 || Date.now() - t0 > 5000) break;
    }
    log(`after re-init (M=19997, N=50; t1, t2 active), seen by the daemon within ${Date.now() - t0} ms:\n${formatDistribution(results, tb.targets.map((t) => t.name))}`);
    const c = counts(tb, results);
    expect(c.t1 + c.t2).toBe(100);
    expect(c.t1).toBeGreaterThan(20);
    expect(c.t2).toBeGreaterThan(20);
    // Let the daemon's stderr in (the connects above block the event loop).
    for (let i = 0; i < 60 && !/"msg":"table re-created; reopened"/.test(tb.daemon?.stderr ?? ''); i++) await new Promise((r) => setTimeout(r, 50));
    expect(tb.daemon?.stderr).toMatch(/"msg":"table re-created; reopened"/);
  });

  it('nfqlb lb balances over one table without flows', async () => {
    tb.initTable(shm); // back to M=10000, N=100 with all 4 targets
    await tb.startDaemon(['lb', `--tshm=${shm}`, '--queue=0:3', '--hash_mode=0']);
    expect(tb.daemon?.stdout).toMatch(/^FragTable; .*\n(queue_length=16384, mtu=1500, SO_RCVBUF=\d+ \(12288000\)\n){4}$/); // the default without --qlength (DEFAULT_QLENGTH)
    const results = tb.connect(tb.vip4, SPORTS);
    expect(results.filter((r) => r.target === null)).toEqual([]);
    // The same table and hash as flowlb: the same choices.
    expect(targetsByPort(results)).toEqual(first[4]);
    // No flows: any port is balanced (t-servers refuse :5000, so refused = delivered).
    const other = tb.connect(tb.vip4, [21004], { dport: 5000, timeoutMs: 3000 });
    expect(other[0].error).toBe('ECONNREFUSED');
    const stopped = await tb.stopDaemon();
    expect(stopped?.code).toBe(0);
  });
});
