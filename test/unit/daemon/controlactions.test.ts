/**
 * Control actions: replies, counts by action and result, what is kept in the
 * flows file (only what succeeded), what the packet threads are handed and
 * when a change they did not take becomes FAIL, the quiet replay of a
 * restore, refusals counted by bounded reason.
 */
import { createLogger } from '../../../src/base/log';
import { RateLimitedLog } from '../../../src/base/ratelog';
import { FlowSet } from '../../../src/flows/flowset';
import { MaglevTable } from '../../../src/tables/maglev';
import { Target, TargetRegistry } from '../../../src/tables/targets';
import type { ServedTable } from '../../../src/tables/servedtable';
import type { ControlRequest } from '../../../src/services/control';
import { ConnTables } from '../../../src/daemon/conntables';
import { ControlActions, refusalReason, type ControlContext } from '../../../src/daemon/controlactions';
import type { PacketThreads } from '../../../src/daemon/packetthreads';
import type { FlowOp } from '../../../src/daemon/threadmessages';

let text = '';
const log = createLogger(7, { write: (s: string) => void (text += s) } as unknown as Parameters<typeof createLogger>[1]);
const msgs = (): string[] => text.split('\n').filter((l) => l !== '').map((l) => (JSON.parse(l) as { msg: string }).msg);

interface Setup {
  actions: ControlActions;
  persisted: ControlRequest[];
  checks: number[];
  noted: string[];
  changes: FlowOp[] | null;
  setThreads(t: Partial<PacketThreads> | null): void;
}

function setup(threaded = false): Setup {
  const tables = new Map([['t1', MaglevTable.create(97, 4, 0, 't1')]]);
  const targets = new TargetRegistry<ServedTable>({ open: (n) => (tables.get(n) as unknown as ServedTable) ?? null, close: () => undefined });
  const persisted: ControlRequest[] = [];
  const checks: number[] = [];
  const noted: string[] = [];
  const failures = new RateLimitedLog((key) => noted.push(key));
  let threads: PacketThreads | null = null;
  const changes = threaded ? [] : null;
  const c: ControlContext = {
    flows: new FlowSet<Target<ServedTable>>({ targetName: (t) => t.name }),
    traceFlows: new FlowSet<string>({ promiscuousPing: true }),
    targets,
    log,
    failures,
    conntrack: new ConnTables(undefined, 1, false),
    changes,
    tracer: () => null,
    threads: () => threads,
    refreshFromThreads: async () => undefined,
    checkActiveTargets: () => void checks.push(1),
    persist: (req) => void persisted.push(req),
  };
  return { actions: new ControlActions(c), persisted, checks, noted, changes, setThreads: (t) => (threads = t as PacketThreads) };
}

beforeEach(() => (text = ''));

describe('ControlActions', () => {
  it('answers set/list/delete, counts each by action and result, keeps only what succeeded', () => {
    const s = setup();
    expect(s.actions.handle({ action: 'set', name: 'f', target: 't1', protocols: 'tcp' })).toEqual({ text: 'OK' });
    expect(s.actions.handle({ action: 'set', name: 'g', target: 'nope' })).toEqual({ text: "FAIL: Couldn't create load-balancer" });
    expect(s.actions.handle({ action: 'list-names' })).toEqual({ json: expect.stringContaining('"f"') });
    expect(s.actions.handle({ action: 'delete', name: 'f' })).toEqual({ text: 'OK' });
    expect(s.actions.handle({ action: 'frobnicate' })).toEqual({ text: 'FAIL: action unknown' });
    expect(s.actions.handle({})).toEqual({ text: 'FAIL: no action' });
    expect(s.actions.requests.entries().map((e) => [e.action, e.result, e.count])).toEqual([
      ['set', 'ok', 1], ['set', 'fail', 1], ['list-names', 'ok', 1], ['delete', 'ok', 1], ['unknown', 'fail', 1], ['none', 'fail', 1],
    ]);
    expect(s.persisted.map((r) => [r.action, r.name])).toEqual([['set', 'f'], ['list-names', undefined], ['delete', 'f']]);
    expect(s.checks).toHaveLength(1);
    expect(msgs().filter((m) => m !== 'control request')).toEqual(['flow-set', 'flow-delete']);
    // Failed requests are failure lines (rate-limited), not lines of their own.
    expect(s.noted).toEqual(['failed:flow-set', 'failed:control request (unknown)', 'failed:control request (none)']);
  });

  it('replays a restore quietly: no flow-set line, no target check', () => {
    const s = setup();
    s.actions.restoring = true;
    expect(s.actions.reply({ action: 'set', name: 'f', target: 't1' })).toEqual({ text: 'OK' });
    expect(msgs()).toEqual([]);
    expect(s.checks).toEqual([]);
    expect(s.persisted).toEqual([]);
  });

  it('with packet threads: hands them each accepted change and answers FAIL when one did not take it (kept in the file all the same)', async () => {
    const s = setup(true);
    // Before the threads start the changes are their initial set.
    expect(s.actions.handle({ action: 'set', name: 'f', target: 't1' })).toEqual({ text: 'OK' });
    expect(s.changes!.map((o) => o.op)).toEqual(['set']);
    s.changes!.splice(0);
    const handed: FlowOp[][] = [];
    let why: string | null = null;
    s.setThreads({ change: async (ops: FlowOp[]) => (handed.push(ops), why), failures: [] });
    await expect(s.actions.handle({ action: 'trace-set', name: 'tf', protocols: 'udp' })).resolves.toEqual({ text: 'OK' });
    why = 'thread 1 did not answer';
    await expect(s.actions.handle({ action: 'delete', name: 'f' })).resolves.toEqual({ text: 'FAIL: thread 1 did not answer' });
    await expect(s.actions.handle({ action: 'list' })).resolves.toEqual({ json: expect.any(String) });
    expect(handed.map((ops) => ops.map((o) => o.op))).toEqual([['trace-set'], ['delete']]);
    expect(s.persisted.map((r) => r.action)).toEqual(['set', 'trace-set', 'delete', 'list']);
    expect(msgs()).toContain('flow change not taken by every packet thread');
  });

  it('conntrack without --conntrack says how to get it', () => {
    expect(setup().actions.handle({ action: 'conntrack' })).toEqual({ text: 'FAIL: no connection table (start the daemon with --conntrack=N)' });
  });

  it('counts refusals by bounded reason', () => {
    const s = setup();
    s.actions.noteRefused('timeout after 3000 ms');
    s.actions.noteRefused('request larger than 8192 bytes');
    s.actions.noteRefused('anything \u0001 else');
    expect(s.actions.refused.entries()).toEqual([{ key: 'timeout', count: 1 }, { key: 'too_large', count: 1 }, { key: 'other', count: 1 }]);
    expect(s.noted).toEqual(['refused:timeout', 'refused:too_large', 'refused:other']);
  });
});

describe('refusalReason', () => {
  it('maps the server\'s refusal texts onto a few labels', () => {
    expect(refusalReason('timeout: no complete request')).toBe('timeout');
    expect(refusalReason('FAIL: request larger than 16384 bytes')).toBe('too_large');
    expect(refusalReason('FAIL: line longer than 1023 bytes')).toBe('line_too_long');
    expect(refusalReason('FAIL: invalid param [\x01]')).toBe('invalid_param');
    expect(refusalReason('internal error: boom')).toBe('internal_error');
    expect(refusalReason('anything else')).toBe('other');
  });
});
