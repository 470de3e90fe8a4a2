/**
 * The decision pipeline: where a packet's target is chosen. Given one raw IP
 * packet it returns the fwmark to accept it with, or -1 to drop it, in the
 * order of nfqlb's flowlb:
 *
 *   classify → invalid: drop
 *            → later fragment: the choice stored for its first fragment, else drop
 *              (with a fragment store, --tun: keep a copy to re-inject, drop)
 *   flow lookup (SCTP over UDP: re-classify with the flow's port, look up again)
 *            → no flow: nolb_fwmark
 *   (--conntrack) a known connection whose target is still active: that target
 *   Maglev lookup in the flow's table
 *            → no target: notargets_fwmark
 *   first fragment: remember the choice for the later ones
 *
 * The same object runs in the daemon (once per queued packet) and in
 * `nfqlb replay`. It is the per-packet path: no allocation, no exceptions, no
 * strings; details of the last decision are left in `last` for callers that
 * want them (replay, trace, counters).
 */
import { CT_HITS, CT_MISSES, CT_MOVED, CT_SAVED, type ConnTable } from './conntrack';
import { FragmentTable, HOLD_FOUND, HOLD_FULL, HOLD_KEPT } from '../fragments/table';
import { FragmentStore } from '../fragments/store';
import { hashKeyAddressesBits, hashKeyBits, IPPROTO_SCTP, IPPROTO_UDP, KEY_LEN, KEY_PROTO } from '../packet/hashkey';
import { classify, PacketInfo, RC_FIRST_FRAGMENT, RC_INVALID, RC_LATER_FRAGMENT } from '../packet/classify';
import type { FlowSet } from '../flows/flowset';
import type { Flow } from '../flows/match';
import type { LookupTable, Target } from '../tables/targets';

/** Why a packet got its verdict; also the index into the decision counters. */
export const REASON_TARGET = 0;
export const REASON_NO_FLOW = 1;
export const REASON_NO_TARGET = 2;
export const REASON_INVALID = 3;
export const REASON_FRAGMENT_HIT = 4;
export const REASON_FRAGMENT_MISS = 5;
export const REASON_LB_TIER = 6;
export const REASON_FRAGMENT_TABLE_FULL = 7;
/** A later fragment came before its first: a copy is kept for re-injection (--tun), the original dropped. */
export const REASON_FRAGMENT_STORED = 8;
/** Its datagram lost a fragment (no room to keep a copy): dropped, the first fragment too. */
export const REASON_FRAGMENT_LOST = 9;
export const REASON_NAMES = ['target', 'no_flow', 'no_target', 'invalid', 'fragment_hit', 'fragment_miss', 'lb_tier', 'fragment_table_full', 'fragment_stored', 'fragment_lost'] as const;

export interface PipelineOptions<T extends LookupTable = LookupTable> {
  /** 0: hash all 40 key bytes; 1: SCTP hashes ports only (nfqlb's default). */
  hashMode: number;
  /** fwmark when no flow matches (-1: drop). */
  nolbFwmark: number;
  /** fwmark when the flow's table has no active target (-1: drop). */
  notargetsFwmark: number;
  /** Fragment table entries (nfqlb: ft_size + ft_buckets). */
  fragmentCapacity: number;
  /** Of those, home slots of the hash (nfqlb: ft_size); the rest take collisions. Default: half. */
  fragmentHashSize?: number;
  /** Seed of the fragment table's hash (default 0: reproducible; the daemon passes a random one). */
  fragmentSeed?: number;
  /** How long a datagram's choice is kept after its last fragment was seen, ms (--ft_ttl). */
  fragmentTtlMs: number;
  /** Where the fragment table keeps its statistics (FRAG_STATS_FIELDS doubles, e.g. over a SharedArrayBuffer); private when absent. */
  fragmentStats?: Float64Array;
  /** Where to count packets per REASON_* (REASON_NAMES.length); by default a private array. */
  reasonCounts?: Float64Array;
  /** --reassembler: hole descriptors for reassembly bookkeeping (0: none). */
  reassemblerSize?: number;
  /**
   * Copies of out-of-order later fragments kept for re-injection (nfqlb's
   * --ft_frag with --tun); 0 (the default): none, they are dropped.
   */
  fragmentStoreSlots?: number;
  /** Bytes of one kept copy (nfqlb: --mtu). */
  fragmentStoreSlotBytes?: number;
  /** FSTORE_FIELDS numbers the store counts into (e.g. over a SharedArrayBuffer); default: its own. */
  fragmentStoreCounters?: Float64Array;
  /** `lb` mode: every packet goes to this table, no flows. */
  fixedTarget?: Target<T> | null;
  /** `lb` mode: the UDP port that carries SCTP (0: none). */
  sctpEncap?: number;
  /** LB tier (--lbshm): fragments are first hashed on addresses over this table. */
  lbTier?: { table: LookupTable; ownFwmark: number } | null;
  /** --conntrack: the connections seen and their targets (src/datapath/conntrack.ts); null: stateless, as nfqlb. */
  conntrack?: ConnTable | null;
}

