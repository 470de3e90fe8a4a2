/**
 * The metrics HTTP server: a small node:http server with /metrics, /healthz
 * and /readyz over a registry of createMetricsRegistry(). /metrics answers in
 * the Prometheus text format, or in OpenMetrics and gzip when the client asks
 * (exposition.ts).
 */
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as zlib from 'node:zlib';
import type { Registry } from 'prom-client';
import { NfqlbError } from '../../base/errors';
import { acceptsGzip, openMetricsText, OPENMETRICS_CONTENT_TYPE, wantsOpenMetrics } from './exposition';
import { createMetricsRegistry } from './registry';
import type { MetricsLog, MetricsOptions, MetricsSource } from './source';

/** Where `nfqlb flowlb|lb` serves metrics unless --metrics_address says otherwise. */
export const DEFAULT_METRICS_ADDRESS = '0.0.0.0:9657';

/** The running metrics server. */
export interface MetricsServer {
  /** Where it listens, `HOST:PORT` with the actual port (IPv6 in brackets), for logs. */
  readonly address: string;
  /** The host as given (brackets removed). */
  readonly host: string;
  /** The actual port: the kernel's choice when 0 was asked for (tests). */
  readonly port: number;
  /** The registry served on /metrics (to add metrics or scrape without HTTP). */
  readonly registry: Registry;
  /** Stops listening and drops open connections (keep-alive included); resolves when closed. Idempotent. */
  close(): Promise<void>;
}

/**
 * Parses `HOST:PORT` (`[v6]:PORT` for IPv6) into host and port. Throws
 * NfqlbError NFQLB_ERR_METRICS_ADDRESS with the accepted forms. `off` is not
 * an address: the caller handles it before calling.
 */
export function parseMetricsAddress(address: string): { host: string; port: number } {
  const m = /^\[([^\]\s]+)\]:(\d{1,5})$/.exec(address) ?? /^([^:[\]\s]+):(\d{1,5})$/.exec(address);
  const port = m === null ? NaN : Number(m[2]);
  if (m === null || port > 65535) {
    throw new NfqlbError(
      `invalid metrics address "${address}": expected HOST:PORT (e.g. 0.0.0.0:9657), [IPv6]:PORT (e.g. [::]:9657) or off`,
      'NFQLB_ERR_METRICS_ADDRESS',
    );
  }
  return { host: m[1], port };
}

/** What to do about a listen error, by errno. */
function listenAdvice(code: string | undefined): string {
  switch (code) {
    case 'EADDRINUSE':
      return 'address already in use (another nfqlb or exporter?); pick another --metrics_address or use --metrics_address=off';
    case 'EACCES':
      return 'permission denied (ports below 1024 need CAP_NET_BIND_SERVICE); pick a port >= 1024 with --metrics_address, or use --metrics_address=off';
    case 'EADDRNOTAVAIL':
      return 'no local interface has this address; use 0.0.0.0, [::] or an address of this host in --metrics_address, or use --metrics_address=off';
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return 'host name not resolved; give an IP address in --metrics_address, or use --metrics_address=off';
    default:
      return 'fix --metrics_address or use --metrics_address=off';
  }
}

const TEXT = 'text/plain; charset=utf-8';

/**
 * Starts the metrics HTTP server on `address` (`HOST:PORT`, `[v6]:PORT`; port 0
 * picks a free one) and resolves once it listens.
 *
 * Routes: `GET /metrics` Prometheus text format from a private Registry
 * (createMetricsRegistry(source)); `GET /healthz` 200 `ok` while the process
 * runs; `GET /readyz` 200 `ready` when source.ready(), else 503 `not ready`.
 * HEAD is accepted wherever GET is (HTTP requires it; no body is sent).
 * Query strings are ignored. Unknown path → 404; known path with another
 * method → 405 with `Allow: GET, HEAD`. A scrape that throws → 500 (logged).
 *
 * Errors: a bad address → NFQLB_ERR_METRICS_ADDRESS; a listen failure →
 * NfqlbError NFQLB_ERR_METRICS_LISTEN whose message says what to do (errno
 * kept in `.errno`, e.g. EADDRINUSE). Nothing is left listening on failure.
 */
