/**
 * The table commands end to end: init/activate/deactivate/show/delete,
 * fwmark and primebelow against nfqlb's captures (reference/shm, reference/cli),
 * both in-process through main() and through the real `bin/nfqlb` (after a
 * tsc build). Every shm object is named nfqlbts-test-<pid>-<name> and removed.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { runInProcess as runCli, runSpawned as runBin, type CliRun } from '../../../helpers/cli';
import { atoi } from '../../../../src/base/catoi';
import { referencePath } from '../../../helpers/reference';

const ROOT = path.join(__dirname, '..', '..', '..', '..');
const PREFIX = `nfqlbts-test-${process.pid}-`;
const devShm = (name: string): string => `/dev/shm/${PREFIX}${name}`;

/** Points every --shm= at a test-private name. */
function mapArgs(words: string[]): string[] {
  return words.map((w) => w.replace(/^--shm=(.*)$/, `--shm=${PREFIX}$1`));
}
/** Undoes mapArgs in output (show and error messages print the name). */
function unmapText(text: string): string {
  return text.split(PREFIX).join('');
}

interface Run {
  rc: number;
  stdout: string;
  stderr: string;
}

const unmapped = (r: CliRun): Run => ({ rc: r.rc, stdout: unmapText(r.stdout), stderr: unmapText(r.stderr) });
const runInProcess = async (words: string[]): Promise<Run> => unmapped(await runCli(mapArgs(words)));
const runSpawned = (words: string[]): Run => unmapped(runBin(mapArgs(words)));

function removeAll(): void {
  for (const f of fs.readdirSync('/dev/shm')) if (f.startsWith(PREFIX)) fs.rmSync(`/dev/shm/${f}`, { force: true });
}

/** The table lines (init/activate/deactivate) of a reference scenario, split on spaces as the README says. */
function tableLines(scenario: string): string[][] {
  return fs
    .readFileSync(referencePath('decisions', `${scenario}.cmds`), 'utf8')
    .split('\n')
    .map((l) => l.trim().split(' ').filter((w) => w !== ''))
    .filter((w) => ['init', 'activate', 'deactivate'].includes(w[0]));
}

function tablesOf(lines: string[][]): string[] {
  const names = new Set<string>();
  for (const l of lines) for (const w of l) if (w.startsWith('--shm=')) names.add(w.slice(6));
  return [...names];
}

async function expectParity(scenario: string, run: (w: string[]) => Run | Promise<Run>): Promise<void> {
  const lines = tableLines(scenario);
  expect(lines.length).toBeGreaterThan(0);
  for (const l of lines) {
    const r = await run(l);
    expect({ line: l.join(' '), ...r }).toEqual({ line: l.join(' '), rc: 0, stdout: expect.any(String), stderr: '' });
    // Only init may print, and only the M adjustment.
    if (r.stdout !== '') expect(r.stdout).toMatch(/^M adjusted; \d+ -> \d+\n$/);
  }
  for (const name of tablesOf(lines)) {
    const ref = fs.readFileSync(referencePath('shm', `${name}.bin`));
    const mine = fs.readFileSync(devShm(name));
    expect({ name, size: mine.length, equal: mine.equals(ref) }).toEqual({ name, size: ref.length, equal: true });
    const show = await run(['show', `--shm=${name}`]);
    expect(show).toEqual({ rc: 0, stdout: fs.readFileSync(referencePath('shm', `${name}.show`), 'utf8'), stderr: '' });
  }
}

afterEach(removeAll);
afterAll(removeAll);

describe('parity with nfqlb: tables built by the CLI', () => {
  it.each(['multi', 'trench', 'empty'])('%s.cmds in-process: /dev/shm bytes and show output', async (scenario) => {
    await expectParity(scenario, runInProcess);
  });

  it('trench prints the M adjustment (10000 -> 9973)', async () => {
    const r = await runInProcess(['init', '--ownfw=0', '--shm=tshm-stream-a-i', '--M=10000', '--N=100']);
    expect(r).toEqual({ rc: 0, stdout: 'M adjusted; 10000 -> 9973\n', stderr: '' });
  });
});

