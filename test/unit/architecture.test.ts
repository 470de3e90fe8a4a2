/**
 * The shape of src/, read from its folders and imports: every module lives in
 * a folder, the folders are the layers (listed below, lowest first), every
 * import points to its own folder or a lower one, and there is no import
 * circle. A new folder must be given its place here; that is the moment to
 * decide where it belongs. The tests mirror the tree: every module has
 * test/unit/<folder>/<module>.test.ts, unless it is listed below with its reason.
 *
 * Imports are found with TypeScript's own pre-processor (`ts.preProcessFile`:
 * import/export-from, `import type`, require() and import()), so comments and
 * strings cannot fool it and no other dependency is needed. Type-only imports
 * count: a type from the CLI in a library module points the wrong way too.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as ts from 'typescript';

const SRC = path.join(__dirname, '..', '..', 'src');

/** The folders of src/, lowest layer first. A module may import its own folder or a lower one. */
const LAYERS: ReadonlyArray<{ name: string; holds: string }> = [
  { name: 'base', holds: "errors, nfqlb's C library behaviour (numbers, strings, addresses), logs, counters, the regular-file rule" },
  { name: 'addon', holds: 'the only importers of the addon loader: shm objects, queues, sockets, the tun device, process calls' },
  { name: 'packet', holds: 'classification of one raw packet and its hash key' },
  { name: 'tables', holds: 'Maglev tables (pure, over an ArrayBuffer), their files in /dev/shm, the tables a daemon serves and their targets' },
  { name: 'flows', holds: 'flow fields, parsing, matching, the flow set and its index, the one rule for a change' },
  { name: 'fragments', holds: 'the fragment table, the fragment store, reassembly and their statistics' },
  { name: 'datapath', holds: 'the per-packet decision: the pipeline, the connection table and the batch handler' },
  { name: 'services', holds: 'the control protocol and server, the trace server, the metrics registry and its HTTP server' },
  { name: 'daemon', holds: 'the daemon: life cycle, control actions, table housekeeping, the flows file, packet threads' },
  { name: 'replay', holds: '`nfqlb replay`: captures and a config of command lines, replayed in memory' },
  { name: 'cli', holds: 'the nfqlb command line' },
];

/** The per-packet path: what it must not use (checked on its source). */
const HOT_PATH = 'datapath';
/** The addon loader, which only addon/ may import. */
const ADDON_LOADER = 'addon/native';

interface ImportEdge {
  from: string;
  to: string;
}

/** Every .ts file under `dir`, as module ids relative to `root` ("cli/main"). */
function listModules(dir: string, root = dir): string[] {
  const out: string[] = [];
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) out.push(...listModules(full, root));
    else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.d.ts')) {
      out.push(path.relative(root, full).slice(0, -3).split(path.sep).join('/'));
    }
  }
  return out.sort();
}

/** Imports of one source text that name another module of the same tree (relative specifiers). */
function importsOf(module: string, text: string, known: Set<string>): ImportEdge[] {
  const edges: ImportEdge[] = [];
  const info = ts.preProcessFile(text, true, true);
  for (const ref of info.importedFiles) {
    if (!ref.fileName.startsWith('.')) continue; // node:, packages
    const target = path.posix.normalize(path.posix.join(path.posix.dirname(module), ref.fileName.replace(/\.(js|ts)$/, '')));
    const to = known.has(target) ? target : known.has(`${target}/index`) ? `${target}/index` : null;
    if (to !== null) edges.push({ from: module, to });
  }
  return edges;
}

/** One circle per strongly connected group of modules, as a path "a → b → a". */
function findCycles(edges: ImportEdge[]): string[] {
  const next = new Map<string, string[]>();
  for (const e of edges) next.set(e.from, [...(next.get(e.from) ?? []), e.to]);
  const cycles: string[] = [];
  const state = new Map<string, 'open' | 'done'>();
  const stack: string[] = [];
  const visit = (m: string): void => {
    state.set(m, 'open');
    stack.push(m);
    for (const to of next.get(m) ?? []) {
      if (state.get(to) === 'open') cycles.push([...stack.slice(stack.indexOf(to)), to].join(' → '));
      else if (state.get(to) === undefined) visit(to);
    }
    stack.pop();
    state.set(m, 'done');
  };
  for (const m of [...next.keys()].sort()) if (state.get(m) === undefined) visit(m);
  return cycles;
}

