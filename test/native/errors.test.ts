/**
 * Errors from the addon and the modules that wrap it, provoked for real: the
 * addon says only what failed and the errno (a number, named in TypeScript);
 * the shm layer wraps it with what to do and keeps it as `cause`. No root
 * needed (the bind failures with the kernel are in queue.test.ts).
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { NfqlbError } from '../../src/base/errors';
import { ADDON_FILES, native } from '../../src/addon/native';
import { openTraceShm } from '../../src/addon/shm';
import { openTable } from '../../src/tables/tablefile';
import { thrown } from '../helpers/thrown';

const PREFIX = `nfqlbts-errs-${process.pid}-${Math.floor(Math.random() * 1e9)}`;

afterAll(() => {
  for (const f of fs.readdirSync('/dev/shm')) if (f.startsWith(PREFIX)) fs.rmSync(`/dev/shm/${f}`, { force: true, recursive: true });
});

describe('addon', () => {
  it('shm map of a missing name: NFQLB_ERR_SHM_OPEN, what failed and strerror, errno -2 named ENOENT', () => {
    const e = thrown(() => native().shmMap(`${PREFIX}-missing`, 0, 0, 0));
    expect(e).toMatchObject({ name: 'NfqlbError', code: 'NFQLB_ERR_SHM_OPEN', errno: -2, errnoName: 'ENOENT' });
    expect(e.message).toBe(`cannot open shared memory '${PREFIX}-missing': No such file or directory`);
    expect(e.cause).toBeUndefined();
  });

  it('a directory in its place: refused before it is opened, errno a number, named in TypeScript', () => {
    fs.mkdirSync(`/dev/shm/${PREFIX}-dir`);
    const e = thrown(() => native().shmMap(`${PREFIX}-dir`, 1, 0, 0));
    expect(e.code).toBe('NFQLB_ERR_NOT_FILE');
    expect(e.errno).toBeLessThan(0);
    expect(e.errnoName).toBe('EISDIR');
    expect(e.message).toMatch(new RegExp(`^cannot open shared memory '${PREFIX}-dir' \\(/dev/shm/${PREFIX}-dir is a directory, .*: Is a directory$`));
  });

  it('builds its option guard error with the error class too, without advice words', () => {
    const NfQueue = native().NfQueue as new (o: object) => unknown;
    const e = thrown(() => new NfQueue({ queueNum: 1 }));
    expect(e).toMatchObject({ code: 'NFQLB_ERR_QUEUE_OPTION', message: 'new NfQueue(): option copyRange' });
    expect(e.errno).toBeUndefined();
  });

  it('used without loadAddon() (no error class handed over): says so, with the failure', () => {
    const file = ADDON_FILES.find((f) => fs.existsSync(f))!;
    const script = `try { require(${JSON.stringify(file)}).shmMap('${PREFIX}-raw', 0, 0, 0) } catch (e) { console.log(e.constructor.name + ' ' + e.message) }`;
    const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
    expect(r.stdout).toBe(`TypeError setErrorClass() was not called; NFQLB_ERR_SHM_OPEN: cannot open shared memory '${PREFIX}-raw': No such file or directory\n`);
  });
});

describe('shm', () => {
  it('a missing table: NFQLB_ERR_SHM_MISSING with what to do, the open error as cause', () => {
    const e = thrown(() => openTable(`${PREFIX}-table`));
    expect(e).toMatchObject({ code: 'NFQLB_ERR_SHM_MISSING', errno: -2, errnoName: 'ENOENT' });
    expect(e.message).toBe(`shared memory '${PREFIX}-table' does not exist; create it with \`nfqlb init --shm=${PREFIX}-table\``);
    expect((e.cause as NodeJS.ErrnoException).syscall).toBe('open');
  });

  it('missing trace settings: NFQLB_ERR_SHM_MISSING, the addon\'s error as cause', () => {
    const e = thrown(() => openTraceShm(`${PREFIX}-trace`));
    expect(e).toMatchObject({ code: 'NFQLB_ERR_SHM_MISSING', errno: -2, errnoName: 'ENOENT' });
    expect(e.cause).toBeInstanceOf(NfqlbError);
    expect(e.cause).toMatchObject({ code: 'NFQLB_ERR_SHM_OPEN', errno: -2 });
  });
});
