/**
 * `nfqlb flowlb` and `nfqlb lb`: the daemon. Prints nfqlb's start-up lines,
 * runs until SIGTERM/SIGINT (exit 0), and exits non-zero with one line saying
 * why on a fatal error.
 */
import { randomInt } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { UsageError } from '../../base/errors';
import { Daemon, type DaemonOptions } from '../../daemon/daemon';
import { checkInspectorClosed, installSignalLogging } from '../../daemon/processguard';
import { parseQueues } from '../queues';
import { DEFAULT_TRACE_ADDRESS, flowAddress } from '../../services/control';
import { DEFAULT_METRICS_ADDRESS, parseMetricsAddress } from '../../services/metrics';
import { parseAddress } from '../../services/control';
import { atoi } from '../../base/catoi';
import { CT_ENTRY_BYTES, type ConnTrackOptions } from '../../datapath/conntrack';
import { createLogger } from '../../base/log';
import { armStopWatchdog } from '../../addon/process';
import { openTraceShmForDaemon, closeTraceShm, shmObjectName } from '../../addon/shm';
import { defaultText, EXTENSION, OPTIONS_ENV, out, type NfqlbCommand, type ParsedArgs, type Options } from '../command';
import { DEFAULT_QLENGTH } from '../../addon/queue';

const str = (describe: string, dflt?: string, extra: Partial<Options> = {}): Options => ({ type: 'string', describe, default: dflt, ...extra });
const SHM: Partial<Options> = { values: 'shm' };
/** An option nfqlb does not have (see command.ts). */
const ext = (spec: Options): Options => ({ ...spec, group: EXTENSION });

// Help texts are nfqlb's, word for word (sic); defaults are nfqlb's.
const common: Record<string, Options> = {
  queue: str('NF-queues to listen to (default 2)', '2'),
  // nfqlb's text; without --qlength the daemon takes the longer DEFAULT_QLENGTH (docs/differences.md).
  qlength: str('Lenght of queues (default 1024)', undefined, { defaultDescription: String(DEFAULT_QLENGTH) }),
  mtu: str('MTU. At least the mtu of the ingress device', '1500'),
  lbshm: str('Lb shared memory', undefined, SHM),
  tun: str('Tun device for re-inject fragments'),
  reassembler: str('Reassembler size. default=0', '0'),
  notargets_fwmark: str('Set when there are no targets', '-1'),
  hash_mode: str('Load balance with a different hash mode. 0: Tuple-5, 1: SCTP Ports only. default=1', '1', { values: { words: ['0', '1'] } }),
  ft_shm: str('Frag table; shared memory stats', 'ftshm', SHM),
  ft_size: str('Frag table; size', '500'),
  ft_buckets: str('Frag table; extra buckets', '500'),
  ft_frag: str('Frag table; stored frags', '100', { defaultDescription: '100(0 without --tun)' }),
  ft_ttl: str('Frag table; ttl milliS', '200'),
  trace_address: str('Trace server address', DEFAULT_TRACE_ADDRESS),
  fail_open: ext({ type: 'boolean', describe: 'Accept packets when the queue is full instead of dropping them (NFQA_CFG_F_FAIL_OPEN)' }),
  batch: ext(str('Most packets handled per receive', '64')),
  rcvbuf: ext(str('Socket receive buffer, bytes (default qlength*mtu/2)', undefined, { defaultDescription: 'qlength*mtu/2' })),
  metrics_address: ext(str('Prometheus endpoint HOST:PORT (/metrics, /healthz, /readyz), or off', DEFAULT_METRICS_ADDRESS, { values: { words: ['off'] } })),
  workers: ext(str('Packet threads; the queues are split over them. 0 or 1: one event loop for everything (default: one per queue, at most the CPUs available less one, and at least one)', undefined, { defaultDescription: 'min(queues,CPUs-1)' })),
  conntrack: ext(str(`Remember up to N connections and keep each on its target while that target is active, so a new target moves no open connection (${CT_ENTRY_BYTES} bytes each, allocated at start; 0: off, stateless as nfqlb)`, '0')),
  conntrack_ttl: ext(str('Seconds a TCP or SCTP connection is remembered without a packet', '3600')),
  conntrack_udp_ttl: ext(str('Seconds a UDP, ICMP or other connection is remembered without a packet', '120')),
};