function folderOf(module: string): string {
  return module.includes('/') ? module.slice(0, module.indexOf('/')) : '';
}

function layerOf(module: string): number {
  return LAYERS.findIndex((l) => l.name === folderOf(module));
}

/** Calls of require() whose argument is not a plain string (the scanner reads tokens, so comments do not count). */
function computedRequires(text: string): number {
  const scanner = ts.createScanner(ts.ScriptTarget.ES2022, true, ts.LanguageVariant.Standard, text);
  const tokens: Array<{ kind: ts.SyntaxKind; text: string }> = [];
  for (let t = scanner.scan(); t !== ts.SyntaxKind.EndOfFileToken; t = scanner.scan()) tokens.push({ kind: t, text: scanner.getTokenText() });
  let n = 0;
  for (let i = 0; i + 2 < tokens.length; i++) {
    if (tokens[i].text === 'require' && tokens[i + 1].kind === ts.SyntaxKind.OpenParenToken) {
      if (tokens[i + 2].kind !== ts.SyntaxKind.StringLiteral) n++;
    }
  }
  return n;
}

/** Identifiers of a source text (comments and strings skipped by TypeScript's scanner). */
function identifiersOf(text: string): Set<string> {
  const scanner = ts.createScanner(ts.ScriptTarget.ES2022, true, ts.LanguageVariant.Standard, text);
  const out = new Set<string>();
  for (let t = scanner.scan(); t !== ts.SyntaxKind.EndOfFileToken; t = scanner.scan()) {
    if (t === ts.SyntaxKind.Identifier) out.add(scanner.getTokenText());
  }
  return out;
}

const modules = listModules(SRC);
const known = new Set(modules);
const edges = modules.flatMap((m) => importsOf(m, fs.readFileSync(path.join(SRC, `${m}.ts`), 'utf8'), known));

describe('src/ imports', () => {
  it('finds the imports (the scanner itself works)', () => {
    expect(edges).toContainEqual({ from: 'cli/main', to: 'cli/commands/index' });
    expect(edges).toContainEqual({ from: 'daemon/daemon', to: 'datapath/pipeline' });
    const multiLine = "import {\n  a,\n  b,\n} from './x';\nexport { c } from '../y';\nconst z = require('./z');\nimport type { T } from './t';\n// import { no } from './comment';\n";
    expect(importsOf('sub/m', multiLine, new Set(['sub/x', 'y', 'sub/z', 'sub/t', 'sub/comment']))).toEqual([
      { from: 'sub/m', to: 'sub/x' },
      { from: 'sub/m', to: 'y' },
      { from: 'sub/m', to: 'sub/z' },
      { from: 'sub/m', to: 'sub/t' },
    ]);
  });

  it('the circle finder reports a circle', () => {
    const circle = [
      { from: 'replay/config', to: 'cli/main' },
      { from: 'cli/main', to: 'cli/commands/replay' },
      { from: 'cli/commands/replay', to: 'replay/config' },
      { from: 'replay/config', to: 'base/errors' },
    ];
    expect(findCycles(circle)).toEqual(['cli/commands/replay → replay/config → cli/main → cli/commands/replay']);
  });

  it('has no import circles', () => {
    expect(findCycles(edges)).toEqual([]);
  });

  it('keeps every module in a folder that is a layer (a new folder goes into LAYERS in this file)', () => {
    expect(modules.filter((m) => layerOf(m) < 0)).toEqual([]);
    const folders = fs.readdirSync(SRC, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name).sort();
    expect(folders).toEqual(LAYERS.map((l) => l.name).sort());
  });

  it('lets only addon/ import the addon loader', () => {
    expect(edges.filter((e) => e.to === ADDON_LOADER && folderOf(e.from) !== 'addon').map((e) => e.from)).toEqual([]);
  });

  it('keeps the per-packet path free of Node modules, the logger and timers', () => {
    const hot = modules.filter((m) => folderOf(m) === HOT_PATH);
    expect(hot.length).toBeGreaterThan(1);
    const found: string[] = [];
    for (const m of hot) {
      const text = fs.readFileSync(path.join(SRC, `${m}.ts`), 'utf8');
      for (const ref of ts.preProcessFile(text, true, true).importedFiles) {
        if (!ref.fileName.startsWith('.')) found.push(`${m} imports ${ref.fileName}`);
      }
      for (const e of edges) if (e.from === m && e.to === 'base/log') found.push(`${m} imports the logger`);
      const ids = identifiersOf(text);
      for (const timer of ['setTimeout', 'setInterval', 'setImmediate', 'queueMicrotask', 'process']) {
        if (ids.has(timer)) found.push(`${m} uses ${timer}`);
      }
    }
    expect(found).toEqual([]);
  });

  it('keeps every module under 500 lines (one concern per module)', () => {
    const long = modules.map((m) => [m, fs.readFileSync(path.join(SRC, `${m}.ts`), 'utf8').split('\n').length] as const).filter(([, n]) => n > 500);
    expect(long).toEqual([]);
  });

  it('hides no import from the scanner: no require() of a computed name, no triple-slash reference', () => {
    const hidden: string[] = [];
    for (const m of modules) {
      const text = fs.readFileSync(path.join(SRC, `${m}.ts`), 'utf8');
      if (computedRequires(text) > 0 && m !== ADDON_LOADER) hidden.push(`${m}: require() of a computed name`);
      if (ts.preProcessFile(text, true, true).referencedFiles.length > 0) hidden.push(`${m}: /// <reference path>`);
    }
    expect(hidden).toEqual([]);
    expect(computedRequires("const dir = '../cli';\nrequire(`${dir}/main`);\nrequire('./x');\n// require(y)")).toBe(1);
  });

  it('the hot-path check sees a timer and a Node module', () => {
    expect(identifiersOf('// setTimeout in a comment\nconst s = "setInterval";\nsetImmediate(f);').has('setImmediate')).toBe(true);
    expect(identifiersOf('// setTimeout in a comment\nconst s = "setInterval";').has('setTimeout')).toBe(false);
  });

  it('imports only from its own folder or lower ones: nothing outside src/cli imports src/cli', () => {
    const wrongWay = edges
      .filter((e) => layerOf(e.to) > layerOf(e.from))
      .map((e) => `${e.from} (${LAYERS[layerOf(e.from)]?.name}) imports ${e.to} (${LAYERS[layerOf(e.to)]?.name})`);
    expect(wrongWay).toEqual([]);
  });
});