describe('fwmark and primebelow (reference/cli/fwmark-primebelow.txt)', () => {
  const lines = fs.readFileSync(referencePath('cli', 'fwmark-primebelow.txt'), 'utf8').split('\n');
  const cases: [string, string][] = [];
  for (let i = 0; i + 1 < lines.length; i += 2) if (lines[i] !== '') cases.push([lines[i], lines[i + 1]]);

  beforeEach(async () => {
    for (const l of [...tableLines('multi'), ...tableLines('trench')]) expect((await runInProcess(l)).rc).toBe(0);
  });

  it('has 15 reference lines', () => expect(cases.length).toBe(15));

  it.each(cases)('%s', async (cmd, want) => {
    const r = await runInProcess(cmd.split(' '));
    expect(r).toEqual({ rc: 0, stdout: `${want}\n`, stderr: '' });
  });

  it('without --shm prints only the hash', async () => {
    const r = await runInProcess(['fwmark', '--proto=tcp', '--src=198.51.100.7:33000', '--dst=192.0.2.1:80']);
    expect(r).toEqual({ rc: 0, stdout: '{ "hash": 2617759782 }\n', stderr: '' });
  });

  it('IPv4-mapped written as IPv6 hashes like IPv4', async () => {
    const a = await runInProcess(['fwmark', '--proto=tcp', '--src=[::ffff:198.51.100.7]:33000', '--dst=192.0.2.1:80']);
    expect(a.stdout).toBe('{ "hash": 2617759782 }\n');
  });

  it.each([
    [['--src=1.2.3.4', '--dst=1.2.3.4:1'], 'No port in [1.2.3.4]'],
    [['--src=1.2.3.400:1', '--dst=1.2.3.4:1'], 'Parse address failed [1.2.3.400:1]'],
    [['--src=[1::2::3]:1', '--dst=1.2.3.4:1'], 'Parse address failed [[1::2::3]:1]'],
    [['--src=[1::2]:70000', '--dst=1.2.3.4:1'], 'Parse address failed [[1::2]:70000]'],
    [[`--src=[${'1:'.repeat(30)}]:1`, '--dst=1.2.3.4:1'], `Address too long [[${'1:'.repeat(30)}]:1]`],
    [['--src=1.2.3.4:1', '--dst=1.2.3.4:1', '--proto=icmp'], 'Failed to parse protocol [icmp]'],
    [['--dst=1.2.3.4:1'], 'Missing option [--src]'],
    [['--src=1.2.3.4:1', '--dst=1.2.3.4:1', '--shm=tshm-none'], 'FAILED mapSharedData: tshm-none'],
  ])('fwmark %j fails with "%s"', async (args, msg) => {
    expect(await runInProcess(['fwmark', ...args])).toEqual({ rc: 1, stdout: '', stderr: `${msg}\n` });
  });

  it('primebelow without an argument prints nothing; below 2 is an error', async () => {
    expect(await runInProcess(['primebelow'])).toEqual({ rc: 0, stdout: '', stderr: '' });
    expect(await runInProcess(['primebelow', '1'])).toEqual({ rc: 1, stdout: '', stderr: 'There is no prime below 1\n' });
  });
});

describe('error cases of reference/cli/errors.txt for table commands', () => {
  const text = fs.readFileSync(referencePath('cli', 'errors.txt'), 'utf8').split('\n');
  const cases: [string, number, string][] = [];
  for (let i = 0; i + 1 < text.length; i++) {
    const m = /^ {2}rc=(\d+) out=(.*)$/.exec(text[i + 1]);
    if (m && /^(init|delete|show|activate|deactivate|fwmark|primebelow|bogus-command)\b/.test(text[i])) {
      cases.push([text[i], Number(m[1]), m[2]]);
    }
  }

  beforeEach(async () => {
    for (const l of tableLines('multi')) expect((await runInProcess(l)).rc).toBe(0);
  });

  it('covers activate, show, init and the unknown command', () => {
    expect(cases.map((c) => c[0].split(' ')[0]).sort()).toEqual(['activate', 'bogus-command', 'init', 'show']);
  });

  it.each(cases)('%s → rc=%d out=%s', async (cmd, rc, want) => {
    const r = await runInProcess(cmd.split(' '));
    // errors.txt joins stdout and stderr lines with '|'.
    const got = (r.stdout + r.stderr).split('\n').join('|');
    expect({ rc: r.rc, out: got }).toEqual({ rc, out: want });
  });

  it('a refused init creates nothing', async () => {
    await runInProcess(['init', '--shm=tshm-x', '--M=10', '--N=20']);
    expect(fs.existsSync(devShm('tshm-x'))).toBe(false);
  });
});