/** --conntrack: at most this many entries (about 8 GiB). */
const MAX_CONNTRACK = 100_000_000;

/**
 * The packet threads for --workers (DaemonOptions.workers; 0: the single
 * loop). Given: a number 0..1024, where 0 and 1 both mean the single loop
 * (kept for comparison) and N ≥ 2 means N threads. Left out: one thread per
 * queue, up to the CPUs the process may use less one, and at least one.
 *
 * Why one CPU is left: a packet thread's cost per packet is mostly the kernel
 * forwarding done inside its verdict send, plus a fixed cost per wake-up
 * (epoll, the call into JavaScript, the receive). Threads woken for a share of
 * the packets each pay that fixed cost on smaller batches: on 2 CPUs at 100k
 * packets/s, two threads used 7.5 µs per packet, one thread 6.2 µs, nfqlb 7.1
 * (docs/performance.md, the run of record). The CPU left over is the main
 * thread's (control, metrics, trace) and the softirq work of the traffic
 * itself; one thread still delivers the bench's 200k packets/s point here.
 */
export function workerCount(text: string | undefined, queues: number, cpus: number = usableCpus()): number {
  if (text === undefined) return Math.max(1, Math.min(queues, cpus - 1));
  if (!/^\d+$/.test(text) || Number(text) > 1024) throw new UsageError(`Invalid --workers=${text}: use a number from 0 to 1024`);
  const n = Number(text);
  return n < 2 ? 0 : n;
}

function readOrNull(path: string): string | null {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return null;
  }
}

/**
 * The CPUs this process may use: the affinity mask (availableParallelism),
 * capped by a cgroup CPU quota, rounded down (at least 1). Node 20's libuv
 * reads only the affinity mask, but a container's CPU limit (Kubernetes
 * `limits.cpu`) is a quota: 4 packet threads beside the main thread on a
 * 1-CPU quota would be throttled instead of batching. cgroup v2: cpu.max of
 * the process's cgroup and every parent; v1: the cpu controller's
 * cpu.cfs_quota_us / cpu.cfs_period_us. Unreadable files mean no limit.
 */
export function usableCpus(read: (path: string) => string | null = readOrNull, affinity: number = availableParallelism()): number {
  let cpus = affinity;
  const limit = (quota: number, period: number): void => {
    if (Number.isFinite(quota) && Number.isFinite(period) && quota > 0 && period > 0) cpus = Math.min(cpus, Math.max(1, Math.floor(quota / period)));
  };
  for (const line of (read('/proc/self/cgroup') ?? '').split('\n')) {
    const m = /^\d+:([^:]*):(\/.*)$/.exec(line);
    if (m === null) continue;
    const [, controllers, cgroupPath] = m;
    if (controllers === '') {
      // v2: every level of the hierarchy can limit.
      for (let p = cgroupPath; ; p = p.slice(0, p.lastIndexOf('/')) || '/') {
        const max = (read(`/sys/fs/cgroup${p === '/' ? '' : p}/cpu.max`) ?? '').trim().split(/\s+/);
        if (max.length === 2 && max[0] !== 'max') limit(Number(max[0]), Number(max[1]));
        if (p === '/') break;
      }
    } else if (controllers.split(',').includes('cpu')) {
      for (const mount of new Set([controllers, 'cpu'])) {
        const dir = `/sys/fs/cgroup/${mount}${cgroupPath === '/' ? '' : cgroupPath}`;
        const quota = read(`${dir}/cpu.cfs_quota_us`);
        if (quota === null) continue;
        limit(Number(quota.trim()), Number((read(`${dir}/cpu.cfs_period_us`) ?? '').trim()));
        break;
      }
    }
  }
  return cpus;
}

