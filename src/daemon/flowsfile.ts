/**
 * `--flows_file=PATH`: the daemon's flows and trace-flows kept on disk, so a
 * restart (even after `kill -9`) comes back with the configuration it had,
 * instead of waiting for a controller to notice and send it again.
 *
 * What is kept is the control requests themselves: replaying them through
 * the code that served them (flowchange.ts applyFlowChange) rebuilds the same
 * flow set — same order among equal priorities, same hidden '#' flows —
 * hence the same decisions for the same packets.
 *
 * The file is a journal (format nfqlb-ts-flows/2), one line per record, each
 * line `JSON<TAB>checksum`: first a snapshot of every flow and trace-flow
 * (in lookup order), then one record per accepted change (set, delete,
 * trace-set, trace-delete), appended and fdatasynced before the client gets
 * its OK. A change therefore costs one small write and one fdatasync,
 * whatever the number of flows. When the records outgrow the snapshot
 * (COMPACT_FACTOR times, at least MIN_COMPACT_BYTES), the journal is
 * compacted in the background: a new snapshot is written to a temporary file
 * in the same directory and synced (off the event loop), the records
 * appended meanwhile are copied after it, and it is renamed over PATH and
 * the directory synced — a crash at any point leaves either the old journal
 * or the new one, each holding every acknowledged change.
 *
 * Reading: every complete line must pass its checksum, parse, and replay
 * cleanly, or nothing is loaded (the daemon refuses to start: starting
 * without the flows would silently make other decisions). The one exception
 * is a torn last line — bytes after the last newline, what a crash in the
 * middle of an append leaves: that record's fdatasync never returned, so its
 * change was never acknowledged, and it is dropped (and reported).
 *
 * The single-document format of earlier versions (nfqlb-ts-flows/1, one
 * pretty-printed JSON object) is still read; the daemon rewrites it as a
 * journal at start.
 *
 * This module is the format, reading and the atomic whole-file write; the
 * journal's writer (appends, rewrites, compaction) is flowsjournal.ts.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ControlRequest } from '../services/control';
import { NfqlbError } from '../base/errors';
import { applyFlowChange, isFlowChangeAction, type FlowChangeAction } from '../flows/change';
import { FLOW_FIELDS, flowCmdFromFields, type FlowFieldTexts } from '../flows/fields';
import { FlowSet } from '../flows/flowset';
import { readRegularFile } from '../base/regularfile';

/** The single-document format of earlier versions; read, and rewritten as a journal. */
export const FLOWS_FILE_FORMAT = 'nfqlb-ts-flows/1';
/** The journal's format, in its first (snapshot) line. */
export const FLOWS_JOURNAL_FORMAT = 'nfqlb-ts-flows/2';
/** Compact when the records appended since the snapshot exceed this many times its size... */
export const COMPACT_FACTOR = 4;
/** ...and at least this many bytes (so a small set is not rewritten every few changes). */
export const MIN_COMPACT_BYTES = 64 * 1024;

/** A stored request: the fields of a `set` / `trace-set`, without `action`. */
export type StoredFlow = FlowFieldTexts & { name: string };

export interface FlowsFileContent {
  flows: StoredFlow[];
  traceFlows: StoredFlow[];
}

/** One journal record after the snapshot: a change the daemon accepted. */
export type JournalRecord = { op: 'set' | 'trace-set'; flow: StoredFlow } | { op: 'delete' | 'trace-delete'; name: string };

/** What a read found besides the content. */
export interface FlowsFileInfo {
  content: FlowsFileContent;
  /** The file was the single-document format (nfqlb-ts-flows/1). */
  legacy: boolean;
  /** Records after the snapshot. */
  records: number;
  /** Bytes of a torn last record that were dropped (0: none). */
  tornBytes: number;
  /** The number of the last record (journal records are numbered on from the snapshot's `seq`). */
  seq: number;
}

const FIELDS = new Set<string>(FLOW_FIELDS);

function corrupt(file: string, why: string, cause?: unknown): NfqlbError {
  return new NfqlbError(
    `flows file ${file} is unusable: ${why}; it was left untouched and nothing was loaded. ` +
      'Fix or move it away (the controller then has to set the flows again), or drop --flows_file',
    'NFQLB_ERR_FLOWS_FILE',
    { cause },
  );
}

export function writeError(file: string, e: NodeJS.ErrnoException): NfqlbError {
  return new NfqlbError(`cannot write flows file ${file}: ${e.message}; the flows are set but would not survive a restart`, 'NFQLB_ERR_FLOWS_FILE_WRITE', { cause: e });
}

