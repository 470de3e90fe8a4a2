/**
 * Differential test against the original nfqlb 1.2.0 (issue 8, point 3):
 * seeded random sequences of table commands (init/activate/deactivate/
 * delete/show/fwmark/primebelow), flow commands (flow-set/-delete/-list,
 * trace-flow-*) and bad command lines, run through both implementations side
 * by side. Each side has its own shm name prefix of the same length (every
 * table name is `<prefix><name>`), so outputs compare equal once the prefix is
 * replaced by `<P>`; after every command the tables of the two prefixes in
 * /dev/shm are compared byte for byte. Flow commands go to a flowlb daemon of
 * each implementation, each in its own network namespace (root only).
 *
 * Our CLI runs in-process in a worker (worker.js), the original is spawned:
 * see worker.js for why.
 */
import * as fs from 'node:fs';
import { prng } from '../helpers/prng';
import { cleanupAll, createNetns, NS_PREFIX } from '../../testbed/testbed';
import { IMPLS, Partner, Worker, type Impl } from './partners';

/** Stands for the side's shm prefix inside generated command lines. */
const P = '\u0001';

export interface Command {
  argv: string[];
  env: Record<string, string>;
  /** Talks to the daemon (needs the namespaces). */
  flow: boolean;
}

export interface Outcome {
  rc: number;
  stdout: string;
  stderr: string;
}

export interface Difference {
  index: number;
  command: string;
  env: string;
  original: Outcome;
  ours: Outcome;
  /** What differs in /dev/shm, when the tables do. */
  tables?: string;
  /** Set when the difference is a documented, deliberate divergence. */
  allowed?: string;
  /** flow-set: whether the target table existed in /dev/shm (our side) when the command ran. */
  targetExisted?: boolean;
  /** Largest M among the tables that differ. */
  largestM?: number;
}

export interface DifftestResult {
  seed: number;
  commands: number;
  flowCommands: number;
  tableChecks: number;
  differences: Difference[];
  /** Daemons that died, with the command after which it was seen. */
  deaths: string[];
  ms: number;
}

// ---------------------------------------------------------------------------
// Generation

class Gen {
  readonly r: () => number;
  constructor(seed: number) {
    this.r = prng(seed);
  }
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.r() * (hi - lo + 1));
  }
  pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.r() * items.length)];
  }
  chance(p: number): boolean {
    return this.r() < p;
  }
}

const TABLE_NAMES = ['a', 'a', 'b', 'b', 'c', 'café', 'x y', 'dot.ted', "q'uote", 'tab\there', 'ü€¬', `long-${'n'.repeat(120)}`];
const FLOW_NAMES = ['web', 'web', 'f1', 'F-2', 'a_b', 'x.y', 'a+b', 'café', 'x€', 'x¬', 'with space', 'q"uote', 'back\\slash', 'tab\tname', '#hidden', 'ü', `l${'o'.repeat(60)}ng`];
const JUNK_NUMBERS = ['', '-1', '0', 'abc', '12abc', '0x10', ' 7', '99999999999', '+5', '1e3', '-0'];
// For M: no value that wraps to a huge M (12 MB tables, and M > 65537 is a known divergence, checked apart).
const JUNK_M = ['', '0', 'abc', '12abc', '0x10', ' 7', '+5', '1e3', '-0'];

function number(g: Gen, lo: number, hi: number, junk = 0.1, junkValues = JUNK_NUMBERS): string {
  return g.chance(junk) ? g.pick(junkValues) : `${g.int(lo, hi)}`;
}

/** A `--shm` value: mostly a prefixed table name, sometimes an odd one. */
function shmValue(g: Gen): string {
  const x = g.r();
  if (x < 0.8) return `${P}${g.pick(TABLE_NAMES.slice(0, 5))}`;
  if (x < 0.86) return `/${P}${g.pick(TABLE_NAMES.slice(0, 3))}`;
  if (x < 0.92) return `${P}${g.pick(TABLE_NAMES.slice(5))}`;
  if (x < 0.95) return '';
  if (x < 0.98) return `${P}${g.pick(['a/b', 'sub/dir/x', '/'])}`;
  return `//${P}a`;
}