describe('other command-line behaviour', () => {
  it('init defaults: nfqlb-sized table, M adjusted from small values', async () => {
    expect(await runInProcess(['init', '--shm=d'])).toEqual({ rc: 0, stdout: '', stderr: '' });
    expect(fs.statSync(devShm('d')).size).toBe(131760);
    expect(await runInProcess(['init', '--shm=d', '--M=0', '--N=3'])).toEqual({ rc: 0, stdout: 'M adjusted; 0 -> 3\n', stderr: '' });
    expect(await runInProcess(['init', '--shm=d', '--M=2000000', '--N=1'])).toEqual({
      rc: 0,
      stdout: 'M adjusted; 2000000 -> 993997\n',
      stderr: '',
    });
    expect(await runInProcess(['init', '--shm=d', '--M=31', '--N=-1'])).toEqual({
      rc: 1,
      stdout: '',
      stderr: "N can't be larger than M\n",
    });
  });

  it('activate/deactivate by fwmark and index; index checks and no-ops', async () => {
    await runInProcess(['init', '--shm=t', '--M=31', '--N=3']);
    expect((await runInProcess(['activate', '--shm=t', '--index=1'])).rc).toBe(0); // no fwmark: nothing
    expect((await runInProcess(['activate', '--shm=t', '--index=9'])).rc).toBe(0); // not even the index is checked
    expect(await runInProcess(['activate', '--shm=t', '--index=-1', '5'])).toEqual({ rc: 1, stdout: '', stderr: 'Lookup index too large\n' });
    expect(await runInProcess(['deactivate', '--shm=t', '--index=3'])).toEqual({ rc: 1, stdout: '', stderr: 'Lookup index too large\n' });
    expect((await runInProcess(['activate', '--shm=t', '7', '8', '9', '10'])).rc).toBe(0);
    expect((await runInProcess(['show', '--shm=t'])).stdout).toContain('   Active: 7(0) 8(1) 9(2)\n');
    expect((await runInProcess(['deactivate', '--shm=t', '8'])).rc).toBe(0);
    expect((await runInProcess(['deactivate', '--shm=t', '--index=0'])).rc).toBe(0);
    expect((await runInProcess(['show', '--shm=t'])).stdout).toContain('   Active: 9(2)\n');
    expect((await runInProcess(['activate', '--shm=t', '--index=0', '12abc'])).rc).toBe(0);
    expect((await runInProcess(['show', '--shm=t'])).stdout).toContain('   Active: 12(0) 9(2)\n');
  });

  it('activate/deactivate on a missing table', async () => {
    expect(await runInProcess(['activate', '--shm=gone', '1'])).toEqual({ rc: 1, stdout: '', stderr: 'FAILED mapSharedData: gone\n' });
    expect(await runInProcess(['deactivate', '--shm=gone', '--index=0'])).toEqual({
      rc: 1,
      stdout: '',
      stderr: 'FAILED mapSharedData: gone\n',
    });
  });

  it('delete: removes, missing is fine, --shm is required', async () => {
    await runInProcess(['init', '--shm=del', '--M=31', '--N=3']);
    expect(await runInProcess(['delete', '--shm=del'])).toEqual({ rc: 0, stdout: '', stderr: '' });
    expect(fs.existsSync(devShm('del'))).toBe(false);
    expect(await runInProcess(['delete', '--shm=del'])).toEqual({ rc: 0, stdout: '', stderr: '' });
    expect(await runInProcess(['delete'])).toEqual({ rc: 1, stdout: '', stderr: 'Missing option [--shm]\n' });
  });

  it('truncated and foreign shm files: one clear line, exit 1, no stack trace', async () => {
    fs.writeFileSync(devShm('three'), 'abc');
    const bad = Buffer.from(fs.readFileSync(referencePath('shm', 'tshm-f.bin')));
    bad.writeUInt32LE(4, 12);
    fs.writeFileSync(devShm('badlen'), bad);
    for (const cmd of [
      ['show', '--shm=three'],
      ['activate', '--shm=three', '1'],
      ['deactivate', '--shm=badlen', '--index=0'],
      ['show', '--shm=badlen'],
      ['fwmark', '--shm=three', '--src=1.2.3.4:1', '--dst=1.2.3.4:2'],
    ]) {
      const r = await runInProcess(cmd);
      expect(r.rc).toBe(1);
      expect(r.stdout).toBe('');
      const name = cmd[1].slice(6);
      expect(r.stderr).toMatch(new RegExp(`^(${cmd[0]}: )?shared memory '${name}' is not a valid nfqlb table: .*nfqlb init --shm=${name}.*\\n$`));
      expect(r.stderr.split('\n').length).toBe(2);
    }
    expect((await runInProcess(['show', '--shm=three'])).stderr).toContain('it is 3 bytes');
    expect((await runInProcess(['show', '--shm=badlen'])).stderr).toContain('len field is 4 but M=31, N=3 need 532');
    // The bytes of a foreign file are left alone.
    expect(fs.readFileSync(devShm('three'), 'utf8')).toBe('abc');
  });
});

