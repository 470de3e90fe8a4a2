/**
 * No loss on change: while trafgen sends 50k UDP packets a second (evenly
 * paced) through the
 * daemon (gateway → LB → 4 targets, real namespaces), target t4 is
 * deactivated and activated again 100 times a second on the table in use;
 * the 3 other targets stay active, so the set never empties. Every packet
 * must reach a target: the daemon counts no `no_target`, no `invalid` and no
 * DROP verdict, the targets count what the LB was offered, and the kernel
 * drops nothing from the queues.
 *
 * The table changes go through src/addon/shm.ts, the code behind `nfqlb
 * activate/deactivate` (starting a Node.js CLI 100 times a second does not fit
 * on a small machine). The queues are long (--qlength=16384) so that a
 * scheduling hiccup of the machine cannot overflow them: what is tested is the
 * table, not the CPU. The same measurement, longer, is a line of
 * `npm run bench`. Needs root, trafgen and the compiled dist/; skipped
 * otherwise.
 */
import { spawnSync } from 'node:child_process';
import { closeTable, openTable } from '../../src/tables/tablefile';
import {
  addLoadCounters,
  canUseNetns,
  cleanupAll,
  frameBytes,
  loadCounts,
  loadDelta,
  LOAD_PORT,
  macOf,
  metricSum,
  queueDrops,
  runTrafgen,
  scrapeMetrics,
  sleep,
  Testbed,
  trafgenConfig,
  uniqueShmName,
} from '../../testbed/testbed';
import { describeUnless, e2eUnavailable } from '../helpers/skip';

const haveTrafgen = spawnSync('sh', ['-c', 'command -v trafgen']).status === 0;
const describeNs = describeUnless(e2eUnavailable() ?? (haveTrafgen ? null : 'need trafgen (netsniff-ng; scripts/setup.sh installs it)'));
jest.setTimeout(120000);

const METRICS_PORT = 19757;
const RATE = 50000;
const SECONDS = 5;
const CHANGES_PER_SECOND = 100;

describeNs('activate/deactivate under load (50k pps, 100 changes/s)', () => {
  let tb: Testbed;
  let shm: string;

  beforeAll(async () => {
    tb = Testbed.build();
    addLoadCounters(tb);
    shm = uniqueShmName('churn');
    tb.initTable(shm);
    await tb.startDaemon(['flowlb', '--queue=0:3', '--qlength=16384', `--metrics_address=127.0.0.1:${METRICS_PORT}`]);
    tb.nfqlbOk(['flow-set', '--name=churn-udp', `--target=${shm}`, '--prio=1', '--protocols=udp', `--dsts=${tb.vip4}/32,${tb.vip6}/128`, `--dports=${LOAD_PORT}`]);
  });

  afterAll(async () => {
    await tb?.destroy();
    await cleanupAll();
  });

  it('loses no packet while one of four targets flaps', async () => {
    const config = trafgenConfig({ family: 4, dstMac: macOf(tb.lb, 'gw0'), sources: 'many' });
    const steady = { frameBytes: frameBytes({ family: 4 }) };
    // Warm-up (JIT) outside the measurement.
    await runTrafgen(tb.gw, 'lb0', config, { count: RATE, rate: RATE, steady });
    await sleep(300);

    const metrics = (): string => {
      const text = scrapeMetrics(tb.lb, METRICS_PORT);
      if (text === null) throw new Error('the daemon does not serve metrics');
      return text;
    };
    const before = metrics();
    const c0 = loadCounts(tb, 4);
    const q0 = queueDrops(tb.lb);

    const t4 = tb.targets[3];
    const table = openTable(shm, true);
    let changes = 0;
    let stop = false;
    const churn = (async () => {
      const t0 = Date.now();
      while (!stop) {
        if (changes % 2 === 0) table.deactivateIndex(t4.id - 1);
        else table.activateIndex(t4.id - 1, t4.fwmark);
        changes++;
        await sleep(Math.max(0, t0 + (changes * 1000) / CHANGES_PER_SECOND - Date.now()));
      }
    })();
    let sent;
    try {
      sent = await runTrafgen(tb.gw, 'lb0', config, { count: RATE * SECONDS, rate: RATE, steady });
    } finally {
      stop = true;
      await churn;
      table.activateIndex(t4.id - 1, t4.fwmark);
      closeTable(table);
    }
    await sleep(500);

    const c = loadDelta(c0, loadCounts(tb, 4));
    const q1 = queueDrops(tb.lb);
    const after = metrics();
    const delta = (metric: string, labels: Record<string, string>): number => metricSum(after, metric, labels) - metricSum(before, metric, labels);
    const summary = {
      sent: sent.sent,
      offered: c.offered,
      delivered: c.delivered,
      perTarget: c.perTarget,
      changes,
      noTarget: delta('nfqlb_decisions_total', { reason: 'no_target' }),
      invalid: delta('nfqlb_decisions_total', { reason: 'invalid' }),
      dropVerdicts: delta('nfqlb_packets_total', { verdict: 'drop' }),
      queueDropped: q1.queueDropped - q0.queueDropped,
      userDropped: q1.userDropped - q0.userDropped,
    };

    // The churn really happened, at about the rate asked for, and t4 took part.
    expect(changes).toBeGreaterThanOrEqual(CHANGES_PER_SECOND * SECONDS * 0.8);
    expect(c.perTarget[t4.name]).toBeGreaterThan(0);
    for (const t of tb.targets.slice(0, 3)) expect(c.perTarget[t.name]).toBeGreaterThan(0);
    // Nothing lost, by any count.
    expect(summary).toMatchObject({ offered: RATE * SECONDS, noTarget: 0, invalid: 0, dropVerdicts: 0, queueDropped: 0, userDropped: 0 });
    expect(c.delivered).toBe(c.offered);
  });
});