function address(g: Gen): string {
  const x = g.r();
  if (x < 0.45) return `${g.pick(['192.0.2', '198.51.100', '203.0.113'])}.${g.int(0, 255)}:${g.int(0, 65535)}`;
  if (x < 0.8) return `[2001:db8::${g.int(0, 0xffff).toString(16)}]:${g.int(0, 65535)}`;
  return g.pick(['192.0.2.1', '2001:db8::1', '[2001:db8::1]', 'x', '', '192.0.2.1:', '192.0.2.1:99999', '300.0.0.1:80', '[::ffff:192.0.2.1]:80', ':80', '2001:db8::1:80']);
}

function cidrs(g: Gen): string {
  const one = (): string => {
    const x = g.r();
    if (x < 0.4) return `${g.pick(['192.0.2', '198.51.100', '10.0.0'])}.${g.int(0, 255)}/${g.int(0, 32)}`;
    if (x < 0.75) return `2001:db8:${g.int(0, 0xffff).toString(16)}::/${g.int(0, 128)}`;
    return g.pick(['192.0.2.1', 'garbage', '192.0.2.0/33', '::/0', '0.0.0.0/0', '2001:db8::/129', '', '1.2.3.4/-1', '192.0.2.0/24 ']);
  };
  return Array.from({ length: g.int(1, 3) }, one).join(',');
}

function portRanges(g: Gen): string {
  const one = (): string => {
    const x = g.r();
    if (x < 0.5) return `${g.int(1, 65535)}`;
    if (x < 0.8) {
      const a = g.int(1, 65535);
      return `${a}-${Math.min(65535, a + g.int(0, 1000))}`;
    }
    return g.pick(['0', '65536', '90-80', 'x', '', '1-', '-5', '80 ', '1-65535']);
  };
  return Array.from({ length: g.int(1, 3) }, one).join(',');
}

function protocols(g: Gen): string {
  if (g.chance(0.1)) return g.pick(['icmp', '', 'tcp,', 'tcpx', 'TCP,Udp', 'sctp,sctp']);
  const all = ['tcp', 'udp', 'sctp'];
  return all.filter(() => g.chance(0.5)).join(',') || g.pick(all);
}

function matches(g: Gen): string {
  const one = (): string =>
    g.pick([
      'tcp[12:2]&0x1ff=0x2',
      'udp[6:2]=0x1234',
      'sctp[0:2]=80',
      'tcp[13:1]&0x02=0x02',
      'tcp[30:2]=1',
      'udp[7:2]=1',
      'icmp[0:1]=8',
      'tcp[0:3]=1',
      'tcp [ 0 : 2 ] = 80',
      'tcp[0:2]&0xFF=1',
      'garbage',
      'tcp[0:4]=4294967295',
    ]);
  return Array.from({ length: g.int(1, 2) }, one).join(',');
}

function flowName(g: Gen): string {
  return g.pick(FLOW_NAMES);
}

/** Option words: `--opt=value` mostly; also `--opt value`, `-opt=value`, unique prefixes. */
function opt(g: Gen, name: string, value: string): string[] {
  const x = g.r();
  if (x < 0.9) return [`--${name}=${value}`];
  if (x < 0.94 && value !== '') return [`--${name}`, value];
  if (x < 0.97) return [`-${name}=${value}`];
  return [`--${name.slice(0, Math.max(1, name.length - 1))}=${value}`];
}

const TABLE_COMMANDS = ['init', 'init', 'activate', 'activate', 'activate', 'deactivate', 'deactivate', 'delete', 'show', 'show', 'fwmark', 'fwmark', 'primebelow'];
const FLOW_COMMANDS = ['flow-set', 'flow-set', 'flow-set', 'flow-delete', 'flow-list', 'flow-list', 'flow-list-names', 'trace-flow-set', 'trace-flow-delete', 'trace-flow-list'];