/** nfqlb's option tables, in their order (which decides help lines and getopt's ambiguity messages). */
const FLOWLB_ORDER = ['lbshm', 'mtu', 'tun', 'reassembler', 'promiscuous_ping', 'notargets_fwmark', 'nolb_fwmark', 'hash_mode', 'queue', 'qlength', 'ft_shm', 'ft_size', 'ft_buckets', 'ft_frag', 'ft_ttl', 'trace_address'];
const LB_ORDER = ['mtu', 'tun', 'reassembler', 'sctp_encap', 'tshm', 'lbshm', 'notargets_fwmark', 'hash_mode', 'queue', 'qlength', 'ft_shm', 'ft_size', 'ft_buckets', 'ft_frag', 'ft_ttl', 'trace_address'];

/** `options` with the keys in `order` first, in that order; the rest follow as they are. */
function inOrder(order: string[], options: Record<string, Options>): Record<string, Options> {
  const ordered: Record<string, Options> = {};
  for (const k of order) if (options[k] !== undefined) ordered[k] = options[k];
  return { ...ordered, ...options };
}

/** --metrics_address: off disables; anything else must parse as HOST:PORT. */
function metricsAddress(text: string): string | null {
  if (text === 'off') return null;
  try {
    parseMetricsAddress(text);
  } catch (err) {
    throw new UsageError((err as Error).message, 1, 'NFQLB_ERR_USAGE', { cause: err });
  }
  return text;
}

/** A control or trace address, checked before anything is bound (one line on failure). */
function checkedAddress(address: string): string {
  try {
    parseAddress(address);
  } catch (err) {
    throw new UsageError((err as Error).message, 1, 'NFQLB_ERR_USAGE', { cause: err });
  }
  return address;
}

/** --reassembler: its descriptors are preallocated (20 bytes each), so a typo must not ask for gigabytes. */
const MAX_REASSEMBLER = 1 << 24;

/** --ft_shm: a name shm_open takes (one line on failure, before anything is bound). */
function ftShmName(name: string): string {
  try {
    shmObjectName(name);
  } catch (err) {
    throw new UsageError(`Invalid --ft_shm: ${(err as Error).message}`, 1, 'NFQLB_ERR_USAGE', { cause: err });
  }
  return name;
}

function int(args: ParsedArgs, name: string): number {
  const v = args[name];
  return v === undefined ? NaN : atoi(String(v));
}

function positiveInt(args: ParsedArgs, name: string, min: number, max: number): number {
  const text = String(args[name]);
  const n = Number(text);
  if (!/^\d+$/.test(text) || n < min || n > max) throw new UsageError(`Invalid --${name}=${text}: use a number from ${min} to ${max}`);
  return n;
}

