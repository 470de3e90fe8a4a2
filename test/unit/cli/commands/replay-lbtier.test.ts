/**
 * `nfqlb replay --lbshm`: the LB tier offline, from a config whose lines make
 * the tier table (or the flowlb line's own --lbshm), and from live tables
 * (--tshm with --lbshm). Fragments owned by another LB come out accepted with
 * its fwmark; the rest as without a tier.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { hashKeyAddresses } from '../../../../src/packet/hashkey';
import { MaglevTable } from '../../../../src/tables/maglev';
import { Pipeline } from '../../../../src/datapath/pipeline';
import { runInProcess } from '../../../helpers/cli';
import { ipv4, udp } from '../../../helpers/packets';

const VIP = '192.0.2.1';
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'nfqlbts-replay-lbtier-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** A LINKTYPE_RAW pcap of `pkts`. */
function writePcap(file: string, pkts: Uint8Array[]): void {
  const head = Buffer.alloc(24);
  head.writeUInt32LE(0xa1b2c3d4, 0);
  head.writeUInt16LE(2, 4);
  head.writeUInt16LE(4, 6);
  head.writeUInt32LE(65535, 16);
  head.writeUInt32LE(101, 20);
  const parts = [head];
  for (const p of pkts) {
    const rec = Buffer.alloc(16);
    rec.writeUInt32LE(p.length, 8);
    rec.writeUInt32LE(p.length, 12);
    parts.push(rec, Buffer.from(p));
  }
  fs.writeFileSync(file, Buffer.concat(parts));
}

/** Per source: a first and a later fragment to the flow's port; then one non-fragment. */
function packets(): { pkts: Uint8Array[]; srcs: string[] } {
  const pkts: Uint8Array[] = [];
  const srcs: string[] = [];
  for (let i = 1; i <= 24; i++) {
    const src = `198.51.100.${i}`;
    srcs.push(src);
    pkts.push(ipv4(src, VIP, 17, udp(40000, 5001, Array(24).fill(0)), { id: i, moreFragments: true }));
    pkts.push(ipv4(src, VIP, 17, Array(16).fill(1), { id: i, fragOffset: 4 }));
    pkts.push(ipv4(src, VIP, 17, udp(40000, 5001)));
  }
  return { pkts, srcs };
}

/** The tier owner of `src` → VIP in a table made as the config makes it. */
function owner(src: string): number {
  const tier = MaglevTable.create(31, 4, 101, 'tier');
  tier.activate([101, 102]);
  const p = new Pipeline<MaglevTable>(null, {});
  const pkt = ipv4(src, VIP, 17, udp(1, 2));
  p.decide(pkt, 0, pkt.length, 0);
  return tier.fwmarkOf(hashKeyAddresses(p.info.key));
}

interface Line {
  i: number;
  verdict: string;
  fwmark: number;
  target: string | null;
}

describe('replay --lbshm', () => {
  const { pkts, srcs } = packets();
  const pcap = path.join(tmp, 'frags.pcap');
  writePcap(pcap, pkts);
  const tables = [
    'init --shm=tier --ownfw=101 --M=31 --N=4',
    'activate --shm=tier 101 102',
    'init --shm=targets --M=97 --N=4',
    'activate --shm=targets 1 2 3',
    `flow-set --name=udp --target=targets --protocols=udp --dsts=${VIP}/32 --dports=5001`,
  ];

  const check = (lines: Line[]): void => {
    expect(lines).toHaveLength(pkts.length);
    let forwarded = 0;
    srcs.forEach((src, n) => {
      const [f, l, plain] = lines.slice(3 * n, 3 * n + 3);
      expect(plain.verdict).toBe('accept');
      expect([1, 2, 3]).toContain(plain.fwmark);
      if (owner(src) === 102) {
        forwarded++;
        expect([f.fwmark, l.fwmark, f.target, l.target]).toEqual([102, 102, null, null]);
      } else {
        expect([1, 2, 3]).toContain(f.fwmark);
        expect(l.fwmark).toBe(f.fwmark);
      }
    });
    expect(forwarded).toBeGreaterThan(0);
    expect(forwarded).toBeLessThan(srcs.length);
  };

  it('the flowlb line of the config names the tier table', async () => {
    const cfg = path.join(tmp, 'a.cmds');
    fs.writeFileSync(cfg, [...tables, 'flowlb --lbshm=tier'].join('\n') + '\n');
    const run = await runInProcess(['replay', `--pcap=${pcap}`, `--config=${cfg}`]);
    expect(run.stderr).toBe('');
    check(run.stdout.trim().split('\n').map((l) => JSON.parse(l) as Line));
  });

  it('--lbshm on the command line; without it no fragment leaves for the tier', async () => {
    const cfg = path.join(tmp, 'b.cmds');
    fs.writeFileSync(cfg, [...tables, 'flowlb'].join('\n') + '\n');
    const withTier = await runInProcess(['replay', `--pcap=${pcap}`, `--config=${cfg}`, '--lbshm=tier']);
    check(withTier.stdout.trim().split('\n').map((l) => JSON.parse(l) as Line));
    const without = await runInProcess(['replay', `--pcap=${pcap}`, `--config=${cfg}`]);
    expect(without.stdout).not.toMatch(/"fwmark":10[12]/);
  });

  it('a tier table that is not there: one line, exit 1', async () => {
    const cfg = path.join(tmp, 'c.cmds');
    fs.writeFileSync(cfg, [...tables, 'flowlb --lbshm=nosuchtier'].join('\n') + '\n');
    const run = await runInProcess(['replay', `--pcap=${pcap}`, `--config=${cfg}`]);
    expect(run.rc).toBe(1);
    expect(run.stdout).toBe('');
    expect(run.stderr).toMatch(/^FAILED mapSharedData: nosuchtier \(.*\)\n$/);
  });
});