function legacyDigest(content: FlowsFileContent): string {
  return createHash('sha256').update(JSON.stringify({ flows: content.flows, traceFlows: content.traceFlows })).digest('hex');
}

/** The checksum of one journal line's JSON. */
function lineDigest(json: string): string {
  return createHash('sha256').update(json).digest('hex').slice(0, 32);
}

/** One journal line. JSON.stringify escapes a tab inside strings, so the line's only raw tab is the separator. */
export function journalLine(value: object): string {
  const json = JSON.stringify(value);
  return `${json}\t${lineDigest(json)}\n`;
}

/** `seq`: the number of the last record the snapshot includes; the records after it are numbered on from there. */
export function snapshotLine(content: FlowsFileContent, seq: number): string {
  return journalLine({ format: FLOWS_JOURNAL_FORMAT, seq, flows: content.flows, traceFlows: content.traceFlows });
}

/** Checks one stored flow's shape (the values are checked by replaying them). */
function checkStored(file: string, where: string, entry: unknown): StoredFlow {
  if (entry === null || typeof entry !== 'object' || Array.isArray(entry)) throw corrupt(file, `${where} is not an object`);
  for (const [k, v] of Object.entries(entry as Record<string, unknown>)) {
    if (!FIELDS.has(k)) throw corrupt(file, `${where} has an unknown field "${k}"`);
    if (typeof v !== 'string') throw corrupt(file, `${where}.${k} is not a string`);
  }
  if (typeof (entry as { name?: unknown }).name !== 'string') throw corrupt(file, `${where} has no name`);
  return entry as StoredFlow;
}

function checkList(file: string, what: string, list: unknown): StoredFlow[] {
  if (!Array.isArray(list)) throw corrupt(file, `"${what}" is not a list`);
  const names = new Set<string>();
  return list.map((entry, i) => {
    const f = checkStored(file, `${what}[${i}]`, entry);
    if (names.has(f.name)) throw corrupt(file, `${what} has "${f.name}" twice`);
    names.add(f.name);
    return f;
  });
}

function checkRecord(file: string, where: string, value: unknown, seq: number): JournalRecord {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw corrupt(file, `${where} is not an object`);
  const { seq: found, ...r } = value as Record<string, unknown>;
  // Numbered records: a lost, repeated or moved line is refused, not replayed.
  if (found !== seq) throw corrupt(file, `${where} is record ${JSON.stringify(found)}, expected ${seq} (a line is missing, repeated or out of place)`);
  if (r.op === 'set' || r.op === 'trace-set') {
    if (Object.keys(r).length !== 2) throw corrupt(file, `${where} has fields other than "seq", "op" and "flow"`);
    return { op: r.op, flow: checkStored(file, `${where}.flow`, r.flow) };
  }
  if (r.op === 'delete' || r.op === 'trace-delete') {
    if (Object.keys(r).length !== 2 || typeof r.name !== 'string') throw corrupt(file, `${where} needs exactly "seq", "op" and a string "name"`);
    return { op: r.op, name: r.name };
  }
  throw corrupt(file, `${where} has an unknown op ${JSON.stringify(r.op)}`);
}

function recordRequest(r: JournalRecord): ControlRequest & { action: FlowChangeAction } {
  if ('flow' in r) return { ...r.flow, action: r.op };
  return { action: r.op, name: r.name };
}

/**
 * The daemon's record of what is configured: the stored request of every
 * flow and trace-flow by name. The order a snapshot is written in comes from
 * the sets themselves (content()), so a replay rebuilds their lookup order.
 */
export class FlowsRecord {
  readonly flows = new Map<string, StoredFlow>();
  readonly traceFlows = new Map<string, StoredFlow>();

  constructor(content: FlowsFileContent | null = null) {
    if (content === null) return;
    for (const f of content.flows) this.flows.set(f.name, f);
    for (const f of content.traceFlows) this.traceFlows.set(f.name, f);
  }

  /**
   * Notes a request that succeeded. Returns the journal record when the
   * record changed (set, trace-set, delete or trace-delete of a name), null
   * otherwise.
   */
  apply(req: ControlRequest): JournalRecord | null {
    const name = req.name;
    if (name === undefined || !isFlowChangeAction(req.action)) return null;
    const stored = (): StoredFlow => {
      const s: Record<string, string> = {};
      for (const [k, v] of Object.entries(req)) if (k !== 'action' && FIELDS.has(k) && typeof v === 'string') s[k] = v;
      return s as StoredFlow;
    };
    switch (req.action) {
      case 'set': {
        const flow = stored();
        this.flows.set(name, flow);
        return { op: 'set', flow };
      }
      case 'trace-set': {
        const flow = stored();
        this.traceFlows.set(name, flow);
        return { op: 'trace-set', flow };
      }
      case 'delete':
        return this.flows.delete(name) ? { op: 'delete', name } : null;
      case 'trace-delete':
        return this.traceFlows.delete(name) ? { op: 'trace-delete', name } : null;
    }
  }