function tableCommand(g: Gen, name: string): string[] {
  const w: string[] = [name];
  switch (name) {
    case 'init':
      w.push(...opt(g, 'shm', shmValue(g)));
      if (g.chance(0.9)) w.push(...opt(g, 'M', g.chance(0.7) ? number(g, 3, 400, 0.1, JUNK_M) : number(g, 0, 3000, 0.1, JUNK_M)));
      if (g.chance(0.85)) w.push(...opt(g, 'N', g.chance(0.8) ? number(g, 1, 12) : number(g, 0, 60)));
      if (g.chance(0.15)) w.push(...opt(g, 'ownfw', number(g, -2, 300)));
      break;
    case 'activate':
    case 'deactivate':
      w.push(...opt(g, 'shm', shmValue(g)));
      if (g.chance(0.5)) w.push(...opt(g, 'index', number(g, 0, 14)));
      for (let n = g.int(0, 3); n > 0; n--) w.push(g.chance(0.9) ? `${g.int(1, 40)}` : g.pick(['-1', '0', 'x', '2147483648', '1x']));
      break;
    case 'delete':
    case 'show':
      if (name === 'show' || g.chance(0.95)) w.push(...opt(g, 'shm', shmValue(g)));
      break;
    case 'fwmark':
      w.push(...opt(g, 'shm', shmValue(g)));
      if (g.chance(0.85)) w.push(...opt(g, 'proto', g.chance(0.9) ? g.pick(['tcp', 'udp', 'sctp']) : g.pick(['icmp', 'TCP', '', 'x'])));
      if (g.chance(0.95)) w.push(...opt(g, 'src', address(g)));
      if (g.chance(0.95)) w.push(...opt(g, 'dst', address(g)));
      if (g.chance(0.3)) w.push(...opt(g, 'hash_mode', number(g, 0, 2)));
      break;
    case 'primebelow':
      if (g.chance(0.95)) w.push(number(g, 0, 100000, 0.2));
      break;
  }
  return w;
}

function flowCommand(g: Gen, name: string): string[] {
  const w: string[] = [name];
  const trace = name.startsWith('trace-');
  if (name.endsWith('-set')) {
    if (g.chance(0.95)) w.push(...opt(g, 'name', flowName(g)));
    if (!trace && g.chance(0.95)) w.push(...opt(g, 'target', g.chance(0.9) ? `${P}${g.pick(['a', 'b', 'c'])}` : g.pick([`${P}nope`, '', `/${P}a`])));
    if (!trace && g.chance(0.4)) w.push(...opt(g, 'prio', number(g, -5, 100)));
    if (g.chance(0.6)) w.push(...opt(g, 'protocols', protocols(g)));
    if (g.chance(0.4)) w.push(...opt(g, 'dsts', cidrs(g)));
    if (g.chance(0.3)) w.push(...opt(g, 'srcs', cidrs(g)));
    if (g.chance(0.35)) w.push(...opt(g, 'dports', portRanges(g)));
    if (g.chance(0.2)) w.push(...opt(g, 'sports', portRanges(g)));
    if (g.chance(0.15)) w.push(...opt(g, 'match', matches(g)));
    if (!trace && g.chance(0.1)) w.push(...opt(g, 'udpencap', number(g, 1, 65535)));
  } else if (name.endsWith('-delete')) {
    if (g.chance(0.95)) w.push(...opt(g, 'name', flowName(g)));
  } else if (name.endsWith('-list')) {
    if (g.chance(0.3)) w.push(...opt(g, 'name', flowName(g)));
  }
  return w;
}

/** Mistakes anyone makes on any command line. */
function perturb(g: Gen, w: string[]): string[] {
  const x = g.r();
  if (x < 0.03) return [...w, g.pick(['--foo=1', '--foo', '-x', '--', '--=1', '-'])];
  if (x < 0.05) return [...w, `--${g.pick(['shm', 'name', 'M', 'N', 'index', 'proto', 'target', 'protocols'])}`]; // value missing
  if (x < 0.06) return [w[0], g.pick(['-h', '--help', '-help'])];
  if (x < 0.07) return g.pick([[], ['nosuchcommand'], ['version'], ['-h'], ['INIT'], ['flow'], ['stats', '--ft_shm=']]);
  // A flag given a value: refused before anything starts (never a command line that would start a daemon).
  if (x < 0.075) return ['flowlb', ...g.pick([[], ['--queue=0:3'], ['--queue', '7']]), g.pick(['--promiscuous_ping=1', '--promiscuous_ping=', '-promiscuous_ping=yes', '--prom=1'])];
  if (x < 0.08) return [...w, ...w.slice(1)]; // every option twice: the last one wins
  return w;
}