function daemonOptions(mode: 'flowlb' | 'lb', args: ParsedArgs): DaemonOptions {
  const mtu = int(args, 'mtu');
  if (!(mtu >= 576)) throw new UsageError(`Invalid MTU; ${Number.isNaN(mtu) ? String(args.mtu) : mtu}`);
  if (mtu > 65535) throw new UsageError(`Invalid MTU; ${mtu} (at most 65535)`);
  // nfqlb keeps copies of out-of-order fragments only when it can re-inject them (--tun); else ft_frag is 0.
  const tun = args.tun === undefined ? undefined : String(args.tun);
  const ftFrag = tun === undefined ? 0 : Math.max(0, int(args, 'ft_frag'));
  const reassembler = int(args, 'reassembler');
  if (reassembler > MAX_REASSEMBLER) throw new UsageError(`Invalid --reassembler=${String(args.reassembler)}: at most ${MAX_REASSEMBLER} hole descriptors (a few per datagram in flight are enough)`);
  const hashMode = int(args, 'hash_mode');
  let queues: number[];
  try {
    queues = parseQueues(String(args.queue));
  } catch (err) {
    throw new UsageError((err as Error).message, 1, 'NFQLB_ERR_USAGE', { cause: err });
  }
  const workers = workerCount(args.workers === undefined ? undefined : String(args.workers), queues.length);
  // Every packet thread has a store of its own, so the bound is on all of them together.
  const stores = Math.max(1, Math.min(workers, queues.length));
  if (ftFrag * mtu * stores > 1 << 30) {
    const each = stores > 1 ? ` in each of ${stores} packet threads` : '';
    throw new UsageError(`Invalid --ft_frag=${String(args.ft_frag)}: ${ftFrag} copies of --mtu=${mtu} bytes${each} exceed 1 GiB`);
  }
  const rcvbuf = args.rcvbuf === undefined ? undefined : positiveInt(args, 'rcvbuf', 4096, 1 << 30);
  return {
    mode,
    queues,
    qlength: args.qlength === undefined ? DEFAULT_QLENGTH : positiveInt(args, 'qlength', 1, 1 << 20),
    mtu,
    batchSize: positiveInt(args, 'batch', 1, 1024),
    failOpen: args.fail_open === true,
    rcvbuf,
    promiscuousPing: args.promiscuous_ping === true,
    pipeline: {
      hashMode: hashMode === 0 ? 0 : 1,
      notargetsFwmark: int(args, 'notargets_fwmark'),
      nolbFwmark: mode === 'flowlb' ? int(args, 'nolb_fwmark') : -1,
      fragmentCapacity: Math.max(1, int(args, 'ft_size') + int(args, 'ft_buckets')),
      fragmentHashSize: Math.max(1, int(args, 'ft_size')),
      // A random seed, so nobody outside can aim fragment ids at one hash chain.
      fragmentSeed: randomInt(0x7fffffff),
      fragmentTtlMs: Math.max(1, int(args, 'ft_ttl')),
      fragmentStoreSlots: ftFrag,
      fragmentStoreSlotBytes: mtu,
      reassemblerSize: reassembler > 0 ? reassembler : 0,
      sctpEncap: mode === 'lb' ? int(args, 'sctp_encap') & 0xffff : 0,
    },
    tshm: mode === 'lb' ? String(args.tshm) : undefined,
    lbshm: args.lbshm === undefined ? undefined : String(args.lbshm),
    // Checked in nfqlb's order: the trace address first. lb has no control
    // socket, so NFQLB_FLOW_ADDRESS matters (and is checked) only for flowlb.
    traceAddress: checkedAddress(String(args.trace_address)),
    flowAddress: mode === 'flowlb' ? checkedAddress(flowAddress()) : flowAddress(),
    metricsAddress: metricsAddress(String(args.metrics_address)),
    flowsFile: args.flows_file === undefined || args.flows_file === '' ? undefined : String(args.flows_file),
    tun,
    ftShm: ftShmName(String(args.ft_shm)),
    workers,
    conntrack: conntrackOptions(args),
  };
}

function conntrackOptions(args: ParsedArgs): ConnTrackOptions | undefined {
  const capacity = positiveInt(args, 'conntrack', 0, MAX_CONNTRACK);
  if (capacity === 0) return undefined;
  return {
    capacity,
    streamTtlMs: 1000 * positiveInt(args, 'conntrack_ttl', 1, 30 * 86400),
    otherTtlMs: 1000 * positiveInt(args, 'conntrack_udp_ttl', 1, 30 * 86400),
  };
}

/** After a stop signal the process is gone within this time, whatever still holds the event loop. */
const EXIT_DEADLINE_MS = 900;
/** Until then the JavaScript stop has this long to unbind the queues and close the sockets. */
const STOP_DEADLINE_MS = 750;
/** Exit code of a stop that did not finish in time (a thread stuck, or the stop itself): the queues were not unbound cleanly. */
export const EXIT_STOP_TIMEOUT = 71;

