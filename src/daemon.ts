/**
 * The daemon behind `nfqlb flowlb` and `nfqlb lb`: binds the queues, runs the
 * pipeline on every batch, and serves the control socket. Where the verdict is
 * sent: `handleBatch` fills `batch.verdicts`, and the addon sends them all in
 * one message when it returns (see queue.ts).
 *
 * All queues of `--queue=A:B` are served by this one event loop: decisions are
 * a few hundred nanoseconds of JavaScript, and the kernel work of forwarding an
 * accepted packet happens inside the verdict send, so one thread already keeps
 * a core busy (numbers in docs/performance.md).
 */
import * as fs from 'node:fs';
import { performance } from 'node:perf_hooks';
import { NfqlbError } from './errors';
import { bytesToText } from './control';
import { FlowSet, flowCmdFromArgs, type FlowCmd } from './flows';
import type { Logger } from './log';
import { MaglevTable } from './maglev';
import { Pipeline, type PipelineOptions } from './pipeline';
import { PacketQueue, VERDICT_DROP, type QueueBatch } from './queue';
import { closeTable, openOrCreateTraceShm, openTable, closeTraceShm, tableIsStale, type TraceShm } from './shm';
import { Target, TargetRegistry, type LookupTable, type TableSource } from './targets';
import { startControlServer, type ControlReply, type ControlRequest, type ControlServer } from './control';
import { BatchSizeHistogram, LabeledCounter } from './counters';
import { pinoLevel } from './log';
import { startMetricsServer, type MetricsServer, type MetricsSource } from './metrics';
import { REASON_NAMES, REASON_TARGET } from './pipeline';
import { TraceServer, TRACE_FLOW_CONF, TRACE_TARGET } from './trace';

/** How often open tables are checked for having been re-created (ms). */
export const TABLE_CHECK_INTERVAL_MS = 1000;

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
}

type Table = MaglevTable & LookupTable;

/** Whether shm `name` exists now (one stat). */
function shmExists(name: string): boolean {
  return fs.existsSync(`/dev/shm/${name}`);
}

/**
 * True when the table's shm object was replaced by another one that exists
 * (`nfqlb init` with another M or N, or delete + init). A deleted table is not
 * stale: there is nothing to reopen, and its mapping keeps working, as in nfqlb.
 */
function replaced(name: string, table: MaglevTable): boolean {
  return tableIsStale(table) && shmExists(name);
}

/**
 * Tables come from /dev/shm, read-only. A table that cannot be opened is
 * logged and reported as missing. Target names are the bytes a control
 * request carried (latin1 binary strings, see control.ts).
 */
function shmTables(log: Logger, trace: (bit: number, text: string) => void): TableSource<Table> {
  return {
    open(name) {
      try {
        const table = openTable(bytesToText(name));
        trace(TRACE_TARGET, `Creating LB; ${name}\n`);
        return table;
      } catch (err) {
        trace(TRACE_TARGET, `Map shm failed; ${name}\n`);
        log.notice({ target: bytesToText(name), err: (err as Error).message }, 'cannot open table');
        return null;
      }
    },
    close(name, table) {
      trace(TRACE_TARGET, `Delete load-balancer; ${name}\n`);
      closeTable(table);
    },
  };
}

/** Control actions as metric labels; anything a client invents counts as "unknown". */
const CONTROL_ACTIONS = new Set(['set', 'delete', 'list', 'list-names', 'trace-set', 'trace-delete', 'trace-list', 'trace-list-names']);

export class Daemon {
  readonly flows: FlowSet<Target<Table>>;
  readonly traceFlows: FlowSet<string>;
  readonly targets: TargetRegistry<Table>;
  readonly pipeline: Pipeline<Table>;
  readonly queues: PacketQueue[] = [];
  /** Accepted / dropped packets per queue index (folded into metrics when scraped). */
  readonly accepted: Float64Array;
  readonly dropped: Float64Array;
  readonly batchSizes = new BatchSizeHistogram();
  readonly controlRequests = new LabeledCounter();
  private control: ControlServer | null = null;
  private tracer: TraceServer | null = null;
  private metrics: MetricsServer | null = null;
  private started = false;
  private trace: TraceShm | null = null;
  private fixed: Target<Table> | null = null;
  /** --lbshm: the object the pipeline reads (its table is swapped when re-created). */
  private tier: { table: Table; ownFwmark: number } | null = null;
  private tableTimer: NodeJS.Timeout | null = null;
  private stopping: Promise<void> | null = null;

  constructor(
    readonly options: DaemonOptions,
    readonly log: Logger,
  ) {
    this.targets = new TargetRegistry(shmTables(log, (bit, text) => this.tracer?.trace(bit, text)));
    this.flows = new FlowSet<Target<Table>>({ targetName: (t) => t.name, promiscuousPing: options.promiscuousPing });
    this.traceFlows = new FlowSet<string>({ promiscuousPing: true });
    if (options.mode === 'lb') {
      const name = options.tshm ?? 'nfqlb';
      // nfqlb's mapSharedDataOrDie: the lb table must exist at start.
      this.fixed = new Target(name, openTable(name));
      this.fixed.refs = 1;
    }
    if (options.lbshm !== undefined) {
      try {
        const table = openTable(options.lbshm);
        this.tier = { table, ownFwmark: table.ownFwmark };
      } catch (err) {
        if (this.fixed !== null) closeTable(this.fixed.table);
        throw err;
      }
    }
    this.pipeline = new Pipeline(options.mode === 'flowlb' ? this.flows : null, {
      ...options.pipeline,
      fixedTarget: this.fixed,
      lbTier: this.tier,
    });
    this.accepted = new Float64Array(options.queues.length);
    this.dropped = new Float64Array(options.queues.length);
  }

