/**
 * Every open of a name in /dev/shm, in TypeScript (openRegularFile, used by
 * openTable and the fragment statistics) and in the addon (shmMap, shmSize,
 * used by the trace settings and `nfqlb init`), refuses at once anything that
 * is not a regular file, with NFQLB_ERR_NOT_FILE and a message naming what is
 * there; a FIFO never blocks. Each call runs in a child process with a
 * deadline, so a regression shows as a failure, not as a hung suite.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

const DIST = path.join(__dirname, '..', '..', 'dist');
const PREFIX = `nfqlbts-${process.pid}-naf`;
const made: string[] = [];

const KINDS: Record<string, (file: string) => void> = {
  FIFO: (file) => spawnSync('mkfifo', [file]),
  socket: (file) => spawnSync('python3', ['-c', 'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])', file]),
  directory: (file) => fs.mkdirSync(file),
  'device node': (file) => spawnSync('mknod', [file, 'c', '1', '3']),
  'symbolic link': (file) => fs.symlinkSync('/dev/null', file),
};

/** Runs `code` (with `dist` and `name` in scope) in a child; returns what it printed, or 'TIMEOUT'. */
function inChild(code: string, name: string): string {
  const r = spawnSync(process.execPath, ['-e', `const dist = ${JSON.stringify(DIST)}; const name = ${JSON.stringify(name)};
    try { const v = (() => { ${code} })(); console.log('OK', v); } catch (e) { console.log(e.code, e.message); }`], { encoding: 'utf8', timeout: 5000 });
  return r.error !== undefined ? 'TIMEOUT' : r.stdout.trim();
}

const CALLS: Record<string, string> = {
  openTable: `return require(dist + '/tables/tablefile').openTable(name).M`,
  'openTable (writable)': `return require(dist + '/tables/tablefile').openTable(name, true).M`,
  'addon shmMap read-only': `return require(dist + '/addon/native').native().shmMap(name, 0, 0).byteLength`,
  'addon shmMap create': `return require(dist + '/addon/native').native().shmMap(name, 2, 8).byteLength`,
  'addon shmSize': `return require(dist + '/addon/native').native().shmSize(name)`,
  'trace settings (openOrCreateTraceShm)': `return require(dist + '/addon/shm').openOrCreateTraceShm(name).level`,
  'fragment statistics read (nfqlb stats)': `return require(dist + '/fragments/stats').readFragStats(name).size`,
  'fragment statistics write (--ft_shm)': `const { FragStatsWriter, readFragStats } = require(dist + '/fragments/stats');
    return new FragStatsWriter(name).write({ ttlNanos: 0n, size: 0, active: 0, collisions: 0, inserts: 0, rejectedInserts: 0, lookups: 0, objGC: 0, bucketsMax: 0, bucketsUsed: 0, bucketsAllocated: 0, fragsMax: 0, fragsUsed: 0, fragsDiscarded: 0, fragsAllocated: 0, reAssembled: 0, mtu: 0 })`,
};

afterAll(() => {
  for (const f of made) fs.rmSync(f, { recursive: true, force: true });
});

describe.each(Object.keys(KINDS))('a %s in /dev/shm', (kind) => {
  const name = `${PREFIX}-${kind.replace(/ /g, '')}`;
  const file = `/dev/shm/${name}`;
  beforeAll(() => {
    fs.rmSync(file, { recursive: true, force: true });
    made.push(file);
    KINDS[kind](file);
    expect(fs.lstatSync(file).isFile()).toBe(false);
  });

  it.each(Object.keys(CALLS))('%s refuses it at once with NFQLB_ERR_NOT_FILE', (call) => {
    const out = inChild(CALLS[call], name);
    expect(out).toMatch(/^NFQLB_ERR_NOT_FILE /);
    expect(out).toContain(`/dev/shm/${name} is a`);
    expect(out).toContain(kind === 'FIFO' ? 'FIFO' : kind);
    // Still what it was: nothing was created, truncated or followed.
    expect(fs.lstatSync(file).isFile()).toBe(false);
  });
});

describe('the flows file', () => {
  it.each(Object.keys(KINDS))('a %s at --flows_file refuses the start at once, in one line that says what is there', (kind) => {
    const file = `/dev/shm/${PREFIX}-flows-${kind.replace(/ /g, '')}`;
    fs.rmSync(file, { recursive: true, force: true });
    made.push(file);
    KINDS[kind](file);
    const out = inChild(`return require(dist + '/daemon/flowsfile').loadFlowsFile(name)`, file);
    expect(out).toMatch(/^NFQLB_ERR_FLOWS_FILE flows file .* is unusable: /);
    expect(out).toContain(`${file} is a`);
    expect(fs.lstatSync(file).isFile()).toBe(false);
  });
});

describe('a regular file', () => {
  it('still opens, and O_CREAT still creates one', () => {
    const name = `${PREFIX}-regular`;
    made.push(`/dev/shm/${name}`);
    expect(inChild(`return require(dist + '/addon/native').native().shmMap(name, 2, 8).byteLength`, name)).toBe('OK 8');
    expect(inChild(`return require(dist + '/addon/native').native().shmSize(name)`, name)).toBe('OK 8');
    expect(inChild(`return require(dist + '/addon/native').native().shmSize(name + 'x')`, name)).toBe('OK -1');
  });
});
