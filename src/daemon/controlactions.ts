/**
 * The daemon's control actions: one request of the control protocol
 * (flow-set, flow-delete, flow-list, trace-flow-*, conntrack) applied,
 * answered, counted and traced. With packet threads a list is answered with
 * their counts collected first, and a change only once every thread
 * acknowledged it.
 */
import type { Logger } from '../base/log';
import { escapeBytes, type RateLimitedLog } from '../base/ratelog';
import { KeyCounter, LabeledCounter } from '../base/counters';
import { flowCmdFromFields, type FlowCmd } from '../flows/fields';
import type { FlowSet } from '../flows/flowset';
import { applyFlowChange } from '../flows/change';
import type { ServedTable } from '../tables/servedtable';
import type { Target, TargetRegistry } from '../tables/targets';
import { bytesToText, type ControlReply, type ControlRequest } from '../services/control';
import type { FlowCount } from '../services/metrics';
import { TRACE_FLOW_CONF, type TraceServer } from '../services/trace';
import type { ConnTables } from './conntables';
import { noteFailed } from './failurelog';
import type { PacketThreads } from './packetthreads';
import type { FlowOp } from './threadmessages';

/** Control actions as metric labels; anything a client invents counts as "unknown". */
const CONTROL_ACTIONS = new Set(['set', 'delete', 'list', 'list-names', 'trace-set', 'trace-delete', 'trace-list', 'trace-list-names', 'conntrack']);

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

/** What the actions work on and tell. */
export interface ControlContext {
  readonly flows: FlowSet<Target<ServedTable>>;
  readonly traceFlows: FlowSet<string>;
  readonly targets: TargetRegistry<ServedTable>;
  readonly log: Logger;
  readonly failures: RateLimitedLog;
  readonly conntrack: ConnTables;
  /** Accepted changes not yet sent to the packet threads; null without threads. */
  readonly changes: FlowOp[] | null;
  tracer(): TraceServer | null;
  /** The packet threads once started (null before, and without threads). */
  threads(): PacketThreads | null;
  refreshFromThreads(): Promise<void>;
  /** A table's targets are known from its flow-set on. */
  checkActiveTargets(): void;
  /** After a successful change: kept in --flows_file. */
  persist(req: ControlRequest): void;
}

export class ControlActions {
  /** Handled requests by action and result (nfqlb_control_requests_total). */
  readonly requests = new LabeledCounter();
  /** Refused control requests by reason (nfqlb_control_refused_total). */
  readonly refused = new KeyCounter();
  /** Set once a metrics server runs: only then is anyone there to take the ended flows. */
  keepEndedFlows = false;
  /** Flows deleted or replaced since the last scrape, with their last count (MetricsSource.endedFlows). */
  private endedFlows: FlowCount[] = [];
  /** True while --flows_file is replayed at start (no line per restored flow). */
  restoring = false;

  constructor(private readonly c: ControlContext) {}

  /** One control request, counted and traced. Never throws. */
  handle(req: ControlRequest): ControlReply | Promise<ControlReply> {
    if (this.c.threads() === null) return this.finish(req, this.reply(req));
    return this.handleThreaded(req);
  }

  /** A refused control request: counted by reason, logged at most once a second per reason with the raw bytes escaped and cut. */
  noteRefused(why: string): void {
    const reason = refusalReason(why);
    // Counted here only: nfqlb_control_requests_total counts the requests that were handled.
    this.refused.inc(reason);
    this.c.failures.note(`refused:${reason}`, escapeBytes(why));
  }

  private async handleThreaded(req: ControlRequest): Promise<ControlReply> {
    if (req.action === 'list' || req.action === 'trace-list') await this.c.refreshFromThreads();
    // A flow a change takes out keeps its count for the next scrape (noteEndedFlow): collected from
    // the threads first, so only the packets of the moment between this and the threads applying it
    // go uncounted, not all since the last scrape.
    else if (this.keepEndedFlows && (req.action === 'set' || req.action === 'delete')) await this.c.refreshFromThreads();
    const reply = this.reply(req);
    const ops = this.c.changes!.splice(0);
    if (ops.length === 0) return this.finish(req, reply);
    const why = await this.changeThreads(ops);
    // Applied here in any case: kept in the flows file so a restart has what this thread has.
    if (why !== null) this.c.persist(req);
    return this.finish(req, why === null ? reply : { text: `FAIL: ${why}` });
  }

  /**
   * Hands accepted changes to every packet thread and waits for their acks
   * (at most ACK_TIMEOUT_MS): null when all use them, else why not (logged).
   * nfqlb clients then see `FAIL: ...` for a change this thread made but a
   * packet thread may not use yet; `flow-list` shows this thread's view.
   */
  private async changeThreads(ops: FlowOp[]): Promise<string | null> {
    const threads = this.c.threads()!;
    const why = await threads.change(ops);
    const failures = threads.failures.splice(0);
    const text = why ?? (failures.length > 0 ? failures.join('; ') : null);
    if (text !== null) this.c.log.error({ ops: ops.map((o) => o.op), why: text }, 'flow change not taken by every packet thread');
    return text;
  }

