/**
 * --flows_file under kill -9: nothing acknowledged is lost. A daemon in a
 * child process (test/helpers/flows-daemon.js: a Daemon with no queues, no
 * root) takes a stream of flow-sets and flow-deletes from one client over the
 * control socket, which notes which got their OK; the daemon is killed —
 * by itself at a chosen point (NFQLB_TEST_FLOWS_FILE_CRASH: after a record is
 * synced but before its OK, in a compaction after the new file is synced but
 * not renamed, after the rename before the directory sync), or by SIGKILL
 * from the test at a random moment — then the file is read back as the next
 * start reads it, and a new daemon is started on it. Every acknowledged
 * change must be there; the one request in flight (sent, no reply) may or
 * may not be. Compaction is made frequent (every 2 KB of records) so the
 * kills land in and around compactions.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseAddress, type ControlRequest } from '../../../src/services/control';
import { Daemon } from '../../../src/daemon/daemon';
import { FLOW_FIELDS } from '../../../src/flows/fields';
import { loadFlowsFile, type StoredFlow } from '../../../src/daemon/flowsfile';
import { createLogger } from '../../../src/base/log';
import { createTable, deleteTable } from '../../../src/tables/tablefile';
import { connectTo } from '../../../src/addon/sockets';
import { prng } from '../../helpers/prng';
import { describeUnless } from '../../helpers/skip';

const PREFIX = `nfqlbts-${process.pid}-${Math.random().toString(36).slice(2, 8)}-fc`;
const TABLE = `${PREFIX}-t`;
const HELPER = path.join(__dirname, '..', '..', 'helpers', 'flows-daemon.js');
const DIST_DAEMON = path.join(__dirname, '..', '..', '..', 'dist', 'daemon', 'daemon.js');
let seq = 0;

function unavailable(): string | null {
  if (!fs.existsSync(DIST_DAEMON)) return 'dist/ is not built (npx tsc -p .)';
  try {
    createTable(TABLE, 997, 32, 0);
    return null;
  } catch (err) {
    return `cannot create tables in /dev/shm as this user (${(err as Error).message})`;
  }
}
const why = unavailable();
afterAll(() => deleteTable(TABLE));

/** One request over the socket; '' when the daemon closed without a reply (it died). */
async function request(address: string, req: ControlRequest): Promise<string> {
  let text = '';
  for (const k of ['action', ...FLOW_FIELDS] as const) if (req[k] !== undefined) text += `${k}:${req[k]}\n`;
  const sock = await connectTo(parseAddress(address), 5000);
  const chunks: Buffer[] = [];
  sock.on('data', (d: Buffer) => chunks.push(d));
  sock.on('error', () => undefined);
  const closed = new Promise<void>((resolve) => sock.once('close', () => resolve()));
  sock.end(`${text}eoc:\n`, 'latin1');
  await closed;
  return Buffer.concat(chunks).toString('latin1');
}

type Model = Map<string, StoredFlow>;

function applied(model: Model, req: ControlRequest): Model {
  const next = new Map(model);
  if (req.action === 'delete') next.delete(req.name!);
  else {
    const stored: Record<string, string> = {};
    for (const k of FLOW_FIELDS) if (req[k] !== undefined) stored[k] = req[k]!;
    next.set(req.name!, stored as StoredFlow);
  }
  return next;
}

interface Run {
  child: ChildProcess;
  address: string;
  stderr: string;
  exited: Promise<NodeJS.Signals | null>;
}

async function startChild(file: string, env: NodeJS.ProcessEnv = {}): Promise<Run> {
  const address = `unix:${PREFIX}-c${++seq}`;
  const child = spawn(process.execPath, [HELPER, file, address, `unix:${PREFIX}-t${seq}`, '2048'], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const run: Run = { child, address, stderr: '', exited: new Promise((resolve) => child.once('exit', (_code, signal) => resolve(signal))) };
  child.stderr!.on('data', (d: Buffer) => (run.stderr += d.toString()));
  await new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => {
      if (d.toString().includes('ready')) resolve();
    });
    child.once('exit', () => reject(new Error(`the flows daemon exited before it was ready: ${run.stderr}`)));
  });
  return run;
}

/**
 * Sends changes until the daemon dies (or `max` were sent). Returns the
 * acknowledged model and the request in flight when it died (null: none).
 */
