#!/usr/bin/env node
'use strict';
/**
 * The soak (npm run soak [-- --minutes=N]; root). A long run of everything at
 * once against one daemon, to find what only time and concurrency show:
 * crashes, leaks, lock-outs.
 *
 * Topology: testbed/testbed.ts (gateway → LB → 4 targets, namespaces). For
 * the whole run:
 *  - traffic: trafgen UDP to both VIPs (many sources, --rate pps, IPv4 and
 *    IPv6 in turns), counted where it enters the LB and at the targets; TCP
 *    connections from the gateway every few seconds (their own flow and
 *    table, which does not churn), each must be answered;
 *  - a fragment flood: --frag pps of IPv4 fragments with random ids, half
 *    first fragments (UDP to port 5003, a flow of their own: stored in the
 *    fragment table, never completed) and half later fragments whose first
 *    fragment never comes (dropped as fragment_miss);
 *  - targets: one of t2..t4 of the UDP table activated or deactivated
 *    --churn times a second (through the table library), and through the
 *    CLI every 10 s;
 *  - control: an agent inside the LB namespace (this file, `agent` mode)
 *    sets and deletes flows and trace-flows several times a second, lists
 *    them, attaches and detaches trace clients (some never read), scrapes
 *    the metrics endpoint every second, and keeps hostile control clients
 *    connected: idle ones, slow ones (one byte a second), and junk senders;
 *  - the daemon: watched every second; if it dies that is a crash (counted,
 *    its last output kept) and it is restarted so the run goes on.
 *
 * Report: crashes (must be 0), RSS after the warm-up and at the end (growth
 * must stay under 10%, counted without V8's young generation, which doubles
 * once or twice under load and keeps its size; see --warmup), the floors of
 * the old-space heap, packets handled and dropped by reason (the daemon's
 * metrics and the kernel's queue counters), control requests good and failed
 * with latency, and bench/results/<date>-soak.json.
 *
 * Options: --minutes=N (default 10), --rate=PPS (default 5000), --churn=N
 * activations per second (default 5), --idle=N --slow=N hostile clients held
 * (default 40, 10), --junk=N junk connections per second (default 5),
 * --frag=PPS fragment flood (default 1000, 0: none), --rate=0 no UDP load,
 * --tcp=0 no TCP checks, --only=flows,list,trace,metrics,cli,hostile,junk
 * the agent's activities to run (default all: to find which one costs memory),
 * --warmup=S seconds before RSS samples count (default 60, 10 per minute of
 * a shorter run). RSS is sampled every 5 s; growth compares the median of the
 * first third of the samples after the warm-up with that of the last third.
 */
const fs = require('node:fs');
const path = require('node:path');
const { spawn } = require('node:child_process');

