/**
 * --queue-memory: what a full queue costs the kernel. The daemon is stopped
 * (SIGSTOP), one flow is sent until its queue is full, and the netlink
 * socket's receive memory (/proc/net/netlink Rmem) and the machine's slab
 * growth are read; for 60- and 1400-byte frames, qlength 1024/4096/16384,
 * SO_RCVBUF by nfqlb's rule (qlength*mtu/2) or qlength*(mtu+512).
 */
import * as fs from 'node:fs';
import * as tb from '../../testbed/testbed';
import { configure, loadConfig, trafgenOptions, type Bed } from '../lib/bed';
import { say, sleep } from '../lib/config';
import type { Implementation } from '../lib/impls';
import { machine, writeResults } from '../lib/results';

export async function queueMemoryMode(bed: Bed, impl: Implementation): Promise<void> {
  const shm = tb.uniqueShmName('qmem');
  const meminfo = (): Record<string, number> =>
    Object.fromEntries(
      fs
        .readFileSync('/proc/meminfo', 'utf8')
        .split('\n')
        .filter(Boolean)
        .map((l) => {
          const m = /^(\S+):\s+(\d+)/.exec(l);
          return m === null ? [l, NaN] : [m[1], Number(m[2])];
        }),
    );
  const result = { date: new Date().toISOString(), mode: 'queue-memory', machine: machine(), implementation: { label: impl.label, bin: impl.bin, version: impl.version }, runs: [] as object[] };
  say('qlength  rcvbuf asked  frame  waiting  q.drop  u.drop  Rmem (bytes)  per packet  slab growth (KiB)');
  for (const qlength of [1024, 4096, 16384]) {
    for (const size of [60, 1400]) {
      for (const rule of impl.supports('rcvbuf') ? ['nfqlb', 'mtu+512'] : ['nfqlb']) {
        const rcvbuf = rule === 'nfqlb' ? undefined : qlength * (1500 + 512);
        const d = await impl.start(['--queue=0:3', `--qlength=${qlength}`, ...(rcvbuf ? [`--rcvbuf=${rcvbuf}`] : [])]);
        configure(bed, impl, shm);
        tb.setMarking(bed, 'queue', 0, 3);
        const config = loadConfig(bed, 4, 'one', size);
        await tb.runTrafgen(bed.gw, 'lb0', config, { count: 1000, rate: 10000 });
        const q0 = tb.queueProcIn(bed.lb);
        const m0 = meminfo();
        process.kill(d.pid, 'SIGSTOP');
        try {
          await tb.runTrafgen(bed.gw, 'lb0', config, trafgenOptions(4, 50000, qlength + 2000, size));
          await sleep(200);
          const m1 = meminfo();
          const q1 = tb.queueProcIn(bed.lb);
          const full = q1.reduce((best, e) => (e.waiting > best.waiting ? e : best), q1[0]);
          const before = q0.find((e) => e.queue === full.queue);
          const rmem = tb.nsExec(bed.lb, 'cat', ['/proc/net/netlink']).stdout.split('\n')
            .map((l) => l.trim().split(/\s+/))
            .filter((f) => f[1] === '12' && Number(f[2]) === full.portid)
            .map((f) => Number(f[4]))[0];
          const r = { qlength, size, rcvbufRule: rule, rcvbuf: rcvbuf ?? Math.floor((qlength * 1500) / 2 / 4096) * 4096, waiting: full.waiting, queueDropped: full.queueDropped - (before?.queueDropped ?? NaN), userDropped: full.userDropped - (before?.userDropped ?? NaN), rmem, rmemPerPacket: rmem / full.waiting, slabKiB: m1.Slab - m0.Slab };
          result.runs.push(r);
          say(`${String(qlength).padStart(7)}  ${String(r.rcvbuf).padStart(12)}  ${String(size).padStart(5)}  ${String(r.waiting).padStart(7)}  ${String(r.queueDropped).padStart(6)}  ${String(r.userDropped).padStart(6)}  ${String(rmem).padStart(12)}  ${r.rmemPerPacket.toFixed(0).padStart(10)}  ${String(r.slabKiB).padStart(17)}`);
        } finally {
          process.kill(d.pid, 'SIGCONT');
          await impl.stop(d);
        }
      }
    }
  }
  writeResults(result, `${impl.label}-queue-memory`, { plot: false });
}
