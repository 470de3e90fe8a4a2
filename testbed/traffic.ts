/**
 * UDP load from trafgen (netsniff-ng) in the gateway namespace (bench/ and
 * test/e2e/activation.test.ts): its packet configuration and one paced or
 * unpaced run. trafgen runs with --no-sock-mem and --notouch-irq: it would
 * otherwise retune the global net.core.*mem sysctls and IRQ affinities,
 * which are not per namespace.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { nsExec, sleep } from './netns';
import { killProcess, spawnInNs } from './processes';
import { CLIENT4, VIP4 } from './topology';

/** UDP destination port of the load helpers. */
export const LOAD_PORT = 5002;

/** What trafgen sends: one family, many flows or one. */
export interface UdpLoadSpec {
  family: 4 | 6;
  /** MAC of the LB's interface toward the gateway (macOf(tb.lb, 'gw0')). */
  dstMac: string;
  /**
   * 'many': sources 198.51.100.10-250 (one after the other) or
   * 2001:db8:1::1:0-ffff (random), random source ports: every queue of a
   * --queue-balance gets its share. 'one': the gateway's address, source port
   * 40000: a single flow, so a single queue.
   */
  sources: 'many' | 'one';
  dport?: number;
  /** Ethernet frame bytes (default 60 for IPv4, 66 for IPv6; at least those). */
  size?: number;
}

function macBytes(mac: string): string {
  return mac.split(':').map((b) => `0x${b}`).join(', ');
}

/**
 * A trafgen packet configuration for `spec`: IPv4 frames of 60 bytes
 * (14 Ethernet + 20 IP + 8 UDP + 18 payload), IPv6 frames of 66 (14 + 40 + 8 + 4),
 * or `size`, to VIP4 / VIP6, checksums filled in by trafgen.
 */
export function trafgenConfig(spec: UdpLoadSpec): string {
  const dport = spec.dport ?? LOAD_PORT;
  const many = spec.sources === 'many';
  const eth = `${macBytes(spec.dstMac)}, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01`;
  const sport = many ? 'drnd(2)' : 'c16(40000)';
  if (spec.family === 4) {
    const src = many ? '198, 51, 100, dinc(10, 250)' : CLIENT4.split('.').join(', ');
    const payload = Math.max(18, (spec.size ?? 0) - 42);
    return (
      `{ ${eth}, c16(0x0800),\n` +
      `  0x45, 0x00, c16(${28 + payload}), drnd(2), 0x40, 0x00, 64, 17, csumip(14, 33),\n` +
      `  ${src}, ${VIP4.split('.').join(', ')},\n` +
      `  ${sport}, c16(${dport}), c16(${8 + payload}), csumudp(14, 34),\n` +
      `  fill(0x42, ${payload}) }\n`
    );
  }
  const payload = Math.max(4, (spec.size ?? 0) - 62);
  // 2001:db8:1::1:RRRR (never the gateway's ::1 or the LB's ::2), or 2001:db8:1::1.
  const src = many
    ? '0x20, 0x01, 0x0d, 0xb8, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0x00, 0x01, drnd(2)'
    : '0x20, 0x01, 0x0d, 0xb8, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x01';
  const dst = '0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x01';
  return (
    `{ ${eth}, c16(0x86dd),\n` +
    `  0x60, 0, 0, 0, c16(${8 + payload}), 17, 64,\n` +
    `  ${src},\n  ${dst},\n` +
    `  ${sport}, c16(${dport}), c16(${8 + payload}), csumudp6(14, 54),\n` +
    `  fill(0x42, ${payload}) }\n`
  );
}

export interface TrafgenResult {
  /** Packets trafgen says it sent. */
  sent: number;
  /** Seconds trafgen says it took (its own clock), or the wall time around it. */
  seconds: number;
  /** sent / seconds. */
  pps: number;
  /** CPU seconds trafgen and its worker used (user + system, from the shell's `times`). */
  cpuSeconds: number;
}

/** Ethernet frame bytes of trafgenConfig(spec). */
export function frameBytes(spec: Pick<UdpLoadSpec, 'family' | 'size'>): number {
  return Math.max(spec.family === 4 ? 60 : 66, spec.size ?? 0);
}

