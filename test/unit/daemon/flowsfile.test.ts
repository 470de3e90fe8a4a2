/**
 * --flows_file: what is recorded for each successful control request, that a
 * written file reads back identically (atomically replaced, mode 0600), and
 * that every kind of damage is refused as a whole with one line, the file
 * left untouched.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { ControlRequest } from '../../../src/services/control';
import { FlowsRecord, FLOWS_FILE_FORMAT, FLOWS_JOURNAL_FORMAT, loadFlowsFile, readFlowsFile, writeFlowsFile } from '../../../src/daemon/flowsfile';
import { FlowsJournal } from '../../../src/daemon/flowsjournal';
import { NfqlbError } from '../../../src/base/errors';

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), `nfqlb-flows-${process.pid}-`));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

const web = { action: 'set', name: 'web', target: 'tshm-a', priority: '2', protocols: 'tcp', dsts: '192.0.2.1/32', dports: '80,443' };

describe('FlowsRecord', () => {
  it('keeps one request per name in first-set order; deletes remove; other actions change nothing', () => {
    const r = new FlowsRecord();
    expect(r.apply(web)).toEqual({ op: 'set', flow: { name: 'web', target: 'tshm-a', priority: '2', protocols: 'tcp', dsts: '192.0.2.1/32', dports: '80,443' } });
    expect(r.apply({ action: 'set', name: 'dns', target: 'tshm-b', protocols: 'udp' })).not.toBeNull();
    expect(r.apply({ ...web, dports: '8080' })).not.toBeNull();
    expect(r.apply({ action: 'trace-set', name: 'tf', protocols: 'udp', dports: '4000' })).toEqual({ op: 'trace-set', flow: { name: 'tf', protocols: 'udp', dports: '4000' } });
    expect(r.apply({ action: 'list' })).toBeNull();
    expect(r.apply({ action: 'list', name: 'web' })).toBeNull();
    expect(r.apply({ action: 'delete', name: 'nope' })).toBeNull();
    expect(r.content()).toEqual({
      flows: [
        { name: 'web', target: 'tshm-a', priority: '2', protocols: 'tcp', dsts: '192.0.2.1/32', dports: '8080' },
        { name: 'dns', target: 'tshm-b', protocols: 'udp' },
      ],
      traceFlows: [{ name: 'tf', protocols: 'udp', dports: '4000' }],
    });
    expect(r.apply({ action: 'delete', name: 'web' })).toEqual({ op: 'delete', name: 'web' });
    expect(r.apply({ action: 'trace-delete', name: 'tf' })).toEqual({ op: 'trace-delete', name: 'tf' });
    expect(r.content()).toEqual({ flows: [{ name: 'dns', target: 'tshm-b', protocols: 'udp' }], traceFlows: [] });
  });
});

describe('readFlowsFile / writeFlowsFile', () => {
  it('reads back what it wrote, replaces atomically, mode 0600, no temp file left', () => {
    const file = path.join(dir, 'flows.json');
    expect(readFlowsFile(file)).toBeNull();
    const r = new FlowsRecord();
    r.apply(web);
    r.apply({ action: 'trace-set', name: 'tf', protocols: 'udp' });
    writeFlowsFile(file, r.content());
    expect(readFlowsFile(file)).toEqual(r.content());
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    r.apply({ action: 'delete', name: 'web' });
    writeFlowsFile(file, r.content());
    expect(readFlowsFile(file)).toEqual(r.content());
    expect(fs.readdirSync(dir)).toEqual(['flows.json']);
  });

  it('accepts a hand-written file without checksum', () => {
    const file = path.join(dir, 'flows.json');
    fs.writeFileSync(file, JSON.stringify({ format: FLOWS_FILE_FORMAT, flows: [{ name: 'a', target: 't', protocols: 'tcp' }], traceFlows: [] }));
    expect(readFlowsFile(file)?.flows).toEqual([{ name: 'a', target: 't', protocols: 'tcp' }]);
  });

  const good = (): object => {
    const r = new FlowsRecord();
    r.apply(web);
    return { format: FLOWS_FILE_FORMAT, flows: r.content().flows, traceFlows: [] };
  };
  const cases: Array<[string, string, RegExp]> = [
    ['empty', '', /not JSON/],
    ['truncated JSON', JSON.stringify(good()).slice(0, 30), /not JSON/],
    ['wrong format', JSON.stringify({ ...good(), format: 'x' }), /format is "x"/],
    ['flows not a list', JSON.stringify({ ...good(), flows: {} }), /"flows" is not a list/],
    ['unknown field', JSON.stringify({ ...good(), flows: [{ name: 'a', evil: '1' }] }), /unknown field "evil"/],
    ['number value', JSON.stringify({ ...good(), flows: [{ name: 'a', priority: 3 }] }), /priority is not a string/],
    ['no name', JSON.stringify({ ...good(), flows: [{ target: 't' }] }), /has no name/],
    ['duplicate', JSON.stringify({ ...good(), flows: [{ name: 'a' }, { name: 'a' }] }), /"a" twice/],
    ['checksum', JSON.stringify({ ...good(), sha256: '00' }), /checksum mismatch/],
    ['refused flow', JSON.stringify({ ...good(), flows: [{ name: 'a', target: 't', protocols: 'bogus' }] }), /would be refused \(Invalid protocols\)/],
    ['refused trace flow', JSON.stringify({ ...good(), traceFlows: [{ name: 'a', dsts: 'nonsense' }] }), /trace-flow "a" would be refused/],
  ];
  it.each(cases)('refuses %s in one line and leaves the file untouched', (_what, text, why) => {
    const file = path.join(dir, 'flows.json');
    fs.writeFileSync(file, text);
    let err: unknown;
    try {
      readFlowsFile(file);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(NfqlbError);
    expect((err as NfqlbError).code).toBe('NFQLB_ERR_FLOWS_FILE');
    expect((err as Error).message).toMatch(why);
    expect((err as Error).message).not.toContain('\n');
    expect(fs.readFileSync(file, 'utf8')).toBe(text);
  });

  it('reports a write that cannot happen, leaving the old file', () => {
    const file = path.join(dir, 'missing-dir', 'flows.json');
    expect(() => writeFlowsFile(file, { flows: [], traceFlows: [] })).toThrow(/cannot write flows file .*would not survive a restart/);
  });
});

describe('the journal (nfqlb-ts-flows/2)', () => {
  const flow = (name: string, dports = '80'): ControlRequest => ({ action: 'set', name, target: 't', protocols: 'tcp', dports });

  /** A journal on `file` over a FlowsRecord, as the daemon keeps one. */
  function journal(file: string, opts: { minCompactBytes?: number } = {}): { record: FlowsRecord; j: FlowsJournal; errors: string[]; change(req: ControlRequest): void } {
    const record = new FlowsRecord(readFlowsFile(file));
    const errors: string[] = [];
    const j = new FlowsJournal(file, { snapshot: () => record.content(), onError: (e) => errors.push(e.message), ...opts });
    j.open();
    return {
      record,
      j,
      errors,
      change(req) {
        const r = record.apply(req);
        if (r !== null) j.append(r);
      },
    };
  }

  it('appends one line per change after the snapshot; reads back what was appended', () => {
    const file = path.join(dir, 'flows.json');
    const { record, change, errors } = journal(file);
    change(flow('a'));
    change(flow('b'));
    change(flow('a', '443'));
    change({ action: 'trace-set', name: 'tf', protocols: 'udp' });
    change({ action: 'delete', name: 'b' });
    change({ action: 'trace-delete', name: 'nope' });
    const lines = fs.readFileSync(file, 'utf8').split('\n');
    expect(lines).toHaveLength(1 + 5 + 1);
    expect(lines[0]).toMatch(new RegExp(`^\\{"format":"${FLOWS_JOURNAL_FORMAT}".*\\t[0-9a-f]{32}$`));
    expect(lines[5]).toMatch(/^\{"seq":5,"op":"delete","name":"b"\}\t[0-9a-f]{32}$/);
    const loaded = loadFlowsFile(file)!;
    expect(loaded).toMatchObject({ legacy: false, records: 5, tornBytes: 0, seq: 5 });
    expect(loaded.content).toEqual(record.content());
    expect(errors).toEqual([]);
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
  });

  it('compacts once the records outgrow the snapshot, off the event loop, keeping changes made meanwhile', async () => {
    const file = path.join(dir, 'flows.json');
    const { record, j, change, errors } = journal(file, { minCompactBytes: 1000 });
    for (let i = 0; i < 30; i++) change(flow(`f${i}`));
    // A compaction started; changes made before it finishes must survive it.
    for (let i = 0; i < 5; i++) change(flow(`late${i}`));
    await j.idle();
    expect(j.compactions).toBeGreaterThan(0);
    expect(loadFlowsFile(file)!.content).toEqual(record.content());
    expect(fs.readdirSync(dir)).toEqual(['flows.json']);
    expect(errors).toEqual([]);
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
  });

  it('drops a torn last record (a crash mid-append: never acknowledged); the next open rewrites the file without it', () => {
    const file = path.join(dir, 'flows.json');
    const { change } = journal(file);
    change(flow('a'));
    change(flow('b'));
    const good = fs.readFileSync(file);
    for (const tail of ['{"op":"set","flow":{"name":"c"', '{"op":"delete","name":"a"}\t0123', '\0\0\0\0']) {
      fs.writeFileSync(file, Buffer.concat([good, Buffer.from(tail)]));
      const loaded = loadFlowsFile(file)!;
      expect(loaded.tornBytes).toBe(Buffer.byteLength(tail));
      expect(loaded.content.flows.map((f) => f.name)).toEqual(['a', 'b']);
    }
    const again = journal(file);
    again.change(flow('d'));
    expect(loadFlowsFile(file)).toMatchObject({ tornBytes: 0, records: 1, content: { flows: [{ name: 'a' }, { name: 'b' }, { name: 'd' }] } });
  });

  it('refuses damage anywhere but a torn tail, in one line, the file untouched', () => {
    const file = path.join(dir, 'flows.json');
    const { change } = journal(file);
    change(flow('a'));
    change(flow('b'));
    change(flow('c'));
    const text = fs.readFileSync(file, 'utf8');
    const lines = text.split('\n');
    const sealed = (json: string): string => `${json}\t${createHash('sha256').update(json).digest('hex').slice(0, 32)}`;
    const cases: Array<[string, string, RegExp]> = [
      ['a flipped byte in a record', text.replace('"name":"b"', '"name":"x"'), /checksum mismatch in line 3 /],
      ['a flipped byte in the last complete record', text.replace('"name":"c"', '"name":"x"'), /checksum mismatch in line 4 /],
      ['a flipped byte in the snapshot', text.replace(FLOWS_JOURNAL_FORMAT, `${FLOWS_JOURNAL_FORMAT}x`), /not JSON|checksum mismatch|not a nfqlb-ts-flows\/2/],
      ['a line without checksum', [lines[0], '{"seq":1,"op":"delete","name":"a"}', lines[2], ''].join('\n'), /line 2 has no checksum/],
      ['a lost line in the middle', [lines[0], lines[1], lines[3], ''].join('\n'), /line 3 is record 3, expected 2 \(a line is missing/],
      ['a repeated line', [lines[0], lines[1], lines[1], lines[2], ''].join('\n'), /line 3 is record 1, expected 2/],
      ['an unknown op', [lines[0], sealed('{"seq":1,"op":"rename","name":"a"}'), ''].join('\n'), /line 2 has an unknown op "rename"/],
      ['a record the daemon would refuse', [lines[0], sealed('{"seq":1,"op":"set","flow":{"name":"","target":"t"}}'), ''].join('\n'), /line 2: set of flow "" would be refused \(No name\)/],
      ['a record with an unknown field', [lines[0], sealed('{"seq":1,"op":"set","flow":{"name":"a","evil":"1"}}'), ''].join('\n'), /line 2.flow has an unknown field "evil"/],
      ['a hidden name', [lines[0], sealed('{"seq":1,"op":"set","flow":{"name":"#a","target":"t"}}'), ''].join('\n'), /would be refused \(FAIL: names starting with '#'/],
    ];
    for (const [what, damaged, why] of cases) {
      fs.writeFileSync(file, damaged);
      let err: unknown = null;
      try {
        loadFlowsFile(file);
      } catch (e) {
        err = e;
      }
      expect({ what, err }).toEqual({ what, err: expect.any(NfqlbError) });
      expect((err as NfqlbError).code).toBe('NFQLB_ERR_FLOWS_FILE');
      expect((err as Error).message).toMatch(why);
      expect((err as Error).message).not.toContain('\n');
      expect(fs.readFileSync(file, 'utf8')).toBe(damaged);
    }
  });

  it('reads a file of the single-document format (nfqlb-ts-flows/1) as it was written, and open() migrates it', () => {
    const file = path.join(dir, 'flows.json');
    const content = {
      flows: [{ name: 'web', target: 't', priority: '2', protocols: 'tcp', dports: '80,443' }, { name: 'caf\u00c3\u00a9', target: 't' }],
      traceFlows: [{ name: 'tf', protocols: 'udp' }],
    };
    // What writeFlowsFile wrote before the journal: pretty-printed, with a SHA-256 of flows and traceFlows.
    const sha256 = createHash('sha256').update(JSON.stringify(content)).digest('hex');
    fs.writeFileSync(file, `${JSON.stringify({ format: FLOWS_FILE_FORMAT, sha256, ...content }, null, 1)}\n`);
    expect(loadFlowsFile(file)).toEqual({ content, legacy: true, records: 0, tornBytes: 0, seq: 0 });
    const { change } = journal(file);
    expect(loadFlowsFile(file)).toEqual({ content, legacy: false, records: 0, tornBytes: 0, seq: 0 });
    change({ action: 'delete', name: 'web' });
    expect(loadFlowsFile(file)!.content.flows.map((f) => f.name)).toEqual(['caf\u00c3\u00a9']);
  });

  it('a failed write is reported (never thrown); appending stops until a whole rewrite succeeds, which then has every change', () => {
    const sub = path.join(dir, 'sub');
    fs.mkdirSync(sub);
    const file = path.join(sub, 'flows.json');
    const { record, change, errors } = journal(file);
    change(flow('a'));
    fs.rmSync(sub, { recursive: true });
    change(flow('b'));
    change(flow('c'));
    expect(errors).toHaveLength(2);
    expect(errors[0]).toMatch(/^cannot write flows file .*flows\.json: ENOENT.*would not survive a restart$/);
    fs.mkdirSync(sub);
    change(flow('d'));
    expect(errors).toHaveLength(2);
    expect(loadFlowsFile(file)).toMatchObject({ records: 0, content: record.content() });
    expect(record.content().flows.map((f) => f.name)).toEqual(['a', 'b', 'c', 'd']);
  });

  it('a compaction overtaken by a failed write and a whole rewrite is dropped, not renamed over the newer file', async () => {
    const file = path.join(dir, 'flows.json');
    const { record, j, change, errors } = journal(file, { minCompactBytes: 1000 });
    let i = 0;
    // Until a compaction has begun writing its file (the thread pool creates it while this loop runs).
    while (i < 100000 && fs.readdirSync(dir).every((n) => !n.endsWith('.compact.tmp'))) change(flow(`f${i++}`));
    expect(i).toBeLessThan(100000);
    // The next append fails (PATH is a directory for a moment), the one after rewrites the whole file.
    fs.renameSync(file, `${file}.moved`);
    fs.mkdirSync(file);
    change(flow('failed'));
    fs.rmdirSync(file);
    change(flow('rewritten'));
    expect(errors).toHaveLength(1);
    await j.idle();
    expect(j.compactions).toBe(0);
    expect(loadFlowsFile(file)!.content).toEqual(record.content());
    expect(record.content().flows.map((f) => f.name).slice(-2)).toEqual(['failed', 'rewritten']);
    expect(fs.readdirSync(dir).sort()).toEqual(['flows.json', 'flows.json.moved']);
  });
});