/** A fragment table's shape as the options ask for it: what a Pipeline builds, and what nfqlb's stats report. */
export interface FragmentGeometry {
  /** Home slots of the hash (nfqlb's ft_size). */
  hashSize: number;
  /** Entries that take collisions (nfqlb's ft_buckets). */
  extraBuckets: number;
  ttlMs: number;
}

export function fragmentGeometry(options: Pick<PipelineOptions, 'fragmentCapacity' | 'fragmentHashSize' | 'fragmentTtlMs'>): FragmentGeometry {
  const capacity = Math.max(1, Math.floor(options.fragmentCapacity));
  const hashSize = Math.min(capacity, Math.max(1, Math.floor(options.fragmentHashSize ?? Math.ceil(capacity / 2))));
  return { hashSize, extraBuckets: capacity - hashSize, ttlMs: options.fragmentTtlMs };
}

/** The details of the last decision. Reused; copy what you keep. */
export class Decision<T extends LookupTable = LookupTable> {
  fwmark = -1;
  reason = REASON_INVALID;
  /** The matched flow, or null. */
  flow: Flow<Target<T>> | null = null;
  /** The table the flow names (or the fixed table), or null. */
  target: Target<T> | null = null;
  /**
   * Where decide() writes `hash`. A uint32 above 2^31-1 is no small integer in
   * V8: in an object field, or passed to a function that is not inlined, it
   * costs a heap number per packet; stored into a Float64Array it costs nothing.
   */
  readonly hashSlot = new Float64Array([-1]);
  /** The hash used for the table lookup (uint32), or -1 when no lookup was made. */
  get hash(): number {
    return this.hashSlot[0];
  }
}

export const DEFAULT_PIPELINE_OPTIONS: Readonly<Omit<PipelineOptions, 'fixedTarget' | 'lbTier' | 'sctpEncap'>> = {
  hashMode: 1,
  nolbFwmark: -1,
  notargetsFwmark: -1,
  fragmentCapacity: 1000,
  fragmentTtlMs: 200,
};

export class Pipeline<T extends LookupTable = LookupTable> {
  readonly info = new PacketInfo();
  readonly last = new Decision<T>();
  readonly fragments: FragmentTable;
  /**
   * Copies of out-of-order later fragments (null without --tun). After a
   * batch, its re-injection list (pendingCount > 0) is to be written to the
   * tun device and flushed (src/addon/tun.ts flushReinjections).
   */
  readonly fragmentStore: FragmentStore | null;
  /** The time decideNow() decides at (monotonic ms). */
  readonly clock = new Float64Array(1);
  /** Packets per REASON_* since start (folded into metrics at scrape time). */
  readonly reasonCounts: Float64Array;
  /** --conntrack's table, or null. */
  readonly conntrack: ConnTable | null;
  /** info.key as the words the connection table compares and stores (a view: it follows every packet's key). */
  private readonly keyWords = new Int32Array(this.info.key.buffer, this.info.key.byteOffset, KEY_LEN / 4);
  private readonly opts: PipelineOptions<T>;

