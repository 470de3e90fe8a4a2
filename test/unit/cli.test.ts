/** Command-line dispatch and option errors in nfqlb's words (getopt's, prefixed with the command name). */
import { runInProcess } from '../helpers/cli';

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
    expect(await runInProcess(['init', '--bogus=1'])).toEqual({ rc: 1, stdout: '', stderr: "init: unrecognized option '--bogus'\n" });
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
