/**
 * The error API: one table of codes that covers every code thrown in src/ and
 * native/, `cause` kept when wrapping, errno as Node has it (negative number,
 * named by util.getSystemErrorName), and the older constructor form still taken.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ERROR_CODES, NfqlbError, UsageError, toErrno } from '../../src/errors';

const ROOT = path.join(__dirname, '..', '..');

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

  it('turns an errno name set after construction into the number (the addon does this for queue errors)', () => {
    const e = new NfqlbError('m', 'NFQLB_ERR_QUEUE');
    (e as unknown as { errno: string }).errno = 'ETIMEDOUT';
    expect(e).toMatchObject({ errno: -110, errnoName: 'ETIMEDOUT' });
    expect(Object.keys(e)).toContain('errno'); // logs (pino's err serializer) show it
  });

  it('maps the addon\'s name for an errno it cannot name ("E<n>")', () => {
    expect(toErrno('E121')).toBe(-121);
    expect(toErrno('NOT_AN_ERRNO')).toBeUndefined();
    expect(toErrno(0)).toBeUndefined();
  });

  it('UsageError keeps its exit code and defaults to NFQLB_ERR_USAGE', () => {
    const e = new UsageError('Missing option [--shm]', 2);
    expect(e).toMatchObject({ name: 'UsageError', code: 'NFQLB_ERR_USAGE', exitCode: 2 });
    expect(e).toBeInstanceOf(NfqlbError);
    expect(new UsageError('x', 1, 'NFQLB_ERR_TRACE_SELECTION').code).toBe('NFQLB_ERR_TRACE_SELECTION');
  });
});
