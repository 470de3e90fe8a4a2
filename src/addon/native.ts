/**
 * Loads the C++ addon once and hands it the error class, so errors thrown in
 * C++ are NfqlbError with a code. The addon is kept private to the modules that
 * wrap it (shm, queue, tun); nothing else should import it.
 *
 * When it cannot load, the error says which of four things is wrong and what
 * to do, in one line (the way sharp's lib/sharp.js does): the build is missing,
 * a shared library it needs is not installed, it was built for another Node.js,
 * or it loaded and failed to initialise. The original error is the `cause`.
 */
// Not `import * as`: its helper reads every export, which on Node 24 loads node:util's streams and worker_threads (CLI start-up).
import fs = require('node:fs');
import path = require('node:path');
import { NfqlbError } from '../base/errors';

export interface NativeAddon {
  /** The class C++ builds every error with: (message, code, errno as C has it (2), or undefined). */
  setErrorClass(ctor: new (message: string, code: string, errno?: number) => Error): void;
  /** mode 0 read-only, 1 read-write, 2 create/resize to `size` (0600). */
  shmMap(name: string, mode: 0 | 1 | 2, size: number, fill?: number): ArrayBuffer;
  shmUnmap(buffer: ArrayBuffer): boolean;
  shmUnlink(name: string): boolean;
  /** Size in bytes, or -1 when the object does not exist. */
  shmSize(name: string): number;
  /** Maps the first `length` bytes of open file `fd` (fstat-checked first); a page lost to a truncation later reads as 0xFF. */
  fdMap(fd: number, writable: boolean, length: number): ArrayBuffer;
  /** st_size of open file `fd`, or -errno. */
  fdSize(fd: number): number;
  /** [0]: SIGBUS faults on shm mappings repaired so far (see native/shm.cc). Read-only. */
  shmGuardCounters(): Int32Array;
  /** A network device of this namespace: ifindex, MTU, IFF_UP. Throws NfqlbError NFQLB_ERR_TUN (ENODEV when there is none). */
  netdevInfo(name: string): { index: number; mtu: number; up: boolean };
  /** fd of /dev/net/tun attached (IFF_TUN|IFF_NO_PI) to the existing device `name`; throws NfqlbError NFQLB_ERR_TUN with errno. */
  tunOpen(name: string): number;
  tunClose(fd: number): boolean;
  /**
   * From now on the first SIGTERM/SIGINT starts a countdown of `ms` in a native thread; a process still
   * alive at its end writes `line` to stderr and exits with `code` (native/stopwatchdog.cc). False when armed already.
   */
  armStopWatchdog(ms: number, code: number, line: string): boolean;
  /** Names the calling OS thread (first 15 bytes; shown as comm in /proc/PID/task/TID/stat, top -H, perf). */
  setThreadName(name: string): boolean;
  /** Writes packet i = bytes[offsets[i], +lengths[i]) for i < count, one write() each; returns how many were written; the errno of a failure goes to errnoOut[0]. */
  tunWriteBatch(fd: number, bytes: Uint8Array, offsets: Uint32Array, lengths: Uint32Array, count: number, errnoOut?: Int32Array): number;
  // NFQUEUE bindings are added by src/addon/queue.ts's needs (see native/nfqueue.cc).
  [key: string]: unknown;
}

/** Where the build puts the addon, seen from dist/addon/ (the product), src/addon/ (ts-jest) and testbed/dist/src/addon/ (the test bed compiles src/ beside itself). */
export const ADDON_FILES: readonly string[] = [
  path.join(__dirname, '..', '..', 'build', 'Release', 'nfqlb_native.node'),
  path.join(__dirname, '..', '..', '..', '..', 'build', 'Release', 'nfqlb_native.node'),
];

/** The Debian package that holds each run-time library the addon links. */
const LIBRARY_PACKAGES: Readonly<Record<string, string>> = {
  'libnetfilter_queue.so.1': 'libnetfilter-queue1',
  'libmnl.so.0': 'libmnl0',
  'libnfnetlink.so.0': 'libnfnetlink0',
};