  constructor(
    private readonly flows: FlowSet<Target<T>> | null,
    options: Partial<PipelineOptions<T>> = {},
  ) {
    this.opts = { ...DEFAULT_PIPELINE_OPTIONS, ...options };
    this.reasonCounts = this.opts.reasonCounts ?? new Float64Array(REASON_NAMES.length);
    this.conntrack = this.opts.conntrack ?? null;
    // The batch handler decides at this thread's performance.now(): readers elsewhere convert with its origin.
    if (this.conntrack !== null) this.conntrack.clockOrigin[0] = performance.timeOrigin;
    if (this.reasonCounts.length !== REASON_NAMES.length) throw new RangeError(`reasonCounts needs ${REASON_NAMES.length} elements`);
    const { hashSize, extraBuckets, ttlMs } = fragmentGeometry(this.opts);
    const slots = Math.floor(this.opts.fragmentStoreSlots ?? 0);
    this.fragmentStore = slots > 0 ? new FragmentStore(slots, this.opts.fragmentStoreSlotBytes ?? 1500, this.opts.fragmentStoreCounters) : null;
    this.fragments = new FragmentTable({
      store: this.fragmentStore,
      hashSize,
      extraBuckets,
      ttlMs,
      seed: this.opts.fragmentSeed ?? 0,
      stats: this.opts.fragmentStats,
      reassemblerSize: this.opts.reassemblerSize ?? 0,
    });
  }

  private finish(reason: number, fwmark: number): number {
    this.last.reason = reason;
    this.last.fwmark = fwmark;
    this.reasonCounts[reason]++;
    return fwmark;
  }

  /**
   * Decides for pkt[off, off+len) at time `nowMs` (monotonic ms; only used
   * for fragment expiry). Returns the fwmark (≥ 0: accept with it) or a
   * negative value (drop); `last` holds the details.
   */
  decide(pkt: Uint8Array, off: number, len: number, nowMs: number): number {
    this.clock[0] = nowMs;
    return this.decideNow(pkt, off, len);
  }