function localeEnv(g: Gen): Record<string, string> {
  const x = g.r();
  if (x < 0.2) return { LANG: 'de_DE.UTF-8' };
  if (x < 0.3) return { LC_ALL: 'fr_FR.UTF-8' };
  return {};
}

/** The command sequence for a seed; flow commands only when `withFlows`. */
export function generate(seed: number, count: number, withFlows: boolean): Command[] {
  const g = new Gen(seed);
  const out: Command[] = [];
  while (out.length < count) {
    const flow = withFlows && g.chance(0.4);
    const name = flow ? g.pick(FLOW_COMMANDS) : g.pick(TABLE_COMMANDS);
    const argv = perturb(g, flow ? flowCommand(g, name) : tableCommand(g, name));
    out.push({ argv, env: localeEnv(g), flow: FLOW_COMMANDS.includes(argv[0]) });
  }
  return out;
}

// ---------------------------------------------------------------------------
// Comparison

const latin1 = (b: Buffer): string => b.toString('latin1');

/** The prefix replaced by <P> (as bytes: names are compared as bytes). */
function normalize(text: string, prefix: string): string {
  return text.split(prefix).join('<P>');
}

/** Tables of one side: name after the prefix → bytes. */
function tablesOf(prefix: string): Map<string, Buffer> {
  const m = new Map<string, Buffer>();
  for (const f of fs.readdirSync('/dev/shm')) {
    if (f.startsWith(prefix)) m.set(f.slice(prefix.length), fs.readFileSync(`/dev/shm/${f}`));
  }
  return m;
}

/** The value of option `name` (also as a unique prefix, `-name`, or `--name value`), last one wins. */
function optionValue(argv: string[], name: string): string | undefined {
  let value: string | undefined;
  for (let i = 1; i < argv.length; i++) {
    const m = /^--?([^=]+)(=(.*))?$/.exec(argv[i]);
    if (m === null || m[1].length === 0 || !name.startsWith(m[1])) continue;
    value = m[2] !== undefined ? m[3] : argv[++i];
  }
  return value;
}

function tableExists(prefix: string, name: string | undefined): boolean | undefined {
  if (name === undefined) return undefined;
  return fs.existsSync(`/dev/shm/${name.split(P).join(prefix).replace(/^\/+/, '')}`);
}

/** The largest M of the tables of one side (uint32 at byte 4). */
function largestM(prefix: string): number {
  let m = 0;
  for (const bytes of tablesOf(prefix).values()) if (bytes.length >= 8) m = Math.max(m, bytes.readUInt32LE(4));
  return m;
}

function compareTables(a: Map<string, Buffer>, b: Map<string, Buffer>): string | undefined {
  const out: string[] = [];
  for (const name of new Set([...a.keys(), ...b.keys()])) {
    const x = a.get(name);
    const y = b.get(name);
    if (x === undefined || y === undefined) out.push(`${name}: only ${x === undefined ? 'ours' : 'the original'} has it`);
    else if (!x.equals(y)) {
      let i = 0;
      while (i < x.length && i < y.length && x[i] === y[i]) i++;
      out.push(`${name}: ${x.length} vs ${y.length} bytes, first difference at byte ${i}`);
    }
  }
  return out.length > 0 ? out.join('; ') : undefined;
}

/**
 * Deliberate divergences (docs/differences.md): returns the reason
 * when `d` is one of them.
 */