  /**
   * Every stored flow; with `order` (names in lookup order, as the sets hold
   * them) in that order, then those the sets lack (a flow whose table was
   * missing at start) in first-set order. Without it, first-set order.
   */
  content(order?: { flows: Iterable<string>; traceFlows: Iterable<string> }): FlowsFileContent {
    const ordered = (map: Map<string, StoredFlow>, names: Iterable<string> | undefined): StoredFlow[] => {
      if (names === undefined) return [...map.values()];
      const out: StoredFlow[] = [];
      const seen = new Set<string>();
      for (const n of names) {
        const f = map.get(n);
        if (f !== undefined && !seen.has(n)) {
          out.push(f);
          seen.add(n);
        }
      }
      if (out.length < map.size) for (const [n, f] of map) if (!seen.has(n)) out.push(f);
      return out;
    };
    return { flows: ordered(this.flows, order?.flows), traceFlows: ordered(this.traceFlows, order?.traceFlows) };
  }
}

/**
 * Scratch sets a file is replayed into before anything of it is used:
 * applyFlowChange with a target source that has every table, so a change is
 * refused exactly when the daemon's control server would refuse it with
 * every table present.
 */
class Replay {
  private readonly flows = new FlowSet<string>({ targetName: (t) => t });
  private readonly traceFlows = new FlowSet<string>();
  private readonly anyTarget = { acquire: (name: string): string => name, release: (): void => {} };
  readonly record = new FlowsRecord();

  constructor(private readonly file: string) {}

  apply(req: ControlRequest & { action: FlowChangeAction }, where: string): void {
    const reply = applyFlowChange(this.flows, this.traceFlows, this.anyTarget, req.action, flowCmdFromFields(req));
    if (reply !== 'OK') {
      const what = req.action.startsWith('trace-') ? 'trace-flow' : 'flow';
      throw corrupt(this.file, `${where}: ${req.action} of ${what} ${JSON.stringify(req.name)} would be refused (${reply})`);
    }
    this.record.apply(req);
  }

  content(): FlowsFileContent {
    return this.record.content({
      flows: this.flows.flows.filter((f) => f.target !== null).map((f) => f.name),
      traceFlows: this.traceFlows.flows.map((f) => f.name),
    });
  }
}

/**
 * Reads and checks `file`. Returns null when it does not exist (first start).
 * Throws NfqlbError NFQLB_ERR_FLOWS_FILE (one line, the file untouched) when
 * it cannot be read, is not a known format, fails a checksum, or holds a
 * change the daemon would refuse (replayed into scratch sets first, so
 * nothing is ever half-loaded). A torn last record is dropped (tornBytes).
 */
export function loadFlowsFile(file: string): FlowsFileInfo | null {
  let buf: Buffer;
  try {
    // Never a FIFO (the start would wait for a writer forever), socket or device.
    buf = readRegularFile(file, `cannot read flows file ${file}`, 'Move it away, or give another --flows_file');
  } catch (err) {
    if (err instanceof NfqlbError) throw corrupt(file, err.message, err);
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ENOENT') return null;
    throw corrupt(file, `cannot read it (${e.code ?? e.message})`, e);
  }
  const journalStart = Buffer.from(`{"format":${JSON.stringify(FLOWS_JOURNAL_FORMAT)}`);
  if (buf.subarray(0, journalStart.length).equals(journalStart)) return readJournal(file, buf);
  return readLegacy(file, buf.toString('utf8'));
}

/** loadFlowsFile's content only (null: no file). */
export function readFlowsFile(file: string): FlowsFileContent | null {
  return loadFlowsFile(file)?.content ?? null;
}