export interface TrafgenOptions {
  /** Packets to send. */
  count: number;
  /** Packets per second; none: as fast as trafgen goes (its --rate path at 10^7). */
  rate?: number;
  /**
   * With `rate`: frame bytes of the configuration (frameBytes()), to pace the
   * packets evenly. trafgen's --rate alone sends each second's packets back to
   * back at full speed and then waits for the next second (bursts of `rate`
   * packets); with `steady`, a token bucket (tc tbf) on `dev` releases them at
   * `rate` with bursts of at most 32 frames, for the time of the run.
   */
  steady?: { frameBytes: number };
  timeoutMs?: number;
}

/** Packets waiting in the root qdisc of `dev` in `ns`. */
function qdiscBacklog(ns: string, dev: string): number {
  const r = nsExec(ns, 'tc', ['-s', '-j', 'qdisc', 'show', 'dev', dev], { allowFail: true });
  try {
    const q = (JSON.parse(r.stdout) as Array<{ qlen?: number }>)[0];
    return q?.qlen ?? 0;
  } catch {
    return 0;
  }
}

/**
 * Runs trafgen in `ns` on `dev` (one process: --cpus 1) until it has sent
 * `count` packets (see TrafgenOptions for the pacing). Resolves when the
 * last packet has left `dev`, with what trafgen reports and the time from
 * start to the last packet; rejects when it fails. The process is
 * registered: cleanupAll() kills it.
 */
export async function runTrafgen(ns: string, dev: string, config: string, opts: TrafgenOptions): Promise<TrafgenResult> {
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'nfqlbts-trafgen-')), 'load.cfg');
  fs.writeFileSync(file, config);
  const rate = Math.round(opts.rate ?? 10_000_000);
  const args = ['--no-sock-mem', '--notouch-irq', '--cpus', '1', '--dev', dev, '--conf', file, '--num', `${opts.count}`, '--rate', `${rate}pps`];
  const steady = opts.rate !== undefined && opts.steady !== undefined;
  if (steady) {
    const frame = opts.steady!.frameBytes;
    // `limit`: room for a second and a half of packets, so trafgen's own bursts wait here, none dropped.
    nsExec(ns, 'tc', [
      'qdisc', 'replace', 'dev', dev, 'root', 'tbf', 'rate', `${rate * frame * 8}bit`, 'burst', `${32 * frame}`, 'limit', `${Math.ceil(rate * frame * 1.5)}`,
    ]);
    args.push('--qdisc-path');
  }
  const t0 = process.hrtime.bigint();
  try {
    // Through a shell whose `times` reports what trafgen and its worker used.
    const script = 'trafgen "$@"; rc=$?; echo "times:"; times; exit $rc';
    const child = spawnInNs(ns, 'sh', ['-c', script, 'sh', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
    });
    child.stderr?.on('data', (d: Buffer) => {
      out += d.toString();
    });
    const timeoutMs = opts.timeoutMs ?? 60_000 + (opts.count / Math.min(rate, 100_000)) * 2000;
    const code = await new Promise<number | null>((resolve) => {
      const t = setTimeout(() => void killProcess(child, 500), timeoutMs);
      child.once('exit', (c) => {
        clearTimeout(t);
        resolve(c);
      });
    });
    if (code !== 0) throw new Error(`trafgen ${args.join(' ')} exited ${code}: ${out.trim()}`);
    // trafgen is done when its packets are in the qdisc; the run ends when they have left it.
    const drainEnd = Date.now() + 10_000;
    while (steady && qdiscBacklog(ns, dev) > 0 && Date.now() < drainEnd) await sleep(10);
    const wall = Number(process.hrtime.bigint() - t0) / 1e9;
    const sent = Number(/(\d+) packets outgoing/.exec(out)?.[1] ?? NaN);
    const m = /(\d+) sec, (\d+) usec on CPU/.exec(out);
    const seconds = steady || m === null ? wall : Number(m[1]) + Number(m[2]) / 1e6;
    let cpuSeconds = NaN;
    const t = /times:\n.*\n(\d+)m([\d.]+)s (\d+)m([\d.]+)s/.exec(out);
    if (t !== null) cpuSeconds = Number(t[1]) * 60 + Number(t[2]) + Number(t[3]) * 60 + Number(t[4]);
    return { sent, seconds, pps: sent / seconds, cpuSeconds };
  } finally {
    if (steady) nsExec(ns, 'tc', ['qdisc', 'del', 'dev', dev, 'root'], { allowFail: true });
    fs.rmSync(path.dirname(file), { recursive: true, force: true });
  }
}
