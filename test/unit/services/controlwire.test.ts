/**
 * The client's side of the control protocol (controlwire.ts): the default
 * address and $NFQLB_FLOW_ADDRESS, the known keys in nfqlb's order, and a
 * request's bytes — which the server's parser (control.ts RequestParser) must
 * read back as the same request.
 */
import { DEFAULT_FLOW_ADDRESS, encodeRequest, flowAddress, KNOWN_KEYS, type ControlRequest } from '../../../src/services/controlwire';
import { RequestParser } from '../../../src/services/control';
import { FLOW_FIELDS } from '../../../src/flows/fields';

describe('flowAddress', () => {
  const saved = process.env.NFQLB_FLOW_ADDRESS;
  afterEach(() => {
    if (saved === undefined) delete process.env.NFQLB_FLOW_ADDRESS;
    else process.env.NFQLB_FLOW_ADDRESS = saved;
  });

  it("is nfqlb's unix:nfqlb without $NFQLB_FLOW_ADDRESS, and the variable's value (even empty) with it", () => {
    delete process.env.NFQLB_FLOW_ADDRESS;
    expect(DEFAULT_FLOW_ADDRESS).toBe('unix:nfqlb');
    expect(flowAddress()).toBe('unix:nfqlb');
    process.env.NFQLB_FLOW_ADDRESS = 'tcp:127.0.0.1:7777';
    expect(flowAddress()).toBe('tcp:127.0.0.1:7777');
    // nfqlb's getenv() takes a set-but-empty variable as given; so does this.
    process.env.NFQLB_FLOW_ADDRESS = '';
    expect(flowAddress()).toBe('');
  });
});

describe('KNOWN_KEYS', () => {
  it('is action followed by the flow fields, in that order', () => {
    expect([...KNOWN_KEYS]).toEqual(['action', ...FLOW_FIELDS]);
  });
});

describe('encodeRequest', () => {
  it('an empty request is only the end marker', () => {
    expect(encodeRequest({})).toBe('eoc:\n');
  });

  it('writes every known key in KNOWN_KEYS order whatever the object order, skipping undefined ones', () => {
    const req: ControlRequest = { match: 'tcp[0:2] = 80', name: 'n', dsts: '192.0.2.0/24', action: 'set', target: undefined };
    expect(encodeRequest(req)).toBe('action:set\nname:n\ndsts:192.0.2.0/24\nmatch:tcp[0:2] = 80\neoc:\n');
  });

  it('writes an empty value as a key with nothing after the colon (`name:` is how nfqlb sends --name=)', () => {
    expect(encodeRequest({ action: 'set', name: '' })).toBe('action:set\nname:\neoc:\n');
  });

  it('leaves out keys it does not know', () => {
    const req = { action: 'list', bogus: 'x' } as ControlRequest;
    expect(encodeRequest(req)).toBe('action:list\neoc:\n');
  });

  it("is read back by the server's parser as the same request, every field included", () => {
    const req: ControlRequest = { action: 'set' };
    for (const [i, f] of FLOW_FIELDS.entries()) req[f] = `v${i}:with:colons`;
    const p = new RequestParser();
    expect(p.push(encodeRequest(req))).toBe(true);
    expect(p.error).toBeNull();
    expect(p.request).toEqual(req);
  });
});
