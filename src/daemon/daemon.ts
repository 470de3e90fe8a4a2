/**
 * The daemon behind `nfqlb flowlb` and `nfqlb lb`: binds the queues, runs the
 * pipeline on every batch, and serves the control socket. Where the verdict is
 * sent: `handleBatch` fills `batch.verdicts`, and the addon sends them all in
 * one message when it returns (see queue.ts).
 *
 * With `workers` 0 all queues of `--queue=A:B` are served by this one event
 * loop: decisions are a few hundred nanoseconds of JavaScript, and the kernel
 * work of forwarding an accepted packet happens inside the verdict send, so one
 * thread already keeps a core busy (numbers in docs/performance.md). With
 * `workers` ≥ 1 the queues are served by packet threads (packetthread.ts) and
 * this thread keeps control, metrics, trace server, logs and the flows file;
 * every accepted flow change is answered only once every thread uses it.
 */
import * as inspector from 'node:inspector';
import { performance } from 'node:perf_hooks';
import { errnoName, NfqlbError } from '../base/errors';
import { bytesToText } from '../services/control';
import { flowCmdFromFields, type FlowCmd } from '../flows/fields';
import { FlowSet } from '../flows/flowset';
import type { Logger } from '../base/log';
import { DEFAULT_PIPELINE_OPTIONS, fragmentGeometry, Pipeline, type FragmentGeometry, type PipelineOptions } from '../datapath/pipeline';
import { PacketQueue, VERDICT_DROP, type QueueBatch } from '../addon/queue';
import { openTraceShmForDaemon, closeTraceShm, shmFaultCounter, type TraceShm } from '../addon/shm';
import { daemonTableOwners, openTable, trustTableOwners } from '../tables/tablefile';
import { ServedTable, type TableFault, type TableFaultListener } from '../tables/servedtable';
import { Target, TargetRegistry, type TableSource } from '../tables/targets';
import { startControlServer, type ControlReply, type ControlRequest, type ControlServer } from '../services/control';
import { BatchSizeHistogram, KeyCounter, LabeledCounter } from '../base/counters';
import { FlowsJournal, FlowsRecord, loadFlowsFile, type FlowsFileContent } from './flowsfile';
import { applyFlowChange } from '../flows/change';
import { RateLimitedLog, escapeBytes } from '../base/ratelog';
import { pinoLevel } from '../base/log';
import { startMetricsServer, type FlowCount, type MetricsServer, type MetricsSource } from '../services/metrics';
import { REASON_FRAGMENT_LOST, REASON_FRAGMENT_MISS, REASON_FRAGMENT_TABLE_FULL, REASON_INVALID, REASON_NAMES } from '../datapath/pipeline';
import { TraceServer, TRACE_FLOW_CONF, TRACE_TARGET } from '../services/trace';
import { closeTun, openTun, tunWriteErrorText, type TunDevice } from '../addon/tun';
import { FSTORE_EVENT_NAMES, FSTORE_FIELDS, FSTORE_IN_USE, FSTORE_WRITE_ERRORS } from '../fragments/store';
import { FRAG_STATS_FIELDS, fragStatsOf, FS_REASSEMBLER_FULL, sumFragmentStats } from '../fragments/table';
import { ConnTable, CT_ENTRY_BYTES, CT_STAT_FIELDS, CT_STAT_NAMES, entriesPerTable, sumConnStats, type ConnTrackOptions } from '../datapath/conntrack';
import { djb2Bits, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, KEY_LEN, tupleKey } from '../packet/hashkey';
import { inetPton6 } from '../base/inet';
import { FragStatsWriter, type FragStats } from '../fragments/stats';
import { CONNTRACK_SWEEP_BUDGET, makeBatchHandler, type FlowOp, type TraceSink } from './packetthread';
import { PacketThreads } from './packetthreads';
import { sumThreadCounters } from './threadcounters';
import type { QueueStats } from '../addon/queue';

/** How often open tables are checked for having been re-created (ms). */
export const TABLE_CHECK_INTERVAL_MS = 1000;
/** How often counted failures (queue errors, bad packets, refusals) are turned into log lines (ms). */
export const HOUSEKEEPING_INTERVAL_MS = 1000;

/**
 * Signals that would kill (or core-dump) a Node.js process by default, or
 * open its inspector (SIGUSR1), and mean nothing to the daemon: each is
 * logged (at most once a second per signal, with a count) and ignored.
 * SIGTERM and SIGINT stop the daemon (lb.ts). SIGKILL and SIGSTOP cannot be
 * caught; SIGSEGV/SIGBUS/SIGILL/SIGFPE from a real fault are not survivable.
 */
export const LOGGED_SIGNALS: readonly NodeJS.Signals[] = ['SIGHUP', 'SIGQUIT', 'SIGPIPE', 'SIGUSR1', 'SIGUSR2'];

/**
 * Installs the handlers of LOGGED_SIGNALS. Returns a function that removes
 * them again (the no-op SIGUSR1 listener of bin/nfqlb stays, so the inspector
 * can still not be opened). The log line is rate-limited: a SIGPIPE storm
 * from a closed stderr cannot turn into a logging loop.
 */
export function installSignalLogging(log: Logger): () => void {
  const lines = new RateLimitedLog((signal, count) => log.warn({ signal, count }, 'signal ignored'));
  const timer = setInterval(() => lines.flush(), HOUSEKEEPING_INTERVAL_MS);
  timer.unref();
  const handlers = LOGGED_SIGNALS.map((signal) => {
    const h = (): void => lines.note(signal);
    process.on(signal, h);
    return [signal, h] as const;
  });
  return () => {
    clearInterval(timer);
    for (const [signal, h] of handlers) process.off(signal, h);
  };
}

/**
 * Refuses to run the daemon with the Node.js inspector open (NODE_OPTIONS
 * with --inspect, or a SIGUSR1 that arrived before bin/nfqlb installed its
 * listener): anyone who can connect to it runs code as the daemon.
 * NFQLB_ALLOW_INSPECTOR=1 allows it for debugging. Throws NfqlbError
 * NFQLB_ERR_INSPECTOR.
 */
export function checkInspectorClosed(env: NodeJS.ProcessEnv = process.env): void {
  const url = inspector.url();
  if (url === undefined || env.NFQLB_ALLOW_INSPECTOR === '1') return;
  throw new NfqlbError(
    `the Node.js inspector is open (${url}): anyone who can connect to it can run code in the daemon; ` +
      'remove --inspect* from NODE_OPTIONS and the node command line, or set NFQLB_ALLOW_INSPECTOR=1 to debug',
    'NFQLB_ERR_INSPECTOR',
  );
}

/** A refusal text of the control server as a bounded metric label. */
export function refusalReason(why: string): string {
  if (why.startsWith('timeout')) return 'timeout';
  if (why.includes('larger than')) return 'too_large';
  if (why.includes('line longer')) return 'line_too_long';
  if (why.includes('invalid param')) return 'invalid_param';
  if (why.startsWith('internal error')) return 'internal_error';
  return 'other';
}

/** Ended flows kept for the next scrape at most (a churn of flows with no scraper must not grow memory). */
const MAX_ENDED_FLOWS = 4096;