export function allowedDivergence(d: Difference): string | undefined {
  if (d.tables !== undefined) {
    return d.largestM !== undefined && d.largestM > 65537 && d.original.rc === d.ours.rc && d.original.stdout === d.ours.stdout
      ? 'Maglev permutations are exact for M above 65537 (nfqlb overflows 32 bits)'
      : undefined;
  }
  // nfqlb never lets go of a table a flow once used (its issue 9), so a deleted table stays a valid target there.
  if (/^flow-set /.test(d.command) && d.targetExisted === false && d.ours.stdout.startsWith("FAIL: Couldn't create")) {
    return 'a table deleted from /dev/shm cannot be the target of a new flow (nfqlb keeps every table it ever opened mapped)';
  }
  // The command list: nfqlb's, in its order, then the commands nfqlb-ts adds.
  if (/^(-h|--help|-help)?$/.test(d.command.trim()) && d.original.rc === d.ours.rc && d.original.stderr === d.ours.stderr
    && d.ours.stdout === `${d.original.stdout}  trace-flow-list-names\n  replay\n  conntrack\n  completion\n`) {
    return 'the command list adds trace-flow-list-names, replay, conntrack and completion after nfqlb\'s commands';
  }
  // A command's help: nfqlb's lines, then the options nfqlb lacks and the defaults the code uses.
  if (/^\S+ (-h|--help|-help)$/.test(d.command.trim()) && d.original.rc === 0 && d.ours.rc === 0 && d.original.stderr === d.ours.stderr
    && d.ours.stdout.startsWith(d.original.stdout) && /^(  --\w+= .*\n)*(Defaults: .*\n)?$/.test(d.ours.stdout.slice(d.original.stdout.length))) {
    return 'a command\'s help adds the options nfqlb lacks and a line with the defaults after nfqlb\'s lines';
  }
  // A CIDR with a negative prefix length (1.2.3.4/-1) means nothing; nfqlb's atoi takes it (and its daemon
  // sends no reply to a trace-flow-set at all), nfqlb-ts refuses it as it refuses any other bad CIDR.
  if (/^(trace-)?flow-set /.test(d.command) && / -?-(ds|sr)[a-z]*=.*\/-\d/.test(d.command) && d.ours.rc === 255 && /^Invalid (dsts|srcs)\n$/.test(d.ours.stdout)) {
    return 'a CIDR with a negative prefix length is refused (nfqlb accepts it)';
  }
  // The hidden '#name' flows of --udpencap are the daemon's own: nfqlb lets flow-set replace one (a delete of
  // its owner then removes the user's flow) and flow-delete remove one; nfqlb-ts refuses both, so that what it
  // keeps in --flows_file replays to what it has.
  if (/^flow-(set|delete) /.test(d.command) && / (-?-n[a-z]*[= ])#/.test(d.command) && d.ours.rc === 255 && d.ours.stdout.startsWith("FAIL: names starting with '#'")) {
    return "flow-set and flow-delete of a name starting with '#' (a hidden udpencap flow) are refused (nfqlb takes them)";
  }
  // nfqlb's daemon sends no reply to a valid trace-flow-set (its own CLI then exits 255 although the trace-flow is set).
  if (/^trace-flow-set /.test(d.command) && d.original.rc === 255 && d.original.stdout === '' && d.original.stderr === '' && d.ours.rc === 0 && d.ours.stdout === 'OK\n' && d.ours.stderr === '') {
    return 'a trace-flow-set that succeeds is answered OK (nfqlb sends no reply, so its CLI exits 255)';
  }
  // flow-list / trace-flow-list / flow-list-names: names escaped per RFC 8259 so the JSON always parses.
  if (/^(trace-)?flow-list/.test(d.command) && d.original.rc === d.ours.rc && d.original.stderr === d.ours.stderr) {
    // flow-list-names: every line of the array is a name; listings: the "name" lines only.
    const names = /^flow-list-names/.test(d.command) ? /^(\s*")(.*)(",?)$/gm : /^(\s*"name": ")(.*)(",?)$/gm;
    const escapeNames = (text: string): string =>
      Buffer.from(
        Buffer.from(text, 'latin1')
          .toString('utf8')
          .replace(names, (_, a: string, name: string, b: string) => `${a}${JSON.stringify(name).slice(1, -1)}${b}`),
        'utf8',
      ).toString('latin1');
    if (escapeNames(d.original.stdout) === d.ours.stdout) return 'flow names are escaped per RFC 8259 in listings (nfqlb prints them raw: invalid JSON)';
  }
  return undefined;
}

/** Names in a flow listing: JSON-escaped (nfqlb-ts) or raw (nfqlb, where the text may not be JSON). */
export function flowNames(listing: string): string[] {
  return [...listing.matchAll(/^\s*(?:"name": )?"(.*)",?$/gm)].map((m) => {
    try {
      return JSON.parse(`"${m[1]}"`) as string;
    } catch {
      return m[1];
    }
  });
}

/**
 * Deletes every flow and trace-flow on both daemons, so a difference in one
 * flow-set is reported once instead of in every later listing.
 */
