/**
 * `nfqlb replay` against nfqlb's own decisions (reference/decisions): every
 * scenario found in the reference directory must agree packet by packet on
 * verdict and fwmark, and on target where nfqlb names one.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parsePcap, LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2 } from '../../../../src/replay/pcap';
import { runInProcess, runSpawned } from '../../../helpers/cli';
import { readJsonl, referencePath } from '../../../helpers/reference';

interface RefDecision {
  i: number;
  target: string | null;
  fwmark: number;
  verdict: string;
}
interface OurDecision extends RefDecision {
  flow: string | null;
  hash: number | null;
}

const decisionsDir = referencePath('decisions');
const scenarios = fs
  .readdirSync(decisionsDir)
  .filter((f) => f.endsWith('.cmds'))
  .map((f) => f.slice(0, -5))
  .sort();

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'nfqlbts-replay-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function parseLines(text: string): OurDecision[] {
  return text.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as OurDecision);
}

function tableNames(cmds: string): string[] {
  return [...cmds.matchAll(/--shm=(\S+)/g)].map((m) => m[1]);
}

function shmFingerprint(names: string[]): Record<string, string | null> {
  const fp: Record<string, string | null> = {};
  for (const n of names) {
    const f = `/dev/shm/${n}`;
    fp[n] = fs.existsSync(f) ? crypto.createHash('sha1').update(fs.readFileSync(f)).digest('hex') : null;
  }
  return fp;
}

function compare(ours: OurDecision[], ref: RefDecision[]): string[] {
  const bad: string[] = [];
  if (ours.length !== ref.length) bad.push(`count: ${ours.length} lines, nfqlb has ${ref.length}`);
  for (let k = 0; k < Math.min(ours.length, ref.length); k++) {
    const o = ours[k];
    const r = ref[k];
    if (o.i !== r.i || o.verdict !== r.verdict || o.fwmark !== r.fwmark || (r.target !== null && o.target !== r.target)) {
      bad.push(`i=${r.i}: ours ${JSON.stringify(o)} nfqlb ${JSON.stringify(r)}`);
    }
  }
  return bad;
}

describe('replay parity with nfqlb decisions', () => {
  it('finds the scenarios', () => {
    expect(scenarios.length).toBeGreaterThanOrEqual(1);
  });

  for (const s of scenarios) {
    it(`${s}: 100% agreement on verdict, fwmark and target, nothing touched in /dev/shm`, async () => {
      const cmdsFile = path.join(decisionsDir, `${s}.cmds`);
      const names = tableNames(fs.readFileSync(cmdsFile, 'utf8'));
      const before = shmFingerprint(names);
      const run = await runInProcess(['replay', `--pcap=${path.join(decisionsDir, `${s}.pcap`)}`, `--config=${cmdsFile}`]);
      expect(run.rc).toBe(0);
      const ref = readJsonl<RefDecision>(path.join(decisionsDir, `${s}.jsonl`));
      expect(compare(parseLines(run.stdout), ref)).toEqual([]);
      expect(shmFingerprint(names)).toEqual(before);
    });
  }

  it('the multi scenario names flows and hashes; later fragments and misses have no hash', async () => {
    const run = await runInProcess(['replay', `--pcap=${path.join(decisionsDir, 'multi.pcap')}`, `--config=${path.join(decisionsDir, 'multi.cmds')}`]);
    const lines = parseLines(run.stdout);
    const first = lines.find((l) => l.flow === 'fa-web');
    expect(first).toBeDefined();
    expect(first!.target).toBe('tshm-a');
    expect(typeof first!.hash).toBe('number');
    for (const l of lines) {
      if (l.target === null) expect(l.flow).toBeNull();
      if (l.flow === null && l.target === null) expect(l.hash).toBeNull();
    }
    expect(new Set(lines.map((l) => l.flow))).toEqual(new Set([null, 'fa-web', 'fb-udp', 'fb-any', 'fa-syn', 'sctp-encap', 'fa-sports']));
  });

  it('bin/nfqlb prints the same as the in-process run', async () => {
    const args = ['replay', `--pcap=${path.join(decisionsDir, 'trench.pcap')}`, `--config=${path.join(decisionsDir, 'trench.cmds')}`];
    const spawned = runSpawned(args);
    const inproc = await runInProcess(args);
    expect(spawned.stderr).toBe('');
    expect(spawned.rc).toBe(0);
    expect(spawned.stdout).toBe(inproc.stdout);
  });
});

/** Re-wraps every RAW record of a pcap in another link type's header. */
function rewrap(raw: Buffer, linkType: number, header: (ip: Buffer) => Buffer, extraFirst?: Buffer): Buffer {
  const parts: Buffer[] = [];
  const gh = Buffer.from(raw.subarray(0, 24));
  gh.writeUInt32LE(linkType, 20);
  parts.push(gh);
  const pushRecord = (ts: Buffer, frame: Buffer): void => {
    const rh = Buffer.alloc(16);
    ts.copy(rh, 0, 0, 8);
    rh.writeUInt32LE(frame.length, 8);
    rh.writeUInt32LE(frame.length, 12);
    parts.push(rh, frame);
  };
  let pos = 24;
  let first = true;
  while (pos < raw.length) {
    const capLen = raw.readUInt32LE(pos + 8);
    const ts = raw.subarray(pos, pos + 8);
    const ip = raw.subarray(pos + 16, pos + 16 + capLen);
    if (first && extraFirst) pushRecord(ts, extraFirst);
    first = false;
    pushRecord(ts, Buffer.concat([header(ip), ip]));
    pos += 16 + capLen;
  }
  return Buffer.concat(parts);
}

