/**
 * shm names as nfqlb (through glibc's shm_open/shm_unlink) takes them: a
 * leading '/' is dropped, bad names fail with nfqlb's one line and exit code,
 * never a stack trace. Every object is named nfqlbts-names-<pid>-... and removed.
 */
import * as fs from 'node:fs';
import { runInProcess, runSpawned } from '../../../helpers/cli';
import { shmObjectName } from '../../../../src/addon/shm';
import { NfqlbError } from '../../../../src/base/errors';

const PREFIX = `nfqlbts-names-${process.pid}-`;

function removeAll(): void {
  for (const f of fs.readdirSync('/dev/shm')) if (f.startsWith(PREFIX)) fs.rmSync(`/dev/shm/${f}`, { force: true, recursive: true });
}
afterEach(removeAll);
afterAll(removeAll);

/** A name of exactly `bytes` bytes, starting with the test prefix. */
const nameOf = (bytes: number): string => PREFIX + 'x'.repeat(bytes - PREFIX.length);

describe('names nfqlb refuses, in its words', () => {
  it.each([
    ['a/b', 'createSharedData: Invalid argument'],
    ['', 'createSharedData: Invalid argument'],
    ['/', 'createSharedData: Invalid argument'],
    ['/a/b', 'createSharedData: Invalid argument'],
    ['.', 'createSharedData: Invalid argument'],
    ['..', 'createSharedData: Invalid argument'],
  ])('init --shm=%j', async (name, msg) => {
    expect(await runInProcess(['init', `--shm=${name}`])).toEqual({ rc: 1, stdout: '', stderr: `${msg}\n` });
  });

  it('init: 256-259 bytes are too long for the kernel, 260 and more for glibc', async () => {
    expect(await runInProcess(['init', `--shm=${nameOf(256)}`])).toEqual({ rc: 1, stdout: '', stderr: 'createSharedData: File name too long\n' });
    expect(await runInProcess(['init', `--shm=${nameOf(259)}`])).toEqual({ rc: 1, stdout: '', stderr: 'createSharedData: File name too long\n' });
    expect(await runInProcess(['init', `--shm=${nameOf(260)}`])).toEqual({ rc: 1, stdout: '', stderr: 'createSharedData: Invalid argument\n' });
    expect(await runInProcess(['init', `--shm=${nameOf(255)}`, '--M=7', '--N=1'])).toEqual({ rc: 0, stdout: '', stderr: '' });
    expect(fs.existsSync(`/dev/shm/${nameOf(255)}`)).toBe(true);
  });

  it('init over a directory is EINVAL, as glibc reports it', async () => {
    fs.mkdirSync(`/dev/shm/${PREFIX}dir`);
    expect(await runInProcess(['init', `--shm=${PREFIX}dir`])).toEqual({ rc: 1, stdout: '', stderr: 'createSharedData: Invalid argument\n' });
    expect(await runInProcess(['show', `--shm=${PREFIX}dir`])).toEqual({ rc: 1, stdout: '', stderr: `FAILED mapSharedData: ${PREFIX}dir\n` });
    expect(await runInProcess(['delete', `--shm=${PREFIX}dir`])).toEqual({ rc: 1, stdout: '', stderr: 'Is a directory\n' });
  });

  it.each(['a/b', '', '/'])('show, activate, deactivate, fwmark with --shm=%j: FAILED mapSharedData', async (name) => {
    const fail = { rc: 1, stdout: '', stderr: `FAILED mapSharedData: ${name}\n` };
    expect(await runInProcess(['show', `--shm=${name}`])).toEqual(fail);
    expect(await runInProcess(['activate', `--shm=${name}`, '1'])).toEqual(fail);
    expect(await runInProcess(['deactivate', `--shm=${name}`, '--index=0'])).toEqual(fail);
    expect(await runInProcess(['fwmark', `--shm=${name}`, '--src=192.0.2.1:1', '--dst=192.0.2.2:2'])).toEqual(fail);
  });

  it('delete: a name glibc refuses is "not there" (rc 0, silent); a too long one says so', async () => {
    for (const name of ['a/b', '', '/', nameOf(300)]) {
      expect({ name, ...(await runInProcess(['delete', `--shm=${name}`])) }).toEqual({ name, rc: 0, stdout: '', stderr: '' });
    }
    expect(await runInProcess(['delete', `--shm=${nameOf(256)}`])).toEqual({ rc: 1, stdout: '', stderr: 'File name too long\n' });
  });

  it('bin/nfqlb prints one line, never an internal error', () => {
    expect(runSpawned(['init', '--shm=a/b'])).toEqual({ rc: 1, stdout: '', stderr: 'createSharedData: Invalid argument\n' });
    expect(runSpawned(['delete', '--shm='])).toEqual({ rc: 0, stdout: '', stderr: '' });
    expect(runSpawned(['show', '--shm=a/b'])).toEqual({ rc: 1, stdout: '', stderr: 'FAILED mapSharedData: a/b\n' });
  });
});

describe('a leading / is dropped, as glibc does', () => {
  it('init --shm=/NAME creates /dev/shm/NAME; show prints the name as given; delete removes it', async () => {
    expect(await runInProcess(['init', `--shm=/${PREFIX}t`, '--M=7', '--N=2'])).toEqual({ rc: 0, stdout: '', stderr: '' });
    expect(fs.statSync(`/dev/shm/${PREFIX}t`).size).toBe(4 + 12 + 4 * (3 + 7 * 2) + 4 * (7 + 2));
    expect(await runInProcess(['activate', `--shm=//${PREFIX}t`, '5'])).toMatchObject({ rc: 0 });
    const show = await runInProcess(['show', `--shm=/${PREFIX}t`]);
    expect(show.stdout).toMatch(new RegExp(`^Shm: /${PREFIX}t\n  Fw: own=0\n  Maglev: M=7, N=2\n.*\n   Active: 5\\(0\\)\n$`));
    expect(await runInProcess(['delete', `--shm=/${PREFIX}t`])).toEqual({ rc: 0, stdout: '', stderr: '' });
    expect(fs.existsSync(`/dev/shm/${PREFIX}t`)).toBe(false);
  });

  it('shmObjectName: the checks and their errno', () => {
    expect(shmObjectName('///abc')).toBe('abc');
    expect(shmObjectName('é'.repeat(127))).toBe('é'.repeat(127));
    const errno = (name: string): string | undefined => {
      try {
        shmObjectName(name);
        return undefined;
      } catch (err) {
        expect(err).toBeInstanceOf(NfqlbError);
        expect((err as NfqlbError).code).toBe('NFQLB_ERR_SHM_NAME');
        return (err as NfqlbError).errnoName;
      }
    };
    expect(errno('é'.repeat(128))).toBe('ENAMETOOLONG');
    expect(errno('a\0b')).toBe('EINVAL');
    expect(errno('a/')).toBe('EINVAL');
  });
});
