/**
 * The blocking control client (client.ts) against real servers in a child
 * process: control.ts's server (compiled, dist/: `npx tsc -p .` first) and two
 * raw sockets, all on private abstract names. This process is the command
 * line (setOwnProcess), so request() blocks the event loop for its exchange:
 * the servers must live elsewhere. Checked: the bytes sent are
 * encodeRequest()'s UTF-8, the reply is every byte the server sent (1 MiB
 * too), an empty reply when the server closes without one, the timeout, a
 * refused connection and a bad address in nfqlb's words, and that outside a
 * process of its own, or for tcp:, it is control.ts sendRequest instead.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as path from 'node:path';
import { request } from '../../../src/cli/client';
import { setOwnProcess } from '../../../src/cli/command';
import { encodeRequest, type ControlRequest } from '../../../src/services/controlwire';
import { NfqlbError } from '../../../src/base/errors';
import { ROOT } from '../../helpers/cli';

const PREFIX = `nfqlbts-${process.pid}-${Math.random().toString(36).slice(2, 8)}-client`;
const CONTROL = `unix:${PREFIX}-control`;
/** Closes every connection at once, reading nothing. */
const RESET = `unix:${PREFIX}-reset`;
/** Reads up to `eoc:\n` and replies with the bytes it got, as hex. */
const ECHO = `unix:${PREFIX}-echo`;
const UNUSED = `unix:${PREFIX}-nobody`;

const BIG = 1024 * 1024;

const SERVERS = `
const net = require('node:net');
const { startControlServer } = require(${JSON.stringify(path.join(ROOT, 'dist', 'services', 'control.js'))});
// Bound through the addon, as the daemon binds its abstract names.
const { listenAt } = require(${JSON.stringify(path.join(ROOT, 'dist', 'addon', 'sockets.js'))});
const abstract = (a) => ({ unix: Buffer.from(a.slice(5)) });
(async () => {
  await startControlServer(${JSON.stringify(CONTROL)}, {
    handle(req) {
      switch (req.action) {
        case 'echo': return { text: JSON.stringify(req) };
        case 'big': return { json: 'j'.repeat(${BIG}) };
        case 'slow': return new Promise((r) => setTimeout(() => r({ text: 'late' }), 400));
        case 'never': return new Promise(() => undefined);
        default: return { text: 'FAIL: unknown action' };
      }
    },
  });
  await listenAt(net.createServer((s) => s.destroy()), abstract(${JSON.stringify(RESET)}), 16);
  await listenAt(net.createServer((s) => {
    let got = Buffer.alloc(0);
    s.on('data', (c) => {
      got = Buffer.concat([got, c]);
      if (got.toString('latin1').endsWith('eoc:\\n')) s.end(got.toString('hex'));
    });
  }), abstract(${JSON.stringify(ECHO)}), 16);
  process.stdout.write('ready\\n');
})().catch((e) => { process.stderr.write(String(e.stack)); process.exit(1); });
`;

let servers: ChildProcess;

