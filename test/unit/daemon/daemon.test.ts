/**
 * Daemon.handleControl as a client sees it: a whole Daemon started with no
 * queues (nothing is bound but its control and trace sockets, so no root is
 * needed) on private abstract names, driven by raw requests over the socket.
 * Replies are compared byte for byte, NUL terminators included: text replies
 * end in one NUL, JSON replies (list actions) have none, a request cut off
 * before `eoc:` gets nothing. Flow listings are nfqlb 1.2.0's own output
 * (test/fixtures/reference/cli). Also: what is counted per action, what a
 * table reference costs, and --flows_file off and on.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Daemon, type DaemonOptions } from '../../../src/daemon/daemon';
import { createLogger } from '../../../src/base/log';
import { createTable, deleteTable } from '../../../src/tables/tablefile';
import { describeUnless } from '../../helpers/skip';
import { until } from '../../helpers/wait';
import { rawControlRequest } from '../../helpers/control';

const PREFIX = `nfqlbts-${process.pid}-${Math.random().toString(36).slice(2, 8)}-dmn`;
let seq = 0;
const nextName = (): string => `${PREFIX}-${++seq}`;

const REF = path.join(__dirname, '..', '..', 'fixtures', 'reference');
const ref = (file: string): string => fs.readFileSync(path.join(REF, file), 'latin1');

/** Tables of the reference scenario `multi` under private names (other helpers use /dev/shm at the same time). */
const TSHM_A = `${PREFIX}-tshm-a`;
const TSHM_B = `${PREFIX}-tshm-b`;
const privateNames = (text: string): string => text.replace(/"tshm-a"/g, `"${TSHM_A}"`).replace(/"tshm-b"/g, `"${TSHM_B}"`);

/** Why this run cannot make the tables in /dev/shm (a read-only or foreign /dev/shm), or null. */
function tablesUnavailable(): string | null {
  try {
    createTable(TSHM_A, 997, 32, 0);
    createTable(TSHM_B, 4999, 20, 0); // nfqlb's init --M=5000 (the listings do not show M)
    return null;
  } catch (err) {
    deleteTable(TSHM_A);
    return `cannot create tables in /dev/shm as this user (${(err as Error).message})`;
  }
}
const noTables = tablesUnavailable();
afterAll(() => {
  deleteTable(TSHM_A);
  deleteTable(TSHM_B);
});

const quietLog = (): ReturnType<typeof createLogger> =>
  createLogger(0, { write: () => undefined } as unknown as Parameters<typeof createLogger>[1]);

function options(extra: Partial<DaemonOptions> = {}): DaemonOptions {
  return {
    mode: 'flowlb', queues: [], qlength: 1, mtu: 1500, batchSize: 1, failOpen: false, promiscuousPing: false,
    pipeline: {}, flowAddress: `unix:${nextName()}`, traceAddress: `unix:${nextName()}`, metricsAddress: null, tableCheckMs: 0,
    ...extra,
  };
}

const raw = rawControlRequest;

/** nfqlb's CLI request for `flow-set`-style options (key order as its writer). */
function request(fields: Array<[string, string]>): string {
  return `${fields.map(([k, v]) => `${k}:${v}\n`).join('')}eoc:\n`;
}

/** The request lines of the reference scenario's flow-set commands, as nfqlb's CLI sends them. */
function multiFlowRequests(): string[] {
  const keyOf: Record<string, string> = { prio: 'priority' };
  const order = ['action', 'name', 'target', 'priority', 'protocols', 'dsts', 'srcs', 'dports', 'sports', 'match', 'udpencap'];
  return ref('decisions/multi.cmds').split('\n').filter((l) => l.startsWith('flow-set ')).map((line) => {
    const fields = new Map<string, string>([['action', 'set']]);
    for (const word of line.split(' ').slice(1)) {
      const m = /^--([a-z_]+)=(.*)$/.exec(word)!;
      fields.set(keyOf[m[1]] ?? m[1], m[2]);
    }
    fields.set('target', privateNames(`"${fields.get('target')}"`).slice(1, -1));
    return request(order.filter((k) => fields.has(k)).map((k) => [k, fields.get(k)!]));
  });
}

function unixListeners(name: string): string[] {
  return fs.readFileSync('/proc/net/unix', 'utf8').split('\n').filter((l) => l.endsWith(`@${name}`));
}

