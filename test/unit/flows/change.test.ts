/**
 * The one rule for a flow change (change.ts applyFlowChange): what each action
 * does to the two sets, and the refusals it adds to FlowSet's own — the empty
 * name, '#' names for set/delete, no name for the trace actions — each leaving
 * both sets and the target references as they were. FlowSet's own checks are
 * flowset.test.ts's.
 */
import { applyFlowChange, HIDDEN_NAME_REFUSAL, isFlowChangeAction } from '../../../src/flows/change';
import type { FlowCmd } from '../../../src/flows/fields';
import { FlowSet, type TargetSource } from '../../../src/flows/flowset';

/** Counts references per target name, so an acquire without a release shows. */
class CountingTargets implements TargetSource<string> {
  readonly refs = new Map<string, number>();
  constructor(private readonly existing: readonly string[]) {}
  acquire(name: string): string | null {
    if (!this.existing.includes(name)) return null;
    this.refs.set(name, (this.refs.get(name) ?? 0) + 1);
    return name;
  }
  release(name: string): void {
    const n = (this.refs.get(name) ?? 0) - 1;
    if (n === 0) this.refs.delete(name);
    else this.refs.set(name, n);
  }
}

function sets(): { flows: FlowSet<string>; trace: FlowSet<string>; targets: CountingTargets } {
  return { flows: new FlowSet<string>({ targetName: (t) => t }), trace: new FlowSet<string>(), targets: new CountingTargets(['tshm']) };
}

const TCP_FLOW: FlowCmd = { name: 'web', target: 'tshm', protocols: 'tcp', dsts: '192.0.2.1/32', priority: 1 };

describe('isFlowChangeAction', () => {
  it('is true for the four actions that change a set and false for the rest', () => {
    for (const a of ['set', 'delete', 'trace-set', 'trace-delete']) expect(isFlowChangeAction(a)).toBe(true);
    for (const a of [undefined, '', 'list', 'list-names', 'trace-list', 'SET', 'set ']) expect(isFlowChangeAction(a)).toBe(false);
  });
});

describe('applyFlowChange: set and delete', () => {
  it('set defines the flow in flows (not in trace flows) and holds one target reference; delete gives it back', () => {
    const { flows, trace, targets } = sets();
    expect(applyFlowChange(flows, trace, targets, 'set', TCP_FLOW)).toBe('OK');
    expect(flows.get('web')?.target).toBe('tshm');
    expect(trace.size).toBe(0);
    expect(targets.refs.get('tshm')).toBe(1);
    expect(applyFlowChange(flows, trace, targets, 'delete', { name: 'web' })).toBe('OK');
    expect(flows.size).toBe(0);
    expect(targets.refs.size).toBe(0);
  });

  it("passes FlowSet's refusals through unchanged (a missing target, no name on delete)", () => {
    const { flows, trace, targets } = sets();
    expect(applyFlowChange(flows, trace, targets, 'set', { ...TCP_FLOW, target: 'absent' })).toBe("FAIL: Couldn't create load-balancer");
    expect(applyFlowChange(flows, trace, targets, 'delete', {})).toBe('FAIL: no name');
    expect(flows.size).toBe(0);
    expect(targets.refs.size).toBe(0);
  });

  it("refuses set and delete of a '#' name, leaving the hidden udpencap flow and its parent in place", () => {
    const { flows, trace, targets } = sets();
    expect(applyFlowChange(flows, trace, targets, 'set', { name: 'enc', target: 'tshm', protocols: 'sctp', udpencap: 9899 })).toBe('OK');
    expect(flows.get('#enc')).toBeDefined();
    const before = flows.list();
    expect(applyFlowChange(flows, trace, targets, 'set', { name: '#enc', target: 'tshm', protocols: 'tcp' })).toBe(HIDDEN_NAME_REFUSAL);
    expect(applyFlowChange(flows, trace, targets, 'set', { name: '#new', target: 'tshm', protocols: 'tcp' })).toBe(HIDDEN_NAME_REFUSAL);
    expect(applyFlowChange(flows, trace, targets, 'delete', { name: '#enc' })).toBe(HIDDEN_NAME_REFUSAL);
    expect(flows.list()).toBe(before);
    expect(targets.refs.get('tshm')).toBe(1);
    // Deleting the parent still takes its hidden flow with it.
    expect(applyFlowChange(flows, trace, targets, 'delete', { name: 'enc' })).toBe('OK');
    expect(flows.size).toBe(0);
  });

  it("refuses the empty name on set with nfqlb's words for a missing name", () => {
    const { flows, trace, targets } = sets();
    expect(applyFlowChange(flows, trace, targets, 'set', { ...TCP_FLOW, name: '' })).toBe('No name');
    expect(flows.size).toBe(0);
    expect(targets.refs.size).toBe(0);
  });

  it("a '#' inside a name (not first) is an ordinary name", () => {
    const { flows, trace, targets } = sets();
    expect(applyFlowChange(flows, trace, targets, 'set', { ...TCP_FLOW, name: 'a#b' })).toBe('OK');
    expect(flows.get('a#b')).toBeDefined();
  });
});

describe('applyFlowChange: trace-set and trace-delete', () => {
  it('trace-set defines the flow in trace flows with its name as target and no udpencap; flows untouched', () => {
    const { flows, trace, targets } = sets();
    expect(applyFlowChange(flows, trace, targets, 'trace-set', { name: 'tr', protocols: 'udp', udpencap: 5000, target: 'ignored' })).toBe('OK');
    const f = trace.get('tr');
    expect(f?.target).toBe('tr');
    expect(f?.udpencap).toBe(0);
    expect(flows.size).toBe(0);
    expect(targets.refs.size).toBe(0);
    expect(trace.get('#tr')).toBeUndefined();
  });

  it('trace-set without a name or with the empty one: FAIL: no name, nothing defined', () => {
    const { flows, trace, targets } = sets();
    expect(applyFlowChange(flows, trace, targets, 'trace-set', { protocols: 'udp' })).toBe('FAIL: no name');
    expect(applyFlowChange(flows, trace, targets, 'trace-set', { name: '', protocols: 'udp' })).toBe('FAIL: no name');
    expect(trace.size).toBe(0);
  });

  it("trace-set passes define()'s error through", () => {
    const { flows, trace, targets } = sets();
    expect(applyFlowChange(flows, trace, targets, 'trace-set', { name: 'tr', protocols: 'nonsense' })).toBe('Invalid protocols');
    expect(trace.size).toBe(0);
  });

  it("trace-set accepts a '#' name (the trace set has no hidden flows) and trace-delete removes it", () => {
    const { flows, trace, targets } = sets();
    expect(applyFlowChange(flows, trace, targets, 'trace-set', { name: '#t', protocols: 'udp' })).toBe('OK');
    expect(applyFlowChange(flows, trace, targets, 'trace-delete', { name: '#t' })).toBe('OK');
    expect(trace.size).toBe(0);
  });

  it('trace-delete: OK for a missing flow, FAIL: no name without a name; it never touches flows', () => {
    const { flows, trace, targets } = sets();
    expect(applyFlowChange(flows, trace, targets, 'set', TCP_FLOW)).toBe('OK');
    expect(applyFlowChange(flows, trace, targets, 'trace-delete', { name: 'web' })).toBe('OK');
    expect(flows.get('web')).toBeDefined();
    expect(applyFlowChange(flows, trace, targets, 'trace-delete', {})).toBe('FAIL: no name');
  });
});