// ---------------------------------------------------------------------------
// Tests mirror the tree: src/<folder>/<module>.ts has test/unit/<folder>/<module>.test.ts.

const ROOT = path.join(__dirname, '..', '..');

/**
 * Modules whose behaviour only a native suite can show (the addon's objects,
 * queues, threads and devices; test/native/ runs against the built addon),
 * each with a text its suite must contain, so the entry cannot outlive the
 * suite's reason to be named here.
 */
const NATIVE_SUITES: Readonly<Record<string, { suite: string; shows: string }>> = {
  'addon/queue': { suite: 'test/native/queue.test.ts', shows: "from '../../src/addon/queue'" },
  'addon/shm': { suite: 'test/native/shm.test.ts', shows: "from '../../src/addon/shm'" },
  'tables/tablefile': { suite: 'test/native/shm.test.ts', shows: "from '../../src/tables/tablefile'" },
  'addon/tun': { suite: 'test/native/tun.test.ts', shows: "from '../../src/addon/tun'" },
  'tables/servedtable': { suite: 'test/native/servedtable.test.ts', shows: "from '../../src/tables/servedtable'" },
  'addon/native': { suite: 'test/native/load.test.ts', shows: "from '../../src/addon/native'" },
  // openRegularFile, through every caller that opens a /dev/shm name, against a FIFO, a socket, a directory...
  'base/regularfile': { suite: 'test/native/not-a-file.test.ts', shows: 'openRegularFile' },
};

/**
 * Modules tested together by one unit suite, with a text the suite must
 * contain: the reference generators are one pipeline from the command table
 * to the committed files, which the suite compares with what they make now
 * (and runs the completion in a real bash).
 */
const TESTED_TOGETHER: Readonly<Record<string, { suite: string; shows: string }>> = {
  'cli/reference/table': { suite: 'test/unit/cli/reference.test.ts', shows: "from '../../../src/cli/reference/table'" },
  'cli/reference/bash': { suite: 'test/unit/cli/reference.test.ts', shows: "'contrib', 'bash-completion', 'nfqlb'" },
  'cli/reference/man': { suite: 'test/unit/cli/reference.test.ts', shows: "'docs/nfqlb.1'" },
  'cli/reference/markdown': { suite: 'test/unit/cli/reference.test.ts', shows: "'docs/options.md'" },
  // The flows file's format and its journal writer are one file on disk: their suite writes with one and reads with the other.
  'daemon/flowsjournal': { suite: 'test/unit/daemon/flowsfile.test.ts', shows: "from '../../../src/daemon/flowsjournal'" },
  // Signals and the inspector check are the daemon's start-up failures, tested with the others.
  'daemon/processguard': { suite: 'test/unit/daemon/failures.test.ts', shows: "from '../../../src/daemon/processguard'" },
};

