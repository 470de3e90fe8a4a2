/**
 * Logging (src/base/log.ts): nfqlb's levels 0-7 map onto pino's own levels (5,
 * notice, is the default, and is pino's info), out-of-range levels are
 * clamped, and a logger writes one JSON line per call with nfqlb's name, the
 * pid and an ISO time, dropping what is below its level. Only pino's level
 * numbers appear, so pino-pretty and log pipelines name every line.
 */
import { createLogger, DEFAULT_LOGLEVEL, pinoLevel, type Logger } from '../../../src/base/log';
import { settle } from '../../helpers/wait';

function memory(): { dest: { write(s: string): void }; lines: () => Array<Record<string, unknown>> } {
  let text = '';
  return {
    dest: { write: (s: string) => { text += s; } },
    lines: () => text.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, unknown>),
  };
}

describe('levels', () => {
  it('maps nfqlb 0-7 onto pino and clamps the rest', () => {
    expect([0, 1, 2, 3, 4, 5, 6, 7].map(pinoLevel)).toEqual(['fatal', 'fatal', 'fatal', 'error', 'warn', 'info', 'info', 'debug']);
    expect([-3, 8, 100, 5.9].map(pinoLevel)).toEqual(['fatal', 'debug', 'debug', 'info']);
    expect(DEFAULT_LOGLEVEL).toBe(5);
  });
});

describe('createLogger', () => {
  it('writes one JSON line per call at or above its level, with name, pid, time and the fields', async () => {
    const m = memory();
    const log = createLogger(5, m.dest as unknown as Parameters<typeof createLogger>[1]);
    log.debug('below notice: dropped');
    log.notice({ flow: 'x' }, 'flow-set');
    log.warn('a warning');
    log.error('an error');
    await settle();
    const lines = m.lines();
    expect(lines.map((l) => [l.level, l.msg])).toEqual([[30, 'flow-set'], [40, 'a warning'], [50, 'an error']]);
    expect(lines[0]).toMatchObject({ name: 'nfqlb', pid: process.pid, flow: 'x' });
    expect(String(lines[0].time)).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  });

  it('follows a level changed at run time (nfqlb loglevel)', async () => {
    const m = memory();
    const log = createLogger(4, m.dest as unknown as Parameters<typeof createLogger>[1]);
    log.notice('dropped at 4');
    log.level = pinoLevel(7);
    log.debug('kept at 7');
    log.notice('notice kept at 7');
    log.level = pinoLevel(4);
    log.notice('dropped at 4 again');
    (log.child({ c: 1 }) as Logger).notice('dropped by a child at 4');
    await settle();
    expect(m.lines().map((l) => [l.level, l.msg])).toEqual([[20, 'kept at 7'], [30, 'notice kept at 7']]);
  });

  it('uses only pino\'s own level numbers, whatever is called', async () => {
    const m = memory();
    const log = createLogger(7, m.dest as unknown as Parameters<typeof createLogger>[1]);
    log.debug('d');
    log.info('i');
    log.notice('n');
    log.warn('w');
    log.error('e');
    log.fatal('f');
    await settle();
    expect(m.lines().map((l) => l.level)).toEqual([20, 30, 30, 40, 50, 60]);
  });
});
