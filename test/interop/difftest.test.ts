/**
 * The differential test in CI (issue 8, point 3): DIFFTEST_COUNT commands
 * (default 2000) from seed DIFFTEST_SEED (default 8) through the original
 * nfqlb and this project side by side; see difftest.ts. Every difference that
 * is not a documented divergence fails the test, listed one line each.
 * `npm run difftest -- --count=N --seed=S` runs this file with other numbers.
 * Without root the flow commands are left out (no daemons); without the
 * original the test is skipped.
 */
import { netnsUnavailable, noteSkipped, originalUnavailable } from '../helpers/skip';
import { describeDifference, groupDifferences, runDifftest } from './difftest';

// Said once at the end of the run, with the other skipped suites (test/helpers/skip.ts).
const noOriginal = originalUnavailable();
const noNetns = netnsUnavailable();
if (noOriginal !== null) noteSkipped(noOriginal);
else if (noNetns !== null) noteSkipped(`difftest without its flow commands: ${noNetns}`);
const haveOriginal = noOriginal === null;
const root = noNetns === null;

const count = Number(process.env.DIFFTEST_COUNT ?? 2000);
const seed = Number(process.env.DIFFTEST_SEED ?? 8);

jest.setTimeout(Math.max(300000, count * 200));

(haveOriginal ? it : it.skip)(`${count} random commands from seed ${seed} give nfqlb's outputs, exit codes and table bytes`, async () => {
  const traceFrom = process.env.DIFFTEST_TRACE_FROM === undefined ? undefined : Number(process.env.DIFFTEST_TRACE_FROM);
  const result = await runDifftest({ seed, count, withFlows: root, traceFrom, log: (l) => process.stderr.write(`${l}\n`) });
  const allowed = result.differences.filter((d) => d.allowed !== undefined);
  const defects = result.differences.filter((d) => d.allowed === undefined);
  const groups = groupDifferences(defects);
  const summary =
    `difftest seed=${seed}: ${result.commands} commands (${result.flowCommands} flow, ${result.tableChecks} table checks) in ${result.ms} ms; ` +
    `${defects.length} differences in ${groups.length} kinds, ${allowed.length} deliberate (${[...new Set(allowed.map((d) => d.allowed))].join('; ')})`;
  console.log(summary + (result.deaths.length > 0 ? `\n${result.deaths.join('\n')}` : ''));
  // nfqlb's own crashes are its bugs (listed, not failed); ours must never die.
  expect(result.deaths.filter((d) => d.startsWith('nfqlb-ts'))).toEqual([]);
  if (process.env.DIFFTEST_REPORT !== undefined) {
    require('node:fs').writeFileSync(process.env.DIFFTEST_REPORT, groups.map((g) => `${g.count}x ${describeDifference(g.example)}`).join('\n') + '\n');
  }
  expect(groups.map((g) => `${g.count}x ${describeDifference(g.example)}`).join('\n')).toBe('');
});