/** Modules without logic of their own to test (re-exports, constants, one-line wrappers), each with the reason. */
const WITHOUT_LOGIC: Readonly<Record<string, string>> = {
  'services/metrics/index': 're-exports the metrics modules',
  'services/trace/index': 're-exports the trace modules',
  'services/metrics/source': "the daemon's side of the metrics as interfaces, and the retention default; the registry's tests use it",
  'base/version': "two constants: nfqlb's release and package.json's version (`nfqlb version` prints both: test/unit/cli/main.test.ts)",
  'cli/commandorder': "nfqlb's command list and a sort by it; the help's command list and the reference use it (test/unit/cli/main.test.ts, test/unit/cli/reference.test.ts)",
  'addon/blockingsocket': "one call into the addon's unixConnect; test/unit/cli/client.test.ts connects through it",
  'addon/process': "two one-line calls into the addon; setThreadName's native side is test/native/threadname.test.ts's",
  'cli/commands/version': 'prints one of two constants; test/unit/cli/main.test.ts runs `nfqlb version` with and without --package',
  'cli/commands/completion': 'prints the generated completion file; test/unit/cli/reference.test.ts runs `nfqlb completion bash` and zsh',
  'daemon/options': "the daemon's options as an interface; test/unit/cli/commands/lb.test.ts checks what the command line makes of them",
  'daemon/threadmessages': 'the messages between the main thread and a packet thread, as types; test/unit/daemon/packetthreads.test.ts exchanges them',
};

/** The modules of `all` with neither test/unit/<module>.test.ts (as `hasTest` says) nor an entry in `excused`. */
function untested(all: readonly string[], hasTest: (module: string) => boolean, excused: ReadonlySet<string>): string[] {
  return all.filter((m) => !hasTest(m) && !excused.has(m));
}

const unitTestOf = (m: string): string => path.join(ROOT, 'test', 'unit', `${m}.test.ts`);
const hasUnitTest = (m: string): boolean => fs.existsSync(unitTestOf(m));
const listed = [...Object.keys(NATIVE_SUITES), ...Object.keys(TESTED_TOGETHER), ...Object.keys(WITHOUT_LOGIC)];

describe('tests mirror src/', () => {
  it('every module with logic has a test of its own', () => {
    const excused = new Set(listed);
    // A new module: write test/unit/<folder>/<module>.test.ts (or, only for the reasons above, add it to a list here).
    expect(untested(modules, hasUnitTest, excused)).toEqual([]);
  });

  it('the check finds a module without a test', () => {
    expect(untested(['base/a', 'base/b', 'cli/c'], (m) => m === 'base/a', new Set(['cli/c']))).toEqual(['base/b']);
    expect(untested([...modules, 'base/nonexistent-module'], hasUnitTest, new Set(modules))).toEqual(['base/nonexistent-module']);
  });

  it('every listed module exists and has no unit test of its own (else it leaves the list)', () => {
    expect(listed.filter((m) => !known.has(m))).toEqual([]);
    expect(listed.filter(hasUnitTest)).toEqual([]);
    expect(new Set(listed).size).toBe(listed.length);
  });

  it('each native or shared suite named exists and exercises its module', () => {
    const wrong = Object.entries({ ...NATIVE_SUITES, ...TESTED_TOGETHER })
      .filter(([, { suite, shows }]) => !fs.existsSync(path.join(ROOT, suite)) || !fs.readFileSync(path.join(ROOT, suite), 'utf8').includes(shows))
      .map(([m, { suite }]) => `${m}: ${suite}`);
    expect(wrong).toEqual([]);
  });

  it('every test file the reasons name exists', () => {
    const named = Object.values(WITHOUT_LOGIC).flatMap((why) => why.match(/test\/[\w/.-]+\.test\.ts/g) ?? []);
    expect(named.length).toBeGreaterThan(0);
    expect(named.filter((f) => !fs.existsSync(path.join(ROOT, f)))).toEqual([]);
  });

});
