/**
 * The netfilter rules of the test bed: the NFQUEUE rule (nft first, the
 * xtables target through iptables-nft where the kernel lacks nft's queue
 * expression), kernel-only marking with HMARK (the bench's baseline), and the
 * counting rules: marks seen, load offered at the LB (a counting rule first
 * in its mangle PREROUTING) and delivered to the targets (a DROP rule in each
 * target's raw PREROUTING, so the targets spend nothing on it and send no
 * ICMP back).
 */
import { nextId, nsExec, own } from './netns';
import type { Testbed } from './topology';
import { LOAD_PORT } from './traffic';

const OFFERED_COMMENT = 'nfqlbts-offered';
const SINK_COMMENT = 'nfqlbts-sink';

export interface QueueRule {
  backend: 'nft' | 'iptables';
  ns: string;
  vip: string;
  /** The nft table holding the rule (backend nft). */
  table?: string;
}

/**
 * Sends packets to `vip` arriving in `ns` (prerouting) to NFQUEUE queue `first`
 * (or balanced over first..last), with a packet counter. Tries an nftables
 * `queue` rule first and falls back to the xtables NFQUEUE target through
 * iptables-nft, because some kernels (this one) lack the nft queue expression.
 */
export function installQueueRule(
  ns: string,
  vip: string,
  first: number,
  last: number = first,
  opts: { bypass?: boolean } = {},
): QueueRule {
  own(ns);
  const v6 = vip.includes(':');
  const range = last === first ? `${first}` : `${first}-${last}`;
  const table = `nfqlbts${nextId()}`; // one table per rule: a failed attempt removes only its own
  const nft =
    `table inet ${table} {\n` +
    `  chain pre { type filter hook prerouting priority mangle; ` +
    `${v6 ? 'ip6' : 'ip'} daddr ${vip} counter queue ${opts.bypass ? 'flags bypass ' : ''}num ${range}; }\n` +
    `}\n`;
  if (nsExec(ns, 'nft', ['-f', '-'], { allowFail: true, input: nft }).status === 0) return { backend: 'nft', ns, vip, table };
  nsExec(ns, 'nft', ['delete', 'table', 'inet', table], { allowFail: true });
  const target = last === first ? ['--queue-num', `${first}`] : ['--queue-balance', `${first}:${last}`];
  nsExec(ns, v6 ? 'ip6tables' : 'iptables', [
    '-t', 'mangle', '-A', 'PREROUTING', '-d', vip, '-j', 'NFQUEUE', ...target,
    ...(opts.bypass ? ['--queue-bypass'] : []),
  ]);
  return { backend: 'iptables', ns, vip };
}

/** Packets counted so far by a rule from installQueueRule. */
export function queueRuleCount(rule: QueueRule): number {
  if (rule.backend === 'nft') {
    const text = nsExec(rule.ns, 'nft', ['list', 'table', 'inet', rule.table as string]).stdout;
    const m = /counter packets (\d+)/.exec(text);
    return m === null ? 0 : Number(m[1]);
  }
  const v6 = rule.vip.includes(':');
  const text = nsExec(rule.ns, v6 ? 'ip6tables-save' : 'iptables-save', ['-c', '-t', 'mangle']).stdout;
  let total = 0;
  for (const line of text.split('\n')) {
    const m = /^\[(\d+):\d+\] -A PREROUTING -d ([^/\s]+)(?:\/\d+)? .*-j NFQUEUE/.exec(line);
    if (m !== null && m[2] === rule.vip) total += Number(m[1]);
  }
  return total;
}

/** Adds a counting-only rule to mangle `chain` (default INPUT) for packets to `dst` carrying `mark`. */
export function addMarkCounter(ns: string, dst: string, mark: number, chain = 'INPUT'): void {
  nsExec(ns, dst.includes(':') ? 'ip6tables' : 'iptables', [
    '-t', 'mangle', '-A', chain, '-d', dst, '-m', 'mark', '--mark', `${mark}`,
  ]);
}

/** Packet counters of the addMarkCounter rules of `chain`: one entry per rule. */
export function markCounters(ns: string, v6 = false, chain = 'INPUT'): Array<{ dst: string; mark: number; packets: number }> {
  const out = nsExec(ns, v6 ? 'ip6tables-save' : 'iptables-save', ['-c', '-t', 'mangle']).stdout;
  const rules: Array<{ dst: string; mark: number; packets: number }> = [];
  const re = new RegExp(`^\\[(\\d+):\\d+\\] -A ${chain} -d ([^/\\s]+)(?:/\\d+)? -m mark --mark (0x[0-9a-f]+|\\d+)`);
  for (const line of out.split('\n')) {
    const m = re.exec(line);
    if (m) rules.push({ dst: m[2], mark: Number(m[3]), packets: Number(m[1]) });
  }
  return rules;
}

/** Packets counted by the addMarkCounter(ns, dst, mark, chain) rule (0 when absent). */
export function markCount(ns: string, dst: string, mark: number, chain = 'INPUT'): number {
  const rule = markCounters(ns, dst.includes(':'), chain).find((r) => r.dst === dst && r.mark === mark);
  return rule?.packets ?? 0;
}
/**
 * Counts (and drops) UDP to `vip`:`dport` arriving in target namespace `ns`:
 * one rule in the raw table's PREROUTING, before any routing or socket work.
 */
