/**
 * Flow commands: clients of the daemon's control socket (SPEC.md §7). The
 * address comes from NFQLB_FLOW_ADDRESS (default unix:nfqlb), as in nfqlb.
 */
import type { Options } from 'yargs';
import { UsageError } from '../../errors';
import { flowAddress, sendRequest, type ControlRequest } from '../../control';
import { checkFlowSetArgs } from '../../flows';
import { out, type NfqlbCommand, type ParsedArgs } from '../command';

const str = (describe: string, extra: Partial<Options> = {}): Options => ({ type: 'string', describe, ...extra });

const selectorOptions: Record<string, Options> = {
  protocols: str('Protocols. tcp, udp, sctp'),
  dsts: str('Destination CIDRs'),
  srcs: str('Source CIDRs'),
  dports: str('Destination port ranges'),
  sports: str('Source port ranges'),
  match: str('Byte matches, e.g. tcp[12:2]&0x1ff=0x2'),
};

function opt(args: ParsedArgs, name: string): string | undefined {
  const v = args[name];
  return v === undefined ? undefined : String(v);
}

/** Sends a request whose reply is NUL-terminated text; exit 0 only on OK, as nfqlb. */
async function textRequest(req: ControlRequest): Promise<number> {
  const reply = await sendRequest(flowAddress(), req);
  const nul = reply.indexOf(0);
  const text = reply.subarray(0, nul < 0 ? reply.length : nul).toString('latin1');
  if (reply.length === 0) {
    throw new UsageError('No reply from the load balancer (it closed the connection)', 255);
  }
  out(`${text}\n`);
  return text.startsWith('OK') ? 0 : 255;
}

/** Sends a list request and copies the JSON reply to stdout unchanged. */
async function listRequest(req: ControlRequest): Promise<number> {
  const reply = await sendRequest(flowAddress(), req);
  process.stdout.write(reply);
  return 0;
}

function selectors(args: ParsedArgs): ControlRequest {
  return {
    protocols: opt(args, 'protocols'),
    dsts: opt(args, 'dsts'),
    srcs: opt(args, 'srcs'),
    dports: opt(args, 'dports'),
    sports: opt(args, 'sports'),
    match: opt(args, 'match'),
  };
}

function clientCheck(args: ParsedArgs): void {
  const err = checkFlowSetArgs({
    target: opt(args, 'target'),
    protocols: opt(args, 'protocols'),
    dsts: opt(args, 'dsts'),
    srcs: opt(args, 'srcs'),
    dports: opt(args, 'dports'),
    sports: opt(args, 'sports'),
    match: opt(args, 'match'),
    udpencap: opt(args, 'udpencap'),
  });
  if (err !== null) throw new UsageError(err, 1);
}

export const flowCommands: NfqlbCommand[] = [
  {
    name: 'flow-set',
    describe: 'Set a flow. An un-defined value means match-all. Use comma separated lists (no spaces)',
    options: {
      name: str('Name of the flow', { demandOption: true }),
      target: str('Name of SHM for the load-balancer', { demandOption: true }),
      prio: str('Priority. 0 has lowest precedence (default)'),
      ...selectorOptions,
      udpencap: str('UDP encapsulation port for SCTP'),
    },
    async run(args) {
      clientCheck(args);
      return textRequest({
        action: 'set',
        name: opt(args, 'name'),
        target: opt(args, 'target'),
        priority: opt(args, 'prio'),
        ...selectors(args),
        udpencap: opt(args, 'udpencap'),
      });
    },
  },
  {
    name: 'flow-delete',
    describe: 'Delete a flow',
    options: { name: str('Name of the flow', { demandOption: true }) },
    async run(args) {
      return textRequest({ action: 'delete', name: opt(args, 'name') });
    },
  },
  {
    name: 'flow-list',
    describe: 'List flows (JSON)',
    options: { name: str('Name of a flow') },
    async run(args) {
      return listRequest({ action: 'list', name: opt(args, 'name') });
    },
  },
  {
    name: 'flow-list-names',
    describe: 'List flow names (JSON)',
    options: {},
    async run() {
      return listRequest({ action: 'list-names' });
    },
  },
  {
    name: 'trace-flow-set',
    describe: 'Set a trace-flow: packets matching it produce per-packet trace lines',
    options: { name: str('Name of the trace-flow', { demandOption: true }), prio: str('Priority'), ...selectorOptions },
    async run(args) {
      clientCheck(args);
      return textRequest({ action: 'trace-set', name: opt(args, 'name'), priority: opt(args, 'prio'), ...selectors(args) });
    },
  },
  {
    name: 'trace-flow-delete',
    describe: 'Delete a trace-flow',
    options: { name: str('Name of the trace-flow', { demandOption: true }) },
    async run(args) {
      return textRequest({ action: 'trace-delete', name: opt(args, 'name') });
    },
  },
  {
    name: 'trace-flow-list',
    describe: 'List trace-flows (JSON)',
    options: { name: str('Name of a trace-flow') },
    async run(args) {
      return listRequest({ action: 'trace-list', name: opt(args, 'name') });
    },
  },
  {
    name: 'trace-flow-list-names',
    describe: 'List trace-flow names (JSON)',
    options: {},
    async run() {
      return listRequest({ action: 'trace-list-names' });
    },
  },
];