  private finish(req: ControlRequest, reply: ControlReply): ControlReply {
    const action = req.action === undefined ? 'none' : CONTROL_ACTIONS.has(req.action) ? req.action : 'unknown';
    const ok = 'json' in reply || reply.text === 'OK';
    this.requests.inc(action, ok ? 'ok' : 'fail');
    if (ok) this.c.persist(req);
    const replyText = 'text' in reply ? reply.text : '';
    // set and delete have their own line, with the reply, at warn when it is not OK.
    if (!ok && action !== 'set' && action !== 'delete') noteFailed(this.c.failures, `control request (${action})`, { flow: req.name, reply: replyText });
    this.c.log.debug({ action, flow: req.name, ok, reply: 'text' in reply ? replyText : 'json' }, 'control request');
    if ('text' in reply) this.c.tracer()?.trace(TRACE_FLOW_CONF, `writeReply [${reply.text}]\n`);
    return reply;
  }

  /** The reply to one request, its change applied (not counted, traced or kept: also what --flows_file is restored with). */
  /** The flows that ended since the last call, for one scrape (MetricsSource.endedFlows). */
  takeEndedFlows(): FlowCount[] {
    return this.endedFlows.splice(0);
  }

  /**
   * Keeps the last count of a flow that a delete or set took out of the flow
   * set for the next scrape, so a flow that lived between two scrapes is still
   * seen in nfqlb_flow_matches_total (with packet threads: its count as of
   * the last scrape). Bounded: without a metrics server nobody takes them.
   */
  private noteEndedFlow(flow: ReturnType<FlowSet<Target<ServedTable>>['get']>): void {
    if (flow === undefined || !this.keepEndedFlows || this.c.flows.get(flow.name) === flow) return;
    // Without scrapes only the latest are kept.
    if (this.endedFlows.length >= MAX_ENDED_FLOWS) this.endedFlows.shift();
    this.endedFlows.push({ name: bytesToText(flow.name), target: flow.target === null ? null : bytesToText(flow.target.name), matches: flow.matches, instance: flow });
  }

  reply(req: ControlRequest): ControlReply {
    const action = req.action;
    if (action === undefined) return { text: 'FAIL: no action' };
    const { flows, traceFlows, targets, changes, log } = this.c;
    // The server parses what the CLI sent exactly as flowCmdFromArgs does (atoi for numbers).
    const cmd: FlowCmd = flowCmdFromFields(req);
    switch (action) {
      case 'set': {
        const before = cmd.name === undefined ? undefined : flows.get(cmd.name);
        const reply = applyFlowChange<Target<ServedTable>>(flows, traceFlows, targets, action, cmd);
        if (reply === 'OK') this.noteEndedFlow(before);
        if (reply === 'OK') changes?.push({ op: 'set', cmd });
        // A table's targets are known from its flow-set on, not only from the next check: losing them within the
        // first second is a loss to report too.
        if (reply === 'OK' && !this.restoring) this.c.checkActiveTargets();
        if (reply !== 'OK') noteFailed(this.c.failures, 'flow-set', { flow: cmd.name, target: cmd.target, reply });
        else if (!this.restoring) log.notice({ action, flow: cmd.name && bytesToText(cmd.name), target: cmd.target && bytesToText(cmd.target), reply }, 'flow-set');
        return { text: reply };
      }
      case 'delete': {
        const before = cmd.name === undefined ? undefined : flows.get(cmd.name);
        const reply = applyFlowChange<Target<ServedTable>>(flows, traceFlows, targets, action, cmd);
        if (reply === 'OK') this.noteEndedFlow(before);
        if (reply === 'OK') changes?.push({ op: 'delete', name: cmd.name });
        if (reply === 'OK') log.notice({ action, flow: cmd.name && bytesToText(cmd.name), reply }, 'flow-delete');
        else noteFailed(this.c.failures, 'flow-delete', { flow: cmd.name, reply });
        return { text: reply };
      }
      case 'list':
        return { json: flows.list(req.name) };
      case 'list-names':
        return { json: flows.listNames() };
      case 'trace-set': {
        const reply = applyFlowChange<Target<ServedTable>>(flows, traceFlows, targets, action, cmd);
        if (reply === 'OK') changes?.push({ op: 'trace-set', cmd: { ...cmd, name: cmd.name! } });
        return { text: reply };
      }
      case 'trace-delete': {
        const reply = applyFlowChange<Target<ServedTable>>(flows, traceFlows, targets, action, cmd);
        if (reply === 'OK') changes?.push({ op: 'trace-delete', name: cmd.name! });
        return { text: reply };
      }
      case 'trace-list':
        return { json: traceFlows.list(req.name) };
      case 'trace-list-names':
        return { json: traceFlows.listNames() };
      case 'conntrack':
        return this.c.conntrack.reply(req);
      default:
        return { text: 'FAIL: action unknown' };
    }
  }
}