async function stream(run: Run, start: Model, rnd: () => number, round: number, max = 100000): Promise<{ acked: Model; inFlight: ControlRequest | null; oks: number }> {
  let acked = start;
  let oks = 0;
  for (let i = 0; i < max; i++) {
    const names = [...acked.keys()];
    const req: ControlRequest =
      names.length > 5 && rnd() < 0.2
        ? { action: 'delete', name: names[Math.floor(rnd() * names.length)] }
        : {
            action: 'set',
            name: names.length > 5 && rnd() < 0.3 ? names[Math.floor(rnd() * names.length)] : `r${round}-${i}-${String.fromCharCode(0x80 + Math.floor(rnd() * 0x7f))}`,
            target: TABLE,
            priority: `${Math.floor(rnd() * 4)}`,
            protocols: 'tcp',
            dports: `${1 + Math.floor(rnd() * 65535)}`,
          };
    let reply: string;
    try {
      reply = await request(run.address, req);
    } catch {
      return { acked, inFlight: null, oks }; // Not even connected: the daemon was gone.
    }
    if (reply === '') return { acked, inFlight: req, oks };
    expect(reply).toBe('OK\0');
    acked = applied(acked, req);
    oks++;
  }
  return { acked, inFlight: null, oks };
}

/** The file as the next start reads it must hold the acknowledged changes (and at most the one in flight); a daemon starts on it. */
async function checkRestored(file: string, acked: Model, inFlight: ControlRequest | null): Promise<Model> {
  const loaded = loadFlowsFile(file);
  const restored: Model = new Map((loaded?.content.flows ?? []).map((f) => [f.name, f]));
  const withInFlight = inFlight === null ? acked : applied(acked, inFlight);
  const same = (a: Model, b: Model): boolean => a.size === b.size && [...a].every(([k, v]) => JSON.stringify(b.get(k)) === JSON.stringify(v));
  if (!same(restored, acked) && !same(restored, withInFlight)) {
    const lost = [...acked.keys()].filter((k) => JSON.stringify(restored.get(k)) !== JSON.stringify(acked.get(k)));
    throw new Error(`restored ${restored.size} flows, acknowledged ${acked.size}; differing: ${JSON.stringify(lost.slice(0, 5))}`);
  }
  const log = createLogger(0, { write: () => undefined } as unknown as Parameters<typeof createLogger>[1]);
  const daemon = new Daemon(
    {
      mode: 'flowlb', queues: [], qlength: 1, mtu: 1500, batchSize: 1, failOpen: false, promiscuousPing: false,
      pipeline: {}, flowAddress: `unix:${PREFIX}-v${++seq}`, traceAddress: `unix:${PREFIX}-vt${seq}`, metricsAddress: null, tableCheckMs: 0,
      flowsFile: file,
    },
    log,
  );
  await daemon.start();
  try {
    expect(daemon.flows.flows.filter((f) => f.target !== null).length).toBe(restored.size);
  } finally {
    await daemon.stop();
    await daemon.flowsJournal?.idle();
  }
  return restored;
}

describeUnless(why)('--flows_file: kill -9 loses nothing acknowledged', () => {
  let dir: string;
  const children: ChildProcess[] = [];
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), `${PREFIX}-`));
  });
  afterAll(() => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it.each([
    ['after-append', 'after-append:37'],
    ['compact-after-temp', 'compact-after-temp:2'],
    ['compact-after-rename', 'compact-after-rename:2'],
  ])('killed at %s', async (point, spec) => {
    const file = path.join(dir, `${point}.json`);
    const rnd = prng(point.length * 131);
    // Some flows to begin with, so compactions have a snapshot to write.
    const first = await startChild(file);
    children.push(first.child);
    const base = await stream(first, new Map(), rnd, 0, 20);
    first.child.kill('SIGKILL');
    await first.exited;
    await checkRestored(file, base.acked, null);

    const run = await startChild(file, { NFQLB_TEST_FLOWS_FILE_CRASH: spec });
    children.push(run.child);
    const { acked, inFlight, oks } = await stream(run, base.acked, rnd, 1, 5000);
    expect(await run.exited).toBe('SIGKILL');
    expect(oks).toBeGreaterThan(0);
    const leftover = fs.readdirSync(dir).filter((n) => n.startsWith(`.${point}.json.`));
    // Where it died: the new snapshot was synced but not renamed, or renamed.
    expect(leftover.length).toBe(point === 'compact-after-temp' ? 1 : 0);
    await checkRestored(file, acked, inFlight);
    // The next start removed the leftover temporary file.
    expect(fs.readdirSync(dir).filter((n) => n.startsWith(`.${point}.json.`))).toEqual([]);
  });

  it('SIGKILL at random moments under a stream of changes, five times over on the same file', async () => {
    const file = path.join(dir, 'random-kills.json');
    const rnd = prng(99);
    let model: Model = new Map();
    let total = 0;
    for (let round = 1; round <= 5; round++) {
      const run = await startChild(file);
      children.push(run.child);
      const killer = setTimeout(() => run.child.kill('SIGKILL'), 200 + Math.floor(rnd() * 800));
      const { acked, inFlight, oks } = await stream(run, model, rnd, round);
      clearTimeout(killer);
      expect(await run.exited).toBe('SIGKILL');
      total += oks;
      model = await checkRestored(file, acked, inFlight);
    }
    process.stdout.write(`random kills: ${total} changes acknowledged over 5 runs, ${model.size} flows at the end\n`);
    expect(total).toBeGreaterThan(50);
  }, 120000);
});
