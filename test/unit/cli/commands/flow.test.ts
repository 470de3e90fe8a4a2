/**
 * The flow commands (cli/commands/flow.ts): what flow-set, flow-delete,
 * flow-list and the trace-flow commands send to the daemon's control socket
 * and how they answer to its replies — against a stand-in server on an
 * abstract unix socket that records each request and gives a set reply —
 * and the checks that refuse a command line before connecting.
 */
import { startControlServer, type ControlReply, type ControlRequest } from '../../../../src/services/control';
import { runInProcess } from '../../../helpers/cli';

/**
 * The daemon's control server with a stand-in handler: answers each request
 * with the next of `replies` ('none': never, so the server closes the
 * connection without a reply when its timeout ends) and records the requests
 * as parsed, fields in the order they came.
 */
async function fakeDaemon(address: string, replies: Array<ControlReply | 'none'>): Promise<{ requests: Array<[string, string | undefined][]>; close: () => Promise<void> }> {
  const requests: Array<[string, string | undefined][]> = [];
  const server = await startControlServer(address, {
    handle: (req: ControlRequest) => {
      requests.push(Object.entries(req));
      const r = replies.shift() ?? 'none';
      return r === 'none' ? new Promise<ControlReply>(() => undefined) : r;
    },
  }, { timeoutMs: 300 });
  return { requests, close: () => server.close() };
}

/** Runs `words` in-process with NFQLB_FLOW_ADDRESS at `address`. */
async function withAddress(address: string, words: string[]): ReturnType<typeof runInProcess> {
  const saved = process.env.NFQLB_FLOW_ADDRESS;
  process.env.NFQLB_FLOW_ADDRESS = address;
  try {
    return await runInProcess(words);
  } finally {
    if (saved === undefined) delete process.env.NFQLB_FLOW_ADDRESS;
    else process.env.NFQLB_FLOW_ADDRESS = saved;
  }
}

const ADDRESS = `unix:nfqlbts-flowcmd-${process.pid}`;

