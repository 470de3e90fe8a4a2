/**
 * When the flow index builds (buildschedule.ts), with jest's fake timers so
 * the clock is the test's: after the current turn (the last list of the
 * turn, once), REBUILD_AFTER_MS after a change (once however many changes),
 * never when cancelled or when a build is pending.
 */
import { BuildSchedule, REBUILD_AFTER_MS } from '../../../src/flows/buildschedule';

describe('BuildSchedule', () => {
  let built: string[];
  let current: string | null;
  let s: BuildSchedule<string>;
  beforeEach(() => {
    jest.useFakeTimers();
    built = [];
    current = 'current';
    s = new BuildSchedule<string>((l) => built.push(l), () => current);
  });
  afterEach(() => {
    jest.useRealTimers();
  });

  test('afterTurn builds once, the last list given in the turn', () => {
    s.afterTurn('a');
    s.afterTurn('b');
    expect(s.pendingList).toBe('b');
    expect(built).toEqual([]);
    jest.runOnlyPendingTimers(); // setImmediate
    expect(built).toEqual(['b']);
    expect(s.pendingList).toBeNull();
  });

  test('takePending: the caller builds now, the turn\'s end builds nothing', () => {
    s.afterTurn('a');
    expect(s.takePending()).toBe('a');
    expect(s.takePending()).toBeNull();
    jest.runOnlyPendingTimers();
    expect(built).toEqual([]);
  });

  test('rebuildLater builds the current list REBUILD_AFTER_MS later, once for several calls', () => {
    s.rebuildLater();
    jest.advanceTimersByTime(REBUILD_AFTER_MS / 2);
    s.rebuildLater();
    jest.advanceTimersByTime(REBUILD_AFTER_MS / 2 - 1);
    expect(built).toEqual([]);
    current = 'later';
    jest.advanceTimersByTime(1);
    expect(built).toEqual(['later']);
    jest.advanceTimersByTime(10 * REBUILD_AFTER_MS);
    expect(built).toEqual(['later']);
    // Due again after a new change.
    s.rebuildLater();
    jest.advanceTimersByTime(REBUILD_AFTER_MS);
    expect(built).toEqual(['later', 'later']);
  });

  test('a cancelled rebuild does not happen; nor one without a list', () => {
    s.rebuildLater();
    s.cancelRebuild();
    jest.advanceTimersByTime(2 * REBUILD_AFTER_MS);
    expect(built).toEqual([]);
    current = null;
    s.rebuildLater();
    jest.advanceTimersByTime(REBUILD_AFTER_MS);
    expect(built).toEqual([]);
  });

  test('a rebuild whose time comes while a build waits for the end of the turn leaves it to that build', () => {
    // The turn's end must not come inside advanceTimersByTime here: setImmediate stays real.
    jest.useFakeTimers({ doNotFake: ['setImmediate'] });
    s.rebuildLater();
    s.afterTurn('pending');
    jest.advanceTimersByTime(REBUILD_AFTER_MS);
    expect(built).toEqual([]);
    expect(s.takePending()).toBe('pending');
  });

  test('the rebuild timer does not keep the process alive', () => {
    jest.useRealTimers();
    const real = new BuildSchedule<string>(() => undefined, () => 'x');
    const spy = jest.spyOn(global, 'setTimeout');
    real.rebuildLater();
    const timer = spy.mock.results[0].value as NodeJS.Timeout;
    expect(timer.hasRef()).toBe(false);
    real.cancelRebuild();
    spy.mockRestore();
  });
});
