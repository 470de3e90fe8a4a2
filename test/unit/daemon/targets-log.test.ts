/**
 * The log lines of a table losing its last active target and getting one back
 * (Daemon.checkActiveTargets, called every table check): one warn line at the
 * loss, one info line when a target is back, none for a new table that has no
 * target yet, and at most one line per table and kind per
 * TARGETS_LOG_INTERVAL_MS while it flaps, with a count and the state at
 * writing. A Daemon with no queues (no root needed) and a table in /dev/shm
 * under a private name.
 */
import { Daemon, type DaemonOptions } from '../../../src/daemon/daemon';
import { createLogger } from '../../../src/base/log';
import { createTable, deleteTable } from '../../../src/tables/tablefile';
import { settle } from '../../helpers/wait';

const PREFIX = `nfqlbts-${process.pid}-${Math.random().toString(36).slice(2, 8)}-tlog`;
const TABLE = `${PREFIX}-t`;
const NEW_TABLE = `${PREFIX}-new`;

let text = '';
const log = createLogger(7, { write: (s: string) => void (text += s) } as unknown as Parameters<typeof createLogger>[1]);
const lines = (): Array<Record<string, unknown>> => text.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, unknown>);
const about = (msgStart: string): Array<Record<string, unknown>> => lines().filter((l) => String(l.msg).startsWith(msgStart));

function options(): DaemonOptions {
  return {
    mode: 'flowlb', queues: [], qlength: 1, mtu: 1500, batchSize: 1, failOpen: false, promiscuousPing: false,
    pipeline: {}, flowAddress: `unix:${PREFIX}-ctl`, traceAddress: `unix:${PREFIX}-tr`, metricsAddress: null, tableCheckMs: 0,
  };
}

let daemon: Daemon;
beforeAll(async () => {
  createTable(TABLE, 997, 8, 0).activate([101, 102]);
  createTable(NEW_TABLE, 997, 8, 0);
  daemon = new Daemon(options(), log);
  await daemon.start();
  for (const [name, target] of [['f', TABLE], ['g', NEW_TABLE]]) {
    const reply = await daemon.handleControl({ action: 'set', name, target, protocols: 'udp' } as Parameters<Daemon['handleControl']>[0]);
    expect(reply).toEqual({ text: 'OK' });
  }
});
afterAll(async () => {
  await daemon?.stop();
  deleteTable(TABLE);
  deleteTable(NEW_TABLE);
});

it('says nothing of a new table without targets; warns once at a loss, tells when a target is back, holds back a flapping table', async () => {
  // The daemon's own copy of the table follows the file: write through another mapping, as nfqlb activate does.
  const { openTable } = await import('../../../src/tables/tablefile');
  const writer = openTable(TABLE, true);
  daemon.checkActiveTargets();
  await settle();
  expect(about('table has no active target')).toEqual([]);
  expect(about('table has active targets')).toHaveLength(1); // the first sight of TABLE, at debug
  expect(about('table has active targets')[0]).toMatchObject({ level: 20, target: TABLE, activeTargets: 2 });

  writer.deactivateIndex(0);
  writer.deactivateIndex(1);
  daemon.checkActiveTargets();
  await settle();
  const lost = about('table has no active target');
  expect(lost).toHaveLength(1);
  expect(lost[0]).toMatchObject({ level: 40, target: TABLE, times: 1, now: 'no_target' });

  writer.activateIndex(0, 101);
  daemon.checkActiveTargets();
  await settle();
  const back = about('table has active targets again');
  expect(back).toHaveLength(1);
  expect(back[0]).toMatchObject({ level: 30, target: TABLE, activeTargets: 1, now: 'active' });

  // Flapping within the interval: counted, not written.
  for (let i = 0; i < 5; i++) {
    writer.deactivateIndex(0);
    daemon.checkActiveTargets();
    writer.activateIndex(0, 101);
    daemon.checkActiveTargets();
  }
  await settle();
  expect(about('table has no active target')).toHaveLength(1);
  expect(about('table has active targets again')).toHaveLength(1);
  // NEW_TABLE never had a target: no line about its targets at all.
  expect(lines().filter((l) => l.target === NEW_TABLE && String(l.msg).startsWith('table has'))).toEqual([]);
});
