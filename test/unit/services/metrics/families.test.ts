/**
 * The table of families as the registry builds it: every family once, in
 * the table's order, each with a help text; the counters follow their source
 * and never go down; a flow that ended between two scrapes (endedFlows) shows
 * with its last count, after it the flows of now; families that do not apply
 * stay as they are (counters) or are absent (optional gauges).
 */
import { BatchSizeHistogram, LabeledCounter } from '../../../../src/base/counters';
import { METRIC_FAMILIES } from '../../../../src/services/metrics/families';
import { createMetricsRegistry } from '../../../../src/services/metrics/registry';
import type { FlowCount, FragmentStoreCounts, MetricsSource } from '../../../../src/services/metrics/source';

class Source implements MetricsSource {
  flowList: FlowCount[] = [];
  ended: FlowCount[] = [];
  store: FragmentStoreCounts | null = null;
  batchSizes = new BatchSizeHistogram();
  control = new LabeledCounter();
  ready = (): boolean => true;
  queues = (): [] => [];
  reasons = (): { name: string; count: number }[] => [];
  flows = (): FlowCount[] => this.flowList;
  endedFlows = (): FlowCount[] => this.ended.splice(0);
  targets = (): [] => [];
  controlRequests = (): ReturnType<LabeledCounter['entries']> => this.control.entries();
  fragmentStore = (): FragmentStoreCounts | null => this.store;
}

function sample(text: string, name: string, labels = ''): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${name}${labels === '' ? ' ' : `{${labels}} `}`));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
}

describe('METRIC_FAMILIES', () => {
  it('names each family once, all nfqlb_*, each with a help text', () => {
    const names = METRIC_FAMILIES.map((f) => f.name);
    expect(new Set(names).size).toBe(names.length);
    for (const f of METRIC_FAMILIES) {
      expect(f.name).toMatch(/^nfqlb_[a-z_]+$/);
      expect(f.help.length).toBeGreaterThan(10);
      if (f.kind === 'counter') expect(f.name).toMatch(/_total$/);
    }
  });

  it('are exported in the order of the table, before the default metrics', async () => {
    const registry = createMetricsRegistry(new Source());
    const exported = (await registry.getMetricsAsJSON()).map((m) => m.name);
    expect(exported.slice(0, METRIC_FAMILIES.length)).toEqual(METRIC_FAMILIES.map((f) => f.name));
    expect(exported.slice(METRIC_FAMILIES.length).every((n) => !n.startsWith('nfqlb_'))).toBe(true);
  });
});

describe('nfqlb_flow_matches_total and ended flows', () => {
  const series = 'nfqlb_flow_matches_total';

  it('shows a flow that was set and deleted between two scrapes, then lets it go', async () => {
    let now = 0;
    const src = new Source();
    const registry = createMetricsRegistry(src, { now: () => now, seriesRetentionMs: 1000 });
    expect(sample(await registry.metrics(), series, 'flow="brief",target="t"')).toBeUndefined();
    src.ended.push({ name: 'brief', target: 't', matches: 9, instance: {} });
    expect(sample(await registry.metrics(), series, 'flow="brief",target="t"')).toBe(9);
    now = 10;
    expect(sample(await registry.metrics(), series, 'flow="brief",target="t"')).toBe(9); // gone: shown once more
    now = 5000;
    expect(sample(await registry.metrics(), series, 'flow="brief",target="t"')).toBeUndefined();
  });

  it('adds the last count of a replaced flow to its successor under the same name', async () => {
    const src = new Source();
    const registry = createMetricsRegistry(src);
    const first = { name: 'f', target: 't', matches: 4, instance: {} };
    src.flowList = [first];
    expect(sample(await registry.metrics(), series, 'flow="f",target="t"')).toBe(4);
    // Between two scrapes the first flow matched 3 more, then was set again; the new one matched 2.
    src.ended.push({ ...first, matches: 7 });
    src.flowList = [{ name: 'f', target: 't', matches: 2, instance: {} }];
    expect(sample(await registry.metrics(), series, 'flow="f",target="t"')).toBe(9);
  });

  it('is the same as before without endedFlows (an older source)', async () => {
    const src = new Source();
    const { endedFlows: _unused, ...withoutEnded } = src;
    const registry = createMetricsRegistry({ ...withoutEnded, batchSizes: src.batchSizes, flows: () => [{ name: 'x', target: null, matches: 1 }] });
    expect(sample(await registry.metrics(), series, 'flow="x",target=""')).toBe(1);
  });
});

describe('families that do not apply', () => {
  it('the fragment store: counters stay as they were, optional gauges are absent, labelled gauges empty', async () => {
    const src = new Source();
    const registry = createMetricsRegistry(src);
    let text = await registry.metrics();
    expect(sample(text, 'nfqlb_fragment_store_slots_in_use')).toBeUndefined();
    expect(text).not.toMatch(/^nfqlb_fragment_store_total\{/m);
    src.store = { slots: 8, inUse: 2, events: [{ event: 'stored', count: 5 }] };
    text = await registry.metrics();
    expect(sample(text, 'nfqlb_fragment_store_slots_in_use')).toBe(2);
    expect(sample(text, 'nfqlb_fragment_store_slots_max')).toBe(8);
    expect(sample(text, 'nfqlb_fragment_store_slots', 'state="in_use"')).toBe(2);
    expect(sample(text, 'nfqlb_fragment_store_total', 'event="stored"')).toBe(5);
    src.store = null;
    text = await registry.metrics();
    expect(sample(text, 'nfqlb_fragment_store_slots_in_use')).toBeUndefined();
    expect(sample(text, 'nfqlb_fragment_store_slots', 'state="in_use"')).toBeUndefined();
    expect(sample(text, 'nfqlb_fragment_store_total', 'event="stored"')).toBe(5);
  });

  it('seeds the control series an alert watches at 0', async () => {
    const text = await createMetricsRegistry(new Source()).metrics();
    expect(sample(text, 'nfqlb_control_requests_total', 'action="set",result="fail"')).toBe(0);
    expect(sample(text, 'nfqlb_control_refused_total', 'reason="timeout"')).toBe(0);
  });
});