/** A daemon with the test options, started; `address` is its control socket. */
async function startedDaemon(): Promise<{ daemon: Daemon; address: string }> {
  const opts = options();
  const daemon = new Daemon(opts, quietLog());
  await daemon.start();
  return { daemon, address: opts.flowAddress };
}

describe('a daemon with no queues', () => {
  it('binds only its control and trace sockets, and stop() releases both', async () => {
    const opts = options();
    const daemon = new Daemon(opts, quietLog());
    await daemon.start();
    try {
      expect(daemon.queues).toEqual([]);
      expect(unixListeners(opts.flowAddress.slice(5))).toHaveLength(1);
      expect(unixListeners(opts.traceAddress.slice(5))).toHaveLength(1);
      expect(await raw(opts.flowAddress, 'action:list-names\neoc:\n')).toBe('[]\n');
    } finally {
      await daemon.stop();
    }
    expect(unixListeners(opts.flowAddress.slice(5))).toEqual([]);
    expect(unixListeners(opts.traceAddress.slice(5))).toEqual([]);
  });
});

describe('requests that are refused or broken', () => {
  let daemon: Daemon;
  let address: string;

  beforeAll(async () => ({ daemon, address } = await startedDaemon()));
  afterAll(() => daemon.stop());

  it.each([
    ['no action', 'name:x\neoc:\n', 'FAIL: no action\0'],
    ['an action nfqlb does not know', 'action:bogus\neoc:\n', 'FAIL: action unknown\0'],
    ['delete without a name', 'action:delete\neoc:\n', 'FAIL: no name\0'],
    ['trace-set without a name', 'action:trace-set\neoc:\n', 'FAIL: no name\0'],
    ['trace-delete without a name', 'action:trace-delete\neoc:\n', 'FAIL: no name\0'],
    ['set of a table that does not exist', `action:set\nname:x\ntarget:${PREFIX}-none\neoc:\n`, "FAIL: Couldn't create load-balancer\0"],
    ['set without a target', 'action:set\nname:x\neoc:\n', "FAIL: Couldn't create load-balancer\0"],
    ['a line without a colon', 'action:list\nnonsense\neoc:\n', 'FAIL: invalid param [nonsense]\0'],
    ['a line of 1024 bytes', `action:set\nname:${'x'.repeat(1100)}\neoc:\n`, 'FAIL: line longer than 1023 bytes\0'],
    ['a request cut off before eoc:', 'action:list-names\n', ''],
    ['an empty connection', '', ''],
  ])('%s: %j', async (_what, req, reply) => {
    expect(await raw(address, req)).toBe(reply);
  });

  it('deleting a flow that does not exist is OK, as nfqlb', async () => {
    expect(await raw(address, 'action:delete\nname:never-set\neoc:\n')).toBe('OK\0');
    expect(await raw(address, 'action:trace-delete\nname:never-set\neoc:\n')).toBe('OK\0');
  });

  it('listing a name that does not exist replies nothing at all (no NUL), as nfqlb', async () => {
    expect(await raw(address, 'action:list\nname:never-set\neoc:\n')).toBe('');
    expect(await raw(address, 'action:trace-list\nname:never-set\neoc:\n')).toBe('');
  });

  it('counts each request by action and result, refusals by reason, and keeps serving', async () => {
    const before = (a: string, r: string): number => daemon.controlRequests.get(a, r);
    const counts = [before('none', 'fail'), before('unknown', 'fail'), before('list-names', 'ok'), daemon.controlRefused.get('invalid_param')];
    await raw(address, 'name:x\neoc:\n');
    await raw(address, 'action:bogus\neoc:\n');
    await raw(address, 'action:list\nnonsense\neoc:\n');
    expect(await raw(address, 'action:list-names\neoc:\n')).toBe('[]\n');
    expect([before('none', 'fail'), before('unknown', 'fail'), before('list-names', 'ok'), daemon.controlRefused.get('invalid_param')])
      .toEqual(counts.map((n) => n + 1));
    // A refused line is counted once, as refused, not also as a request (nfqlb_control_requests_total).
    expect(before('invalid', 'refused')).toBe(0);
  });
});

