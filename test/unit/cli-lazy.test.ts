/**
 * Meridio starts one nfqlb process per change: a command line must load only
 * what its command uses. Runs the built CLI (dist/, npm run build) in a child
 * with a Module._load hook and reads which modules were loaded.
 */
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { allCommands, commandNames } from '../../src/cli/commands';

const ROOT = path.join(__dirname, '..', '..');
const HOOK = `
const M = require('module'); const load = M._load; const seen = new Set();
M._load = function (req, parent, isMain) { try { seen.add(M._resolveFilename(req, parent, isMain)); } catch { seen.add(req); } return load.apply(this, arguments); };
process.on('exit', () => process.stderr.write('\\nLOADED ' + JSON.stringify([...seen]) + '\\n'));
`;

function loaded(args: string[]): string[] {
  const r = spawnSync(process.execPath, ['-e', `${HOOK}; process.argv.splice(1, 0, 'nfqlb'); require(${JSON.stringify(path.join(ROOT, 'bin', 'nfqlb'))})`, ...args], {
    encoding: 'utf8',
    // A private, unused control address: flow commands fail to connect, which is fine here.
    env: { ...process.env, NFQLB_FLOW_ADDRESS: `unix:nfqlbts-cli-lazy-${process.pid}` },
  });
  const line = r.stderr.split('\n').find((l) => l.startsWith('LOADED '));
  if (line === undefined) throw new Error(`no module list: ${r.stderr}`);
  return JSON.parse(line.slice('LOADED '.length)) as string[];
}

const HEAVY = [/node_modules\/pino\//, /node_modules\/prom-client\//, /^(node:)?zlib$/, /^(node:)?worker_threads$/, /^(node:)?http$/, /dist\/daemon\.js$/, /dist\/metrics\.js$/, /dist\/log\.js$/];
const ADDON = /\.node$/;

describe('lazy loading of the command line', () => {
  it('names every command the files define, in their order', () => {
    expect(commandNames()).toEqual(allCommands().map((c) => c.name));
  });

  for (const args of [['version'], ['activate', '--shm=nfqlbts-cli-lazy-none', '1'], ['show', '--shm=nfqlbts-cli-lazy-none'], ['flow-list'], ['flow-set', '-h']]) {
    it(`${args.join(' ')} loads neither pino, prom-client, zlib, http, worker threads nor the daemon`, () => {
      const mods = loaded(args);
      for (const heavy of HEAVY) expect(mods.filter((m) => heavy.test(m))).toEqual([]);
    });
  }

  it('version and a command\'s help do not load the addon; flowlb --help is the daemon\'s and may', () => {
    expect(loaded(['version']).filter((m) => ADDON.test(m))).toEqual([]);
    expect(loaded(['activate', '-h']).filter((m) => ADDON.test(m))).toEqual([]);
    // The hook sees the daemon's modules for flowlb, so the test above can fail.
    expect(loaded(['flowlb', '--help']).some((m) => /node_modules\/pino\//.test(m))).toBe(true);
  });
});
