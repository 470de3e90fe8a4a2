/**
 * The soak's control-plane agent (bench/soak.ts agent ...): runs inside the
 * LB namespace, where the daemon's abstract control and trace sockets and its
 * metrics endpoint are. Sets and deletes flows and trace-flows, lists them,
 * attaches and detaches trace clients (some never read), scrapes the metrics,
 * runs the CLI, and keeps hostile control clients connected (idle, slow,
 * junk). One JSON status line (AgentStatus) on stdout every 5 s and a last
 * one on SIGTERM.
 */
import { spawn } from 'node:child_process';
import type { Socket } from 'node:net';
import * as path from 'node:path';
import { connectTo } from '../../src/addon/sockets';
import { ROOT } from '../../testbed/processes';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * A connected client of the daemon's abstract socket `name`, addressed as
 * nfqlb addresses it (Node's net.connect pads abstract names to 108 bytes,
 * which is another address): src/addon/sockets.ts.
 */
function connectAbstract(name: string, timeoutMs = 5000): Promise<Socket> {
  return connectTo({ unix: Buffer.from(name) }, timeoutMs);
}

interface ControlResult {
  ok: boolean;
  reply: string;
  ms: number;
}

interface Counts {
  ok: number;
  fail: number;
}

interface AgentState {
  flowSet: Counts;
  flowDelete: Counts;
  traceFlow: Counts;
  list: Counts;
  goodLatencyMs: number[];
  goodMaxMs: number;
  failures: Record<string, number>;
  traceSessions: number;
  traceBytes: number;
  traceRefused: number;
  traceSilentReaders: number;
  metrics: Counts;
  cli: Counts;
  /** [seconds, old space used] every 5 s, KiB. */
  oldSpaceKiB: Array<[number, number]>;
  /** [seconds, old space used, new space size, heap size, external, rss] every 5 s, KiB. */
  memoryKiB: Array<[number, number, number | null, number | null, number | null, number | null]>;
  hostile: { idleOpened: number; slowOpened: number; junkSent: number; closedByServer: number; refused: number };
}

/** The agent's status line. */
export type AgentStatus = Partial<Omit<AgentState, 'goodLatencyMs'>> & {
  goodP50Ms?: number | null;
  goodP99Ms?: number | null;
  hostileOpen?: number;
  final?: boolean;
};

/** One control request as the CLI sends it; resolves { ok, reply, ms } (ok: a reply came). */
function controlRequest(fields: Record<string, string>, timeoutMs = 10000): Promise<ControlResult> {
  const t0 = Date.now();
  return connectAbstract('nfqlb', timeoutMs).then((sock) => new Promise<ControlResult>((resolve) => {
    const chunks: Buffer[] = [];
    let done = false;
    const finish = (ok: boolean, why: string): void => {
      if (done) return;
      done = true;
      sock.destroy();
      const reply = Buffer.concat(chunks).toString('latin1').replace(/\0$/, '');
      resolve({ ok: ok && reply !== '', reply: reply !== '' ? reply : why, ms: Date.now() - t0 });
    };
    sock.setTimeout(timeoutMs, () => finish(false, 'timeout'));
    let text = '';
    for (const [k, v] of Object.entries(fields)) text += `${k}:${v}\n`;
    sock.write(`${text}eoc:\n`, 'latin1');
    sock.on('data', (c: Buffer) => chunks.push(c));
    sock.on('error', (e: NodeJS.ErrnoException) => finish(false, e.code ?? e.message));
    sock.on('close', () => finish(true, 'closed without a reply'));
  }), (e: NodeJS.ErrnoException) => ({ ok: false, reply: e.code ?? e.message, ms: Date.now() - t0 }));
}