describeUnless(noTables)('flows set, listed and deleted over the socket', () => {
  let daemon: Daemon;
  let address: string;

  beforeAll(async () => ({ daemon, address } = await startedDaemon()));
  afterAll(() => daemon.stop());

  it('the reference scenario: every set is OK\\0, and list / list-names / list NAME are nfqlb 1.2.0 byte for byte', async () => {
    for (const req of multiFlowRequests()) expect(await raw(address, req)).toBe('OK\0');
    expect(await raw(address, 'action:list\neoc:\n')).toBe(privateNames(ref('cli/multi.flow-list.json')));
    expect(await raw(address, 'action:list-names\neoc:\n')).toBe(ref('cli/multi.flow-list-names.json'));
    expect(await raw(address, 'action:list\nname:fa-syn\neoc:\n')).toBe(privateNames(ref('cli/multi.flow-list-fa-syn.json')));
    // Six flows hold references to two tables, each opened once.
    expect(daemon.targets.list().map((t) => [t.name, t.refs]).sort()).toEqual([[TSHM_A, 3], [TSHM_B, 3]]);
    expect(daemon.controlRequests.get('set', 'ok')).toBe(6);
  });

  it('refuses a changed udpencap and udpencap without sctp, leaving the flows as they were', async () => {
    const listing = await raw(address, 'action:list\neoc:\n');
    expect(await raw(address, `action:set\nname:sctp-encap\ntarget:${TSHM_B}\nprotocols:sctp\nudpencap:1234\neoc:\n`)).toBe('FAIL: Alter udpencap not allowed\0');
    expect(await raw(address, `action:set\nname:new-encap\ntarget:${TSHM_B}\nprotocols:tcp\nudpencap:1234\neoc:\n`)).toBe('FAIL: only sctp for updencap\0');
    expect(await raw(address, `action:set\nname:fa-web\ntarget:${PREFIX}-none\neoc:\n`)).toBe("FAIL: Couldn't create new load-balancer\0");
    expect(await raw(address, 'action:list\neoc:\n')).toBe(listing);
    expect(daemon.targets.list().map((t) => [t.name, t.refs]).sort()).toEqual([[TSHM_A, 3], [TSHM_B, 3]]);
  });

  it('a bad field in a set is refused with nfqlb\'s plain words (no FAIL:) and sets nothing', async () => {
    const listing = await raw(address, 'action:list\neoc:\n');
    const set = (fields: string): Promise<string> => raw(address, `action:set\nname:bad\ntarget:${TSHM_A}\n${fields}eoc:\n`);
    expect(await set('dsts:192.0.2.300/32\n')).toBe('Invalid dsts\0');
    expect(await set('srcs:nonsense\n')).toBe('Invalid srcs\0');
    expect(await set('protocols:nosuchproto\n')).toBe('Invalid protocols\0');
    expect(await set('dports:70000\n')).toBe('Invalid dports\0');
    // nfqlb's text for bad sports, sic.
    expect(await set('sports:1-x\n')).toBe('Invalid dports\0');
    expect(await raw(address, 'action:list\neoc:\n')).toBe(listing);
    expect(daemon.targets.list().map((t) => [t.name, t.refs]).sort()).toEqual([[TSHM_A, 3], [TSHM_B, 3]]);
  });

  it('deleting every flow releases every table; the listings are empty again', async () => {
    for (const name of ['fa-web', 'fb-udp', 'fb-any', 'fa-syn', 'sctp-encap', 'fa-sports']) {
      expect(await raw(address, `action:delete\nname:${name}\neoc:\n`)).toBe('OK\0');
    }
    expect(await raw(address, 'action:list\neoc:\n')).toBe('[]\n');
    expect(await raw(address, 'action:list-names\neoc:\n')).toBe('[]\n');
    expect(daemon.targets.list()).toEqual([]);
  });
});

