/**
 * The ten fields of a flow — names, types, order — defined once. Everything
 * that carries a flow derives from FLOW_FIELDS: the control protocol
 * (control.ts ControlRequest, its known keys and their order on the wire),
 * the flows file (flowsfile.ts), the server's parsed FlowCmd and the flow
 * set's FlowDefinition (parse.ts), the replay config reader (replay/config.ts)
 * and the CLI's option lists (cli/commands/flow.ts). A new field is added
 * here, and the compiler then points at every place that must handle it.
 *
 * nfqlb's CLI calls the priority `--prio` while the protocol says
 * `priority`; flowOption() below is the one place that bridges the two.
 *
 * The client-side checks of `nfqlb flow-set` (checkFlowSetArgs) live here
 * too, not in src/cli: the replay config reader (config.ts, daemon/replay
 * layer) applies them to flow-set lines, and a library module may not import
 * the CLI (test/unit/architecture.test.ts). Both the CLI and the reader
 * import them from this base-layer module, next to the fields they check.
 */
import { atoi } from '../base/catoi';
import { asciiLower, cStrlen } from '../base/cstring';

/** The fields in nfqlb's order (readFlowCmd's keys; requests are written in this order). */
export const FLOW_FIELDS = ['name', 'target', 'priority', 'protocols', 'dsts', 'srcs', 'dports', 'sports', 'match', 'udpencap'] as const;
export type FlowField = (typeof FLOW_FIELDS)[number];

/** The fields as text, named as the control protocol and the flows file name them. */
export type FlowFieldTexts = { [F in FlowField]?: string };

/** The fields a trace-flow has (no target, priority or udpencap). */
export const TRACE_FLOW_FIELDS = FLOW_FIELDS.filter((f) => f !== 'target' && f !== 'priority' && f !== 'udpencap');

/** The command-line option of a field: nfqlb's CLI says `--prio`, everything else says `priority`. */
type OptionOf<F extends FlowField> = F extends 'priority' ? 'prio' : F;
export type FlowOption = OptionOf<FlowField>;

/** The one bridge between the CLI's and the protocol's names of a field. */
export function flowOption<F extends FlowField>(field: F): OptionOf<F> {
  return (field === 'priority' ? 'prio' : field) as OptionOf<F>;
}

/** The options of `nfqlb flow-set` / `trace-flow-set`, as given on the command line. */
export type FlowSetArgs = { [F in FlowField as OptionOf<F>]?: string };

/**
 * The flow options of one parsed command line (`get` reads an option by its
 * CLI name, as yargs returns it); absent options stay undefined, others
 * become strings.
 */
export function flowSetArgsFrom(get: (option: FlowOption) => unknown): FlowSetArgs {
  const args: Record<string, string | undefined> = {};
  for (const field of FLOW_FIELDS) {
    const option = flowOption(field);
    const v = get(option);
    args[option] = v === undefined ? undefined : String(v);
  }
  return args as FlowSetArgs;
}

/** Command-line options → protocol fields (what the CLI sends for them). */
export function fieldsFromArgs(args: FlowSetArgs): FlowFieldTexts {
  const fields: FlowFieldTexts = {};
  for (const field of FLOW_FIELDS) fields[field] = args[flowOption(field)];
  return fields;
}

/**
 * A `set` request as the control server has parsed it (nfqlb's struct
 * FlowCmd): the text fields as received; `priority` is atoi() of its value
 * (0 when absent) and `udpencap` atoi() truncated to 16 bits like nfqlb's
 * unsigned short (0 when absent).
 */
export type FlowCmd = Omit<FlowFieldTexts, 'priority' | 'udpencap'> & { priority?: number; udpencap?: number };

/**
 * The FlowCmd the server makes of a request's fields (atoi for numbers). The
 * daemon uses it for requests and stored flows; replay and tests, which skip
 * the socket, use flowCmdFromArgs.
 */
export function flowCmdFromFields(fields: FlowFieldTexts): FlowCmd {
  return {
    name: fields.name,
    target: fields.target,
    priority: fields.priority === undefined ? 0 : atoi(fields.priority),
    protocols: fields.protocols,
    dsts: fields.dsts,
    srcs: fields.srcs,
    dports: fields.dports,
    sports: fields.sports,
    match: fields.match,
    udpencap: fields.udpencap === undefined ? 0 : atoi(fields.udpencap) & 0xffff,
  };
}

/**
 * The FlowCmd the daemon ends up with for a `flow-set` command line: the
 * client sends the options it got, the server takes `priority` and
 * `udpencap` through atoi. For `nfqlb replay` and tests, which skip the socket.
 */
export function flowCmdFromArgs(args: FlowSetArgs): FlowCmd {
  return flowCmdFromFields(fieldsFromArgs(args));
}

// ---------------------------------------------------------------------------
// Limits and client-side checks (nfqlb's cmdFlow.c)

/**
 * The longest name nfqlb reads whole: its server reads request lines with
 * fgets() into 1024 bytes, so `name:` + name + newline must fit in 1023.
 * nfqlb cuts a longer name (and reads the rest as another line), so two long
 * names can become one flow; here they are refused.
 */
export const MAX_NAME_BYTES = 1017;
/** cmdFlow.c MAX_ARG_LEN: client-side limit for list arguments. */
const MAX_ARG_LEN = 1000;

/**
 * The control protocol carries one option per line, so a value with a
 * newline would be cut there and the rest read as another line (nfqlb's CLI
 * sends it anyway and gets no reply): the CLI refuses it before connecting.
 */
export function newlineError(option: string): string {
  return `${option} contains a newline, which the control protocol cannot carry`;
}

/**
 * The checks `nfqlb flow-set` makes before it connects (exit 1 on failure):
 * "target too long" (> 255), "<option> too long" (> 1000 bytes),
 * "udpencap specified without protocols", "udpencap specified without sctp"
 * (a given --udpencap, even 0, needs "sctp" somewhere in --protocols, any
 * case), "ports specified without protocols". Returns the first failing
 * message or null. Also right for trace-flow-set, which has no target or
 * udpencap. Required options are the command-line parser's business.
 */
export function checkFlowSetArgs(args: FlowSetArgs): string | null {
  for (const [k, v] of Object.entries(args)) if (typeof v === 'string' && v.includes('\n')) return newlineError(k);
  if (args.name !== undefined && cStrlen(args.name) > MAX_NAME_BYTES) return `name too long (at most ${MAX_NAME_BYTES} bytes)`;
  if (args.target !== undefined && cStrlen(args.target) > 255) return 'target too long';
  for (const k of ['protocols', 'dsts', 'srcs', 'dports', 'sports', 'match'] as const) {
    const v = args[k];
    if (v !== undefined && cStrlen(v) > MAX_ARG_LEN) return `${k} too long`;
  }
  if (args.udpencap !== undefined) {
    if (args.protocols === undefined) return 'udpencap specified without protocols';
    if (!asciiLower(args.protocols).includes('sctp')) return 'udpencap specified without sctp';
  }
  if ((args.dports !== undefined || args.sports !== undefined) && args.protocols === undefined) return 'ports specified without protocols';
  return null;
}

