/**
 * The soak's orchestrator (bench/soak.ts): the test bed, one daemon, and for
 * the whole run UDP load, a fragment flood, TCP checks, activation churn and
 * the control-plane agent (agent.ts) in the LB namespace; the watch for
 * crashes and RSS; the report and the results JSON.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { closeTraceShm, openOrCreateTraceShm, type TraceShm } from '../../src/addon/shm';
import { closeTable, openTable } from '../../src/tables/tablefile';
import * as tb from '../../testbed/testbed';
import type { ConnectResult } from '../../testbed/testbed';
import type { AgentStatus } from './agent';

const ROOT = tb.ROOT;
/** The compiled entry, which is also the agent's command line. */
const SOAK_JS = path.join(__dirname, '..', 'soak.js');
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const say = (text: string): void => {
  process.stdout.write(`${text}\n`);
};

interface SoakHeap {
  oldSpaceFloorsKiB: number[];
  oldSpaceSamplesKiB: Array<[number, number]>;
  columns: string[];
  samplesKiB: NonNullable<AgentStatus['memoryKiB']>;
  oldSpaceFloorGrowthPercent: number | null;
}

/** bench/results/<date>-nfqlb-ts-soak-<N>min.json. */
interface SoakResult {
  started: string;
  minutes: number;
  rate: number;
  fragRate: number;
  churnPerSecond: number;
  hostile: { idle: number; slow: number; junkPerSecond: number };
  machine: { cpus: number; loadavgAtStart: number[]; loadavgAtEnd?: number[] };
  crashes: number;
  crashLogs: Array<{ at: string; exit: unknown; stderrTail: string }>;
  rss: {
    samplesKiB: Array<[number, number, boolean]>;
    atLaunchKiB?: number;
    endKiB?: number;
    hwmKiB?: number;
    startKiB?: number;
    endMedianKiB?: number;
    minKiB?: number;
    maxKiB?: number;
    growthPercent?: number;
    withoutYoungGenerationKiB?: number[];
    withoutYoungGenerationGrowthPercent?: number;
  };
  packets?: Record<string, unknown>;
  tcp?: { attempts: number; answered: number; failed: number };
  activations?: number;
  control?: AgentStatus | null;
  agentStderr?: string;
  stopExit?: { code: number | null; ms: number } | null;
  heap?: SoakHeap;
  pass?: boolean;
  ended?: string;
}

const FRAG_PORT = 5003;

/**
 * trafgen packets, in turns: an IPv4 first fragment (more-fragments set,
 * offset 0, UDP header to FRAG_PORT claiming a 3,000-byte datagram) and a
 * later fragment (offset 1480, last), each with its own random id and a
 * source from 198.51.100.10-250: datagrams that never complete.
 */
function fragmentFloodConfig(dstMac: string, vip: string): string {
  const eth = `${dstMac.split(':').map((b) => `0x${b}`).join(', ')}, 0x02, 0x00, 0x00, 0x00, 0x00, 0x02, c16(0x0800)`;
  const dst = vip.split('.').join(', ');
  return (
    `{ ${eth},\n  0x45, 0x00, c16(68), drnd(2), c16(0x2000), 64, 17, csumip(14, 33),\n` +
    `  198, 51, 100, dinc(10, 250), ${dst},\n  drnd(2), c16(${FRAG_PORT}), c16(3008), c16(0), fill(0x42, 40) }\n` +
    `{ ${eth},\n  0x45, 0x00, c16(68), drnd(2), c16(0x00b9), 64, 17, csumip(14, 33),\n` +
    `  198, 51, 100, dinc(10, 250), ${dst},\n  fill(0x43, 48) }\n`
  );
}

