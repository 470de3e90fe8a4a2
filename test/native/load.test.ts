/**
 * Loading the addon says what is wrong: each cause (no build, a missing
 * run-time library, another Node ABI, a failed initialisation, not an addon
 * at all) is provoked for real by pointing loadAddon at files in a temporary
 * directory, and gets its own code, a one-line message with the fix, and the
 * original error as `cause`. The broken addons are made from the real build
 * (a copy whose needed library is renamed) or compiled with cc.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { NfqlbError } from '../../src/base/errors';
import { ADDON_FILES, loadAddon, loadFailure } from '../../src/addon/native';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), `nfqlbts-load-${process.pid}-`));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const built = ADDON_FILES.find((f) => fs.existsSync(f));
const haveCc = spawnSync('cc', ['--version']).status === 0;
if (!haveCc) console.warn('load.test.ts: no C compiler (cc); the ABI and self-register cases are skipped (scripts/setup.sh installs g++)');

function failure(files: string[]): NfqlbError {
  try {
    loadAddon(files);
  } catch (err) {
    expect(err).toBeInstanceOf(NfqlbError);
    const e = err as NfqlbError;
    expect(e.message).not.toContain('\n');
    return e;
  }
  throw new Error(`loadAddon(${files.join(', ')}) loaded`);
}

function compile(name: string, source: string): string {
  const c = path.join(tmp, `${name}.c`);
  const out = path.join(tmp, `${name}.node`);
  fs.writeFileSync(c, source);
  const r = spawnSync('cc', ['-shared', '-fPIC', '-o', out, c], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`cc failed: ${r.stderr}`);
  return out;
}

const itCc = haveCc ? it : it.skip;

describe('loadAddon', () => {
  it('loads the real build and hands it the error class', () => {
    expect(built).toBeDefined();
    const addon = loadAddon();
    expect(typeof addon.shmSize).toBe('function');
    expect(addon.shmSize(`nfqlbts-load-${process.pid}-absent`)).toBe(-1);
  });

  it('no build: NFQLB_ERR_ADDON_MISSING, names the files and says npm ci / npm run build', () => {
    const e = failure([path.join(tmp, 'none', 'nfqlb_native.node')]);
    expect(e.code).toBe('NFQLB_ERR_ADDON_MISSING');
    expect(e.message).toContain(path.join(tmp, 'none', 'nfqlb_native.node'));
    expect(e.message).toMatch(/npm ci.*npm run build/);
  });

  it('a missing run-time library: NFQLB_ERR_ADDON_LIBRARY naming it', () => {
    // The real addon with its DT_NEEDED libnetfilter_queue.so.1 renamed to a soname nobody has.
    const bytes = fs.readFileSync(built!);
    const from = Buffer.from('libnetfilter_queue.so.1');
    const to = Buffer.from('libnetfilter_queue.so.9');
    let at = bytes.indexOf(from);
    expect(at).toBeGreaterThan(0);
    for (; at >= 0; at = bytes.indexOf(from, at + 1)) to.copy(bytes, at);
    const file = path.join(tmp, 'nolib.node');
    fs.writeFileSync(file, bytes);
    const e = failure([file]);
    expect(e.code).toBe('NFQLB_ERR_ADDON_LIBRARY');
    expect(e.message).toBe('the native addon needs libnetfilter_queue.so.9, which is not installed; install the package that provides libnetfilter_queue.so.9');
    expect((e.cause as NodeJS.ErrnoException).code).toBe('ERR_DLOPEN_FAILED');
  });

  itCc('built for another Node: NFQLB_ERR_ADDON_ABI, says to rebuild for this Node', () => {
    // A module that registers itself with NODE_MODULE_VERSION 1, as an addon for an old Node would.
    const file = compile(
      'abi',
      `struct node_module { int nm_version; unsigned int nm_flags; void* nm_dso_handle; const char* nm_filename;
         void* nm_register_func; void* nm_context_register_func; const char* nm_modname; void* nm_priv; void* nm_link; };
       extern void node_module_register(void*);
       static struct node_module m = { 1, 0, 0, "abi.c", 0, 0, "nfqlbts_abi", 0, 0 };
       __attribute__((constructor)) static void reg(void) { node_module_register(&m); }\n`,
    );
    const e = failure([file]);
    expect(e.code).toBe('NFQLB_ERR_ADDON_ABI');
    expect(e.message).toContain('NODE_MODULE_VERSION 1;');
    expect(e.message).toContain(process.version);
    expect(e.message).toMatch(/npm rebuild \(or npx node-gyp rebuild\)$/);
    expect((e.cause as Error).message).toContain('NODE_MODULE_VERSION');
  });

  itCc('a shared object that is no addon (did not self-register): NFQLB_ERR_ADDON_INIT', () => {
    const e = failure([compile('noreg', 'int nfqlbts_nothing;\n')]);
    expect(e.code).toBe('NFQLB_ERR_ADDON_INIT');
    expect(e.message).toMatch(/failed to initialise \(Module did not self-register.*\); rebuild it: npm run build/);
  });

  it('initialisation that throws, or no setErrorClass: NFQLB_ERR_ADDON_INIT with the original as cause', () => {
    const throwing = path.join(tmp, 'throws.js');
    fs.writeFileSync(throwing, "throw new RangeError('init exploded');\n");
    const e1 = failure([throwing]);
    expect(e1.code).toBe('NFQLB_ERR_ADDON_INIT');
    expect(e1.message).toContain('init exploded');
    expect(e1.cause).toBeInstanceOf(RangeError);

    const noClass = path.join(tmp, 'noclass.js');
    fs.writeFileSync(noClass, 'module.exports = { shmSize() { return -1; } };\n');
    const e2 = failure([noClass]);
    expect(e2.code).toBe('NFQLB_ERR_ADDON_INIT');
    expect(e2.message).toContain('it has no setErrorClass()');
  });

  it('a file that is not a shared object: NFQLB_ERR_ADDON, says to rebuild', () => {
    const file = path.join(tmp, 'text.node');
    fs.writeFileSync(file, 'this is not an ELF file, it only has the name of one\n');
    const e = failure([path.join(tmp, 'absent.node'), file]);
    expect(e.code).toBe('NFQLB_ERR_ADDON');
    expect(e.message).toMatch(new RegExp(`^the native addon ${file} cannot be loaded \\(.*(invalid ELF header|file too short).*\\); rebuild it: npm run build`));
  });
});

describe('loadFailure (the words for what dlopen says)', () => {
  const dlopen = (message: string): Error => Object.assign(new Error(message), { code: 'ERR_DLOPEN_FAILED' });

  it.each([
    ['libnetfilter_queue.so.1', 'libnetfilter-queue1'],
    ['libmnl.so.0', 'libmnl0'],
  ])('%s missing → apt-get install %s', (lib, pkg) => {
    const cause = dlopen(`${lib}: cannot open shared object file: No such file or directory`);
    const e = loadFailure('/x/nfqlb_native.node', cause);
    expect(e).toMatchObject({ code: 'NFQLB_ERR_ADDON_LIBRARY', cause });
    expect(e.message).toBe(`the native addon needs ${lib}, which is not installed; install it: apt-get install ${pkg}`);
  });
});
