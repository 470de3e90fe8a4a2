/**
 * HTTP from inside a test network namespace. The test bed's scrapeMetrics()
 * gets the /metrics text; this is for the other routes and their status.
 */
import { nsExec } from '../../testbed/testbed';

/** GET http://127.0.0.1:PORT/path from inside namespace `ns`: { status, body }; status 0 when nothing answered (body says why). */
export function httpGetInNs(ns: string, port: number, path: string): { status: number; body: string } {
  const script = `fetch('http://127.0.0.1:${port}${path}').then(async (r) => { process.stdout.write(JSON.stringify({ status: r.status, body: await r.text() })); }, (e) => { process.stdout.write(JSON.stringify({ status: 0, body: String(e) })); })`;
  const r = nsExec(ns, process.execPath, ['-e', script]);
  return JSON.parse(r.stdout) as { status: number; body: string };
}