export async function soak(argv: string[]): Promise<void> {
  const opt = (name: string, dflt: string): string => {
    const a = argv.find((x) => x.startsWith(`--${name}=`));
    return a === undefined ? dflt : a.slice(name.length + 3);
  };
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
  if (!tb.canUseNetns()) throw new Error('needs root and `ip netns` (run: sudo npm run soak)');

  const started = new Date();
  const endAt = Date.now() + minutes * 60000;
  const metricsPort = 19757;
  const daemonArgs = ['flowlb', '--promiscuous_ping', '--queue=0:3', '--qlength=1024', '--hash_mode=0', `--metrics_address=127.0.0.1:${metricsPort}`];
  const result: SoakResult = {
    started: started.toISOString(), minutes, rate, fragRate, churnPerSecond: churn, hostile: { idle, slow, junkPerSecond: junk },
    machine: { cpus: os.cpus().length, loadavgAtStart: os.loadavg() },
    crashes: 0, crashLogs: [], rss: { samplesKiB: [] },
  };
  let traceShm: TraceShm | null = null;
  let savedMask: number | null = null;
  const cleanup = async (): Promise<void> => {
    if (traceShm !== null && savedMask !== null) {
      try {
        traceShm.mask = savedMask;
        closeTraceShm(traceShm);
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
    const trace = openOrCreateTraceShm();
    traceShm = trace;
    savedMask = trace.mask;
    trace.mask = (trace.mask | 0x40) >>> 0;

    const configure = (): void => {
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
    const tasks: Array<Promise<void>> = [];

    // Traffic: trafgen in chunks of 10 s, IPv4 and IPv6 in turns.
    let sentPackets = 0;
    if (rate > 0) tasks.push((async () => {
      let family: 4 | 6 = 4;
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
        const out = await new Promise<string>((resolve) => {
          const child = tb.spawnInNs(bed.gw, process.execPath, [
            tb.TESTBED_JS, 'client', `--dst=${vip}`, `--port=${bed.port}`, `--src=${src}`, `--sports=${ports.join(',')}`, '--concurrency=16', '--timeout=4000',
          ], { stdio: ['ignore', 'pipe', 'ignore'] });
          let text = '';
          child.stdout?.on('data', (d: Buffer) => (text += d));
          child.once('exit', () => resolve(text));
        });
        try {
          for (const r of JSON.parse(out) as ConnectResult[]) {
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
      const table = openTable(shm, true);
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
        closeTable(table);
      }
    })());

    // The control-plane agent inside the LB namespace.
    let agentStatus: AgentStatus | null = null;
    const agentChild = tb.spawnInNs(bed.lb, process.execPath, [SOAK_JS, 'agent', `--table=${shm}`, `--metrics=${metricsPort}`, `--idle=${idle}`, `--slow=${slow}`, `--junk=${junk}`, ...(only ? [`--only=${only}`] : [])], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let agentErr = '';
    let agentBuf = '';
    agentChild.stdout?.on('data', (d: Buffer) => {
      agentBuf += d;
      let nl;
      while ((nl = agentBuf.indexOf('\n')) >= 0) {
        const line = agentBuf.slice(0, nl);
        agentBuf = agentBuf.slice(nl + 1);
        try {
          agentStatus = JSON.parse(line) as AgentStatus;
        } catch {
          // Not a status line.
        }
      }
    });
    agentChild.stderr?.on('data', (d: Buffer) => (agentErr = (agentErr + d).slice(-4000)));

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
        const a: AgentStatus = agentStatus ?? {};
        say(`soak: ${secs} s  rss ${rss} KiB  crashes ${result.crashes}  udp sent ${sentPackets}  tcp ${tcp.answered}/${tcp.attempts}  activations ${activations}  ` +
          `flow-set ok ${a.flowSet?.ok ?? '?'} fail ${a.flowSet?.fail ?? '?'}  metrics ${a.metrics?.ok ?? '?'}  trace ${a.traceSessions ?? '?'}  load ${os.loadavg()[0].toFixed(1)}`);
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
    const reasons: Record<string, number> = {};
    for (const m of metrics.matchAll(/^nfqlb_decisions_total\{reason="([^"]+)"\} (\S+)$/gm)) reasons[m[1]] = Number(m[2]);
    const errorSeries: Record<string, number> = {};
    for (const m of metrics.matchAll(/^(nfqlb_\w*(?:error|drop|refused)\w*)(\{[^}]*\})? (\S+)$/gm)) errorSeries[`${m[1]}${m[2] ?? ''}`] = Number(m[3]);
    const packets = {
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
    result.packets = packets;
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
    const median = (xs: number[]): number => {
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
    const status = agentStatus as AgentStatus | null;
    const old = (status?.oldSpaceKiB ?? []).filter((x) => x[0] >= warmupS).map((x) => x[1]);
    const ot = Math.max(1, Math.floor(old.length / 3));
    const heap: SoakHeap = {
      oldSpaceFloorsKiB: old.length < 3 ? [] : [Math.min(...old.slice(0, ot)), Math.min(...old.slice(ot, -ot)), Math.min(...old.slice(-ot))],
      oldSpaceSamplesKiB: status?.oldSpaceKiB ?? [],
      columns: ['seconds', 'oldSpaceUsed', 'newSpaceSize', 'heapSize', 'external', 'rss'],
      samplesKiB: status?.memoryKiB ?? [],
      oldSpaceFloorGrowthPercent: null,
    };
    result.heap = heap;
    if (status !== null) {
      delete status.oldSpaceKiB;
      delete status.memoryKiB;
    }
    // V8 doubles its young generation under allocation pressure (8 -> 16 ->
    // 32 MiB here) and never gives it back: a one-time step of up to ~28 MiB
    // of RSS that says nothing about leaks. The criterion is RSS without the
    // young generation (median of thirds again); raw RSS is reported beside.
    const adjusted = heap.samplesKiB.filter((x) => x[0] >= warmupS && x[2] !== null && x[5] !== null).map((x) => (x[5] as number) - (x[2] as number));
    if (adjusted.length >= 3) {
      const at = Math.max(1, Math.floor(adjusted.length / 3));
      const a0 = median(adjusted.slice(0, at));
      const a1 = median(adjusted.slice(-at));
      result.rss.withoutYoungGenerationKiB = [a0, a1];
      result.rss.withoutYoungGenerationGrowthPercent = Math.round(((a1 - a0) / a0) * 1000) / 10;
    }
    const floors = heap.oldSpaceFloorsKiB;
    heap.oldSpaceFloorGrowthPercent = floors.length === 3 ? Math.round(((floors[2] - floors[0]) / floors[0]) * 1000) / 10 : null;
    result.machine.loadavgAtEnd = os.loadavg();
    const growth = result.rss.withoutYoungGenerationGrowthPercent ?? result.rss.growthPercent;
    result.pass = result.crashes === 0 && growth < 10 && (heap.oldSpaceFloorGrowthPercent ?? 0) < 10 && (stopped === null || stopped.code === 0) && tcp.failed === 0;
    result.ended = new Date().toISOString();

    const outDir = process.env.SOAK_OUT ? path.resolve(process.env.SOAK_OUT) : path.join(ROOT, 'bench', 'results');
    fs.mkdirSync(outDir, { recursive: true });
    const stamp = started.toISOString().slice(0, 16).replace('T', '-').replace(':', '');
    const file = path.join(outDir, `${stamp}-nfqlb-ts-soak-${minutes}min.json`);
    fs.writeFileSync(file, `${JSON.stringify(result, null, 1)}\n`);
    const a: AgentStatus = status ?? {};
    say('');
    say(`soak: ${result.pass ? 'PASS' : 'FAIL'} after ${minutes} min`);
    say(`  crashes                ${result.crashes}`);
    say(`  RSS (median of thirds) ${start} KiB after the ${warmupS} s warm-up -> ${result.rss.endMedianKiB} KiB at the end (${result.rss.growthPercent}%); ` +
      `samples ${result.rss.minKiB}-${result.rss.maxKiB} KiB, last ${result.rss.endKiB} KiB, peak ${result.rss.hwmKiB} KiB`);
    say(`  RSS without young gen  ${(result.rss.withoutYoungGenerationKiB ?? []).join(' -> ')} KiB (${result.rss.withoutYoungGenerationGrowthPercent}%): the criterion, < 10%`);
    say(`  old space floors       ${heap.oldSpaceFloorsKiB.join(' -> ')} KiB (${heap.oldSpaceFloorGrowthPercent}%; lowest of each third after the warm-up)`);
    const lastMem = heap.samplesKiB[heap.samplesKiB.length - 1];
    const firstMem = heap.samplesKiB.find((x) => x[0] >= warmupS);
    if (lastMem !== undefined && firstMem !== undefined) {
      say(`  heap after warm-up     new space ${firstMem[2]} KiB, heap ${firstMem[3]} KiB, external ${firstMem[4]} KiB, rss ${firstMem[5]} KiB`);
      say(`  heap at the end        new space ${lastMem[2]} KiB, heap ${lastMem[3]} KiB, external ${lastMem[4]} KiB, rss ${lastMem[5]} KiB`);
    }
    say(`  UDP                    sent ${sentPackets}, reached the LB ${c.offered}, delivered ${c.delivered} (${JSON.stringify(c.perTarget)})`);
    say(`  fragment flood         sent ${fragSent} (half first fragments, half later fragments without a first)`);
    say(`  daemon                 handled ${packets.handledByDaemon}, accepted ${packets.accepted}, drop verdicts ${packets.dropVerdicts}`);
    say(`  decisions by reason    ${JSON.stringify(reasons)}`);
    say(`  kernel queue drops     queue full ${packets.kernelQueueDropped}, user ${packets.kernelUserDropped}`);
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
