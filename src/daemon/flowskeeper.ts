/**
 * The daemon's side of --flows_file: the flows restored at start, every
 * accepted change appended (and synced) before the client gets its OK, the
 * journal compacted from the flow sets as they are.
 */
import type { Logger } from '../base/log';
import type { KeyCounter } from '../base/counters';
import type { RateLimitedLog } from '../base/ratelog';
import type { FlowSet } from '../flows/flowset';
import type { ServedTable } from '../tables/servedtable';
import type { Target } from '../tables/targets';
import type { ControlReply, ControlRequest } from '../services/control';
import { FlowsRecord, loadFlowsFile, type FlowsFileContent } from './flowsfile';
import { FlowsJournal } from './flowsjournal';
import { openRefusal } from './openrefusal';

/** What restoring replays the file through: the control actions, quietly. */
export interface FlowsReplay {
  restoring: boolean;
  reply(req: ControlRequest): ControlReply;
}

export interface FlowsKeeperContext {
  readonly log: Logger;
  readonly failures: RateLimitedLog;
  /** Opens refused because the name was not a regular file, by object. */
  readonly openRefused: KeyCounter;
  readonly flows: FlowSet<Target<ServedTable>>;
  readonly traceFlows: FlowSet<string>;
  /** The journal is compacted once its records pass this many bytes (and COMPACT_FACTOR × the snapshot). */
  readonly compactBytes?: number;
}

export class FlowsKeeper {
  /** Failed writes of --flows_file. */
  errors = 0;
  /** --flows_file's writer (null without the option, or before start). */
  journal: FlowsJournal | null = null;
  private record: FlowsRecord | null = null;

  constructor(private readonly c: FlowsKeeperContext) {}

  /**
   * --flows_file at start: all of it or nothing (a bad file stops the start,
   * untouched); then the file is rewritten as a fresh journal (an old-format
   * file migrated, a torn last record dropped) and changes are appended to it.
   */
  restore(file: string, replay: FlowsReplay): void {
    const log = this.c.log;
    const loaded = loadFlowsFile(file);
    const content = loaded?.content ?? null;
    this.record = new FlowsRecord(content);
    let failed = 0;
    if (content !== null) {
      // One summary line below, not a flow-set line per restored flow (10,000 of them at 10,000 flows).
      replay.restoring = true;
      for (const f of content.flows) {
        const reply = replay.reply({ ...f, action: 'set' });
        if (!('text' in reply) || reply.text !== 'OK') {
          failed++;
          // Kept in the file: the table may come back; setting or deleting the flow replaces the entry.
          log.warn({ flow: f.name, target: f.target, reply: 'text' in reply ? reply.text : '' }, 'flow from the flows file not restored');
        }
      }
      for (const f of content.traceFlows) replay.reply({ ...f, action: 'trace-set' });
      replay.restoring = false;
    }
    if (loaded !== null && loaded.tornBytes > 0) {
      log.warn({ flowsFile: file, tornBytes: loaded.tornBytes }, 'flows file ended in a torn record (a crash while it was written, so never acknowledged); dropped');
    }
    this.journal = new FlowsJournal(file, {
      snapshot: () => this.snapshot(),
      minCompactBytes: this.c.compactBytes,
      onError: (err) => {
        this.errors++;
        if (openRefusal(err) === 'not_file') this.c.openRefused.inc('flows_file');
        this.c.failures.note('flowsfile:write', err.message);
      },
    });
    this.journal.open();
    if (content === null) log.notice({ flowsFile: file }, 'no flows file yet; starting without flows');
    else log.notice({ flowsFile: file, flows: content.flows.length - failed, failed, traceFlows: content.traceFlows.length, records: loaded!.records, migrated: loaded!.legacy }, 'flows restored');
  }

  /** After a successful change: one record appended (and synced) before the client gets its OK. */
  persist(req: ControlRequest): void {
    const record = this.record?.apply(req) ?? null;
    if (record !== null) this.journal?.append(record);
  }

  /** What a compaction writes: every stored flow, in the sets' lookup order (so a replay rebuilds that order). */
  private snapshot(): FlowsFileContent {
    return this.record!.content({
      flows: this.c.flows.flows.filter((f) => f.target !== null).map((f) => f.name),
      traceFlows: this.c.traceFlows.flows.map((f) => f.name),
    });
  }
}
