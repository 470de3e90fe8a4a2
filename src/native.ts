/**
 * Loads the C++ addon once and hands it the error class, so errors thrown in
 * C++ are NfqlbError with a code. The addon is kept private to the modules that
 * wrap it (shm, queue); nothing else should import it.
 */
import * as path from 'node:path';
import { NfqlbError } from './errors';

export interface NativeAddon {
  setErrorClass(ctor: new (message: string, code: string, errno?: string) => Error): void;
  /** mode 0 read-only, 1 read-write, 2 create/resize to `size` (0600). */
  shmMap(name: string, mode: 0 | 1 | 2, size: number): ArrayBuffer;
  shmUnmap(buffer: ArrayBuffer): boolean;
  shmUnlink(name: string): boolean;
  /** Size in bytes, or -1 when the object does not exist. */
  shmSize(name: string): number;
  // NFQUEUE bindings are added by src/queue.ts's needs (see native/nfqueue.cc).
  [key: string]: unknown;
}

let addon: NativeAddon | undefined;

/** Returns the addon; throws NFQLB_ERR_ADDON with what to do when it is not built. */
export function native(): NativeAddon {
  if (addon !== undefined) return addon;
  const candidates = [
    path.join(__dirname, '..', 'build', 'Release', 'nfqlb_native.node'),
    path.join(__dirname, '..', '..', 'build', 'Release', 'nfqlb_native.node'),
  ];
  const tried: string[] = [];
  for (const file of candidates) {
    try {
      // eslint-disable-next-line @typescript-eslint/no-var-requires
      const loaded = require(file) as NativeAddon;
      loaded.setErrorClass(NfqlbError);
      addon = loaded;
      return loaded;
    } catch (err) {
      tried.push(`${file}: ${(err as Error).message.split('\n')[0]}`);
    }
  }
  throw new NfqlbError(
    `the native addon is not built or cannot load (tried ${tried.join('; ')}). ` +
      'Install libnetfilter-queue-dev and libmnl-dev, then run `npm run build` (or scripts/setup.sh as root).',
    'NFQLB_ERR_ADDON',
  );
}