// The queue counters of the addon by reason, declared with QueueStats.
import { QUEUE_ERROR_FIELDS, VERDICT_ERROR_REASONS } from '../addon/queue';

export interface DaemonOptions {
  mode: 'flowlb' | 'lb';
  queues: number[];
  qlength: number;
  /** Copy range, bytes (nfqlb's --mtu). */
  mtu: number;
  batchSize: number;
  failOpen: boolean;
  rcvbuf?: number;
  promiscuousPing: boolean;
  pipeline: Partial<PipelineOptions<Table>>;
  /** --conntrack (off when absent): the connection table's entries in all and idle times. */
  conntrack?: ConnTrackOptions;
  /** lb: the one table. */
  tshm?: string;
  /** --lbshm: the LB-tier table for fragments. */
  lbshm?: string;
  flowAddress: string;
  traceAddress: string;
  /** HOST:PORT of the Prometheus endpoint, or null for none. */
  metricsAddress: string | null;
  /** Milliseconds between checks for re-created tables (default TABLE_CHECK_INTERVAL_MS; 0: never). */
  tableCheckMs?: number;
  /** --flows_file: where flows and trace-flows are kept across restarts (undefined: nowhere, as nfqlb). */
  flowsFile?: string;
  /** The journal is compacted once its records pass this many bytes (and COMPACT_FACTOR × the snapshot); tests make it small. */
  flowsFileCompactBytes?: number;
  /**
   * --tun: the existing tun device kept out-of-order fragments are re-injected
   * through (pipeline.fragmentStoreSlots > 0 keeps them). Opened once by
   * start(); its fd (`tunFd`) is what every batch handler writes with.
   */
  tun?: string;
  /** --ft_shm: the shm the fragment statistics are written to, in nfqlb's layout (undefined: none). */
  ftShm?: string;
  /**
   * Packet threads (the CLI's --workers maps onto this, see workerCount()).
   * 0 (or left out): every queue on this event loop, as before threads
   * existed. N ≥ 1: min(N, queues) threads, the queues split round robin.
   */
  workers?: number;
}

/** A queue as the daemon's views see it: its own PacketQueue, or one a packet thread holds. */
export type QueueView = Pick<PacketQueue, 'queueNum' | 'portid' | 'closed' | 'stats' | 'close'>;

type Table = ServedTable;

/** Tables come from /dev/shm, read-only. A table that cannot be opened is logged and reported as missing. */
function shmTables(log: Logger, trace: (bit: number, text: string) => void, onFault: TableFaultListener, onOpenFailed: (name: string, why: string) => void): TableSource<Table> {
  return {
    open(name) {
      try {
        const file = bytesToText(name);
        const table = new ServedTable(file, openTable(file), onFault);
        trace(TRACE_TARGET, `Creating LB; ${name}\n`);
        log.debug({ target: file, activeTargets: activeCount(table) }, 'table opened');
        return table;
      } catch (err) {
        trace(TRACE_TARGET, `Map shm failed; ${name}\n`);
        // Something planted under the name is a fault to count, not just a table that is not there yet.
        if (err instanceof NfqlbError && err.code === 'NFQLB_ERR_NOT_FILE') onFault(bytesToText(name), 'not_file', err.message);
        else if (err instanceof NfqlbError && err.code === 'NFQLB_ERR_SHM_OWNER') onFault(bytesToText(name), 'not_owner', err.message);
        else onOpenFailed(bytesToText(name), (err as Error).message);
        return null;
      }
    },
    close(name, table) {
      trace(TRACE_TARGET, `Delete load-balancer; ${name}\n`);
      log.debug({ target: bytesToText(name) }, 'table released');
      table.close();
    },
  };
}

/** The 40-byte hash key of a connection named in a `conntrack` request, as classify() would build it; null when a field is missing or wrong. */
function connectionKey(req: ControlRequest): Uint8Array | null {
  const proto = { tcp: IPPROTO_TCP, udp: IPPROTO_UDP, sctp: IPPROTO_SCTP }[req.protocols ?? ''];
  const src = new Uint8Array(16);
  const dst = new Uint8Array(16);
  const sport = Number(req.sports);
  const dport = Number(req.dports);
  if (proto === undefined || !inetPton6(req.srcs ?? '', src) || !inetPton6(req.dsts ?? '', dst)) return null;
  if (!(Number.isInteger(sport) && sport >= 0 && sport <= 65535 && Number.isInteger(dport) && dport >= 0 && dport <= 65535)) return null;
  return tupleKey(src, sport, dst, dport, proto);
}

/** An error (or one it wraps) that says a name was not a regular file (src/base/regularfile.ts). */
function isNotFile(err: unknown): boolean {
  for (let e = err; e instanceof Error; e = e.cause) if (e instanceof NfqlbError && e.code === 'NFQLB_ERR_NOT_FILE') return true;
  return false;
}

/** Active slots of a table now (a loop over N, at most 10000: per scrape or per second, never per packet). */
function activeCount(table: Table): number {
  let active = 0;
  const slots = table.active;
  for (let i = 0; i < slots.length; i++) if (slots[i] >= 0) active++;
  return active;
}

/** How long the lines of one table losing or regaining its targets are held back after one was written (ms). */
export const TARGETS_LOG_INTERVAL_MS = 10_000;

/** Control actions as metric labels; anything a client invents counts as "unknown". */
const CONTROL_ACTIONS = new Set(['set', 'delete', 'list', 'list-names', 'trace-set', 'trace-delete', 'trace-list', 'trace-list-names', 'conntrack']);