export function addUdpSink(ns: string, vip: string, dport: number = LOAD_PORT): void {
  nsExec(ns, vip.includes(':') ? 'ip6tables' : 'iptables', [
    '-t', 'raw', '-A', 'PREROUTING', '-d', vip, '-p', 'udp', '--dport', `${dport}`,
    '-m', 'comment', '--comment', SINK_COMMENT, '-j', 'DROP',
  ]);
}

/** Packets counted by the `comment` rules of `chain` in `table` of ns (IPv4 and IPv6 summed unless `family`). */
function commentCount(ns: string, table: string, chain: string, comment: string, family?: 4 | 6): number {
  let total = 0;
  for (const cmd of family === undefined ? ['iptables-save', 'ip6tables-save'] : [family === 4 ? 'iptables-save' : 'ip6tables-save']) {
    const text = nsExec(ns, cmd, ['-c', '-t', table]).stdout;
    for (const line of text.split('\n')) {
      const m = /^\[(\d+):\d+\] -A (\S+) .*--comment "?([^"\s]+)"?/.exec(line);
      if (m !== null && m[2] === chain && m[3] === comment) total += Number(m[1]);
    }
  }
  return total;
}

/** Packets counted by the addUdpSink rules of `ns` so far. */
export function udpSinkCount(ns: string, family?: 4 | 6): number {
  return commentCount(ns, 'raw', 'PREROUTING', SINK_COMMENT, family);
}

/** Adds a UDP sink (LOAD_PORT, both VIPs) to every target and the offered counter to the LB. */
export function addLoadCounters(tb: Testbed, dport: number = LOAD_PORT): void {
  for (const t of tb.targets) {
    addUdpSink(t.ns, tb.vip4, dport);
    addUdpSink(t.ns, tb.vip6, dport);
  }
  for (const vip of [tb.vip4, tb.vip6]) {
    // First in the chain, before the queue or HMARK rule (both are appended).
    nsExec(tb.lb, vip.includes(':') ? 'ip6tables' : 'iptables', [
      '-t', 'mangle', '-I', 'PREROUTING', '1', '-d', vip, '-p', 'udp', '--dport', `${dport}`,
      '-m', 'comment', '--comment', OFFERED_COMMENT,
    ]);
  }
}

/** Packets counted by the addLoadCounters offered counter of the LB so far. */
export function offeredCount(tb: Testbed, family?: 4 | 6): number {
  return commentCount(tb.lb, 'mangle', 'PREROUTING', OFFERED_COMMENT, family);
}

/** Removes a rule made by installQueueRule. */
export function removeQueueRule(rule: QueueRule): void {
  if (rule.backend === 'nft') {
    nsExec(rule.ns, 'nft', ['delete', 'table', 'inet', rule.table as string]);
    return;
  }
  const text = nsExec(rule.ns, rule.vip.includes(':') ? 'ip6tables-save' : 'iptables-save', ['-t', 'mangle']).stdout;
  for (const line of text.split('\n')) {
    const m = /^-A PREROUTING -d ([^/\s]+)(?:\/\d+)? (.*-j NFQUEUE.*)$/.exec(line);
    if (m === null || m[1] !== rule.vip) continue;
    nsExec(rule.ns, rule.vip.includes(':') ? 'ip6tables' : 'iptables', ['-t', 'mangle', '-D', 'PREROUTING', '-d', rule.vip, ...m[2].split(' ')]);
  }
}

const hmarkBeds = new WeakSet<Testbed>();

/**
 * How the LB marks packets to the VIPs:
 *  - 'queue': NFQUEUE over queues first..last (`--queue-balance`, or
 *    `--queue-num` when first == last), the daemon decides (Testbed.build's
 *    rules, re-made with this range);
 *  - 'hmark': the kernel alone, `-j HMARK --hmark-tuple src,dst,sport,dport,proto
 *    --hmark-mod <targets> --hmark-offset <first target's fwmark>`: the same
 *    forwarding path with no user space, the baseline of the bench.
 * Replaces whatever was there before. The offered counters stay first.
 */
export function setMarking(tb: Testbed, how: 'queue' | 'hmark', first = 0, last = 3): void {
  for (const rule of tb.queueRules.splice(0)) removeQueueRule(rule);
  const hmark = (vip: string, op: '-A' | '-D'): void => {
    nsExec(tb.lb, vip.includes(':') ? 'ip6tables' : 'iptables', [
      '-t', 'mangle', op, 'PREROUTING', '-d', vip, '-j', 'HMARK', '--hmark-tuple', 'src,dst,sport,dport,proto',
      '--hmark-mod', `${tb.targets.length}`, '--hmark-offset', `${tb.targets[0].fwmark}`, '--hmark-rnd', '0x6e66716c',
    ]);
  };
  if (hmarkBeds.has(tb)) {
    hmark(tb.vip4, '-D');
    hmark(tb.vip6, '-D');
    hmarkBeds.delete(tb);
  }
  if (how === 'hmark') {
    hmark(tb.vip4, '-A');
    hmark(tb.vip6, '-A');
    hmarkBeds.add(tb);
    return;
  }
  tb.queueRules.push(installQueueRule(tb.lb, tb.vip4, first, last));
  tb.queueRules.push(installQueueRule(tb.lb, tb.vip6, first, last));
}

