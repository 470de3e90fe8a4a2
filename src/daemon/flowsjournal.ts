/**
 * The writer of a --flows_file journal (format and reading: flowsfile.ts):
 * each accepted change appended and fdatasynced before its OK, a whole-file
 * rewrite after a failed write, and the compaction in the background.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { NfqlbError } from '../base/errors';
import { openRegularFile } from '../base/regularfile';
import {
  COMPACT_FACTOR, fsyncDir, journalLine, MIN_COMPACT_BYTES, snapshotLine, tempName, TEMP_FLAGS, writeError, writeSnapshot,
  type FlowsFileContent, type JournalRecord,
} from './flowsfile';

/**
 * Test hook: NFQLB_TEST_FLOWS_FILE_CRASH=POINT[:N] makes the process SIGKILL
 * itself the Nth time (default 1st) it reaches POINT — `after-append` (a
 * record synced, before the OK), `compact-after-temp` (new snapshot synced,
 * not yet renamed), `compact-after-rename` (renamed, directory not synced).
 * Read once per journal; unset, it costs one comparison.
 */
class CrashHook {
  private readonly point: string | null;
  private left: number;

  constructor() {
    const spec = process.env.NFQLB_TEST_FLOWS_FILE_CRASH;
    const m = spec === undefined ? null : /^([a-z-]+)(?::(\d+))?$/.exec(spec);
    this.point = m === null ? null : m[1];
    this.left = m === null ? 0 : Number(m[2] ?? 1);
  }

  at(point: string): void {
    if (this.point !== point) return;
    if (--this.left === 0) process.kill(process.pid, 'SIGKILL');
  }
}

export interface FlowsJournalOptions {
  /** The live content, in lookup order, for a snapshot. */
  snapshot(): FlowsFileContent;
  /** A write failed (the change is applied, but not on disk): count and log it. */
  onError(err: NfqlbError): void;
  compactFactor?: number;
  minCompactBytes?: number;
}

/**
 * The writer of a journal (see the top of flowsfile.ts). append() is called
 * after a change was accepted and before its OK; it never throws. After a
 * failed write the journal is not appended to again (a partial record in the
 * middle would make the file unreadable): each following change rewrites the
 * whole file until that succeeds.
 */
export class FlowsJournal {
  /** The file's size as written by this journal. */
  private bytes = 0;
  /** The size of its snapshot line. */
  private snapshotBytes = 0;
  /** Compact once `bytes` passes this. */
  private compactAt = 0;
  private needsRewrite = true;
  /** Bumped by every synchronous rewrite and failed append: an older background compaction is then dropped. */
  private generation = 0;
  /** The number of the last record written (or included in the last snapshot). */
  private seq = 0;
  /** Lines appended while a compaction runs; copied into its file before the rename. */
  private pending: Buffer[] | null = null;
  private compaction: Promise<void> | null = null;
  private readonly hook = new CrashHook();
  private readonly factor: number;
  private readonly minBytes: number;
  /** Completed compactions (for tests and logs). */
  compactions = 0;

  constructor(
    readonly file: string,
    private readonly options: FlowsJournalOptions,
  ) {
    this.factor = options.compactFactor ?? COMPACT_FACTOR;
    this.minBytes = options.minCompactBytes ?? MIN_COMPACT_BYTES;
  }

  /**
   * At start: writes a fresh snapshot (which also rewrites an old-format file
   * as a journal and drops a torn tail, so nothing is ever appended after
   * one) and removes temporary files a killed daemon left. False when that
   * failed (reported through onError; the next change tries again).
   */
  open(): boolean {
    const dir = path.dirname(this.file);
    const prefix = `.${path.basename(this.file)}.`;
    try {
      for (const name of fs.readdirSync(dir)) {
        if (name.startsWith(prefix) && name.endsWith('.tmp')) fs.rmSync(path.join(dir, name), { force: true });
      }
    } catch {
      // The rewrite below reports what is wrong with the directory.
    }
    return this.rewrite();
  }