export class Daemon {
  readonly flows: FlowSet<Target<Table>>;
  readonly traceFlows: FlowSet<string>;
  readonly targets: TargetRegistry<Table>;
  readonly pipeline: Pipeline<Table>;
  readonly queues: QueueView[] = [];
  /** Accepted / dropped packets per queue index (folded into metrics when scraped). */
  readonly accepted: Float64Array;
  readonly dropped: Float64Array;
  readonly batchSizes = new BatchSizeHistogram();
  readonly controlRequests = new LabeledCounter();
  /** Flows deleted or replaced since the last scrape, with their last count (MetricsSource.endedFlows). */
  private endedFlows: FlowCount[] = [];
  /** Refused control requests by reason (nfqlb_control_refused_total). */
  readonly controlRefused = new KeyCounter();
  /** Failed writes of --flows_file. */
  flowsFileErrors = 0;
  /** At most one line per second per kind of failure, with a count. */
  readonly failures: RateLimitedLog;
  /** Whether each table had an active target at the last check ('lost': had some, has none now). */
  private readonly targetState = new Map<string, 'active' | 'lost' | 'never'>();
  /** Lines of tables losing their last target and getting one back, at most one per table and kind per TARGETS_LOG_INTERVAL_MS. */
  private readonly targetLines: RateLimitedLog;
  private flowsRecord: FlowsRecord | null = null;
  /** --flows_file's writer (null without the option, or before start). */
  flowsJournal: FlowsJournal | null = null;
  private housekeeping: NodeJS.Timeout | null = null;
  /** Last values seen by housekeeping, to log only what is new. */
  private readonly seenReasons = new Float64Array(REASON_NAMES.length);
  private seenQueueErrors: number[][] = [];
  private control: ControlServer | null = null;
  private tracer: TraceServer | null = null;
  private metrics: MetricsServer | null = null;
  private started = false;
  private trace: TraceShm | null = null;
  private traceShared = false;
  private fixed: Target<Table> | null = null;
  /** --lbshm: the object the pipeline reads. */
  private tier: { table: Table; readonly ownFwmark: number } | null = null;
  /** Table faults by (target, fault) (nfqlb_table_faults_total). */
  readonly tableFaults = new LabeledCounter();
  /** Opens refused because the name was not a regular file, by object (nfqlb_open_refused_total). */
  readonly openRefused = new KeyCounter();
  /** The addon's count of repaired SIGBUS faults, and the value last handled. */
  private readonly busFaults = shmFaultCounter();
  private seenBusFaults: number;
  private tableTimer: NodeJS.Timeout | null = null;
  private stopping: Promise<void> | null = null;
  /** --tun, open from start() to stop(). */
  private tun: TunDevice | null = null;
  /** errno of the last failed re-injection write ([0], C's positive errno; 0: none). */
  private readonly tunErrno = new Int32Array(1);
  private seenTunErrors = 0;
  private ftWriter: FragStatsWriter | null = null;
  private ftWriteFailed = false;
  private readonly fragmentStatsSum = new Float64Array(FRAG_STATS_FIELDS);
  /** True while --flows_file is replayed at start (no line per restored flow). */
  private restoring = false;
  /** --conntrack's tables: the one the pipeline uses, or one per packet thread (over SharedArrayBuffers). */
  readonly connTables: ConnTable[] = [];
  private readonly connStatsSum = new Float64Array(CT_STAT_FIELDS);
  /** The shape of every fragment table (the single loop's, or each packet thread's), from the options. */
  private readonly fragmentShape: FragmentGeometry;
  private readonly fragmentStoreSum = new Float64Array(FSTORE_FIELDS);
  /** The packet threads (workers ≥ 1), once started. */
  private threads: PacketThreads | null = null;
  /** Accepted flow changes not yet sent to the threads (before they start: their initial set). */
  private changes: FlowOp[] | null = null;
  private traceChannelDropped = 0;
  /**
   * Called when the daemon can no longer serve its queues (a packet thread
   * died); the command logs it and exits non-zero. Library code never exits.
   */
  onFatal: (err: Error) => void = () => {};

  constructor(
    readonly options: DaemonOptions,
    readonly log: Logger,
  ) {
    // Tables only from the daemon's own user or root (a table planted in /dev/shm by anyone else is refused).
    trustTableOwners(daemonTableOwners());
    this.seenBusFaults = this.busFaults[0];
    this.fragmentShape = fragmentGeometry({ ...DEFAULT_PIPELINE_OPTIONS, ...options.pipeline });
    const onFault: TableFaultListener = (name, fault, detail) => this.noteTableFault(name, fault, detail);
    // Failures a client can cause at will are rate-limited lines with the client's bytes escaped and cut (this.failures).
    const onOpenFailed = (name: string, why: string): void => this.failures.note('failed:open-table', JSON.stringify({ target: escapeBytes(name), err: escapeBytes(why, 240) }));
    this.targets = new TargetRegistry(shmTables(log, (bit, text) => this.tracer?.trace(bit, text), onFault, onOpenFailed));
    this.flows = new FlowSet<Target<Table>>({ targetName: (t) => t.name, promiscuousPing: options.promiscuousPing });
    this.traceFlows = new FlowSet<string>({ promiscuousPing: true });
    if (options.mode === 'lb') {
      const name = options.tshm ?? 'nfqlb';
      // nfqlb's mapSharedDataOrDie: the lb table must exist at start.
      this.fixed = new Target(name, new ServedTable(name, openTable(name), onFault));
      this.fixed.refs = 1;
    }
    if (options.lbshm !== undefined) {
      try {
        const table = new ServedTable(options.lbshm, openTable(options.lbshm), onFault);
        this.tier = {
          table,
          get ownFwmark() {
            return table.ownFwmark;
          },
        };
      } catch (err) {
        if (this.fixed !== null) this.fixed.table.close();
        throw err;
      }
    }
    const threaded = (options.workers ?? 0) >= 1;
    // With packet threads every packet is decided in a thread and this
    // pipeline only holds the sum of their reason counts: no fragment table,
    // store or reassembler of its own (the threads' are summed instead).
    const mainOnly = threaded ? { fragmentCapacity: 1, fragmentHashSize: 1, fragmentStoreSlots: 0, reassemblerSize: 0 } : {};
    // --conntrack: one table per thread that decides; this thread reads them all (metrics, `nfqlb conntrack`).
    const ct = options.conntrack;
    const deciders = threaded ? Math.min(options.workers ?? 1, options.queues.length) : 1;
    if (ct !== undefined && ct.capacity > 0) {
      const perThread = entriesPerTable(ct.capacity, deciders);
      try {
        for (let i = 0; i < deciders; i++) {
          const table = new ConnTable(perThread, ct, threaded ? new SharedArrayBuffer(ConnTable.bytes(perThread)) : undefined);
          table.prefault();
          this.connTables.push(table);
        }
      } catch (err) {
        if (!(err instanceof RangeError)) throw err;
        const mib = Math.ceil((deciders * ConnTable.bytes(perThread)) / 2 ** 20);
        throw new NfqlbError(
          `cannot allocate ${mib} MiB for --conntrack=${ct.capacity} (${CT_ENTRY_BYTES} bytes per connection): lower --conntrack, or give the daemon more memory`,
          'NFQLB_ERR_MEMORY',
          { cause: err },
        );
      }
    }
    this.pipeline = new Pipeline(options.mode === 'flowlb' ? this.flows : null, {
      ...options.pipeline,
      ...mainOnly,
      fixedTarget: this.fixed,
      lbTier: this.tier,
      conntrack: threaded ? null : this.connTables[0] ?? null,
    });
    if (threaded) this.changes = [];
    this.accepted = new Float64Array(options.queues.length);
    this.dropped = new Float64Array(options.queues.length);
    this.failures = new RateLimitedLog((key, count, detail) => {
      const colon = key.indexOf(':');
      const kind = key.slice(0, colon);
      const reason = key.slice(colon + 1);
      if (kind === 'refused') this.log.warn({ reason, count, last: detail }, 'control requests refused');
      else if (kind === 'failed') {
        const fields = JSON.parse(detail ?? '{}') as Record<string, string>;
        if (reason === 'open-table') this.log.warn({ ...fields, count }, 'cannot open table');
        else this.log.warn({ ...fields, count }, `${reason} failed`);
      }
      else if (kind === 'flowsfile') this.log.error({ flowsFile: this.options.flowsFile, count, err: detail }, 'flows file not written');
      else if (kind === 'packets') this.log.notice({ reason, count }, 'packets dropped as bad');
      else this.log.warn({ reason, count, queue: detail }, VERDICT_ERROR_REASONS.has(reason) ? 'verdicts not delivered' : 'queue errors');
    });
    this.targetLines = new RateLimitedLog((key, count, detail) => {
      const target = key.slice(key.indexOf(':') + 1);
      // A held-back line (a flapping table) can come after the opposite one: `now` says which state holds at writing.
      const fields = { target, times: count, activeTargets: Number(detail), now: this.targetState.get(target) === 'active' ? 'active' : 'no_target' };
      if (key.startsWith('lost:')) this.log.warn(fields, 'table has no active target: packets of its flows are dropped (no_target)');
      else this.log.notice(fields, 'table has active targets again');
    }, TARGETS_LOG_INTERVAL_MS);
  }

