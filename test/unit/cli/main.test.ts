/** Command-line dispatch and option errors in nfqlb's words (getopt's, prefixed with the command name). */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { runInProcess, runSpawned, type CliRun } from '../../helpers/cli';
import { commandHelp, findCommand, parseOptions } from '../../../src/cli/main';
import type { NfqlbCommand } from '../../../src/cli/command';
import { DEFAULT_QLENGTH } from '../../../src/addon/queue';

interface Captured extends CliRun {
  words: string[];
}

/** nfqlb 1.2.0's answers to odd command lines (test/fixtures/cli/capture.py made them). */
const captured: Captured[] = fs
  .readFileSync(path.join(__dirname, '..', '..', 'fixtures', 'cli', 'options.jsonl'), 'utf8')
  .split('\n')
  .filter((l) => l !== '')
  .map((l) => JSON.parse(l) as Captured);

const isHelp = (c: Captured): boolean => c.rc === 0 && c.stdout.startsWith(c.words[0]) && c.stdout.includes('\n  ');

/**
 * What a command's help adds after nfqlb's lines: the options nfqlb lacks, then
 * the defaults the code uses (nfqlb's texts leave them out). The daemons' longer
 * tail is checked on its own below.
 */
const HELP_ADDS: Record<string, string> = {
  init: 'Defaults: --ownfw=0 --shm=nfqlb --N=32 --M=997\n',
  show: 'Defaults: --shm=nfqlb\n',
  activate: 'Defaults: --shm=nfqlb\n',
  deactivate: 'Defaults: --shm=nfqlb\n',
  version: '  --package Print the version of nfqlb-ts instead of the nfqlb release it is compatible with \n',
  fwmark: 'Defaults: --hash_mode=1\n',
  'flow-set': 'Defaults: --prio=0\n',
  trace: 'Defaults: --trace_address=unix:nfqlb-trace\n',
  stats: 'Defaults: --ft_shm=ftshm\n',
};

/**
 * What this CLI prints where it deliberately differs from nfqlb (docs/differences.md):
 * a command's help adds lines after nfqlb's (HELP_ADDS; the daemons list their extra
 * options and defaults), and messages always end with a newline.
 */
function expectedOf(c: Captured): CliRun {
  const want = { rc: c.rc, stdout: c.stdout, stderr: c.stderr };
  if (isHelp(c)) want.stdout += HELP_ADDS[c.words[0]] ?? '';
  if (want.stderr !== '' && !want.stderr.endsWith('\n')) want.stderr += '\n';
  return want;
}

function cmd(name: string): NfqlbCommand {
  const c = findCommand(name);
  if (c === undefined) throw new Error(name);
  return c;
}

describe('nfqlb command line', () => {
  it('lists the commands without arguments or with --help', async () => {
    for (const words of [[], ['--help'], ['-h']]) {
      const r = await runInProcess(words);
      expect(r.rc).toBe(0);
      expect(r.stdout).toMatch(/^Usage: nfqlb <command> \[opt\.\.\.\]\nCommands:\n/);
      for (const c of ['init', 'activate', 'flowlb', 'flow-set', 'replay', 'trace', 'loglevel']) expect(r.stdout).toContain(`\n  ${c}\n`);
    }
  });

  it('refuses an unknown command', async () => {
    expect(await runInProcess(['bogus-command'])).toEqual({ rc: 1, stdout: '', stderr: 'Unknown command [bogus-command]\n' });
  });

  it('names every missing required option', async () => {
    expect(await runInProcess(['flow-set'])).toEqual({ rc: 1, stdout: '', stderr: 'Missing option [--name]\nMissing option [--target]\n' });
    expect(await runInProcess(['flow-set', '--target=tshm-a'])).toEqual({ rc: 1, stdout: '', stderr: 'Missing option [--name]\n' });
  });

  it('refuses unknown options and options without their value', async () => {
    expect(await runInProcess(['init', '--bogus=1'])).toEqual({ rc: 1, stdout: '', stderr: "init: unrecognized option '--bogus=1'\n" });
    expect(await runInProcess(['show', '--shm'])).toEqual({ rc: 1, stdout: '', stderr: "show: option '--shm' requires an argument\n" });
    expect(await runInProcess(['init', '--shm=x', '--M'])).toEqual({ rc: 1, stdout: '', stderr: "init: option '--M' requires an argument\n" });
  });

  it('accepts --opt value as well as --opt=value, and a flag without a value', async () => {
    const a = await runInProcess(['show', '--shm', 'nfqlbts-none']);
    const b = await runInProcess(['show', '--shm=nfqlbts-none']);
    expect(a).toEqual(b);
    expect(a).toEqual({ rc: 1, stdout: '', stderr: 'FAILED mapSharedData: nfqlbts-none\n' });
  });

  it('prints per-command help with the options', async () => {
    const r = await runInProcess(['init', '--help']);
    expect(r.rc).toBe(0);
    expect(r.stdout).toContain('--M=');
    expect(r.stdout).toContain('--shm=');
  });
});

