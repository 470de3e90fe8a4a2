/**
 * Logging (src/log.ts): nfqlb's levels 0-7 map onto pino's (5, notice, is the
 * default), out-of-range levels are clamped, and a logger writes one JSON line
 * per call with nfqlb's name, the pid and an ISO time, dropping what is below
 * its level.
 */
import { createLogger, DEFAULT_LOGLEVEL, pinoLevel } from '../../src/log';
import { settle } from '../helpers/wait';

function memory(): { dest: { write(s: string): void }; lines: () => Array<Record<string, unknown>> } {
  let text = '';
  return {
    dest: { write: (s: string) => { text += s; } },
    lines: () => text.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, unknown>),
  };
}

describe('levels', () => {
  it('maps nfqlb 0-7 onto pino and clamps the rest', () => {
    expect([0, 1, 2, 3, 4, 5, 6, 7].map(pinoLevel)).toEqual(['fatal', 'fatal', 'fatal', 'error', 'warn', 'notice', 'info', 'debug']);
    expect([-3, 8, 100, 5.9].map(pinoLevel)).toEqual(['fatal', 'debug', 'debug', 'notice']);
    expect(DEFAULT_LOGLEVEL).toBe(5);
  });
});

describe('createLogger', () => {
  it('writes one JSON line per call at or above its level, with name, pid, time and the fields', async () => {
    const m = memory();
    const log = createLogger(5, m.dest as unknown as Parameters<typeof createLogger>[1]);
    log.info('below notice: dropped');
    log.notice({ flow: 'x' }, 'flow-set');
    log.warn('a warning');
    await settle();
    const lines = m.lines();
    expect(lines.map((l) => [l.level, l.msg])).toEqual([[35, 'flow-set'], [40, 'a warning']]);
    expect(lines[0]).toMatchObject({ name: 'nfqlb', pid: process.pid, flow: 'x' });
    expect(String(lines[0].time)).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  });

  it('follows a level changed at run time (nfqlb loglevel)', async () => {
    const m = memory();
    const log = createLogger(4, m.dest as unknown as Parameters<typeof createLogger>[1]);
    log.notice('dropped at 4');
    log.level = pinoLevel(7);
    log.debug('kept at 7');
    await settle();
    expect(m.lines().map((l) => l.msg)).toEqual(['kept at 7']);
  });
});