export async function agent(argv: string[]): Promise<void> {
  const o: Record<string, string> = Object.fromEntries(argv.map((a) => /^--([^=]+)=(.*)$/.exec(a)).filter((m): m is RegExpExecArray => m !== null).map((m) => [m[1], m[2]]));
  const table = o.table;
  const metricsPort = Number(o.metrics);
  const idleTarget = Number(o.idle ?? 40);
  const slowTarget = Number(o.slow ?? 10);
  const junkPerSecond = Number(o.junk ?? 5);
  const nfqlbBin = path.join(ROOT, 'bin', 'nfqlb');
  const only = o.only ? new Set(o.only.split(',')) : null;
  const agentStart = Date.now();
  const on = (what: string): boolean => only === null || only.has(what);
  const s: AgentState = {
    flowSet: { ok: 0, fail: 0 }, flowDelete: { ok: 0, fail: 0 }, traceFlow: { ok: 0, fail: 0 }, list: { ok: 0, fail: 0 },
    goodLatencyMs: [], goodMaxMs: 0, failures: {},
    traceSessions: 0, traceBytes: 0, traceRefused: 0, traceSilentReaders: 0,
    metrics: { ok: 0, fail: 0 }, cli: { ok: 0, fail: 0 }, oldSpaceKiB: [],
    /** [seconds, old space used, new space size, heap size, external, rss] every 5 s, KiB. */
    memoryKiB: [],
    hostile: { idleOpened: 0, slowOpened: 0, junkSent: 0, closedByServer: 0, refused: 0 },
  };
  let running = true;
  const note = (bucket: Counts, r: ControlResult, what: string): void => {
    if (r.ok && !/^FAIL|^Unknown|^Invalid/.test(r.reply)) bucket.ok++;
    else {
      bucket.fail++;
      const key = `${what}: ${String(r.reply).slice(0, 60)}`;
      s.failures[key] = (s.failures[key] ?? 0) + 1;
    }
    if (r.ok) {
      s.goodLatencyMs.push(r.ms);
      s.goodMaxMs = Math.max(s.goodMaxMs, r.ms);
    }
  };
  const loops: Array<Promise<void>> = [];
  const every = (ms: number, fn: () => Promise<void>): number =>
    loops.push(
      (async () => {
        while (running) {
          const t0 = Date.now();
          try {
            await fn();
          } catch (err) {
            const key = `agent: ${(err as Error).message}`;
            s.failures[key] = (s.failures[key] ?? 0) + 1;
          }
          await sleep(Math.max(0, ms - (Date.now() - t0)));
        }
      })(),
    );

  // Flows: set one, delete an older one, four times a second.
  let k = 0;
  if (on('flows')) every(250, async () => {
    const n = k++ % 20;
    const port = 6000 + ((k * 37) % 1000);
    note(s.flowSet, await controlRequest({ action: 'set', name: `soak-${n}`, target: table, priority: String(n % 5), protocols: 'udp,tcp', dsts: '192.0.2.0/24,2001:db8::/64', dports: `${port}-${port + 10}` }), 'set');
    note(s.flowDelete, await controlRequest({ action: 'delete', name: `soak-${(n + 10) % 20}` }), 'delete');
  });
  // Trace-flows: one that matches the UDP load (so traced packets flow to trace clients), set and deleted.
  let tk = 0;
  if (on('flows')) every(2000, async () => {
    // The CLI's trace-flow-set / trace-flow-delete send the actions trace-set / trace-delete.
    const r = tk++ % 2 === 0
      ? await controlRequest({ action: 'trace-set', name: 'soak-trace', protocols: 'udp', dports: '5002', srcs: '198.51.100.10/32' })
      : await controlRequest({ action: 'trace-delete', name: 'soak-trace' });
    note(s.traceFlow, r, 'trace-flow');
  });
  if (on('list')) every(1000, async () => {
    const r = await controlRequest({ action: 'list' });
    let good = r.ok;
    if (good) {
      try {
        good = Array.isArray(JSON.parse(r.reply));
      } catch {
        good = false;
      }
    }
    note(s.list, { ...r, ok: good, reply: good ? 'OK' : r.reply }, 'list');
  });
  // Trace clients: attach for 0.5-3 s and leave; every third one never reads.
  let tn = 0;
  if (on('trace')) every(1500, async () => {
    const silent = tn++ % 3 === 2;
    let sock: Socket;
    try {
      sock = await connectAbstract('nfqlb-trace');
    } catch {
      s.traceRefused++;
      return;
    }
    s.traceSessions++;
    await new Promise<void>((resolve) => {
      if (silent) {
        s.traceSilentReaders++;
        sock.pause();
      }
      let got = 0;
      sock.on('data', (c: Buffer) => {
        got += c.length;
      });
      sock.on('error', () => undefined);
      setTimeout(() => {
        s.traceBytes += got;
        if (!silent && got === 0) s.traceRefused++;
        sock.destroy();
        resolve();
      }, 500 + Math.random() * 2500);
    });
  });
  // Metrics, once a second.
  if (on('metrics')) every(1000, async () => {
    try {
      const r = await fetch(`http://127.0.0.1:${metricsPort}/metrics`, { signal: AbortSignal.timeout(5000) });
      const text = await r.text();
      if (r.status === 200 && text.includes('nfqlb_packets_total')) s.metrics.ok++;
      else s.metrics.fail++;
      // The daemon's old-space use: after each major collection it falls to what is live, so its floor shows a leak that RSS hides.
      // Beside it, where the rest of the RSS is: the young generation, the whole heap, memory outside the heap.
      const kib = (re: RegExp): number | null => {
        const m = re.exec(text);
        return m === null ? null : Math.round(Number(m[1]) / 1024);
      };
      const secs = Math.floor((Date.now() - agentStart) / 1000);
      const oldUsed = kib(/^nodejs_heap_space_size_used_bytes\{space="old"\} (\S+)$/m);
      if (oldUsed !== null && secs % 5 === 0 && s.oldSpaceKiB[s.oldSpaceKiB.length - 1]?.[0] !== secs) {
        s.oldSpaceKiB.push([secs, oldUsed]);
        s.memoryKiB.push([
          secs, oldUsed, kib(/^nodejs_heap_space_size_total_bytes\{space="new"\} (\S+)$/m), kib(/^nodejs_heap_size_total_bytes (\S+)$/m),
          kib(/^nodejs_external_memory_bytes (\S+)$/m), kib(/^process_resident_memory_bytes (\S+)$/m),
        ]);
      }
    } catch {
      s.metrics.fail++;
    }
  });
  // The CLI, as an operator uses it, every 5 s.
  if (on('cli')) every(5000, async () => {
    const code = await new Promise((resolve) => spawn(process.execPath, [nfqlbBin, 'flow-list-names'], { stdio: 'ignore' }).once('exit', resolve));
    if (code === 0) s.cli.ok++;
    else s.cli.fail++;
  });

  // Hostile clients. Idle: connect and say nothing; slow: one byte a second of
  // a request that would be good; both reconnect when the daemon closes them.
  const hostile = new Set<Socket>();
  const holdOpen = async (kind: 'idle' | 'slow'): Promise<void> => {
    if (!running) return;
    let sock: Socket;
    try {
      sock = await connectAbstract('nfqlb');
    } catch {
      s.hostile.refused++;
      if (running) setTimeout(() => holdOpen(kind), 200);
      return;
    }
    hostile.add(sock);
    s.hostile[kind === 'idle' ? 'idleOpened' : 'slowOpened']++;
    let timer: NodeJS.Timeout | null = null;
    if (kind === 'slow') {
      const text = 'action:list\neoc:\n';
      let i = 0;
      timer = setInterval(() => {
        if (i < text.length) sock.write(text[i++]);
      }, 1000);
    }
    sock.on('data', () => undefined);
    sock.on('error', () => undefined);
    sock.on('close', () => {
      if (timer !== null) clearInterval(timer);
      hostile.delete(sock);
      if (running) {
        s.hostile.closedByServer++;
        setTimeout(() => void holdOpen(kind), 200);
      }
    });
  };
  for (let i = 0; on('hostile') && i < idleTarget; i++) void holdOpen('idle');
  for (let i = 0; on('hostile') && i < slowTarget; i++) void holdOpen('slow');
  if (junkPerSecond > 0 && on('junk')) {
    every(1000 / junkPerSecond, async () => {
      let sock: Socket;
      try {
        sock = await connectAbstract('nfqlb');
      } catch {
        s.hostile.refused++;
        return;
      }
      s.hostile.junkSent++;
      sock.on('error', () => undefined);
      sock.on('data', () => undefined);
      const n = 1 + Math.floor(Math.random() * 3000);
      const junk = Buffer.alloc(n);
      for (let i = 0; i < n; i++) junk[i] = Math.random() < 0.1 ? 10 : Math.floor(Math.random() * 256);
      sock.end(junk);
      setTimeout(() => sock.destroy(), 3000);
    });
  }

  const status = (final: boolean): void => {
    const lat = s.goodLatencyMs.slice().sort((a, b) => a - b);
    const p = (q: number): number | null => (lat.length === 0 ? null : lat[Math.min(lat.length - 1, Math.floor(q * lat.length))]);
    const out = { ...s, goodLatencyMs: undefined, goodP50Ms: p(0.5), goodP99Ms: p(0.99), hostileOpen: hostile.size, final };
    process.stdout.write(`${JSON.stringify(out)}\n`);
  };
  const statusTimer = setInterval(() => status(false), 5000);
  await new Promise<void>((resolve) => process.once('SIGTERM', () => resolve()));
  running = false;
  clearInterval(statusTimer);
  for (const sock of hostile) sock.destroy();
  await Promise.race([Promise.all(loops), sleep(5000)]);
  status(true);
  process.exit(0);
}