const BUILD = 'npm run build (scripts/setup.sh as root also installs what the build needs)';

/** The message of `err` on one line (Node words the ABI mismatch over five). */
function oneLine(err: unknown): string {
  const message = (err as { message?: unknown } | null)?.message;
  return String(typeof message === 'string' ? message : err).replace(/\s*\n\s*/g, ' ');
}

/**
 * What went wrong loading the addon file `file`, which exists, from the error
 * `require` threw: NFQLB_ERR_ADDON_LIBRARY, _ABI, _INIT or (anything else,
 * e.g. not a shared object) NFQLB_ERR_ADDON.
 */
export function loadFailure(file: string, err: unknown): NfqlbError {
  const message = oneLine(err);
  const library = /([^\s:/]+\.so(?:\.\d+)*): cannot open shared object file/.exec(message);
  if (library !== null) {
    const lib = library[1];
    const pkg = LIBRARY_PACKAGES[lib];
    const install = pkg !== undefined ? `install it: apt-get install ${pkg}` : `install the package that provides ${lib}`;
    return new NfqlbError(`the native addon needs ${lib}, which is not installed; ${install}`, 'NFQLB_ERR_ADDON_LIBRARY', { cause: err });
  }
  const abi = /NODE_MODULE_VERSION (\d+)/.exec(message);
  if (abi !== null) {
    return new NfqlbError(
      `the native addon ${file} was built for another Node.js (NODE_MODULE_VERSION ${abi[1]}; this is ${process.version}, ` +
        `${process.versions.modules}); rebuild it for this Node: npm rebuild (or npx node-gyp rebuild)`,
      'NFQLB_ERR_ADDON_ABI',
      { cause: err },
    );
  }
  // dlopen failures carry ERR_DLOPEN_FAILED; anything else was thrown by the module's own initialisation.
  if (/did not self-register/.test(message) || (err as { code?: unknown } | null)?.code !== 'ERR_DLOPEN_FAILED') {
    return new NfqlbError(`the native addon ${file} failed to initialise (${message}); rebuild it: ${BUILD}`, 'NFQLB_ERR_ADDON_INIT', { cause: err });
  }
  return new NfqlbError(`the native addon ${file} cannot be loaded (${message}); rebuild it: ${BUILD}`, 'NFQLB_ERR_ADDON', { cause: err });
}

/**
 * Loads the first of `files` that exists and hands it the error class.
 * Throws NfqlbError NFQLB_ERR_ADDON_MISSING when none exists, else the
 * loadFailure of the first that exists, or NFQLB_ERR_ADDON_INIT when it loads
 * but does not take the error class. `files` is for tests; the product uses ADDON_FILES.
 */
export function loadAddon(files: readonly string[] = ADDON_FILES): NativeAddon {
  const file = files.find((f) => fs.existsSync(f));
  if (file === undefined) {
    throw new NfqlbError(
      `the native addon is not built (no ${files.join(' or ')}); build it: npm ci, or ${BUILD}`,
      'NFQLB_ERR_ADDON_MISSING',
    );
  }
  let loaded: NativeAddon;
  try {
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    loaded = require(file) as NativeAddon;
  } catch (err) {
    throw loadFailure(file, err);
  }
  try {
    if (typeof loaded?.setErrorClass !== 'function') throw new TypeError('it has no setErrorClass()');
    loaded.setErrorClass(NfqlbError);
  } catch (err) {
    throw new NfqlbError(
      `the native addon ${file} loaded but failed to initialise (${oneLine(err)}); rebuild it: ${BUILD}`,
      'NFQLB_ERR_ADDON_INIT',
      { cause: err },
    );
  }
  return loaded;
}

let addon: NativeAddon | undefined;

/** Returns the addon, loaded on first use; throws NfqlbError NFQLB_ERR_ADDON* (see loadAddon) when it cannot load. */
export function native(): NativeAddon {
  if (addon === undefined) addon = loadAddon();
  return addon;
}
