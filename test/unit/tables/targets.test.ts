/**
 * The target registry: a table is opened once for the first flow naming it,
 * shared, closed with the last release, and swapped in place by refresh when
 * its shm object was replaced (the pipeline holds the Target, so the swap
 * takes effect at once).
 */
import { TargetRegistry, type LookupTable, type TableSource } from '../../../src/tables/targets';

class FakeTable implements LookupTable {
  constructor(
    readonly name: string,
    readonly generation: number,
  ) {}
  fwmarkOf(hash: number): number {
    return hash === 0 ? -1 : this.generation;
  }
}

/** A source over a set of existing names that records every open and close. */
function source(existing: Set<string>): TableSource<FakeTable> & { log: string[]; generation: Map<string, number> } {
  const generation = new Map<string, number>();
  const log: string[] = [];
  return {
    log,
    generation,
    open(name) {
      if (!existing.has(name)) {
        log.push(`open ${name}: none`);
        return null;
      }
      const g = (generation.get(name) ?? 0) + 1;
      generation.set(name, g);
      log.push(`open ${name}#${g}`);
      return new FakeTable(name, g);
    },
    close(name, table) {
      log.push(`close ${name}#${table.generation}`);
    },
  };
}

describe('TargetRegistry', () => {
  it('opens a table once for all flows naming it and closes it with the last release', () => {
    const src = source(new Set(['tshm-a']));
    const reg = new TargetRegistry(src);
    const t1 = reg.acquire('tshm-a');
    const t2 = reg.acquire('tshm-a');
    expect(t1).not.toBeNull();
    expect(t2).toBe(t1);
    expect(t1!.refs).toBe(2);
    expect(reg.list().map((t) => t.name)).toEqual(['tshm-a']);
    reg.release(t1);
    expect(src.log).toEqual(['open tshm-a#1']);
    reg.release(t2);
    expect(src.log).toEqual(['open tshm-a#1', 'close tshm-a#1']);
    expect(reg.list()).toEqual([]);
  });

  it('gives null for a table that cannot be opened, registers nothing, and release(null) is harmless', () => {
    const src = source(new Set());
    const reg = new TargetRegistry(src);
    expect(reg.acquire('tshm-none')).toBeNull();
    expect(reg.list()).toEqual([]);
    reg.release(null);
    expect(src.log).toEqual(['open tshm-none: none']);
  });

  it('opens again after the last release (a new flow names a table that was let go)', () => {
    const src = source(new Set(['tshm-a']));
    const reg = new TargetRegistry(src);
    reg.release(reg.acquire('tshm-a'));
    const again = reg.acquire('tshm-a');
    expect(again!.table.generation).toBe(2);
    expect(src.log).toEqual(['open tshm-a#1', 'close tshm-a#1', 'open tshm-a#2']);
  });
});