async function clearFlows(workers: Record<Impl, Worker>): Promise<void> {
  for (const impl of IMPLS) {
    for (const [list, del] of [['flow-list-names', 'flow-delete'], ['trace-flow-list', 'trace-flow-delete']]) {
      const r = await workers[impl].run([list]);
      // Hidden '#' flows too: a user may name a flow '#x' (a hidden flow goes with its owner, a second delete is OK).
      for (const name of flowNames(r.stdout.toString('utf8'))) await workers[impl].run([del, `--name=${name}`]);
    }
  }
}

export interface DifftestOptions {
  seed: number;
  count: number;
  /** Run flow commands against daemons in namespaces (needs root). */
  withFlows: boolean;
  /** Progress lines. */
  log?: (line: string) => void;
  /** Log every command from this index on, with both outcomes (DIFFTEST_TRACE_FROM). */
  traceFrom?: number;
}

/** Runs `count` generated commands through both implementations and returns every difference. */
export async function runDifftest(opts: DifftestOptions): Promise<DifftestResult> {
  const t0 = Date.now();
  const tag = NS_PREFIX.slice('nfqlbts-'.length).replace(/-$/, '');
  const prefix: Record<Impl, string> = { original: `dt-${tag}-O-`, ours: `dt-${tag}-T-` };
  // Each daemon's fragment statistics under a name of its own, outside the compared tables (not the machine's ftshm).
  const ftShm: Record<Impl, string> = { original: `dt-${tag}-ft-original`, ours: `dt-${tag}-ft-ours` };
  const workers = {} as Record<Impl, Worker>;
  const daemons = {} as Record<Impl, Partner>;
  const differences: Difference[] = [];
  const deaths: string[] = [];
  let flowCommands = 0;
  let tableChecks = 0;
  const commands = generate(opts.seed, opts.count, opts.withFlows);
  try {
    for (const impl of IMPLS) {
      let ns: string | undefined;
      if (opts.withFlows) {
        ns = createNetns(`dt-${impl === 'ours' ? 'ts' : 'orig'}`);
        daemons[impl] = await Partner.start(impl, ns, ['--queue=0:3', `--ft_shm=${ftShm[impl]}`], { privateShm: false });
      }
      workers[impl] = new Worker(impl, ns);
    }
    for (let i = 0; i < commands.length; i++) {
      const cmd = commands[i];
      const argvOf = (impl: Impl): string[] => cmd.argv.map((w) => w.split(P).join(prefix[impl]));
      const targetExisted = cmd.argv[0] === 'flow-set' ? tableExists(prefix.ours, optionValue(cmd.argv, 'target')) : undefined;
      const [ro, rt] = await Promise.all(IMPLS.map((impl) => workers[impl].run(argvOf(impl), cmd.env)));
      const original: Outcome = { rc: ro.rc, stdout: normalize(latin1(ro.stdout), prefix.original), stderr: normalize(latin1(ro.stderr), prefix.original) };
      const ours: Outcome = { rc: rt.rc, stdout: normalize(latin1(rt.stdout), prefix.ours), stderr: normalize(latin1(rt.stderr), prefix.ours) };
      if (opts.traceFrom !== undefined && i >= opts.traceFrom && opts.log !== undefined) {
        opts.log(`#${i} ${cmd.argv.join(' ').split(P).join('<P>')}\n  nfqlb:    ${JSON.stringify(original)}\n  nfqlb-ts: ${JSON.stringify(ours)}`);
      }
      if (cmd.flow) flowCommands++;
      let tables: string | undefined;
      if (!cmd.flow) {
        tableChecks++;
        tables = compareTables(tablesOf(prefix.original), tablesOf(prefix.ours));
      }
      if (tables !== undefined || original.rc !== ours.rc || original.stdout !== ours.stdout || original.stderr !== ours.stderr) {
        const d: Difference = {
          index: i,
          command: cmd.argv.map((w) => w.split(P).join('<P>')).join(' '),
          env: Object.entries(cmd.env).map(([k, v]) => `${k}=${v}`).join(' '),
          original,
          ours,
          ...(tables !== undefined ? { tables, largestM: largestM(prefix.ours) } : {}),
          ...(targetExisted !== undefined ? { targetExisted } : {}),
        };
        const allowed = allowedDivergence(d);
        if (allowed !== undefined) d.allowed = allowed;
        differences.push(d);
        if (cmd.flow && /-(set|delete)$/.test(cmd.argv[0])) await clearFlows(workers);
        if (tables !== undefined) {
          // Re-align the tables so one difference is reported once, not after every later command.
          for (const [name, bytes] of tablesOf(prefix.original)) fs.writeFileSync(`/dev/shm/${prefix.ours}${name}`, bytes, { mode: 0o600 });
          for (const name of tablesOf(prefix.ours).keys()) if (!fs.existsSync(`/dev/shm/${prefix.original}${name}`)) fs.unlinkSync(`/dev/shm/${prefix.ours}${name}`);
        }
      }
      if (opts.withFlows) {
        for (const impl of IMPLS) {
          if (daemons[impl].running) continue;
          // A daemon that died is a finding of its own; both restart so later commands compare equal states.
          const how = daemons[impl].child.signalCode ?? `exit ${daemons[impl].child.exitCode}`;
          deaths.push(`${impl === 'ours' ? 'nfqlb-ts' : 'nfqlb'} flowlb died (${how}) at or after #${i} ${cmd.argv.join(' ').split(P).join('<P>')}`);
          opts.log?.(`difftest: ${deaths[deaths.length - 1]}`);
          for (const other of IMPLS) {
            await daemons[other].stop();
            daemons[other] = await Partner.start(other, daemons[other].ns, ['--queue=0:3', `--ft_shm=${ftShm[other]}`], { privateShm: false });
          }
          break;
        }
      }
      if (opts.log !== undefined && (i + 1) % 500 === 0) opts.log(`difftest: ${i + 1}/${commands.length} commands, ${differences.length} differences, ${Date.now() - t0} ms`);
    }
  } finally {
    for (const impl of IMPLS) await workers[impl]?.close();
    for (const impl of IMPLS) await daemons[impl]?.stop();
    for (const impl of IMPLS) for (const name of tablesOf(prefix[impl]).keys()) fs.rmSync(`/dev/shm/${prefix[impl]}${name}`, { force: true });
    for (const impl of IMPLS) fs.rmSync(`/dev/shm/${ftShm[impl]}`, { force: true });
    await cleanupAll();
  }
  return { seed: opts.seed, commands: commands.length, flowCommands, tableChecks, differences, deaths, ms: Date.now() - t0 };
}

