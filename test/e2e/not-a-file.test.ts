/**
 * Names in /dev/shm that are not regular files (issue: a FIFO put in place of
 * a table froze every thread of the daemon, SIGTERM included).
 *
 * Under traffic through a live daemon, each kind of object in place of a
 * table — FIFO, unix socket, directory, device node, symbolic link (to a valid
 * table) — is refused without blocking: connections keep landing on the
 * targets (the daemon keeps the table it had), `flow-list` and `/healthz`
 * answer, the fault is one log line and a count, and a real table put back is
 * taken again. The same for `--ft_shm`, for `flow-set` naming such an object,
 * and for `nfqlb-trace` (in a private /dev/shm). Last, with the old blocking
 * open brought back (NFQLB_TEST_OPEN_BLOCKS=1) so that every thread does get
 * stuck in open() of a FIFO, SIGTERM still ends the daemon within its
 * deadline, with exit 71 and one line.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  cleanupAll, metricSum, nfqlbOk, nsExec, ports, registerShm, run, scrapeMetrics, Testbed, uniqueShmName,
} from '../../testbed/testbed';
import { waitFor } from '../helpers/wait';
import { describeUnless, netnsUnavailable } from '../helpers/skip';

const describeNs = describeUnless(netnsUnavailable());
jest.setTimeout(180000);

const METRICS_PORT = 19671;
const SHM_DIR = '/dev/shm';
const NFQLB = path.join(__dirname, '../../bin/nfqlb');

/** Puts an object of `kind` at `file` (nothing must be there). */
function plant(kind: string, file: string, linkTo: string): void {
  switch (kind) {
    case 'FIFO':
      run('mkfifo', ['-m', '0666', file]);
      break;
    case 'socket':
      run('python3', ['-c', 'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])', file]);
      break;
    case 'directory':
      fs.mkdirSync(file);
      break;
    case 'device node':
      run('mknod', [file, 'c', '1', '3']); // what /dev/null is
      break;
    case 'symbolic link':
      fs.symlinkSync(linkTo, file);
      break;
    default:
      throw new Error(`no such kind ${kind}`);
  }
}

function unplant(file: string): void {
  fs.rmSync(file, { recursive: true, force: true });
}

/** GET /healthz of the daemon from inside `ns`: the status, or 0 when nothing answered within 3 s. */
function healthz(ns: string): number {
  const script = `fetch('http://127.0.0.1:${METRICS_PORT}/healthz', { signal: AbortSignal.timeout(3000) }).then((r) => console.log(r.status), () => console.log(0))`;
  return Number(nsExec(ns, process.execPath, ['-e', script], { allowFail: true }).stdout.trim());
}

