/**
 * PacketQueue against the real kernel. Two namespaces joined by a veth pair:
 * the sender namespace sends UDP to VIPs owned by the lb namespace, where an
 * NFQUEUE rule hands them to a PacketQueue running in a worker process inside
 * that namespace (fixtures/queue-worker.js). The worker marks each packet with
 * 100 + the last byte of its source address, or drops it; mark counter rules in
 * mangle INPUT and UDP receivers check what the kernel did with the verdicts.
 * Needs root; skipped otherwise. Nothing is changed in the root namespace.
 */
import { ChildProcess } from 'node:child_process';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { parseQueueProc, PacketQueue, PacketQueueOptions, QUEUE_STAT_FIELDS } from '../../src/addon/queue';
import {
  addAddress,
  addMarkCounter,
  addNeighbour,
  addRoute,
  addVethPair,
  canUseNetns,
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

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Reply = any;

class Worker {
  readonly child: ChildProcess;
  readonly ready: Promise<Reply>;
  stderr = '';
  private nextId = 1;
  private readonly pending = new Map<number, (r: Reply) => void>();

  constructor(ns: string, wrapper: string[] = []) {
    const cmd = wrapper.length > 0 ? wrapper[0] : process.execPath;
    const args = wrapper.length > 0 ? [...wrapper.slice(1), process.execPath, WORKER] : [WORKER];
    this.child = spawnInNs(ns, cmd, args);
    this.child.stderr?.on('data', (d: Buffer) => {
      this.stderr += d.toString();
    });
    let readyResolve: (r: Reply) => void = () => undefined;
    this.ready = new Promise((resolve) => {
      readyResolve = resolve;
    });
    readline.createInterface({ input: this.child.stdout! }).on('line', (line) => {
      const msg = JSON.parse(line) as Reply;
      if (msg.ready) readyResolve(msg);
      const cb = this.pending.get(msg.id);
      if (cb) {
        this.pending.delete(msg.id);
        cb(msg);
      }
    });
  }

  async request(cmd: string, fields: Record<string, unknown> = {}, timeoutMs = 20000): Promise<Reply> {
    await this.ready;
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`worker did not answer '${cmd}' in ${timeoutMs} ms; stderr: ${this.stderr}`));
      }, timeoutMs);
      this.pending.set(id, (r) => {
        clearTimeout(t);
        resolve(r);
      });
      this.child.stdin!.write(JSON.stringify({ id, cmd, ...fields }) + '\n');
    });
  }

  async ok(cmd: string, fields: Record<string, unknown> = {}): Promise<Reply> {
    const r = await this.request(cmd, fields);
    if (!r.ok) throw new Error(`worker '${cmd}' failed: ${JSON.stringify(r.error)}; stderr: ${this.stderr}`);
    return r;
  }

  exited(): Promise<number | null> {
    if (this.child.exitCode !== null) return Promise.resolve(this.child.exitCode);
    return new Promise((resolve) => this.child.once('exit', (code) => resolve(code)));
  }
}

function delta(now: Record<string, number>, before: Record<string, number>): Record<string, number> {
  const d: Record<string, number> = {};
  for (const [k, v] of Object.entries(now)) if (v - (before[k] ?? 0) > 0) d[k] = v - (before[k] ?? 0);
  return d;
}

describe('PacketQueue options (no kernel)', () => {
  it.each<[Partial<PacketQueueOptions>, RegExp]>([
    [{}, /'queueNum' is required/],
    [{ queueNum: -1 }, /queueNum=-1: must be an integer from 0 to 65535/],
    [{ queueNum: 65536 }, /queueNum=65536/],
    [{ queueNum: 1.5 }, /queueNum=1.5/],
    [{ queueNum: 1, copyRange: 0 }, /copyRange=0/],
    [{ queueNum: 1, batchSize: 2000 }, /batchSize=2000: must be an integer from 1 to 1024/],
    [{ queueNum: 1, rcvbuf: 100 }, /rcvbuf=100/],
    [{ queueNum: 1, qlength: 0 }, /qlength=0/],
    [{ queueNum: 1, defaultVerdict: -3 }, /defaultVerdict=-3/],
    [{ queueNum: 1, failOpen: 'yes' as unknown as boolean }, /failOpen=yes: must be true or false/],
  ])('rejects %j', (opts, message) => {
    expect(() => new PacketQueue(opts as PacketQueueOptions)).toThrow(message);
    try {
      new PacketQueue(opts as PacketQueueOptions);
    } catch (err) {
      expect((err as { code: string }).code).toBe('NFQLB_ERR_QUEUE_OPTION');
    }
  });

  it('parses /proc/net/netfilter/nfnetlink_queue', () => {
    const text = '    2  12345     3 2  1500     4     5       77  1\n' + '   10 -4242 x\n' + '65535      1     0 2 65535     0     0        0  1\n';
    expect(parseQueueProc(text)).toEqual([
      { queue: 2, portid: 12345, waiting: 3, copyMode: 2, copyRange: 1500, queueDropped: 4, userDropped: 5, lastId: 77 },
      { queue: 65535, portid: 1, waiting: 0, copyMode: 2, copyRange: 65535, queueDropped: 0, userDropped: 0, lastId: 0 },
    ]);
  });
});