export async function startMetricsServer(
  address: string,
  source: MetricsSource,
  log?: MetricsLog,
  options: Omit<MetricsOptions, 'log'> = {},
): Promise<MetricsServer> {
  const { host, port } = parseMetricsAddress(address);
  const registry = createMetricsRegistry(source, { ...options, log });

  const reply = (res: http.ServerResponse, status: number, body: string, headers: http.OutgoingHttpHeaders = {}): void => {
    res.writeHead(status, { 'Content-Type': TEXT, 'Content-Length': Buffer.byteLength(body), ...headers });
    res.end(body);
  };

  const server = http.createServer((req, res) => {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q < 0 ? url : url.slice(0, q);
    if (path !== '/metrics' && path !== '/healthz' && path !== '/readyz') {
      reply(res, 404, 'not found: try /metrics, /healthz or /readyz\n');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      reply(res, 405, 'method not allowed: use GET\n', { Allow: 'GET, HEAD' });
      return;
    }
    if (path === '/healthz') {
      // Answering at all is the proof of life: the event loop turns.
      reply(res, 200, 'ok\n');
      return;
    }
    if (path === '/readyz') {
      let ready = false;
      try {
        ready = source.ready();
      } catch (err) {
        log?.warn({ err: (err as Error).message }, 'metrics: ready() threw; answering not ready');
      }
      reply(res, ready ? 200 : 503, ready ? 'ready\n' : 'not ready\n');
      return;
    }
    const openMetrics = wantsOpenMetrics(req.headers.accept);
    const gzip = acceptsGzip(req.headers['accept-encoding']);
    log?.debug?.({ openMetrics, gzip }, 'metrics: scrape');
    (source.refresh === undefined ? Promise.resolve() : source.refresh())
      .then(() => (openMetrics ? openMetricsText(registry) : registry.metrics()))
      .then(
      (text) => {
        const type = openMetrics ? OPENMETRICS_CONTENT_TYPE : registry.contentType;
        if (!gzip) {
          reply(res, 200, text, { 'Content-Type': type, Vary: 'Accept, Accept-Encoding' });
          return;
        }
        // Synchronous: a scrape is tens of KB, compressed in well under a millisecond.
        const body = zlib.gzipSync(text);
        res.writeHead(200, { 'Content-Type': type, 'Content-Encoding': 'gzip', 'Content-Length': body.length, Vary: 'Accept, Accept-Encoding' });
        res.end(req.method === 'HEAD' ? undefined : body);
      },
      (err: unknown) => {
        log?.warn({ err: (err as Error).message }, 'metrics: scrape failed');
        reply(res, 500, 'scrape failed; see the nfqlb log\n');
      },
    );
  });
  // A scrape endpoint needs no patience: a client that dribbles its headers
  // must not hold a socket for Node's default 60 s / 300 s.
  server.headersTimeout = 10_000;
  server.requestTimeout = 15_000;

  await new Promise<void>((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException): void => {
      server.close();
      reject(
        new NfqlbError(`cannot serve metrics on ${address}: ${listenAdvice(err.code)} (${err.message})`, 'NFQLB_ERR_METRICS_LISTEN', { cause: err }),
      );
    };
    server.once('error', onError);
    server.listen({ host, port }, () => {
      server.off('error', onError);
      resolve();
    });
  });
  // After listening, errors are per-connection trouble, not fatal: log them.
  server.on('error', (err) => log?.warn({ err: err.message }, 'metrics: server error'));

  const actualPort = (server.address() as AddressInfo).port;
  const shown = host.includes(':') ? `[${host}]:${actualPort}` : `${host}:${actualPort}`;
  log?.info({ address: shown }, 'metrics: listening');

  let closing: Promise<void> | null = null;
  return {
    address: shown,
    host,
    port: actualPort,
    registry,
    close(): Promise<void> {
      if (closing === null) {
        closing = new Promise<void>((resolve) => {
          server.close(() => resolve());
          // server.close() waits for idle keep-alive sockets (a Prometheus
          // scraper keeps one open): drop them so shutdown is prompt.
          server.closeAllConnections();
        });
      }
      return closing;
    },
  };
}
