/**
 * --flows_file: what is recorded for each successful control request, that a
 * written file reads back identically (atomically replaced, mode 0600), and
 * that every kind of damage is refused as a whole with one line, the file
 * left untouched.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { FlowsRecord, FLOWS_FILE_FORMAT, readFlowsFile, writeFlowsFile } from '../../src/flowsfile';
import { NfqlbError } from '../../src/errors';

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