  /**
   * decide() at the time in `clock[0]`, which the batch handler sets once per
   * batch. A double passed to a function V8 does not inline is boxed on every
   * call (16 bytes per packet on Node 24); read from a Float64Array it is not.
   */
  decideNow(pkt: Uint8Array, off: number, len: number): number {
    const info = this.info;
    const last = this.last;
    const opts = this.opts;
    last.flow = null;
    last.target = null;
    last.hashSlot[0] = -1;
    const fixed = opts.fixedTarget ?? null;
    const rc = classify(pkt, off, len, fixed !== null ? opts.sctpEncap ?? 0 : 0, info);
    if (rc === RC_INVALID) return this.finish(REASON_INVALID, -1);

    const key = info.key;
    if ((rc & (RC_FIRST_FRAGMENT | RC_LATER_FRAGMENT)) !== 0) {
      const tier = opts.lbTier ?? null;
      if (tier !== null) {
        const fw = tier.table.fwmarkOf(hashKeyAddressesBits(key));
        if (fw >= 0 && fw !== tier.ownFwmark) return this.finish(REASON_LB_TIER, fw);
      }
      if ((rc & RC_FIRST_FRAGMENT) === 0) {
        if (this.fragmentStore === null) {
          if (!this.fragments.lookup(key, info.fragId, this.clock[0])) return this.finish(REASON_FRAGMENT_MISS, -1);
        } else {
          const held = this.fragments.hold(key, info.fragId, this.clock[0], pkt, off, len);
          if (held !== HOLD_FOUND) {
            return this.finish(held === HOLD_KEPT ? REASON_FRAGMENT_STORED : held === HOLD_FULL ? REASON_FRAGMENT_TABLE_FULL : REASON_FRAGMENT_LOST, -1);
          }
        }
        const stored = this.fragments.value;
        this.fragments.fragmentSeen(info.fragOffset, info.fragLength, info.fragMore, this.clock[0]);
        // The first fragment's fwmark, also in lb mode (nfqlb 1.2.0's lb keeps the
        // fwmark too): a table change in between must not split the datagram.
        if (fixed !== null) last.target = fixed;
        return this.finish(REASON_FRAGMENT_HIT, stored);
      }
    }

    let target: Target<T> | null;
    if (fixed !== null) {
      target = fixed;
    } else {
      const flows = this.flows;
      let flow: Flow<Target<T>> | null = null;
      if (flows !== null) {
        flow = flows.lookup(info, pkt);
        const udpencap = flows.lastUdpencap;
        if (udpencap !== 0 && info.proto === IPPROTO_UDP && info.dport === udpencap) {
          // A hidden '#name' flow matched on the way (its target is null, so
          // the search went on): the UDP payload is SCTP. As nfqlb, key on the
          // inner SCTP header and search again.
          if (classify(pkt, off, len, udpencap, info) === RC_INVALID) return this.finish(REASON_INVALID, -1);
          flow = flows.lookup(info, pkt);
        }
      }
      last.flow = flow;
      target = flow === null ? null : flow.target;
      if (target === null) return this.finish(REASON_NO_FLOW, opts.nolbFwmark);
    }
    last.target = target;
    const hash = hashKeyBits(key, opts.hashMode); // int32 bits: see djb2Bits
    last.hashSlot[0] = hash >>> 0;
    const ct = this.conntrack;
    const fw = ct === null ? target.table.fwmarkOf(hash) : this.trackedFwmark(ct, target, key, hash);
    if (fw < 0) return this.finish(REASON_NO_TARGET, opts.notargetsFwmark);
    if ((rc & RC_FIRST_FRAGMENT) !== 0) {
      if (!this.fragments.store(key, info.fragId, fw, this.clock[0])) {
        return this.finish(this.fragments.refusedLost ? REASON_FRAGMENT_LOST : REASON_FRAGMENT_TABLE_FULL, -1);
      }
      this.fragments.fragmentSeen(info.fragOffset, info.fragLength, info.fragMore, this.clock[0]);
    }
    return this.finish(REASON_TARGET, fw);
  }

  /**
   * --conntrack: the remembered fwmark of a known connection while its slot
   * of the same Target still holds it; else Maglev's choice, remembered.
   */
  private trackedFwmark(ct: ConnTable, target: Target<T>, key: Uint8Array, hash: number): number {
    const table = target.table;
    if (table.slotOf === undefined || table.fwmarkAt === undefined) return table.fwmarkOf(hash);
    const now = this.clock[0];
    // The full 40-byte key (hash mode 0), whatever --hash_mode gives Maglev: an entry is one connection.
    // hashKeyBits differs between the modes for SCTP only: every other packet shares Maglev's hash.
    const keyHash = this.opts.hashMode === 0 || key[KEY_PROTO] !== IPPROTO_SCTP ? hash : hashKeyBits(key, 0);
    const slot = table.slotOf(hash);
    const maglev = slot < 0 ? -1 : table.fwmarkAt(slot);
    const e = ct.find(this.keyWords, keyHash, now);
    if (e < 0) {
      ct.stats[CT_MISSES]++;
      if (maglev >= 0) ct.insert(this.keyWords, keyHash, maglev, slot, target.serial, now);
      return maglev;
    }
    const kept = ct.fwmarkOf(e);
    if (ct.serialOf(e) === (target.serial | 0) && kept >= 0 && table.fwmarkAt(ct.slotOf(e)) === kept) {
      ct.touch(e, now);
      ct.stats[CT_HITS]++;
      if (kept !== maglev) ct.stats[CT_SAVED]++;
      return kept;
    }
    // Its target is gone (deactivated, or the flow names another table now): decided again.
    ct.stats[CT_MOVED]++;
    if (maglev < 0) ct.remove(e);
    else ct.update(e, maglev, slot, target.serial, now);
    return maglev;
  }
}