const etherType = (ip: Buffer): number => (ip[0] >> 4 === 6 ? 0x86dd : 0x0800);

describe('replay reads Ethernet, VLAN and Linux cooked captures', () => {
  const raw = fs.readFileSync(path.join(decisionsDir, 'trench.pcap'));
  const cmds = path.join(decisionsDir, 'trench.cmds');
  let expected: OurDecision[];

  beforeAll(async () => {
    const run = await runInProcess(['replay', `--pcap=${path.join(decisionsDir, 'trench.pcap')}`, `--config=${cmds}`]);
    expected = parseLines(run.stdout);
  });

  const variants: [string, number, (ip: Buffer) => Buffer, Buffer?][] = [
    ['ethernet', LINKTYPE_ETHERNET, (ip) => { const h = Buffer.alloc(14); h.writeUInt16BE(etherType(ip), 12); return h; },
      // An ARP frame first: skipped, so every IP record's number moves by one.
      Buffer.concat([Buffer.alloc(12), Buffer.from([0x08, 0x06]), Buffer.alloc(28)])],
    ['vlan', LINKTYPE_ETHERNET, (ip) => { const h = Buffer.alloc(18); h.writeUInt16BE(0x8100, 12); h.writeUInt16BE(100, 14); h.writeUInt16BE(etherType(ip), 16); return h; }],
    ['sll', LINKTYPE_LINUX_SLL, (ip) => { const h = Buffer.alloc(16); h.writeUInt16BE(etherType(ip), 14); return h; }],
    ['sll2', LINKTYPE_LINUX_SLL2, (ip) => { const h = Buffer.alloc(20); h.writeUInt16BE(etherType(ip), 0); return h; }],
  ];
  for (const [name, lt, header, extra] of variants) {
    it(`${name}: same decisions as the RAW capture`, async () => {
      const file = path.join(tmp, `trench-${name}.pcap`);
      fs.writeFileSync(file, rewrap(raw, lt, header, extra));
      expect(parsePcap(fs.readFileSync(file)).linkType).toBe(lt);
      const run = await runInProcess(['replay', `--pcap=${file}`, `--config=${cmds}`]);
      expect(run.rc).toBe(0);
      const shift = extra ? 1 : 0;
      expect(parseLines(run.stdout)).toEqual(expected.map((d) => ({ ...d, i: d.i + shift })));
    });
  }
});

