/**
 * What is generated from the option table (src/cli/reference/, written by
 * scripts/gen-cli-reference.js): the files in the repository are what the
 * generator makes now, the bash completion completes in a real bash, the man
 * page passes groff's checks, and the defaults they state are the ones the
 * command line takes.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { runInProcess, ROOT } from '../../helpers/cli';
import { allCommands } from '../../../src/cli/commands';
import { parseOptions } from '../../../src/cli/main';
import { referenceCommands } from '../../../src/cli/reference/table';
import { DEFAULT_QLENGTH } from '../../../src/addon/queue';

// eslint-disable-next-line @typescript-eslint/no-require-imports -- the generator is plain JavaScript
const generator = require(path.join(ROOT, 'scripts', 'gen-cli-reference.js')) as { render(load: (m: string) => unknown): Array<[string, string]> };
// eslint-disable-next-line @typescript-eslint/no-require-imports -- the sources, as the generator reads dist/
const files = generator.render((m) => require(path.join(ROOT, 'src', 'cli', m)));
const COMPLETION = path.join(ROOT, 'contrib', 'bash-completion', 'nfqlb');

describe('files generated from the option table', () => {
  it.each(files.map(([file, text]) => [path.relative(ROOT, file), text]))('%s is what scripts/gen-cli-reference.js writes now', (file, text) => {
    // On a failure: node scripts/gen-cli-reference.js (after npm run build:ts), and commit the result.
    expect(fs.readFileSync(path.join(ROOT, file), 'utf8')).toBe(text);
  });

  it('nfqlb completion bash prints the completion file; another shell is refused in one line', async () => {
    expect(await runInProcess(['completion', 'bash'])).toEqual({ rc: 0, stdout: fs.readFileSync(COMPLETION, 'utf8'), stderr: '' });
    expect(await runInProcess(['completion', 'zsh'])).toEqual({ rc: 1, stdout: '', stderr: 'Unknown shell [zsh]: only bash is supported (nfqlb completion bash)\n' });
  });

  it('every command and every option of the help is in the man page, the options reference and the completion', () => {
    const [completion, man, options] = ['contrib/bash-completion/nfqlb', 'docs/nfqlb.1', 'docs/options.md'].map((f) => fs.readFileSync(path.join(ROOT, f), 'utf8'));
    for (const c of referenceCommands(allCommands())) {
      expect(man).toContain(`.SS ${c.name.replace(/-/g, '\\-')}\n`);
      expect(options).toContain(`\n## ${c.name}\n`);
      for (const o of c.options) {
        expect(man).toContain(`\\-\\-${o.name.replace(/-/g, '\\-')}`);
        expect(options).toContain(`| \`--${o.name}${o.takesValue ? '=' : ''}\` |`);
        expect(completion).toMatch(new RegExp(`\\n    ${c.name}\\) opts='[^']*--${o.name}${o.takesValue ? '=' : ''}[ ']`));
      }
    }
  });

  it('states the defaults the command line takes', () => {
    const commands = allCommands();
    for (const c of referenceCommands(commands)) {
      const cmd = commands.find((x) => x.name === c.name);
      // The required options given, nothing else: what parseOptions fills in is the default.
      const required = c.options.filter((o) => o.required).map((o) => `--${o.name}=x`);
      const line = parseOptions(cmd as never, required, {});
      expect(line.kind).toBe('args');
      for (const o of c.options) {
        const spec = cmd?.options[o.name];
        // A default in words (ft_frag's '100(0 without --tun)') is the code's own rule, checked where it is made.
        if (line.kind === 'args' && spec?.default !== undefined && spec.defaultDescription === undefined) expect([c.name, o.name, line.args[o.name]]).toEqual([c.name, o.name, o.default]);
      }
    }
    const flowlb = referenceCommands(commands).find((c) => c.name === 'flowlb');
    expect(flowlb?.options.find((o) => o.name === 'qlength')?.default).toBe(String(DEFAULT_QLENGTH));
    expect(flowlb?.options.find((o) => o.name === 'metrics_address')?.default).toBe('0.0.0.0:9657');
    expect(referenceCommands(commands).find((c) => c.name === 'version')?.options.map((o) => o.name)).toEqual(['package']);
  });

  const groff = spawnSync('groff', ['--version']).status === 0;
  (groff ? it : it.skip)('the man page has no groff warnings (skipped without groff)', () => {
    const r = spawnSync('groff', ['-man', '-Tutf8', '-ww', '-z', path.join(ROOT, 'docs', 'nfqlb.1')], { encoding: 'utf8' });
    expect({ status: r.status, stderr: r.stderr }).toEqual({ status: 0, stderr: '' });
  });
});

describe('the bash completion, in bash', () => {
  const tag = `nfqlbts-compl-${process.pid}`;
  const table = `/dev/shm/${tag}-web`;
  let dir: string;
  beforeAll(() => {
    fs.writeFileSync(table, '');
    dir = fs.mkdtempSync(path.join(os.tmpdir(), `${tag}-`));
    // Stands in for a daemon's answer to flow-list-names (nfqlb's format: one name per line).
    fs.writeFileSync(path.join(dir, 'nfqlb'), '#!/bin/sh\n[ "$1" = flow-list-names ] && printf \'[\\n  "web",\\n  "db"\\n]\\n\'\n', { mode: 0o755 });
  });
  afterAll(() => {
    fs.rmSync(table, { force: true });
    fs.rmSync(dir, { recursive: true, force: true });
  });

  /** COMPREPLY for the words (the last one is being completed), as bash's completion would call _nfqlb. */
  function complete(...words: string[]): string[] {
    const script = `source ${JSON.stringify(COMPLETION)}; COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); _nfqlb; printf '%s\\n' "\${COMPREPLY[@]}"`;
    const r = spawnSync('bash', ['-c', script, 'bash', ...words], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    return r.stdout.split('\n').filter((l) => l !== '');
  }

  it('offers the commands', () => {
    expect(complete('nfqlb', '')).toEqual(expect.arrayContaining(['init', 'activate', 'flowlb', 'flow-set', 'replay', 'conntrack', 'completion']));
    expect(complete('nfqlb', 'flow-l')).toEqual(['flow-list', 'flow-list-names']);
  });

  it('offers the options of the command, with = for those that take a value', () => {
    expect(complete('nfqlb', 'init', '--')).toEqual(['--help', '--ownfw=', '--shm=', '--N=', '--M=']);
    expect(complete('nfqlb', 'flowlb', '--q')).toEqual(['--queue=', '--qlength=']);
    expect(complete('nfqlb', 'version', '--p')).toEqual(['--package']);
  });

  it('offers the tables in /dev/shm for --shm, --target and --tshm, in every form of the command line', () => {
    expect(complete('nfqlb', 'show', `--shm=${tag}`)).toEqual([`--shm=${tag}-web`]);
    // bash splits "--shm=" at '=' (COMP_WORDBREAKS): "--shm" "=" "prefix".
    expect(complete('nfqlb', 'activate', '--shm', '=', tag)).toEqual([`${tag}-web`]);
    expect(complete('nfqlb', 'activate', '--shm', '=')).toContain(`${tag}-web`);
    expect(complete('nfqlb', 'flow-set', '--name=a', '--target', tag)).toEqual([`${tag}-web`]);
    expect(complete('nfqlb', 'replay', `-tshm=${tag}`)).toEqual([`-tshm=${tag}-web`]);
    // A flag takes no value: what follows it is an option again.
    expect(complete('nfqlb', 'flowlb', '--promiscuous_ping', tag)).toEqual([]);
  });

  it('offers protocols, trace selections and hash modes, the last item of a list after the others', () => {
    expect(complete('nfqlb', 'flow-set', '--protocols=tcp,s')).toEqual(['--protocols=tcp,sctp']);
    expect(complete('nfqlb', 'trace', '--selection', '=', 'log,fl')).toEqual(['log,flow-conf', 'log,flows']);
    expect(complete('nfqlb', 'fwmark', '--hash_mode=')).toEqual(['--hash_mode=0', '--hash_mode=1']);
    expect(complete('nfqlb', 'completion', '')).toEqual(['bash']);
  });

  it('offers hostile names in /dev/shm as themselves, quoted, and never runs them', () => {
    const cwd = fs.mkdtempSync(path.join(os.tmpdir(), `${tag}-cwd-`));
    const names = [`${tag}-x$(touch pwned1)`, `${tag}-y\`touch pwned2\``, `${tag}-sp ace`, `${tag}-q'uote`, `${tag}-g*`];
    try {
      for (const n of names) fs.writeFileSync(`/dev/shm/${n}`, '');
      fs.writeFileSync(path.join(cwd, `${tag}-gfile`), '');
      const script = `cd ${JSON.stringify(cwd)}; source ${JSON.stringify(COMPLETION)}; COMP_WORDS=(nfqlb show --shm=${tag}-); COMP_CWORD=2; _nfqlb; printf '%s\\n' "\${COMPREPLY[@]}"`;
      const r = spawnSync('bash', ['-c', script], { encoding: 'utf8' });
      expect(r.stderr).toBe('');
      const offered = r.stdout.split('\n').filter((l) => l !== '');
      // Each, unquoted by bash as the command line would be, is exactly one of the names.
      const unquoted = offered.map((w) => spawnSync('bash', ['-c', `printf '%s' ${w}`], { encoding: 'utf8' }).stdout);
      expect(unquoted.sort()).toEqual([`--shm=${tag}-web`, ...names.map((n) => `--shm=${n}`)].sort());
      expect(fs.readdirSync(cwd).sort()).toEqual([`${tag}-gfile`]);
    } finally {
      for (const n of names) fs.rmSync(`/dev/shm/${n}`, { force: true });
      fs.rmSync(cwd, { recursive: true, force: true });
    }
  });

  it('offers hostile flow names as themselves and never runs them', () => {
    const fake = path.join(dir, 'nfqlb-hostile');
    fs.writeFileSync(fake, '#!/bin/sh\n[ "$1" = flow-list-names ] && printf \'[\\n  "$(touch pwned3)",\\n  "a b"\\n]\\n\'\n', { mode: 0o755 });
    const script = `cd ${JSON.stringify(dir)}; source ${JSON.stringify(COMPLETION)}; COMP_WORDS=(${JSON.stringify(fake)} flow-delete --name=); COMP_CWORD=2; _nfqlb; printf '%s\\n' "\${COMPREPLY[@]}"`;
    const r = spawnSync('bash', ['-c', script], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    const unquoted = r.stdout.split('\n').filter((l) => l !== '').map((w) => spawnSync('bash', ['-c', `printf '%s' ${w}`], { encoding: 'utf8' }).stdout);
    expect(unquoted).toEqual(['--name=$(touch pwned3)', '--name=a b']);
    expect(fs.existsSync(path.join(dir, 'pwned3'))).toBe(false);
  });

  it('offers the flow names the daemon lists for --name of the flow commands', () => {
    expect(complete(path.join(dir, 'nfqlb'), 'flow-delete', '--name=')).toEqual(['--name=web', '--name=db']);
    expect(complete(path.join(dir, 'nfqlb'), 'flow-list', '--name', 'd')).toEqual(['db']);
  });
});
