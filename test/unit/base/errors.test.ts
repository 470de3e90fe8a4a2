/**
 * The error API: one table of codes that covers every code thrown in src/ and
 * native/, `cause` kept when wrapping, errno as Node has it (negative number,
 * named by util.getSystemErrorName), and the older constructor form still taken.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ERROR_CODES, NfqlbError, UsageError, toErrno } from '../../../src/base/errors';
import { applyConfig, loadConfig } from '../../../src/replay/config';
import { sendRequest } from '../../../src/services/control';
import { findCommand, parseCommandLine } from '../../../src/cli/main';
import { parsePcap, readPcap, writePcap } from '../../../src/replay/pcap';
import { bindFailure, defaultRcvbuf, PacketQueue, type PacketQueueOptions, type QueueProcEntry } from '../../../src/addon/queue';
import { SocketError } from '../../../src/addon/sockets';
import { runInProcess } from '../../helpers/cli';
import { thrownAsync as thrown } from '../../helpers/thrown';

const ROOT = path.join(__dirname, '..', '..', '..');

function sourceFiles(dir: string, ext: RegExp): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const full = path.join(dir, e.name);
    return e.isDirectory() ? sourceFiles(full, ext) : ext.test(e.name) ? [full] : [];
  });
}

/** Every NFQLB_ERR_* string literal ('…' or "…") in the files, with where it is. */
function codesUsed(files: string[]): Map<string, string> {
  const used = new Map<string, string>();
  for (const file of files) {
    const text = fs.readFileSync(file, 'utf8');
    for (const m of text.matchAll(/['"](NFQLB_ERR_[A-Z0-9_]+)['"]/g)) {
      const line = text.slice(0, m.index).split('\n').length;
      if (!used.has(m[1])) used.set(m[1], `${path.relative(ROOT, file)}:${line}`);
    }
  }
  return used;
}

describe('ERROR_CODES', () => {
  const files = [...sourceFiles(path.join(ROOT, 'src'), /\.ts$/), ...sourceFiles(path.join(ROOT, 'native'), /\.(cc|h)$/)];
  const used = codesUsed(files.filter((f) => !f.endsWith(path.join('src', 'errors.ts'))));

  it('lists every code thrown in src/ and native/', () => {
    const missing = [...used].filter(([code]) => !(code in ERROR_CODES)).map(([code, where]) => `${code} (${where})`);
    expect(missing).toEqual([]);
  });

  it('lists no code that nothing uses', () => {
    expect(Object.keys(ERROR_CODES).filter((code) => code !== 'NFQLB_ERR_USAGE' && !used.has(code))).toEqual([]);
  });

  it('leaves words for users to TypeScript: no sentence and no errno-name table in native/', () => {
    const cc = sourceFiles(path.join(ROOT, 'native'), /\.(cc|h)$/);
    const sentences = cc.flatMap((f) =>
      fs.readFileSync(f, 'utf8').split('\n').flatMap((line, i) => (/"[A-Z][a-z][^"]* /.test(line) ? [`${path.relative(ROOT, f)}:${i + 1}: ${line.trim()}`] : [])),
    );
    expect(sentences).toEqual([]);
    for (const f of cc) expect(fs.readFileSync(f, 'utf8')).not.toMatch(/ErrnoName|nfnetlink_queue"|pick another|run as root/);
  });

  it('says what each code means', () => {
    for (const [code, meaning] of Object.entries(ERROR_CODES)) {
      expect(code).toMatch(/^NFQLB_ERR_[A-Z0-9_]+$/);
      expect(meaning.length).toBeGreaterThan(10);
    }
  });
});

describe('NfqlbError', () => {
  it('keeps the error it wraps as cause and takes its errno', () => {
    let original: NodeJS.ErrnoException | undefined;
    try {
      fs.readFileSync(path.join(ROOT, 'no-such-file-here'));
    } catch (err) {
      original = err as NodeJS.ErrnoException;
    }
    const e = new NfqlbError('cannot read no-such-file-here', 'NFQLB_ERR_CONFIG', { cause: original });
    expect(e.cause).toBe(original);
    expect(e).toMatchObject({ name: 'NfqlbError', code: 'NFQLB_ERR_CONFIG', errno: -2, errnoName: 'ENOENT' });
    expect(e).toBeInstanceOf(Error);
  });

  it('has errno as Node has it: negative, named by util.getSystemErrorName', () => {
    expect(new NfqlbError('m', 'NFQLB_ERR_SHM_OPEN', { errno: 13 })).toMatchObject({ errno: -13, errnoName: 'EACCES' });
    expect(new NfqlbError('m', 'NFQLB_ERR_SHM_OPEN', { errno: -110 })).toMatchObject({ errno: -110, errnoName: 'ETIMEDOUT' });
    const plain = new NfqlbError('m', 'NFQLB_ERR_RANGE');
    expect(plain.errno).toBeUndefined();
    expect(plain.errnoName).toBeUndefined();
    expect(plain.cause).toBeUndefined();
  });

  it('still takes the older form (message, code, errno name), as the addon and older call sites use it', () => {
    expect(new NfqlbError('m', 'NFQLB_ERR_QUEUE_BUSY', 'EBUSY')).toMatchObject({ code: 'NFQLB_ERR_QUEUE_BUSY', errno: -16, errnoName: 'EBUSY' });
    // Node's code of a non-system error is no errno.
    expect(new NfqlbError('m', 'NFQLB_ERR_CONNECT', 'ERR_SOCKET_CLOSED').errno).toBeUndefined();
    expect(new NfqlbError('m', 'NFQLB_ERR_CONNECT', undefined).errno).toBeUndefined();
  });

  it('takes the addon\'s form: C\'s positive errno number, named here', () => {
    expect(new NfqlbError('cannot bind queue 3: Device or resource busy', 'NFQLB_ERR_QUEUE', 16)).toMatchObject({ errno: -16, errnoName: 'EBUSY' });
    expect(new NfqlbError('m', 'NFQLB_ERR_QUEUE', 110).errnoName).toBe('ETIMEDOUT'); // one the addon's old table lacked
    expect(toErrno('NOT_AN_ERRNO')).toBeUndefined();
    expect(toErrno(0)).toBeUndefined();
    expect(Object.keys(new NfqlbError('m', 'NFQLB_ERR_QUEUE', 1))).toContain('errno'); // logs (pino's err serializer) show it
  });

  it('UsageError keeps its exit code and defaults to NFQLB_ERR_USAGE', () => {
    const e = new UsageError('Missing option [--shm]', 2);
    expect(e).toMatchObject({ name: 'UsageError', code: 'NFQLB_ERR_USAGE', exitCode: 2 });
    expect(e).toBeInstanceOf(NfqlbError);
    expect(new UsageError('x', 1, 'NFQLB_ERR_TRACE_SELECTION').code).toBe('NFQLB_ERR_TRACE_SELECTION');
  });
});

/** What `fn` threw (synchronously or as a rejection). */
describe('an error from each layer: code, errno (a number), errnoName and cause', () => {
  const PREFIX = `nfqlbts-errs-${process.pid}-${Math.floor(Math.random() * 1e9)}`;

  it('queue: an option out of range is NFQLB_ERR_QUEUE_OPTION, checked in TypeScript before the addon', async () => {
    const e = await thrown(() => new PacketQueue({ queueNum: 1, batchSize: 5000 } as PacketQueueOptions));
    expect(e.code).toBe('NFQLB_ERR_QUEUE_OPTION');
    expect([e.errno, e.errnoName, e.cause]).toEqual([undefined, undefined, undefined]);
    expect(e.message).toBe('invalid queue option batchSize=5000: must be an integer from 1 to 1024');
  });

  it('queue: nfqlb\'s SO_RCVBUF rule lives in TypeScript', () => {
    expect(defaultRcvbuf(1024, 1500)).toBe(765952); // 768000 rounded down to 4 KiB
    expect(defaultRcvbuf(1, 1)).toBe(4096);
    expect(defaultRcvbuf(2 ** 31 - 1, 65535)).toBe(2 ** 30 - 4096);
  });

  describe('queue: a failed bind gets advice by errno, the addon\'s error as cause', () => {
    // The addon's error as native/nfqueue.cc builds it: what failed, C's errno.
    const addonError = (errno: number, text: string): NfqlbError => new NfqlbError(`cannot bind queue 7: ${text}`, 'NFQLB_ERR_QUEUE', errno);
    const held: QueueProcEntry[] = [{ queue: 7, portid: 4242, waiting: 0, copyMode: 2, copyRange: 1500, queueDropped: 0, userDropped: 0, lastId: 0 }];

    it('EPERM with a holder in /proc, or EBUSY: NFQLB_ERR_QUEUE_BUSY', () => {
      const cause = addonError(1, 'Operation not permitted');
      const e = bindFailure(7, cause, () => held) as NfqlbError;
      expect(e).toMatchObject({ code: 'NFQLB_ERR_QUEUE_BUSY', errno: -16, errnoName: 'EBUSY' });
      expect(e.message).toBe('queue 7 is bound by another process (netlink portid 4242) (EBUSY); stop the other nfqlb or pick another --queue');
      expect(e.cause).toBe(cause);
      expect((bindFailure(7, addonError(16, 'Device or resource busy'), () => []) as NfqlbError).message).toBe(
        'queue 7 is bound by another process (EBUSY); stop the other nfqlb or pick another --queue',
      );
      expect(bindFailure(7, addonError(17, 'File exists'), () => [])).toMatchObject({ code: 'NFQLB_ERR_QUEUE_BUSY', errnoName: 'EBUSY' });
    });

    it('EPERM without a holder: NFQLB_ERR_QUEUE_PERM, run as root', () => {
      const cause = addonError(1, 'Operation not permitted');
      const e = bindFailure(7, cause, () => []) as NfqlbError;
      expect(e).toMatchObject({ code: 'NFQLB_ERR_QUEUE_PERM', errno: -1, errnoName: 'EPERM', cause });
      expect(e.message).toBe('cannot bind queue 7: operation not permitted (EPERM); run as root or with CAP_NET_ADMIN');
    });

    it('ETIMEDOUT and others: NFQLB_ERR_QUEUE naming the errno', () => {
      const timedOut = bindFailure(7, addonError(110, 'Connection timed out'), () => []) as NfqlbError;
      expect(timedOut).toMatchObject({ code: 'NFQLB_ERR_QUEUE', errno: -110, errnoName: 'ETIMEDOUT' });
      expect(timedOut.message).toBe('cannot bind queue 7: the kernel did not answer (ETIMEDOUT)');
      const other = bindFailure(7, addonError(22, 'Invalid argument'), () => []) as NfqlbError;
      expect(other).toMatchObject({ code: 'NFQLB_ERR_QUEUE', errno: -22, errnoName: 'EINVAL', message: 'cannot bind queue 7 (EINVAL): Invalid argument' });
      expect((other.cause as NfqlbError).message).toBe('cannot bind queue 7: Invalid argument');
    });
  });

  it('control: connect refused is NFQLB_ERR_CONNECT with ECONNREFUSED, the socket error as cause', async () => {
    const e = await thrown(() => sendRequest(`unix:${PREFIX}-nobody`, { cmd: 'flow-list' } as never, 5000));
    expect(e).toMatchObject({ code: 'NFQLB_ERR_CONNECT', errno: -111, errnoName: 'ECONNREFUSED' });
    expect(e.message).toBe('Connect failed. Connection refused');
    expect(e.cause).toBeInstanceOf(SocketError);
    expect(e.cause).toMatchObject({ code: 'NFQLB_ERR_SOCKET', errno: -111, syscall: 'connect' });
  });

  it('pcap: a truncated file reads the whole records and reports the cut one; a missing file keeps ENOENT as cause', async () => {
    const whole = writePcap([{ ip: new Uint8Array(40) }, { ip: new Uint8Array(40) }]);
    const pcap = parsePcap(whole.subarray(0, whole.length - 10), 'cut.pcap');
    expect(pcap.records).toHaveLength(1);
    expect(pcap.error?.code).toBe('NFQLB_ERR_PCAP');
    expect(pcap.error?.errno).toBeUndefined();
    expect(pcap.error?.message).toMatch(/^cut\.pcap: record 1 is cut short/);
    const e = await thrown(() => readPcap(`/nonexistent/${PREFIX}.pcap`));
    expect(e).toMatchObject({ code: 'NFQLB_ERR_PCAP', errno: -2, errnoName: 'ENOENT' });
    expect((e.cause as NodeJS.ErrnoException).code).toBe('ENOENT');
  });

  it('config: a bad line is NFQLB_ERR_CONFIG FILE:LINE, the command\'s own error as cause', async () => {
    const parser = { find: findCommand, parse: parseCommandLine };
    const e = await thrown(() => applyConfig('init --shm=x --M=997 --N=5\ninit --shm=y --M=7 --N=100\n', 'c.cmds', parser));
    expect(e.code).toBe('NFQLB_ERR_CONFIG');
    expect(e.message).toMatch(/^c\.cmds:2: /);
    expect(e.message).toBe("c.cmds:2: N can't be larger than M");
    expect(e.cause).toBeInstanceOf(UsageError);
    expect(e.cause).toMatchObject({ code: 'NFQLB_ERR_USAGE', message: "N can't be larger than M" });
    const missing = await thrown(() => loadConfig(`/nonexistent/${PREFIX}.cmds`, parser));
    expect(missing).toMatchObject({ code: 'NFQLB_ERR_CONFIG', errno: -2, errnoName: 'ENOENT' });
    expect((missing.cause as NodeJS.ErrnoException).syscall).toBe('open');
  });

  it('CLI: a failure is one line on stderr and the exit code', async () => {
    const r = await runInProcess(['show', `--shm=${PREFIX}-missing`]);
    expect(r.rc).not.toBe(0);
    expect(r.stdout).toBe('');
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toBe(`FAILED mapSharedData: ${PREFIX}-missing\n`); // nfqlb's words, exit code 1
    expect(r.rc).toBe(1);
  });
});