describe('replay errors', () => {
  const pcap = path.join(decisionsDir, 'trench.pcap');
  const cmds = path.join(decisionsDir, 'trench.cmds');

  it('needs --pcap', async () => {
    const r = await runInProcess(['replay', `--config=${cmds}`]);
    expect(r.rc).toBe(1);
    expect(r.stderr).toBe('Missing option [--pcap]\n');
  });

  it('needs exactly one of --config and --tshm', async () => {
    for (const args of [[], [`--config=${cmds}`, '--tshm=x']]) {
      const r = await runInProcess(['replay', `--pcap=${pcap}`, ...args]);
      expect(r.rc).toBe(1);
      expect(r.stderr).toBe('replay needs exactly one of --config=FILE or --tshm=NAME\n');
    }
  });

  it('refuses pcapng, short and foreign files with one line', async () => {
    const cases: [string, Buffer, RegExp][] = [
      ['ng.pcap', Buffer.from('0a0d0d0a000000000000000000000000000000000000000000000000', 'hex'), /pcapng is not supported/],
      ['short.pcap', Buffer.from('d4c3b2a1', 'hex'), /not a pcap file \(only 4 bytes\)/],
      ['text.pcap', Buffer.from('hello world, this is not a capture file'), /not a pcap file \(magic/],
    ];
    for (const [name, data, re] of cases) {
      const file = path.join(tmp, name);
      fs.writeFileSync(file, data);
      const r = await runInProcess(['replay', `--pcap=${file}`, `--config=${cmds}`]);
      expect(r.rc).toBe(1);
      expect(r.stderr).toMatch(re);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
    }
    const missing = await runInProcess(['replay', `--pcap=${path.join(tmp, 'nope.pcap')}`, `--config=${cmds}`]);
    expect(missing.rc).toBe(1);
    expect(missing.stderr).toMatch(/cannot read .*nope\.pcap/);
  });

  it('stops at the first failing config line with FILE:LINE: message, whatever the failure, and replays nothing', async () => {
    const good = ['init --shm=t1 --M=997 --N=4', 'activate --shm=t1 --index=0 7', 'flow-set --name=all --target=t1'];
    const cases: [string, string][] = [
      ['flow-set --name=bad --target=t1 --protocols=tcp --dsts=192.0.2.300/32', 'Invalid dsts'],
      ['flow-set --name=nope --target=t-missing --protocols=tcp', "FAIL: Couldn't create load-balancer"],
      ['flow-set --name=p --target=t1 --dports=80', 'ports specified without protocols'],
      ['activate --shm=t-missing 3', 'FAILED mapSharedData: t-missing'],
      ['init --shm=t2 --M=997 --N=4 --bogus=1', "init: unrecognized option '--bogus=1'"],
      ['flow-set --prio=3', 'Missing option [--name]; Missing option [--target]'],
      ['flowlb --queue=0:3', 'a second daemon line (the first is line 4); keep one flowlb line'],
      ['trace --selection=log', 'trace cannot be replayed'],
    ];
    for (const [bad, message] of cases) {
      const file = path.join(tmp, 'bad.cmds');
      fs.writeFileSync(file, [...good, 'flowlb --queue=0:3 --qlength=1024', bad, 'flow-set --name=later --target=t1'].join('\n'));
      const r = await runInProcess(['replay', `--pcap=${pcap}`, `--config=${file}`]);
      expect({ bad, rc: r.rc, stdout: r.stdout }).toEqual({ bad, rc: 1, stdout: '' });
      expect(r.stderr.split('\n')).toHaveLength(2);
      expect(r.stderr.startsWith(`${file}:5: ${message}`)).toBe(true);
    }
  });

  it('refuses a line that is not a replayable nfqlb command', async () => {
    const file = path.join(tmp, 'unknown.cmds');
    fs.writeFileSync(file, 'init --shm=t1\nbogus --x=1\n');
    const r = await runInProcess(['replay', `--pcap=${pcap}`, `--config=${file}`]);
    expect(r.rc).toBe(1);
    expect(r.stderr).toBe(`${file}:2: Unknown command [bogus]\n`);
  });
});

describe('replay --tshm uses a live table like nfqlb lb', () => {
  const name = `nfqlbts-${process.pid}-replay`;
  afterAll(() => fs.rmSync(`/dev/shm/${name}`, { force: true }));

  it('marks every valid packet from the table; a missing table is one clear line', async () => {
    expect((await runInProcess(['init', `--shm=${name}`, '--M=997', '--N=8'])).rc).toBe(0);
    expect((await runInProcess(['activate', `--shm=${name}`, '11', '12', '13'])).rc).toBe(0);
    const r = await runInProcess(['replay', `--pcap=${path.join(decisionsDir, 'trench.pcap')}`, `--tshm=${name}`, '--hash_mode=0']);
    expect(r.rc).toBe(0);
    const lines = parseLines(r.stdout);
    const accepted = lines.filter((l) => l.verdict === 'accept');
    expect(accepted.length).toBeGreaterThan(600);
    expect(new Set(accepted.map((l) => l.fwmark))).toEqual(new Set([11, 12, 13]));
    expect(accepted.every((l) => l.target === name && l.flow === null)).toBe(true);
    const missing = await runInProcess(['replay', `--pcap=${path.join(decisionsDir, 'trench.pcap')}`, `--tshm=${name}-nope`]);
    expect(missing.rc).toBe(1);
    expect(missing.stderr).toMatch(new RegExp(`^FAILED mapSharedData: ${name}-nope \\(.*\\)\\n$`));
  });
});

describe('replay of a cut or corrupt capture', () => {
  const cmds = path.join(decisionsDir, 'trench.cmds');
  const raw = fs.readFileSync(path.join(decisionsDir, 'trench.pcap'));
  /** Byte offsets where each record starts, and the end of the file. */
  const starts: number[] = [];
  for (let pos = 24; pos < raw.length; pos += 16 + raw.readUInt32LE(pos + 8)) starts.push(pos);
  let full: string[];

  beforeAll(async () => {
    const r = await runInProcess(['replay', `--pcap=${path.join(decisionsDir, 'trench.pcap')}`, `--config=${cmds}`]);
    full = r.stdout.split('\n').filter((l) => l !== '');
    expect(full.length).toBe(starts.length);
  });

  it('cut inside a record: every complete record is printed, then one error line and exit 1', async () => {
    const k = 100;
    for (const cut of [starts[k] + 3, starts[k] + 16, starts[k] + 20, starts[k + 1] - 1]) {
      const file = path.join(tmp, `cut-${cut}.pcap`);
      fs.writeFileSync(file, raw.subarray(0, cut));
      const r = await runInProcess(['replay', `--pcap=${file}`, `--config=${cmds}`]);
      expect(r.rc).toBe(1);
      expect(r.stdout.split('\n').filter((l) => l !== '')).toEqual(full.slice(0, k));
      expect(r.stderr).toMatch(new RegExp(`^${file.replace(/[.]/g, '\\.')}: record ${k} is cut short: .*the ${k} records before it were read\\n$`));
    }
    // Cut exactly between records: a complete, shorter capture.
    const file = path.join(tmp, 'cut-clean.pcap');
    fs.writeFileSync(file, raw.subarray(0, starts[k]));
    const r = await runInProcess(['replay', `--pcap=${file}`, `--config=${cmds}`]);
    expect(r.rc).toBe(0);
    expect(r.stderr).toBe('');
    expect(r.stdout.split('\n').filter((l) => l !== '')).toEqual(full.slice(0, k));
  });

  it('a record claiming 2 GB is an error after the records before it, not processed', async () => {
    const k = 7;
    const data = Buffer.from(raw);
    data.writeUInt32LE(0x80000000, starts[k] + 8);
    const file = path.join(tmp, 'huge.pcap');
    fs.writeFileSync(file, data);
    const r = await runInProcess(['replay', `--pcap=${file}`, `--config=${cmds}`]);
    expect(r.rc).toBe(1);
    expect(r.stdout.split('\n').filter((l) => l !== '')).toEqual(full.slice(0, k));
    expect(r.stderr).toMatch(/: record 7 at byte \d+ claims 2147483648 bytes, more than a pcap record holds \(262144\): the file is corrupt; the 7 records before it were read\n$/);
  });

  it('bin/nfqlb: the same output and one error line from the spawned CLI', () => {
    const file = path.join(tmp, 'cut-spawned.pcap');
    fs.writeFileSync(file, raw.subarray(0, starts[50] + 30));
    const r = runSpawned(['replay', `--pcap=${file}`, `--config=${cmds}`]);
    expect(r.rc).toBe(1);
    expect(r.stdout.split('\n').filter((l) => l !== '')).toEqual(full.slice(0, 50));
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
  });
});