describeNs('names in /dev/shm that are not regular files', () => {
  let tb: Testbed;
  let shm: string;
  let spare: string;
  let ftShm: string;
  const planted: string[] = [];
  let sport = 20000;

  const metric = (name: string, labels: Record<string, string> = {}): number => {
    const text = scrapeMetrics(tb.lb, METRICS_PORT);
    if (text === null) throw new Error('the metrics endpoint did not answer');
    return metricSum(text, name, labels);
  };
  /** Connections from the gateway: every one must reach a target. */
  const expectForwarding = (n = 20): void => {
    const results = tb.connect(tb.vip4, ports(sport, n));
    sport += n;
    expect(results.filter((r) => r.target === null)).toEqual([]);
  };

  beforeAll(async () => {
    tb = Testbed.build();
    await tb.startServers();
    shm = uniqueShmName('naf');
    spare = uniqueShmName('nafspare');
    ftShm = uniqueShmName('nafft');
    tb.initTable(shm);
    tb.initTable(spare);
    await tb.startDaemon(['flowlb', '--queue=0:3', '--hash_mode=0', `--ft_shm=${ftShm}`, `--metrics_address=127.0.0.1:${METRICS_PORT}`]);
    tb.setFlow('naf', shm);
  });

  afterAll(async () => {
    for (const f of planted) unplant(f);
    if (tb !== undefined) await tb.destroy();
    await cleanupAll();
  });

  it.each(['FIFO', 'socket', 'directory', 'device node', 'symbolic link'])(
    'a %s put in place of a table: forwarding, flow-list and /healthz go on, one line and a count, and a table put back is taken',
    async (kind) => {
      expectForwarding();
      const file = `${SHM_DIR}/${shm}`;
      const faults = metric('nfqlb_table_faults_total', { target: shm, fault: 'not_file' });
      const refused = metric('nfqlb_open_refused_total', { object: 'table' });
      const recreated = metric('nfqlb_table_faults_total', { target: shm, fault: 'recreated' });
      unplant(file);
      planted.push(file);
      plant(kind, file, `${SHM_DIR}/${spare}`);

      // Within a few table checks (one a second; a replacement is reported at its second sight).
      await waitFor(`the ${kind} to be counted as a table fault`, () => metric('nfqlb_table_faults_total', { target: shm, fault: 'not_file' }), (n) => n === faults + 1, 8000);
      expect(metric('nfqlb_open_refused_total', { object: 'table' })).toBe(refused + 1);
      expectForwarding();
      const list = tb.nfqlbOk(['flow-list']).stdout;
      expect(list).toContain('"naf"');
      expect(healthz(tb.lb)).toBe(200);
      // The daemon's stderr is read between event-loop turns (the checks above run synchronously).
      const notFileLines = (): string[] => tb.daemon!.stderr.split('\n').filter((l) => l.includes('"fault":"not_file"') && l.includes(shm));
      const lines = await waitFor('the fault\'s log line', notFileLines, (l) => l.length >= faults + 1, 5000);
      expect(lines.length).toBe(faults + 1);
      expect(lines[lines.length - 1]).toContain(`is ${kind === 'FIFO' ? 'a FIFO' : `a ${kind}`}`);

      // Still there a few checks later: not counted again.
      await new Promise((r) => setTimeout(r, 2500));
      expect(metric('nfqlb_table_faults_total', { target: shm, fault: 'not_file' })).toBe(faults + 1);

      unplant(file);
      tb.initTable(shm);
      await waitFor('the table put back to be taken', () => metric('nfqlb_table_faults_total', { target: shm, fault: 'recreated' }), (n) => n === recreated + 1, 8000);
      expectForwarding();
    },
  );

  it('flow-set naming a FIFO is answered at once (nfqlb blocks until something writes to it)', () => {
    const fifo = uniqueShmName('naffifo');
    const file = `${SHM_DIR}/${fifo}`;
    planted.push(file);
    plant('FIFO', file, '');
    const t0 = Date.now();
    const r = tb.nfqlb(['flow-set', '--name=naf-fifo', `--target=${fifo}`, '--prio=2', '--protocols=udp', `--dsts=${tb.vip4}/32`]);
    const ms = Date.now() - t0;
    expect(r.status).not.toBe(0);
    expect(r.stdout + r.stderr).toMatch(/Couldn't create load-balancer/);
    expect(ms).toBeLessThan(10000); // the CLI's own timeout is longer; a blocked control thread would hit it
    expect(tb.nfqlbOk(['flow-list-names']).stdout).not.toContain('naf-fifo');
    expectForwarding();
  });

  it('--ft_shm replaced by a FIFO: one line and a count, forwarding goes on, and the statistics come back when it is removed', async () => {
    const file = `${SHM_DIR}/${ftShm}`;
    const refused = metric('nfqlb_open_refused_total', { object: 'ft_shm' });
    unplant(file);
    planted.push(file);
    plant('FIFO', file, '');
    await waitFor('the FIFO at --ft_shm to be counted', () => metric('nfqlb_open_refused_total', { object: 'ft_shm' }), (n) => n === refused + 1, 8000);
    expectForwarding();
    expect(healthz(tb.lb)).toBe(200);
    // `nfqlb stats` refuses it too, at once.
    const stats = tb.nfqlb(['stats', `--ft_shm=${ftShm}`]);
    expect(stats.status).not.toBe(0);
    unplant(file);
    await waitFor('the daemon to write ftshm again', () => fs.existsSync(file) && fs.statSync(file).isFile() && fs.statSync(file).size === 72, (ok) => ok, 8000);
    expect(tb.nfqlb(['stats', `--ft_shm=${ftShm}`]).status).toBe(0);
  });

  it('a FIFO at nfqlb-trace: the daemon starts with private trace settings (one warning) and forwards', async () => {
    await tb.stopDaemon();
    // nfqlb-trace has one name for the whole host: this daemon gets a /dev/shm of its own.
    const table = 'nafprivate';
    const script = [
      'set -e', 'mount -t tmpfs -o size=16m nfqlb-test /dev/shm', 'mkfifo /dev/shm/nfqlb-trace',
      `"${NFQLB}" init --shm=${table} --M=997 --N=10`,
      ...tb.targets.map((t) => `"${NFQLB}" activate --index=${t.id - 1} --shm=${table} ${t.fwmark}`),
      `exec "${NFQLB}" lb --tshm=${table} --queue=0:3 --metrics_address=127.0.0.1:${METRICS_PORT}`,
    ].join('\n');
    const child = spawn('ip', ['netns', 'exec', tb.lb, 'unshare', '--mount', '--propagation', 'private', 'sh', '-c', script], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    try {
      await waitFor('the daemon with a FIFO at nfqlb-trace to start', () => stderr, (s) => /"msg":"started"/.test(s) || child.exitCode !== null, 15000);
      expect(stderr).toMatch(/"msg":"started"/);
      const warnings = stderr.split('\n').filter((l) => l.includes('trace settings are private'));
      expect(warnings.length).toBe(1);
      expect(warnings[0]).toContain('FIFO');
      expect(metric('nfqlb_open_refused_total', { object: 'trace_shm' })).toBe(1);
      expectForwarding();
    } finally {
      child.kill('SIGTERM');
      await exited;
    }
  });

  it('SIGTERM ends the daemon within its deadline even when every thread is stuck in open() (exit 71, one line)', async () => {
    // NFQLB_TEST_OPEN_BLOCKS=1 brings back the plain open(): the table check then blocks on a FIFO,
    // in the main thread and in every packet thread, as it did before.
    const stuck = uniqueShmName('nafstuck');
    tb.initTable(stuck);
    const d = await tb.startDaemon(['flowlb', '--queue=0:3', '--hash_mode=0', `--metrics_address=127.0.0.1:${METRICS_PORT}`], { NFQLB_TEST_OPEN_BLOCKS: '1' });
    tb.setFlow('naf-stuck', stuck);
    expectForwarding();
    const file = `${SHM_DIR}/${stuck}`;
    unplant(file);
    planted.push(file);
    plant('FIFO', file, '');
    // Blocked in openat (257 on x86_64, 56 on arm64) in the main thread: /proc/PID/task/TID/syscall.
    const inOpen = (tid: string): boolean => {
      try {
        return /^(257|56) /.test(fs.readFileSync(`/proc/${d.pid}/task/${tid}/syscall`, 'utf8'));
      } catch {
        return false;
      }
    };
    await waitFor('the main thread to be stuck in open() of the FIFO', () => inOpen(String(d.pid)), (b) => b, 10000);
    const stuckThreads = fs.readdirSync(`/proc/${d.pid}/task`).filter(inOpen).length;
    const r = await d.stop('SIGTERM', 10000);
    // eslint-disable-next-line no-console
    console.log(`SIGTERM with ${stuckThreads} thread(s) stuck in open(): exit ${r.code} after ${r.ms} ms`);
    expect(r.code).toBe(71);
    const lines = d.stderr.split('\n').filter((l) => l.startsWith('nfqlb: stop did not finish'));
    expect(lines.length).toBe(1);
    expect(r.ms).toBeLessThan(3000); // the deadline is 0.9 s; the margin is for a loaded machine
    // The kernel unbound the queues with the sockets: a new daemon binds them at once.
    unplant(file);
    tb.initTable(stuck);
    await tb.startDaemon(['flowlb', '--queue=0:3', '--hash_mode=0', `--metrics_address=127.0.0.1:${METRICS_PORT}`]);
    tb.setFlow('naf-stuck', stuck);
    expectForwarding();
    expect(nfqlbOk(['flow-list-names'], { ns: tb.lb }).stdout).toContain('naf-stuck');
    registerShm(stuck);
  });
});
