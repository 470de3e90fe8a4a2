/**
 * --flows_file glue: a restore replays the file through the control actions
 * quietly and says how much came back, a missing file is a fresh start, each
 * change that succeeded is appended and comes back on the next start, and a
 * failed write is counted (a planted directory also as a refused open).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { KeyCounter } from '../../../src/base/counters';
import { createLogger } from '../../../src/base/log';
import { RateLimitedLog } from '../../../src/base/ratelog';
import { FlowSet } from '../../../src/flows/flowset';
import type { ServedTable } from '../../../src/tables/servedtable';
import type { Target } from '../../../src/tables/targets';
import type { ControlReply, ControlRequest } from '../../../src/services/control';
import { loadFlowsFile } from '../../../src/daemon/flowsfile';
import { FlowsKeeper, type FlowsReplay } from '../../../src/daemon/flowskeeper';

let text = '';
const log = createLogger(7, { write: (s: string) => void (text += s) } as unknown as Parameters<typeof createLogger>[1]);
const msgs = (): Record<string, unknown>[] => text.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, unknown>);
let dir = '';
beforeEach(() => {
  text = '';
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nfqlbts-keeper-'));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

function keeper(noted: string[] = [], refused = new KeyCounter()): FlowsKeeper {
  return new FlowsKeeper({
    log,
    failures: new RateLimitedLog((key) => noted.push(key)),
    openRefused: refused,
    flows: new FlowSet<Target<ServedTable>>({ targetName: (t) => t.name }),
    traceFlows: new FlowSet<string>({ promiscuousPing: true }),
  });
}

/** Replies OK to everything but flow `bad`, and records whether it was called quietly. */
function replay(): FlowsReplay & { seen: [string | undefined, string | undefined, boolean][] } {
  const seen: [string | undefined, string | undefined, boolean][] = [];
  const r = {
    restoring: false,
    seen,
    reply(req: ControlRequest): ControlReply {
      seen.push([req.action, req.name, r.restoring]);
      return { text: req.name === 'bad' ? 'FAIL: nope' : 'OK' };
    },
  };
  return r;
}

describe('FlowsKeeper', () => {
  it('starts without flows when there is no file yet, and keeps each change for the next start', () => {
    const file = path.join(dir, 'flows');
    const k = keeper();
    k.restore(file, replay());
    expect(msgs().map((l) => l.msg)).toEqual(['no flows file yet; starting without flows']);
    k.persist({ action: 'set', name: 'f', target: 't', protocols: 'tcp' });
    k.persist({ action: 'set', name: 'bad', target: 't' });
    k.persist({ action: 'trace-set', name: 'tf', protocols: 'udp' });
    k.persist({ action: 'list' });
    text = '';
    const again = keeper();
    const r = replay();
    again.restore(file, r);
    expect(r.seen).toEqual([['set', 'f', true], ['set', 'bad', true], ['trace-set', 'tf', true]]);
    expect(r.restoring).toBe(false);
    const l = msgs();
    expect(l.map((x) => x.msg)).toEqual(['flow from the flows file not restored', 'flows restored']);
    expect(l[1]).toMatchObject({ flows: 1, failed: 1, traceFlows: 1 });
    expect(loadFlowsFile(file)!.content.flows.map((f) => f.name)).toEqual(['f', 'bad']);
  });

  it('counts a failed write; a directory planted under the name is also a refused open', () => {
    const file = path.join(dir, 'flows');
    const noted: string[] = [];
    const refused = new KeyCounter();
    const k = keeper(noted, refused);
    k.restore(file, replay());
    fs.rmSync(file);
    fs.mkdirSync(file);
    k.persist({ action: 'set', name: 'f', target: 't' });
    expect(k.errors).toBeGreaterThan(0);
    expect(noted).toContain('flowsfile:write');
    expect(refused.entries()).toEqual([{ key: 'flows_file', count: k.errors }]);
  });
});
