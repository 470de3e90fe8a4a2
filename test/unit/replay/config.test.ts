/**
 * The replay config reader (src/replay/config.ts): every kind of line it takes
 * (init, activate, deactivate, delete, show, flow-set, flow-delete, the
 * daemon line flowlb or lb; comments, blank lines, an `nfqlb` prefix) applied
 * to private memory tables, with the CLI's own parser handed in; and its one
 * rule for errors: the first line that fails stops the reading with
 * `FILE:LINE: message` on one line, whatever failed.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { applyConfig, loadConfig, type CommandParser, type ReplayConfig } from '../../../src/replay/config';
import { findCommand, parseCommandLine } from '../../../src/cli/main';
import { NfqlbError, UsageError } from '../../../src/base/errors';
import { captureOutput } from '../../../src/cli/output';

const REF = path.join(__dirname, '..', '..', 'fixtures', 'reference');
const ref = (file: string): Buffer => fs.readFileSync(path.join(REF, file));

/** What the CLI hands to the reader (cli/main.ts). */
const CLI: CommandParser = { find: findCommand, parse: parseCommandLine };

const apply = (lines: string[], file = 'test.cmds'): ReplayConfig => applyConfig(lines.join('\n'), file, CLI);

/** The error a config throws, as [code, message]. */
function failure(lines: string[], parser: CommandParser = CLI): [string, string] {
  try {
    applyConfig(lines.join('\n'), 'c.cmds', parser);
  } catch (err) {
    if (err instanceof NfqlbError) return [err.code, err.message];
    throw err;
  }
  throw new Error('the config was accepted');
}

const tableBytes = (config: ReplayConfig, name: string): Buffer => Buffer.from(config.store.open(name).buffer);

describe('lines a config takes', () => {
  it('the reference scenario: tables byte-identical to nfqlb\'s /dev/shm files, flows listed as nfqlb lists them', () => {
    const config = applyConfig(ref('decisions/multi.cmds').toString('utf8'), 'multi.cmds', CLI);
    expect(tableBytes(config, 'tshm-a').equals(ref('shm/tshm-a.bin'))).toBe(true);
    expect(tableBytes(config, 'tshm-b').equals(ref('shm/tshm-b.bin'))).toBe(true);
    expect(config.flows.list()).toBe(ref('cli/multi.flow-list.json').toString('latin1'));
    expect(config.daemon).toMatchObject({ command: 'flowlb', args: { notargets_fwmark: '7777', nolb_fwmark: '8888', hash_mode: '1' } });
  });

  it('skips blank lines and comments, trims, splits on any whitespace and drops a leading `nfqlb`', () => {
    const config = apply([
      '# a comment',
      '',
      '   nfqlb   init --shm=t1 --M=997 --N=4   ',
      '\tactivate\t--shm=t1  7',
      'nfqlb flow-set --name=all --target=t1',
    ]);
    expect(Array.from(config.store.open('t1').active).filter((v) => v >= 0)).toEqual([7]);
    expect(config.flows.listNames()).toBe('[\n  "all"\n]\n');
    expect(config.daemon).toBeNull();
  });

  it('deactivate and delete change the private table; show prints nothing and changes nothing', () => {
    const out = jest.spyOn(process.stdout, 'write');
    const written: string[] = [];
    captureOutput((fd, data) => written.push(`${fd}:${data.toString()}`));
    try {
      const config = apply([
        'init --shm=t1 --M=997 --N=4', 'activate --shm=t1 --index=0 7', 'activate --shm=t1 --index=1 8',
        'deactivate --shm=t1 7', 'show --shm=t1',
        'init --shm=t2 --M=997 --N=4', 'delete --shm=t2',
      ]);
      expect(Array.from(config.store.open('t1').active).filter((v) => v >= 0)).toEqual([8]);
      expect(() => config.store.open('t2')).toThrow(/table 't2' does not exist/);
      expect(out).not.toHaveBeenCalled();
      expect(written).toEqual([]);
    } finally {
      captureOutput(null);
      out.mockRestore();
    }
  });

  it('flow-delete removes the flow and gives back its table reference', () => {
    const config = apply([
      'init --shm=t1 --M=997 --N=4',
      'flow-set --name=a --target=t1', 'flow-set --name=b --target=t1', 'flow-delete --name=a',
    ]);
    expect(config.flows.listNames()).toBe('[\n  "b"\n]\n');
    expect(config.targets.list().map((t) => [t.name, t.refs])).toEqual([['t1', 1]]);
    expect(apply(['init --shm=t1 --M=997 --N=4', 'flow-set --name=a --target=t1', 'flow-delete --name=a']).targets.list()).toEqual([]);
  });

  it('keeps the lb daemon line with its options', () => {
    expect(apply(['init --shm=t1 --M=997 --N=4', 'lb --tshm=t1 --sctp_encap=9899']).daemon)
      .toMatchObject({ command: 'lb', args: { tshm: 't1', sctp_encap: '9899' } });
  });

  it('never touches /dev/shm', () => {
    const name = `nfqlbts-${process.pid}-cfg`;
    apply([`init --shm=${name} --M=997 --N=4`, `activate --shm=${name} 1`]);
    expect(fs.existsSync(`/dev/shm/${name}`)).toBe(false);
  });
});