describe('the option parser is getopt_long_only, as in nfqlb 1.2.0', () => {
  it('has the captures', () => {
    expect(captured.length).toBeGreaterThan(100);
    expect(captured.filter(isHelp).length).toBeGreaterThan(30);
  });

  const differs = (c: Captured): boolean => ['flowlb', 'lb'].includes(c.words[0]) && isHelp(c);

  it.each(captured.filter((c) => !differs(c)).map((c) => [c.words.join(' '), c] as const))(
    '%s',
    async (_line, c) => {
      expect(await runInProcess(c.words)).toEqual(expectedOf(c));
    },
  );

  it.each(captured.filter((c) => ['flowlb', 'lb'].includes(c.words[0]) && isHelp(c)).map((c) => [c.words.join(' '), c] as const))(
    '%s: nfqlb\'s help, then the options nfqlb-ts adds',
    async (_line, c) => {
      const r = await runInProcess(c.words);
      expect(r.rc).toBe(0);
      expect(r.stdout.slice(0, c.stdout.length)).toBe(c.stdout);
      const [options, tail] = r.stdout.slice(c.stdout.length).split('Defaults of nfqlb-ts');
      const extra = options.split('\n').filter((l) => l !== '');
      expect(extra.map((l) => l.replace(/^(  --\w+)[= ].*/, '$1'))).toEqual(['  --fail_open', '  --batch', '  --rcvbuf', '  --metrics_address', '  --workers', '  --conntrack', '  --conntrack_ttl', '  --conntrack_udp_ttl']);
      // Then the defaults this daemon uses (nfqlb's text says 1024 for --qlength) and the variable.
      expect(tail).toContain(` --qlength=${DEFAULT_QLENGTH} `);
      expect(tail).toContain(' --queue=2 ');
      expect(tail).toMatch(/\nNFQLB_OPTIONS: the options nfqlb lacks \(--fail_open --batch --rcvbuf --metrics_address --workers --conntrack --conntrack_ttl --conntrack_udp_ttl\)\n/);
    },
  );

  it('trace-flow-set has nfqlb\'s help and options, no more', async () => {
    const r = await runInProcess(['trace-flow-set', '-h']);
    expect(r.stdout).toBe(
      'trace-flow-set [options]\n  Set a flow. An un-defined value means match-all.\n  Use comma separated lists for multiple items (no spaces)\n' +
        '  --name= Name of the flow (required)\n  --protocols= Protocols. tcp, udp, sctp \n  --dsts= Destination CIDRs \n  --srcs= Source CIDRs \n' +
        '  --dports= Destination port ranges \n  --sports= Source port ranges \n  --match= Bit-match statements \n',
    );
  });

  it('resolves prefixes among nfqlb\'s options before the ones nfqlb-ts adds', () => {
    // nfqlb: --m is --mtu; nfqlb-ts adds --metrics_address, which must not make it ambiguous.
    const mtu = parseOptions(cmd('flowlb'), ['--m=1400']);
    expect(mtu.kind === 'args' && mtu.args.mtu).toBe('1400');
    const metrics = parseOptions(cmd('flowlb'), ['--met=off']);
    expect(metrics.kind === 'args' && metrics.args.metrics_address).toBe('off');
    expect(parseOptions(cmd('flowlb'), ['--b=7'])).toMatchObject({ kind: 'args', args: { batch: '7' } });
    expect(parseOptions(cmd('trace-flow-set'), ['--p=tcp', '--name=x'])).toMatchObject({ kind: 'args', args: { protocols: 'tcp' } });
  });

  it('moves positional arguments behind the options, keeps their order, and stops at --', () => {
    const r = parseOptions(cmd('activate'), ['5', '--shm', 'tshm-x', '6', '--', '--index=1', '7']);
    expect(r).toEqual({ kind: 'args', args: { _: ['5', '6', '--index=1', '7'], shm: 'tshm-x' } });
  });

  it('with POSIXLY_CORRECT stops at the first positional argument, as glibc does', () => {
    const r = parseOptions(cmd('activate'), ['5', '--shm=tshm-x'], { POSIXLY_CORRECT: '1' });
    expect(r).toEqual({ kind: 'args', args: { _: ['5', '--shm=tshm-x'], shm: 'nfqlb' } });
  });

  it('gives flags true and fills in defaults', () => {
    const r = parseOptions(cmd('flowlb'), ['-promiscuous_ping', '--qu=0:3']);
    expect(r).toMatchObject({ kind: 'args', args: { promiscuous_ping: true, queue: '0:3', mtu: '1500' } });
    // No --qlength: left unset, so that the daemon can take its own longer default (docs/differences.md).
    expect((r as { args: Record<string, unknown> }).args.qlength).toBeUndefined();
  });

  it('version prints the version and nothing on stderr; --package gives nfqlb-ts\'s own', async () => {
    expect(await runInProcess(['version'])).toEqual({ rc: 0, stdout: '1.2.0\n', stderr: '' });
    const own = await runInProcess(['version', '--package']);
    expect(own).toEqual({ rc: 0, stdout: expect.stringMatching(/^nfqlb-ts \d+\.\d+\.\d+/), stderr: '' });
  });
});

