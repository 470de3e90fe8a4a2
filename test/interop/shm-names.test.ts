/**
 * Regressions found by the differential test (difftest.ts): shm names as
 * shm_open() takes them, and fwmark's empty port. Runs without the original;
 * where it is present, its output is the expectation as well.
 */
import * as fs from 'node:fs';
import { runInProcess } from '../helpers/cli';
import { cleanupAll, uniqueShmName } from '../../testbed/testbed';
import { cli, originalPresent } from './partners';

const haveOriginal = originalPresent();

afterAll(async () => {
  await cleanupAll();
});

it('a leading / is skipped as shm_open does; delete of a name that cannot exist is no error', async () => {
  const name = uniqueShmName('slash');
  expect(await runInProcess(['init', `--shm=/${name}`, '--M=11', '--N=3'])).toEqual({ rc: 0, stdout: '', stderr: '' });
  expect(fs.existsSync(`/dev/shm/${name}`)).toBe(true);
  expect(await runInProcess(['activate', `--shm=//${name}`, '7'])).toMatchObject({ rc: 0 });
  const shown = await runInProcess(['show', `--shm=/${name}`]);
  expect(shown).toMatchObject({ rc: 0, stdout: expect.stringContaining('Active: 7(0)') });
  if (haveOriginal) expect(cli('original', ['show', `--shm=/${name}`])).toEqual(shown);
  for (const bad of ['', 'a/b', `${name}/`]) {
    expect(await runInProcess(['delete', `--shm=${bad}`])).toEqual({ rc: 0, stdout: '', stderr: '' });
    const r = await runInProcess(['show', `--shm=${bad}`]);
    expect(r.rc).toBe(1);
    expect(r.stderr).not.toMatch(/internal error|TypeError|\n./);
  }
  expect(await runInProcess(['delete', `--shm=/${name}`])).toEqual({ rc: 0, stdout: '', stderr: '' });
  expect(fs.existsSync(`/dev/shm/${name}`)).toBe(false);
});

it('fwmark reads an empty port as 0, as nfqlb does', async () => {
  const args = ['fwmark', '--proto=udp', '--src=192.0.2.1:', '--dst=[2001:db8::1]:'];
  const zero = await runInProcess(['fwmark', '--proto=udp', '--src=192.0.2.1:0', '--dst=[2001:db8::1]:0']);
  const empty = await runInProcess(args);
  expect(empty).toEqual(zero);
  expect(empty.rc).toBe(0);
  if (haveOriginal) expect(cli('original', args)).toEqual(empty);
});