  /**
   * Every table check: a line when a table loses its last active target and
   * when it gets one back (a new table that has none yet is not a loss).
   * Rate-limited per table, so a flapping target is a count, not a flood.
   */
  checkActiveTargets(): void {
    const all = this.fixed === null ? this.targets.list() : [this.fixed];
    const seen = new Set<string>();
    for (const t of all) {
      const name = this.fixed === null ? bytesToText(t.name) : t.name;
      seen.add(name);
      const active = activeCount(t.table);
      const was = this.targetState.get(name) ?? 'never';
      // The state first: note() may write the line at once, and the line tells the state.
      if (active > 0 && was !== 'active') {
        this.targetState.set(name, 'active');
        if (was === 'lost') this.targetLines.note(`back:${name}`, String(active));
        else this.log.debug({ target: name, activeTargets: active }, 'table has active targets');
      } else if (active === 0 && was === 'active') {
        this.targetState.set(name, 'lost');
        this.targetLines.note(`lost:${name}`, '0');
      } else if (!this.targetState.has(name)) {
        this.targetState.set(name, 'never');
      }
    }
    for (const name of this.targetState.keys()) if (!seen.has(name)) this.targetState.delete(name);
    this.targetLines.flush();
  }

  /**
   * Binds every queue, then opens the control socket (flowlb), then starts
   * reading. Throws NfqlbError with one line saying why (queue busy, no
   * permission, control socket in use), with nothing left bound.
   */
  async start(): Promise<void> {
    try {
      const traceShm = openTraceShmForDaemon();
      this.trace = traceShm.trace;
      this.traceShared = traceShm.shared;
      if (!traceShm.shared) this.log.warn({ why: traceShm.why }, 'trace settings are private to this process');
      if (traceShm.notFile === true) this.openRefused.inc('trace_shm');
      if (this.options.ftShm !== undefined) {
        // As nfqlb, the stats object exists from the start. One that belongs
        // to another user is logged and tried again every second (nfqlb
        // dies): as with nfqlb-trace, the daemon runs without root.
        this.ftWriter = new FragStatsWriter(this.options.ftShm);
        this.writeFragmentStats();
      }
      if (this.options.flowsFile !== undefined) this.restoreFlows(this.options.flowsFile);
      if (this.options.tun !== undefined) this.tun = openTun(this.options.tun, this.options.mtu);
      if (this.changes !== null) await this.startThreads();
      else for (let qi = 0; qi < this.options.queues.length; qi++) {
        const queue = new PacketQueue({
          queueNum: this.options.queues[qi],
          copyRange: this.options.mtu,
          qlength: this.options.qlength,
          batchSize: this.options.batchSize,
          failOpen: this.options.failOpen,
          rcvbuf: this.options.rcvbuf,
          defaultVerdict: VERDICT_DROP,
        });
        this.queues.push(queue);
        // nfqlb's line (one per queue): SO_RCVBUF as the kernel reports it, then what was asked for.
        process.stdout.write(`queue_length=${queue.qlength}, mtu=${queue.copyRange}, SO_RCVBUF=${queue.rcvbufActual} (${queue.rcvbuf})\n`);
      }
      if (this.options.mode === 'flowlb') {
        this.control = await startControlServer(this.options.flowAddress, {
          handle: (req) => this.handleControl(req),
          refused: (why) => this.noteRefused(why),
        });
      }
      this.tracer = await TraceServer.start(this.options.traceAddress, this.trace, {
        log: this.log,
        onClients: (n) => this.threads?.setTrace(n > 0, this.traceShared ? 0 : this.trace!.mask),
      });
      if (this.options.metricsAddress !== null) {
        this.metrics = await startMetricsServer(this.options.metricsAddress, this.metricsSource(), this.log);
      }
    } catch (err) {
      await this.stop();
      throw err;
    }
    if (this.threads !== null) this.threads.run();
    else for (let qi = 0; qi < this.queues.length; qi++) (this.queues[qi] as PacketQueue).start(this.batchHandler(qi));
    this.started = true;
    const every = this.options.tableCheckMs ?? TABLE_CHECK_INTERVAL_MS;
    if (every > 0) {
      this.tableTimer = setInterval(() => {
        if (this.threads !== null && this.busFaults[0] !== this.seenBusFaults) this.onBusFault();
        this.refreshTables();
        this.checkActiveTargets();
        this.followLogLevel();
      }, every);
      this.tableTimer.unref();
    }
    this.housekeeping = setInterval(() => {
      this.logFailures();
      this.writeFragmentStats();
    }, HOUSEKEEPING_INTERVAL_MS);
    this.housekeeping.unref();
    this.log.notice(
      {
        mode: this.options.mode,
        queues: this.options.queues,
        portids: this.queues.map((q) => q.portid),
        control: this.control?.address,
        trace: this.options.traceAddress,
        metrics: this.metrics?.address ?? null,
        tshm: this.fixed?.name,
        workers: this.threads?.size ?? 0,
        tun: this.tun?.name,
        // Memory of --conntrack, stated at start: entries × bytes, per table (one per packet thread).
        conntrack: this.connTables.length === 0 ? undefined : {
          entries: this.connTables.reduce((a, t) => a + t.capacity, 0),
          tables: this.connTables.length,
          bytes: this.connTables.reduce((a, t) => a + t.buffer.byteLength, 0),
        },
      },
      'started',
    );
    if (this.tun !== null && this.threads !== null && this.threads.size > 1) {
      // Each packet thread keeps its own fragment table: a copy re-injected
      // through the tun must come back on a queue of the thread that kept it
      // (with one thread every queue is its own).
      this.log.notice(
        { tun: this.tun.name, workers: this.threads.size },
        're-injected fragments must reach the queue their datagram came in on (one --queue-balance rule for the VIPs, also for the tun device); otherwise run with --workers=1',
      );
    }
  }

