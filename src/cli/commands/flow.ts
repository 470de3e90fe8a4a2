/**
 * Flow commands: clients of the daemon's control socket (SPEC.md §7). The
 * address comes from NFQLB_FLOW_ADDRESS (default unix:nfqlb), as in nfqlb.
 */
import type { Options } from 'yargs';
import { UsageError } from '../../errors';
import { flowAddress, sendRequest, type ControlRequest } from '../../control';
import { checkFlowSetArgs, MAX_NAME_BYTES, newlineError } from '../../flows';
import { EXTENSION, out, type NfqlbCommand, type ParsedArgs } from '../command';

const str = (describe: string, extra: Partial<Options> = {}): Options => ({ type: 'string', describe, ...extra });

const selectorOptions: Record<string, Options> = {
  protocols: str('Protocols. tcp, udp, sctp'),
  dsts: str('Destination CIDRs'),
  srcs: str('Source CIDRs'),
  dports: str('Destination port ranges'),
  sports: str('Source port ranges'),
  match: str('Bit-match statements'),
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
    name: opt(args, 'name'),
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

/**
 * `<cmd>-delete`, `<cmd>-list` and `<cmd>-list-names` for flows and
 * trace-flows: the same requests with the action prefixed by `action`.
 */
function deleteAndListCommands(cmd: string, action: string, noun: string): NfqlbCommand[] {
  return [
    {
      name: `${cmd}-delete`,
      describe: `Delete a ${noun}`,
      usage: `${cmd}-delete\n  Delete a flow`,
      options: { name: str('Name of the flow', { demandOption: true }) },
      run: (args) => textRequest({ action: `${action}delete`, name: opt(args, 'name') }),
    },
    {
      name: `${cmd}-list`,
      describe: `List ${noun}s (JSON)`,
      usage: `${cmd}-list\n  List flows`,
      options: { name: str('Name of a flow') },
      run: (args) => listRequest({ action: `${action}list`, name: opt(args, 'name') }),
    },
    {
      name: `${cmd}-list-names`,
      describe: `List ${noun} names (JSON)`,
      usage: `${cmd}-list-names\n  List ${noun} names`,
      options: {},
      run: () => listRequest({ action: `${action}list-names` }),
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
  ...refuseLongNames(deleteAndListCommands('flow', '', 'flow')),
  {
    name: 'trace-flow-set',
    describe: 'Set a trace-flow: packets matching it produce per-packet trace lines',
    usage: 'trace-flow-set [options]\n  Set a flow. An un-defined value means match-all.\n  Use comma separated lists for multiple items (no spaces)',
    options: { name: str('Name of the flow', { demandOption: true }), prio: str('Priority', { group: EXTENSION }), ...selectorOptions },
    async run(args) {
      clientCheck(args);
      return textRequest({ action: 'trace-set', name: opt(args, 'name'), priority: opt(args, 'prio'), ...selectors(args) });
    },
  },
  ...refuseLongNames(deleteAndListCommands('trace-flow', 'trace-', 'trace-flow')),
];
