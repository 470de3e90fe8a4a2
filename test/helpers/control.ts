/** The control socket from a test, byte for byte. */
import { connectTo } from '../../src/addon/sockets';
import { parseAddress } from '../../src/services/control';

/** Sends `request` as raw bytes (latin1), half-closes, returns every byte of the reply until the daemon closes. */
export async function rawControlRequest(address: string, request: string): Promise<string> {
  const sock = await connectTo(parseAddress(address), 10000);
  const chunks: Buffer[] = [];
  sock.on('data', (d: Buffer) => chunks.push(d));
  sock.on('error', () => undefined);
  const closed = new Promise<void>((resolve) => sock.once('close', () => resolve()));
  sock.end(request, 'latin1');
  await closed;
  return Buffer.concat(chunks).toString('latin1');
}