  /**
   * Starts the packet threads with the flows accepted so far and waits until
   * each has bound its queues; prints nfqlb's line per queue as a single loop
   * does. Throws the first thread's bind error (the same one line).
   */
  private async startThreads(): Promise<void> {
    const o = this.options;
    const { fixedTarget: _f, lbTier: _t, fragmentStats: _s, fragmentStoreCounters: _c, ...pipeline } = o.pipeline;
    const initialOps = this.changes!.splice(0);
    this.threads = await PacketThreads.start(
      Math.min(o.workers ?? 1, o.queues.length),
      {
        mode: o.mode, queues: o.queues, qlength: o.qlength, mtu: o.mtu, batchSize: o.batchSize, failOpen: o.failOpen, rcvbuf: o.rcvbuf,
        promiscuousPing: o.promiscuousPing, pipeline, tshm: o.tshm, lbshm: o.lbshm, tunFd: this.tunFd, tableCheckMs: o.tableCheckMs ?? TABLE_CHECK_INTERVAL_MS,
        traceShm: this.traceShared ? this.trace!.name : null, initialOps,
        conntrack: this.connTables.length === 0 ? null : {
          perThread: this.connTables[0].capacity, streamTtlMs: o.conntrack!.streamTtlMs, otherTtlMs: o.conntrack!.otherTtlMs,
          buffers: this.connTables.map((t) => t.buffer as SharedArrayBuffer),
        },
      },
      {
        trace: (text) => this.tracer?.traceLines(text),
        died: (err) => {
          this.log.fatal({ err: err.message }, 'packet thread died; its queues are no longer answered');
          this.onFatal(err);
        },
      },
    );
    const threads = this.threads;
    for (const b of threads.bound) {
      process.stdout.write(`queue_length=${b.qlength}, mtu=${b.copyRange}, SO_RCVBUF=${b.rcvbufActual} (${b.rcvbuf})\n`);
      const qi = b.qi;
      this.queues.push({
        queueNum: b.queueNum,
        portid: b.portid,
        get closed() {
          return !threads.alive;
        },
        stats: () => {
          const s = threads.queueStats(qi);
          const errno = s.lastErrno === 0 ? null : -s.lastErrno;
          return { ...s, lastErrno: errno, lastErrnoName: errno === null ? null : errnoName(errno) } satisfies QueueStats;
        },
        close: () => {},
      });
    }
  }

  /** Sums the threads' shared counters into this thread's arrays (what metrics and the failure log read). */
  private foldThreadCounters(): void {
    if (this.threads === null) return;
    const into = { accepted: this.accepted, dropped: this.dropped, reasons: this.pipeline.reasonCounts, batchSizes: this.batchSizes, traceDropped: 0 };
    sumThreadCounters(this.threads.counters, into);
    this.traceChannelDropped = into.traceDropped;
  }

  /**
   * Collects the threads' counts into this thread's objects: shared counters,
   * flow and trace-flow matches (by position, when every thread answered for
   * the current generation of flows), fwmarks per target.
   */
  async refreshFromThreads(): Promise<void> {
    const threads = this.threads;
    if (threads === null) return;
    const gen = threads.generation;
    const pubs = await threads.publish();
    this.foldThreadCounters();
    const all = pubs.every((p) => p !== null && p.gen === gen);
    const sumInto = (flows: readonly { matches: number }[], pick: (p: NonNullable<(typeof pubs)[number]>) => Float64Array): void => {
      if (!all || pubs.some((p) => pick(p!).length !== flows.length)) return;
      for (let i = 0; i < flows.length; i++) {
        let n = 0;
        for (const p of pubs) n += pick(p!)[i];
        flows[i].matches = n;
      }
    };
    sumInto(this.flows.flows, (p) => p.flowMatches);
    sumInto(this.traceFlows.flows, (p) => p.traceMatches);
    const mine = this.fixed === null ? this.targets.list() : [this.fixed];
    for (const t of mine) {
      const sums = new Map<number, number>();
      let noTarget = 0;
      for (const p of pubs) {
        const pt = p?.targets.find((x) => x.name === t.name);
        if (pt === undefined) continue;
        pt.fwmarks.forEach((fw, i) => sums.set(fw, (sums.get(fw) ?? 0) + pt.counts[i]));
        noTarget += pt.noTarget;
      }
      if (noTarget > t.noTarget) t.noTarget = noTarget;
      for (const [fw, n] of sums) {
        const delta = n - t.fwmarks.get(fw);
        if (delta > 0) t.fwmarks.add(fw, delta);
      }
    }
  }
  /**
   * Checks every open table's file (ServedTable.check: one fstat and one
   * stat each): a re-created table is swapped in (`nfqlb init` with another
   * shape unlinks the file and makes a new one), a truncated one is served
   * from its last good copy, a deleted one from its mapping. Called every
   * TABLE_CHECK_INTERVAL_MS and at once after a repaired page fault.
   * Returns the names of the tables reopened.
   */
  refreshTables(): string[] {
    const swapped: string[] = [];
    const all: Table[] = this.targets.list().map((t) => t.table);
    if (this.fixed !== null) all.push(this.fixed.table);
    if (this.tier !== null) all.push(this.tier.table);
    for (const table of all) {
      const fault = table.check();
      if (fault === 'recreated' || fault === 'restored') swapped.push(table.name);
    }
    return swapped;
  }

  /** One line per table fault (each is reported once by ServedTable), and a count. */
  private noteTableFault(name: string, fault: TableFault, detail: string): void {
    this.tableFaults.inc(name, fault);
    if (fault === 'not_file') this.openRefused.inc('table');
    const fields = { target: name, fault, detail };
    if (fault === 'recreated' || fault === 'restored') this.log.notice(fields, 'table re-created; reopened');
    else this.log.warn(fields, 'table fault');
  }

  /** Called per batch when the addon repaired a SIGBUS: a table file shrank under us; find which at once. */
  private onBusFault(): void {
    const n = this.busFaults[0];
    this.tableFaults.inc('', 'mapping_fault', (n - this.seenBusFaults) >>> 0);
    this.seenBusFaults = n;
    this.refreshTables();
  }

  /** A refused control request: counted by reason, logged at most once a second per reason with the raw bytes escaped and cut. */
  noteRefused(why: string): void {
    const reason = refusalReason(why);
    // Counted here only: nfqlb_control_requests_total counts the requests that were handled.
    this.controlRefused.inc(reason);
    this.failures.note(`refused:${reason}`, escapeBytes(why));
  }

  /** Queue errors per queue and reason, read from the addon (cheap: a handful of numbers). */
  queueErrors(): { queueNum: number; portid: number; reason: string; count: number }[] {
    const out = [];
    for (const q of this.queues) {
      const s = q.stats();
      for (const [reason, field] of QUEUE_ERROR_FIELDS) out.push({ queueNum: q.queueNum, portid: q.portid, reason, count: s[field] });
    }
    return out;
  }

