/**
 * Flows: which packets go to which table. A re-implementation of
 * nfqlb's flow.c FlowSet (ordered set, lookup, JSON listings) and of the flow
 * half of its control server (cmdFlowLb.c: cmd_set / cmd_delete with the
 * hidden `#name` flow for SCTP over UDP).
 *
 * Elsewhere: the flow fields and the CLI-side checks in fields.ts,
 * parsing and compiling a flow in parse.ts, the compiled Flow and its
 * per-packet tests in match.ts, the index lookup() uses in lookup.ts.
 *
 * The set is generic over the target: the daemon attaches a table, the
 * trace-flow set attaches the flow's name. Flows are parsed and compiled into
 * typed arrays when they are defined, so lookup() — the per-packet path —
 * allocates nothing, throws nothing and does no string work.
 *
 * Texts (errors, JSON listings) are nfqlb 1.2.0's, byte for byte. Where nfqlb
 * misbehaves this module does the right thing instead; each such place says
 * "Divergence".
 */
import { asciiLower, jsonString, mkargv } from '../base/cstring';
import type { FlowCmd } from './fields';
import { FlowIndex } from './lookup';
import { Flow, inCidrs, inRanges, isPromiscuousPing, loadAddressWords, matchBytes, protoBit, PROTO_BIT_SCTP, PROTO_BIT_TCP, PROTO_BIT_UDP } from './match';
import { compileFlow, type FlowDefinition, matchText, portsText } from './parse';
import { keyDport, keyProto, keySport } from '../packet/hashkey';
import type { PacketInfo } from '../packet/classify';

/** The hidden flow's name is '#' + at most this many characters (strncpy into MAX_CMD_LINE-2). */
const MAX_HIDDEN_NAME = 1022;

/** What acquires and releases targets by name; TargetRegistry fits. */
export interface TargetSource<T> {
  /** The target named `name` with one more reference, or null when it cannot be opened. */
  acquire(name: string): T | null;
  /** Gives back one reference taken by acquire(). */
  release(target: T): void;
}


export interface FlowSetOptions<T> {
  /**
   * The name of a target: listed as `user_ref` (null targets list as "NULL"),
   * and compared by applySet() to see whether a flow changes table. Leave it
   * out for sets whose listing has no user_ref (trace flows).
   */
  targetName?: (target: T) => string;
  /** `--promiscuous_ping`: ICMP echo requests match on addresses alone. */
  promiscuousPing?: boolean;
}

/**
 * An ordered set of flows (nfqlb's struct FlowSet plus the flow commands of
 * its control server).
 *
 * Order: higher priority first; equal priorities keep the order in which the
 * names were first defined, because nfqlb appends new flows and re-sorts
 * with glibc's qsort, which is a stable merge sort. A re-defined flow keeps
 * its place. Divergence: nfqlb compares priorities by subtraction, which
 * overflows for differences beyond 2^31; here they compare as numbers.
 */
export class FlowSet<T> {
  /** `--promiscuous_ping` (may be changed at any time). */
  promiscuousPing: boolean;
  /**
   * After lookup(): the udpencap of the last flow that matched, 0 if none —
   * nfqlb's flowLookup() out parameter, which its caller compares with the
   * packet's UDP destination port to decide on SCTP-over-UDP re-classification.
   */
  lastUdpencap = 0;

  private readonly targetName: ((target: T) => string) | undefined;
  /** In priority order; lookup() walks it. Replaced (never modified) on every change. */
  private list_: Flow<T>[] = [];
  /** The packet's addresses as big-endian int32 words: src 0-3, dst 4-7. */
  private readonly addr = new Int32Array(8);
  /** list_'s flows by name. */
  private readonly byName = new Map<string, Flow<T>>();
  /** Follows list_ (see FlowIndex.change()); lookup() walks linearly while it does not. */
  private readonly index = new FlowIndex<T>();

  constructor(options: FlowSetOptions<T> = {}) {
    this.targetName = options.targetName;
    this.promiscuousPing = options.promiscuousPing ?? false;
  }

  /** Number of flows, hidden '#' flows included. */
  get size(): number {
    return this.list_.length;
  }

