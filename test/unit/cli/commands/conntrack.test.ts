/**
 * `nfqlb conntrack` (cli/commands/conntrack.ts) against a stand-in control
 * server on a private abstract name: the request it sends (the table alone,
 * or a 5-tuple given as `nfqlb fwmark` takes it, addresses as IPv6 text), the
 * reply printed as it came with its NUL taken off, the exit codes (0, 255 for
 * FAIL and for no reply), and the command lines refused before connecting.
 */
import { startControlServer, type ControlReply, type ControlRequest } from '../../../../src/services/control';
import { runInProcess, type CliRun } from '../../../helpers/cli';

const ADDRESS = `unix:nfqlbts-${process.pid}-${Math.random().toString(36).slice(2, 8)}-conntrack`;

/**
 * A control server that records each request and answers with the next reply
 * ('close': never, so the server closes the connection without one at its 300 ms timeout).
 */
async function standIn(replies: Array<ControlReply | 'close'>): Promise<{ requests: ControlRequest[]; close: () => Promise<void> }> {
  const requests: ControlRequest[] = [];
  const server = await startControlServer(ADDRESS, {
    handle(req) {
      requests.push(req);
      const r = replies.shift() ?? 'close';
      return r === 'close' ? new Promise<ControlReply>(() => undefined) : r;
    },
  }, { timeoutMs: 300 });
  return { requests, close: () => server.close() };
}

async function conntrack(args: string[]): Promise<CliRun> {
  const saved = process.env.NFQLB_FLOW_ADDRESS;
  process.env.NFQLB_FLOW_ADDRESS = ADDRESS;
  try {
    return await runInProcess(['conntrack', ...args]);
  } finally {
    if (saved === undefined) delete process.env.NFQLB_FLOW_ADDRESS;
    else process.env.NFQLB_FLOW_ADDRESS = saved;
  }
}

const TABLE = '{"entries":3,"capacity":1024}';

describe('nfqlb conntrack', () => {
  it('without a 5-tuple asks for the table alone and prints the reply, NUL removed, with a newline; exit 0', async () => {
    const d = await standIn([{ text: TABLE }]);
    try {
      expect(await conntrack([])).toEqual({ rc: 0, stdout: `${TABLE}\n`, stderr: '' });
      expect(d.requests).toEqual([{ action: 'conntrack' }]);
    } finally {
      await d.close();
    }
  });

  it('with --proto, --src and --dst sends the connection, IPv4 as mapped IPv6 text, protocol in lower case', async () => {
    const d = await standIn([{ json: '{"fwmark":5}' }, { json: '{"fwmark":6}' }]);
    try {
      expect(await conntrack(['--proto=TCP', '--src=192.0.2.7:40000', '--dst=198.51.100.1:80'])).toEqual({ rc: 0, stdout: '{"fwmark":5}\n', stderr: '' });
      expect((await conntrack(['--proto=sctp', '--src=[2001:db8::7]:5000', '--dst=[2001:db8::1]:1'])).rc).toBe(0);
      expect(d.requests).toEqual([
        { action: 'conntrack', protocols: 'tcp', srcs: '::ffff:192.0.2.7', sports: '40000', dsts: '::ffff:198.51.100.1', dports: '80' },
        { action: 'conntrack', protocols: 'sctp', srcs: '2001:db8::7', sports: '5000', dsts: '2001:db8::1', dports: '1' },
      ]);
    } finally {
      await d.close();
    }
  });

  it('a FAIL reply is printed and exits 255', async () => {
    const d = await standIn([{ text: 'FAIL: conntrack is off (start the daemon with --conntrack)' }]);
    try {
      expect(await conntrack([])).toEqual({ rc: 255, stdout: 'FAIL: conntrack is off (start the daemon with --conntrack)\n', stderr: '' });
    } finally {
      await d.close();
    }
  });

  it('no reply at all: exit 255 with what to check', async () => {
    const d = await standIn(['close']);
    try {
      const r = await conntrack([]);
      expect(r.rc).toBe(255);
      expect(r.stdout).toBe('');
      expect(r.stderr).toContain(`No reply from the load balancer at ${ADDRESS}: it closed the connection; check that it runs and its log`);
    } finally {
      await d.close();
    }
  });

  it('refuses part of a 5-tuple, an unknown protocol and a bad address before connecting', async () => {
    const d = await standIn([]);
    try {
      const usage = (message: string): CliRun => ({ rc: 1, stdout: '', stderr: `${message}\n` });
      expect(await conntrack(['--proto=tcp', '--src=192.0.2.7:1'])).toEqual(usage('Give all of --proto, --src and --dst to look up a connection, or none for the table alone'));
      expect(await conntrack(['--dst=192.0.2.7:1'])).toEqual(usage('Give all of --proto, --src and --dst to look up a connection, or none for the table alone'));
      expect(await conntrack(['--proto=icmp', '--src=192.0.2.7:1', '--dst=192.0.2.8:2'])).toEqual(usage('Invalid --proto=icmp: use tcp, udp or sctp'));
      expect(await conntrack(['--proto=udp', '--src=192.0.2.7', '--dst=192.0.2.8:2'])).toEqual(usage('No port in [192.0.2.7]'));
      expect(d.requests).toEqual([]);
    } finally {
      await d.close();
    }
  });

  it("nobody listening: nfqlb's connect error, exit 1", async () => {
    expect(await conntrack([])).toEqual({ rc: 1, stdout: '', stderr: 'Connect failed. Connection refused\n' });
  });
});