  /**
   * Every second: what the packet path and the addon counted since the last
   * run becomes at most one log line per reason (never a line per packet).
   */
  logFailures(): void {
    this.foldThreadCounters();
    const counts = this.pipeline.reasonCounts;
    for (const r of [REASON_INVALID, REASON_FRAGMENT_MISS, REASON_FRAGMENT_TABLE_FULL, REASON_FRAGMENT_LOST]) {
      const n = counts[r] - this.seenReasons[r];
      this.seenReasons[r] = counts[r];
      if (n > 0) this.failures.note(`packets:${REASON_NAMES[r]}`, undefined, n);
    }
    const store = this.fragmentStoreCounters();
    if (store !== null) {
      const n = store[FSTORE_WRITE_ERRORS] - this.seenTunErrors;
      this.seenTunErrors = store[FSTORE_WRITE_ERRORS];
      const e = this.lastTunErrno();
      if (n > 0) this.failures.note('queue:tun_write', tunWriteErrorText(this.tun?.name ?? '', e), n);
    }
    for (let qi = 0; qi < this.queues.length; qi++) {
      const q = this.queues[qi];
      if (q.closed) continue;
      const s = q.stats();
      const seen = (this.seenQueueErrors[qi] ??= QUEUE_ERROR_FIELDS.map(() => 0));
      QUEUE_ERROR_FIELDS.forEach(([reason, field], i) => {
        const n = s[field] - seen[i];
        seen[i] = s[field];
        if (n > 0) this.failures.note(`queue:${reason}`, `${q.queueNum}${s.lastErrnoName === null ? '' : ` (${s.lastErrnoName})`}`, n);
      });
    }
    this.failures.flush();
  }

  /** The statistics arrays of every fragment table: one per packet thread (their shared counters), or the single loop's. */
  fragmentStatsArrays(): Float64Array[] {
    if (this.threads !== null) return this.threads.counters.map((c) => c.fragmentStats);
    return [this.pipeline.fragments.stats];
  }

  /** The fragment store counters (FSTORE_*), summed over the packet threads' stores; null without a store (no --tun). */
  fragmentStoreCounters(): Float64Array | null {
    if (this.threads === null) return this.pipeline.fragmentStore?.counters ?? null;
    if (this.fragmentStoreSlots() === 0) return null;
    const sum = this.fragmentStoreSum.fill(0);
    for (const c of this.threads.counters) for (let i = 0; i < FSTORE_FIELDS; i++) sum[i] += c.fragmentStore[i];
    return sum;
  }

  /** errno (C's positive) of a failed tun write: the single loop's, or the first thread's that has one; 0: none. */
  private lastTunErrno(): number {
    if (this.threads === null) return this.tunErrno[0];
    for (const c of this.threads.counters) if (c.tunErrno[0] !== 0) return c.tunErrno[0];
    return 0;
  }

  /** nfqlb's fragStats, summed over the fragment tables. */
  fragmentStats(): FragStats {
    const ft = this.fragmentShape;
    return fragStatsOf(sumFragmentStats(this.fragmentStatsArrays(), this.fragmentStatsSum), {
      size: ft.hashSize,
      bucketsMax: ft.extraBuckets,
      ttlMs: ft.ttlMs,
      mtu: this.options.mtu,
      // nfqlb's fragsMax: --ft_frag with --tun, else 0 (lb.ts sets no store then).
      fragsMax: this.fragmentStoreSlots(),
    });
  }

  /** Copies one fragment store keeps (--ft_frag with --tun; each packet thread has a store of this size); 0: no store. */
  private fragmentStoreSlots(): number {
    return this.options.pipeline.fragmentStoreSlots ?? 0;
  }

  /**
   * Every second and at stop: frees what expired in the fragment table (so
   * the active count falls back without traffic; nfqlb does this full GC when
   * its stats are read) and writes --ft_shm. A failed write is logged once
   * until a write succeeds again; the daemon keeps running.
   */
  writeFragmentStats(): void {
    const now = performance.now();
    this.pipeline.fragments.sweep(now);
    // The single loop's table only: a packet thread sweeps its own (one writer per table).
    if (this.threads === null) this.pipeline.conntrack?.sweep(now, CONNTRACK_SWEEP_BUDGET);
    if (this.ftWriter === null) return;
    try {
      this.ftWriter.write(this.fragmentStats());
      this.ftWriteFailed = false;
    } catch (err) {
      if (!this.ftWriteFailed) {
        this.log.warn({ ftShm: this.ftWriter.name, err: (err as Error).message }, 'fragment statistics not written');
        if (err instanceof NfqlbError && err.code === 'NFQLB_ERR_NOT_FILE') this.openRefused.inc('ft_shm');
      }
      this.ftWriteFailed = true;
    }
  }

  /**
   * --flows_file at start: all of it or nothing (a bad file stops the start,
   * untouched); then the file is rewritten as a fresh journal (an old-format
   * file migrated, a torn last record dropped) and changes are appended to it.
   */
  private restoreFlows(file: string): void {
    const loaded = loadFlowsFile(file);
    const content = loaded?.content ?? null;
    this.flowsRecord = new FlowsRecord(content);
    let failed = 0;
    if (content !== null) {
      // One summary line below, not a flow-set line per restored flow (10,000 of them at 10,000 flows).
      this.restoring = true;
      for (const f of content.flows) {
        const reply = this.controlReply({ ...f, action: 'set' });
        if (!('text' in reply) || reply.text !== 'OK') {
          failed++;
          // Kept in the file: the table may come back; setting or deleting the flow replaces the entry.
          this.log.warn({ flow: f.name, target: f.target, reply: 'text' in reply ? reply.text : '' }, 'flow from the flows file not restored');
        }
      }
      for (const f of content.traceFlows) this.controlReply({ ...f, action: 'trace-set' });
      this.restoring = false;
    }
    if (loaded !== null && loaded.tornBytes > 0) {
      this.log.warn({ flowsFile: file, tornBytes: loaded.tornBytes }, 'flows file ended in a torn record (a crash while it was written, so never acknowledged); dropped');
    }
    this.flowsJournal = new FlowsJournal(file, {
      snapshot: () => this.flowsSnapshot(),
      minCompactBytes: this.options.flowsFileCompactBytes,
      onError: (err) => {
        this.flowsFileErrors++;
        if (isNotFile(err)) this.openRefused.inc('flows_file');
        this.failures.note('flowsfile:write', err.message);
      },
    });
    this.flowsJournal.open();
    if (content === null) this.log.notice({ flowsFile: file }, 'no flows file yet; starting without flows');
    else this.log.notice({ flowsFile: file, flows: content.flows.length - failed, failed, traceFlows: content.traceFlows.length, records: loaded!.records, migrated: loaded!.legacy }, 'flows restored');
  }

  /** What a compaction writes: every stored flow, in the sets' lookup order (so a replay rebuilds that order). */
  private flowsSnapshot(): FlowsFileContent {
    return this.flowsRecord!.content({
      flows: this.flows.flows.filter((f) => f.target !== null).map((f) => f.name),
      traceFlows: this.traceFlows.flows.map((f) => f.name),
    });
  }

  /** After a successful change: one record appended (and synced) before the client gets its OK. */
  private persistFlows(req: ControlRequest): void {
    const record = this.flowsRecord?.apply(req) ?? null;
    if (record !== null) this.flowsJournal?.append(record);
  }

  /** `nfqlb loglevel N` writes the shm; the daemon follows it here. */
  private followLogLevel(): void {
    if (this.trace === null) return;
    const n = this.trace.level;
    const level = pinoLevel(n);
    // nfqlb's level, not pino's: 5 and 6 are both pino's info, and a change between them is still a change.
    const first = this.seenLogLevel === null;
    if (this.log.level === level && (first || n === this.seenLogLevel)) {
      this.seenLogLevel = n;
      return;
    }
    this.seenLogLevel = n;
    this.log.level = level;
    this.log.notice({ loglevel: n }, 'log level changed');
  }
  /** The nfqlb log level last followed (null before the first check). */
  private seenLogLevel: number | null = null;

