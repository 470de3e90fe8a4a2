/**
 * The daemon's side of visible failures, without binding queues: refused
 * control requests are counted per reason and logged at most once a second
 * per reason with a count and the bytes escaped; bad packets counted by the
 * pipeline become one line per reason per run of the housekeeping; stray
 * signals are logged and ignored; an open inspector stops the start.
 */
import * as inspector from 'node:inspector';
import { Writable } from 'node:stream';
import { Daemon, type DaemonOptions } from '../../../src/daemon/daemon';
import { checkInspectorClosed, installSignalLogging } from '../../../src/daemon/processguard';
import { createLogger } from '../../../src/base/log';
import { REASON_INVALID } from '../../../src/datapath/pipeline';

function memoryLog(): { log: ReturnType<typeof createLogger>; lines: () => Array<Record<string, unknown>> } {
  const chunks: string[] = [];
  const dest = new Writable({
    write(chunk: Buffer, _enc, cb) {
      chunks.push(chunk.toString());
      cb();
    },
  });
  const log = createLogger(7, dest as unknown as Parameters<typeof createLogger>[1]);
  return {
    log,
    lines: () => chunks.join('').split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, unknown>),
  };
}

const OPTIONS: DaemonOptions = {
  mode: 'flowlb',
  queues: [],
  qlength: 1024,
  mtu: 1500,
  batchSize: 64,
  failOpen: false,
  promiscuousPing: false,
  pipeline: {},
  flowAddress: 'unix:unused',
  traceAddress: 'unix:unused',
  metricsAddress: null,
};

/** pino writes asynchronously through the stream: wait for the lines to land. */
const settle = (): Promise<void> => new Promise((r) => setImmediate(r));

describe('failed control requests', () => {
  it('are at most one warn line a second per kind, with the count and the client\'s bytes escaped and cut (review: 3,000 junk requests gave 3,000 lines of up to 2.4 KB)', async () => {
    const { log, lines } = memoryLog();
    const d = new Daemon(OPTIONS, log);
    for (let i = 0; i < 3000; i++) {
      d.handleControl({ action: 'set', name: `\u0001${'n'.repeat(2000)}${i}`, target: `no-such-table-${'t'.repeat(500)}`, protocols: 'udp' });
      d.handleControl({ action: 'delete', name: `#hidden-${i}` }); // refused: the daemon's hidden udpencap names
    }
    await settle();
    const failed = lines().filter((l) => typeof l.msg === 'string' && /failed$|cannot open table/.test(l.msg as string));
    expect(failed.map((l) => l.msg).sort()).toEqual(['cannot open table', 'flow-delete failed', 'flow-set failed']);
    for (const l of failed) {
      expect(l.level).toBe(40);
      expect(JSON.stringify(l).length).toBeLessThan(1000);
    }
    expect(String(failed.find((l) => l.msg === 'flow-set failed')!.flow)).toMatch(/^\\x01n+/);
    d.logFailures();
    await settle();
  });
});

describe('refused control requests', () => {
  it('are counted per reason and logged once per reason until the interval passed, escaped and cut', async () => {
    const { log, lines } = memoryLog();
    const d = new Daemon(OPTIONS, log);
    for (let i = 0; i < 2000; i++) d.noteRefused(`FAIL: invalid param [\x00\x01${'A'.repeat(500)}]`);
    d.noteRefused('timeout: no complete request');
    await settle();
    const refused = lines().filter((l) => l.msg === 'control requests refused');
    expect(refused.map((l) => [l.reason, l.count])).toEqual([
      ['invalid_param', 1],
      ['timeout', 1],
    ]);
    expect(refused[0].last).toMatch(/^FAIL: invalid param \[\\x00\\x01A+\.\.\.\(\+\d+ chars\)$/);
    expect((refused[0].last as string).length).toBeLessThan(120);
    expect(d.controlRefused.get('invalid_param')).toBe(2000);
    // Counted once: as refused, not also as a request.
    expect(d.controlRequests.get('invalid', 'refused')).toBe(0);
  });
});

describe('bad packets', () => {
  it('become one line per reason with the count since the last run', async () => {
    const { log, lines } = memoryLog();
    const d = new Daemon(OPTIONS, log);
    d.pipeline.reasonCounts[REASON_INVALID] += 37;
    d.logFailures();
    d.logFailures(); // nothing new
    await settle();
    expect(lines().filter((l) => l.msg === 'packets dropped as bad').map((l) => [l.reason, l.count])).toEqual([['invalid', 37]]);
  });
});

describe('signals', () => {
  it('HUP, QUIT, PIPE, USR1, USR2 are logged (rate-limited) and ignored', async () => {
    const { log, lines } = memoryLog();
    const uninstall = installSignalLogging(log);
    try {
      for (const s of ['SIGHUP', 'SIGQUIT', 'SIGPIPE', 'SIGUSR1', 'SIGUSR2', 'SIGHUP', 'SIGHUP']) process.emit(s as NodeJS.Signals, s as NodeJS.Signals);
      await settle();
      expect(lines().map((l) => [l.msg, l.signal, l.count])).toEqual([
        ['signal ignored', 'SIGHUP', 1],
        ['signal ignored', 'SIGQUIT', 1],
        ['signal ignored', 'SIGPIPE', 1],
        ['signal ignored', 'SIGUSR1', 1],
        ['signal ignored', 'SIGUSR2', 1],
      ]);
    } finally {
      uninstall();
    }
  });
});

describe('the inspector', () => {
  it('stops the start while it is open, unless NFQLB_ALLOW_INSPECTOR=1', () => {
    expect(() => checkInspectorClosed({})).not.toThrow();
    inspector.open(0, '127.0.0.1', false);
    try {
      expect(() => checkInspectorClosed({})).toThrow(/the Node\.js inspector is open \(ws:\/\/127\.0\.0\.1:\d+\/.*NFQLB_ALLOW_INSPECTOR=1/);
      expect(() => checkInspectorClosed({ NFQLB_ALLOW_INSPECTOR: '1' })).not.toThrow();
    } finally {
      inspector.close();
    }
  });
});
