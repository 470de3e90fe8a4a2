/**
 * The failure lines: each kind of key becomes its own line at its level,
 * counts noted once a second say only what is new since the last run, and
 * queue errors are read per queue and reason.
 */
import { createLogger } from '../../../src/base/log';
import { RateLimitedLog } from '../../../src/base/ratelog';
import type { QueueStats } from '../../../src/addon/queue';
import { REASON_FRAGMENT_MISS, REASON_INVALID, REASON_NAMES, REASON_TARGET } from '../../../src/datapath/pipeline';
import { FSTORE_FIELDS, FSTORE_WRITE_ERRORS } from '../../../src/fragments/store';
import { FailureCounts, failureLines, noteFailed, queueErrors } from '../../../src/daemon/failurelog';
import { QUEUE_ERROR_FIELDS } from '../../../src/addon/queue';
import type { QueueView } from '../../../src/daemon/workers';

let text = '';
const log = createLogger(7, { write: (s: string) => void (text += s) } as unknown as Parameters<typeof createLogger>[1]);
const lines = (): Record<string, unknown>[] => text.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, unknown>);
beforeEach(() => (text = ''));

function queue(queueNum: number, stats: Partial<QueueStats>, closed = false): QueueView {
  const zero = Object.fromEntries(QUEUE_ERROR_FIELDS.map(([, f]) => [f, 0]));
  return { queueNum, portid: 100 + queueNum, closed, close: () => {}, stats: () => ({ lastErrnoName: null, ...zero, ...stats }) as QueueStats };
}

describe('failureLines', () => {
  it('writes each kind of failure as its own line', () => {
    const f = failureLines(log, '/tmp/flows');
    f.note('refused:timeout', 'timeout after 1 ms');
    f.note('failed:open-table', JSON.stringify({ target: 't', err: 'gone' }));
    f.note('failed:flow-set', JSON.stringify({ flow: 'f' }));
    f.note('flowsfile:write', 'disk full');
    f.note('packets:invalid', undefined, 3);
    f.note('queue:send', '2 (EPERM)');
    f.note('queue:enobufs', '2');
    expect(lines().map((l) => [l.level, l.msg])).toEqual([
      [40, 'control requests refused'],
      [40, 'cannot open table'],
      [40, 'flow-set failed'],
      [50, 'flows file not written'],
      [30, 'packets dropped as bad'],
      [40, 'verdicts not delivered'],
      [40, 'queue errors'],
    ]);
    expect(lines()[1]).toMatchObject({ target: 't', err: 'gone', count: 1 });
    expect(lines()[3]).toMatchObject({ flowsFile: '/tmp/flows', err: 'disk full' });
    expect(lines()[4]).toMatchObject({ reason: 'invalid', count: 3 });
  });

  it('noteFailed escapes and cuts the client\'s fields', () => {
    const f = failureLines(log, undefined);
    noteFailed(f, 'flow-set', { flow: `a\u0001${'x'.repeat(200)}`, target: undefined });
    const l = lines()[0];
    expect(l.msg).toBe('flow-set failed');
    expect(l.flow).toMatch(/^a\\x01x+/);
    expect((l.flow as string).length).toBeLessThan(100);
    expect(l).not.toHaveProperty('target');
  });
});

describe('FailureCounts', () => {
  it('notes only what is new since the last run, per reason and per queue (a closed queue is skipped)', () => {
    const got: [string, number, string | undefined][] = [];
    let now = 0;
    const counts = new FailureCounts(new RateLimitedLog((key, count, detail) => got.push([key, count, detail]), 1000, () => now));
    const reasons = new Float64Array(REASON_NAMES.length);
    const store = new Float64Array(FSTORE_FIELDS);
    let sendErrors = 0;
    const queues = [queue(4, {}), { ...queue(5, {}), stats: () => ({ ...queue(5, {}).stats(), sendErrors, lastErrnoName: 'EPERM' }) }, queue(6, { sendErrors: 9 }, true)];
    reasons[REASON_INVALID] = 2;
    reasons[REASON_TARGET] = 1000;
    sendErrors = 1;
    counts.note(reasons, store, { name: 'tun0', errno: 0 }, queues);
    now += 1000;
    reasons[REASON_INVALID] = 5;
    reasons[REASON_FRAGMENT_MISS] = 1;
    store[FSTORE_WRITE_ERRORS] = 2;
    counts.note(reasons, store, { name: 'tun0', errno: 5 }, queues);
    now += 1000;
    counts.note(reasons, store, { name: 'tun0', errno: 5 }, queues);
    expect(got).toEqual([
      ['packets:invalid', 2, undefined],
      ['queue:send', 1, '5 (EPERM)'],
      ['packets:invalid', 3, undefined],
      ['packets:fragment_miss', 1, undefined],
      ['queue:tun_write', 2, 'tun0 (EIO)'],
    ]);
  });
});

describe('queueErrors', () => {
  it('reads every reason of every queue', () => {
    const out = queueErrors([queue(1, { enobufs: 4 })]);
    expect(out.map((e) => e.reason)).toEqual(QUEUE_ERROR_FIELDS.map(([r]) => r));
    expect(out.find((e) => e.reason === 'enobufs')).toEqual({ queueNum: 1, portid: 101, reason: 'enobufs', count: 4 });
  });
});