/**
 * daemonOptions(), with a bad value that came from $NFQLB_OPTIONS said to
 * be there: when the same line without the variable's options is good, the
 * variable is what was wrong.
 */
function checkedDaemonOptions(mode: 'flowlb' | 'lb', args: ParsedArgs): DaemonOptions {
  try {
    return daemonOptions(mode, args);
  } catch (err) {
    if (!(err instanceof UsageError) || args.fromEnv === undefined) throw err;
    const without: ParsedArgs = { ...args, ...args.fromEnv, fromEnv: undefined };
    try {
      daemonOptions(mode, without);
    } catch {
      throw err;
    }
    throw new UsageError(`${OPTIONS_ENV}: ${err.message} (${OPTIONS_ENV}=${process.env[OPTIONS_ENV]?.trim()})`, err.exitCode, 'NFQLB_ERR_USAGE', { cause: err });
  }
}

/**
 * After the option lines of `flowlb -h`/`lb -h` (whose texts are nfqlb's,
 * word for word): the defaults this daemon really uses, and the variable.
 */
function helpTail(options: Record<string, Options>): () => string {
  return () => {
    const defaults = Object.entries(options)
      .map(([name, spec]): string | null => {
        // This machine's number, where the reference says CPUs-1.
        if (name === 'workers') return `--workers=min(queues,${Math.max(1, usableCpus() - 1)})`;
        const text = defaultText(spec);
        return text === undefined ? null : `--${name}=${text}`;
      })
      .filter((d): d is string => d !== null);
    const lines: string[] = [];
    for (const d of defaults) {
      if (lines.length === 0 || lines[lines.length - 1].length + d.length > 96) lines.push(`  ${d}`);
      else lines[lines.length - 1] += ` ${d}`;
    }
    const extensions = Object.entries(options).filter(([, spec]) => spec.group === EXTENSION && spec.hidden !== true).map(([name]) => `--${name}`);
    const example = options.flows_file !== undefined ? '--metrics_address=192.0.2.10:9657 --flows_file=/var/lib/nfqlb/flows' : '--metrics_address=192.0.2.10:9657';
    return (
      `Defaults of nfqlb-ts (where nfqlb's texts above say otherwise, these hold):\n${lines.join('\n')}\n` +
      `${OPTIONS_ENV}: the options nfqlb lacks (${extensions.join(' ')})\n` +
      `  can also be given here, as words: ${OPTIONS_ENV}="${example}"\n` +
      '  Only those; the command line wins over it.\n'
    );
  };
}

