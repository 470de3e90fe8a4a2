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
import * as os from 'node:os';
import * as path from 'node:path';
import {
  canUseNetns,
  cleanupAll,
  distribution,
  formatDistribution,
  metricSum,
  NS_PREFIX,
  nfqlb,
  nsExec,
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
import { waitFor } from '../helpers/wait';
// eslint-disable-next-line @typescript-eslint/no-require-imports
const standin = require('./standin-lb.js') as {
  decodeFlowList(text: string): { Name: string; UserRef: string; MatchesCount: number }[];
  flowSetArgs(f: Record<string, unknown>): string[];
};

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

  it('has the bash completion where bash-completion looks, as generated from the option table', () => {
    const installed = podman(['run', '--rm', '--entrypoint=cat', image, '/usr/share/bash-completion/completions/nfqlb']);
    expect(installed.stdout).toBe(fs.readFileSync(path.join(__dirname, '..', '..', 'contrib', 'bash-completion', 'nfqlb'), 'utf8'));
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
        'usr/include/libnetfilter_queue', 'run/secrets/extra-ca', 'usr/sbin/setcap', 'usr/sbin/getcap',
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

  describe("as Meridio's stateless-lb runs it: a supervisor's child, uid 10002, only NET_ADMIN, no ambient capabilities", () => {
    let tb: Testbed;
    const SUP = `${NS_PREFIX}stateless-lb`;
    const CONTROL = 9661; // the stand-in's control port, in this test's LB namespace
    const SPORTS = ports(21000, 400);
    const NET_ADMIN = 1n << 12n;
    const before: Record<4 | 6, Map<number, string>> = { 4: new Map(), 6: new Map() };
    let nocap = '';
    const vip = (f: 4 | 6): string => (f === 4 ? tb.vip4 : tb.vip6);
    const [labelName, labelValue] = LABEL.split('=');
    const label = `--label=${labelName}=${labelValue ?? ''}`;

    /**
     * What containerd and CRI-O do for `runAsUser: 10002` with `capabilities:
     * {drop: [ALL], add: [NET_ADMIN]}`: uid 10002, NET_ADMIN in the bounding set
     * only, nothing inheritable or ambient. podman's own --user --cap-add gives
     * the user ambient capabilities (logged below), so a root entry drops to
     * that state with setpriv before it execs the stand-in.
     */
    function supervisor(podmanArgs: string[], setprivArgs: string[] = []): string[] {
      return [
        label, '--user=0', '--cap-drop=ALL', '--cap-add=NET_ADMIN,SETUID,SETGID,SETPCAP', '--read-only',
        '-v', `${path.join(__dirname, 'standin-lb.js')}:/standin-lb.js:ro`, '--entrypoint=/usr/bin/setpriv', ...podmanArgs,
        image, '--reuid=10002', '--regid=10002', '--clear-groups', '--inh-caps=-all', '--ambient-caps=-all',
        '--bounding-set=-all,+net_admin', ...setprivArgs, '/usr/local/bin/node', '/standin-lb.js', `--control=127.0.0.1:${CONTROL}`,
      ];
    }

    /** One request to the stand-in's control (from inside the LB namespace); its JSON answer. */
    function control(method: string, where: string, body?: unknown): { status: number; body: { result?: unknown; error?: string; output?: string } } {
      const script =
        "const [m, p, b] = process.argv.slice(1); fetch(`http://127.0.0.1:" + CONTROL + "${p}`, { method: m, body: b === '' ? undefined : b })" +
        '.then(async (r) => process.stdout.write(JSON.stringify({ status: r.status, body: await r.json() })), () => process.exit(1))';
      const r = nsExec(tb.lb, process.execPath, ['-e', script, method, where, body === undefined ? '' : JSON.stringify(body)], { allowFail: true, timeoutMs: 60000 });
      if (r.status !== 0) throw new Error(`the stand-in's control does not answer ${method} ${where}: ${r.stderr}`);
      return JSON.parse(r.stdout);
    }
    function change(method: string, where: string, body: unknown): void {
      const r = control(method, where, body);
      if (r.status !== 200) throw new Error(`${method} ${where} ${JSON.stringify(body)}: ${r.status} ${r.body.error}`);
    }
    const flowA = (): Record<string, unknown> => ({
      stream: 'a', flow: 'f', prio: 1, protocols: ['tcp'], dsts: [`${tb.vip4}/32`, `${tb.vip6}/128`],
      srcs: ['0.0.0.0/0', '::/0'], dports: [`${tb.port}`], sports: ['0-65535'],
    });

    function status(pid: number): Record<string, string> {
      const out: Record<string, string> = {};
      for (const line of fs.readFileSync(`/proc/${pid}/status`, 'utf8').split('\n')) {
        const m = /^(\w+):\s+(.*)$/.exec(line);
        if (m !== null) out[m[1]] = m[2];
      }
      return out;
    }
    const caps = (st: Record<string, string>, set: string): bigint => BigInt(`0x${st[set]}`);
    const supervisorPid = (): number => inspect<number>('container', SUP, '.State.Pid');
    const daemonPid = (): number => Number(fs.readFileSync(`/proc/${supervisorPid()}/task/${supervisorPid()}/children`, 'utf8').trim());

    function counts(results: ConnectResult[]): Record<string, number> {
      const d = distribution(results);
      return Object.fromEntries(tb.targets.map((t) => [t.name, d.get(t.name) ?? 0]));
    }
    function spread(f: 4 | 6, what: string): ConnectResult[] {
      const results = tb.connect(vip(f), SPORTS);
      log(`stand-in, IPv${f} ${what}:\n${formatDistribution(results, tb.targets.map((t) => t.name))}`);
      expect(results.filter((r) => r.target === null)).toEqual([]);
      return results;
    }

    beforeAll(async () => {
      const t0 = Date.now();
      // /bin/nfqlb without its file capabilities: a copy (copying drops extended attributes).
      const root = podman(['image', 'mount', image]).stdout.trim();
      try {
        nocap = fs.mkdtempSync(path.join(os.tmpdir(), `${NS_PREFIX}nocap-`));
        fs.copyFileSync(path.join(root, 'usr/bin/nfqlb'), path.join(nocap, 'nfqlb'));
        fs.chmodSync(path.join(nocap, 'nfqlb'), 0o755);
      } finally {
        podman(['image', 'unmount', image], { allowFail: true });
      }
      tb = Testbed.build();
      await tb.startServers();
      podman(['run', '-d', '--name', SUP, `--network=ns:/run/netns/${tb.lb}`, ...supervisor([])]);
      await waitFor('the daemon under the stand-in to start', () => {
        if (inspect<string>('container', SUP, '.State.Status') !== 'running') {
          const logs = podman(['logs', SUP]);
          throw new Error(`the stand-in's container stopped:\n${logs.stdout}${logs.stderr}`);
        }
        try {
          return control('GET', '/output').body.output ?? '';
        } catch {
          return '';
        }
      }, (out) => /"msg":"started"/.test(out), 60000);
      log(`stand-in: set up in ${Date.now() - t0} ms`);
    });

    afterAll(async () => {
      podman(['rm', '-f', '-t', '0', SUP], { allowFail: true });
      if (nocap !== '') fs.rmSync(nocap, { recursive: true, force: true });
      if (tb !== undefined) await tb.destroy();
      await cleanupAll();
    });

    it('has nfqlb at /bin/nfqlb, first on PATH, root\'s, with file capabilities (permitted, not effective)', () => {
      const where = podman(['exec', SUP, 'sh', '-c', 'command -v nfqlb; readlink -f /bin/nfqlb; stat -c %U:%a /bin/nfqlb']).stdout.trim().split('\n');
      expect(where).toEqual(['/usr/bin/nfqlb', '/usr/bin/nfqlb', 'root:755']);
      const root = podman(['image', 'mount', image]).stdout.trim();
      try {
        expect(run('getcap', [path.join(root, 'usr/bin/nfqlb')]).stdout).toMatch(/ cap_net_admin,cap_ipc_lock,cap_ipc_owner=p$/m);
        expect(run('getcap', [path.join(nocap, 'nfqlb')]).stdout).toBe('');
      } finally {
        podman(['image', 'unmount', image], { allowFail: true });
      }
    });

    it('runs the stand-in as uid 10002 with no capability at all, and the daemon, its child, with NET_ADMIN only', () => {
      const sup = status(supervisorPid());
      expect(sup.Uid).toBe('10002\t10002\t10002\t10002');
      expect(sup.Gid).toBe('10002\t10002\t10002\t10002');
      for (const set of ['CapInh', 'CapPrm', 'CapEff', 'CapAmb']) expect([set, caps(sup, set)]).toEqual([set, 0n]);
      expect(caps(sup, 'CapBnd')).toBe(NET_ADMIN);
      const pid = daemonPid();
      const cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter((a) => a !== '');
      expect(cmdline).toEqual(['node', '/opt/nfqlb/bin/nfqlb', 'flowlb', '--promiscuous_ping', '--queue=0:3', '--qlength=1024', '--hash_mode=0']);
      const daemon = status(pid);
      expect(daemon.Uid).toBe('10002\t10002\t10002\t10002');
      for (const set of ['CapInh', 'CapPrm', 'CapEff', 'CapAmb']) expect([set, caps(daemon, set)]).toEqual([set, NET_ADMIN]);
      // For the record: podman's own way of giving a non-root user a capability.
      const own = podman(['run', '--rm', label, '--user=10002', '--cap-drop=ALL', '--cap-add=NET_ADMIN', '--entrypoint=/bin/grep', image, '^Cap', '/proc/self/status']);
      log(`podman --user=10002 --cap-add=NET_ADMIN, without setpriv (not what CRI does when CapAmb is not 0):\n${own.stdout}`);
    });

    it.each([
      ['without the file capabilities on /bin/nfqlb', ['-v', '@NOCAP@:/usr/bin/nfqlb:ro'], []],
      ['with no_new_privs (allowPrivilegeEscalation: false)', [], ['--no-new-privs']],
    ])('fails to start %s: the supervisor exits non-zero with the daemon\'s start error', (_what, podmanArgs, setprivArgs) => {
      const args = (podmanArgs as string[]).map((a) => a.replace('@NOCAP@', path.join(nocap, 'nfqlb')));
      const r = podman(['run', '--rm', '--network=none', ...supervisor(args, setprivArgs as string[])], { allowFail: true });
      const out = r.stdout + r.stderr;
      log(`stand-in ${_what}: exit ${r.status}\n${out}`);
      expect(r.status).toBe(1);
      expect(out).toMatch(/stateless-lb: nfqlb flowlb ended: exit status [1-9][0-9]*: /);
      expect(out).toMatch(/CAP_NET_ADMIN/);
      expect(out).not.toMatch(/"msg":"started"/);
    });

    it('brings up a stream of 4 targets and a flow, one nfqlb process per change: TCP over IPv4 and IPv6 reaches all 4', () => {
      change('POST', '/stream', { stream: 'a', maxTargets: 100 });
      for (const t of tb.targets) change('POST', '/target', { stream: 'a', index: t.id - 1, fwmark: t.fwmark });
      change('POST', '/flow', flowA());
      for (const f of [4, 6] as const) {
        const results = spread(f, 'over 4 targets');
        for (const t of tb.targets) {
          expect(counts(results)[t.name]).toBeGreaterThanOrEqual(0.15 * 400);
          expect(counts(results)[t.name]).toBeLessThanOrEqual(0.35 * 400);
        }
        before[f] = targetsByPort(results);
      }
    });

    it('removes a target (only its connections move) and adds it back', () => {
      const gone = tb.targets[3];
      change('DELETE', '/target', { stream: 'a', index: gone.id - 1 });
      for (const f of [4, 6] as const) {
        const results = spread(f, `with ${gone.name} removed`);
        expect(counts(results)[gone.name]).toBe(0);
        const { kept, of } = keptTargets(before[f], targetsByPort(results), gone.name);
        expect(kept / of).toBeGreaterThanOrEqual(0.95);
      }
      change('POST', '/target', { stream: 'a', index: gone.id - 1, fwmark: gone.fwmark });
      for (const f of [4, 6] as const) expect(counts(spread(f, `with ${gone.name} back`))[gone.name]).toBeGreaterThanOrEqual(0.15 * 400);
    });

    it('changes flows: a second stream\'s flow of higher priority takes the traffic, changed away it gives it back, the stream goes', () => {
      const t1 = tb.targets[0];
      change('POST', '/stream', { stream: 'b', maxTargets: 10 });
      change('POST', '/target', { stream: 'b', index: 0, fwmark: t1.fwmark });
      const flowB = { ...flowA(), stream: 'b', flow: 'g', prio: 10 };
      change('POST', '/flow', flowB);
      for (const f of [4, 6] as const) expect(counts(spread(f, 'with stream b\'s flow first'))[t1.name]).toBe(400);
      change('POST', '/flow', { ...flowB, dports: [`${tb.port + 1}`] });
      for (const f of [4, 6] as const) {
        const c = counts(spread(f, 'with stream b\'s flow on another port'));
        for (const t of tb.targets) expect(c[t.name]).toBeGreaterThanOrEqual(0.15 * 400);
      }
      const flows = control('GET', '/flows');
      expect(flows.status).toBe(200);
      expect(flows.body.result).toEqual(expect.arrayContaining([
        { stream: 'a', flow: 'f', matchesCount: expect.any(Number) },
        { stream: 'b', flow: 'g', matchesCount: expect.any(Number) },
      ]));
      change('DELETE', '/stream', { stream: 'b', targets: [0], flows: ['g'] });
    });

    it('reads flow-list as Meridio does (stdout, Go encoding/json): one entry per flow with its match count', () => {
      const r = control('GET', '/flows');
      log(`stand-in: flow-list decoded: ${JSON.stringify(r.body)}`);
      expect(r.status).toBe(200);
      const flows = r.body.result as { stream: string; flow: string; matchesCount: number }[];
      expect(flows.map((f) => `${f.stream}/${f.flow}`)).toEqual(['a/f']);
      // Packets of flow a/f: at least one per connection it took (8 rounds of 400; stream b's flow took 2).
      expect(flows[0].matchesCount).toBeGreaterThanOrEqual(8 * 400);
    });

    it('ends when the daemon is killed (kill -9): exit non-zero, with the daemon\'s captured output', async () => {
      process.kill(daemonPid(), 'SIGKILL');
      await waitFor('the stand-in to exit', () => inspect<string>('container', SUP, '.State.Status'), (s) => s === 'exited', 30000);
      const logs = podman(['logs', SUP]);
      const out = logs.stdout + logs.stderr;
      log(`stand-in after kill -9 of the daemon: exit ${inspect<number>('container', SUP, '.State.ExitCode')}\n${out.slice(-600)}`);
      expect(inspect<number>('container', SUP, '.State.ExitCode')).toBe(1);
      expect(out).toMatch(/stateless-lb: nfqlb flowlb ended: signal: killed: .*"msg":"started"/s);
    });
  });
});

describe("the stateless-lb stand-in reads flow-list as Go's encoding/json does", () => {
  const entry = '{"name":"tshm-a-f","user_ref":"tshm-a","matches_count":3}';
  it('takes the whole text as one JSON array, keys case-insensitively, other keys ignored', () => {
    expect(standin.decodeFlowList(`[${entry}]\n`)).toEqual([{ Name: 'tshm-a-f', UserRef: 'tshm-a', MatchesCount: 3 }]);
    expect(standin.decodeFlowList('[{"NAME":"x","User_Ref":"y","Matches_Count":7,"other":1.5}]')).toEqual([{ Name: 'x', UserRef: 'y', MatchesCount: 7 }]);
    expect(standin.decodeFlowList('null')).toEqual([]);
    expect(standin.decodeFlowList(' [] ')).toEqual([]);
  });
  it.each([
    ['a trailing NUL', `[${entry}]\0`],
    ['two values', `[${entry}][]`],
    ['an object', entry],
    ['a fraction', '[{"matches_count":1.0}]'],
    ['an exponent', '[{"matches_count":1e3}]'],
    ['beyond int64', '[{"matches_count":9223372036854775808}]'],
    ['a string count', '[{"matches_count":"3"}]'],
    ['a number name', '[{"name":3}]'],
    ['nothing', ''],
  ])('rejects %s', (_what, text) => {
    expect(() => standin.decodeFlowList(text)).toThrow(/json|JSON/);
  });
  it("builds Meridio's flow-set line: --protocols always, no --srcs for /0, no port range 0-65535", () => {
    expect(standin.flowSetArgs({ stream: 's', flow: 'f', prio: 2, protocols: [], srcs: ['0.0.0.0/0'], dports: ['0-65535'] }))
      .toEqual(['flow-set', '--name=tshm-s-f', '--target=tshm-s', '--prio=2', '--protocols=']);
    expect(standin.flowSetArgs({ stream: 's', flow: 'f', prio: 1, protocols: ['tcp', 'udp'], dsts: ['192.0.2.1/32'], srcs: ['198.51.100.0/24'], dports: ['80', '443'], match: ['tcp[2:2]=80'] }))
      .toEqual(['flow-set', '--name=tshm-s-f', '--target=tshm-s', '--prio=1', '--protocols=tcp,udp', '--dsts=192.0.2.1/32', '--srcs=198.51.100.0/24', '--dports=80,443', '--match=tcp[2:2]=80']);
  });
});
