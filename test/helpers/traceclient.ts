/** A trace client for tests of the trace server and `nfqlb trace`: collects everything it receives. */
import type * as net from 'node:net';
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
