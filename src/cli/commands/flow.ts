/**
 * Flow commands: clients of the daemon's control socket. The
 * address comes from NFQLB_FLOW_ADDRESS (default unix:nfqlb), as in nfqlb.
 */
import { UsageError } from '../../base/errors';
import { flowAddress, type ControlRequest } from '../../services/controlwire';
import { request as sendRequest } from '../client';
import { writeOut } from '../output';
import {
  checkFlowSetArgs, FLOW_FIELDS, fieldsFromArgs, flowOption, flowSetArgsFrom, MAX_NAME_BYTES, newlineError, TRACE_FLOW_FIELDS,
  type FlowField, type FlowOption,
} from '../../flows/fields';
import { type NfqlbCommand, type ParsedArgs, type Options } from '../command';

const str = (describe: string, extra: Partial<Options> = {}): Options => ({ type: 'string', describe, ...extra });

/** Help of each flow option; a Record, so a new flow field (flowfields.ts) does not compile without one. */
const DESCRIBE: Record<FlowOption, string> = {
  name: 'Name of the flow',
  target: 'Name of SHM for the load-balancer',
  prio: 'Priority. 0 has lowest precedence (default)',
  protocols: 'Protocols. tcp, udp, sctp',
  dsts: 'Destination CIDRs',
  srcs: 'Source CIDRs',
  dports: 'Destination port ranges',
  sports: 'Source port ranges',
  match: 'Bit-match statements',
  udpencap: 'UDP encapsulation port for SCTP',
};

/** What the completion offers for a flow option's value, and the defaults the daemon takes. */
const EXTRA: Partial<Record<FlowOption, Partial<Options>>> = {
  target: { values: 'shm' },
  prio: { defaultDescription: '0' },
  protocols: { values: { words: ['tcp', 'udp', 'sctp'], list: true } },
};

/**
 * The options of a set command for `fields`, in their order (the help lists them so); name and target are
 * required. `names`: what the daemon lists, for the completion of --name.
 */
function flowOptions(fields: readonly FlowField[], names: 'flow' | 'trace-flow'): Record<string, Options> {
  const options: Record<string, Options> = {};
  for (const field of fields) {
    const option = flowOption(field);
    const extra = option === 'name' ? { values: names } : EXTRA[option];
    options[option] = str(DESCRIBE[option], { ...extra, ...(field === 'name' || field === 'target' ? { demandOption: true } : {}) });
  }
  return options;
}

function opt(args: ParsedArgs, name: string): string | undefined {
  const v = args[name];
  return v === undefined ? undefined : String(v);
}

/**
 * The error for a connection the daemon closed without a reply (it was
 * stopping, overloaded, or this request timed out there). nfqlb's CLI exits
 * 255 silently for text commands and 0 for listings; a controller must not
 * read "no flows" from it, so here every command says so and exits 255.
 */
function noReply(address: string, action?: string): UsageError {
  if (action === 'trace-set') {
    // nfqlb 1.2.0's daemon sets the trace-flow and never answers.
    return new UsageError(
      `No reply from the load balancer at ${address}: it closed the connection; an nfqlb 1.2.0 daemon never answers trace-flow-set although it sets the trace-flow (see trace-flow-list)`,
      255,
    );
  }
  return new UsageError(`No reply from the load balancer at ${address}: it closed the connection; check that it runs and its log`, 255);
}

/** Sends a request whose reply is NUL-terminated text; exit 0 only on OK, as nfqlb. */
async function textRequest(req: ControlRequest): Promise<number> {
  const address = flowAddress();
  const reply = await sendRequest(address, req);
  if (reply.length === 0) throw noReply(address, req.action);
  const nul = reply.indexOf(0);
  const text = reply.subarray(0, nul < 0 ? reply.length : nul);
  // The bytes as the daemon sent them (names inside are not re-encoded).
  writeOut(Buffer.concat([text, Buffer.from('\n')]));
  return text.subarray(0, 2).toString('latin1') === 'OK' ? 0 : 255;
}

/**
 * Sends a list request and copies the JSON reply to stdout unchanged. A
 * listing is never empty (`[]\n` at least), except `list` with a name that
 * does not exist, which nfqlb answers with nothing: an empty reply to a named
 * list is checked with a names listing, which a live daemon always answers.
 */