const ROOT = path.resolve(__dirname, '..');
const argv = process.argv.slice(2);
const opt = (name, dflt) => {
  const a = argv.find((x) => x.startsWith(`--${name}=`));
  return a === undefined ? dflt : a.slice(name.length + 3);
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * A connected client of the daemon's abstract socket `name`, addressed as
 * nfqlb addresses it (Node's net.connect pads abstract names to 108 bytes,
 * which is another address): src/addon/sockets.ts, compiled.
 */
function connectAbstract(name, timeoutMs = 5000) {
  const { connectTo } = require(path.join(ROOT, 'dist', 'addon', 'sockets.js'));
  return connectTo({ unix: Buffer.from(name) }, timeoutMs);
}
const say = (text) => process.stdout.write(`${text}\n`);

if (argv[0] === 'agent') {
  agent().catch((err) => {
    process.stderr.write(`soak agent: ${err.stack}\n`);
    process.exit(1);
  });
} else {
  main().catch(async (err) => {
    process.stderr.write(`soak: ${err.stack}\n`);
    process.exitCode = 1;
  });
}

// ---------------------------------------------------------------------------
// The agent: runs inside the LB namespace, where the daemon's abstract control
// and trace sockets and its metrics endpoint are. One JSON status line on
// stdout every 5 s and a last one on SIGTERM.

/** One control request as the CLI sends it; resolves { ok, reply, ms } (ok: a reply came). */
function controlRequest(fields, timeoutMs = 10000) {
  const t0 = Date.now();
  return connectAbstract('nfqlb', timeoutMs).then((sock) => new Promise((resolve) => {
    const chunks = [];
    let done = false;
    const finish = (ok, why) => {
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
    sock.on('data', (c) => chunks.push(c));
    sock.on('error', (e) => finish(false, e.code));
    sock.on('close', () => finish(true, 'closed without a reply'));
  }), (e) => ({ ok: false, reply: e.code ?? e.message, ms: Date.now() - t0 }));
}

async function agent() {
  const o = Object.fromEntries(argv.slice(1).map((a) => /^--([^=]+)=(.*)$/.exec(a)).filter(Boolean).map((m) => [m[1], m[2]]));
  const table = o.table;
  const metricsPort = Number(o.metrics);
  const idleTarget = Number(o.idle ?? 40);
  const slowTarget = Number(o.slow ?? 10);
  const junkPerSecond = Number(o.junk ?? 5);
  const nfqlbBin = path.join(ROOT, 'bin', 'nfqlb');
  const only = o.only ? new Set(o.only.split(',')) : null;
  const agentStart = Date.now();
  const on = (what) => only === null || only.has(what);
  const s = {
    flowSet: { ok: 0, fail: 0 }, flowDelete: { ok: 0, fail: 0 }, traceFlow: { ok: 0, fail: 0 }, list: { ok: 0, fail: 0 },
    goodLatencyMs: [], goodMaxMs: 0, failures: {},
    traceSessions: 0, traceBytes: 0, traceRefused: 0, traceSilentReaders: 0,
    metrics: { ok: 0, fail: 0 }, cli: { ok: 0, fail: 0 }, oldSpaceKiB: [],
    /** [seconds, old space used, new space size, heap size, external, rss] every 5 s, KiB. */
    memoryKiB: [],
    hostile: { idleOpened: 0, slowOpened: 0, junkSent: 0, closedByServer: 0, refused: 0 },
  };
  let running = true;
  const note = (bucket, r, what) => {
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
  const loops = [];
  const every = (ms, fn) =>
    loops.push(
      (async () => {
        while (running) {
          const t0 = Date.now();
          try {
            await fn();
          } catch (err) {
            s.failures[`agent: ${err.message}`] = (s.failures[`agent: ${err.message}`] ?? 0) + 1;
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
    let sock;
    try {
      sock = await connectAbstract('nfqlb-trace');
    } catch {
      s.traceRefused++;
      return;
    }
    s.traceSessions++;
    await new Promise((resolve) => {
      if (silent) {
        s.traceSilentReaders++;
        sock.pause();
      }
      let got = 0;
      sock.on('data', (c) => {
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
      const kib = (re) => {
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
  const hostile = new Set();
  const holdOpen = async (kind) => {
    if (!running) return;
    let sock;
    try {
      sock = await connectAbstract('nfqlb');
    } catch {
      s.hostile.refused++;
      if (running) setTimeout(() => holdOpen(kind), 200);
      return;
    }
    hostile.add(sock);
    s.hostile[kind === 'idle' ? 'idleOpened' : 'slowOpened']++;
    let timer = null;
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
        setTimeout(() => holdOpen(kind), 200);
      }
    });
  };
  for (let i = 0; on('hostile') && i < idleTarget; i++) holdOpen('idle');
  for (let i = 0; on('hostile') && i < slowTarget; i++) holdOpen('slow');
  if (junkPerSecond > 0 && on('junk')) {
    every(1000 / junkPerSecond, async () => {
      let sock;
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

  const status = (final) => {
    const lat = s.goodLatencyMs.slice().sort((a, b) => a - b);
    const p = (q) => (lat.length === 0 ? null : lat[Math.min(lat.length - 1, Math.floor(q * lat.length))]);
    const out = { ...s, goodLatencyMs: undefined, goodP50Ms: p(0.5), goodP99Ms: p(0.99), hostileOpen: hostile.size, final };
    process.stdout.write(`${JSON.stringify(out)}\n`);
  };
  const statusTimer = setInterval(() => status(false), 5000);
  await new Promise((resolve) => process.once('SIGTERM', resolve));
  running = false;
  clearInterval(statusTimer);
  for (const sock of hostile) sock.destroy();
  await Promise.race([Promise.all(loops), sleep(5000)]);
  status(true);
  process.exit(0);
}

// ---------------------------------------------------------------------------
// The orchestrator (root namespace)

const FRAG_PORT = 5003;

/**
 * trafgen packets, in turns: an IPv4 first fragment (more-fragments set,
 * offset 0, UDP header to FRAG_PORT claiming a 3,000-byte datagram) and a
 * later fragment (offset 1480, last), each with its own random id and a
 * source from 198.51.100.10-250: datagrams that never complete.
 */
function fragmentFloodConfig(dstMac, vip) {
  const eth = `${dstMac.split(':').map((b) => `0x${b}`).join(', ')}, 0x02, 0x00, 0x00, 0x00, 0x00, 0x02, c16(0x0800)`;
  const dst = vip.split('.').join(', ');
  return (
    `{ ${eth},\n  0x45, 0x00, c16(68), drnd(2), c16(0x2000), 64, 17, csumip(14, 33),\n` +
    `  198, 51, 100, dinc(10, 250), ${dst},\n  drnd(2), c16(${FRAG_PORT}), c16(3008), c16(0), fill(0x42, 40) }\n` +
    `{ ${eth},\n  0x45, 0x00, c16(68), drnd(2), c16(0x00b9), 64, 17, csumip(14, 33),\n` +
    `  198, 51, 100, dinc(10, 250), ${dst},\n  fill(0x43, 48) }\n`
  );
}

async function main() {
  const minutes = Number(opt('minutes', '10'));
  const rate = Number(opt('rate', '5000'));
  const churn = Number(opt('churn', '5'));
  const warmupS = Number(opt('warmup', String(Math.min(60, minutes * 10))));
  const idle = Number(opt('idle', '40'));
  const slow = Number(opt('slow', '10'));
  const junk = Number(opt('junk', '5'));
  const fragRate = Number(opt('frag', '1000'));
  const tcpOn = opt('tcp', '1') !== '0';
  const only = opt('only', '');
  if (!(minutes > 0 && rate >= 0 && churn >= 0)) throw new Error('usage: npm run soak [-- --minutes=N --rate=PPS --churn=N --idle=N --slow=N --junk=N]');
  let tb;
  let shmLib;
  let tableLib;
  try {
    tb = require(path.join(ROOT, 'testbed', 'dist', 'testbed', 'testbed.js'));
    shmLib = require(path.join(ROOT, 'dist', 'addon', 'shm.js'));
    tableLib = require(path.join(ROOT, 'dist', 'tables', 'tablefile.js'));
  } catch (err) {
    throw new Error(`dist/ is not built (${err.message.split('\n')[0]}); run bash scripts/setup.sh`);
  }
  if (!tb.canUseNetns()) throw new Error('needs root and `ip netns` (run: sudo npm run soak)');

  const started = new Date();
  const endAt = Date.now() + minutes * 60000;
  const metricsPort = 19757;
  const daemonArgs = ['flowlb', '--promiscuous_ping', '--queue=0:3', '--qlength=1024', '--hash_mode=0', `--metrics_address=127.0.0.1:${metricsPort}`];
  const result = {
    started: started.toISOString(), minutes, rate, fragRate, churnPerSecond: churn, hostile: { idle, slow, junkPerSecond: junk },
    machine: { cpus: require('node:os').cpus().length, loadavgAtStart: require('node:os').loadavg() },
    crashes: 0, crashLogs: [], rss: { samplesKiB: [] },
  };
  let traceShm = null;
  let savedMask = null;
  const cleanup = async () => {
    if (traceShm !== null && savedMask !== null) {
      try {
        traceShm.mask = savedMask;
        shmLib.closeTraceShm(traceShm);
      } catch {
        // The mask is restored by the daemon when its last trace client leaves.
      }
      traceShm = null;
    }
    await tb.cleanupAll();
  };
  process.once('SIGINT', () => void cleanup().then(() => process.exit(130)));
  process.once('SIGTERM', () => void cleanup().then(() => process.exit(143)));

  try {
    say(`soak: ${minutes} min, ${rate} pps UDP, ${churn} activations/s, hostile ${idle} idle + ${slow} slow + ${junk} junk/s`);
    const bed = tb.Testbed.build();
    tb.addLoadCounters(bed);
    await bed.startServers();
    const mac = tb.macOf(bed.lb, 'gw0');
    // Two tables: the UDP load's, whose targets churn, and the TCP check's,
    // which stays put (a target change moves in-flight connections: Maglev
    // without connection tracking, as nfqlb), so every connection must work.
    const shm = tb.uniqueShmName('udp');
    const shmTcp = tb.uniqueShmName('tcp');
    bed.initTable(shm);
    bed.initTable(shmTcp);
    // Per-packet trace lines need the flows bit in the (global) trace mask; restored at the end.
    traceShm = shmLib.openOrCreateTraceShm();
    savedMask = traceShm.mask;
    traceShm.mask = (savedMask | 0x40) >>> 0;

    const configure = () => {
      bed.setFlow('soak-tcp', shmTcp);
      bed.nfqlbOk(['flow-set', '--name=soak-frag', `--target=${shm}`, '--prio=2', '--protocols=udp', `--dsts=${bed.vip4}/32`, `--dports=${FRAG_PORT}`]);
      bed.nfqlbOk(['flow-set', '--name=soak-udp', `--target=${shm}`, '--prio=2', '--protocols=udp', `--dsts=${bed.vip4}/32,${bed.vip6}/128`, `--dports=${tb.LOAD_PORT}`]);
    };
    let daemon = await bed.startDaemon(daemonArgs);
    configure();
    const rssAtLaunch = tb.memoryKiB(daemon.pid).rss;
    result.rss.atLaunchKiB = rssAtLaunch;
    const c0 = tb.loadCounts(bed);
    const q0 = tb.queueDrops(bed.lb);
    const tcp = { attempts: 0, answered: 0, failed: 0 };
    let stop = false;
    const tasks = [];

    // Traffic: trafgen in chunks of 10 s, IPv4 and IPv6 in turns.
    let sentPackets = 0;
    if (rate > 0) tasks.push((async () => {
      let family = 4;
      while (!stop) {
        const seconds = Math.max(1, Math.min(10, Math.floor((endAt - Date.now()) / 1000)));
        const g = await tb.runTrafgen(bed.gw, 'lb0', tb.trafgenConfig({ family, dstMac: mac, sources: 'many' }), {
          count: rate * seconds, rate, steady: { frameBytes: tb.frameBytes({ family }) },
        });
        sentPackets += g.sent;
        family = family === 4 ? 6 : 4;
        if (Date.now() >= endAt) break;
      }
    })());

    // The fragment flood: trafgen's own pacing (bursts once a second), beside the steady load.
    let fragSent = 0;
    if (fragRate > 0) {
      tasks.push((async () => {
        while (!stop) {
          const seconds = Math.max(1, Math.min(10, Math.floor((endAt - Date.now()) / 1000)));
          const g = await tb.runTrafgen(bed.gw, 'lb0', fragmentFloodConfig(mac, bed.vip4), { count: fragRate * seconds, rate: fragRate });
          fragSent += g.sent;
          if (Date.now() >= endAt) break;
        }
      })());
    }

    // TCP: 16 connections every 3 s, alternately to each VIP; all must be answered.
    let sport = 20000;
    if (tcpOn) tasks.push((async () => {
      let v6 = false;
      while (!stop) {
        const ports = Array.from({ length: 16 }, () => (sport = sport >= 60000 ? 20000 : sport + 1));
        const vip = v6 ? bed.vip6 : bed.vip4;
        const src = v6 ? bed.client6 : bed.client4;
        v6 = !v6;
        const out = await new Promise((resolve) => {
          const child = tb.spawnInNs(bed.gw, process.execPath, [
            tb.TESTBED_JS, 'client', `--dst=${vip}`, `--port=${bed.port}`, `--src=${src}`, `--sports=${ports.join(',')}`, '--concurrency=16', '--timeout=4000',
          ], { stdio: ['ignore', 'pipe', 'ignore'] });
          let text = '';
          child.stdout.on('data', (d) => (text += d));
          child.once('exit', () => resolve(text));
        });
        try {
          for (const r of JSON.parse(out)) {
            tcp.attempts++;
            if (r.target !== null) tcp.answered++;
            else tcp.failed++;
          }
        } catch {
          tcp.failed += 16;
          tcp.attempts += 16;
        }
        await sleep(3000);
      }
    })());

    // Activation churn through the library, and through the CLI every 10 s.
    let activations = 0;
    tasks.push((async () => {
      if (churn === 0) return;
      const table = tableLib.openTable(shm, true);
      const state = new Map(bed.targets.map((t) => [t.id, true]));
      let cliAt = Date.now() + 10000;
      try {
        while (!stop) {
          const t = bed.targets[1 + Math.floor(Math.random() * (bed.targets.length - 1))];
          const on = !state.get(t.id);
          if (Date.now() >= cliAt) {
            cliAt = Date.now() + 10000;
            const args = on ? ['activate', `--index=${t.id - 1}`, `--shm=${shm}`, `${t.fwmark}`] : ['deactivate', `--index=${t.id - 1}`, `--shm=${shm}`];
            await new Promise((resolve) => tb.spawnInNs(bed.lb, process.execPath, [tb.NFQLB_BIN, ...args], { stdio: 'ignore' }).once('exit', resolve));
          } else if (on) table.activateIndex(t.id - 1, t.fwmark);
          else table.deactivateIndex(t.id - 1);
          state.set(t.id, on);
          activations++;
          await sleep(1000 / churn);
        }
      } finally {
        for (const t of bed.targets) table.activateIndex(t.id - 1, t.fwmark);
        tableLib.closeTable(table);
      }
    })());

    // The control-plane agent inside the LB namespace.
    let agentStatus = null;
    const agentChild = tb.spawnInNs(bed.lb, process.execPath, [__filename, 'agent', `--table=${shm}`, `--metrics=${metricsPort}`, `--idle=${idle}`, `--slow=${slow}`, `--junk=${junk}`, ...(only ? [`--only=${only}`] : [])], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let agentErr = '';
    let agentBuf = '';
    agentChild.stdout.on('data', (d) => {
      agentBuf += d;
      let nl;
      while ((nl = agentBuf.indexOf('\n')) >= 0) {
        const line = agentBuf.slice(0, nl);
        agentBuf = agentBuf.slice(nl + 1);
        try {
          agentStatus = JSON.parse(line);
        } catch {
          // Not a status line.
        }
      }
    });
    agentChild.stderr.on('data', (d) => (agentErr = (agentErr + d).slice(-4000)));

    // The watch: crashes, RSS.
    const warmupEnd = Date.now() + warmupS * 1000;
    let nextReport = Date.now() + 30000;
    while (Date.now() < endAt) {
      await sleep(1000);
      if (!daemon.running) {
        const exit = await daemon.exited;
        result.crashes++;
        result.crashLogs.push({ at: new Date().toISOString(), exit, stderrTail: daemon.stderr.slice(-3000) });
        say(`soak: CRASH ${JSON.stringify(exit)}; restarting`);
        bed.daemon = null;
        daemon = await bed.startDaemon(daemonArgs);
        configure();
        continue;
      }
      const rss = tb.memoryKiB(daemon.pid).rss;
      const secs = Math.round((Date.now() - (endAt - minutes * 60000)) / 1000);
      if (secs % 5 === 0) result.rss.samplesKiB.push([secs, rss, Date.now() >= warmupEnd]);
      if (Date.now() >= nextReport) {
        nextReport += 30000;
        const a = agentStatus ?? {};
        say(`soak: ${secs} s  rss ${rss} KiB  crashes ${result.crashes}  udp sent ${sentPackets}  tcp ${tcp.answered}/${tcp.attempts}  activations ${activations}  ` +
          `flow-set ok ${a.flowSet?.ok ?? '?'} fail ${a.flowSet?.fail ?? '?'}  metrics ${a.metrics?.ok ?? '?'}  trace ${a.traceSessions ?? '?'}  load ${require('node:os').loadavg()[0].toFixed(1)}`);
      }
    }
    result.rss.endKiB = tb.memoryKiB(daemon.pid).rss;
    result.rss.hwmKiB = tb.memoryKiB(daemon.pid).hwm;

    stop = true;
    agentChild.kill('SIGTERM');
    await Promise.race([new Promise((r) => agentChild.once('exit', r)), sleep(10000)]);
    await Promise.all(tasks);
    await sleep(500);
    const metrics = tb.scrapeMetrics(bed.lb, metricsPort) ?? '';
    const c = tb.loadDelta(c0, tb.loadCounts(bed));
    const q1 = tb.queueDrops(bed.lb);
    const reasons = {};
    for (const m of metrics.matchAll(/^nfqlb_decisions_total\{reason="([^"]+)"\} (\S+)$/gm)) reasons[m[1]] = Number(m[2]);
    const errorSeries = {};
    for (const m of metrics.matchAll(/^(nfqlb_\w*(?:error|drop|refused)\w*)(\{[^}]*\})? (\S+)$/gm)) errorSeries[`${m[1]}${m[2] ?? ''}`] = Number(m[3]);
    result.packets = {
      udpSent: sentPackets,
      fragmentsSent: fragSent,
      offeredAtLb: c.offered,
      deliveredToTargets: c.delivered,
      perTarget: c.perTarget,
      handledByDaemon: tb.metricSum(metrics, 'nfqlb_packets_total'),
      accepted: tb.metricSum(metrics, 'nfqlb_packets_total', { verdict: 'accept' }),
      dropVerdicts: tb.metricSum(metrics, 'nfqlb_packets_total', { verdict: 'drop' }),
      decisionsByReason: reasons,
      kernelQueueDropped: q1.queueDropped - q0.queueDropped,
      kernelUserDropped: q1.userDropped - q0.userDropped,
      errorAndDropSeries: errorSeries,
    };
    result.tcp = tcp;
    result.activations = activations;
    result.control = agentStatus;
    result.agentStderr = agentErr;
    const stopped = await bed.stopDaemon();
    result.stopExit = stopped;
    // RSS saws up and down with V8's collections (±10% within a minute), so
    // one sample against another says little: compare the median of the first
    // third of the samples after the warm-up with the median of the last third.
    const counted = result.rss.samplesKiB.filter((x) => x[2]).map((x) => x[1]);
    const third = Math.max(1, Math.floor(counted.length / 3));
    const median = (xs) => {
      const v = xs.slice().sort((a, b) => a - b);
      return v.length === 0 ? NaN : v[Math.floor((v.length - 1) / 2)];
    };
    const start = median(counted.slice(0, third));
    result.rss.startKiB = start;
    result.rss.endMedianKiB = median(counted.slice(-third));
    result.rss.minKiB = Math.min(...counted);
    result.rss.maxKiB = Math.max(...counted);
    result.rss.growthPercent = Math.round(((result.rss.endMedianKiB - start) / start) * 1000) / 10;
    // Old space after the warm-up: the lowest value of each third (a floor that climbs is a leak).
    const old = (agentStatus?.oldSpaceKiB ?? []).filter((x) => x[0] >= warmupS).map((x) => x[1]);
    const ot = Math.max(1, Math.floor(old.length / 3));
    result.heap = {
      oldSpaceFloorsKiB: old.length < 3 ? [] : [Math.min(...old.slice(0, ot)), Math.min(...old.slice(ot, -ot)), Math.min(...old.slice(-ot))],
      oldSpaceSamplesKiB: agentStatus?.oldSpaceKiB ?? [],
      columns: ['seconds', 'oldSpaceUsed', 'newSpaceSize', 'heapSize', 'external', 'rss'],
      samplesKiB: agentStatus?.memoryKiB ?? [],
    };
    if (agentStatus !== null) {
      delete agentStatus.oldSpaceKiB;
      delete agentStatus.memoryKiB;
    }
    // V8 doubles its young generation under allocation pressure (8 -> 16 ->
    // 32 MiB here) and never gives it back: a one-time step of up to ~28 MiB
    // of RSS that says nothing about leaks. The criterion is RSS without the
    // young generation (median of thirds again); raw RSS is reported beside.
    const adjusted = result.heap.samplesKiB.filter((x) => x[0] >= warmupS && x[2] !== null && x[5] !== null).map((x) => x[5] - x[2]);
    if (adjusted.length >= 3) {
      const at = Math.max(1, Math.floor(adjusted.length / 3));
      const a0 = median(adjusted.slice(0, at));
      const a1 = median(adjusted.slice(-at));
      result.rss.withoutYoungGenerationKiB = [a0, a1];
      result.rss.withoutYoungGenerationGrowthPercent = Math.round(((a1 - a0) / a0) * 1000) / 10;
    }
    const floors = result.heap.oldSpaceFloorsKiB;
    result.heap.oldSpaceFloorGrowthPercent = floors.length === 3 ? Math.round(((floors[2] - floors[0]) / floors[0]) * 1000) / 10 : null;
    result.machine.loadavgAtEnd = require('node:os').loadavg();
    const growth = result.rss.withoutYoungGenerationGrowthPercent ?? result.rss.growthPercent;
    result.pass = result.crashes === 0 && growth < 10 && (result.heap.oldSpaceFloorGrowthPercent ?? 0) < 10 && (stopped === null || stopped.code === 0) && tcp.failed === 0;
    result.ended = new Date().toISOString();

    const outDir = process.env.SOAK_OUT ? path.resolve(process.env.SOAK_OUT) : path.join(__dirname, 'results');
    fs.mkdirSync(outDir, { recursive: true });
    const stamp = started.toISOString().slice(0, 16).replace('T', '-').replace(':', '');
    const file = path.join(outDir, `${stamp}-nfqlb-ts-soak-${minutes}min.json`);
    fs.writeFileSync(file, `${JSON.stringify(result, null, 1)}\n`);
    const a = agentStatus ?? {};
    say('');
    say(`soak: ${result.pass ? 'PASS' : 'FAIL'} after ${minutes} min`);
    say(`  crashes                ${result.crashes}`);
    say(`  RSS (median of thirds) ${start} KiB after the ${warmupS} s warm-up -> ${result.rss.endMedianKiB} KiB at the end (${result.rss.growthPercent}%); ` +
      `samples ${result.rss.minKiB}-${result.rss.maxKiB} KiB, last ${result.rss.endKiB} KiB, peak ${result.rss.hwmKiB} KiB`);
    say(`  RSS without young gen  ${(result.rss.withoutYoungGenerationKiB ?? []).join(' -> ')} KiB (${result.rss.withoutYoungGenerationGrowthPercent}%): the criterion, < 10%`);
    say(`  old space floors       ${result.heap.oldSpaceFloorsKiB.join(' -> ')} KiB (${result.heap.oldSpaceFloorGrowthPercent}%; lowest of each third after the warm-up)`);
    const lastMem = result.heap.samplesKiB[result.heap.samplesKiB.length - 1];
    const firstMem = result.heap.samplesKiB.find((x) => x[0] >= warmupS);
    if (lastMem !== undefined && firstMem !== undefined) {
      say(`  heap after warm-up     new space ${firstMem[2]} KiB, heap ${firstMem[3]} KiB, external ${firstMem[4]} KiB, rss ${firstMem[5]} KiB`);
      say(`  heap at the end        new space ${lastMem[2]} KiB, heap ${lastMem[3]} KiB, external ${lastMem[4]} KiB, rss ${lastMem[5]} KiB`);
    }
    say(`  UDP                    sent ${sentPackets}, reached the LB ${c.offered}, delivered ${c.delivered} (${JSON.stringify(c.perTarget)})`);
    say(`  fragment flood         sent ${fragSent} (half first fragments, half later fragments without a first)`);
    say(`  daemon                 handled ${result.packets.handledByDaemon}, accepted ${result.packets.accepted}, drop verdicts ${result.packets.dropVerdicts}`);
    say(`  decisions by reason    ${JSON.stringify(reasons)}`);
    say(`  kernel queue drops     queue full ${result.packets.kernelQueueDropped}, user ${result.packets.kernelUserDropped}`);
    say(`  TCP                    ${tcp.answered}/${tcp.attempts} answered`);
    say(`  activations            ${activations}`);
    say(`  control (good)         set ${a.flowSet?.ok}/${(a.flowSet?.ok ?? 0) + (a.flowSet?.fail ?? 0)}, delete ${a.flowDelete?.ok}/${(a.flowDelete?.ok ?? 0) + (a.flowDelete?.fail ?? 0)}, list ${a.list?.ok}/${(a.list?.ok ?? 0) + (a.list?.fail ?? 0)}, p50 ${a.goodP50Ms} ms, p99 ${a.goodP99Ms} ms, max ${a.goodMaxMs} ms`);
    say(`  control failures       ${JSON.stringify(a.failures ?? {})}`);
    say(`  hostile                ${JSON.stringify(a.hostile ?? {})}`);
    say(`  trace                  ${a.traceSessions} sessions (${a.traceSilentReaders} never read), ${a.traceBytes} bytes`);
    say(`  metrics scrapes        ${a.metrics?.ok} ok, ${a.metrics?.fail} failed;  CLI ${a.cli?.ok} ok, ${a.cli?.fail} failed`);
    say(`  stop                   ${JSON.stringify(stopped)}`);
    say(`  results                ${path.relative(ROOT, file)}`);
    if (!result.pass) process.exitCode = 1;
  } finally {
    await cleanup();
  }
}