describe('through the real bin/nfqlb', () => {
  beforeAll(() => {
    // tsc emits dist/ even when another module has type errors; only a missing
    // dist/cli/main.js makes these tests meaningless.
    try {
      execFileSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', '.'], { cwd: ROOT, stdio: 'pipe' });
    } catch {
      /* reported by the checks below */
    }
    expect(fs.existsSync(path.join(ROOT, 'dist', 'cli', 'main.js'))).toBe(true);
  }, 180000);

  it('empty.cmds and multi.cmds: bytes and show output', async () => {
    await expectParity('empty', runSpawned);
    await expectParity('multi', runSpawned);
  });

  it('errors and foreign files', () => {
    expect(runSpawned(['show', '--shm=tshm-missing'])).toEqual({ rc: 1, stdout: '', stderr: 'FAILED mapSharedData: tshm-missing\n' });
    expect(runSpawned(['init', '--shm=tshm-x', '--M=10', '--N=20'])).toEqual({
      rc: 1,
      stdout: 'M adjusted; 10 -> 7\n',
      stderr: "N can't be larger than M\n",
    });
    fs.writeFileSync(devShm('three'), 'abc');
    const r = runSpawned(['show', '--shm=three']);
    expect(r.rc).toBe(1);
    expect(r.stderr).toMatch(/^(show: )?shared memory 'three' is not a valid nfqlb table: it is 3 bytes.*\n$/);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });

  it('fwmark and primebelow', () => {
    for (const l of tableLines('trench')) runSpawned(l);
    expect(runSpawned(['fwmark', '--shm=tshm-stream-a-i', '--proto=tcp', '--src=169.254.100.150:35000', '--dst=20.0.0.1:4000'])).toEqual({
      rc: 0,
      stdout: '{ "hash": 2003005932, "lookupindex": 8666, "activeindex": 16, "fwmark": 5017 }\n',
      stderr: '',
    });
    expect(runSpawned(['primebelow', '10000']).stdout).toBe('9973\n');
  });
});

describe('atoi (how nfqlb reads numbers)', () => {
  it.each([
    ['12', 12],
    ['  -7', -7],
    ['+3', 3],
    ['12abc', 12],
    ['abc', 0],
    ['', 0],
    ['4294967297', 1],
    ['99999999999999999999', -1],
    ['-99999999999999999999', 0],
  ])('atoi(%j) = %d', (s, v) => {
    expect(atoi(s)).toBe(v);
  });
});
