/**
 * The daemon behind `nfqlb flowlb` and `nfqlb lb`: binds the queues, runs the
 * pipeline on every batch, and serves the control socket. Where the verdict is
 * sent: the batch handler (src/datapath/batch.ts) fills `batch.verdicts`, and
 * the addon sends them all in one message when it returns (see queue.ts).
 *
 * With `workers` 0 all queues of `--queue=A:B` are served by this one event
 * loop: decisions are a few hundred nanoseconds of JavaScript, and the kernel
 * work of forwarding an accepted packet happens inside the verdict send, so one
 * thread already keeps a core busy (numbers in docs/performance.md). With
 * `workers` ≥ 1 the queues are served by packet threads (packetthread.ts) and
 * this thread keeps control, metrics, trace server, logs and the flows file;
 * every accepted flow change is answered only once every thread uses it.
 *
 * This module is the life cycle (start, the timers, stop) and ties the parts
 * together: tables.ts (the tables and their checks), controlactions.ts,
 * flowskeeper.ts (--flows_file), fragmentstats.ts (and --ft_shm),
 * failurelog.ts, metricssource.ts, workers.ts (the packet threads), and
 * processguard.ts (signals and the inspector, used by the command).
 */
import { RateLimitedLog, escapeBytes } from '../base/ratelog';
import { BatchSizeHistogram, KeyCounter, LabeledCounter } from '../base/counters';
import { pinoLevel, type Logger } from '../base/log';
import { PacketQueue, VERDICT_DROP, type QueueBatch } from '../addon/queue';
import { openTraceShmForDaemon, closeTraceShm, type TraceShm } from '../addon/shm';
import { closeTun, openTun, type TunDevice } from '../addon/tun';
import { FlowSet } from '../flows/flowset';
import { Pipeline } from '../datapath/pipeline';
import { makeBatchHandler, type TraceSink } from '../datapath/batch';
import type { ConnTable } from '../datapath/conntrack';
import { daemonTableOwners, trustTableOwners } from '../tables/tablefile';
import type { ServedTable } from '../tables/servedtable';
import type { Target, TargetRegistry } from '../tables/targets';
import { startControlServer, type ControlReply, type ControlRequest, type ControlServer } from '../services/control';
import { startMetricsServer, type MetricsServer } from '../services/metrics';
import { formatPacketTrace, TraceServer } from '../services/trace';
import { ConnTables } from './conntables';
import { ControlActions } from './controlactions';
import { FailureCounts, failureLines, HOUSEKEEPING_INTERVAL_MS, queueErrors } from './failurelog';
import type { FlowsJournal } from './flowsjournal';
import { FlowsKeeper } from './flowskeeper';
import { FragmentStatistics } from './fragmentstats';
import type { FragStats } from '../fragments/stats';
import { daemonMetricsSource } from './metricssource';
import type { DaemonOptions } from './options';
import type { PacketThreads } from './packetthreads';
import { DaemonTables, TABLE_CHECK_INTERVAL_MS, TableChecks } from './tables';
import type { FlowOp } from './threadmessages';
import { collectFromThreads, foldThreadCounters, startPacketThreads, type QueueView } from './workers';

export type { DaemonOptions } from './options';
export type { QueueView } from './workers';