  /**
   * Binds every queue, then opens the control socket (flowlb), then starts
   * reading. Throws NfqlbError with one line saying why (queue busy, no
   * permission, control socket in use), with nothing left bound.
   */
  async start(): Promise<void> {
    try {
      this.trace = openOrCreateTraceShm();
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
      if (this.options.mode === 'flowlb') {
        this.control = await startControlServer(this.options.flowAddress, {
          handle: (req) => this.handleControl(req),
          refused: (why) => {
            this.controlRequests.inc('invalid', 'refused');
            this.log.notice({ why }, 'control request refused');
          },
        });
      }
      this.tracer = await TraceServer.start(this.options.traceAddress, this.trace, { log: this.log });
      if (this.options.metricsAddress !== null) {
        this.metrics = await startMetricsServer(this.options.metricsAddress, this.metricsSource(), this.log);
      }
    } catch (err) {
      await this.stop();
      throw err;
    }
    for (let qi = 0; qi < this.queues.length; qi++) this.queues[qi].start(this.batchHandler(qi));
    this.started = true;
    const every = this.options.tableCheckMs ?? TABLE_CHECK_INTERVAL_MS;
    if (every > 0) {
      this.tableTimer = setInterval(() => {
        this.refreshTables();
        this.followLogLevel();
      }, every);
      this.tableTimer.unref();
    }
    this.log.notice(
      {
        mode: this.options.mode,
        queues: this.options.queues,
        portids: this.queues.map((q) => q.portid),
        control: this.control?.address,
        trace: this.options.traceAddress,
        metrics: this.metrics?.address ?? null,
        tshm: this.fixed?.name,
      },
      'started',
    );
  }

  /**
   * Swaps in a fresh mapping for every open table whose shm object was
   * re-created (`nfqlb init` with another shape unlinks the file and makes a
   * new one, so the old mapping still works but no longer sees activations).
   * Called every TABLE_CHECK_INTERVAL_MS; one stat per open table.
   * Returns the names of the tables reopened.
   */
  refreshTables(): string[] {
    const swapped = this.targets.refresh((name, table) => replaced(bytesToText(name), table)).map(bytesToText);
    const fixed = this.fixed;
    if (fixed !== null && replaced(fixed.name, fixed.table)) {
      const table = this.reopen(fixed.name);
      if (table !== null) {
        const old = fixed.table;
        fixed.table = table;
        closeTable(old);
        swapped.push(fixed.name);
      }
    }
    const tier = this.tier;
    if (tier !== null && this.options.lbshm !== undefined && replaced(this.options.lbshm, tier.table)) {
      const table = this.reopen(this.options.lbshm);
      if (table !== null) {
        const old = tier.table;
        tier.table = table;
        tier.ownFwmark = table.ownFwmark;
        closeTable(old);
        swapped.push(this.options.lbshm);
      }
    }
    for (const name of swapped) this.log.notice({ target: name }, 'table re-created; reopened');
    return swapped;
  }

  /** `nfqlb loglevel N` writes the shm; the daemon follows it here. */
  private followLogLevel(): void {
    if (this.trace === null) return;
    const level = pinoLevel(this.trace.level);
    if (this.log.level !== level) {
      this.log.level = level;
      this.log.notice({ loglevel: this.trace.level }, 'log level changed');
    }
  }

  /** What /metrics reads; everything is read at scrape time, nothing per packet. */
  private metricsSource(): MetricsSource {
    const reasonCounts = this.pipeline.reasonCounts;
    return {
      ready: () => this.started && this.queues.length === this.options.queues.length && this.queues.every((q) => !q.closed),
      queues: () => this.queues.map((q, qi) => ({ queueNum: q.queueNum, portid: q.portid, accepted: this.accepted[qi], dropped: this.dropped[qi] })),
      reasons: () => REASON_NAMES.map((name, i) => ({ name, count: reasonCounts[i] })),
      flows: () => this.flows.flows.map((f) => ({ name: bytesToText(f.name), target: f.target === null ? null : bytesToText(f.target.name), matches: f.matches, instance: f })),
      targets: () => {
        const all = this.fixed === null ? this.targets.list() : [this.fixed];
        return all.map((t) => {
          let active = 0;
          const slots = t.table.active;
          for (let i = 0; i < slots.length; i++) if (slots[i] >= 0) active++;
          // Flow targets are named by request bytes; lb's one table by its (text) option.
          return { name: this.fixed === null ? bytesToText(t.name) : t.name, activeTargets: active, fwmarks: t.fwmarks };
        });
      },
      batchSizes: this.batchSizes,
      controlRequests: () => this.controlRequests.entries(),
    };
  }

