/**
 * The daemon's failure lines: what the packet path, the addon and the control
 * server counted becomes at most one log line a second per kind of failure,
 * with a count (never a line per packet or per request). Keys of the lines
 * are "kind:reason".
 */
import type { Logger } from '../base/log';
import { escapeBytes, RateLimitedLog } from '../base/ratelog';
import { tunWriteErrorText } from '../addon/tun';
import { FSTORE_WRITE_ERRORS } from '../fragments/store';
import { REASON_FRAGMENT_LOST, REASON_FRAGMENT_MISS, REASON_FRAGMENT_TABLE_FULL, REASON_INVALID, REASON_NAMES } from '../datapath/pipeline';
import { bytesToText } from '../services/control';
import type { QueueView } from './workers';

/** How often counted failures (queue errors, bad packets, refusals) are turned into log lines (ms). */
export const HOUSEKEEPING_INTERVAL_MS = 1000;

// The queue counters of the addon by reason, declared once with QueueStats.
import { QUEUE_ERROR_FIELDS, VERDICT_ERROR_REASONS } from '../addon/queue';

/** The writer of the failure lines: at most one per second per key, with a count and the last one's detail. */
export function failureLines(log: Logger, flowsFile: string | undefined): RateLimitedLog {
  return new RateLimitedLog((key, count, detail) => {
    const colon = key.indexOf(':');
    const kind = key.slice(0, colon);
    const reason = key.slice(colon + 1);
    if (kind === 'refused') log.warn({ reason, count, last: detail }, 'control requests refused');
    else if (kind === 'failed') {
      const fields = JSON.parse(detail ?? '{}') as Record<string, string>;
      if (reason === 'open-table') log.warn({ ...fields, count }, 'cannot open table');
      else log.warn({ ...fields, count }, `${reason} failed`);
    }
    else if (kind === 'flowsfile') log.error({ flowsFile, count, err: detail }, 'flows file not written');
    else if (kind === 'packets') log.notice({ reason, count }, 'packets dropped as bad');
    else log.warn({ reason, count, queue: detail }, VERDICT_ERROR_REASONS.has(reason) ? 'verdicts not delivered' : 'queue errors');
  });
}

/**
 * A failed request (control, or a table that cannot be opened): its fields
 * escaped and cut to 80 bytes (any process in the namespace can send as many
 * as it likes), as the detail of its kind's line.
 */
export function noteFailed(lines: RateLimitedLog, what: string, fields: Record<string, string | undefined>): void {
  const cut: Record<string, string> = {};
  for (const [k, v] of Object.entries(fields)) if (v !== undefined) cut[k] = escapeBytes(bytesToText(v));
  lines.note(`failed:${what}`, JSON.stringify(cut));
}

/** Queue errors per queue and reason, read from the addon (cheap: a handful of numbers). */
export function queueErrors(queues: readonly QueueView[]): { queueNum: number; portid: number; reason: string; count: number }[] {
  const out = [];
  for (const q of queues) {
    const s = q.stats();
    for (const [reason, field] of QUEUE_ERROR_FIELDS) out.push({ queueNum: q.queueNum, portid: q.portid, reason, count: s[field] });
  }
  return out;
}

/** What the packet path and the queues counted, as failure lines: each run notes only what is new since the last. */
export class FailureCounts {
  private readonly seenReasons = new Float64Array(REASON_NAMES.length);
  private readonly seenQueueErrors: number[][] = [];
  private seenTunErrors = 0;

  constructor(private readonly lines: RateLimitedLog) {}

  /**
   * Every second: bad packets (by reason), failed re-injections through the
   * tun device (`store`: the fragment store counters, null without one) and
   * queue errors since the last run are noted, then the lines are written.
   */
  note(reasonCounts: Float64Array, store: Float64Array | null, tun: { name: string; errno: number }, queues: readonly QueueView[]): void {
    for (const r of [REASON_INVALID, REASON_FRAGMENT_MISS, REASON_FRAGMENT_TABLE_FULL, REASON_FRAGMENT_LOST]) {
      const n = reasonCounts[r] - this.seenReasons[r];
      this.seenReasons[r] = reasonCounts[r];
      if (n > 0) this.lines.note(`packets:${REASON_NAMES[r]}`, undefined, n);
    }
    if (store !== null) {
      const n = store[FSTORE_WRITE_ERRORS] - this.seenTunErrors;
      this.seenTunErrors = store[FSTORE_WRITE_ERRORS];
      if (n > 0) this.lines.note('queue:tun_write', tunWriteErrorText(tun.name, tun.errno), n);
    }
    for (let qi = 0; qi < queues.length; qi++) {
      const q = queues[qi];
      if (q.closed) continue;
      const s = q.stats();
      const seen = (this.seenQueueErrors[qi] ??= QUEUE_ERROR_FIELDS.map(() => 0));
      QUEUE_ERROR_FIELDS.forEach(([reason, field], i) => {
        const n = s[field] - seen[i];
        seen[i] = s[field];
        if (n > 0) this.lines.note(`queue:${reason}`, `${q.queueNum}${s.lastErrnoName === null ? '' : ` (${s.lastErrnoName})`}`, n);
      });
    }
    this.lines.flush();
  }
}
