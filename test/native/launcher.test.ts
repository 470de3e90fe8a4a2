/**
 * native/launcher/nfqlb-launcher.c, the image's /bin/nfqlb (docs/container.md),
 * on the host: compiled with node and the script replaced by a shell script
 * that reports what it was given, given the image's file capabilities, and run
 * as an unprivileged user with no ambient capabilities (setpriv, as
 * containerd and CRI-O run a non-root container process). Needs root, gcc,
 * setcap and setpriv; skipped with one line otherwise. The image test runs
 * the real one (test/image).
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const SOURCE = path.join(__dirname, '..', '..', 'native', 'launcher', 'nfqlb-launcher.c');
const have = (cmd: string): boolean => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
const ready = process.getuid?.() === 0 && ['gcc', 'setcap', 'setpriv'].every(have);
if (!ready) {
  // eslint-disable-next-line no-console
  console.log('launcher test skipped: needs root, gcc, setcap and setpriv');
}
const describeReady = ready ? describe : describe.skip;

const NET_ADMIN = 0x1000n;
const IPC_LOCK = 0x4000n;
const IPC_OWNER = 0x8000n;

describeReady('the image launcher (/bin/nfqlb)', () => {
  let dir: string;
  let launcher: string;

  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nfqlbts-image-launcher-'));
    fs.chmodSync(dir, 0o755);
    // Stands in for bin/nfqlb: prints its arguments, its capability sets and the NODE_* variables it got.
    const report = path.join(dir, 'report.sh');
    fs.writeFileSync(report, 'echo "args: $*"; grep -E "^(Uid|Cap(Inh|Prm|Eff|Amb)):" /proc/self/status; env | grep -E "^NODE_" | sort; exit 0\n');
    launcher = path.join(dir, 'nfqlb');
    const cc = spawnSync('gcc', ['-O2', '-Wall', '-Wextra', '-Werror', '-DNFQLB_NODE="/bin/sh"', `-DNFQLB_SCRIPT="${report}"`, '-o', launcher, SOURCE], { encoding: 'utf8' });
    if (cc.status !== 0) throw new Error(`gcc: ${cc.stderr}`);
    const setcap = spawnSync('setcap', ['cap_net_admin,cap_ipc_lock,cap_ipc_owner=p', launcher], { encoding: 'utf8' });
    if (setcap.status !== 0) throw new Error(`setcap: ${setcap.stderr}`);
  });

  afterAll(() => {
    if (dir !== undefined) fs.rmSync(dir, { recursive: true, force: true });
  });

  /**
   * The launcher exec'd by a process of uid 65534 with `bounding` only in the
   * bounding set and no capability in any other set (a shell standing in for
   * stateless-lb: setpriv itself still holds capabilities when it execs).
   */
  function launch(bounding: string, args: string[], env: Record<string, string> = {}, setpriv: string[] = []) {
    const r = spawnSync('setpriv', [
      '--reuid=65534', '--regid=65534', '--clear-groups', '--inh-caps=-all', '--ambient-caps=-all',
      `--bounding-set=-all${bounding}`, ...setpriv, '/bin/sh', '-c', 'exec "$0" "$@"', launcher, ...args,
    ], { encoding: 'utf8', env: { PATH: process.env.PATH, ...env } });
    if (r.status !== 0) throw new Error(`launcher exit ${r.status}: ${r.stderr}${r.stdout}`);
    const set = (name: string): bigint => BigInt(`0x${new RegExp(`^${name}:\\s+([0-9a-f]+)`, 'm').exec(r.stdout)?.[1]}`);
    return {
      out: r.stdout,
      stderr: r.stderr,
      inh: set('CapInh'), prm: set('CapPrm'), eff: set('CapEff'), amb: set('CapAmb'),
      node: r.stdout.split('\n').filter((l) => l.startsWith('NODE_')),
    };
  }

  it.each(['flowlb', 'lb'])('hands `%s` the capabilities the bounding set allows, as ambient ones: NET_ADMIN only when only it is added', (cmd) => {
    const r = launch(',+net_admin', [cmd, '--queue=0:3']);
    expect(r.out).toContain(`args: ${cmd} --queue=0:3`);
    expect(r.out).toMatch(/^Uid:\s+65534\s/m);
    expect([r.inh, r.prm, r.eff, r.amb]).toEqual([NET_ADMIN, NET_ADMIN, NET_ADMIN, NET_ADMIN]);
    expect(r.stderr).toBe('');
    const all = launch(',+net_admin,+ipc_lock,+ipc_owner,+sys_admin', [cmd]);
    expect(all.amb).toBe(NET_ADMIN | IPC_LOCK | IPC_OWNER);
  });

  it('gives the other commands (tables, control socket) no capability', () => {
    for (const args of [['activate', '--index=0', '--shm=tshm-a', '5001'], ['flow-list'], ['version'], []]) {
      const r = launch(',+net_admin', args);
      expect([args, r.inh, r.prm, r.eff, r.amb]).toEqual([args, 0n, 0n, 0n, 0n]);
    }
  });

  it('runs, with nothing to hand on, without the capabilities in the bounding set or under no_new_privs', () => {
    expect(launch('', ['flowlb']).amb).toBe(0n);
    expect(launch(',+net_admin', ['flowlb'], {}, ['--no-new-privs']).amb).toBe(0n);
  });

  it('drops every NODE_* variable but NODE_ENV (NODE_OPTIONS=--require would run any file with the capability)', () => {
    const r = launch(',+net_admin', ['flowlb'], { NODE_OPTIONS: '--require=/tmp/x.js', NODE_PATH: '/tmp', NODE_ENV: 'production', NODEX: 'kept' });
    expect(r.node).toEqual(['NODE_ENV=production']);
  });
});
