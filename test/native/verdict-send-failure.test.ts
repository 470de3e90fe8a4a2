/**
 * Batch verdicts after a verdict send that fails (every retry;
 * here ENOMEM injected into sendto by strace) leaves that batch's packets
 * queued in the kernel without a verdict. A later NFQNL_MSG_VERDICT_BATCH is
 * applied by the kernel to EVERY queued id up to its last, so without care it
 * gives those stranded packets the verdict and fwmark of other packets (here:
 * another source's mark, i.e. another target). They must never get a verdict
 * and mark that is not their own. Needs root and strace; skipped otherwise.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { parseQueueProc } from '../../src/addon/queue';
import {
  addAddress,
  addMarkCounter,
  addNeighbour,
  addRoute,
  addVethPair,
  cleanupAll,
  createNetns,
  installQueueRule,
  killProcess,
  macOf,
  markCount,
  nsExec,
  spawnInNs,
} from '../helpers/netns';
import { waitFor } from '../helpers/wait';
import { describeUnless, netnsUnavailable } from '../helpers/skip';

/** How long a wait may take before the test gives up (ms). */
const GIVE_UP_MS = 10000;

const WORKER = path.join(__dirname, 'fixtures', 'queue-worker.js');
const STRACE = spawnSync('strace', ['-V']).status === 0;
const describeNs = describeUnless(netnsUnavailable() ?? (STRACE ? null : 'need strace (fault injection into sendto)'));
jest.setTimeout(60000);

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Reply = any;

/** The queue worker of queue.test.ts (fixtures/queue-worker.js), one JSON request per line. */
class Worker {
  readonly child: ChildProcess;
  private nextId = 1;
  private stderr = '';
  private readonly pending = new Map<number, (r: Reply) => void>();
  readonly ready: Promise<void>;

  constructor(ns: string) {
    this.child = spawnInNs(ns, process.execPath, [WORKER]);
    this.child.stderr?.on('data', (d: Buffer) => (this.stderr += d.toString()));
    let ready: () => void = () => undefined;
    this.ready = new Promise((r) => (ready = r));
    readline.createInterface({ input: this.child.stdout! }).on('line', (line) => {
      const msg = JSON.parse(line) as Reply;
      if (msg.ready) ready();
      this.pending.get(msg.id)?.(msg);
      this.pending.delete(msg.id);
    });
  }

  async ok(cmd: string, fields: Record<string, unknown> = {}): Promise<Reply> {
    await this.ready;
    const id = this.nextId++;
    const r = await new Promise<Reply>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`worker did not answer '${cmd}'; stderr: ${this.stderr}`)), 20000);
      this.pending.set(id, (m) => {
        clearTimeout(t);
        resolve(m);
      });
      this.child.stdin!.write(JSON.stringify({ id, cmd, ...fields }) + '\n');
    });
    if (!r.ok) throw new Error(`worker '${cmd}' failed: ${JSON.stringify(r.error)}; stderr: ${this.stderr}`);
    return r;
  }
}

const VIP = '192.0.2.9';
const QUEUE = 9;

describeNs('a failed verdict send, then a batch verdict', () => {
  let sender: string;
  let lb: string;
  let wL: Worker;
  let wS: Worker;
  let strace: ChildProcess | null = null;

  beforeAll(async () => {
    sender = createNetns('hsnd');
    lb = createNetns('hlb');
    addVethPair(sender, 'veth0', lb, 'veth1');
    addAddress(lb, 'veth1', '198.51.100.1/24');
    addAddress(lb, 'lo', `${VIP}/32`);
    addAddress(sender, 'veth0', '198.51.100.2/24');
    addAddress(sender, 'veth0', '198.51.100.4/24');
    addRoute(sender, '192.0.2.0/24', '198.51.100.1');
    addNeighbour(sender, 'veth0', '198.51.100.1', macOf(lb, 'veth1'));
    installQueueRule(lb, VIP, QUEUE);
    for (const m of [102, 104]) addMarkCounter(lb, VIP, m);
    wL = new Worker(lb);
    wS = new Worker(sender);
    await Promise.all([wL.ready, wS.ready]);
  });

  afterAll(async () => {
    if (strace !== null) await killProcess(strace);
    await cleanupAll();
  });

  const waiting = (): number => parseQueueProc(nsExec(lb, 'cat', ['/proc/net/netfilter/nfnetlink_queue']).stdout).find((e) => e.queue === QUEUE)?.waiting ?? 0;

  it('the packets of the failed send never get the mark of a later batch', async () => {
    await wL.ok('open', { key: 'q', opts: { queueNum: QUEUE, batchSize: 64 }, policy: { base: 100, paused: true } });
    await wL.ok('listen', { key: 'r', addr: VIP, port: 7000 });
    // Batch A: 3 datagrams from .2 (mark 102), whose one verdict send fails every time.
    await wS.ok('send', { srcs: ['198.51.100.2'], dst: VIP, port: 7000, count: 3 });
    await waitFor('3 waiting', waiting, (w) => w === 3, GIVE_UP_MS);
    // Attached to the worker's main thread only (no -f): its next sendto calls are the verdict sends.
    strace = spawn('strace', ['-o', '/dev/null', '-p', String(wL.child.pid), '-e', 'trace=sendto', '-e', 'inject=sendto:error=ENOMEM:when=1..3'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let straceErr = '';
    strace.stderr!.on('data', (d: Buffer) => (straceErr += d.toString()));
    await waitFor('strace attached', () => straceErr, (t) => /attached/.test(t), GIVE_UP_MS);
    await wL.ok('resume', { key: 'q' });
    const failed = await waitFor('the failed send', () => wL.ok('stats', { key: 'q' }), (s) => s.stats.sendErrors >= 1, GIVE_UP_MS);
    expect(failed.stats).toMatchObject({ sendErrors: 1, unsentVerdicts: 3 });
    await killProcess(strace);
    strace = null;
    expect(waiting()).toBe(3);
    // Batch B: 2 datagrams from .4 (mark 104), consecutive ids with one mark: a run.
    await wL.ok('pause', { key: 'q' });
    await wS.ok('send', { srcs: ['198.51.100.4'], dst: VIP, port: 7000, count: 2 });
    await waitFor('5 waiting', waiting, (w) => w === 5, GIVE_UP_MS);
    await wL.ok('resume', { key: 'q' });
    await waitFor('batch B received', () => wL.ok('received', { key: 'r' }), (r) => r.count >= 2, GIVE_UP_MS);
    await waitFor('B answered', () => wL.ok('stats', { key: 'q' }), (s) => s.stats.packets >= 5, GIVE_UP_MS);
    // B's two with their own mark; none of A's took B's mark (they are still queued without a verdict).
    expect({ mark102: markCount(lb, VIP, 102), mark104: markCount(lb, VIP, 104), received: (await wL.ok('received', { key: 'r' })).count })
      .toEqual({ mark102: 0, mark104: 2, received: 2 });
    expect(waiting()).toBe(3);
  });
});