  /** What /metrics reads; everything is read at scrape time, nothing per packet. */
  private metricsSource(): MetricsSource {
    const reasonCounts = this.pipeline.reasonCounts;
    return {
      ready: () => this.started && this.queues.length === this.options.queues.length && this.queues.every((q) => !q.closed),
      queues: () => this.queues.map((q, qi) => ({ queueNum: q.queueNum, portid: q.portid, accepted: this.accepted[qi], dropped: this.dropped[qi] })),
      reasons: () => REASON_NAMES.map((name, i) => ({ name, count: reasonCounts[i] })),
      flows: () => this.flows.flows.map((f) => ({ name: bytesToText(f.name), target: f.target === null ? null : bytesToText(f.target.name), matches: f.matches, instance: f })),
      endedFlows: () => this.endedFlows.splice(0),
      targets: () => {
        const all = this.fixed === null ? this.targets.list() : [this.fixed];
        return all.map((t) => {
          const active = activeCount(t.table);
          // Flow targets are named by request bytes; lb's one table by its (text) option.
          return { name: this.fixed === null ? bytesToText(t.name) : t.name, activeTargets: active, fwmarks: t.fwmarks, noTarget: t.noTarget };
        });
      },
      batchSizes: this.batchSizes,
      controlRequests: () => this.controlRequests.entries(),
      queueErrors: () => this.queueErrors(),
      controlRefused: () => this.controlRefused.entries(),
      flowsFileErrors: () => this.flowsFileErrors,
      openRefused: () => this.openRefused.entries(),
      conntrack: () => (this.connTables.length === 0 ? null : {
        capacity: this.connTables.reduce((a, t) => a + t.capacity, 0),
        stats: sumConnStats(this.connTables, this.connStatsSum),
      }),
      traceChannelDropped: () => this.traceChannelDropped,
      refresh: () => this.refreshFromThreads(),
      tableFaults: () => this.tableFaults.entries().map((e) => ({ target: e.action, fault: e.result, count: e.count })),
      fragmentStore: () => {
        const c = this.fragmentStoreCounters();
        if (c === null) return null;
        // slots is per store (--ft_frag; each packet thread has one), the counts are sums.
        return { slots: this.fragmentStoreSlots(), inUse: c[FSTORE_IN_USE], events: FSTORE_EVENT_NAMES.map((event, i) => ({ event, count: c[i] })) };
      },
      fragments: () => ({ ...this.fragmentStats(), reassemblerFull: this.fragmentStatsSum[FS_REASSEMBLER_FULL] }),
    };
  }

  /**
   * The per-queue batch handler of the single loop: the packet threads' one
   * (makeBatchHandler) over this thread's arrays. Whether to trace is decided
   * once per batch: with no trace client the mask is 0 and the loop has no
   * trace work at all.
   */
  private batchHandler(qi: number): (batch: QueueBatch) => void {
    const busFaults = this.busFaults;
    const traceFlows = this.options.mode === 'flowlb' ? this.traceFlows : null;
    const counters = { accepted: this.accepted, dropped: this.dropped };
    const sink: TraceSink = {
      perPacketMask: () => (this.tracer === null ? 0 : this.tracer.perPacketMask),
      send: (text) => this.tracer?.traceLines(text),
    };
    const afterBatch = (): void => {
      if (busFaults[0] !== this.seenBusFaults) this.onBusFault();
    };
    return makeBatchHandler(this.pipeline, counters, this.batchSizes, qi, sink, traceFlows, afterBatch, this.tunFd, this.tunErrno);
  }

  /**
   * One control request (SPEC.md §7), counted and traced. Never throws. With
   * packet threads: a list is answered with their counts collected first, a
   * change only once every thread acknowledged it (see changeThreads).
   */
  handleControl(req: ControlRequest): ControlReply | Promise<ControlReply> {
    if (this.threads === null) return this.finishControl(req, this.controlReply(req));
    return this.handleControlThreaded(req);
  }

  private async handleControlThreaded(req: ControlRequest): Promise<ControlReply> {
    if (req.action === 'list' || req.action === 'trace-list') await this.refreshFromThreads();
    const reply = this.controlReply(req);
    const ops = this.changes!.splice(0);
    if (ops.length === 0) return this.finishControl(req, reply);
    const why = await this.changeThreads(ops);
    // Applied here in any case: kept in the flows file so a restart has what this thread has.
    if (why !== null) this.persistFlows(req);
    return this.finishControl(req, why === null ? reply : { text: `FAIL: ${why}` });
  }

  /**
   * Hands accepted changes to every packet thread and waits for their acks
   * (at most ACK_TIMEOUT_MS): null when all use them, else why not (logged).
   * nfqlb clients then see `FAIL: ...` for a change this thread made but a
   * packet thread may not use yet; `flow-list` shows this thread's view.
   */
  private async changeThreads(ops: FlowOp[]): Promise<string | null> {
    const why = await this.threads!.change(ops);
    const failures = this.threads!.failures.splice(0);
    const text = why ?? (failures.length > 0 ? failures.join('; ') : null);
    if (text !== null) this.log.error({ ops: ops.map((o) => o.op), why: text }, 'flow change not taken by every packet thread');
    return text;
  }

  /**
   * A failed control request: at most one warn line a second per kind, with
   * the count and the last one's fields escaped and cut to 80 bytes (any
   * process in the namespace can send as many as it likes).
   */
  private noteFailed(what: string, fields: Record<string, string | undefined>): void {
    const cut: Record<string, string> = {};
    for (const [k, v] of Object.entries(fields)) if (v !== undefined) cut[k] = escapeBytes(bytesToText(v));
    this.failures.note(`failed:${what}`, JSON.stringify(cut));
  }

  private finishControl(req: ControlRequest, reply: ControlReply): ControlReply {
    const action = req.action === undefined ? 'none' : CONTROL_ACTIONS.has(req.action) ? req.action : 'unknown';
    const ok = 'json' in reply || reply.text === 'OK';
    this.controlRequests.inc(action, ok ? 'ok' : 'fail');
    if (ok) this.persistFlows(req);
    const replyText = 'text' in reply ? reply.text : '';
    // set and delete have their own line, with the reply, at warn when it is not OK.
    if (!ok && action !== 'set' && action !== 'delete') this.noteFailed(`control request (${action})`, { flow: req.name, reply: replyText });
    this.log.debug({ action, flow: req.name, ok, reply: 'text' in reply ? replyText : 'json' }, 'control request');
    if ('text' in reply) this.tracer?.trace(TRACE_FLOW_CONF, `writeReply [${reply.text}]\n`);
    return reply;
  }

