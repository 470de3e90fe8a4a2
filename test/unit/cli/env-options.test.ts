/**
 * $NFQLB_OPTIONS: the options this project adds to the daemons, for a
 * command line someone else fixed (Meridio's flowlb line is in its Go code;
 * a pod spec can only set the environment). The command line wins; only
 * extension options; every mistake is one line naming the variable.
 */
import { findCommand, parseEnvOptions, parseOptions } from '../../../src/cli/main';
import type { NfqlbCommand } from '../../../src/cli/command';
import { runInProcess } from '../../helpers/cli';

function cmd(name: string): NfqlbCommand {
  const c = findCommand(name);
  if (c === undefined) throw new Error(name);
  return c;
}

const MERIDIO = ['--promiscuous_ping', '--queue=0:3', '--qlength=1024', '--hash_mode=0'];

function argsOf(words: string[], value: string | undefined, name = 'flowlb'): Record<string, unknown> {
  const r = parseOptions(cmd(name), words, value === undefined ? {} : { NFQLB_OPTIONS: value });
  if (r.kind !== 'args') throw new Error(JSON.stringify(r));
  return r.args;
}

function errorOf(value: string, name = 'flowlb', words: string[] = MERIDIO): string {
  const r = parseOptions(cmd(name), words, { NFQLB_OPTIONS: value });
  if (r.kind !== 'error') throw new Error(`no error for ${value}: ${JSON.stringify(r)}`);
  return r.message;
}

