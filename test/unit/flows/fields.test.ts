/**
 * The flow fields (fields.ts): one list of fields in nfqlb's order that the
 * CLI options, the control requests, the flows file and the server's FlowCmd
 * all derive from, and the checks `nfqlb flow-set` makes before it connects,
 * in nfqlb's words and order.
 */
import { atoi } from '../../../src/base/catoi';
import { encodeRequest } from '../../../src/services/control';
import {
  checkFlowSetArgs, FLOW_FIELDS, fieldsFromArgs, flowCmdFromArgs, flowCmdFromFields, flowOption, flowSetArgsFrom, MAX_NAME_BYTES,
  newlineError, TRACE_FLOW_FIELDS, type FlowOption, type FlowSetArgs,
} from '../../../src/flows/fields';

describe('client-side checks (checkFlowSetArgs) and flowCmdFromArgs', () => {
  test('messages in nfqlb order', () => {
    expect(checkFlowSetArgs({ target: 't'.repeat(256) })).toBe('target too long');
    expect(checkFlowSetArgs({ target: 't'.repeat(255) })).toBeNull();
    for (const k of ['protocols', 'dsts', 'srcs', 'dports', 'sports', 'match'] as const) {
      expect(checkFlowSetArgs({ [k]: 'x'.repeat(1001) })).toBe(`${k} too long`);
      expect(checkFlowSetArgs({ protocols: 'tcp', [k]: 'x'.repeat(1000) })).toBeNull();
    }
    expect(checkFlowSetArgs({ udpencap: '9899' })).toBe('udpencap specified without protocols');
    expect(checkFlowSetArgs({ udpencap: '0', protocols: 'tcp' })).toBe('udpencap specified without sctp');
    expect(checkFlowSetArgs({ udpencap: '1', protocols: 'tcp,SCTP' })).toBeNull(); // the server refuses this one
    expect(checkFlowSetArgs({ dports: '80' })).toBe('ports specified without protocols');
    expect(checkFlowSetArgs({ sports: '80' })).toBe('ports specified without protocols');
    expect(checkFlowSetArgs({ dsts: '10.0.0.0/8', match: 'tcp[1:1]=1' })).toBeNull();
  });

  test('priority and udpencap go through atoi', () => {
    expect(atoi(' -12abc')).toBe(-12);
    expect(atoi('x')).toBe(0);
    expect(atoi('99999999999999999999')).toBe(-1); // LONG_MAX cut to int
    expect(flowCmdFromArgs({ name: 'n', prio: '100', udpencap: '70000' })).toMatchObject({ priority: 100, udpencap: 70000 & 0xffff });
    expect(flowCmdFromArgs({ name: 'n' })).toMatchObject({ priority: 0, udpencap: 0 });
  });
});

describe('flow fields: one definition', () => {
  test('the protocol names, the CLI names and the numbers derive from FLOW_FIELDS; only priority is spelled --prio', () => {
    expect(FLOW_FIELDS.map(flowOption)).toEqual(['name', 'target', 'prio', 'protocols', 'dsts', 'srcs', 'dports', 'sports', 'match', 'udpencap']);
    const all = Object.fromEntries(FLOW_FIELDS.map((f) => [flowOption(f), `v-${f}`])) as FlowSetArgs;
    expect(fieldsFromArgs(all)).toEqual(Object.fromEntries(FLOW_FIELDS.map((f) => [f, `v-${f}`])));
    expect(flowCmdFromFields({ name: 'n', priority: '7x', udpencap: '65537' })).toMatchObject({ name: 'n', priority: 7, udpencap: 1 });
    expect(flowCmdFromArgs({ prio: '-3' })).toEqual(flowCmdFromFields({ priority: '-3' }));
  });

  test('a control request carries the fields in FLOW_FIELDS order, after the action', () => {
    const req = Object.fromEntries([...FLOW_FIELDS].reverse().map((f) => [f, 'x']));
    expect(encodeRequest({ ...req, action: 'set' })).toBe(`action:set\n${FLOW_FIELDS.map((f) => `${f}:x\n`).join('')}eoc:\n`);
  });
});

describe('fields to and from the command line', () => {
  test('flowSetArgsFrom reads every option by its CLI name; absent stays undefined, others become strings', () => {
    const asked: FlowOption[] = [];
    const given: Record<string, unknown> = { name: 'f', prio: 7, udpencap: 9899, protocols: 'sctp' };
    const args = flowSetArgsFrom((o) => {
      asked.push(o);
      return given[o];
    });
    expect(asked).toEqual(FLOW_FIELDS.map(flowOption));
    expect(args).toEqual({
      name: 'f', target: undefined, prio: '7', protocols: 'sctp', dsts: undefined, srcs: undefined,
      dports: undefined, sports: undefined, match: undefined, udpencap: '9899',
    });
  });

  test('trace-flows have no target, priority or udpencap', () => {
    expect(TRACE_FLOW_FIELDS).toEqual(['name', 'protocols', 'dsts', 'srcs', 'dports', 'sports', 'match']);
  });

  test('flowCmdFromFields: absent numbers are 0, text fields pass unchanged', () => {
    expect(flowCmdFromFields({})).toEqual({
      name: undefined, target: undefined, priority: 0, protocols: undefined, dsts: undefined, srcs: undefined,
      dports: undefined, sports: undefined, match: undefined, udpencap: 0,
    });
    expect(flowCmdFromFields({ dsts: ' 10.0.0.0/8, ', udpencap: '-1' })).toMatchObject({ dsts: ' 10.0.0.0/8, ', udpencap: 0xffff });
  });

  test('limits: names of MAX_NAME_BYTES UTF-8 bytes, any newline refused first', () => {
    expect(MAX_NAME_BYTES).toBe(1017);
    expect(checkFlowSetArgs({ name: 'x'.repeat(MAX_NAME_BYTES) })).toBeNull();
    expect(checkFlowSetArgs({ name: 'x'.repeat(MAX_NAME_BYTES + 1) })).toBe('name too long (at most 1017 bytes)');
    expect(checkFlowSetArgs({ name: 'x'.repeat(2000), dsts: 'a\nb' })).toBe(newlineError('dsts'));
    expect(newlineError('srcs')).toBe('srcs contains a newline, which the control protocol cannot carry');
    // udpencap's check looks for "sctp" in any case, anywhere in the text (as nfqlb's strcasestr).
    expect(checkFlowSetArgs({ udpencap: '1', protocols: 'xSCTPx' })).toBeNull();
  });
});
