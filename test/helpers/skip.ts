/**
 * Suites that need what a run may lack (root and network namespaces, trafgen,
 * the original nfqlb) skip with a reason, and the run says so once, at its
 * end, in one line per reason (test/global-teardown.js) instead of leaving
 * only a count of skipped tests. Use describeIf instead of
 * `cond ? describe : describe.skip`.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { canUseNetns, workersUnavailable } from '../../testbed/testbed';

const ROOT = path.join(__dirname, '..', '..');

/** The original nfqlb 1.2.0, a test partner only: $NFQLB_ORIGINAL, else ../shared/reference/nfqlb-1.2.0/nfqlb beside the repository. */
export const ORIGINAL = path.resolve(ROOT, process.env.NFQLB_ORIGINAL ?? path.join('..', 'shared', 'reference', 'nfqlb-1.2.0', 'nfqlb'));

/** Why the original nfqlb cannot be used by this run, or null when it runs (`nfqlb version`). */
export function originalUnavailable(): string | null {
  try {
    fs.accessSync(ORIGINAL, fs.constants.X_OK);
  } catch {
    return `the original nfqlb is not at ${ORIGINAL} (set NFQLB_ORIGINAL)`;
  }
  const r = spawnSync(ORIGINAL, ['version'], { timeout: 5000 });
  return r.status === 0 ? null : `the original nfqlb at ${ORIGINAL} does not run (\`nfqlb version\` exit ${r.status}; its runtime libraries libmnl0 and libnetfilter-queue1?)`;
}

/** Why network namespaces cannot be used by this run, or null when they can. */
export function netnsUnavailable(): string | null {
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    return 'need root for network namespaces and NFQUEUE (run: sudo npm test)';
  }
  return canUseNetns() ? null : 'need `ip netns` to work (iproute2, a kernel with network namespaces)';
}

/**
 * Why an end-to-end suite cannot run here: no network namespaces, or the
 * worker mode asked for by $NFQLB_TEST_WORKERS (testbed.ts) is not in this
 * build. Null when it can run.
 */
export function e2eUnavailable(): string | null {
  return netnsUnavailable() ?? workersUnavailable();
}

/** Records that the calling suite is skipped for `reason` (see the file comment). */
export function noteSkipped(reason: string): void {
  const testPath = (expect.getState().testPath as string | undefined) ?? 'a test file';
  const where = path.relative(ROOT, testPath);
  const log = process.env.NFQLB_TEST_SKIPS;
  if (log !== undefined && fs.existsSync(path.dirname(log))) fs.appendFileSync(log, `${reason}\t${where}\n`);
  else console.warn(`${where}: skipped: ${reason}`);
}

/** `describe` when `reason` is null, else `describe.skip` with the reason noted. */
export function describeUnless(reason: string | null): jest.Describe {
  if (reason === null) return describe;
  noteSkipped(reason);
  return describe.skip;
}
