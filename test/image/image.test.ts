/**
 * The container image itself. `npm run test:image` (test/image/run.sh, root)
 * builds it from the committed tree and runs this file with NFQLB_IMAGE (the
 * image), NFQLB_IMAGE_BASE (its runtime base image) and CONTAINERS_CONF set;
 * without NFQLB_IMAGE (plain `npm test`) it is skipped with one line.
 *
 * The traffic part is the e2e topology of testbed/testbed.ts (gateway → LB →
 * 4 targets in network namespaces of this test) with the daemon running IN a
 * container as the load balancer: the LB namespace given with
 * --network=ns:/run/netns/<lb>, --cap-drop=ALL --cap-add=NET_ADMIN, the
 * image's non-root user, a read-only root filesystem. A second container of
 * the image configures it as Meridio would: `nfqlb init/activate` through the
 * /dev/shm it shares with the daemon (--ipc=container:<lb>; a /dev/shm of
 * their own, so nothing meets the host's nfqlb-trace), `flow-set` through the
 * control socket in the shared network namespace. Every container carries
 * $NFQLB_IMAGE_TEST_LABEL and is removed in afterAll, with the namespaces.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  canUseNetns,
  cleanupAll,
  distribution,
  formatDistribution,
  metricSum,
  NS_PREFIX,
  nfqlb,
  ports,
  run,
  scrapeMetrics,
  sleep,
  keptTargets,
  targetsByPort,
  Testbed,
  type ConnectResult,
  type RunResult,
} from '../../testbed/testbed';

const IMAGE = process.env.NFQLB_IMAGE;
const BASE = process.env.NFQLB_IMAGE_BASE;
const LABEL = process.env.NFQLB_IMAGE_TEST_LABEL ?? `nfqlbts-image-test=${process.pid}`;
const ready = IMAGE !== undefined && BASE !== undefined && canUseNetns();
if (!ready) {
  // eslint-disable-next-line no-console
  console.log('image test skipped: `npm run test:image` (root) builds the container image and runs it');
}
const describeImage = ready ? describe : describe.skip;

jest.setTimeout(180000);

const log = (msg: string): void => {
  // eslint-disable-next-line no-console
  console.log(msg);
};

function podman(args: string[], opts: { allowFail?: boolean; timeoutMs?: number } = {}): RunResult {
  return run('podman', args, { allowFail: opts.allowFail, timeoutMs: opts.timeoutMs ?? 60000 });
}

function inspect<T>(what: 'image' | 'container', ref: string, format: string): T {
  return JSON.parse(podman([what, 'inspect', '--format', `{{json ${format}}}`, ref]).stdout) as T;
}

const MB = (bytes: number): string => `${(bytes / 1e6).toFixed(1)} MB`;

describeImage('the container image', () => {
  const image = IMAGE as string;

  it('runs `version` and `--help` like bin/nfqlb', () => {
    const version = podman(['run', '--rm', image, 'version']);
    expect(version.stdout).toBe(nfqlb(['version']).stdout);
    const help = podman(['run', '--rm', image, '--help']);
    expect(help.stdout).toMatch(/^Usage: nfqlb <command>/);
    expect(help.stdout).toContain('flowlb');
  });

  it('runs as a non-root user, declares the metrics port and stays within 40 MB of its base', () => {
    const user = inspect<string>('image', image, '.Config.User');
    expect(user).toMatch(/^[1-9][0-9]*(:[0-9]+)?$/);
    expect(Object.keys(inspect<Record<string, unknown>>('image', image, '.Config.ExposedPorts'))).toEqual(['9657/tcp']);
    const size = inspect<number>('image', image, '.Size');
    const base = inspect<number>('image', BASE as string, '.Size');
    const layers = podman(['history', '--quiet', image]).stdout.trim().split('\n').length;
    log(`image ${image}: ${MB(size)}, ${MB(size - base)} above its base (${MB(base)}), ${layers} history entries, user ${user}`);
    expect(size - base).toBeLessThanOrEqual(40e6);
  });

  it('holds only what runs: no test, bench or test-bed file, no sources, npm, headers, dev dependencies or toolchain', () => {
    const root = podman(['image', 'mount', image]).stdout.trim();
    try {
      const app = path.join(root, 'opt/nfqlb');
      expect(fs.readdirSync(app).sort()).toEqual(['bin', 'build', 'dist', 'node_modules', 'package.json']);
      const absent = [
        'usr/local/lib/node_modules', 'usr/local/bin/npm', 'usr/local/bin/npx', 'usr/local/bin/corepack',
        'usr/local/bin/yarn', 'usr/local/include/node',
        'usr/bin/gcc', 'usr/bin/g++', 'usr/bin/cc', 'usr/bin/c++', 'usr/bin/make', 'usr/bin/python3', 'usr/bin/ld',
        'usr/include/libnetfilter_queue', 'run/secrets/extra-ca',
        ...['node-addon-api', 'node-gyp', 'typescript', 'jest', 'ts-jest', '@types', '.bin'].map((m) => `opt/nfqlb/node_modules/${m}`),
      ];
      expect(absent.filter((p) => fs.existsSync(path.join(root, p)))).toEqual([]);
      // Our files: nothing but compiled JavaScript, the addon, the launcher and package.json.
      const ours: string[] = [];
      const walk = (dir: string): void => {
        for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
          const p = path.join(dir, e.name);
          if (p === path.join(app, 'node_modules')) continue;
          if (e.isDirectory()) walk(p);
          else ours.push(path.relative(app, p));
        }
      };
      walk(app);
      expect(ours.filter((f) => !/^(dist\/.*\.js|build\/Release\/nfqlb_native\.node|bin\/nfqlb|package\.json)$/.test(f))).toEqual([]);
      expect(ours.filter((f) => /test|bench|testbed/i.test(f))).toEqual([]);
      // Pruned dev dependencies leave no empty folders behind.
      const empty: string[] = [];
      const walkEmpty = (dir: string): void => {
        const entries = fs.readdirSync(dir, { withFileTypes: true });
        if (entries.length === 0) empty.push(path.relative(app, dir));
        for (const e of entries) if (e.isDirectory()) walkEmpty(path.join(dir, e.name));
      };
      walkEmpty(path.join(app, 'node_modules'));
      expect(empty).toEqual([]);
    } finally {
      podman(['image', 'unmount', image], { allowFail: true });
    }
  });

  describe('the daemon in a container as the load balancer (gateway → LB → 4 targets)', () => {
    let tb: Testbed;
    let metricsPort: number;
    const LB = `${NS_PREFIX}lb`;
    const CFG = `${NS_PREFIX}cfg`;
    const SHM = 'tshm-image';
    const FLOW = 'image-flow';
    const SPORTS = ports(20000, 400);
    const first: Record<4 | 6, Map<number, string>> = { 4: new Map(), 6: new Map() };
    const vip = (f: 4 | 6): string => (f === 4 ? tb.vip4 : tb.vip6);

    /** `nfqlb args...` in the configuring container. */
    function cfg(args: string[]): string {
      return podman(['exec', CFG, 'nfqlb', ...args]).stdout;
    }

    function counts(results: ConnectResult[]): Record<string, number> {
      const d = distribution(results);
      const out: Record<string, number> = {};
      for (const t of tb.targets) out[t.name] = d.get(t.name) ?? 0;
      if (d.has('(failed)')) out['(failed)'] = d.get('(failed)') as number;
      return out;
    }

    beforeAll(async () => {
      const t0 = Date.now();
      tb = Testbed.build();
      await tb.startServers();
      const netns = `--network=ns:/run/netns/${tb.lb}`;
      const [name, value] = LABEL.split('=');
      const label = `--label=${name}=${value ?? ''}`;
      podman(['run', '-d', '--name', LB, label, netns, '--cap-drop=ALL', '--cap-add=NET_ADMIN', '--read-only', '--ipc=shareable',
        image, 'flowlb', '--promiscuous_ping', '--queue=0:3', '--qlength=1024', '--hash_mode=0']);
      for (let logs = ''; !/"msg":"started"/.test(logs); await sleep(100)) {
        const r = podman(['logs', LB]);
        logs = r.stdout + r.stderr;
        if (inspect<string>('container', LB, '.State.Status') !== 'running') throw new Error(`the daemon's container stopped:\n${logs}`);
        if (Date.now() - t0 > 60000) throw new Error(`the daemon did not start in 60 s:\n${logs}`);
      }
      podman(['run', '-d', '--name', CFG, label, netns, `--ipc=container:${LB}`, '--cap-drop=ALL', '--read-only',
        '--entrypoint=sleep', image, 'infinity']);
      cfg(['init', `--shm=${SHM}`, '--M=10000', '--N=100']);
      for (const t of tb.targets) cfg(['activate', `--index=${t.id - 1}`, `--shm=${SHM}`, `${t.fwmark}`]);
      cfg(['flow-set', `--name=${FLOW}`, `--target=${SHM}`, '--prio=1', '--protocols=tcp', `--dsts=${tb.vip4}/32,${tb.vip6}/128`, `--dports=${tb.port}`]);
      metricsPort = Number(Object.keys(inspect<Record<string, unknown>>('image', image, '.Config.ExposedPorts'))[0].split('/')[0]);
      log(`image e2e: set up in ${Date.now() - t0} ms`);
    });

    afterAll(async () => {
      // Newest first: the configuring container shares the daemon's IPC namespace, so it goes first.
      const ids = podman(['ps', '-aq', '--filter', `label=${LABEL}`], { allowFail: true }).stdout.split('\n').filter((s) => s !== '');
      for (const id of ids) podman(['rm', '-f', '-t', '0', id], { allowFail: true });
      if (tb !== undefined) await tb.destroy();
      await cleanupAll();
    });

    it('runs the daemon as a non-root user with only NET_ADMIN and a read-only root filesystem', () => {
      expect(inspect<boolean>('container', LB, '.HostConfig.ReadonlyRootfs')).toBe(true);
      const pid = inspect<number>('container', LB, '.State.Pid');
      const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
      expect(/^Uid:\s+(\d+)/m.exec(status)?.[1]).not.toBe('0');
      const NET_ADMIN = 1n << 12n;
      expect(BigInt(`0x${/^CapEff:\s+([0-9a-f]+)/m.exec(status)?.[1]}`)).toBe(NET_ADMIN);
      // Even root in that container cannot write its root filesystem.
      const write = podman(['exec', '--user=0', LB, 'touch', '/opt/nfqlb/x'], { allowFail: true });
      expect(write.status).not.toBe(0);
      expect(write.stderr).toMatch(/Read-only file system/);
    });

    it.each([4, 6] as const)('spreads 400 TCP connections to the IPv%s VIP over the 4 targets', (f) => {
      const results = tb.connect(vip(f), SPORTS);
      log(`IPv${f} through the containerized daemon:\n${formatDistribution(results, tb.targets.map((t) => t.name))}`);
      expect(results.filter((r) => r.target === null)).toEqual([]);
      const c = counts(results);
      for (const t of tb.targets) {
        expect(c[t.name]).toBeGreaterThanOrEqual(0.15 * 400);
        expect(c[t.name]).toBeLessThanOrEqual(0.35 * 400);
      }
      first[f] = targetsByPort(results);
    });

    it('after deactivating a target only its connections move (≥95% of the others keep their target)', () => {
      const gone = tb.targets[3];
      cfg(['deactivate', `--index=${gone.id - 1}`, `--shm=${SHM}`]);
      for (const f of [4, 6] as const) {
        const results = tb.connect(vip(f), SPORTS);
        log(`IPv${f} with ${gone.name} deactivated:\n${formatDistribution(results, tb.targets.map((t) => t.name))}`);
        expect(results.filter((r) => r.target === null)).toEqual([]);
        expect(counts(results)[gone.name]).toBe(0);
        const { kept, of } = keptTargets(first[f], targetsByPort(results), gone.name);
        log(`IPv${f}: ${kept} of ${of} connections not on ${gone.name} kept their target`);
        expect(kept / of).toBeGreaterThanOrEqual(0.95);
      }
    });

    it('serves /metrics on the declared port', () => {
      expect(metricsPort).toBe(9657);
      const text = scrapeMetrics(tb.lb, metricsPort);
      expect(text).not.toBeNull();
      expect(metricSum(text as string, 'nfqlb_flow_matches_total', { flow: FLOW })).toBeGreaterThanOrEqual(4 * 400);
    });

    it('`podman stop` exits 0 within 1 s', () => {
      const t0 = Date.now();
      podman(['stop', '-t', '10', LB]);
      const ms = Date.now() - t0;
      const code = inspect<number>('container', LB, '.State.ExitCode');
      log(`podman stop: ${ms} ms, exit code ${code}`);
      expect(code).toBe(0);
      expect(ms).toBeLessThan(1000);
    });
  });
});