export class Daemon {
  readonly flows: FlowSet<Target<ServedTable>>;
  readonly traceFlows: FlowSet<string>;
  readonly pipeline: Pipeline<ServedTable>;
  readonly queues: QueueView[] = [];
  /** Accepted / dropped packets per queue index (folded into metrics when scraped). */
  readonly accepted: Float64Array;
  readonly dropped: Float64Array;
  readonly batchSizes = new BatchSizeHistogram();
  /** At most one line per second per kind of failure, with a count. */
  readonly failures: RateLimitedLog;
  /** Opens refused because the name was not a regular file, by object (nfqlb_open_refused_total). */
  readonly openRefused = new KeyCounter();
  /** lb's table, the flows' targets and the --lbshm tier, and their once-a-second checks. */
  private readonly tables: DaemonTables;
  private readonly tableChecks: TableChecks;
  private readonly actions: ControlActions;
  private readonly flowsKeeper: FlowsKeeper;
  private readonly fragments: FragmentStatistics;
  private readonly failureCounts: FailureCounts;
  /** --conntrack's tables: the one the pipeline uses, or one per packet thread (over SharedArrayBuffers). */
  private readonly conntrack: ConnTables;
  private housekeeping: NodeJS.Timeout | null = null;
  private tableTimer: NodeJS.Timeout | null = null;
  private control: ControlServer | null = null;
  private tracer: TraceServer | null = null;
  private metrics: MetricsServer | null = null;
  private started = false;
  private stopping: Promise<void> | null = null;
  private trace: TraceShm | null = null;
  private traceShared = false;
  /** --tun, open from start() to stop(). */
  private tun: TunDevice | null = null;
  /** The packet threads (workers ≥ 1), once started. */
  private threads: PacketThreads | null = null;
  /** Accepted flow changes not yet sent to the threads (before they start: their initial set). */
  private readonly changes: FlowOp[] | null = null;
  private traceChannelDropped = 0;
  /** The nfqlb log level last followed (null before the first check). */
  private seenLogLevel: number | null = null;
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
    // Failures a client can cause at will are rate-limited lines with the client's bytes escaped and cut (this.failures).
    this.failures = failureLines(log, options.flowsFile);
    this.failureCounts = new FailureCounts(this.failures);
    this.tableChecks = new TableChecks(log, this.openRefused);
    this.tables = new DaemonTables(options, {
      log,
      trace: (bit, text) => this.tracer?.trace(bit, text),
      onFault: this.tableChecks.noteFault,
      onOpenFailed: (name, why) => this.failures.note('failed:open-table', JSON.stringify({ target: escapeBytes(name), err: escapeBytes(why, 240) })),
    });
    this.flows = new FlowSet<Target<ServedTable>>({ targetName: (t) => t.name, promiscuousPing: options.promiscuousPing });
    this.traceFlows = new FlowSet<string>({ promiscuousPing: true });
    const threaded = (options.workers ?? 0) >= 1;
    // With packet threads every packet is decided in a thread and this
    // pipeline only holds the sum of their reason counts: no fragment table,
    // store or reassembler of its own (the threads' are summed instead).
    const mainOnly = threaded ? { fragmentCapacity: 1, fragmentHashSize: 1, fragmentStoreSlots: 0, reassemblerSize: 0 } : {};
    // --conntrack: one table per thread that decides; this thread reads them all (metrics, `nfqlb conntrack`).
    const deciders = threaded ? Math.min(options.workers ?? 1, options.queues.length) : 1;
    try {
      this.conntrack = new ConnTables(options.conntrack, deciders, threaded);
    } catch (err) {
      this.tables.closeFixed();
      throw err;
    }
    this.pipeline = new Pipeline(options.mode === 'flowlb' ? this.flows : null, {
      ...options.pipeline,
      ...mainOnly,
      fixedTarget: this.tables.fixed,
      lbTier: this.tables.tier,
      conntrack: threaded ? null : this.conntrack.tables[0] ?? null,
    });
    if (threaded) this.changes = [];
    this.accepted = new Float64Array(options.queues.length);
    this.dropped = new Float64Array(options.queues.length);
    this.flowsKeeper = new FlowsKeeper({
      log, failures: this.failures, openRefused: this.openRefused, flows: this.flows, traceFlows: this.traceFlows, compactBytes: options.flowsFileCompactBytes,
    });
    this.fragments = new FragmentStatistics({ options, pipeline: this.pipeline, threads: () => this.threads, log, openRefused: this.openRefused });
    this.actions = new ControlActions({
      flows: this.flows,
      traceFlows: this.traceFlows,
      targets: this.tables.targets,
      log,
      failures: this.failures,
      conntrack: this.conntrack,
      changes: this.changes,
      tracer: () => this.tracer,
      threads: () => this.threads,
      refreshFromThreads: () => this.refreshFromThreads(),
      checkActiveTargets: () => this.checkActiveTargets(),
      persist: (req) => this.flowsKeeper.persist(req),
    });
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
      if (this.options.ftShm !== undefined) this.fragments.openFtShm(this.options.ftShm);
      if (this.options.flowsFile !== undefined) this.flowsKeeper.restore(this.options.flowsFile, this.actions);
      if (this.options.tun !== undefined) this.tun = openTun(this.options.tun, this.options.mtu);
      if (this.changes !== null) {
        this.threads = await startPacketThreads({
          options: this.options, log: this.log, tunFd: this.tunFd, trace: this.trace, traceShared: this.traceShared,
          connTables: this.conntrack.tables, changes: this.changes, tracer: () => this.tracer, onFatal: (err) => this.onFatal(err),
        }, this.queues);
      } else this.bindQueues();
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
        this.actions.keepEndedFlows = true;
      }
    } catch (err) {
      await this.stop();
      throw err;
    }
    if (this.threads !== null) this.threads.run();
    else for (let qi = 0; qi < this.queues.length; qi++) (this.queues[qi] as PacketQueue).start(this.batchHandler(qi));
    this.started = true;
    this.startTimers();
    this.log.notice(
      {
        mode: this.options.mode,
        queues: this.options.queues,
        portids: this.queues.map((q) => q.portid),
        control: this.control?.address,
        trace: this.options.traceAddress,
        metrics: this.metrics?.address ?? null,
        tshm: this.tables.fixed?.name,
        workers: this.threads?.size ?? 0,
        tun: this.tun?.name,
        // Memory of --conntrack, stated at start: entries × bytes, per table (one per packet thread).
        conntrack: this.conntrack.startFields(),
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

  /** The single loop: every queue bound on this thread, nfqlb's line printed for each. */
  private bindQueues(): void {
    for (let qi = 0; qi < this.options.queues.length; qi++) {
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
  }

  /** Once a second: the tables checked, the log level followed; counted failures logged, fragment statistics written. */
  private startTimers(): void {
    const every = this.options.tableCheckMs ?? TABLE_CHECK_INTERVAL_MS;
    if (every > 0) {
      this.tableTimer = setInterval(() => {
        if (this.threads !== null && this.tableChecks.busFaults.pending) this.tableChecks.onBusFault(this.tables);
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
  }

  /**
   * The per-queue batch handler of the single loop: the packet threads' one
   * (makeBatchHandler) over this thread's arrays. Whether to trace is decided
   * once per batch: with no trace client the mask is 0 and the loop has no
   * trace work at all.
   */
  private batchHandler(qi: number): (batch: QueueBatch) => void {
    const busFaults = this.tableChecks.busFaults;
    const traceFlows = this.options.mode === 'flowlb' ? this.traceFlows : null;
    const counters = { accepted: this.accepted, dropped: this.dropped };
    const sink: TraceSink = {
      perPacketMask: () => (this.tracer === null ? 0 : this.tracer.perPacketMask),
      formatPacket: formatPacketTrace,
      send: (text) => this.tracer?.traceLines(text),
    };
    const afterBatch = (): void => {
      if (busFaults.pending) this.tableChecks.onBusFault(this.tables);
    };
    return makeBatchHandler(this.pipeline, counters, this.batchSizes, qi, sink, traceFlows, afterBatch, this.tunFd, this.fragments.tunErrno);
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

  private metricsSource(): ReturnType<typeof daemonMetricsSource> {
    return daemonMetricsSource({
      ready: () => this.started && this.queues.length === this.options.queues.length && this.queues.every((q) => !q.closed),
      queues: this.queues,
      accepted: this.accepted,
      dropped: this.dropped,
      reasonCounts: this.pipeline.reasonCounts,
      flows: this.flows,
      tables: this.tables,
      batchSizes: this.batchSizes,
      actions: this.actions,
      flowsFileErrors: () => this.flowsFileErrors,
      openRefused: this.openRefused,
      tableFaults: this.tableFaults,
      conntrack: this.conntrack,
      fragments: this.fragments,
      traceChannelDropped: () => this.traceChannelDropped,
      refresh: () => this.refreshFromThreads(),
    });
  }

  /**
   * One control request, counted and traced. Never throws. With packet
   * threads: a list is answered with their counts collected first, a change
   * only once every thread acknowledged it.
   */
  handleControl(req: ControlRequest): ControlReply | Promise<ControlReply> {
    return this.actions.handle(req);
  }

  /** A refused control request: counted by reason, logged at most once a second per reason with the raw bytes escaped and cut. */
  noteRefused(why: string): void {
    this.actions.noteRefused(why);
  }

  /** Handled control requests by action and result (nfqlb_control_requests_total). */
  get controlRequests(): LabeledCounter {
    return this.actions.requests;
  }

  /** Refused control requests by reason (nfqlb_control_refused_total). */
  get controlRefused(): KeyCounter {
    return this.actions.refused;
  }

  /** The flows' targets (flowlb). */
  get targets(): TargetRegistry<ServedTable> {
    return this.tables.targets;
  }

  /** Table faults by (target, fault) (nfqlb_table_faults_total). */
  get tableFaults(): LabeledCounter {
    return this.tableChecks.faults;
  }

  /** --conntrack's tables (empty without it). */
  get connTables(): ConnTable[] {
    return this.conntrack.tables;
  }

  /** Failed writes of --flows_file. */
  get flowsFileErrors(): number {
    return this.flowsKeeper.errors;
  }

  /** --flows_file's writer (null without the option, or before start). */
  get flowsJournal(): FlowsJournal | null {
    return this.flowsKeeper.journal;
  }

  /** null stops the writing (bench/flows-file.ts measures its baseline so). */
  set flowsJournal(journal: FlowsJournal | null) {
    this.flowsKeeper.journal = journal;
  }

  /** A line when a table loses its last active target and when it gets one back (see TableChecks). */
  checkActiveTargets(): void {
    this.tableChecks.checkActiveTargets(this.tables);
  }

  /**
   * Checks every open table's file (see DaemonTables.refresh). Called every
   * TABLE_CHECK_INTERVAL_MS and at once after a repaired page fault. Returns
   * the names of the tables reopened.
   */
  refreshTables(): string[] {
    return this.tables.refresh();
  }

  /** Sums the threads' shared counters into this thread's arrays (what metrics and the failure log read). */
  private foldThreadCounters(): void {
    if (this.threads === null) return;
    this.traceChannelDropped = foldThreadCounters(this.threads, { accepted: this.accepted, dropped: this.dropped, reasons: this.pipeline.reasonCounts, batchSizes: this.batchSizes });
  }

  /** Collects the threads' counts into this thread's objects (see collectFromThreads). */
  async refreshFromThreads(): Promise<void> {
    if (this.threads === null) return;
    await collectFromThreads(this.threads, this.flows, this.traceFlows, () => this.tables.served(), () => this.foldThreadCounters());
  }

  /** Queue errors per queue and reason, read from the addon (cheap: a handful of numbers). */
  queueErrors(): { queueNum: number; portid: number; reason: string; count: number }[] {
    return queueErrors(this.queues);
  }

  /**
   * Every second: what the packet path and the addon counted since the last
   * run becomes at most one log line per reason (never a line per packet).
   */
  logFailures(): void {
    this.foldThreadCounters();
    const store = this.fragments.storeCounters();
    this.failureCounts.note(this.pipeline.reasonCounts, store, { name: this.tun?.name ?? '', errno: this.fragments.lastTunErrno() }, this.queues);
  }

  /** The statistics arrays of every fragment table: one per packet thread (their shared counters), or the single loop's. */
  fragmentStatsArrays(): Float64Array[] {
    return this.fragments.arrays();
  }

  /** The fragment store counters (FSTORE_*), summed over the packet threads' stores; null without a store (no --tun). */
  fragmentStoreCounters(): Float64Array | null {
    return this.fragments.storeCounters();
  }

  /** nfqlb's fragStats, summed over the fragment tables. */
  fragmentStats(): FragStats {
    return this.fragments.stats();
  }

  /** Every second and at stop: expired fragments (and the single loop's connections) freed, --ft_shm written. */
  writeFragmentStats(): void {
    this.fragments.write();
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
      if (this.fragments.writing) this.fragments.write();
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
      this.tables.closeFixed();
      if (this.tun !== null) closeTun(this.tun);
    })();
    return this.stopping;
  }
}
