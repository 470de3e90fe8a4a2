/**
 * The rule of docs/architecture.md, measured: Pipeline.decide() allocates
 * nothing per packet. A child node (test/helpers/decide-alloc.js, on dist/)
 * runs 2M decide() calls over the packets of every reference decision capture
 * with its .cmds config, after a warm-up, with a young generation (64 MB)
 * large enough that no garbage collection runs during the calls; the young
 * generation's growth is then every byte those calls allocated. What remains
 * is the JIT's own (≈0.1 MB, whatever the count); one heap number (16 bytes)
 * on every 32nd call would already be 1 MB.
 * The second case runs a copy of the loop with one object per call, to show
 * the measurement sees an allocation.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { referencePath } from '../../helpers/reference';

interface Measure {
  calls: number;
  packets: number;
  youngGrowth: number;
  minorGcs: number;
}

const CALLS = 2_000_000;
const LIMIT = 1 << 20; // bytes over all calls: < 0.5 byte per call
/** Bytes a whole batch of 64 may allocate: 2 per packet, an eighth of one heap number each. */
const BATCH_ALLOWANCE = 128;
const scenarios = fs
  .readdirSync(referencePath('decisions'))
  .filter((f) => f.endsWith('.cmds'))
  .map((f) => f.slice(0, -5));

function measure(extra: string[] = [], env: NodeJS.ProcessEnv = {}): Measure {
  const child = path.join(__dirname, '..', '..', 'helpers', 'decide-alloc.js');
  const flags = ['--expose-gc', '--min-semi-space-size=64', '--max-semi-space-size=64'];
  const r = spawnSync(process.execPath, [...flags, child, String(CALLS), ...scenarios, ...extra], {
    encoding: 'utf8',
    env: { ...process.env, ...env, NFQLB_REFERENCE_DIR: path.dirname(referencePath('decisions')) },
  });
  if (r.status !== 0) throw new Error(`decide-alloc.js failed (${r.status}): ${r.stderr}`);
  return JSON.parse(r.stdout.trim()) as Measure;
}

/** The check: no garbage collection of the young generation, and less than LIMIT bytes allocated in it. */
function verdict(m: Measure): { minorGcs: number; allocatedBytes: number; bytesPerCall: number; allocationFree: boolean } {
  return { minorGcs: m.minorGcs, allocatedBytes: m.youngGrowth, bytesPerCall: m.youngGrowth / m.calls, allocationFree: m.minorGcs === 0 && m.youngGrowth < LIMIT };
}

describe('Pipeline.decide() on the hot path', () => {
  it(`allocates nothing over ${CALLS} calls on the reference captures`, () => {
    const m = measure();
    expect(m.packets).toBeGreaterThan(1000);
    expect(m.calls).toBe(CALLS);
    expect(verdict(m)).toMatchObject({ allocationFree: true });
  });

  it(`the packet thread's batch handler allocates nothing per packet over ${CALLS} packets in batches of 64 (shared counters, no trace client)`, () => {
    const m = measure(['--batches']);
    expect(m.calls).toBe(CALLS);
    // Per batch, not per packet: the clock read once per batch (a heap number)
    // and what V8 boxes around it come to 40-65 bytes per batch of 64 on Node 20
    // and 24; one heap number per packet would be 16 bytes x 2M = 32 MB.
    const batches = CALLS / 64;
    expect(m.minorGcs).toBe(0);
    expect(m.youngGrowth).toBeLessThan(batches * BATCH_ALLOWANCE);
  });

  it('the measurement sees one small object per call (a copy of the loop that allocates fails the check)', () => {
    const m = measure(['--allocate']);
    expect(verdict(m)).toMatchObject({ allocationFree: false });
    if (m.minorGcs === 0) expect(m.youngGrowth).toBeGreaterThanOrEqual(16 * CALLS);
  });

  it('allocates nothing with an LB tier (--lbshm) either', () => {
    const m = measure([], { DECIDE_ALLOC_LBTIER: '1' });
    expect(m.calls).toBe(CALLS);
    expect(verdict(m)).toMatchObject({ allocationFree: true });
  });
});
