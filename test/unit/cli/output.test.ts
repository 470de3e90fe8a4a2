/**
 * The command line's stdout and stderr (output.ts): plain write(2)s on
 * descriptors 1 and 2, complete before the process exits, to a pipe and to a
 * file, also when the descriptor was left non-blocking and the reader is slow
 * (EAGAIN), silent when the reader is gone (EPIPE); and captureOutput()'s
 * sink in place of the descriptors. The descriptor cases run the compiled
 * module (dist/: `npx tsc -p .` first) in a child whose descriptors the test
 * makes, since this process's 1 and 2 are jest's.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { captureOutput, writeErr, writeOut } from '../../../src/cli/output';
import { ROOT } from '../../helpers/cli';

const OUTPUT_JS = path.join(ROOT, 'dist', 'cli', 'output.js');

/** Node source for a child that loads the compiled output.ts as `o`. */
const child = (body: string): string => `const o = require(${JSON.stringify(OUTPUT_JS)}); ${body}`;

/** Runs `node -e script` with stdout and stderr as pipes. */
function runNode(script: string): { status: number | null; stdout: Buffer; stderr: Buffer } {
  const r = spawnSync(process.execPath, ['-e', script], { maxBuffer: 64 * 1024 * 1024 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('writeOut / writeErr on the descriptors', () => {
  it('writes strings as UTF-8 and bytes as they are, to 1 and to 2 apart', () => {
    const r = runNode(child(`o.writeOut('café\\n'); o.writeErr('err '); o.writeOut(new Uint8Array([0, 255, 10])); o.writeErr('ß');`));
    expect(r.status).toBe(0);
    expect(r.stdout).toEqual(Buffer.concat([Buffer.from('café\n', 'utf8'), Buffer.from([0, 255, 10])]));
    expect(r.stderr.toString('utf8')).toBe('err ß');
  });

  it('a write larger than a pipe holds (8 MiB) arrives whole before the process exits', () => {
    const r = runNode(child(`o.writeOut(Buffer.alloc(8 * 1024 * 1024, 0x61)); process.exit(3);`));
    expect(r.status).toBe(3);
    expect(r.stdout.length).toBe(8 * 1024 * 1024);
    expect(r.stdout.every((b) => b === 0x61)).toBe(true);
  });

  it('writes to a regular file as descriptor 1', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nfqlbts-output-'));
    try {
      const file = path.join(dir, 'out');
      const fd = fs.openSync(file, 'w');
      try {
        const r = spawnSync(process.execPath, ['-e', child(`for (let i = 0; i < 1000; i++) o.writeOut(i + '\\n');`)], { stdio: ['ignore', fd, 'pipe'] });
        expect(r.status).toBe(0);
      } finally {
        fs.closeSync(fd);
      }
      const lines = fs.readFileSync(file, 'utf8').split('\n');
      expect(lines.length).toBe(1001);
      expect(lines[999]).toBe('999');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('waits out EAGAIN on a non-blocking pipe with a slow reader and loses nothing', () => {
    // python3 makes the pipe, sets the write end O_NONBLOCK, starts the child
    // on it and reads slowly, so the child's writes meet a full pipe.
    const nodeScript = child(`o.writeOut(Buffer.alloc(1024 * 1024, 0x62)); o.writeErr('done');`);
    const py = [
      'import os, subprocess, sys, time',
      'r, w = os.pipe()',
      'os.set_blocking(w, False)',
      `p = subprocess.Popen([sys.argv[1], '-e', sys.argv[2]], stdout=w, stderr=subprocess.PIPE)`,
      'os.close(w)',
      'time.sleep(0.3)',
      'n = 0',
      'while True:',
      '    b = os.read(r, 65536)',
      '    if not b: break',
      "    if b.count(b'b') != len(b): sys.exit(9)",
      '    n += len(b)',
      'err = p.stderr.read()',
      'p.wait()',
      "print(n, p.returncode, err.decode())",
    ].join('\n');
    const r = spawnSync('python3', ['-c', py, process.execPath, nodeScript], { encoding: 'utf8', timeout: 30000 });
    expect(r.stderr).toBe('');
    expect(r.stdout.trim()).toBe(`${1024 * 1024} 0 done`);
  });

  it('a reader gone (EPIPE) ends the write quietly; the process goes on and exits normally', () => {
    const r = spawnSync('bash', ['-c', `"$0" -e "$1" | head -c 5; echo " rc=\${PIPESTATUS[0]}"`, process.execPath,
      child(`for (let i = 0; i < 200; i++) o.writeOut(Buffer.alloc(65536, 0x63)); o.writeErr('after');`)], { encoding: 'utf8' });
    expect(r.stdout).toBe('ccccc rc=0\n');
    expect(r.stderr).toBe('after');
  });

  it('other write errors are thrown (a descriptor that is not open)', () => {
    const closed = spawnSync(process.execPath, ['-e', `require('fs').closeSync(1); ${child(`try { o.writeOut('x'); } catch (e) { process.stderr.write(e.code); process.exit(4); }`)}`],
      { encoding: 'utf8' });
    expect(closed.status).toBe(4);
    expect(closed.stderr).toBe('EBADF');
  });
});

describe('captureOutput', () => {
  afterEach(() => captureOutput(null));

  it('sends writeOut to the sink as fd 1 and writeErr as fd 2, data as given', () => {
    const got: Array<[number, string | Uint8Array]> = [];
    captureOutput((fd, data) => got.push([fd, data]));
    const bytes = new Uint8Array([1, 2, 3]);
    writeOut('out');
    writeErr('err');
    writeOut(bytes);
    expect(got).toEqual([[1, 'out'], [2, 'err'], [1, bytes]]);
    expect(got[2][1]).toBe(bytes);
  });

  it('null puts the descriptors back: the sink no longer sees writes', () => {
    const got: string[] = [];
    captureOutput((_fd, data) => got.push(data.toString()));
    writeErr('one');
    captureOutput(null);
    // Goes to this process's stderr (an empty string keeps jest's output clean).
    writeErr('');
    expect(got).toEqual(['one']);
  });
});
