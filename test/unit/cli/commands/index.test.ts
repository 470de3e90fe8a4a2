/**
 * Meridio starts one nfqlb process per change: a command line must load only
 * what its command uses. Runs the built CLI (dist/, npm run build) in a child
 * with a Module._load hook and reads which modules were loaded.
 */
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { allCommands, commandNames } from '../../../../src/cli/commands';

const ROOT = path.join(__dirname, '..', '..', '..', '..');
const HOOK = `
const M = require('module'); const load = M._load; const seen = new Set();
M._load = function (req, parent, isMain) { try { seen.add(M._resolveFilename(req, parent, isMain)); } catch { seen.add(req); } return load.apply(this, arguments); };
process.on('exit', () => require('fs').writeSync(2, '\\nLOADED ' + JSON.stringify([...seen]) + '\\nBUILTINS ' + JSON.stringify(process.moduleLoadList) + '\\n'));
`;

function run(args: string[]): string {
  const r = spawnSync(process.execPath, ['-e', `${HOOK}; process.argv.splice(1, 0, 'nfqlb'); require(${JSON.stringify(path.join(ROOT, 'bin', 'nfqlb'))})`, ...args], {
    encoding: 'utf8',
    // A private, unused control address: flow commands fail to connect, which is fine here.
    env: { ...process.env, NFQLB_FLOW_ADDRESS: `unix:nfqlbts-cli-lazy-${process.pid}` },
  });
  return r.stderr;
}

function listed(stderr: string, tag: string): string[] {
  const line = stderr.split('\n').find((l) => l.startsWith(`${tag} `));
  if (line === undefined) throw new Error(`no ${tag} list: ${stderr}`);
  return JSON.parse(line.slice(tag.length + 1)) as string[];
}

/** The modules a command line loaded (require, as resolved). */
function loaded(args: string[]): string[] {
  return listed(run(args), 'LOADED');
}

/** Node's own modules a command line loaded, beside what the hook itself needs (process.moduleLoadList). */
function builtins(args: string[]): string[] {
  return listed(run(args), 'BUILTINS');
}

// The daemon's folder, the metrics, the logger, and what is generated from the option table (only `completion` needs it).
const HEAVY = [
  /node_modules\/pino\//, /node_modules\/prom-client\//, /^(node:)?zlib$/, /^(node:)?worker_threads$/, /^(node:)?http$/,
  /dist\/daemon\//, /dist\/services\/metrics/, /dist\/base\/log\.js$/, /dist\/cli\/reference\//,
];
const ADDON = /\.node$/;

describe('lazy loading of the command line', () => {
  it('names every command the files define, in their order', () => {
    expect(commandNames()).toEqual(allCommands().map((c) => c.name));
  });

  const MERIDIO_LINES = [
    ['init', '--ownfw=0', '--shm=/', '--M=10000', '--N=100'], ['activate', '--index=0', '--shm=nfqlbts-cli-lazy-none', '5001'],
    ['deactivate', '--index=0', '--shm=nfqlbts-cli-lazy-none'], ['show', '--shm=nfqlbts-cli-lazy-none'], ['delete', '--shm=nfqlbts-cli-lazy-none'],
    ['flow-set', '--name=tshm-a-f', '--target=tshm-a', '--prio=1', '--protocols=tcp'], ['flow-delete', '--name=tshm-a-f'], ['flow-list'],
  ];
  for (const args of [['version'], ['activate', '--shm=nfqlbts-cli-lazy-none', '1'], ['show', '--shm=nfqlbts-cli-lazy-none'], ['flow-list'], ['flow-set', '-h'], ...MERIDIO_LINES]) {
    it(`${args.join(' ')} loads neither pino, prom-client, zlib, http, worker threads nor the daemon`, () => {
      const mods = loaded(args);
      for (const heavy of HEAVY) expect(mods.filter((m) => heavy.test(m))).toEqual([]);
    });
  }

  // Output is written to descriptors 1 and 2 (src/cli/output.ts) and control requests go through the
  // addon's connect (src/cli/client.ts): a stream on stdout (a pipe under Meridio) loads node:net and
  // Node's stream modules, and \`import * as\` of node:util (Node 24) streams and worker_threads.
  // What Node loads anyway, before any of this CLI's code.
  const bare = (): Set<string> => new Set(listed(spawnSync(process.execPath, ['-e', HOOK], { encoding: 'utf8' }).stderr, 'BUILTINS'));
  for (const args of MERIDIO_LINES) {
    it(`${args[0]}, as Meridio runs it, loads none of Node's stream, net or worker modules`, () => {
      const base = bare();
      const mods = builtins(args).filter((m) => !base.has(m));
      expect(mods.filter((m) => /^NativeModule (net|stream|worker_threads|tty|internal\/streams\/.*|internal\/fs\/sync_write_stream)$/.test(m))).toEqual([]);
    });
  }

  it('version and a command\'s help do not load the addon; flowlb --help is the daemon\'s and may', () => {
    expect(loaded(['version']).filter((m) => ADDON.test(m))).toEqual([]);
    expect(loaded(['activate', '-h']).filter((m) => ADDON.test(m))).toEqual([]);
    // The hook sees the daemon's modules for flowlb, so the test above can fail.
    expect(loaded(['flowlb', '--help']).some((m) => /node_modules\/pino\//.test(m))).toBe(true);
  });

  it('only nfqlb completion loads the reference generators (the patterns above match what they should)', () => {
    expect(loaded(['flowlb', '--help']).filter((m) => /dist\/cli\/reference\//.test(m))).toEqual([]);
    expect(loaded(['completion', 'bash']).some((m) => /dist\/cli\/reference\/bash\.js$/.test(m))).toBe(true);
    expect(loaded(['flowlb', '--help']).some((m) => /dist\/daemon\/daemon\.js$/.test(m))).toBe(true);
  });
});
