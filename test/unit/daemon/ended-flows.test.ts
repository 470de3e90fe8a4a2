/**
 * A flow that lived between two scrapes is still seen (issue 22): a Daemon
 * with no queues (no root needed) and a metrics server on a free port; packets
 * go through its pipeline in-process, flows are set and deleted through its
 * control handler, and the scrape after shows the flow's
 * nfqlb_flow_matches_total with every packet it matched — a flow deleted
 * before any scrape, and a flow set again under its name (its count restarts)
 * whose first life was never scraped either.
 */
import { Daemon, type DaemonOptions } from '../../../src/daemon/daemon';
import { createLogger } from '../../../src/base/log';
import type { MetricsServer } from '../../../src/services/metrics';
import { closeTable, createTable, deleteTable } from '../../../src/tables/tablefile';
import { ipv4, udp } from '../../helpers/packets';

const PREFIX = `nfqlbts-${process.pid}-${Math.random().toString(36).slice(2, 8)}-ended`;
const TABLE = `${PREFIX}-t`;

const quietLog = (): ReturnType<typeof createLogger> =>
  createLogger(0, { write: () => undefined } as unknown as Parameters<typeof createLogger>[1]);

function options(): DaemonOptions {
  return {
    mode: 'flowlb', queues: [], qlength: 1, mtu: 1500, batchSize: 1, failOpen: false, promiscuousPing: false,
    pipeline: {}, flowAddress: `unix:${PREFIX}-ctl`, traceAddress: `unix:${PREFIX}-tr`, metricsAddress: '127.0.0.1:0', tableCheckMs: 0,
  };
}

let daemon: Daemon;
let metrics: MetricsServer;
beforeAll(async () => {
  const table = createTable(TABLE, 97, 4, 0);
  table.activate([7]);
  closeTable(table);
  daemon = new Daemon(options(), quietLog());
  await daemon.start();
  metrics = (daemon as unknown as { metrics: MetricsServer }).metrics;
});
afterAll(async () => {
  await daemon?.stop();
  deleteTable(TABLE);
});

async function control(action: 'set' | 'delete', name: string, port = 5001): Promise<void> {
  const req = action === 'set' ? { action, name, target: TABLE, protocols: 'udp', dports: String(port) } : { action, name };
  expect(await daemon.handleControl(req as Parameters<Daemon['handleControl']>[0])).toEqual({ text: 'OK' });
}

/** `n` datagrams to port `port`, decided by the daemon's pipeline. */
function send(n: number, port = 5001): void {
  for (let i = 0; i < n; i++) {
    const p = ipv4('198.51.100.9', '192.0.2.1', 17, udp(4000 + i, port));
    daemon.pipeline.decide(p, 0, p.length, performance.now());
  }
}

async function matches(flow: string): Promise<number | undefined> {
  const text = await metrics.registry.metrics();
  const m = new RegExp(`^nfqlb_flow_matches_total\\{flow="${flow}",target="${TABLE}"\\} (\\d+)$`, 'm').exec(text);
  return m === null ? undefined : Number(m[1]);
}

it('shows a flow set and deleted between two scrapes, with every packet it matched', async () => {
  expect(await matches('short')).toBeUndefined();
  await control('set', 'short');
  send(5);
  await control('delete', 'short');
  expect(await matches('short')).toBe(5);
  // Gone since the previous scrape: still shown once more with its last value (the retention keeps it longer).
  expect(await matches('short')).toBe(5);
});

it('adds the never-scraped first life of a flow set again under its name to its new count', async () => {
  await control('set', 'again', 5002);
  send(3, 5002);
  await control('set', 'again', 5002); // a new flow: its count restarts at 0
  send(4, 5002);
  expect(await matches('again')).toBe(7);
  send(1, 5002);
  expect(await matches('again')).toBe(8);
});