async function runDaemon(mode: 'flowlb' | 'lb', args: ParsedArgs): Promise<number> {
  const options = checkedDaemonOptions(mode, args);
  const traceShm = openTraceShmForDaemon();
  const log = createLogger(traceShm.trace.level);
  if (traceShm.shared) closeTraceShm(traceShm.trace);

  // Signals are caught from here on, so one that arrives during start-up
  // still ends in an orderly stop (queues unbound) and exit 0.
  let pending: string | null = null;
  let onStop: ((signal: string) => void) | null = null;
  const onSignal = (signal: string): void => {
    if (onStop !== null) onStop(signal);
    else pending ??= signal;
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  // After process.on, so libuv's handler is in place to be chained to. This one works even when
  // every JavaScript thread is stuck in a system call, where no timer below would run.
  armStopWatchdog(EXIT_DEADLINE_MS, EXIT_STOP_TIMEOUT,
    `nfqlb: stop did not finish within ${EXIT_DEADLINE_MS} ms (a thread stuck in a system call, or still busy starting); exited ${EXIT_STOP_TIMEOUT} without unbinding the queues cleanly\n`);
  installSignalLogging(log);
  checkInspectorClosed();

  const p = options.pipeline;
  out(`FragTable; size=${int(args, 'ft_size')}, buckets=${int(args, 'ft_buckets')}, frag=${p.fragmentStoreSlots ?? 0}, mtu=${options.mtu}, ttl=${p.fragmentTtlMs}\n`);
  let daemon: Daemon;
  try {
    daemon = new Daemon(options, log);
    await daemon.start();
  } catch (err) {
    process.off('SIGTERM', onSignal);
    process.off('SIGINT', onSignal);
    // One JSON line for log pipelines; main() then prints nfqlb's one human line.
    log.fatal({ err: (err as Error).message, code: (err as { code?: unknown }).code }, 'start failed');
    throw err;
  }

  // A packet thread that died leaves its queues unanswered: fail loudly,
  // so whatever runs the daemon restarts it, rather than serve part of the traffic.
  daemon.onFatal = (err: Error): void => {
    process.stderr.write(`nfqlb: ${err.message}\n`);
    daemon.stop().finally(() => process.exit(70));
    setTimeout(() => process.exit(70), EXIT_DEADLINE_MS).unref();
  };

  // A bug that throws on the packet path must not leave a half-working
  // daemon: one line saying what happened, queues unbound, exit non-zero.
  process.on('uncaughtException', (err: Error) => {
    log.fatal({ err }, 'internal error');
    process.stderr.write(`nfqlb: internal error: ${err.message}\n`);
    for (const q of daemon.queues) {
      try {
        q.close();
      } catch {
        // Exiting anyway.
      }
    }
    process.exit(70);
  });

  return new Promise<number>((resolve) => {
    let stopping = false;
    onStop = (signal: string): void => {
      if (stopping) return;
      stopping = true;
      log.notice({ signal }, 'stopping');
      let stopped = false;
      setTimeout(() => {
        // A finished stop whose process lingers (a handle still open) is still a clean one.
        if (stopped) process.exit(process.exitCode ?? 0);
        process.stderr.write(`nfqlb: stop did not finish within ${STOP_DEADLINE_MS} ms; exited ${EXIT_STOP_TIMEOUT} without unbinding the queues cleanly\n`);
        process.exit(EXIT_STOP_TIMEOUT);
      }, STOP_DEADLINE_MS).unref();
      daemon.stop().then(
        () => {
          stopped = true;
          resolve(0);
        },
        (err: Error) => {
          log.error({ err: err.message }, 'stop failed');
          resolve(1);
        },
      );
    };
    if (pending !== null) onStop(pending);
  });
}

const FLOWLB_OPTIONS = inOrder(FLOWLB_ORDER, {
  ...common,
  promiscuous_ping: { type: 'boolean', describe: 'Accept ping on any flow with an address match' },
  nolb_fwmark: str('Set when there is no matching LB', '-1'),
  flows_file: ext(str('Keep flows and trace-flows in this file across restarts (off by default)', undefined, { values: 'file' })),
});
const LB_OPTIONS = inOrder(LB_ORDER, {
  ...common,
  tshm: str('Target shared memory', 'nfqlb', SHM),
  sctp_encap: str('SCTP UDP encapsulation port. default=0', '0'),
});

export const lbCommands: NfqlbCommand[] = [
  {
    name: 'flowlb',
    describe: 'Load-balance with flows',
    usage: 'flowlb [options]\n  Load-balance with flows',
    options: FLOWLB_OPTIONS,
    helpTail: helpTail(FLOWLB_OPTIONS),
    envOptions: true,
    run: (args) => runDaemon('flowlb', args),
  },
  {
    name: 'lb',
    describe: 'Load-balance over one table, no flows',
    usage: 'lb [options]\n  Load-balance',
    options: LB_OPTIONS,
    helpTail: helpTail(LB_OPTIONS),
    envOptions: true,
    run: (args) => runDaemon('lb', args),
  },
];
