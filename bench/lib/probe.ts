/** The latency probe (bench/probe.py): receivers in the targets, a sender in the gateway beside a load run. */
import type { ChildProcess } from 'node:child_process';
import * as tb from '../../testbed/testbed';
import { PROBE_PORT, PROBE_PY, PROBE_RATE, sleep, type Family } from './config';
import type { Bed } from './bed';

export interface ProbeReceiver {
  child: ChildProcess;
  out: string;
}

/** The probe's delays over one run (µs). */
export interface ProbeDelays {
  count: number;
  sent: number;
  p50Us: number;
  p90Us: number;
  p99Us: number;
  maxUs: number;
}

/**
 * The probe's receivers, one per target (bench/probe.py recv), started once
 * for the comparison; null when BENCH_PROBE_RATE=0.
 */
export async function startProbeReceivers(bed: Bed): Promise<ProbeReceiver[] | null> {
  if (!(PROBE_RATE > 0)) return null;
  const receivers: ProbeReceiver[] = [];
  for (const t of bed.targets) {
    const child = tb.spawnInNs(t.ns, 'python3', [PROBE_PY, 'recv', `${PROBE_PORT}`], { stdio: ['ignore', 'pipe', 'pipe'] });
    const r: ProbeReceiver = { child, out: '' };
    child.stdout?.on('data', (b: Buffer) => (r.out += b.toString()));
    child.stderr?.on('data', (b: Buffer) => (r.out += b.toString()));
    const deadline = Date.now() + 10000;
    while (!r.out.includes('ready\n') && child.exitCode === null && Date.now() < deadline) await sleep(20);
    if (!r.out.includes('ready\n')) throw new Error(`probe receiver in ${t.name} did not start: ${r.out}`);
    r.out = '';
    receivers.push(r);
  }
  return receivers;
}

/**
 * Runs `run(companionPids)` (a loadRun) with the probe sending beside it
 * (PROBE_RATE packets/s for the load's `seconds`, to the VIP of `family`);
 * returns [its result, the probe's delays, or null].
 */
export async function withProbe<R>(bed: Bed, receivers: ProbeReceiver[] | null, family: Family, seconds: number, run: (companions: number[]) => Promise<R>): Promise<[R, ProbeDelays | null]> {
  if (receivers === null) return [await run([]), null];
  const dst = family === 6 ? bed.vip6 : bed.vip4;
  const sender = tb.spawnInNs(bed.gw, 'python3', [PROBE_PY, 'send', dst, `${PROBE_PORT}`, `${PROBE_RATE}`, `${seconds}`], { stdio: ['ignore', 'pipe', 'pipe'] });
  let sout = '';
  sender.stdout?.on('data', (b: Buffer) => (sout += b.toString()));
  const senderDone = new Promise((r) => sender.once('exit', r));
  const result = await run([sender.pid as number]);
  await Promise.race([senderDone, sleep(5000)]);
  if (sender.exitCode === null) await tb.killProcess(sender);
  const delays: number[] = [];
  for (const r of receivers) {
    r.child.kill('SIGUSR1');
    const deadline = Date.now() + 3000;
    while (!r.out.includes('\n') && Date.now() < deadline) await sleep(10);
    const line = r.out.slice(0, r.out.indexOf('\n'));
    r.out = r.out.slice(r.out.indexOf('\n') + 1);
    try {
      delays.push(...(JSON.parse(line) as { delaysUs: number[] }).delaysUs);
    } catch {
      // A receiver that did not answer: its delays are missing from the figure.
    }
  }
  delays.sort((a, b) => a - b);
  const q = (p: number): number => (delays.length === 0 ? NaN : delays[Math.min(delays.length - 1, Math.floor(p * delays.length))]);
  let sent = NaN;
  try {
    sent = (JSON.parse(sout.trim().split('\n').pop() ?? '') as { sent: number }).sent;
  } catch {
    // No count from the sender.
  }
  return [result, { count: delays.length, sent, p50Us: q(0.5), p90Us: q(0.9), p99Us: q(0.99), maxUs: delays.length ? delays[delays.length - 1] : NaN }];
}