const describeNs = describeUnless(netnsUnavailable());

describeNs('PacketQueue with the kernel (network namespaces)', () => {
  let sender: string;
  let lb: string;
  let wL: Worker; // queues and receivers in the lb namespace
  let wS: Worker; // senders in the sender namespace
  const SRC = (n: number) => `198.51.100.${n}`;

  function procIn(ns: string) {
    return parseQueueProc(nsExec(ns, 'cat', ['/proc/net/netfilter/nfnetlink_queue']).stdout);
  }

  async function received(key: string, n: number): Promise<Reply> {
    return waitFor(`${n} packets on ${key}`, () => wL.ok('received', { key }), (r) => r.count >= n, GIVE_UP_MS);
  }

  beforeAll(async () => {
    sender = createNetns('snd');
    lb = createNetns('lb');
    addVethPair(sender, 'veth0', lb, 'veth1');
    addAddress(lb, 'veth1', '198.51.100.1/24');
    addAddress(lb, 'veth1', '2001:db8:1::1/64');
    for (const vip of ['192.0.2.1/32', '192.0.2.2/32', '192.0.2.3/32', '192.0.2.4/32', '192.0.2.5/32', '192.0.2.6/32', '192.0.2.7/32', '192.0.2.8/32']) {
      addAddress(lb, 'lo', vip);
    }
    addAddress(lb, 'lo', '2001:db8::1/128');
    for (let n = 2; n <= 17; n++) addAddress(sender, 'veth0', `${SRC(n)}/24`);
    addAddress(sender, 'veth0', '2001:db8:1::2/64');
    addAddress(sender, 'veth0', '2001:db8:1::3/64');
    addRoute(sender, '192.0.2.0/24', '198.51.100.1');
    addRoute(sender, '2001:db8::/64', '2001:db8:1::1');
    const mac = macOf(lb, 'veth1');
    addNeighbour(sender, 'veth0', '198.51.100.1', mac);
    addNeighbour(sender, 'veth0', '2001:db8:1::1', mac);

    installQueueRule(lb, '192.0.2.1', 2);
    installQueueRule(lb, '192.0.2.2', 3);
    installQueueRule(lb, '192.0.2.3', 10, 11);
    installQueueRule(lb, '192.0.2.4', 4);
    installQueueRule(lb, '192.0.2.5', 5);
    installQueueRule(lb, '2001:db8::1', 6);
    installQueueRule(lb, '192.0.2.6', 7);
    installQueueRule(lb, '192.0.2.7', 8);
    installQueueRule(lb, '192.0.2.8', 12, 13);
    for (let m = 102; m <= 117; m++) addMarkCounter(lb, '192.0.2.8', m);
    for (const m of [102, 103, 104]) addMarkCounter(lb, '192.0.2.7', m);
    for (const m of [102, 103, 104]) addMarkCounter(lb, '192.0.2.1', m);
    for (const m of [105, 106]) addMarkCounter(lb, '192.0.2.2', m);
    addMarkCounter(lb, '192.0.2.4', 102);
    addMarkCounter(lb, '192.0.2.5', 102);
    addMarkCounter(lb, '192.0.2.6', 102);
    for (const m of [102, 103]) addMarkCounter(lb, '2001:db8::1', m);

    wL = new Worker(lb);
    wS = new Worker(sender);
    await Promise.all([wL.ready, wS.ready]);
  });

  afterAll(async () => {
    await cleanupAll();
  });

  it('accepts with the fwmark from the verdict and drops on -1', async () => {
    const open = await wL.ok('open', { key: 'q2', opts: { queueNum: 2 }, policy: { base: 100, dropPort: 7999 } });
    expect(open.info.rcvbuf).toBe(12288000); // DEFAULT_QLENGTH 16384 * 1500 / 2, a multiple of 4 KiB
    await wL.ok('listen', { key: 'r7000', addr: '192.0.2.1', port: 7000 });
    await wL.ok('listen', { key: 'r7999', addr: '192.0.2.1', port: 7999 });
    await wS.ok('send', { srcs: [SRC(2), SRC(3), SRC(4)], dst: '192.0.2.1', port: 7000, count: 20 });
    await wS.ok('send', { srcs: [SRC(2)], dst: '192.0.2.1', port: 7999, count: 10 });
    const r = await received('r7000', 60);
    expect(r.bySource).toEqual({ [SRC(2)]: 20, [SRC(3)]: 20, [SRC(4)]: 20 });
    // A verdict is final once counted: a packet dropped then cannot arrive later, so no wait for absence is needed.
    const st = await waitFor('70 verdicts', () => wL.ok('stats', { key: 'q2' }), (s) => s.stats.packets >= 70 && s.stats.dropped >= 10, GIVE_UP_MS);
    expect((await wL.ok('received', { key: 'r7999' })).count).toBe(0);
    expect([102, 103, 104].map((m) => markCount(lb, '192.0.2.1', m))).toEqual([20, 20, 20]);
    expect(st.stats).toMatchObject({ packets: 70, accepted: 60, dropped: 10, sendErrors: 0, verdictErrors: 0, parseErrors: 0, lastErrno: null, lastErrnoName: null });
    // The addon's statistics are exactly the fields declared once in src/addon/queue.ts, in its order.
    expect(Object.keys(st.stats)).toEqual([...QUEUE_STAT_FIELDS, 'lastErrnoName']);
    expect(st.seen.hw).toEqual({ [0x0800]: 70 });
    expect(st.seen.partial).toBe(0);
    expect(procIn(lb).find((e) => e.queue === 2)).toMatchObject({ waiting: 0, copyMode: 2, copyRange: 1500, portid: open.info.portid });
  });

  it('delivers up to batchSize packets per handler call and one verdict send per batch', async () => {
    await wL.ok('open', { key: 'q3', opts: { queueNum: 3, batchSize: 64 }, policy: { base: 100, paused: true } });
    await wL.ok('listen', { key: 'r2', addr: '192.0.2.2', port: 7000 });
    await wS.ok('send', { srcs: [SRC(5)], dst: '192.0.2.2', port: 7000, count: 200 });
    // Not started: the packets wait in the kernel.
    await waitFor('200 waiting', () => procIn(lb).find((e) => e.queue === 3)?.waiting ?? 0, (w) => w === 200, GIVE_UP_MS);
    await wL.ok('resume', { key: 'q3' });
    await received('r2', 200);
    const st = (await wL.ok('stats', { key: 'q3' })) as Reply;
    st.seen.batchSizes = { ...st.seen.batchSizes };
    expect(st.stats).toMatchObject({ packets: 200, batches: 4, maxBatch: 64, accepted: 200 });
    expect(st.seen.batchSizes).toEqual({ 64: 3, 8: 1 });
    expect(markCount(lb, '192.0.2.2', 105)).toBe(200);

    // A free-running burst: whatever batches happen, every packet gets its verdict.
    const before = st.stats;
    await wS.ok('send', { srcs: [SRC(6)], dst: '192.0.2.2', port: 7000, count: 2000, burst: true });
    await waitFor('burst drained', () => procIn(lb).find((e) => e.queue === 3)?.waiting ?? -1, (w) => w === 0, GIVE_UP_MS);
    // Nothing waits for a verdict any more, so every packet of the burst that reached the queue is counted.
    const after = (await wL.ok('stats', { key: 'q3' })) as Reply;
    const got = after.stats.packets - before.packets;
    expect(got).toBeGreaterThan(0);
    expect(after.stats.accepted - before.accepted).toBe(got);
    await waitFor(`${got} packets marked`, () => markCount(lb, '192.0.2.2', 106), (n) => n >= got, GIVE_UP_MS);
    expect(markCount(lb, '192.0.2.2', 106)).toBe(got);
    // eslint-disable-next-line no-console
    console.log(
      `burst of 2000: ${got} queued, ${after.stats.batches - before.batches} batches, ` +
        `sizes ${JSON.stringify(delta(after.seen.batchSizes, st.seen.batchSizes))}, enobufs ${after.stats.enobufs}`,
    );
  });

  it('one batch of mixed verdicts: runs of one mark share a batch verdict, and every packet still gets its own verdict and mark', async () => {
    await wL.ok('open', { key: 'q8', opts: { queueNum: 8, batchSize: 64 }, policy: { base: 100, dropPort: 7999, paused: true } });
    await wL.ok('listen', { key: 'r8', addr: '192.0.2.7', port: 7000 });
    await wL.ok('listen', { key: 'r8drop', addr: '192.0.2.7', port: 7999 });
    // In queue order: 3 × mark 102, 1 × 103, 2 × 102, 1 dropped, 4 × 104, 1 dropped, 1 × 103.
    const sends = [[2, 7000, 3], [3, 7000, 1], [2, 7000, 2], [4, 7999, 1], [4, 7000, 4], [2, 7999, 1], [3, 7000, 1]];
    for (const [src, port, count] of sends) await wS.ok('send', { srcs: [SRC(src)], dst: '192.0.2.7', port, count });
    await waitFor('13 waiting', () => procIn(lb).find((e) => e.queue === 8)?.waiting ?? 0, (w) => w === 13, GIVE_UP_MS);
    await wL.ok('resume', { key: 'q8' });
    await received('r8', 11);
    const st = await waitFor('13 verdicts', () => wL.ok('stats', { key: 'q8' }), (s) => s.stats.packets >= 13, GIVE_UP_MS);
    expect(st.stats).toMatchObject({ packets: 13, batches: 1, accepted: 11, dropped: 2, sendErrors: 0, verdictErrors: 0 });
    expect([102, 103, 104].map((m) => markCount(lb, '192.0.2.7', m))).toEqual([5, 2, 4]);
    expect((await wL.ok('received', { key: 'r8drop' })).count).toBe(0);
    expect(procIn(lb).find((e) => e.queue === 8)?.waiting).toBe(0);
  });

  it('serves a --queue-balance range with one PacketQueue per queue', async () => {
    await wL.ok('open', { key: 'q10', opts: { queueNum: 10 }, policy: { base: 100 } });
    await wL.ok('open', { key: 'q11', opts: { queueNum: 11 }, policy: { base: 100 } });
    await wL.ok('listen', { key: 'r3', addr: '192.0.2.3', port: 7000 });
    const srcs = Array.from({ length: 16 }, (_, i) => SRC(i + 2));
    await wS.ok('send', { srcs, dst: '192.0.2.3', port: 7000, count: 5 });
    const r = await received('r3', 80);
    expect(r.count).toBe(80);
    const s10 = (await wL.ok('stats', { key: 'q10' })).stats;
    const s11 = (await wL.ok('stats', { key: 'q11' })).stats;
    expect(s10.packets + s11.packets).toBe(80);
    expect(s10.packets).toBeGreaterThan(0); // 16 flows over 2 queues: all on one has p = 2^-15
    expect(s11.packets).toBeGreaterThan(0);
  });

  it('serves a --queue-balance range with one socket bound to every queue of it: each packet tells its queue, each verdict goes to it', async () => {
    const o = await wL.ok('open', { key: 'q12', opts: { queueNum: 12, queueNums: [12, 13] }, policy: { base: 100 } });
    expect(o.info.queueNums).toEqual([12, 13]);
    // One portid owns both queue instances.
    expect(procIn(lb).filter((e) => e.queue === 12 || e.queue === 13).map((e) => e.portid)).toEqual([o.info.portid, o.info.portid]);
    await wL.ok('listen', { key: 'r8', addr: '192.0.2.8', port: 7000 });
    const srcs = Array.from({ length: 16 }, (_, i) => SRC(i + 2));
    await wS.ok('send', { srcs, dst: '192.0.2.8', port: 7000, count: 5 });
    const r = await received('r8', 80);
    expect(r.count).toBe(80);
    const st = await wL.ok('stats', { key: 'q12' });
    expect(st.stats).toMatchObject({ packets: 80, accepted: 80, dropped: 0, verdictErrors: 0 });
    // What the handler saw per queue is what the kernel queued per queue (its own counters: last packet id).
    const seen = st.seen.byQueue;
    expect(seen[12] + seen[13]).toBe(80);
    expect(seen[12]).toBeGreaterThan(0); // 16 flows over 2 queues: all on one has p = 2^-15
    expect(seen[13]).toBeGreaterThan(0);
    const ids = Object.fromEntries(procIn(lb).filter((e) => e.queue === 12 || e.queue === 13).map((e) => [e.queue, e.lastId]));
    expect({ 12: seen[12], 13: seen[13] }).toEqual(ids);
    // Marks: base 100 + last byte of the source (2..17): each source's 5 packets left with its own mark, whichever queue they took.
    const marks = Array.from({ length: 16 }, (_, i) => markCount(lb, '192.0.2.8', 102 + i));
    expect(marks).toEqual(new Array(16).fill(5));
  });

  it('refuses queueNums that repeat a queue or do not start with queueNum', async () => {
    for (const queueNums of [[14, 14], [15, 14]]) {
      const r = await wL.request('open', { key: `bad${queueNums.join('-')}`, opts: { queueNum: 14, queueNums }, policy: {} });
      expect(r.ok).toBe(false);
      expect(r.error).toMatchObject({ code: 'NFQLB_ERR_QUEUE_OPTION', message: expect.stringContaining('queueNums') });
    }
  });

  it('sends the verdicts of a batch whose handler throws, and reports the exception as uncaught', async () => {
    await wL.ok('open', { key: 'q4', opts: { queueNum: 4 }, policy: { base: 100, throwOnce: true } });
    await wL.ok('listen', { key: 'r4', addr: '192.0.2.4', port: 7000 });
    await wS.ok('send', { srcs: [SRC(2)], dst: '192.0.2.4', port: 7000, count: 10 });
    await received('r4', 10);
    const st = await wL.ok('stats', { key: 'q4' });
    expect(st.uncaught).toEqual(['handler failure on purpose']);
    expect(st.stats).toMatchObject({ packets: 10, accepted: 10, dropped: 0 });
    expect(markCount(lb, '192.0.2.4', 102)).toBe(10);
  });

  it('queues IPv6 packets (hwProtocol 0x86dd) and marks them', async () => {
    await wL.ok('open', { key: 'q6', opts: { queueNum: 6 }, policy: { base: 100 } });
    await wL.ok('listen', { key: 'r6', addr: '2001:db8::1', port: 7000 });
    await wS.ok('send', { srcs: ['2001:db8:1::2', '2001:db8:1::3'], dst: '2001:db8::1', port: 7000, count: 10 });
    const r = await received('r6', 20);
    expect(r.bySource).toEqual({ '2001:db8:1::2': 10, '2001:db8:1::3': 10 });
    const st = await wL.ok('stats', { key: 'q6' });
    expect(st.seen.hw).toEqual({ [0x86dd]: 20 });
    expect([102, 103].map((m) => markCount(lb, '2001:db8::1', m))).toEqual([10, 10]);
  });

  it('copies at most copyRange bytes and reports the original length', async () => {
    await wL.ok('open', { key: 'q7', opts: { queueNum: 7, copyRange: 40 }, policy: { base: 100 } });
    await wL.ok('listen', { key: 'r7', addr: '192.0.2.6', port: 7000 });
    await wS.ok('send', { srcs: [SRC(2)], dst: '192.0.2.6', port: 7000, count: 5, size: 100 });
    await received('r7', 5);
    const st = await wL.ok('stats', { key: 'q7' });
    expect(st.seen.lengths).toEqual({ '40/128': 5 }); // 20 IPv4 + 8 UDP + 100 payload
    expect(markCount(lb, '192.0.2.6', 102)).toBe(5);
    expect(procIn(lb).find((e) => e.queue === 7)?.copyRange).toBe(40);
  });

  it('fails with NFQLB_ERR_QUEUE_BUSY when another process holds the queue', async () => {
    const first = await wL.ok('open', { key: 'q20', opts: { queueNum: 20 }, policy: {} });
    const other = new Worker(lb);
    const r = await other.request('open', { key: 'q20', opts: { queueNum: 20 } });
    expect(r.ok).toBe(false);
    expect(r.error).toMatchObject({ name: 'NfqlbError', code: 'NFQLB_ERR_QUEUE_BUSY', errnoName: 'EBUSY', errno: -16 });
    expect(r.error.message).toBe(
      `queue 20 is bound by another process (netlink portid ${first.info.portid}) (EBUSY); ` +
        'stop the other nfqlb or pick another --queue',
    );
    // The addon said only what failed and the kernel's errno (EPERM or EBUSY, by kernel); the advice is src/addon/queue.ts's.
    expect(r.error.cause).toMatchObject({ name: 'NfqlbError', code: 'NFQLB_ERR_QUEUE', message: expect.stringMatching(/^cannot bind queue 20: /) });
    expect(['EPERM', 'EBUSY']).toContain(r.error.cause.errnoName);
    expect(typeof r.error.cause.errno).toBe('number');
    // The same process binding it twice gets the same answer.
    const again = await wL.request('open', { key: 'q20b', opts: { queueNum: 20 } });
    expect(again.error.code).toBe('NFQLB_ERR_QUEUE_BUSY');

    // close() unbinds: the queue disappears from /proc and can be bound again.
    expect(procIn(lb).find((e) => e.queue === 20)).toMatchObject({ portid: first.info.portid, copyMode: 2 });
    const closed = await wL.ok('close', { key: 'q20' });
    expect(closed.closed).toBe(true);
    expect(procIn(lb).find((e) => e.queue === 20)).toBeUndefined();
    const reopened = await other.ok('open', { key: 'q20', opts: { queueNum: 20 } });
    expect(procIn(lb).find((e) => e.queue === 20)?.portid).toBe(reopened.info.portid);
    // A killed process leaves nothing bound.
    await killProcess(other.child);
    expect(procIn(lb).find((e) => e.queue === 20)).toBeUndefined();
  });

  it('one socket for several queues: a busy queue among them fails the bind naming that queue, and none of them stays bound', async () => {
    const holder = await wL.ok('open', { key: 'q22', opts: { queueNum: 22 }, policy: {} });
    const other = new Worker(lb);
    try {
      const r = await other.request('open', { key: 'q21', opts: { queueNum: 21, queueNums: [21, 22, 23] } });
      expect(r.ok).toBe(false);
      expect(r.error).toMatchObject({ code: 'NFQLB_ERR_QUEUE_BUSY' });
      expect(r.error.message).toBe(
        `queue 22 is bound by another process (netlink portid ${holder.info.portid}) (EBUSY); stop the other nfqlb or pick another --queue`,
      );
      // Queue 21 was bound on the failed socket before 22 failed: closing it unbound it.
      expect(procIn(lb).filter((e) => [21, 22, 23].includes(e.queue)).map((e) => [e.queue, e.portid])).toEqual([[22, holder.info.portid]]);
    } finally {
      await killProcess(other.child);
      await wL.ok('close', { key: 'q22' });
    }
  });

  it('fails with NFQLB_ERR_QUEUE_PERM without CAP_NET_ADMIN', async () => {
    const w = new Worker(lb, ['setpriv', '--inh-caps=-net_admin', '--bounding-set=-net_admin']);
    const r = await w.request('open', { key: 'q21', opts: { queueNum: 21 } });
    expect(r.ok).toBe(false);
    expect(r.error).toMatchObject({ code: 'NFQLB_ERR_QUEUE_PERM', errnoName: 'EPERM', errno: -1 });
    expect(r.error.message).toMatch(/queue 21.*run as root or with CAP_NET_ADMIN/);
    expect(r.error.cause).toMatchObject({ code: 'NFQLB_ERR_QUEUE', errno: -1, errnoName: 'EPERM', message: 'cannot bind queue 21: Operation not permitted' });
    await killProcess(w.child);
  });

  it('close() from inside the handler sends the batch verdicts, then unbinds', async () => {
    await wL.ok('open', { key: 'q5', opts: { queueNum: 5 }, policy: { base: 100, closeInHandler: true } });
    await wL.ok('listen', { key: 'r5', addr: '192.0.2.5', port: 7000 });
    await wS.ok('send', { srcs: [SRC(2)], dst: '192.0.2.5', port: 7000, count: 1 });
    await received('r5', 1);
    expect(markCount(lb, '192.0.2.5', 102)).toBe(1);
    await waitFor('queue 5 unbound', () => procIn(lb).some((e) => e.queue === 5), (bound) => !bound, GIVE_UP_MS);
    const st = await wL.ok('stats', { key: 'q5' });
    expect(st.stats).toMatchObject({ packets: 1, accepted: 1 });
  });

  it('a stopped queue lets the process end, and the queue is unbound at exit', async () => {
    const w = new Worker(lb);
    await w.ok('open', { key: 'q22', opts: { queueNum: 22 } });
    expect(procIn(lb).some((e) => e.queue === 22)).toBe(true);
    await w.ok('exit', { graceful: true });
    expect(await w.exited()).toBe(0);
    expect(procIn(lb).some((e) => e.queue === 22)).toBe(false);
  });
});
