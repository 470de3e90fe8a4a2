/**
 * `nfqlb trace` and `nfqlb loglevel` (cli/commands/trace.ts) through main(),
 * against a trace server in this process on private abstract sockets, with a
 * private trace shm (--trace_shm) removed afterwards: what they print, what
 * they set in the shm and what they exit with.
 */
import * as fs from 'node:fs';
import { MAX_TRACE_CLIENTS, refusedNotice, TraceServer, TRACE_FLOWS, TRACE_LOG, TRACE_PACKET } from '../../../../src/services/trace';
import { runInProcess } from '../../../helpers/cli';
import { TraceClient, traceFixture } from '../../../helpers/traceclient';
import { until } from '../../../helpers/wait';

const trace = traceFixture('tracecmd');
const SHM = trace.name;
const nextAddress = trace.nextAddress;

describe('nfqlb trace', () => {
  const shmOpt = `--trace_shm=${SHM}`;

  it('prints the mask, sets it in shm and streams until the server closes', async () => {
    const address = nextAddress();
    const server = await TraceServer.start(address, trace.shm);
    try {
      const run = runInProcess(['trace', '--selection=flows,log', `--trace_address=${address}`, shmOpt]);
      await until(() => server.clientCount === 1, 'the CLI to connect');
      expect(trace.shm.mask).toBe(0x41);
      server.trace(TRACE_FLOWS, '\nMatch for trace-flow: tf\n');
      server.trace(TRACE_PACKET, 'not selected\n');
      server.trace(TRACE_LOG, 'last\n');
      await server.close();
      const r = await run;
      expect(r).toEqual({
        rc: 0,
        stdout: 'Mask=0x00000041\nTrace active, mask=0x00000041\n\nMatch for trace-flow: tf\nlast\n',
        stderr: '',
      });
      expect(trace.shm.mask).toBe(0); // Cleared by the server when its client went.
    } finally {
      await server.close();
    }
  });

  it('SIGINT ends it with exit 0; the daemon clears the mask', async () => {
    const address = nextAddress();
    const server = await TraceServer.start(address, trace.shm);
    const before = new Set(process.listeners('SIGINT'));
    try {
      const run = runInProcess(['trace', '--mask=0x56', `--trace_address=${address}`, shmOpt]);
      await until(() => server.clientCount === 1, 'the CLI to connect');
      expect(server.perPacketMask).toBe(0x56);
      // The signal comes once the CLI has printed the greeting (runInProcess has process.stdout.write mocked).
      const printed = process.stdout.write as unknown as jest.Mock;
      await until(() => printed.mock.calls.some((c: unknown[]) => String(c[0]).includes('Trace active')), 'the CLI to print the greeting');
      const added = process.listeners('SIGINT').filter((l) => !before.has(l));
      expect(added).toHaveLength(1);
      (added[0] as () => void)();
      const r = await run;
      expect(r.rc).toBe(0);
      expect(r.stdout).toBe('Mask=0x00000056\nTrace active, mask=0x00000056\n');
      expect(process.listeners('SIGINT').filter((l) => !before.has(l))).toHaveLength(0);
      await until(() => server.clientCount === 0, 'the server to see the close');
      expect(trace.shm.mask).toBe(0);
    } finally {
      await server.close();
    }
  });

  it(`exits 1 with the server's line on stderr when it refuses the client (${MAX_TRACE_CLIENTS} connected)`, async () => {
    const address = nextAddress();
    const server = await TraceServer.start(address, trace.shm);
    const held: TraceClient[] = [];
    try {
      for (let i = 0; i < MAX_TRACE_CLIENTS; i++) held.push(await TraceClient.connect(address));
      await until(() => server.clientCount === MAX_TRACE_CLIENTS, 'all clients');
      const r = await runInProcess(['trace', '--mask=0x1', `--trace_address=${address}`, shmOpt]);
      expect(r).toEqual({ rc: 1, stdout: 'Mask=0x00000001\n', stderr: refusedNotice(MAX_TRACE_CLIENTS) });
    } finally {
      for (const c of held) c.end();
      await server.close();
    }
  });

  it('wants exactly one of --mask and --selection (nfqlb wording)', async () => {
    expect(await runInProcess(['trace', shmOpt])).toEqual({ rc: 1, stdout: '', stderr: 'Specify any of --mask or --selection\n' });
    expect(await runInProcess(['trace', '--mask=1', '--selection=log', shmOpt])).toEqual({
      rc: 1, stdout: '', stderr: 'Specify any ONE of --mask or --selection\n',
    });
    const r = await runInProcess(['trace', '--selection=log,nope', shmOpt]);
    expect(r.rc).toBe(1);
    expect(r.stderr).toMatch(/^Unknown trace selection \[nope\]; .*\n$/);
  });

  it('says so in one line when no daemon listens or there is no trace shm', async () => {
    const address = nextAddress();
    const r = await runInProcess(['trace', '--selection=flows', `--trace_address=${address}`, shmOpt]);
    expect(r).toEqual({ rc: 1, stdout: 'Mask=0x00000040\n', stderr: `Trace client connect to ${address}: Connection refused\n` });
    // As nfqlb's logConfigShm, trace creates the shm when no daemon has (and sets the mask in it).
    const missing = `${SHM}-missing`;
    try {
      const m = await runInProcess(['trace', '--selection=flows', `--trace_address=${address}`, `--trace_shm=${missing}`]);
      expect(m).toEqual({ rc: 1, stdout: 'Mask=0x00000040\n', stderr: `Trace client connect to ${address}: Connection refused\n` });
      expect([...fs.readFileSync(`/dev/shm/${missing}`)]).toEqual([5, 0, 0, 0, 0x40, 0, 0, 0]);
    } finally {
      fs.rmSync(`/dev/shm/${missing}`, { force: true });
    }
    const bad = await runInProcess(['trace', '--selection=flows', '--trace_address=nowhere', shmOpt]);
    expect(bad.rc).toBe(1);
    expect(bad.stderr).toMatch(/^Failed to parse address \[nowhere\]/);
  });
});