  /** Records one accepted change on disk before its OK. */
  append(record: JournalRecord): void {
    if (this.needsRewrite) {
      this.rewrite();
      return;
    }
    const line = Buffer.from(journalLine({ seq: this.seq + 1, ...record }));
    let fd = -1;
    try {
      // Regular file only, and never blocking (src/base/regularfile.ts).
      fd = openRegularFile(this.file, fs.constants.O_WRONLY | fs.constants.O_APPEND | fs.constants.O_CREAT, 0o600,
        `cannot append to flows file ${this.file}`, 'Move it away; the daemon then writes the whole file again');
      fs.writeFileSync(fd, line);
      fs.fdatasyncSync(fd);
    } catch (err) {
      if (fd >= 0) {
        try {
          // Best effort: no partial record left in the middle once the next change is appended.
          fs.ftruncateSync(fd, this.bytes);
        } catch {
          // needsRewrite below makes the next change replace the file anyway.
        }
      }
      this.needsRewrite = true;
      this.generation++;
      this.options.onError(writeError(this.file, err as NodeJS.ErrnoException));
      return;
    } finally {
      if (fd >= 0) fs.closeSync(fd);
    }
    this.seq++;
    this.hook.at('after-append');
    this.bytes += line.length;
    this.pending?.push(line);
    if (this.bytes >= this.compactAt && this.compaction === null) this.compaction = this.compact().finally(() => (this.compaction = null));
  }

  /** Resolves when no compaction is running (tests, benchmarks). */
  async idle(): Promise<void> {
    while (this.compaction !== null) await this.compaction;
  }

  /** A full snapshot now, synchronously. */
  private rewrite(): boolean {
    this.generation++;
    try {
      const bytes = Buffer.from(snapshotLine(this.options.snapshot(), this.seq));
      writeSnapshot(this.file, bytes);
      this.setSizes(bytes.length, bytes.length);
      this.needsRewrite = false;
      return true;
    } catch (err) {
      this.needsRewrite = true;
      this.options.onError(err instanceof NfqlbError ? err : writeError(this.file, err as NodeJS.ErrnoException));
      return false;
    }
  }

  private setSizes(snapshotBytes: number, bytes: number): void {
    this.snapshotBytes = snapshotBytes;
    this.bytes = bytes;
    this.compactAt = bytes + Math.max(this.minBytes, this.factor * snapshotBytes);
  }

  /**
   * The new snapshot is serialised here (on the event loop) and written and
   * synced in the thread pool; appends go on meanwhile, to the old file and
   * to `pending`. The last step — copy `pending`, sync, rename, sync the
   * directory — is synchronous, so no change is acknowledged between the
   * rename and the directory sync (it could be lost with the rename).
   */
  private async compact(): Promise<void> {
    const generation = this.generation;
    const snapshot = Buffer.from(snapshotLine(this.options.snapshot(), this.seq));
    this.pending = [];
    const tmp = tempName(this.file, 'compact');
    let step = 'writing the new snapshot';
    try {
      fs.rmSync(tmp, { force: true, recursive: true }); // see createTemp (flowsfile.ts)
      const fh = await fs.promises.open(tmp, TEMP_FLAGS, 0o600);
      try {
        await fh.writeFile(snapshot);
        await fh.sync();
      } finally {
        await fh.close();
      }
      if (generation !== this.generation) {
        fs.rmSync(tmp, { force: true });
        return;
      }
      this.hook.at('compact-after-temp');
      step = 'finishing the new journal';
      const pending = Buffer.concat(this.pending);
      if (pending.length > 0) {
        const fd = openRegularFile(tmp, fs.constants.O_WRONLY | fs.constants.O_APPEND, undefined, `cannot finish the compacted flows file ${tmp}`, 'It is made again at the next compaction');
        try {
          fs.writeFileSync(fd, pending);
          fs.fdatasyncSync(fd);
        } finally {
          fs.closeSync(fd);
        }
      }
      fs.renameSync(tmp, this.file);
      this.hook.at('compact-after-rename');
      step = 'syncing the directory';
      fsyncDir(path.dirname(this.file));
      this.setSizes(snapshot.length, snapshot.length + pending.length);
      this.compactions++;
    } catch (err) {
      fs.rmSync(tmp, { force: true });
      // Renamed but the directory not synced: the old name might come back, so the next change rewrites.
      if (step === 'syncing the directory') {
        this.needsRewrite = true;
        this.generation++;
      }
      // Try again after as many bytes again, not at every change.
      this.compactAt = this.bytes + Math.max(this.minBytes, this.factor * this.snapshotBytes);
      const e = err as NodeJS.ErrnoException;
      this.options.onError(new NfqlbError(`cannot compact flows file ${this.file} (${step}): ${e.message}; changes are still appended`, 'NFQLB_ERR_FLOWS_FILE_WRITE', { cause: e }));
    } finally {
      this.pending = null;
    }
  }
}
