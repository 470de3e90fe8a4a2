/**
 * The default packet threads (min(queues, CPUs - 1), at
 * least one). "The CPUs the process may use" must include a cgroup CPU quota
 * (a Kubernetes CPU limit: Meridio's case): Node 20's availableParallelism()
 * (libuv 1.46) reads only the affinity mask, so on a 16-CPU node with a limit
 * of 1 CPU the default was 4 threads. And odd --workers values.
 */
import { spawnSync } from 'node:child_process';
import { lbCommands, usableCpus, workerCount } from '../../../../src/cli/commands/lb';
import { commandHelp, parseOptions } from '../../../../src/cli/main';
import { runInProcess } from '../../../helpers/cli';

/** A reader of a fake /proc and /sys. */
function files(map: Record<string, string>): (path: string) => string | null {
  return (path) => map[path] ?? null;
}

describe('usableCpus: the affinity mask capped by a cgroup CPU quota', () => {
  it('cgroup v2: cpu.max of the process cgroup and of its parents; "max" is no limit', () => {
    const v2 = (leaf: string, parent: string): ((p: string) => string | null) =>
      files({
        '/proc/self/cgroup': '0::/kubepods/pod1/ctr\n',
        '/sys/fs/cgroup/kubepods/pod1/ctr/cpu.max': leaf,
        '/sys/fs/cgroup/kubepods/pod1/cpu.max': parent,
        '/sys/fs/cgroup/kubepods/cpu.max': 'max 100000\n',
      });
    expect(usableCpus(v2('max 100000\n', 'max 100000\n'), 16)).toBe(16);
    expect(usableCpus(v2('100000 100000\n', 'max 100000\n'), 16)).toBe(1);
    expect(usableCpus(v2('max 100000\n', '250000 100000\n'), 16)).toBe(2);
    expect(usableCpus(v2('50000 100000\n', 'max 100000\n'), 16)).toBe(1);
    expect(usableCpus(v2('800000 100000\n', 'max 100000\n'), 2)).toBe(2);
  });

  it('cgroup v1: cpu.cfs_quota_us / cpu.cfs_period_us of the cpu controller (-1: no limit)', () => {
    const v1 = (quota: string): ((p: string) => string | null) =>
      files({
        '/proc/self/cgroup': '4:memory:/x\n3:cpu,cpuacct:/docker/abc\n0::/\n',
        '/sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us': quota,
        '/sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_period_us': '100000\n',
      });
    expect(usableCpus(v1('-1\n'), 8)).toBe(8);
    expect(usableCpus(v1('150000\n'), 8)).toBe(1);
    expect(usableCpus(v1('300000\n'), 8)).toBe(3);
  });

  it('no cgroup files (or unreadable ones): the affinity mask', () => {
    expect(usableCpus(files({}), 4)).toBe(4);
    expect(usableCpus(files({ '/proc/self/cgroup': 'garbage' }), 4)).toBe(4);
    expect(usableCpus(files({ '/proc/self/cgroup': '0::/a\n', '/sys/fs/cgroup/a/cpu.max': 'x y\n' }), 4)).toBe(4);
  });

  it('with a 1-CPU limit on 16 CPUs the default is one packet thread, not four', () => {
    const limited = usableCpus(files({ '/proc/self/cgroup': '0::/\n', '/sys/fs/cgroup/cpu.max': '100000 100000\n' }), 16);
    expect(workerCount(undefined, 4, limited)).toBe(1);
  });

  it('under taskset -c 0 this machine gives one CPU, so one packet thread', () => {
    const r = spawnSync('taskset', ['-c', '0', process.execPath, '-e', 'process.stdout.write(String(require("os").availableParallelism()))']);
    if (r.status !== 0) return; // no taskset here
    expect(workerCount(undefined, 4, Number(r.stdout.toString()))).toBe(1);
  });
});

describe('odd --workers values', () => {
  it.each(['', ' 2', '2 ', '1e1', '0x2', '2.0', '-0', '+2', '99999999999999999999', '１'])('%j is a usage error', (text) => {
    expect(() => workerCount(text, 4, 2)).toThrow(`Invalid --workers=${text}: use a number from 0 to 1024`);
  });

  it('"01" and "0002" are numbers (1: the single loop; 2 threads)', () => {
    expect(workerCount('01', 4, 2)).toBe(0);
    expect(workerCount('0002', 4, 2)).toBe(2);
  });
});

/**
 * The daemons' command lines without starting one: every value below is
 * refused by the option checks, which run before anything is opened or
 * bound, so main() prints one line and exits 1.
 */
