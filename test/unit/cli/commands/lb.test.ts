/**
 * The default packet threads (min(queues, CPUs - 1), at
 * least one). "The CPUs the process may use" must include a cgroup CPU quota
 * (a Kubernetes CPU limit: Meridio's case): Node 20's availableParallelism()
 * (libuv 1.46) reads only the affinity mask, so on a 16-CPU node with a limit
 * of 1 CPU the default was 4 threads. And odd --workers values.
 */
import { spawnSync } from 'node:child_process';
import { usableCpus, workerCount } from '../../../../src/cli/commands/lb';

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
