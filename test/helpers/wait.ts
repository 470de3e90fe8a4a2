/**
 * Event waits for unit tests: poll a condition until it holds, never assert
 * how long it took (timings belong to the bench). The give-up bound only turns
 * a hang into a message naming what never happened; it is far above anything
 * a passing run needs, so a slow, shared machine does not fail a test.
 */
export const GIVE_UP_MS = 20000;

/** Resolves once `cond()` is true, polling after each turn of the event loop (and a short pause). */
export async function until(cond: () => boolean, what: string, giveUpMs = GIVE_UP_MS): Promise<void> {
  const giveUp = Date.now() + giveUpMs;
  while (!cond()) {
    if (Date.now() > giveUp) throw new Error(`gave up waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}

/** JSON for a give-up message: Maps as entry lists, bigints as text. */
function shown(v: unknown): string {
  return JSON.stringify(v, (_k, x: unknown) => (x instanceof Map ? [...x] : typeof x === 'bigint' ? String(x) : x));
}

/**
 * Reads `read()` (sync or async) every 50 ms until `done` holds for the value,
 * and returns that value; on giving up, the message shows the last one.
 */
export async function waitFor<T>(what: string, read: () => Promise<T> | T, done: (v: T) => boolean, giveUpMs = GIVE_UP_MS): Promise<T> {
  const giveUp = Date.now() + giveUpMs;
  for (;;) {
    const v = await read();
    if (done(v)) return v;
    if (Date.now() > giveUp) throw new Error(`gave up waiting for ${what}; last: ${shown(v)}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** One turn of the event loop: lets queued I/O callbacks (a logger's writes) run. */
export const settle = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));