function readJournal(file: string, buf: Buffer): FlowsFileInfo {
  const end = buf.lastIndexOf(0x0a) + 1;
  if (end === 0) throw corrupt(file, 'its snapshot line is incomplete');
  // UTF-8 never has a 0x0a byte inside a character, so splitting the text is splitting the bytes.
  const lines = buf.subarray(0, end).toString('utf8').split('\n');
  lines.pop();
  const replay = new Replay(file);
  let seq = 0;
  for (let i = 0; i < lines.length; i++) {
    const where = `line ${i + 1}`;
    const line = lines[i];
    const tab = line.lastIndexOf('\t');
    if (tab < 0) throw corrupt(file, `${where} has no checksum`);
    const json = line.slice(0, tab);
    if (lineDigest(json) !== line.slice(tab + 1)) throw corrupt(file, `checksum mismatch in ${where} (damaged, or edited)`);
    let value: unknown;
    try {
      value = JSON.parse(json);
    } catch (err) {
      throw corrupt(file, `${where} is not JSON (${(err as Error).message})`, err);
    }
    if (i === 0) {
      const d = value as Record<string, unknown>;
      if (d === null || typeof d !== 'object' || d.format !== FLOWS_JOURNAL_FORMAT) throw corrupt(file, `${where} is not a ${FLOWS_JOURNAL_FORMAT} snapshot`);
      if (!Number.isSafeInteger(d.seq) || (d.seq as number) < 0) throw corrupt(file, `${where} (snapshot) has no record number "seq"`);
      seq = d.seq as number;
      const flows = checkList(file, 'flows', d.flows);
      const traceFlows = checkList(file, 'traceFlows', d.traceFlows);
      for (const f of flows) replay.apply({ ...f, action: 'set' }, `${where} (snapshot)`);
      for (const f of traceFlows) replay.apply({ ...f, action: 'trace-set' }, `${where} (snapshot)`);
    } else {
      replay.apply(recordRequest(checkRecord(file, where, value, ++seq)), where);
    }
  }
  return { content: replay.content(), legacy: false, records: lines.length - 1, tornBytes: buf.length - end, seq };
}

function readLegacy(file: string, text: string): FlowsFileInfo {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw corrupt(file, `not JSON (${(err as Error).message})`, err);
  }
  if (doc === null || typeof doc !== 'object') throw corrupt(file, 'not a JSON object');
  const d = doc as Record<string, unknown>;
  if (d.format !== FLOWS_FILE_FORMAT) throw corrupt(file, `format is ${JSON.stringify(d.format)}, expected "${FLOWS_JOURNAL_FORMAT}" or "${FLOWS_FILE_FORMAT}"`);
  const stored: FlowsFileContent = { flows: checkList(file, 'flows', d.flows), traceFlows: checkList(file, 'traceFlows', d.traceFlows) };
  // A hand-written file may leave the checksum out; a present one must match.
  if (d.sha256 !== undefined && d.sha256 !== legacyDigest(stored)) throw corrupt(file, 'checksum mismatch (damaged, or edited without removing "sha256")');
  const replay = new Replay(file);
  stored.flows.forEach((f, i) => replay.apply({ ...f, action: 'set' }, `flows[${i}]`));
  stored.traceFlows.forEach((f, i) => replay.apply({ ...f, action: 'trace-set' }, `traceFlows[${i}]`));
  return { content: replay.content(), legacy: true, records: 0, tornBytes: 0, seq: 0 };
}

export function fsyncDir(dir: string): void {
  const dfd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(dfd);
  } finally {
    fs.closeSync(dfd);
  }
}

/** Writes `content` to `file` as a fresh journal (snapshot only): temp file, fsync, rename, fsync of the directory; mode 0600. */
export function writeFlowsFile(file: string, content: FlowsFileContent): void {
  writeSnapshot(file, Buffer.from(snapshotLine(content, 0)));
}

/**
 * A background compaction and a synchronous rewrite (after a failed write)
 * can overlap, so each has a temporary file of its own: the rewrite renames
 * its file over PATH while the compaction may still write to its own.
 */
export function tempName(file: string, kind: 'rewrite' | 'compact'): string {
  return path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.${kind}.tmp`);
}

/**
 * Creates a temporary file afresh: whatever is at the name goes first, then
 * O_EXCL|O_NOFOLLOW, so the open can never land on a FIFO (which would block),
 * a device or a link someone put there.
 */
export const TEMP_FLAGS = fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK;
function createTemp(tmp: string): number {
  fs.rmSync(tmp, { force: true, recursive: true });
  return fs.openSync(tmp, TEMP_FLAGS, 0o600);
}

export function writeSnapshot(file: string, bytes: Buffer): void {
  const tmp = tempName(file, 'rewrite');
  try {
    const fd = createTemp(tmp);
    try {
      fs.writeFileSync(fd, bytes);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, file);
    fsyncDir(path.dirname(file));
  } catch (err) {
    try {
      fs.unlinkSync(tmp);
    } catch {
      // Not created, or already renamed.
    }
    throw writeError(file, err as NodeJS.ErrnoException);
  }
}
