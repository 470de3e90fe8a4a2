/**
 * `nfqlb stats` (cli/commands/stats.ts): prints the fragment statistics of the
 * --ft_shm object in formatFragStats()'s text and exits 0; an object it cannot
 * map is nfqlb's `FAILED mapSharedData: NAME` with exit 1, while an object too
 * short to be the statistics keeps its own, more useful error. The format
 * itself and the comparison with the original nfqlb are
 * test/unit/fragments/stats.test.ts's. Objects have private names under
 * /dev/shm and are removed afterwards.
 */
import * as fs from 'node:fs';
import { decodeFragStats, encodeFragStats, FRAG_STATS_SHM, formatFragStats, type FragStats } from '../../../../src/fragments/stats';
import { statsCommands } from '../../../../src/cli/commands/stats';
import { runInProcess } from '../../../helpers/cli';

const PREFIX = `nfqlbts-${process.pid}-${Math.random().toString(36).slice(2, 8)}-statscmd`;
let seq = 0;
const made: string[] = [];
function shmObject(bytes: Uint8Array): string {
  const name = `${PREFIX}-${++seq}`;
  made.push(name);
  fs.writeFileSync(`/dev/shm/${name}`, bytes, { mode: 0o600 });
  return name;
}
afterAll(() => {
  for (const name of made) fs.rmSync(`/dev/shm/${name}`, { recursive: true, force: true });
});

/** Every field a different value, so a field printed in the wrong place shows. */
function distinctStats(): FragStats {
  const zero = decodeFragStats(new Uint8Array(72));
  const s: Record<string, unknown> = { ...zero };
  let n = 1;
  for (const k of Object.keys(s)) s[k] = typeof s[k] === 'bigint' ? 123456789n : n++ * 11;
  return s as unknown as FragStats;
}

describe('nfqlb stats', () => {
  it('prints the --ft_shm object as formatFragStats() words it, exit 0', async () => {
    const stats = distinctStats();
    const name = shmObject(encodeFragStats(stats));
    const r = await runInProcess(['stats', `--ft_shm=${name}`]);
    expect(r).toEqual({ rc: 0, stdout: formatFragStats(stats), stderr: '' });
    expect(r.stdout).toContain(`${stats.reAssembled}`);
  });

  it("the object defaults to nfqlb's name", () => {
    expect(FRAG_STATS_SHM).toBe('ftshm');
    expect(statsCommands[0].options.ft_shm.default).toBe(FRAG_STATS_SHM);
  });

  it("an object that is missing or not a regular file: nfqlb's `FAILED mapSharedData: NAME`, exit 1", async () => {
    const missing = `${PREFIX}-missing`;
    expect(await runInProcess(['stats', `--ft_shm=${missing}`])).toEqual({ rc: 1, stdout: '', stderr: `FAILED mapSharedData: ${missing}\n` });
    const dir = `${PREFIX}-dir`;
    made.push(dir);
    fs.mkdirSync(`/dev/shm/${dir}`);
    expect(await runInProcess(['stats', `--ft_shm=${dir}`])).toEqual({ rc: 1, stdout: '', stderr: `FAILED mapSharedData: ${dir}\n` });
  });

  it('an object too short keeps its own error (its size and what it should be), exit 1', async () => {
    const name = shmObject(Buffer.from('short'));
    expect(await runInProcess(['stats', `--ft_shm=${name}`])).toEqual({
      rc: 1, stdout: '', stderr: `shared memory '${name}' is 5 bytes, not nfqlb's fragment statistics (72 bytes)\n`,
    });
  });
});