async function listRequest(req: ControlRequest, namesAction: string): Promise<number> {
  const address = flowAddress();
  const reply = await sendRequest(address, req);
  if (reply.length === 0) {
    if (req.name === undefined) throw noReply(address);
    const names = await sendRequest(address, { action: namesAction });
    if (names.length === 0) throw noReply(address);
    return 0;
  }
  writeOut(reply);
  return 0;
}

/** A set request with the given fields of the command line (protocol names: --prio goes as priority). */
function setRequest(action: string, args: ParsedArgs, fields: readonly FlowField[]): ControlRequest {
  const given = fieldsFromArgs(flowSetArgsFrom((option) => args[option]));
  const req: ControlRequest = { action };
  for (const field of fields) req[field] = given[field];
  return req;
}

function clientCheck(args: ParsedArgs): void {
  const err = checkFlowSetArgs(flowSetArgsFrom((option) => args[option]));
  if (err !== null) throw new UsageError(err, 1);
}

/**
 * `<cmd>-delete`, `<cmd>-list` and `<cmd>-list-names` for flows and
 * trace-flows: the same requests with the action prefixed by `action`.
 */
function deleteAndListCommands(cmd: 'flow' | 'trace-flow', action: string, noun: string): NfqlbCommand[] {
  return [
    {
      name: `${cmd}-delete`,
      describe: `Delete a ${noun}`,
      usage: `${cmd}-delete\n  Delete a flow`,
      options: { name: str('Name of the flow', { demandOption: true, values: cmd }) },
      run: (args) => textRequest({ action: `${action}delete`, name: opt(args, 'name') }),
    },
    {
      name: `${cmd}-list`,
      describe: `List ${noun}s (JSON)`,
      usage: `${cmd}-list\n  List flows`,
      options: { name: str('Name of a flow', { values: cmd }) },
      run: (args) => listRequest({ action: `${action}list`, name: opt(args, 'name') }, `${action}list-names`),
    },
    {
      name: `${cmd}-list-names`,
      describe: `List ${noun} names (JSON)`,
      usage: `${cmd}-list-names\n  List ${noun} names`,
      options: {},
      run: () => listRequest({ action: `${action}list-names` }, `${action}list-names`),
    },
  ];
}

/**
 * nfqlb's server cuts a --name longer than MAX_NAME_BYTES (it reads lines
 * into 1024 bytes) or at a newline, so flow-delete/-list would act on another
 * flow: refuse before connecting, as flow-set does (checkFlowSetArgs).
 */
function refuseLongNames(commands: NfqlbCommand[]): NfqlbCommand[] {
  return commands.map((c) => ({
    ...c,
    run(args, ctx) {
      const name = opt(args, 'name');
      if (name !== undefined && name.includes('\n')) throw new UsageError(newlineError('name'));
      if (name !== undefined && Buffer.byteLength(name, 'utf8') > MAX_NAME_BYTES) throw new UsageError(`name too long (at most ${MAX_NAME_BYTES} bytes)`);
      return c.run(args, ctx);
    },
  }));
}

export const flowCommands: NfqlbCommand[] = [
  {
    name: 'flow-set',
    describe: 'Set a flow. An un-defined value means match-all. Use comma separated lists (no spaces)',
    usage: 'flow-set [options]\n  Set a flow. An un-defined value means match-all.\n  Use comma separated lists for multiple items (no spaces)',
    options: flowOptions(FLOW_FIELDS, 'flow'),
    async run(args) {
      clientCheck(args);
      return textRequest(setRequest('set', args, FLOW_FIELDS));
    },
  },
  ...refuseLongNames(deleteAndListCommands('flow', '', 'flow')),
  {
    name: 'trace-flow-set',
    describe: 'Set a trace-flow: packets matching it produce per-packet trace lines',
    usage: 'trace-flow-set [options]\n  Set a flow. An un-defined value means match-all.\n  Use comma separated lists for multiple items (no spaces)',
    options: flowOptions(TRACE_FLOW_FIELDS, 'trace-flow'),
    async run(args) {
      clientCheck(args);
      return textRequest(setRequest('trace-set', args, TRACE_FLOW_FIELDS));
    },
  },
  ...refuseLongNames(deleteAndListCommands('trace-flow', 'trace-', 'trace-flow')),
];