  /** The flows in lookup order (for metrics: names and match counters). Do not modify. */
  get flows(): readonly Flow<T>[] {
    return this.list_;
  }

  /** The flow called `name`, if any. */
  get(name: string): Flow<T> | undefined {
    return this.byName.get(name);
  }

  /**
   * nfqlb's flowDefine(): parses and compiles a flow and adds it, or replaces
   * the flow of the same name in place (its match counter starts again at 0,
   * as nfqlb makes a new flow). Returns null, or nfqlb's error text with the
   * set unchanged: "No name", "Name too long", "Invalid protocols",
   * "Invalid dports" (also for bad sports — nfqlb's text), "Invalid dsts",
   * "Invalid srcs", "Match [stmt] <why>".
   */
  define(def: FlowDefinition<T>): string | null {
    const f = compileFlow(def);
    if (typeof f === 'string') return f;
    this.insert(f);
    return null;
  }

  /**
   * nfqlb's flowDelete(): removes the flow called `name` and returns it (its
   * target and udpencap tell the caller what to release and whether a hidden
   * '#' flow goes too), or null when there is none.
   */
  delete(name: string): Flow<T> | null {
    const f = this.byName.get(name);
    if (f === undefined) return null;
    const prev = this.list_;
    // A new array rather than splice: a caller iterating `flows` keeps a consistent view.
    const i = prev.indexOf(f);
    const next = prev.slice(0, i).concat(prev.slice(i + 1));
    this.list_ = next;
    this.byName.delete(name);
    this.index.change(prev, next, f, null, -1);
    return f;
  }

  /**
   * What nfqlb's control server does for `action:set` (cmd_set), returning
   * the reply text ("OK" or the error, without the NUL). In order:
   *  - the flow exists: a different udpencap is "FAIL: Alter udpencap not
   *    allowed"; a different target is acquired ("FAIL: Couldn't create new
   *    load-balancer"); the same target keeps its reference;
   *  - a new flow acquires its target ("FAIL: Couldn't create load-balancer");
   *  - udpencap ≠ 0 needs protocols exactly "sctp" ("FAIL: only sctp for
   *    updencap" — nfqlb's spelling) and adds/replaces the hidden flow
   *    '#name' {udp, dport udpencap, same dsts/srcs, same priority, target
   *    null} before the flow itself;
   *  - then the flow is defined (define()'s errors).
   * Divergences: nfqlb leaks the acquired table on a later error, releases
   * the old table before the new flow is in place, and leaves a '#' flow
   * behind when the flow itself is refused; here nothing changes on an error
   * and every reference is given back. The reply texts are nfqlb's.
   */
  applySet(cmd: FlowCmd, targets: TargetSource<T>): string {
    const name = cmd.name;
    const udpencap = (cmd.udpencap ?? 0) & 0xffff;
    const existing = name === undefined ? undefined : this.get(name);
    let target: T;
    let acquired = false;
    let replaced: T | null = null;
    if (existing !== undefined && existing.target !== null) {
      if (existing.udpencap !== udpencap) return 'FAIL: Alter udpencap not allowed';
      const same = this.targetName !== undefined && cmd.target !== undefined && this.targetName(existing.target) === cmd.target;
      if (same) {
        target = existing.target;
      } else {
        const t = cmd.target === undefined ? null : targets.acquire(cmd.target);
        if (t === null) return "FAIL: Couldn't create new load-balancer";
        target = t;
        acquired = true;
        replaced = existing.target;
      }
    } else {
      const t = cmd.target === undefined ? null : targets.acquire(cmd.target);
      if (t === null) return "FAIL: Couldn't create load-balancer";
      target = t;
      acquired = true;
    }
    const fail = (msg: string): string => {
      if (acquired) targets.release(target);
      return msg;
    };

    let hidden: Flow<T> | string | null = null;
    if (udpencap !== 0) {
      const protos = mkargv(cmd.protocols, ', ');
      if (protos === null || protos.length !== 1 || asciiLower(protos[0]) !== 'sctp') return fail('FAIL: only sctp for updencap');
      if (name !== undefined) {
        hidden = compileFlow<T>({
          name: `#${name.slice(0, MAX_HIDDEN_NAME)}`,
          priority: cmd.priority,
          target: null,
          protocols: 'udp',
          dports: `${udpencap}`,
          dsts: cmd.dsts,
          srcs: cmd.srcs,
          udpencap,
        });
        // nfqlb defines the hidden flow first, so its errors are the ones reported.
        if (typeof hidden === 'string') return fail(hidden);
      }
    }
    const f = compileFlow<T>({
      name,
      priority: cmd.priority,
      target,
      protocols: cmd.protocols,
      dsts: cmd.dsts,
      srcs: cmd.srcs,
      dports: cmd.dports,
      sports: cmd.sports,
      match: cmd.match,
      udpencap,
    });
    if (typeof f === 'string') return fail(f);
    if (hidden !== null) this.insert(hidden);
    this.insert(f);
    if (replaced !== null) targets.release(replaced);
    return 'OK';
  }

