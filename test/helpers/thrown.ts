import { NfqlbError } from '../../src/base/errors';

/** The NfqlbError fn throws (the test fails when it throws something else, or nothing). */
export function thrown(fn: () => unknown): NfqlbError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(NfqlbError);
    return err as NfqlbError;
  }
  throw new Error('nothing was thrown');
}

/** thrown() for a function that may also reject. */
export async function thrownAsync(fn: () => unknown): Promise<NfqlbError> {
  try {
    await fn();
  } catch (err) {
    expect(err).toBeInstanceOf(NfqlbError);
    return err as NfqlbError;
  }
  throw new Error('nothing was thrown');
}