describe('nfqlb loglevel', () => {
  const shmOpt = `--trace_shm=${SHM}`;

  it('reads and sets the level in shm, printing the level in effect', async () => {
    expect(await runInProcess(['loglevel', shmOpt])).toEqual({ rc: 0, stdout: 'loglevel=5\n', stderr: '' });
    expect(await runInProcess(['loglevel', shmOpt, '7'])).toEqual({ rc: 0, stdout: 'loglevel=7\n', stderr: '' });
    expect(trace.shm.level).toBe(7);
    expect(await runInProcess(['loglevel', shmOpt])).toEqual({ rc: 0, stdout: 'loglevel=7\n', stderr: '' });
    // atoi, as nfqlb.
    expect(await runInProcess(['loglevel', shmOpt, '6x'])).toEqual({ rc: 0, stdout: 'loglevel=6\n', stderr: '' });
  });

  it('without a daemon creates the shm as nfqlb does: 8 bytes {5, 0}, mode 0600, and prints loglevel=5', async () => {
    const missing = `${SHM}-missing`;
    const file = `/dev/shm/${missing}`;
    try {
      expect(await runInProcess(['loglevel', `--trace_shm=${missing}`])).toEqual({ rc: 0, stdout: 'loglevel=5\n', stderr: '' });
      const st = fs.statSync(file);
      expect({ size: st.size, mode: (st.mode & 0o777).toString(8) }).toEqual({ size: 8, mode: '600' });
      expect([...fs.readFileSync(file)]).toEqual([5, 0, 0, 0, 0, 0, 0, 0]);
      expect(await runInProcess(['loglevel', `--trace_shm=${missing}`, '7'])).toEqual({ rc: 0, stdout: 'loglevel=7\n', stderr: '' });
      expect([...fs.readFileSync(file)]).toEqual([7, 0, 0, 0, 0, 0, 0, 0]);
    } finally {
      fs.rmSync(file, { force: true });
    }
  });
});
