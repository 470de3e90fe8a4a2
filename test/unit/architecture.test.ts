/**
 * The shape of src/, read from its imports: no import circles, and every
 * import points down the layers below (CLI → daemon/replay → pipeline →
 * packet/flows/maglev → shm/native). A new module must be given a layer here;
 * that is the moment to decide where it belongs.
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

/**
 * Layer of each module (path inside src/ without .ts; `cli/` covers the whole
 * CLI). A module may import its own layer or lower ones; circles are caught
 * separately below.
 */
const LAYERS: Array<{ name: string; modules: string[] }> = [
  // catoi/cstring/inet: nfqlb's C library behaviour; flowfields: the flow fields and the flow-set client checks,
  // below both the CLI and the replay config reader that use them.
  { name: 'base', modules: ['errors', 'catoi', 'cstring', 'inet', 'flowfields', 'version', 'log', 'counters', 'hashkey', 'ratelog'] },
  { name: 'native', modules: ['native'] },
  // maglev.ts is the table layout over an ArrayBuffer (pure); shm.ts maps tables and trace settings.
  // controlwire: the client's side of the control protocol (address, request bytes), without node:net.
  { name: 'system', modules: ['maglev', 'regularfile', 'shm', 'queue', 'pcap', 'sockets', 'controlwire', 'fragstats', 'tun'] },
  // flowmatch (compiled Flow, per-packet tests) ← flowparse (text → Flow), flowindex ← flows (FlowSet).
  { name: 'packet/flows', modules: ['packet', 'conntrack', 'fragstore', 'fragments', 'reassembler', 'flowmatch', 'flowparse', 'flows', 'flowchange', 'flowindex', 'targets', 'tablestore'] },
  { name: 'pipeline', modules: ['pipeline', 'control', 'trace', 'metrics', 'servedtable', 'threadcounters'] },
  // packetthread: the body of a packet thread (--workers); packetthreads: the main thread's side of them.
  { name: 'daemon/replay', modules: ['daemon', 'config', 'flowsfile', 'packetthread', 'packetthreads'] },
  { name: 'cli', modules: ['cli/'] },
];

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

function layerOf(module: string): number {
  return LAYERS.findIndex((l) => l.modules.some((m) => (m.endsWith('/') ? module.startsWith(m) : module === m)));
}

const modules = listModules(SRC);
const known = new Set(modules);
const edges = modules.flatMap((m) => importsOf(m, fs.readFileSync(path.join(SRC, `${m}.ts`), 'utf8'), known));

describe('src/ imports', () => {
  it('finds the imports (the scanner itself works)', () => {
    expect(edges).toContainEqual({ from: 'cli/main', to: 'cli/commands/index' });
    expect(edges).toContainEqual({ from: 'daemon', to: 'pipeline' });
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
      { from: 'config', to: 'cli/main' },
      { from: 'cli/main', to: 'cli/commands/replay' },
      { from: 'cli/commands/replay', to: 'config' },
      { from: 'config', to: 'errors' },
    ];
    expect(findCycles(circle)).toEqual(['cli/commands/replay → config → cli/main → cli/commands/replay']);
  });

  it('has no import circles', () => {
    expect(findCycles(edges)).toEqual([]);
  });

  it('gives every module a layer (add new modules to LAYERS in this file)', () => {
    expect(modules.filter((m) => layerOf(m) < 0)).toEqual([]);
  });

  it('imports only from its own layer or lower ones: nothing outside src/cli imports src/cli', () => {
    const wrongWay = edges
      .filter((e) => layerOf(e.to) > layerOf(e.from))
      .map((e) => `${e.from} (${LAYERS[layerOf(e.from)]?.name}) imports ${e.to} (${LAYERS[layerOf(e.to)]?.name})`);
    expect(wrongWay).toEqual([]);
  });
});
