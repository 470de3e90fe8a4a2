/** The bench's test bed (testbed/'s gateway → LB → 4 targets) and what it configures in it. */
import * as tb from '../../testbed/testbed';
import type { TrafgenOptions } from '../../testbed/testbed';
import { ECHO_PORT, PROBE_PORT, type Family, type Pacing, type Rate, type Sources } from './config';
import type { Implementation } from './impls';

/** The test bed with the load counters, and the MAC trafgen sends to. */
export type Bed = tb.Testbed & { mac: string };

export const TABLE = { M: 10000, N: 100 }; // Meridio: --M=100*maxTargets --N=maxTargets

export function buildBed(): Bed {
  const bed = tb.Testbed.build();
  tb.addLoadCounters(bed);
  return Object.assign(bed, { mac: tb.macOf(bed.lb, 'gw0') });
}

/**
 * trafgen's options for a run: `rate` 'max' is trafgen as fast as it goes;
 * a number is paced 'steady' (token bucket on the gateway's link) or, with
 * pacing 'bursts', trafgen's own --rate (each second's packets back to back).
 */
export function trafgenOptions(family: Family, rate: Rate, count: number, size?: number, pacing: Pacing = 'steady'): TrafgenOptions {
  if (rate === 'max') return { count };
  return { count, rate, steady: pacing === 'steady' ? { frameBytes: tb.frameBytes({ family, size }) } : undefined };
}

/** trafgen's packet configuration for (family, sources, frame size). */
export function loadConfig(bed: Bed, family: Family, sources: Sources, size?: number): string {
  return tb.trafgenConfig({ family, dstMac: bed.mac, sources, size });
}

/** Meridio's table and flows for the bench, through the implementation's CLI. */
export function configure(bed: Bed, impl: Implementation, shm: string, env: NodeJS.ProcessEnv = {}): void {
  impl.cliOk(['init', `--shm=${shm}`, `--M=${TABLE.M}`, `--N=${TABLE.N}`]);
  for (const t of bed.targets) impl.cliOk(['activate', `--index=${t.id - 1}`, `--shm=${shm}`, `${t.fwmark}`]);
  setFlows(bed, impl, shm, env);
}

export function setFlows(bed: Bed, impl: Implementation, shm: string, env: NodeJS.ProcessEnv = {}): void {
  const dsts = `--dsts=${bed.vip4}/32,${bed.vip6}/128`;
  impl.cliOk(['flow-set', `--name=${shm}-udp`, `--target=${shm}`, '--prio=1', '--protocols=udp', dsts, `--dports=${tb.LOAD_PORT},${PROBE_PORT}`], env);
  impl.cliOk(['flow-set', `--name=${shm}-tcp`, `--target=${shm}`, '--prio=1', '--protocols=tcp', dsts, `--dports=${bed.port},${ECHO_PORT}`], env);
}