describe('one rule for errors: FILE:LINE: message, one line, for the first line that fails', () => {
  const good = ['init --shm=t1 --M=997 --N=4', 'flow-set --name=all --target=t1'];
  it.each([
    ['a command nfqlb does not have', 'bogus --x=1', 'Unknown command [bogus]'],
    ['a command a replay cannot run', 'trace --selection=log', 'trace cannot be replayed (use init, activate, deactivate, delete, flow-set, flow-delete, flowlb, lb)'],
    ['an option the command does not have', 'init --shm=t2 --bogus=1', "init: unrecognized option '--bogus=1'"],
    ['missing options, several lines joined with "; "', 'flow-set --prio=3', 'Missing option [--name]; Missing option [--target]'],
    ['a table command that fails', 'activate --shm=t-missing 3', 'FAILED mapSharedData: t-missing'],
    ['a flow the daemon refuses (no table)', 'flow-set --name=x --target=t-missing', "FAIL: Couldn't create load-balancer"],
    ['a flow the daemon refuses (bad field)', 'flow-set --name=x --target=t1 --protocols=tcp --dsts=192.0.2.300/32', 'Invalid dsts'],
    ['a flow the CLI refuses before sending', 'flow-set --name=x --target=t1 --dports=80', 'ports specified without protocols'],
    ['a flow with an empty name (nfqlb takes it; the daemon does not)', 'flow-set --name= --target=t1', 'No name'],
    ['a flow named like a hidden udpencap flow', 'flow-set --name=#x --target=t1', "FAIL: names starting with '#' are the daemon's hidden udpencap flows; use another name"],
    ['a delete of a hidden udpencap flow', 'flow-delete --name=#all', "FAIL: names starting with '#' are the daemon's hidden udpencap flows; use another name"],
    ['a second daemon line', 'lb --tshm=t1', 'a second daemon line (the first is line 3); keep one lb line'],
  ])('%s', (_what, bad, message) => {
    const [code, text] = failure([...good, 'flowlb --queue=0:3', bad, 'flow-set --name=later --target=t1']);
    expect(code).toBe('NFQLB_ERR_CONFIG');
    expect(text.startsWith(`c.cmds:4: ${message}`)).toBe(true);
    expect(text).not.toContain('\n');
  });

  it('counts lines from 1, blank lines and comments included', () => {
    expect(failure(['', '# x', '', 'bogus'])).toEqual(['NFQLB_ERR_CONFIG', 'c.cmds:4: Unknown command [bogus]']);
  });

  it('wraps any NfqlbError of a handed-in parser, and lets a bug (any other error) through unchanged', () => {
    const refusing: CommandParser = { find: CLI.find, parse: () => { throw new UsageError('bad\n  words\n'); } };
    expect(failure(['init --shm=t1'], refusing)).toEqual(['NFQLB_ERR_CONFIG', 'c.cmds:1: bad; words']);
    const bug = new TypeError('a bug');
    const broken: CommandParser = { find: CLI.find, parse: () => { throw bug; } };
    expect(() => applyConfig('init --shm=t1', 'c.cmds', broken)).toThrow(bug);
  });

  it('loadConfig: an unreadable file is one NFQLB_ERR_CONFIG line; a readable one is applied under its path', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), `nfqlbts-${process.pid}-cfg-`));
    try {
      const missing = path.join(dir, 'nope.cmds');
      expect(() => loadConfig(missing, CLI)).toThrow(expect.objectContaining({
        code: 'NFQLB_ERR_CONFIG', message: expect.stringMatching(new RegExp(`^cannot read ${missing}: ENOENT`)),
      }));
      const file = path.join(dir, 'c.cmds');
      fs.writeFileSync(file, 'init --shm=t1 --M=997 --N=4\nflow-set --name=x --target=nope\n');
      expect(() => loadConfig(file, CLI)).toThrow(`${file}:2: FAIL: Couldn't create load-balancer`);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