describe('trace-flows over the socket', () => {
  let daemon: Daemon;
  let address: string;

  beforeAll(async () => ({ daemon, address } = await startedDaemon()));
  afterAll(() => daemon.stop());

  it('trace-set answers OK\\0 (nfqlb answers nothing), needs no table, and lists without a user_ref', async () => {
    expect(await raw(address, 'action:trace-set\nname:tf\nprotocols:tcp\ndsts:192.0.2.1/32\ndports:80\neoc:\n')).toBe('OK\0');
    expect(await raw(address, 'action:trace-set\nname:tf2\neoc:\n')).toBe('OK\0');
    expect(await raw(address, 'action:trace-list-names\neoc:\n')).toBe('[\n  "tf",\n  "tf2"\n]\n');
    const one = await raw(address, 'action:trace-list\nname:tf\neoc:\n');
    expect(one.endsWith('}')).toBe(true);
    expect(JSON.parse(one)).toEqual({
      name: 'tf', priority: 0, protocols: ['tcp'], dests: ['::ffff:192.0.2.1/128'], dports: ['80'], matches_count: 0,
    });
    const all = await raw(address, 'action:trace-list\neoc:\n');
    expect((JSON.parse(all) as Array<{ name: string }>).map((f) => f.name)).toEqual(['tf', 'tf2']);
    expect(all.endsWith(']\n')).toBe(true);
    // Trace-flows are not flows.
    expect(await raw(address, 'action:list-names\neoc:\n')).toBe('[]\n');
    expect(daemon.targets.list()).toEqual([]);
  });

  it('a bad trace-flow is refused and not set; trace-delete removes one', async () => {
    const reply = await raw(address, 'action:trace-set\nname:tf3\nprotocols:nosuchproto\neoc:\n');
    expect(reply).toBe('Invalid protocols\0');
    expect(await raw(address, 'action:trace-delete\nname:tf\neoc:\n')).toBe('OK\0');
    expect(await raw(address, 'action:trace-list-names\neoc:\n')).toBe('[\n  "tf2"\n]\n');
  });
});

describeUnless(noTables)('--flows_file', () => {
  let dir: string;
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), `${PREFIX}-flows-`));
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('off (no option): changes touch no file', async () => {
    const daemon = new Daemon(options(), quietLog());
    await daemon.start();
    try {
      expect(await raw(daemon.options.flowAddress, `action:set\nname:f1\ntarget:${TSHM_A}\neoc:\n`)).toBe('OK\0');
      expect(await raw(daemon.options.flowAddress, 'action:delete\nname:f1\neoc:\n')).toBe('OK\0');
    } finally {
      await daemon.stop();
    }
    expect(fs.readdirSync(dir)).toEqual([]);
    expect(daemon.flowsFileErrors).toBe(0);
  });

  it('on: written before the OK, and a new daemon starts with the same flows and trace-flows', async () => {
    const file = path.join(dir, 'flows.json');
    const first = new Daemon(options({ flowsFile: file }), quietLog());
    await first.start();
    let listing: string;
    let traceListing: string;
    try {
      for (const req of multiFlowRequests()) {
        expect(await raw(first.options.flowAddress, req)).toBe('OK\0');
        // The OK comes after the write: the file already holds the flow.
        const name = /name:([^\n]*)/.exec(req)![1];
        expect(fs.readFileSync(file, 'utf8')).toContain(JSON.stringify(name));
      }
      expect(await raw(first.options.flowAddress, 'action:trace-set\nname:tf\nprotocols:udp\neoc:\n')).toBe('OK\0');
      // A refused request changes nothing on disk.
      const before = fs.readFileSync(file);
      expect(await raw(first.options.flowAddress, `action:set\nname:x\ntarget:${PREFIX}-none\neoc:\n`)).toBe("FAIL: Couldn't create load-balancer\0");
      expect(fs.readFileSync(file).equals(before)).toBe(true);
      listing = await raw(first.options.flowAddress, 'action:list\neoc:\n');
      traceListing = await raw(first.options.flowAddress, 'action:trace-list\neoc:\n');
    } finally {
      await first.stop();
    }
    const second = new Daemon(options({ flowsFile: file }), quietLog());
    await second.start();
    try {
      expect(await raw(second.options.flowAddress, 'action:list\neoc:\n')).toBe(listing);
      expect(await raw(second.options.flowAddress, 'action:trace-list\neoc:\n')).toBe(traceListing);
      for (const name of ['fa-web', 'fb-udp', 'fb-any', 'fa-syn', 'sctp-encap', 'fa-sports']) {
        expect(await raw(second.options.flowAddress, `action:delete\nname:${name}\neoc:\n`)).toBe('OK\0');
      }
      await until(() => second.targets.list().length === 0, 'the tables to be released');
      expect(second.flowsFileErrors).toBe(0);
    } finally {
      await second.stop();
    }
    expect(listing).toBe(privateNames(ref('cli/multi.flow-list.json')));
  });
});