beforeAll(async () => {
  servers = spawn(process.execPath, ['-e', SERVERS], { stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  servers.stderr?.on('data', (c: Buffer) => (err += c.toString()));
  await new Promise<void>((resolve, reject) => {
    servers.stdout?.on('data', (c: Buffer) => c.toString().includes('ready') && resolve());
    servers.on('exit', (code) => reject(new Error(`servers exited ${code}: ${err}`)));
  });
  setOwnProcess();
});

afterAll(() => {
  servers.kill('SIGKILL');
});

/** The error request() rejects with. */
async function failure(address: string, req: ControlRequest, timeoutMs?: number): Promise<NfqlbError> {
  try {
    await request(address, req, timeoutMs);
  } catch (err) {
    expect(err).toBeInstanceOf(NfqlbError);
    return err as NfqlbError;
  }
  throw new Error('request() did not fail');
}

describe('request() in a process of its own (blocking)', () => {
  it("sends encodeRequest()'s bytes, UTF-8, and returns the server's reply to the last byte", async () => {
    const req: ControlRequest = { action: 'set', name: 'café', target: 't', protocols: 'tcp', dports: '80' };
    const reply = await request(ECHO, req);
    expect(Buffer.from(reply.toString(), 'hex')).toEqual(Buffer.from(encodeRequest(req), 'utf8'));
  });

  it("returns a control server's reply with its NUL, the request as the server parsed it", async () => {
    const reply = await request(CONTROL, { action: 'echo', name: 'n1', dsts: '192.0.2.1/32' });
    expect(reply[reply.length - 1]).toBe(0);
    expect(JSON.parse(reply.subarray(0, -1).toString())).toEqual({ action: 'echo', name: 'n1', dsts: '192.0.2.1/32' });
  });

  it('reads a reply much larger than one read (1 MiB) whole', async () => {
    const reply = await request(CONTROL, { action: 'big' });
    expect(reply.length).toBe(BIG);
    expect(reply.every((b) => b === 0x6a)).toBe(true);
  });

  it('blocks the event loop until the reply is in (the exchange happens inside the call)', async () => {
    let ranMeanwhile = false;
    setImmediate(() => (ranMeanwhile = true));
    const start = Date.now();
    const pending = request(CONTROL, { action: 'slow' });
    const blockedMs = Date.now() - start;
    expect(ranMeanwhile).toBe(false);
    expect(blockedMs).toBeGreaterThanOrEqual(300);
    expect((await pending).toString()).toBe('late\0');
    // The promise was settled before the call returned: awaiting it let no event-loop turn pass.
    expect(ranMeanwhile).toBe(false);
  });

  it('an empty reply when the server closes without one', async () => {
    const reply = await request(RESET, { action: 'list' });
    expect(reply.length).toBe(0);
  });

  it('NFQLB_ERR_TIMEOUT naming the address and the time when no reply comes', async () => {
    const start = Date.now();
    const err = await failure(CONTROL, { action: 'never' }, 300);
    expect(err.code).toBe('NFQLB_ERR_TIMEOUT');
    expect(err.message).toBe(`No reply from ${CONTROL} within 300 ms`);
    expect(Date.now() - start).toBeGreaterThanOrEqual(300);
  });

  it("NFQLB_ERR_CONNECT with nfqlb's words when nobody listens", async () => {
    const err = await failure(UNUSED, { action: 'list' });
    expect(err.code).toBe('NFQLB_ERR_CONNECT');
    expect(err.message).toBe('Connect failed. Connection refused');
  });

  it("NFQLB_ERR_ADDRESS with parseAddress's words for an empty, a NUL-carrying or a too long name", async () => {
    for (const address of ['unix:', 'unix:a\0b', `unix:${'n'.repeat(108)}`]) {
      const err = await failure(address, { action: 'list' });
      expect(err.code).toBe('NFQLB_ERR_ADDRESS');
      expect(err.message).toBe(`Failed to parse address [${address}]: the unix name must be 1-107 bytes, no NUL`);
    }
    // 107 bytes is a valid name: nobody listens there.
    expect((await failure(`unix:${PREFIX}${'n'.repeat(107 - PREFIX.length)}`, { action: 'list' })).code).toBe('NFQLB_ERR_CONNECT');
  });

  it('tcp: addresses go through sendRequest (its errors: an address it cannot parse)', async () => {
    const err = await failure('tcp:localhost:80', { action: 'list' });
    expect(err.code).toBe('NFQLB_ERR_ADDRESS');
    expect(err.message).toBe('Failed to parse address [tcp:localhost:80]: use tcp:IPv4:PORT or tcp:[IPv6]:PORT');
  });
});

describe('request() inside a program (not its own process)', () => {
  it('does not block: the same reply comes through control.ts sendRequest, event-loop turns passing meanwhile', async () => {
    let fresh: typeof import('../../../src/cli/client') | undefined;
    jest.isolateModules(() => {
      // eslint-disable-next-line @typescript-eslint/no-require-imports -- a copy whose command.ts was never told it owns the process
      fresh = require('../../../src/cli/client') as typeof import('../../../src/cli/client');
    });
    let ranMeanwhile = false;
    setImmediate(() => (ranMeanwhile = true));
    const pending = fresh!.request(CONTROL, { action: 'slow' });
    expect((await pending).toString()).toBe('late\0');
    expect(ranMeanwhile).toBe(true);
  });
});