  private reopen(name: string): Table | null {
    try {
      return openTable(name);
    } catch (err) {
      this.log.notice({ target: name, err: (err as Error).message }, 'cannot reopen table');
      return null;
    }
  }

  /**
   * The per-queue batch handler: one pipeline decision per packet, no
   * allocation. Whether to trace is decided once per batch: with no trace
   * client the mask is 0 and the loop has no trace work at all.
   */
  private batchHandler(qi: number): (batch: QueueBatch) => void {
    const pipeline = this.pipeline;
    const last = pipeline.last;
    const accepted = this.accepted;
    const dropped = this.dropped;
    const batchSizes = this.batchSizes;
    const traceFlows = this.options.mode === 'flowlb' ? this.traceFlows : null;
    return (batch: QueueBatch): void => {
      const now = performance.now();
      const n = batch.count;
      const packets = batch.packets;
      const offsets = batch.offsets;
      const lengths = batch.lengths;
      const verdicts = batch.verdicts;
      const tracer = this.tracer;
      const traceMask = tracer === null ? 0 : tracer.perPacketMask;
      let acc = 0;
      for (let i = 0; i < n; i++) {
        const fw = pipeline.decide(packets, offsets[i], lengths[i], now);
        if (fw >= 0) {
          verdicts[i] = fw;
          acc++;
          if (last.reason === REASON_TARGET) last.target!.fwmarks.add(fw);
        } else {
          verdicts[i] = VERDICT_DROP;
        }
        if (traceMask !== 0) tracer!.tracePacket(traceMask, traceFlows, pipeline.info, packets, offsets[i], lengths[i], last);
      }
      accepted[qi] += acc;
      dropped[qi] += n - acc;
      batchSizes.observe(n);
    };
  }

  /** One control request (SPEC.md §7), counted and traced. Never throws. */
  handleControl(req: ControlRequest): ControlReply {
    const reply = this.controlReply(req);
    const action = req.action === undefined ? 'none' : CONTROL_ACTIONS.has(req.action) ? req.action : 'unknown';
    const ok = 'json' in reply || reply.text === 'OK';
    this.controlRequests.inc(action, ok ? 'ok' : 'fail');
    if (!ok) this.log.notice({ action: req.action, flow: req.name, reply: 'text' in reply ? reply.text : '' }, 'control request failed');
    if ('text' in reply) this.tracer?.trace(TRACE_FLOW_CONF, `writeReply [${reply.text}]\n`);
    return reply;
  }

  private controlReply(req: ControlRequest): ControlReply {
    const action = req.action;
    if (action === undefined) return { text: 'FAIL: no action' };
    // The server parses what the CLI sent exactly as flowCmdFromArgs does (atoi for numbers).
    const cmd: FlowCmd = flowCmdFromArgs({ ...req, prio: req.priority });
    switch (action) {
      case 'set': {
        const reply = this.flows.applySet(cmd, this.targets);
        this.log.notice({ action, flow: cmd.name && bytesToText(cmd.name), target: cmd.target && bytesToText(cmd.target), reply: bytesToText(reply) }, 'flow-set');
        return { text: reply };
      }
      case 'delete': {
        const reply = this.flows.applyDelete(cmd.name, this.targets);
        this.log.notice({ action, flow: cmd.name && bytesToText(cmd.name), reply: bytesToText(reply) }, 'flow-delete');
        return { text: reply };
      }
      case 'list':
        return this.listReply(this.flows, req.name);
      case 'list-names':
        return { json: this.flows.listNames() };
      case 'trace-set': {
        // nfqlb replies nothing on success (its CLI then exits 255) and
        // crashes without a name; here: OK, and FAIL: no name.
        if (cmd.name === undefined) return { text: 'FAIL: no name' };
        const err = this.traceFlows.define({ ...cmd, name: cmd.name, target: cmd.name, udpencap: 0 });
        return { text: err ?? 'OK' };
      }
      case 'trace-delete':
        if (cmd.name === undefined) return { text: 'FAIL: no name' };
        this.traceFlows.delete(cmd.name);
        return { text: 'OK' };
      case 'trace-list':
        return this.listReply(this.traceFlows, req.name);
      case 'trace-list-names':
        return { json: this.traceFlows.listNames() };
      default:
        return { text: 'FAIL: action unknown' };
    }
  }

  private listReply<T>(set: FlowSet<T>, name: string | undefined): ControlReply {
    return { json: set.list(name) };
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
      for (const q of this.queues) {
        try {
          q.close();
        } catch (err) {
          this.log.warn({ queue: q.queueNum, err: (err as Error).message }, 'closing queue failed');
        }
      }
      if (this.control !== null) await this.control.close();
      if (this.metrics !== null) await this.metrics.close();
      if (this.tracer !== null) await this.tracer.close();
      if (this.trace !== null) closeTraceShm(this.trace);
      if (this.fixed !== null) closeTable(this.fixed.table);
      if (this.tier !== null) closeTable(this.tier.table);
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