  /**
   * What nfqlb's control server does for `action:delete` (cmd_delete):
   * "FAIL: no name" without a name, else removes the flow (a missing one is
   * fine), releases its target, removes its hidden '#' flow when it had a
   * udpencap, and replies "OK".
   */
  applyDelete(name: string | undefined, targets: TargetSource<T>): string {
    if (name === undefined) return 'FAIL: no name';
    const f = this.delete(name);
    if (f !== null) {
      if (f.target !== null) targets.release(f.target);
      if (f.udpencap > 0) this.delete(`#${name.slice(0, MAX_HIDDEN_NAME)}`);
    }
    return 'OK';
  }

  /**
   * nfqlb's flowLookup(): the first flow, in priority order, whose sets all
   * contain the packet, counting the match; null when none. Uses the key
   * (addresses, protocol, ports) and, for byte matches, pkt at info.l4Offset.
   *
   * Flows with a null target (the hidden '#' flows) are nfqlb's NULL
   * user_ref: when they match they count the match and set `lastUdpencap`,
   * and the search goes on — a lower flow that also matches wins (the
   * reference decisions show nfqlb hashing SCTP-over-UDP on the outer UDP
   * header when a catch-all flow covers the address). Read `lastUdpencap`
   * after the call: when the packet is UDP to that port, nfqlb re-classifies
   * with it and looks up again.
   *
   * With promiscuousPing, an ICMP/ICMPv6 echo request with a non-zero id
   * (key bytes 32-33) matches the first flow whose addresses match.
   * (nfqlb tests the 8 bytes 32-39, which hold the protocol too, so there
   * every ICMP packet that is not an error qualifies; this follows nfqlb 1.2.0's behaviour.)
   *
   * Per-packet: no allocation, no exceptions. Uses the flow index once it is
   * built for the current flows (lookup.ts), which returns the same.
   */
  lookup(info: PacketInfo, pkt: Uint8Array): Flow<T> | null {
    const index = this.index;
    if (index.flows === this.list_) {
      const f = index.lookup(info, pkt, this.promiscuousPing);
      this.lastUdpencap = index.lastUdpencap;
      return f;
    }
    return this.lookupLinear(info, pkt);
  }

  /** lookup() as nfqlb does it, a walk over every flow in priority order: the reference for the index. */
  lookupLinear(info: PacketInfo, pkt: Uint8Array): Flow<T> | null {
    const key = info.key;
    const w = this.addr;
    loadAddressWords(key, w);
    const proto = keyProto(key);
    const sport = keySport(key);
    const dport = keyDport(key);
    const bit = protoBit(proto);
    const ping = this.promiscuousPing && isPromiscuousPing(key, proto);
    let udpencap = 0;
    const flows = this.list_;
    for (let i = 0; i < flows.length; i++) {
      const f = flows[i];
      if (f.dsts !== null && !inCidrs(f.dsts, w, 4)) continue;
      if (f.srcs !== null && !inCidrs(f.srcs, w, 0)) continue;
      if (!ping) {
        if (f.protoMask !== 0 && (f.protoMask & bit) === 0) continue;
        if (f.dports !== null && !inRanges(f.dports, dport)) continue;
        if (f.sports !== null && !inRanges(f.sports, sport)) continue;
        if (f.match !== null && !matchBytes(f.match, proto, info, pkt)) continue;
        udpencap = f.udpencap;
      }
      f.matches++;
      if (f.target !== null) {
        this.lastUdpencap = udpencap;
        return f;
      }
    }
    this.lastUdpencap = udpencap;
    return null;
  }