describe('flowlb and lb options', () => {
  const [flowlb, lb] = lbCommands;
  let saved: string | undefined;
  beforeEach(() => {
    saved = process.env.NFQLB_OPTIONS;
    delete process.env.NFQLB_OPTIONS;
  });
  afterEach(() => {
    if (saved !== undefined) process.env.NFQLB_OPTIONS = saved;
  });

  it('the option tables are nfqlb\'s, in nfqlb\'s order, the extensions after them', () => {
    expect(Object.keys(flowlb.options).slice(0, 16)).toEqual(['lbshm', 'mtu', 'tun', 'reassembler', 'promiscuous_ping', 'notargets_fwmark', 'nolb_fwmark', 'hash_mode', 'queue', 'qlength', 'ft_shm', 'ft_size', 'ft_buckets', 'ft_frag', 'ft_ttl', 'trace_address']);
    expect(Object.keys(lb.options).slice(0, 16)).toEqual(['mtu', 'tun', 'reassembler', 'sctp_encap', 'tshm', 'lbshm', 'notargets_fwmark', 'hash_mode', 'queue', 'qlength', 'ft_shm', 'ft_size', 'ft_buckets', 'ft_frag', 'ft_ttl', 'trace_address']);
    expect(Object.keys(flowlb.options)).toEqual(expect.arrayContaining(['workers', 'conntrack', 'metrics_address', 'flows_file', 'batch', 'rcvbuf', 'fail_open']));
    expect(Object.keys(lb.options)).not.toContain('flows_file');
    expect(Object.keys(lb.options)).not.toContain('promiscuous_ping');
  });

  it('nfqlb\'s defaults, filled in by the parser; --qlength left for the daemon\'s own default', () => {
    const r = parseOptions(flowlb, []);
    expect(r).toMatchObject({ kind: 'args', args: { queue: '2', mtu: '1500', ft_size: '500', ft_buckets: '500', ft_frag: '100', ft_ttl: '200', reassembler: '0', notargets_fwmark: '-1', nolb_fwmark: '-1', hash_mode: '1', ft_shm: 'ftshm' } });
    expect((r as { args: Record<string, unknown> }).args.qlength).toBeUndefined();
    expect(parseOptions(lb, [])).toMatchObject({ kind: 'args', args: { tshm: 'nfqlb', sctp_encap: '0' } });
  });

  it('the help: nfqlb\'s lines, then the defaults this daemon uses and the variable for the extensions', () => {
    const help = commandHelp(flowlb);
    expect(help.startsWith('flowlb [options]\n  Load-balance with flows\n')).toBe(true);
    expect(help).toContain('  --ft_ttl= Frag table; ttl milliS');
    expect(help).toContain('Defaults of nfqlb-ts');
    expect(help).toMatch(/--qlength=\d+/);
    expect(help).toContain('NFQLB_OPTIONS: the options nfqlb lacks (');
    expect(help).toContain('--flows_file');
    expect(commandHelp(lb)).not.toContain('--flows_file');
  });

  it.each([
    [['flowlb', '--mtu=100'], 'Invalid MTU; 100'],
    [['flowlb', '--mtu=x'], 'Invalid MTU; 0'],
    [['flowlb', '--mtu=70000'], 'Invalid MTU; 70000 (at most 65535)'],
    [['flowlb', '--workers=2000'], 'Invalid --workers=2000: use a number from 0 to 1024'],
    [['flowlb', '--qlength=0'], 'Invalid --qlength=0: use a number from 1 to 1048576'],
    [['flowlb', '--batch=2000'], 'Invalid --batch=2000: use a number from 1 to 1024'],
    [['flowlb', '--rcvbuf=10'], 'Invalid --rcvbuf=10: use a number from 4096 to 1073741824'],
    [['flowlb', '--conntrack=-1'], 'Invalid --conntrack=-1: use a number from 0 to 100000000'],
    [['flowlb', '--conntrack=10', '--conntrack_ttl=0'], 'Invalid --conntrack_ttl=0: use a number from 1 to 2592000'],
    [['lb', '--reassembler=99999999'], 'Invalid --reassembler=99999999: at most 16777216 hole descriptors (a few per datagram in flight are enough)'],
    [['lb', '--tun=nfqlbts-none', '--ft_frag=1000000', '--mtu=9000'], 'Invalid --ft_frag=1000000: 1000000 copies of --mtu=9000 bytes exceed 1 GiB'],
  ])('%j: one line, exit 1, nothing started', async (words, msg) => {
    expect(await runInProcess(words)).toEqual({ rc: 1, stdout: '', stderr: `${msg}\n` });
  });

  it('a bad address or queue list: the parser\'s own words, exit 1', async () => {
    const trace = await runInProcess(['flowlb', '--trace_address=bogus']);
    expect(trace).toMatchObject({ rc: 1, stdout: '' });
    expect(trace.stderr).toMatch(/^Failed to parse address \[bogus\]/);
    const metrics = await runInProcess(['flowlb', '--metrics_address=nohost']);
    expect(metrics.rc).toBe(1);
    expect(metrics.stderr.split('\n').length).toBe(2);
    const queue = await runInProcess(['lb', '--queue=x']);
    expect(queue.rc).toBe(1);
    expect(queue.stderr.split('\n').length).toBe(2);
  });
});
