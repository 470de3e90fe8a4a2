/**
 * --conntrack's tables as the daemon holds them: the single loop's one, or
 * one per packet thread over a SharedArrayBuffer each (the thread writes it,
 * this thread reads it for metrics and `nfqlb conntrack`).
 */
import { performance } from 'node:perf_hooks';
import { NfqlbError } from '../base/errors';
import { inetPton6 } from '../base/inet';
import { djb2Bits, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, KEY_LEN, tupleKey } from '../packet/hashkey';
import { ConnTable, CT_ENTRY_BYTES, CT_STAT_FIELDS, CT_STAT_NAMES, entriesPerTable, sumConnStats, type ConnTrackOptions } from '../datapath/conntrack';
import type { ControlReply, ControlRequest } from '../services/control';

/** The 40-byte hash key of a connection named in a `conntrack` request, as classify() would build it; null when a field is missing or wrong. */
export function connectionKey(req: ControlRequest): Uint8Array | null {
  const proto = { tcp: IPPROTO_TCP, udp: IPPROTO_UDP, sctp: IPPROTO_SCTP }[req.protocols ?? ''];
  const src = new Uint8Array(16);
  const dst = new Uint8Array(16);
  const sport = Number(req.sports);
  const dport = Number(req.dports);
  if (proto === undefined || !inetPton6(req.srcs ?? '', src) || !inetPton6(req.dsts ?? '', dst)) return null;
  if (!(Number.isInteger(sport) && sport >= 0 && sport <= 65535 && Number.isInteger(dport) && dport >= 0 && dport <= 65535)) return null;
  return tupleKey(src, sport, dst, dport, proto);
}

export class ConnTables {
  /** Empty without --conntrack. */
  readonly tables: ConnTable[] = [];
  private readonly statsSum = new Float64Array(CT_STAT_FIELDS);

  /**
   * One table per thread that decides (`deciders`), over shared memory when
   * `shared` (packet threads), each prefaulted. Throws NfqlbError
   * NFQLB_ERR_MEMORY when the memory is not there.
   */
  constructor(ct: ConnTrackOptions | undefined, deciders: number, shared: boolean) {
    if (ct === undefined || ct.capacity <= 0) return;
    const perThread = entriesPerTable(ct.capacity, deciders);
    try {
      for (let i = 0; i < deciders; i++) {
        const table = new ConnTable(perThread, ct, shared ? new SharedArrayBuffer(ConnTable.bytes(perThread)) : undefined);
        table.prefault();
        this.tables.push(table);
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

  /** Entries of all tables. */
  capacity(): number {
    return this.tables.reduce((a, t) => a + t.capacity, 0);
  }

  /** The tables' counters (CT_*) summed, into one array reused by every call. */
  stats(): Float64Array {
    return sumConnStats(this.tables, this.statsSum);
  }

  /** What metrics read: null without --conntrack. */
  reading(): { capacity: number; stats: Float64Array } | null {
    return this.tables.length === 0 ? null : { capacity: this.capacity(), stats: this.stats() };
  }

  /** Memory of --conntrack as the start line states it (entries × bytes, per table); undefined without. */
  startFields(): { entries: number; tables: number; bytes: number } | undefined {
    if (this.tables.length === 0) return undefined;
    return { entries: this.capacity(), tables: this.tables.length, bytes: this.tables.reduce((a, t) => a + t.buffer.byteLength, 0) };
  }

  /**
   * `nfqlb conntrack` (an extension): the tables' counters summed and, for a
   * connection given as protocols/srcs/sports/dsts/dports, its entry in
   * whichever table holds it. Read from here without stopping the threads
   * (their tables are shared memory); an entry being rewritten may read old.
   */
  reply(req: ControlRequest): ControlReply {
    if (this.tables.length === 0) return { text: 'FAIL: no connection table (start the daemon with --conntrack=N)' };
    const s = this.stats();
    const report: Record<string, unknown> = {
      capacity: this.capacity(),
      tables: this.tables.length,
    };
    CT_STAT_NAMES.forEach((name, i) => (report[name] = s[i]));
    if (req.protocols !== undefined) {
      const key = connectionKey(req);
      if (key === null) return { text: 'FAIL: give the connection as protocols (tcp|udp|sctp), srcs, sports, dsts, dports' };
      const hash = djb2Bits(key, 0, KEY_LEN);
      const wallNow = performance.timeOrigin + performance.now();
      let found: Record<string, unknown> = { found: false };
      this.tables.forEach((t, i) => {
        const e = t.peek(key, hash, wallNow - t.clockOrigin[0]);
        if (e !== null && !e.expired) found = { found: true, table: i, fwmark: e.fwmark, slot: e.slot, idle_ms: Math.round(e.idleMs) };
      });
      report.connection = found;
    }
    return { json: `${JSON.stringify(report)}\n` };
  }
}