  /**
   * nfqlb's flowSetPrint(): with no name the JSON array of all flows
   * (`[]\n` when empty, a newline after the `]`); with a name that flow's
   * object alone without a trailing newline, or "" when there is no such flow.
   */
  list(name?: string): string {
    if (name === undefined) return `[${this.list_.map((f) => this.flowJson(f)).join(',\n')}]\n`;
    const f = this.get(name);
    return f === undefined ? '' : this.flowJson(f);
  }

  /** nfqlb's flowSetPrintNames(): a JSON array of names, one per line. */
  listNames(): string {
    if (this.list_.length === 0) return '[]\n';
    return `[\n${this.list_.map((f) => `  ${jsonString(f.name)}`).join(',\n')}\n]\n`;
  }

  /**
   * Adds or replaces, where nfqlb's append (or replace in place) and stable
   * re-sort puts it: after every flow of higher or equal priority for a new
   * flow; for a replaced one, among the flows of its new priority where its
   * old position falls (in place when the priority stays). A binary search
   * and a copy, no sort.
   */
  private insert(f: Flow<T>): void {
    const prev = this.list_;
    const old = this.byName.get(f.name) ?? null;
    const i = old === null ? -1 : prev.indexOf(old);
    // Copies made by slice/concat (memcpy speed, ~20 µs at 10,000 flows).
    const rest = i < 0 ? prev : prev.slice(0, i).concat(prev.slice(i + 1));
    const p = f.priority;
    const firstBelow = (strict: boolean): number => {
      let lo = 0;
      let hi = rest.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (strict ? rest[mid].priority < p : rest[mid].priority <= p) hi = mid;
        else lo = mid + 1;
      }
      return lo;
    };
    const blockEnd = firstBelow(true);
    const at = i < 0 ? blockEnd : Math.min(Math.max(i, firstBelow(false)), blockEnd);
    const next = rest.slice(0, at).concat([f], rest.slice(at));
    this.list_ = next;
    this.byName.set(f.name, f);
    this.index.change(prev, next, old, f, at);
  }

  /**
   * nfqlb's printFlow(), byte for byte for plain names. Divergence: nfqlb
   * prints strings raw, so a `"`, `\` or control character in a name breaks
   * the JSON (or adds fields); here every string is escaped (jsonString).
   * Numbers print as C's %u.
   */
  private flowJson(f: Flow<T>): string {
    const list = (items: readonly string[]): string => `[\n${items.map((s) => `    ${jsonString(s)}`).join(',\n')}\n  ]`;
    let s = `{\n  "name": ${jsonString(f.name)},\n  "priority": ${f.priority >>> 0}`;
    if (f.protoMask !== 0) {
      const names: string[] = [];
      if (f.protoMask & PROTO_BIT_TCP) names.push('"tcp"');
      if (f.protoMask & PROTO_BIT_UDP) names.push('"udp"');
      if (f.protoMask & PROTO_BIT_SCTP) names.push('"sctp"');
      s += `,\n  "protocols": [ ${names.join(', ')} ]`;
    }
    if (f.dstsText !== null) s += `,\n  "dests": ${list(f.dstsText)}`;
    if (f.dports !== null) s += `,\n  "dports": ${list(portsText(f.dports))}`;
    if (f.srcsText !== null) s += `,\n  "srcs": ${list(f.srcsText)}`;
    if (f.sports !== null) s += `,\n  "sports": ${list(portsText(f.sports))}`;
    if (f.match !== null) s += `,\n  "match": ${list(matchText(f.match))}`;
    if (f.udpencap > 0) s += `,\n  "udpencap": ${f.udpencap}`;
    s += `,\n  "matches_count": ${f.matches % 2 ** 32}`;
    if (this.targetName !== undefined) {
      s += `,\n  "user_ref": ${jsonString(f.target === null ? 'NULL' : this.targetName(f.target))}`;
    }
    return `${s}\n}`;
  }
}
