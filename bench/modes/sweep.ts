/**
 * --sweep: the sweeps behind the defaults, one parameter at a time, IPv4,
 * many flows and one flow, at 100k pps and the generator's max. Settings of
 * a group take turns (round r of every setting, then round r+1), so that a
 * noisy neighbour hits them alike; each point's ratio is the median over
 * rounds. Groups: BENCH_SWEEP=batch,qlength,... (default all).
 */
import * as tb from '../../testbed/testbed';
import { configure, setFlows, type Bed } from '../lib/bed';
import { median, REPEAT, say, SECONDS, type Family, type Rate, type Sources } from '../lib/config';
import { queueRange, type DaemonRun, type Implementation } from '../lib/impls';
import { machine, stamp, writeResults } from '../lib/results';
import { calibrate, generator, HEADER, point, quietLog, type PointRow, type Setting } from '../lib/rounds';

interface SweepCell {
  setting: string;
  group: string;
  sources: Sources;
  rate: Rate;
  ratio: number;
  ratios: number[];
  deliveredFraction: number;
  queueDropped: number;
  userDropped: number;
  cpuUsPerPacket: number;
  offeredPps: number;
}

export async function sweepMode(bed: Bed, impl: Implementation): Promise<void> {
  const q = ['--queue=0:3'];
  const groups: Record<string, Setting[]> = {
    batch: [16, 64, 256].map((b) => ({ name: `batch=${b}`, args: [...q, `--batch=${b}`] })),
    qlength: [1024, 4096, 16384].map((n) => ({ name: `qlength=${n}`, args: [...q, `--qlength=${n}`] })),
    // trafgen's own --rate: each second's packets back to back (how the issue's numbers were taken, as far as we can tell).
    bursts: [1024, 4096, 16384].map((n) => ({ name: `qlength=${n},bursts`, args: [...q, `--qlength=${n}`], pacing: 'bursts' })),
    // Issue 11 point 3: which queue length, receive buffer and batch absorb trafgen's bursts at 100k (bursts point only).
    'burst-defaults': [
      ...[1024, 4096, 8192, 16384, 32768].map((n) => ({ name: `q=${n}`, args: [...q, `--qlength=${n}`] })),
      ...[8192, 16384].map((n) => ({ name: `q=${n},batch=256`, args: [...q, `--qlength=${n}`, '--batch=256'] })),
      { name: 'q=16384,batch=16', args: [...q, '--qlength=16384', '--batch=16'] },
      // SO_RCVBUF twice nfqlb's rule: does the receive buffer bind before the queue length (60-byte frames)?
      { name: 'q=16384,rcvbuf=2x', args: [...q, '--qlength=16384', `--rcvbuf=${16384 * 1500}`] },
    ].map((st) => ({ ...st, pacing: 'bursts' })),
    // The same with one CPU-bound process beside the daemon: what a shared node does.
    'qlength-hog': [1024, 4096, 16384].map((n) => ({ name: `qlength=${n}+hog`, args: [...q, `--qlength=${n}`], hog: 1 })),
    // 1400-byte frames: messages of ~1.5 KB; does SO_RCVBUF (default qlength*mtu/2, doubled by the kernel) bind before qlength?
    rcvbuf: [
      { name: 'rcv=dflt,1400B', args: [...q, '--qlength=4096'], size: 1400, hog: 1 },
      { name: 'rcv=2x,1400B', args: [...q, '--qlength=4096', `--rcvbuf=${4096 * 1500}`], size: 1400, hog: 1 },
      { name: 'rcv=4x,1400B', args: [...q, '--qlength=4096', `--rcvbuf=${4096 * 3000}`], size: 1400, hog: 1 },
    ],
    queues: [
      { name: 'queues=0:3', args: ['--queue=0:3'] },
      { name: 'queues=0:1', args: ['--queue=0:1'] },
      { name: 'queues=0', args: ['--queue=0'] },
    ],
    // Two daemons on two queues each (as two threads would be), against one on four.
    processes: [
      { name: '1 proc x 4 q', args: ['--queue=0:3'] },
      { name: '2 procs x 2 q', args: ['--queue=0:1'], second: ['--queue=2:3', '--trace_address=unix:nfqlb-trace-bench-2'], queues: [0, 3] },
    ],
  };
  const chosen = process.env.BENCH_SWEEP ? process.env.BENCH_SWEEP.split(',') : Object.keys(groups);
  for (const g of chosen) if (!groups[g]) throw new Error(`unknown sweep group ${g}; groups: ${Object.keys(groups).join(', ')}`);
  type SweepPoint = { family: Family; sources: Sources; rate: Rate };
  const allPoints: SweepPoint[] = [
    { family: 4, sources: 'many', rate: 100000 },
    { family: 4, sources: 'many', rate: 'max' },
    { family: 4, sources: 'one', rate: 100000 },
    { family: 4, sources: 'one', rate: 'max' },
  ];
  // Groups measured at one point only (the others would only cost time).
  const groupPoints: Record<string, SweepPoint[]> = { 'burst-defaults': [{ family: 4, sources: 'many', rate: 100000 }] };
  const shm = tb.uniqueShmName('sweep');
  const name = `${impl.label}-sweep${process.env.BENCH_SWEEP ? `-${process.env.BENCH_SWEEP.replace(/,/g, '+')}` : ''}`;
  const file = `${stamp()}-${name}`;
  const result = { date: new Date().toISOString(), mode: 'sweep', quiet: quietLog, secondsPerRun: SECONDS, rounds: REPEAT, machine: machine(), implementation: { label: impl.label, bin: impl.bin, version: impl.version }, runs: [] as PointRow[], summary: [] as SweepCell[], generatorMaxPps: 0 };
  await calibrate(bed);
  result.generatorMaxPps = generator.maxPps;
  for (const g of chosen) {
    const points = groupPoints[g] ?? allPoints;
    say(`\n== sweep ${g} (${REPEAT} rounds)`);
    say(HEADER);
    for (let round = 0; round < REPEAT; round++) {
      for (const s of groups[g]) {
        const setting = { ...s, queues: s.queues ?? queueRange(s.args), group: g };
        const daemons: DaemonRun[] = [await impl.start(setting.args)];
        configure(bed, impl, shm);
        if (s.second) {
          const env = { NFQLB_FLOW_ADDRESS: 'unix:nfqlb-bench-2' };
          daemons.push(await impl.start(s.second, env));
          setFlows(bed, impl, shm, env);
        }
        for (const pt of points) {
          const row = await point(bed, setting, daemons, { ...pt, repeat: 1 });
          row.group = g;
          row.round = round;
          result.runs.push(row);
        }
        for (const d of daemons) await impl.stop(d);
      }
    }
    say(`\n   ${g}: median over rounds of the ratio (and of delivered/offered through the LB, queue drops, user drops, cpu µs/packet)`);
    for (const s of groups[g]) {
      const cells = points.map((pt) => {
        const rs = result.runs.filter((r) => r.group === g && r.setting === s.name && r.sources === pt.sources && r.rate === pt.rate);
        const cell: SweepCell = {
          setting: s.name,
          group: g,
          sources: pt.sources,
          rate: pt.rate,
          ratio: median(rs.map((r) => r.ratio)),
          ratios: rs.map((r) => r.ratio),
          deliveredFraction: median(rs.map((r) => r.deliveredFraction)),
          queueDropped: median(rs.map((r) => r.lb.queueDropped ?? NaN)),
          userDropped: median(rs.map((r) => r.lb.userDropped ?? NaN)),
          cpuUsPerPacket: median(rs.map((r) => r.cpuUsPerPacket ?? NaN)),
          offeredPps: median(rs.map((r) => r.lbOfferedPps)),
        };
        result.summary.push(cell);
        return cell;
      });
      say(
        `   ${s.name.padEnd(18)} ${cells
          .map((c) => `${c.sources === 'one' ? '1 flow' : 'many'} ${c.rate === 'max' ? `max(${Math.round(c.offeredPps / 1000)}k)` : `${c.rate / 1000}k`}: ${c.ratio.toFixed(3)} [${c.ratios.map((x) => x.toFixed(2)).join(' ')}] q${c.queueDropped} u${c.userDropped} ${c.cpuUsPerPacket.toFixed(2)}µs`)
          .join(' | ')}`,
      );
    }
    // Written after every group, so an interrupted sweep keeps what it measured.
    for (const r of result.runs) delete r.lb.perTarget;
    writeResults(result, file, { plot: false, stamped: false });
  }
}