describe('requests and replies', () => {
  test('flow-set sends every given field in nfqlb\'s order (--prio as priority); OK exits 0, anything else 255', async () => {
    const d = await fakeDaemon(ADDRESS, [{ text: 'OK' }, { text: 'Invalid dsts' }]);
    try {
      const ok = await withAddress(ADDRESS, ['flow-set', '--udpencap=9899', '--target=tshm-a', '--name=f1', '--prio=5', '--protocols=sctp', '--dsts=192.0.2.0/24']);
      expect(ok).toEqual({ rc: 0, stdout: 'OK\n', stderr: '' });
      const bad = await withAddress(ADDRESS, ['flow-set', '--name=f2', '--target=tshm-a', '--dsts=bad']);
      expect(bad).toEqual({ rc: 255, stdout: 'Invalid dsts\n', stderr: '' });
      expect(d.requests).toEqual([
        [['action', 'set'], ['name', 'f1'], ['target', 'tshm-a'], ['priority', '5'], ['protocols', 'sctp'], ['dsts', '192.0.2.0/24'], ['udpencap', '9899']],
        [['action', 'set'], ['name', 'f2'], ['target', 'tshm-a'], ['dsts', 'bad']],
      ]);
    } finally {
      await d.close();
    }
  });

  test('trace-flow-set sends no target, priority or udpencap fields; flow-delete and trace-flow-delete their actions', async () => {
    const d = await fakeDaemon(ADDRESS, [{ text: 'OK' }, { text: 'OK' }, { text: 'OK' }]);
    try {
      expect((await withAddress(ADDRESS, ['trace-flow-set', '--name=t', '--protocols=udp', '--dports=53'])).rc).toBe(0);
      expect((await withAddress(ADDRESS, ['flow-delete', '--name=f1'])).rc).toBe(0);
      expect((await withAddress(ADDRESS, ['trace-flow-delete', '--name=t'])).rc).toBe(0);
      expect(d.requests).toEqual([
        [['action', 'trace-set'], ['name', 't'], ['protocols', 'udp'], ['dports', '53']],
        [['action', 'delete'], ['name', 'f1']],
        [['action', 'trace-delete'], ['name', 't']],
      ]);
    } finally {
      await d.close();
    }
  });

  test('listings are copied unchanged; a named list with no reply is checked with a names listing', async () => {
    // The daemon holds names as byte strings: "café" is the bytes c3 a9 as two chars.
    const listing = '[{\n  "name": "caf\xc3\xa9",\n  "priority": 0,\n  "matches_count": 0,\n  "user_ref": "tshm-a"\n}]\n';
    const d = await fakeDaemon(ADDRESS, [{ json: listing }, 'none', { json: '[]\n' }, { json: '[\n  "a"\n]\n' }]);
    try {
      const all = await withAddress(ADDRESS, ['flow-list']);
      expect(all).toEqual({ rc: 0, stdout: listing.replace('caf\xc3\xa9', 'café'), stderr: '' });
      expect(await withAddress(ADDRESS, ['flow-list', '--name=gone'])).toEqual({ rc: 0, stdout: '', stderr: '' });
      expect(await withAddress(ADDRESS, ['trace-flow-list-names'])).toEqual({ rc: 0, stdout: '[\n  "a"\n]\n', stderr: '' });
      expect(d.requests).toEqual([[['action', 'list']], [['action', 'list'], ['name', 'gone']], [['action', 'list-names']], [['action', 'trace-list-names']]]);
    } finally {
      await d.close();
    }
  });

  test('a daemon that closes without a reply: a line saying so, exit 255', async () => {
    const d = await fakeDaemon(ADDRESS, ['none', 'none', 'none']);
    try {
      const set = await withAddress(ADDRESS, ['flow-set', '--name=f', '--target=t']);
      expect(set).toEqual({ rc: 255, stdout: '', stderr: `No reply from the load balancer at ${ADDRESS}: it closed the connection; check that it runs and its log\n` });
      const trace = await withAddress(ADDRESS, ['trace-flow-set', '--name=t']);
      expect(trace.rc).toBe(255);
      expect(trace.stderr).toContain('never answers trace-flow-set');
      expect((await withAddress(ADDRESS, ['flow-list-names'])).rc).toBe(255);
    } finally {
      await d.close();
    }
  });

  test('client-side checks refuse before connecting (no daemon needed), exit 1', async () => {
    expect(await withAddress(ADDRESS, ['flow-set', '--name=f', '--target=t', '--udpencap=9899'])).toEqual({ rc: 1, stdout: '', stderr: 'udpencap specified without protocols\n' });
    expect(await withAddress(ADDRESS, ['flow-set', '--name=f', '--target=t', '--dports=80'])).toEqual({ rc: 1, stdout: '', stderr: 'ports specified without protocols\n' });
  });
});

describe('flow names the control protocol cannot carry whole are refused before connecting', () => {
  const long = 'x'.repeat(1018);
  it.each([
    [['flow-set', `--name=${long}`, '--target=t'], 'name too long (at most 1017 bytes)'],
    [['flow-delete', `--name=${long}`], 'name too long (at most 1017 bytes)'],
    [['trace-flow-list', `--name=${long}`], 'name too long (at most 1017 bytes)'],
    [['flow-set', '--name=a\nb', '--target=t'], 'name contains a newline, which the control protocol cannot carry'],
    [['flow-list', '--name=a\nb'], 'name contains a newline, which the control protocol cannot carry'],
    // A newline in --prio would add a request line of the sender's choosing (e.g. action:delete).
    [['flow-set', '--name=a', '--target=t', '--prio=1\naction:delete'], 'prio contains a newline, which the control protocol cannot carry'],
  ])('%j', async (words, msg) => {
    const saved = process.env.NFQLB_FLOW_ADDRESS;
    process.env.NFQLB_FLOW_ADDRESS = 'unix:nfqlbts-cli-test-nothing';
    try {
      expect(await runInProcess(words)).toEqual({ rc: 1, stdout: '', stderr: `${msg}\n` });
    } finally {
      if (saved === undefined) delete process.env.NFQLB_FLOW_ADDRESS;
      else process.env.NFQLB_FLOW_ADDRESS = saved;
    }
  });
});

