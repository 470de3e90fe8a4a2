/**
 * The daemon behind `nfqlb flowlb` and `nfqlb lb`: binds the queues, runs the
 * pipeline on every batch, and serves the control socket. Where the verdict is
 * sent: `handleBatch` fills `batch.verdicts`, and the addon sends them all in
 * one message when it returns (see queue.ts).
 *
 * All queues of `--queue=A:B` are served by this one event loop: decisions are
 * a few hundred nanoseconds of JavaScript, and the kernel work of forwarding an
 * accepted packet happens inside the verdict send, so one thread already keeps
 * a core busy (numbers in docs/architecture.md).
 */
import * as fs from 'node:fs';
import { performance } from 'node:perf_hooks';
import { NfqlbError } from './errors';
import { FlowSet, type FlowCmd } from './flows';
import type { Logger } from './log';
import { MaglevTable } from './maglev';
import { Pipeline, type PipelineOptions } from './pipeline';
import { PacketQueue, VERDICT_DROP, type QueueBatch } from './queue';
import { closeTable, openOrCreateTraceShm, openTable, closeTraceShm, tableIsStale, type TraceShm } from './shm';
import { Target, TargetRegistry, type LookupTable, type TableSource } from './targets';
import { startControlServer, type ControlReply, type ControlRequest, type ControlServer } from './control';
import { cAtoi } from './flows';

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

/** Tables come from /dev/shm, read-only. A table that cannot be opened is logged and reported as missing. */
function shmTables(log: Logger): TableSource<Table> {
  return {
    open(name) {
      try {
        return openTable(name);
      } catch (err) {
        log.notice({ target: name, err: (err as Error).message }, 'cannot open table');
        return null;
      }
    },
    close(_name, table) {
      closeTable(table);
    },
  };
}

export class Daemon {
  readonly flows: FlowSet<Target<Table>>;
  readonly traceFlows: FlowSet<string>;
  readonly targets: TargetRegistry<Table>;
  readonly pipeline: Pipeline<Table>;
  readonly queues: PacketQueue[] = [];
  /** Accepted / dropped packets per queue index (folded into metrics when scraped). */
  readonly accepted: Float64Array;
  readonly dropped: Float64Array;
  private control: ControlServer | null = null;
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
    this.targets = new TargetRegistry(shmTables(log));
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
          refused: (why) => this.log.notice({ why }, 'control request refused'),
        });
      }
    } catch (err) {
      await this.stop();
      throw err;
    }
    for (let qi = 0; qi < this.queues.length; qi++) this.queues[qi].start(this.batchHandler(qi));
    const every = this.options.tableCheckMs ?? TABLE_CHECK_INTERVAL_MS;
    if (every > 0) {
      this.tableTimer = setInterval(() => this.refreshTables(), every);
      this.tableTimer.unref();
    }
    this.log.notice(
      {
        mode: this.options.mode,
        queues: this.options.queues,
        portids: this.queues.map((q) => q.portid),
        control: this.control?.address,
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
    const swapped = this.targets.refresh(replaced);
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

  private reopen(name: string): Table | null {
    try {
      return openTable(name);
    } catch (err) {
      this.log.notice({ target: name, err: (err as Error).message }, 'cannot reopen table');
      return null;
    }
  }

  /** The per-queue batch handler: one pipeline decision per packet, no allocation. */
  private batchHandler(qi: number): (batch: QueueBatch) => void {
    const pipeline = this.pipeline;
    const accepted = this.accepted;
    const dropped = this.dropped;
    return (batch: QueueBatch): void => {
      const now = performance.now();
      const n = batch.count;
      const packets = batch.packets;
      const offsets = batch.offsets;
      const lengths = batch.lengths;
      const verdicts = batch.verdicts;
      let acc = 0;
      for (let i = 0; i < n; i++) {
        const fw = pipeline.decide(packets, offsets[i], lengths[i], now);
        if (fw >= 0) {
          verdicts[i] = fw;
          acc++;
        } else {
          verdicts[i] = VERDICT_DROP;
        }
      }
      accepted[qi] += acc;
      dropped[qi] += n - acc;
    };
  }

  /** One control request (SPEC.md §7). Never throws. */
  handleControl(req: ControlRequest): ControlReply {
    const action = req.action;
    if (action === undefined) return { text: 'FAIL: no action' };
    const cmd: FlowCmd = {
      name: req.name,
      target: req.target,
      priority: req.priority === undefined ? 0 : cAtoi(req.priority),
      protocols: req.protocols,
      dsts: req.dsts,
      srcs: req.srcs,
      dports: req.dports,
      sports: req.sports,
      match: req.match,
      udpencap: req.udpencap === undefined ? 0 : cAtoi(req.udpencap) & 0xffff,
    };
    switch (action) {
      case 'set': {
        const reply = this.flows.applySet(cmd, this.targets);
        this.log.notice({ action, flow: cmd.name, target: cmd.target, reply }, 'flow-set');
        return { text: reply };
      }
      case 'delete': {
        const reply = this.flows.applyDelete(cmd.name, this.targets);
        this.log.notice({ action, flow: cmd.name, reply }, 'flow-delete');
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
