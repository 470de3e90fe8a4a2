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

/** One turn of the event loop: lets queued I/O callbacks (a logger's writes) run. */
export const settle = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));