describe('NFQLB_OPTIONS', () => {
  it('turns --conntrack on for Meridio\'s fixed line (issue 23: the table must be reachable without changing Meridio)', () => {
    expect(argsOf(MERIDIO, '--conntrack=1000000 --conntrack_ttl=600')).toMatchObject({ conntrack: '1000000', conntrack_ttl: '600', conntrack_udp_ttl: '120', queue: '0:3' });
    expect(argsOf([...MERIDIO, '--conntrack=5'], '--conntrack=1000000').conntrack).toBe('5'); // the command line wins
  });

  it('adds the options nfqlb-ts adds to Meridio\'s fixed line', () => {
    const args = argsOf(MERIDIO, '  --metrics_address=192.0.2.10:9657\t--flows_file=/var/lib/nfqlb/flows --fail_open --workers 2 ');
    expect(args).toMatchObject({
      metrics_address: '192.0.2.10:9657', flows_file: '/var/lib/nfqlb/flows', fail_open: true, workers: '2',
      queue: '0:3', qlength: '1024', hash_mode: '0', promiscuous_ping: true, batch: '64',
    });
    // What each would have been without it, for errors that must name the variable.
    expect(args.fromEnv).toEqual({ metrics_address: '0.0.0.0:9657', flows_file: undefined, fail_open: undefined, workers: undefined });
  });

  it('loses to the command line', () => {
    const args = argsOf([...MERIDIO, '--metrics_address=off', '--batch=8'], '--metrics_address=192.0.2.10:9657 --batch=32 --rcvbuf=65536');
    expect(args).toMatchObject({ metrics_address: 'off', batch: '8', rcvbuf: '65536' });
    expect(args.fromEnv).toEqual({ rcvbuf: undefined });
  });

  it('is ignored when unset, empty or blank, and by commands other than the daemons', () => {
    expect(argsOf(MERIDIO, undefined).fromEnv).toBeUndefined();
    expect(argsOf(MERIDIO, '').fromEnv).toBeUndefined();
    expect(argsOf(MERIDIO, '   ').fromEnv).toBeUndefined();
    expect(argsOf(['--shm=x'], '--bogus', 'show')).toMatchObject({ shm: 'x' });
    expect(argsOf(['--tshm=t'], '--metrics_address=off', 'lb')).toMatchObject({ tshm: 't', metrics_address: 'off' });
  });

  it('refuses nfqlb\'s own options, saying which may be given there', () => {
    expect(errorOf('--metrics_address=off --queue=1')).toBe(
      "NFQLB_OPTIONS: --queue=1 is one of nfqlb's own options of flowlb; only the options nfqlb-ts adds may be given here"
      + ' (--fail_open, --batch, --rcvbuf, --metrics_address, --workers, --conntrack, --conntrack_ttl, --conntrack_udp_ttl, --flows_file): put it on the command line',
    );
    expect(errorOf('-qlength=10')).toMatch(/^NFQLB_OPTIONS: -qlength=10 is one of nfqlb's own options of flowlb;/);
    expect(errorOf('--tshm=x', 'lb', [])).toMatch(/^NFQLB_OPTIONS: --tshm=x is one of nfqlb's own options of lb; .*\(--fail_open, --batch, --rcvbuf, --metrics_address, --workers, --conntrack, --conntrack_ttl, --conntrack_udp_ttl\)/);
    // flows_file is flowlb's only.
    expect(errorOf('--flows_file=/x', 'lb', [])).toBe("NFQLB_OPTIONS: unrecognized option '--flows_file=/x' (NFQLB_OPTIONS may hold only --fail_open, --batch, --rcvbuf, --metrics_address, --workers, --conntrack, --conntrack_ttl, --conntrack_udp_ttl)");
  });

  it('refuses unknown options, words that are no option, and a missing value, in one line', () => {
    for (const [value, want] of [
      ['--bogus=1', /^NFQLB_OPTIONS: unrecognized option '--bogus=1' \(NFQLB_OPTIONS may hold only /],
      ['--metrics_address', /^NFQLB_OPTIONS: option '--metrics_address' requires an argument \(/],
      ['--fail_open=1', /^NFQLB_OPTIONS: option '--fail_open' doesn't allow an argument \(/],
      ['metrics_address=off', /^NFQLB_OPTIONS: 'metrics_address=off' is not an option; use --name=value words separated by spaces/],
      ['--help', /^NFQLB_OPTIONS: unrecognized option '--help'/],
    ] as const) {
      const message = errorOf(value);
      expect(message).toMatch(want);
      expect(message).not.toContain('\n');
    }
  });

  it('parses the words as the command line is (prefixes among its own options)', () => {
    expect(parseEnvOptions(cmd('flowlb'), '--metrics=off --flows=/f')).toEqual([['metrics_address', 'off'], ['flows_file', '/f']]);
  });
});

describe('a bad value in NFQLB_OPTIONS', () => {
  const saved = process.env.NFQLB_OPTIONS;
  afterEach(() => {
    if (saved === undefined) delete process.env.NFQLB_OPTIONS;
    else process.env.NFQLB_OPTIONS = saved;
  });

  it.each([
    ['--batch=many', 'NFQLB_OPTIONS: Invalid --batch=many: use a number from 1 to 1024 (NFQLB_OPTIONS=--batch=many)'],
    ['--workers=-1', 'NFQLB_OPTIONS: Invalid --workers=-1: use a number from 0 to 1024 (NFQLB_OPTIONS=--workers=-1)'],
    ['--metrics_address=nowhere', 'NFQLB_OPTIONS: invalid metrics address "nowhere": expected HOST:PORT (e.g. 0.0.0.0:9657), [IPv6]:PORT (e.g. [::]:9657) or off (NFQLB_OPTIONS=--metrics_address=nowhere)'],
  ])('%s stops flowlb before it starts, with one line naming the variable', async (value, line) => {
    process.env.NFQLB_OPTIONS = value;
    expect(await runInProcess(['flowlb', ...MERIDIO])).toEqual({ rc: 1, stdout: '', stderr: `${line}\n` });
  });

  it('is not blamed for a bad command line', async () => {
    process.env.NFQLB_OPTIONS = '--batch=many';
    expect(await runInProcess(['flowlb', '--mtu=10'])).toEqual({ rc: 1, stdout: '', stderr: 'Invalid MTU; 10\n' });
    process.env.NFQLB_OPTIONS = '--batch=8';
    expect(await runInProcess(['flowlb', '--batch=0'])).toEqual({ rc: 1, stdout: '', stderr: 'Invalid --batch=0: use a number from 1 to 1024\n' });
  });
});
