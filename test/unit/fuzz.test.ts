/**
 * Fuzzing (test/fuzz/fuzzer.ts) in the test suite: 10,000 cases over the
 * packet classifier and pipeline, the flow-argument and control-request
 * parsers, the config reader and the pcap reader, plus the findings of longer
 * runs (`npm run fuzz`) kept as regression tests.
 */
import { applyConfig } from '../../src/replay/config';
import { findCommand, parseCommandLine } from '../../src/cli/main';

const parser = { find: findCommand, parse: parseCommandLine };
import { RequestParser } from '../../src/services/control';
import { NfqlbError } from '../../src/base/errors';
import { flowCmdFromArgs } from '../../src/flows/fields';
import { FlowSet } from '../../src/flows/flowset';
import { MaglevTable } from '../../src/tables/maglev';
import { classify, PacketInfo } from '../../src/packet/classify';
import { parsePcap, writePcap } from '../../src/replay/pcap';
import { Target, TargetRegistry } from '../../src/tables/targets';
import { runFuzz, TARGETS } from '../fuzz/fuzzer';

describe('fuzzing', () => {
  it('10,000 cases: no escaped exception, no read outside the input, same result on the same input', () => {
    const seed = Number(process.env.NFQLB_FUZZ_SEED ?? 20261129);
    const report = runFuzz({ cases: 10000, seed });
    for (const t of TARGETS) expect(report.perTarget[t]).toBeGreaterThan(0);
    // A finding prints its case and input; `npm run fuzz -- --seed=S --cases=N` reproduces it.
    expect(report.findings).toEqual([]);
  });
});

describe('fuzz findings, kept as regression tests', () => {
  const tables = new Map([['t', MaglevTable.create(97, 4, 0, 't')]]);
  const registry = new TargetRegistry<MaglevTable>({ open: (n) => tables.get(n) ?? null, close: () => undefined });

  it('flow names with quotes, backslashes or control characters still list as JSON (nfqlb prints them raw)', () => {
    const set = new FlowSet<Target<MaglevTable>>({ targetName: (t) => t.name });
    expect(set.applySet(flowCmdFromArgs({ name: '\u0000', target: 't', protocols: 'tcp' }), registry)).toBe('Invalid name: it contains a NUL byte');
    for (const name of ['0\u0007x', 'a"b', 'back\\slash', 'tab\there', 'plain-name_1+2']) {
      expect(set.applySet(flowCmdFromArgs({ name, target: 't', protocols: 'tcp' }), registry)).toBe('OK');
    }
    const listed = JSON.parse(set.list()) as { name: string }[];
    expect(listed.map((f) => f.name).sort()).toEqual(['0\u0007x', 'a"b', 'back\\slash', 'tab\there', 'plain-name_1+2'].sort());
    expect(JSON.parse(set.listNames())).toHaveLength(5);
    // Names nfqlb documents print byte for byte as nfqlb prints them.
    expect(set.list('plain-name_1+2')).toContain('"name": "plain-name_1+2",');
  });

  it('a request over both limits is refused whatever the chunking (the reason may differ)', () => {
    const text = `${'k'.repeat(1100)}:${'v'.repeat(17000)}\naction:list\neoc:\n`;
    const whole = new RequestParser();
    whole.push(text);
    const chunked = new RequestParser();
    for (let i = 0; i < text.length && !chunked.done; i += 7) chunked.push(text.slice(i, i + 7));
    expect(whole.error).not.toBeNull();
    expect(chunked.error).not.toBeNull();
  });

  it('a pcap record claiming 2 GB or cut short ends the reading after the complete records', () => {
    const ip = Uint8Array.from([0x45, 0, 0, 20, 0, 0, 0, 0, 64, 17, 0, 0, 192, 0, 2, 1, 192, 0, 2, 2]);
    const file = writePcap([{ ip }, { ip }, { ip }]);
    file.writeUInt32LE(0x80000000, 24 + 2 * 36 + 8);
    const p = parsePcap(file, 'f.pcap');
    expect(p.records).toHaveLength(2);
    expect(p.error).toBeInstanceOf(NfqlbError);
    expect(p.error!.message).toMatch(/^f\.pcap: record 2 at byte 96 claims 2147483648 bytes/);
    const cut = parsePcap(writePcap([{ ip }, { ip }]).subarray(0, 24 + 36 + 20), 'g.pcap');
    expect(cut.records).toHaveLength(1);
    expect(cut.error!.message).toMatch(/^g\.pcap: record 1 is cut short: it claims 20 bytes at byte 76, the file ends after 4/);
  });

  it('config errors are one FILE:LINE: line, multi-line option errors included', () => {
    const check = (text: string, re: RegExp): void => {
      let err: unknown;
      try {
        applyConfig(text, 'c.cmds', parser);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(NfqlbError);
      expect((err as NfqlbError).code).toBe('NFQLB_ERR_CONFIG');
      expect((err as NfqlbError).message).toMatch(re);
      expect((err as NfqlbError).message).not.toContain('\n');
    };
    check('init --shm=a --M=211\nflow-set --prio=1', /^c\.cmds:2: Missing option \[--name\]; Missing option \[--target\]$/);
    check('\n\nbogus', /^c\.cmds:3: Unknown command \[bogus\]$/);
    check('init --shm=a --M=7 --N=20', /^c\.cmds:1: N can't be larger than M$/);
  });

  it('classify: a range that does not fit the buffer is invalid, never read', () => {
    const info = new PacketInfo();
    const pkt = new Uint8Array(40).fill(0x45);
    expect(classify(pkt, 30, 20, 0, info)).toBe(-1);
    expect(classify(pkt, -1, 10, 0, info)).toBe(-1);
    expect(classify(pkt, 0, 0, 0, info)).toBe(-1);
  });
});
