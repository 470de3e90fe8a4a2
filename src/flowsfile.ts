/**
 * `--flows_file=PATH`: the daemon's flows and trace-flows kept on disk, so a
 * restart (even after `kill -9`) comes back with the configuration it had,
 * instead of waiting for a controller to notice and send it again.
 *
 * What is kept is the control requests themselves, one per flow name, in the
 * order the names were first set: replaying them through the same code that
 * served them rebuilds the same flow set (same order among equal priorities,
 * same hidden '#' flows), hence the same decisions for the same packets.
 *
 * Writes are atomic: a temporary file in the same directory is written and
 * fsynced, renamed over PATH, and the directory fsynced; a crash leaves either
 * the old file or the new one. A file that cannot be read as a whole is
 * reported and left untouched, and nothing of it is loaded (the daemon then
 * refuses to start: starting without the flows would silently make other
 * decisions).
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ControlRequest } from './control';
import { NfqlbError } from './errors';
import { FLOW_FIELDS, flowCmdFromFields, type FlowFieldTexts } from './flowfields';
import { FlowSet } from './flows';

/** The `format` field of the file; another value is refused. */
export const FLOWS_FILE_FORMAT = 'nfqlb-ts-flows/1';

/** A stored request: the fields of a `set` / `trace-set`, without `action`. */
export type StoredFlow = FlowFieldTexts & { name: string };

export interface FlowsFileContent {
  flows: StoredFlow[];
  traceFlows: StoredFlow[];
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

function digest(content: FlowsFileContent): string {
  return createHash('sha256').update(JSON.stringify({ flows: content.flows, traceFlows: content.traceFlows })).digest('hex');
}

function checkList(file: string, what: string, list: unknown): StoredFlow[] {
  if (!Array.isArray(list)) throw corrupt(file, `"${what}" is not a list`);
  const names = new Set<string>();
  return list.map((entry, i) => {
    if (entry === null || typeof entry !== 'object' || Array.isArray(entry)) throw corrupt(file, `${what}[${i}] is not an object`);
    for (const [k, v] of Object.entries(entry as Record<string, unknown>)) {
      if (!FIELDS.has(k)) throw corrupt(file, `${what}[${i}] has an unknown field "${k}"`);
      if (typeof v !== 'string') throw corrupt(file, `${what}[${i}].${k} is not a string`);
    }
    const name = (entry as { name?: unknown }).name;
    if (typeof name !== 'string' || name === '') throw corrupt(file, `${what}[${i}] has no name`);
    if (names.has(name)) throw corrupt(file, `${what} has "${name}" twice`);
    names.add(name);
    return entry as StoredFlow;
  });
}

/**
 * Reads and checks `file`. Returns null when it does not exist (first start).
 * Throws NfqlbError NFQLB_ERR_FLOWS_FILE (one line, the file untouched) when
 * it cannot be read, is not this format, fails its checksum, or holds a flow
 * the daemon would refuse (checked by defining every flow in a scratch set
 * first, so nothing is ever half-loaded).
 */
export function readFlowsFile(file: string): FlowsFileContent | null {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ENOENT') return null;
    throw corrupt(file, `cannot read it (${e.code ?? e.message})`, e);
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw corrupt(file, `not JSON (${(err as Error).message})`, err);
  }
  if (doc === null || typeof doc !== 'object') throw corrupt(file, 'not a JSON object');
  const d = doc as Record<string, unknown>;
  if (d.format !== FLOWS_FILE_FORMAT) throw corrupt(file, `format is ${JSON.stringify(d.format)}, expected "${FLOWS_FILE_FORMAT}"`);
  const content: FlowsFileContent = { flows: checkList(file, 'flows', d.flows), traceFlows: checkList(file, 'traceFlows', d.traceFlows) };
  // A hand-written file may leave the checksum out; a present one must match.
  if (d.sha256 !== undefined && d.sha256 !== digest(content)) throw corrupt(file, 'checksum mismatch (damaged, or edited without removing "sha256")');
  const flows = new FlowSet<string>({ targetName: (t) => t });
  const anyTarget = { acquire: (name: string): string => name, release: (): void => {} };
  for (const f of content.flows) {
    const reply = flows.applySet(flowCmdFromFields(f), anyTarget);
    if (reply !== 'OK') throw corrupt(file, `flow "${f.name}" would be refused (${reply})`);
  }
  const traceFlows = new FlowSet<string>();
  for (const f of content.traceFlows) {
    const cmd = flowCmdFromFields(f);
    const err = traceFlows.define({ ...cmd, name: f.name, target: f.name, udpencap: 0 });
    if (err !== null) throw corrupt(file, `trace-flow "${f.name}" would be refused (${err})`);
  }
  return content;
}

/**
 * Writes `content` to `file` atomically (temp file, fsync, rename, fsync of
 * the directory), mode 0600. Throws NfqlbError NFQLB_ERR_FLOWS_FILE_WRITE
 * with the errno when any step fails; the old file is then still in place.
 */
export function writeFlowsFile(file: string, content: FlowsFileContent): void {
  const doc = { format: FLOWS_FILE_FORMAT, sha256: digest(content), flows: content.flows, traceFlows: content.traceFlows };
  const dir = path.dirname(file);
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.tmp`);
  try {
    const fd = fs.openSync(tmp, 'w', 0o600);
    try {
      fs.writeFileSync(fd, `${JSON.stringify(doc, null, 1)}\n`);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, file);
    const dfd = fs.openSync(dir, 'r');
    try {
      fs.fsyncSync(dfd);
    } finally {
      fs.closeSync(dfd);
    }
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    try {
      fs.unlinkSync(tmp);
    } catch {
      // Not created, or already renamed.
    }
    throw new NfqlbError(`cannot write flows file ${file}: ${e.message}; the flows are set but would not survive a restart`, 'NFQLB_ERR_FLOWS_FILE_WRITE', { cause: e });
  }
}

/**
 * The daemon's record of what is configured: one stored request per flow
 * name, in first-set order (a Map keeps a re-set name in its place, as the
 * flow set does).
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
   * Notes a request that succeeded. Returns true when the record changed
   * (set, trace-set, delete or trace-delete of a name), false otherwise.
   */
  apply(req: ControlRequest): boolean {
    const name = req.name;
    if (name === undefined) return false;
    const stored = (): StoredFlow => {
      const s: Record<string, string> = {};
      for (const [k, v] of Object.entries(req)) if (k !== 'action' && FIELDS.has(k) && typeof v === 'string') s[k] = v;
      return s as StoredFlow;
    };
    switch (req.action) {
      case 'set':
        this.flows.set(name, stored());
        return true;
      case 'trace-set':
        this.traceFlows.set(name, stored());
        return true;
      case 'delete':
        return this.flows.delete(name);
      case 'trace-delete':
        return this.traceFlows.delete(name);
      default:
        return false;
    }
  }

  content(): FlowsFileContent {
    return { flows: [...this.flows.values()], traceFlows: [...this.traceFlows.values()] };
  }
}
