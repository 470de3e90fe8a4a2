/**
 * promtool (Debian package `prometheus`) for the suites that lint metrics,
 * test alert rules and check PromQL: where it is not installed they skip with
 * one line (describeUnless(promtoolUnavailable())).
 */
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';

/** Why promtool cannot be used, or null when `promtool --version` runs. */
export function promtoolUnavailable(): string | null {
  const r = spawnSync('promtool', ['--version'], { timeout: 10_000 });
  return r.status === 0 ? null : 'promtool is not installed (apt-get install prometheus; scripts/setup.sh does it)';
}

/** Runs promtool with `input` on stdin; stdout and stderr as text. */
export function promtool(args: string[], input?: string): SpawnSyncReturns<string> {
  return spawnSync('promtool', args, { input, encoding: 'utf8', timeout: 60_000 });
}