describe('messages do not depend on the locale', () => {
  const lines: string[][] = [
    ['flow-set'],
    ['init', '--bogus=1'],
    ['init', '--shm'],
    ['flowlb', '--q=1'],
    ['flowlb', '--promiscuous_ping=1'],
    ['init', '-h'],
  ];
  const env = (extra: NodeJS.ProcessEnv): NodeJS.ProcessEnv => ({ ...process.env, NFQLB_FLOW_ADDRESS: 'unix:nfqlbts-cli-test-nothing', ...extra });

  it.each([
    ['LANG=de_DE.UTF-8', { LANG: 'de_DE.UTF-8' }],
    ['LC_ALL=fr_FR.UTF-8', { LC_ALL: 'fr_FR.UTF-8', LANGUAGE: 'fr' }],
  ])('bin/nfqlb under %s prints nfqlb\'s English texts', (_name, extra) => {
    for (const words of lines) {
      const want = captured.find((c) => c.words.join(' ') === words.join(' '));
      expect(want).toBeDefined();
      expect({ words, ...runSpawned(words, env(extra)) }).toEqual({ words, ...expectedOf(want as Captured) });
    }
  });
});

describe('commands, their help and parseOptions\' rules', () => {
  it('findCommand knows the commands the usage lists, and no other', async () => {
    const usage = (await runInProcess([])).stdout;
    const names = usage.split('\n').filter((l) => /^  [a-z-]+$/.test(l)).map((l) => l.trim());
    expect(names.length).toBeGreaterThan(15);
    for (const n of names) expect(findCommand(n)?.name).toBe(n);
    expect(findCommand('flow')).toBeUndefined();
    expect(findCommand('')).toBeUndefined();
  });

  it('commandHelp: the usage head, one line per option, "(required)" in place of the last space, then the defaults nfqlb does not state', () => {
    expect(commandHelp(cmd('flow-delete'))).toBe('flow-delete\n  Delete a flow\n  --name= Name of the flow (required)\n');
    const show = commandHelp(cmd('show'));
    expect(show).toBe('show [options]\n  Show shared mem structures\n  --shm= Shared memory \nDefaults: --shm=nfqlb\n');
  });

  it('the last of a repeated option wins; -h after an error is not reached, before one it is', () => {
    expect(parseOptions(cmd('show'), ['--shm=a', '--shm=b'])).toEqual({ kind: 'args', args: { _: [], shm: 'b' } });
    expect(parseOptions(cmd('show'), ['--bogus', '-h'])).toEqual({ kind: 'error', message: "show: unrecognized option '--bogus'" });
    expect(parseOptions(cmd('show'), ['-h', '--bogus'])).toEqual({ kind: 'help', text: commandHelp(cmd('show')) });
  });
});
