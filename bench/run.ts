/**
 * The performance bench (npm run bench; root): this file is its entry, compiled
 * to bench/dist/bench/run.js (npx tsc -p bench, done by scripts/bench.sh); the
 * modes are bench/modes/*.ts, the harness bench/lib/*.ts. Topology: testbed/testbed.ts's
 * gateway → LB → 4 targets, in network namespaces. trafgen in the gateway
 * sends small UDP packets to the VIP; the LB either queues them to a daemon
 * (`-j NFQUEUE --queue-balance A:B`, daemon `flowlb --queue=A:B`) or lets the
 * kernel mark them by a hash of the 5-tuple (`-j HMARK`, the baseline); the
 * targets count and drop them. A daemon's figure is always the ratio of what
 * it delivered to what the kernel's own path delivered for the same packets
 * in the same run.
 *
 * Modes (arguments):
 *   (none)     the comparison: this project's daemon (each variant: see
 *              --ours-args) and the original nfqlb 1.2.0, all running (4
 *              queues each: 0:3, 4:7, ...), measured point by point in the
 *              same run with the same packets, pacing and baseline
 *              (COMPARE_POINTS: steady 100k and 200k packets/s, trafgen's
 *              bursts at 100k, one 5-tuple at 150k, IPv6, 5,000 and 10,000
 *              flows checked before the packets' flow, 10,000 flows with
 *              metrics scrapers + trace clients + idle control connections
 *              (bench/clients.ts), and Meridio's flowlb line on both sides);
 *              beside them the floor (../shared/reference/nullq, built into
 *              /tmp), and a latency probe (bench/probe.py) beside every run; daemon
 *              CPU µs per delivered packet in total and per thread (from
 *              /proc/PID/task/*\/stat, grouped by thread name). Without the
 *              original: ours only, said in one line. BENCH_QUICK=1: 1 s per
 *              run, one round.
 *   --ours-args="--opt=v ..."  (repeatable) the variants of this project's
 *              daemon to compare, each with these extra flowlb options
 *              (`--ours-args=` is the defaults). Without it: BENCH_WORKERS.
 *              A variant whose option `flowlb --help` does not list is
 *              skipped with one line.
 *   --detail   this project alone: rates 25k..max, IPv4 and IPv6, settings
 *              default/meridio/+hog; activation churn under 50k pps; RSS over
 *              60 s; TCP connections/s and round-trip latency.
 *   --sweep    the option sweeps behind the defaults (batch, qlength,
 *              rcvbuf, queues, processes); IPv4 at 100k pps and max.
 *   --profile  where the time goes at 100k pps: perf trace syscall summary,
 *              perf stat, perf record (kernel vs user), node --cpu-prof.
 *   --queue-memory  what a full queue costs the kernel, by qlength,
 *              SO_RCVBUF and frame size (the daemon stopped with SIGSTOP).
 *   --table=RESULT.json  prints the tables of a comparison already run.
 *
 * Environment: NFQLB_BIN ("ours": another nfqlb-compatible binary in place of
 * bin/nfqlb; also the one binary of --detail/--sweep/--profile),
 * NFQLB_ORIGINAL (the original nfqlb; default
 * ../shared/reference/nfqlb-1.2.0/nfqlb relative to the repository),
 * BENCH_QUICK=1, BENCH_SECONDS (per run), BENCH_REPEAT (rounds/runs per
 * point, median kept), BENCH_POINTS (comparison point ids, comma-separated),
 * BENCH_SETTINGS ("name=--opt=v --opt2=v;name2=..." instead of default and
 * meridio in --detail), BENCH_OUT (results directory), BENCH_WORKERS
 * (comparison: this project's variants, comma-separated, `default` = no
 * extra option, N = --workers=N, `cores` = --workers=<CPUs - 1>; default
 * "default,1,2"), BENCH_FLOOR (the floor's variants: `default`, nullq
 * options, `off`), NULLQ_SRC / NULLQ_BIN (the floor's source or a built
 * binary), BENCH_BURST_REPEAT (rounds of the burst points, default 5),
 * BENCH_PROBE_RATE (latency probe packets/s, default 500, 0 = off),
 * BENCH_QUEUES (queues per daemon, default 4, `cores`), BENCH_SWEEP (--sweep
 * groups; burst-defaults is the queue length / receive buffer / batch sweep
 * on the bursty 100k point).
 *
 * Results: a table on stdout, bench/results/<date>-<label>.json and .svg.
 * Everything made is removed at the end, also on failure or Ctrl-C.
 */
import { spawnSync } from 'node:child_process';
import * as tb from '../testbed/testbed';
import { buildBed } from './lib/bed';
import { argv, MODE, QUICK, REPEAT, say, SECONDS } from './lib/config';
import { Implementation } from './lib/impls';
import { machine } from './lib/results';
import { compareMode } from './modes/compare';
import { detailMode } from './modes/detail';
import { profileMode } from './modes/profile';
import { queueMemoryMode } from './modes/queue-memory';
import { sweepMode } from './modes/sweep';
import { tableMode } from './modes/table';

let cleaning: Promise<void> | null = null;
function cleanup(): Promise<void> {
  if (cleaning === null) cleaning = tb.cleanupAll();
  return cleaning;
}
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.on(sig, () => {
    process.stderr.write(`\nbench: ${sig}, cleaning up\n`);
    void cleanup().finally(() => process.exit(130));
  });
}

async function main(): Promise<void> {
  const table = argv.find((a) => a.startsWith('--table='));
  if (table !== undefined) {
    // The tables of a comparison already run (no root needed): node bench/dist/bench/run.js --table=RESULT.json
    tableMode(table.slice('--table='.length));
    return;
  }
  if (!tb.canUseNetns()) throw new Error('needs root and `ip netns` (network namespaces, NFQUEUE)');
  for (const tool of ['trafgen', 'iptables', 'ip6tables']) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) throw new Error(`${tool} is missing: run bash scripts/setup.sh`);
  }
  tb.noteTraceShm();
  const bed = buildBed();
  const m = machine();
  if (MODE === 'compare') {
    say(`bench: comparison${QUICK ? ', quick' : ''}; ${SECONDS} s per run, ${REPEAT} round(s) per point`);
    say(`machine: ${m.nproc} CPUs, ${m.cpu}, kernel ${m.kernel}, node ${m.node}, ${m.trafgen}`);
    await compareMode(bed);
    return;
  }
  const impl = new Implementation(bed);
  // Its fragment statistics go to a file of its own that cleanup removes, not the machine's /dev/shm/ftshm.
  if (impl.supports('ft_shm')) impl.daemonArgs.push(`--ft_shm=${tb.uniqueShmName('ft-bench')}`);
  say(`bench: ${impl.label} (${impl.bin}, ${impl.version}); mode ${MODE}${QUICK ? ', quick' : ''}; ${SECONDS} s per run, ${REPEAT} run(s) per point`);
  say(`machine: ${m.nproc} CPUs, ${m.cpu}, kernel ${m.kernel}, node ${m.node}, ${m.trafgen}`);
  if (MODE === 'sweep') await sweepMode(bed, impl);
  else if (MODE === 'profile') await profileMode(bed, impl);
  else if (MODE === 'queue-memory') await queueMemoryMode(bed, impl);
  else await detailMode(bed, impl);
}

main()
  .then(
    () => 0,
    (err: Error) => {
      process.stderr.write(`bench failed: ${err && err.stack ? err.stack : err}\n`);
      return 1;
    },
  )
  .then(async (code) => {
    await cleanup();
    process.exit(code);
  });