/** One line per difference: the command and both outcomes. */
export function describeDifference(d: Difference): string {
  const o = (x: Outcome): string => `rc=${x.rc} out=${JSON.stringify(Buffer.from(x.stdout, 'latin1').toString('utf8'))} err=${JSON.stringify(Buffer.from(x.stderr, 'latin1').toString('utf8'))}`;
  const cmd = Buffer.from(d.command, 'utf8').toString('utf8');
  return `#${d.index} ${d.env !== '' ? `${d.env} ` : ''}nfqlb ${JSON.stringify(cmd).slice(1, -1)} | nfqlb: ${o(d.original)} | nfqlb-ts: ${o(d.ours)}${d.tables !== undefined ? ` | tables: ${d.tables}` : ''}`;
}

/**
 * Differences grouped by what differs (command name and both outcomes with
 * numbers and names blurred), one example each: a few dozen lines instead of
 * hundreds.
 */
export function groupDifferences(ds: Difference[]): Array<{ count: number; example: Difference }> {
  const groups = new Map<string, { count: number; example: Difference }>();
  const blur = (s: string): string => s.replace(/\d+/g, '#').replace(/"[^"\n]*"/g, '"…"').slice(0, 120);
  for (const d of ds) {
    const key = [d.command.split(' ')[0], d.original.rc, d.ours.rc, blur(d.original.stdout + d.original.stderr), blur(d.ours.stdout + d.ours.stderr), d.tables === undefined ? '' : d.tables.replace(/^[^:]*:/, '').replace(/\d+/g, '#')].join('|');
    const g = groups.get(key);
    if (g === undefined) groups.set(key, { count: 1, example: d });
    else g.count++;
  }
  return [...groups.values()].sort((a, b) => b.count - a.count);
}
