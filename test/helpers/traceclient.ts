/** A trace client for tests of the trace server and `nfqlb trace`: collects everything it receives. */
import * as fs from 'node:fs';
import type * as net from 'node:net';
import { closeTraceShm, openOrCreateTraceShm, type TraceShm } from '../../src/addon/shm';
import { parseAddress } from '../../src/services/control';
import { connectTo } from '../../src/addon/sockets';
import { until } from './wait';

export class TraceClient {
  text = '';
  closed = false;
  private constructor(readonly sock: net.Socket) {
    sock.setEncoding('latin1');
    sock.on('data', (s: string) => {
      this.text += s;
    });
    sock.on('close', () => {
      this.closed = true;
    });
    sock.on('error', () => undefined);
  }

  static async connect(address: string): Promise<TraceClient> {
    return new TraceClient(await connectTo(parseAddress(address), 5000));
  }

  waitFor(s: string, timeoutMs = 5000): Promise<void> {
    return until(() => this.text.includes(s), JSON.stringify(s), timeoutMs);
  }

  end(): void {
    this.sock.destroy();
  }
}

/**
 * For one test file: a trace shm of its own (made before its tests, set back
 * to level 5 and mask 0 before each, removed after) and a fresh abstract
 * address per server, so files and tests never see each other's clients.
 */
export function traceFixture(tag: string): { readonly name: string; readonly shm: TraceShm; nextAddress(): string } {
  const name = `nfqlbts-test-${process.pid}-${tag}`;
  let seq = 0;
  let shm: TraceShm | undefined;
  beforeAll(() => {
    shm = openOrCreateTraceShm(name);
  });
  afterAll(() => {
    if (shm !== undefined) closeTraceShm(shm);
    fs.rmSync(`/dev/shm/${name}`, { force: true });
  });
  beforeEach(() => {
    shm!.mask = 0;
    shm!.level = 5;
  });
  return {
    name,
    get shm(): TraceShm {
      return shm!;
    },
    nextAddress: () => `unix:nfqlbts-${process.pid}-${tag}-${++seq}`,
  };
}