  /**
   * Keeps the last count of a flow that a delete or set took out of the flow
   * set for the next scrape, so a flow that lived between two scrapes is still
   * seen in nfqlb_flow_matches_total (with packet threads: its count as of
   * the last scrape). Bounded: without a metrics server nobody takes them.
   */
  private noteEndedFlow(flow: ReturnType<FlowSet<Target<Table>>['get']>): void {
    if (flow === undefined || this.flows.get(flow.name) === flow || this.metrics === null) return;
    // Without scrapes only the latest are kept.
    if (this.endedFlows.length >= MAX_ENDED_FLOWS) this.endedFlows.shift();
    this.endedFlows.push({ name: bytesToText(flow.name), target: flow.target === null ? null : bytesToText(flow.target.name), matches: flow.matches, instance: flow });
  }

  private controlReply(req: ControlRequest): ControlReply {
    const action = req.action;
    if (action === undefined) return { text: 'FAIL: no action' };
    // The server parses what the CLI sent exactly as flowCmdFromArgs does (atoi for numbers).
    const cmd: FlowCmd = flowCmdFromFields(req);
    switch (action) {
      case 'set': {
        const before = cmd.name === undefined ? undefined : this.flows.get(cmd.name);
        const reply = applyFlowChange<Target<Table>>(this.flows, this.traceFlows, this.targets, action, cmd);
        if (reply === 'OK') this.noteEndedFlow(before);
        if (reply === 'OK') this.changes?.push({ op: 'set', cmd });
        // A table's targets are known from its flow-set on, not only from the next check: losing them within the
        // first second is a loss to report too.
        if (reply === 'OK' && !this.restoring) this.checkActiveTargets();
        if (reply !== 'OK') this.noteFailed('flow-set', { flow: cmd.name, target: cmd.target, reply });
        else if (!this.restoring) this.log.notice({ action, flow: cmd.name && bytesToText(cmd.name), target: cmd.target && bytesToText(cmd.target), reply }, 'flow-set');
        return { text: reply };
      }
      case 'delete': {
        const before = cmd.name === undefined ? undefined : this.flows.get(cmd.name);
        const reply = applyFlowChange<Target<Table>>(this.flows, this.traceFlows, this.targets, action, cmd);
        if (reply === 'OK') this.noteEndedFlow(before);
        if (reply === 'OK') this.changes?.push({ op: 'delete', name: cmd.name });
        if (reply === 'OK') this.log.notice({ action, flow: cmd.name && bytesToText(cmd.name), reply }, 'flow-delete');
        else this.noteFailed('flow-delete', { flow: cmd.name, reply });
        return { text: reply };
      }
      case 'list':
        return this.listReply(this.flows, req.name);
      case 'list-names':
        return { json: this.flows.listNames() };
      case 'trace-set': {
        const reply = applyFlowChange<Target<Table>>(this.flows, this.traceFlows, this.targets, action, cmd);
        if (reply === 'OK') this.changes?.push({ op: 'trace-set', cmd: { ...cmd, name: cmd.name! } });
        return { text: reply };
      }
      case 'trace-delete': {
        const reply = applyFlowChange<Target<Table>>(this.flows, this.traceFlows, this.targets, action, cmd);
        if (reply === 'OK') this.changes?.push({ op: 'trace-delete', name: cmd.name! });
        return { text: reply };
      }
      case 'trace-list':
        return this.listReply(this.traceFlows, req.name);
      case 'trace-list-names':
        return { json: this.traceFlows.listNames() };
      case 'conntrack':
        return this.conntrackReply(req);
      default:
        return { text: 'FAIL: action unknown' };
    }
  }

  /**
   * `nfqlb conntrack` (an extension): the tables' counters summed and, for a
   * connection given as protocols/srcs/sports/dsts/dports, its entry in
   * whichever table holds it. Read from here without stopping the threads
   * (their tables are shared memory); an entry being rewritten may read old.
   */
  private conntrackReply(req: ControlRequest): ControlReply {
    if (this.connTables.length === 0) return { text: 'FAIL: no connection table (start the daemon with --conntrack=N)' };
    const s = sumConnStats(this.connTables, this.connStatsSum);
    const report: Record<string, unknown> = {
      capacity: this.connTables.reduce((a, t) => a + t.capacity, 0),
      tables: this.connTables.length,
    };
    CT_STAT_NAMES.forEach((name, i) => (report[name] = s[i]));
    if (req.protocols !== undefined) {
      const key = connectionKey(req);
      if (key === null) return { text: 'FAIL: give the connection as protocols (tcp|udp|sctp), srcs, sports, dsts, dports' };
      const hash = djb2Bits(key, 0, KEY_LEN);
      const wallNow = performance.timeOrigin + performance.now();
      let found: Record<string, unknown> = { found: false };
      this.connTables.forEach((t, i) => {
        const e = t.peek(key, hash, wallNow - t.clockOrigin[0]);
        if (e !== null && !e.expired) found = { found: true, table: i, fwmark: e.fwmark, slot: e.slot, idle_ms: Math.round(e.idleMs) };
      });
      report.connection = found;
    }
    return { json: `${JSON.stringify(report)}
` };
  }

  private listReply<T>(set: FlowSet<T>, name: string | undefined): ControlReply {
    return { json: set.list(name) };
  }

  /** The fd of the --tun device (-1 without one, or before start): a plain number any thread running a pipeline writes with. */
  get tunFd(): number {
    return this.tun === null ? -1 : this.tun.fd;
  }

  /** The trace/loglevel shm (created at start). */
  get traceShm(): TraceShm | null {
    return this.trace;
  }

  /** Unbinds the queues, closes the control socket (dropping open connections) and the tables. Idempotent. */
  stop(): Promise<void> {
    if (this.stopping !== null) return this.stopping;
    this.stopping = (async () => {
      if (this.tableTimer !== null) clearInterval(this.tableTimer);
      if (this.housekeeping !== null) clearInterval(this.housekeeping);
      if (this.ftWriter !== null) this.writeFragmentStats();
      for (const q of this.queues) {
        try {
          q.close();
        } catch (err) {
          this.log.warn({ queue: q.queueNum, err: (err as Error).message }, 'closing queue failed');
        }
      }
      if (this.threads !== null) await this.threads.stop();
      if (this.control !== null) await this.control.close();
      if (this.metrics !== null) await this.metrics.close();
      if (this.tracer !== null) await this.tracer.close();
      if (this.trace !== null && this.traceShared) closeTraceShm(this.trace);
      if (this.fixed !== null) this.fixed.table.close();
      if (this.tier !== null) this.tier.table.close();
      if (this.tun !== null) closeTun(this.tun);
    })();
    return this.stopping;
  }
}

/** Parses nfqlb's --queue: "N" or "A:B". Throws NfqlbError with nfqlb's wording. */
export function parseQueues(spec: string): number[] {
  const m = /^(\d+)(?::(\d+))?$/.exec(spec);
  if (m === null) throw new NfqlbError(`queue invalid [${spec}]`, 'NFQLB_ERR_USAGE');
  const first = Number(m[1]);
  const last = m[2] === undefined ? first : Number(m[2]);
  if (first > last || last > 65535) throw new NfqlbError(`queue invalid [${spec}]`, 'NFQLB_ERR_USAGE');
  const queues: number[] = [];
  for (let q = first; q <= last; q++) queues.push(q);
  return queues;
}
