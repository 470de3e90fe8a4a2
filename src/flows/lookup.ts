/**
 * An index over a FlowSet's flows, so that finding a packet's flow costs about
 * the same with 10,000 flows as with one (issue 11, point 2).
 *
 * What it must return is exactly what FlowSet.lookupLinear() — nfqlb's walk
 * in priority order — returns, with the same side effects (match counters,
 * lastUdpencap). It does so by narrowing, never by deciding: each of three
 * dimensions yields a superset of the flows that can contain the packet,
 *
 *   port: by protocol class (tcp, udp, sctp, other) and destination port;
 *         port ranges are stored as aligned power-of-two blocks (the nodes of
 *         a segment tree over 0..65535), so a port finds its flows with one
 *         probe per block size in use;
 *   dst:  by destination prefix, one hash probe per prefix length in use
 *         (IPv4 CIDRs are ::ffff:0:0/96 + n, as the flows store them);
 *   src:  the same for source prefixes;
 *
 * flows without that part (no protocols, no dports, no dsts...) are in the
 * dimension's "any" list. The smallest superset is then checked flow by flow
 * with flowContains() — the test the linear walk makes — in priority order.
 * Ports with too many blocks, source ports and byte matches are not indexed;
 * flowContains() checks them. Promiscuous ping ignores protocols and ports,
 * so a ping uses only the address dimensions.
 *
 * The index is built from one immutable list (FlowSet replaces its list on
 * every change); FlowSet.lookup() uses it only while it follows the set's
 * current list, and walks linearly otherwise. Building allocates; lookup()
 * does not (typed arrays and scratch made at build time).
 *
 * Changes to a big set do not rebuild it (that made setting 10,000 flows one
 * request at a time O(n²)): change() notes them beside the built "base" —
 * removed base flows are marked, new flows go to a small "overlay" that
 * lookup() walks after the base, both ordered by rank (a base flow's rank is
 * its base position, a new flow's lies between its neighbours' ranks). The
 * base is rebuilt when the overlay and the marks exceed about √n (O(√n)
 * amortized per change) and REBUILD_AFTER_MS after a change, so that a
 * settled set is looked up through the index alone.
 *
 * Positions are indexes into the list, which is in priority order (ties in
 * FlowSet's order), so each candidate list is sorted and the first
 * containing flow with a target is the one the linear walk returns. Sets of
 * up to WALK_ALL_MAX_FLOWS flows are walked whole.
 *
 * The per-flow test and the compiled Flow come from flowmatch.ts, which
 * flows.ts uses too: the index and the linear walk share one test.
 */
import { IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, keyDport, keyProto, keySport } from '../packet/hashkey';
import { CIDR_WORDS, flowContains, isPromiscuousPing, loadAddressWords, protoBit, type Flow } from './match';
import type { PacketInfo } from '../packet/classify';

/**
 * Sets of up to this many flows and SYNC_BUILD_MAX_KEYS keys (well under a
 * millisecond to build) are indexed at once on every change; bigger ones
 * after the current event-loop turn, so that loading thousands of flows in
 * one go builds the index once (the linear walk answers meanwhile).
 */
export const SYNC_BUILD_MAX_FLOWS = 128;
const SYNC_BUILD_MAX_KEYS = 4096;

/** A changed set is re-indexed this long after its first change not yet in the base. */
export const REBUILD_AFTER_MS = 100;

/** The base is rebuilt when overlay flows plus removed base flows exceed max(this, √n). */
const MIN_CHANGES_BEFORE_REBUILD = 16;

/** A flow whose dports need more blocks than this is in its classes' "any" lists instead. */
const MAX_PORT_BLOCKS = 32;

/**
 * Sets this small are walked whole (in the same scan): probing the index
 * would cost more than checking a few flows.
 */
const WALK_ALL_MAX_FLOWS = 4;

const DIM_PORT = 0;
const DIM_DST = 1;
const DIM_SRC = 2;
/** Lists one dimension can yield for a packet: the "any" list + 129 prefix lengths. */
const MAX_LISTS = 130;

/** The protocol classes of the port dimension and a protocol of each (0: none of tcp/udp/sctp). */
const CLASS_PROTO = [IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP, 0] as const;
const CLASS_OTHER = 3;

// First key word: what the other four are.
const TAG_ANY = 1 << 24; // | list number (0-3: port classes, 4: dst, 5: src)
const TAG_PORT = 2 << 24; // | class << 8 | block level; word 1: port >> level
const TAG_DST = 3 << 24; // | prefix length; words 1-4: the masked address
const TAG_SRC = 4 << 24;
const ANY_DST = 4;
const ANY_SRC = 5;
const ANY_LISTS = 6;

function protoClass(proto: number): number {
  switch (proto) {
    case IPPROTO_TCP:
      return 0;
    case IPPROTO_UDP:
      return 1;
    case IPPROTO_SCTP:
      return 2;
    default:
      return CLASS_OTHER;
  }
}

/** The 32-bit mask word w (0-3) of a /prefix over 128 bits. */
function maskWord(prefix: number, w: number): number {
  const bits = Math.min(32, Math.max(0, prefix - 32 * w));
  return bits === 0 ? 0 : bits === 32 ? -1 : (-1 << (32 - bits)) | 0;
}

function popcount(x: number): number {
  x -= (x >>> 1) & 0x55555555;
  x = (x & 0x33333333) + ((x >>> 2) & 0x33333333);
  return (Math.imul((x + (x >>> 4)) & 0x0f0f0f0f, 0x01010101) >>> 24) & 0xff;
}

/**
 * A hash of the 5 key words k[at..at+5), and-ed with `mask` (-1: all of it).
 * Masked inside so that on the packet path the result is a small integer:
 * V8 would box a full 32-bit value returned from a call it did not inline.
 */
function hashKey5(k: Int32Array, at: number, mask: number): number {
  let h = 0x2545f491;
  for (let i = 0; i < 5; i++) {
    h = Math.imul(h ^ k[at + i], 0xcc9e2d51);
    h = (h << 15) | (h >>> 17);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  return (h ^ (h >>> 13)) & mask;
}

/** Open-addressing hash from 5-int32 keys to dense ids 0, 1, 2... */
class KeyTable {
  keys = new Int32Array(5 * 64);
  size = 0;
  /**
   * The key to find(): the packet path writes the words here rather than
   * passing them (addresses are int32 values beyond V8's small integers, and
   * would be boxed as arguments of a call that is not inlined).
   */
  readonly probe = new Int32Array(5);
  private hashes = new Int32Array(64);
  private slots = new Int32Array(128); // id + 1; 0: empty
  private mask = 127;

  /** The id of the key in `probe`, or -1. Per packet: allocates nothing. */
  find(): number {
    return this.findAt(this.probe, 0, hashKey5(this.probe, 0, this.mask));
  }

  /** The id of key k[at..at+5) that hashes to slot `h`, or -1. */
  private findAt(k: Int32Array, at: number, h: number): number {
    const slots = this.slots;
    const keys = this.keys;
    for (;;) {
      const id = slots[h] - 1;
      if (id < 0) return -1;
      const j = 5 * id;
      if (keys[j] === k[at] && keys[j + 1] === k[at + 1] && keys[j + 2] === k[at + 2] && keys[j + 3] === k[at + 3] && keys[j + 4] === k[at + 4]) return id;
      h = (h + 1) & this.mask;
    }
  }

  /** The id of key src[at..at+5) whose hashKey5() is src[at+5], added if new. Build time only. */
  add(src: Int32Array, at: number): number {
    const hash = src[at + 5];
    const found = this.findAt(src, at, hash & this.mask);
    if (found >= 0) return found;
    if (2 * (this.size + 1) > this.slots.length) this.grow();
    const id = this.size++;
    if (this.size > this.hashes.length) {
      const k = new Int32Array(this.keys.length * 2);
      k.set(this.keys);
      this.keys = k;
      const h = new Int32Array(this.hashes.length * 2);
      h.set(this.hashes);
      this.hashes = h;
    }
    this.keys.set(src.subarray(at, at + 5), 5 * id);
    this.hashes[id] = hash;
    this.place(id);
    return id;
  }

  private place(id: number): void {
    let h = this.hashes[id] & this.mask;
    while (this.slots[h] !== 0) h = (h + 1) & this.mask;
    this.slots[h] = id + 1;
  }

  private grow(): void {
    this.slots = new Int32Array(this.slots.length * 2);
    this.mask = this.slots.length - 1;
    for (let id = 0; id < this.size; id++) this.place(id);
  }
}

/** A growable list of int32 pairs (entry id, flow position). Build time only. */
class PairList {
  data = new Int32Array(256);
  length = 0;
  push(a: number, b: number): void {
    if (this.length + 2 > this.data.length) {
      const d = new Int32Array(this.data.length * 2);
      d.set(this.data);
      this.data = d;
    }
    this.data[this.length++] = a;
    this.data[this.length++] = b;
  }
}

/**
 * The aligned blocks (level k: 2^k ports starting at a multiple of 2^k) that
 * exactly cover the port ranges r (sorted [lo, hi] pairs), merged first so no
 * port is in two blocks; pushed to out as (level, port >> level). False when
 * there would be more than MAX_PORT_BLOCKS.
 */
function portBlocks(r: Int32Array, out: number[]): boolean {
  out.length = 0;
  let i = 0;
  while (i < r.length) {
    let x = r[i];
    let hi = r[i + 1];
    i += 2;
    // Merge overlapping or adjacent ranges (FlowSet's are already; a hand-made Flow may not be).
    while (i < r.length && r[i] <= hi + 1) {
      if (r[i + 1] > hi) hi = r[i + 1];
      i += 2;
    }
    while (x <= hi) {
      let k = 0;
      while (k < 16 && (x & ((1 << (k + 1)) - 1)) === 0 && x + (1 << (k + 1)) - 1 <= hi) k++;
      if (out.length >= 2 * MAX_PORT_BLOCKS) return false;
      out.push(k, x >> k);
      x += 1 << k;
    }
  }
  return true;
}

/** Whether the port ranges are sorted by their start (what portBlocks' merge needs). */
function sortedRanges(r: Int32Array): boolean {
  for (let i = 2; i < r.length; i += 2) if (r[i] < r[i - 2]) return false;
  return true;
}

/**
 * The CIDR entries of c (CIDR_WORDS each) that are not inside another entry
 * of the same list (a duplicate keeps its first copy): what is left is
 * pairwise disjoint, so an address is in at most one and a flow is a
 * candidate at most once per packet.
 */
function outermostCidrs(c: Int32Array): number[] {
  const n = c.length / CIDR_WORDS;
  const keep: number[] = [];
  for (let i = 0; i < n; i++) {
    const bi = i * CIDR_WORDS;
    const li = cidrPrefix(c, bi);
    let inside = false;
    for (let j = 0; j < n && !inside; j++) {
      if (j === i) continue;
      const bj = j * CIDR_WORDS;
      const lj = cidrPrefix(c, bj);
      if (lj > li || (lj === li && j > i)) continue;
      inside = true;
      for (let w = 0; w < 4; w++) if ((c[bi + w] & c[bj + 4 + w]) !== c[bj + w]) inside = false;
    }
    if (!inside) keep.push(bi);
  }
  return keep;
}

function cidrPrefix(c: Int32Array, base: number): number {
  return popcount(c[base + 4]) + popcount(c[base + 5]) + popcount(c[base + 6]) + popcount(c[base + 7]);
}

export class FlowIndex<T> {
  /** After lookup(): what FlowSet.lastUdpencap must be (see FlowSet.lookup()). */
  lastUdpencap = 0;

  private flows_: readonly Flow<T>[] | null = null;
  /** The list the index was built from; positions in pool are into it. */
  private base: readonly Flow<T>[] = [];
  /** Per base position: 1 when that flow is no longer in the set. */
  private removed = new Uint8Array(0);
  private removedCount = 0;
  /** Flows added since the build, in rank order, and their ranks. */
  private readonly overlay: Flow<T>[] = [];
  private readonly overlayRank: number[] = [];
  /** Every flow of the current list → its rank (base flows: their position). */
  private rankOf = new Map<Flow<T>, number>();
  /** Overlay positions of containing hidden flows met on the way (per packet). */
  private overlayHidden = new Int32Array(16);
  private rebuildTimer: NodeJS.Timeout | null = null;
  private table = new KeyTable();
  /** Flow positions, one sorted run per key id: pool[start[id] .. start[id+1]). */
  private pool = new Int32Array(0);
  private start = new Int32Array(1);
  /** Key id of each "any" list, -1 when empty. */
  private readonly anyId = new Int32Array(ANY_LISTS).fill(-1);
  /** Per protocol class: bit k set when some flow has a port block of level k. */
  private readonly portLevels = new Int32Array(4);
  /** Prefix lengths in use, and their 4 mask words each. */
  private dstLens: Int32Array = new Int32Array(0);
  private dstMasks: Int32Array = new Int32Array(0);
  private srcLens: Int32Array = new Int32Array(0);
  private srcMasks: Int32Array = new Int32Array(0);

  // Per-packet scratch.
  private readonly addr = new Int32Array(8);
  private readonly listStart = new Int32Array(3 * MAX_LISTS);
  private readonly listEnd = new Int32Array(3 * MAX_LISTS);
  private readonly listCount = new Int32Array(3);
  /** Positions of containing flows without a target (hidden '#' flows) met on the way. */
  private hidden = new Int32Array(1);
  private pendingList: readonly Flow<T>[] | null = null;
  /** Where the run 0..n-1 of a small set starts in pool; -1: the set is not small. */
  private walkAllStart = -1;

  /** The list the index follows (null: none yet). lookup() answers for that list only. */
  get flows(): readonly Flow<T>[] | null {
    return this.flows_;
  }

  /**
   * Follows a set's new list by building (control path; change() when the
   * index follows the previous list): now for a small set
   * (SYNC_BUILD_MAX_FLOWS), else once after the current event-loop turn
   * (later calls in the same turn replace the list to build).
   */
  update(list: readonly Flow<T>[]): void {
    this.cancelRebuild();
    let keys = 0;
    if (list.length <= SYNC_BUILD_MAX_FLOWS) for (const f of list) keys += flowKeys(f).length / KEY_WORDS;
    if (list.length <= SYNC_BUILD_MAX_FLOWS && keys <= SYNC_BUILD_MAX_KEYS) {
      this.pendingList = null;
      this.build(list);
      return;
    }
    const scheduled = this.pendingList !== null;
    this.pendingList = list;
    if (scheduled) return;
    setImmediate(() => {
      const pending = this.pendingList;
      this.pendingList = null;
      if (pending !== null) this.build(pending);
    });
  }

  /**
   * Follows one change from `prev` to `list` (control path): `removed` left
   * the set (or null), `added` (or null) is now at list[at]. O(log n + √n)
   * amortized for a big set; a small one, or one the index does not follow
   * yet, goes through update().
   */
  change(prev: readonly Flow<T>[], list: readonly Flow<T>[], removed: Flow<T> | null, added: Flow<T> | null, at: number): void {
    if (this.flows_ !== prev || this.pendingList !== null || list.length <= SYNC_BUILD_MAX_FLOWS) {
      this.update(list);
      return;
    }
    if (removed !== null) {
      const rank = this.rankOf.get(removed);
      if (rank === undefined) {
        this.update(list);
        return;
      }
      this.rankOf.delete(removed);
      if (this.base[rank] === removed) {
        this.removed[rank] = 1;
        this.removedCount++;
      } else {
        const i = this.overlay.indexOf(removed);
        this.overlay.splice(i, 1);
        this.overlayRank.splice(i, 1);
      }
    }
    if (added !== null) {
      const lo = at > 0 ? this.rankOf.get(list[at - 1]) : undefined;
      const hi = at + 1 < list.length ? this.rankOf.get(list[at + 1]) : undefined;
      const rank = lo === undefined ? (hi === undefined ? 0 : hi - 1) : hi === undefined ? lo + 1 : (lo + hi) / 2;
      // No double left between the neighbours (after ~40 inserts at one place): build instead.
      if ((lo !== undefined && rank <= lo) || (hi !== undefined && rank >= hi) || (at > 0 && lo === undefined) || (at + 1 < list.length && hi === undefined)) {
        this.update(list);
        return;
      }
      let i = this.overlayRank.length;
      while (i > 0 && this.overlayRank[i - 1] > rank) i--; // the overlay is short: linear is fine
      this.overlay.splice(i, 0, added);
      this.overlayRank.splice(i, 0, rank);
      this.rankOf.set(added, rank);
      if (this.overlayHidden.length < this.overlay.length) this.overlayHidden = new Int32Array(2 * this.overlay.length);
    }
    this.flows_ = list;
    if (this.overlay.length + this.removedCount > Math.max(MIN_CHANGES_BEFORE_REBUILD, Math.sqrt(list.length))) {
      this.update(list);
      return;
    }
    if (this.rebuildTimer === null && (this.overlay.length > 0 || this.removedCount > 0)) {
      this.rebuildTimer = setTimeout(() => {
        this.rebuildTimer = null;
        if (this.flows_ !== null && this.pendingList === null) this.build(this.flows_);
      }, REBUILD_AFTER_MS);
      this.rebuildTimer.unref();
    }
  }

  /** Builds now what change() noted (tests, benchmarks). */
  settle(): void {
    const list = this.pendingList ?? this.flows_;
    this.pendingList = null;
    if (list !== null) this.build(list);
  }

  private cancelRebuild(): void {
    if (this.rebuildTimer === null) return;
    clearTimeout(this.rebuildTimer);
    this.rebuildTimer = null;
  }

  /**
   * Builds the index over `list` (in priority order, as FlowSet keeps it).
   * The list and its flows' match parts must not change afterwards (FlowSet
   * replaces the list on every change). Allocates: control path only.
   */
  build(list: readonly Flow<T>[]): void {
    this.cancelRebuild();
    const table = new KeyTable();
    const pairs = new PairList();
    const dstLenUsed = new Uint8Array(129);
    const srcLenUsed = new Uint8Array(129);
    const portLevels = new Int32Array(4);
    let hiddenCount = 0;
    for (let pos = 0; pos < list.length; pos++) {
      const f = list[pos];
      if (f.target === null) hiddenCount++;
      const k = flowKeys(f);
      for (let at = 0; at < k.length; at += KEY_WORDS) {
        pairs.push(table.add(k, at), pos);
        const k0 = k[at];
        const tag = k0 & TAG_MASK;
        if (tag === TAG_PORT) portLevels[(k0 >> 8) & 0xff] |= 1 << (k0 & 0xff);
        else if (tag === TAG_DST) dstLenUsed[k0 & 0xff] = 1;
        else if (tag === TAG_SRC) srcLenUsed[k0 & 0xff] = 1;
      }
    }
    // Counting sort of the pairs by key id; pairs were made in position order, so every run is sorted.
    const start = new Int32Array(table.size + 1);
    const d = pairs.data;
    for (let i = 0; i < pairs.length; i += 2) start[d[i] + 1]++;
    for (let id = 0; id < table.size; id++) start[id + 1] += start[id];
    const fill = start.slice(0, table.size);
    // Small sets: one extra run 0..n-1 at the end, for the walk over all flows.
    const walkAll = list.length <= WALK_ALL_MAX_FLOWS;
    const pool = new Int32Array((pairs.length >> 1) + (walkAll ? list.length : 0));
    if (walkAll) for (let pos = 0; pos < list.length; pos++) pool[pool.length - list.length + pos] = pos;
    this.walkAllStart = walkAll ? pool.length - list.length : -1;
    for (let i = 0; i < pairs.length; i += 2) pool[fill[d[i]]++] = d[i + 1];

    this.table = table;
    this.pool = pool;
    this.start = start;
    for (let a = 0; a < ANY_LISTS; a++) {
      table.probe.set([TAG_ANY | a, 0, 0, 0, 0]);
      this.anyId[a] = table.find();
    }
    this.portLevels.set(portLevels);
    [this.dstLens, this.dstMasks] = prefixTables(dstLenUsed);
    [this.srcLens, this.srcMasks] = prefixTables(srcLenUsed);
    this.hidden = new Int32Array(Math.max(1, hiddenCount));
    this.base = list;
    this.removed = new Uint8Array(list.length);
    this.removedCount = 0;
    this.overlay.length = 0;
    this.overlayRank.length = 0;
    const rankOf = new Map<Flow<T>, number>();
    for (let pos = 0; pos < list.length; pos++) rankOf.set(list[pos], pos);
    this.rankOf = rankOf;
    this.flows_ = list;
  }

  /**
   * What FlowSet.lookupLinear() returns for the packet over the list the
   * index was built from, with the same side effects: every containing flow
   * up to the returned one counts a match; lastUdpencap is set. Per packet:
   * no allocation, no exceptions.
   */
  lookup(info: PacketInfo, pkt: Uint8Array, promiscuousPing: boolean): Flow<T> | null {
    this.lastUdpencap = 0;
    const current = this.flows_;
    if (current === null || current.length === 0) return null;
    const flows = this.base;
    const key = info.key;
    const w = this.addr;
    loadAddressWords(key, w);
    const proto = keyProto(key);
    const sport = keySport(key);
    const dport = keyDport(key);
    const ping = promiscuousPing && isPromiscuousPing(key, proto);

    let best = DIM_DST;
    let bestTotal = flows.length;
    if (this.walkAllStart >= 0) {
      this.listStart[DIM_DST * MAX_LISTS] = this.walkAllStart;
      this.listEnd[DIM_DST * MAX_LISTS] = this.walkAllStart + flows.length;
      this.listCount[DIM_DST] = 1;
    } else {
      // The cheapest dimension first; stop narrowing once a handful is left.
      bestTotal = this.gatherCidr(DIM_DST, TAG_DST, ANY_DST, this.dstLens, this.dstMasks, 4);
      if (bestTotal > 4 && !ping) {
        const t = this.gatherPort(protoClass(proto), dport);
        if (t < bestTotal) {
          best = DIM_PORT;
          bestTotal = t;
        }
      }
      if (bestTotal > 4) {
        const t = this.gatherCidr(DIM_SRC, TAG_SRC, ANY_SRC, this.srcLens, this.srcMasks, 0);
        if (t < bestTotal) best = DIM_SRC;
      }
    }

    const pool = this.pool;
    const hidden = this.hidden;
    const removed = this.removed;
    let win = flows.length;
    let nHidden = 0;
    const lists = bestTotal === 0 ? 0 : this.listCount[best];
    for (let j = best * MAX_LISTS, jEnd = j + lists; j < jEnd; j++) {
      for (let t = this.listStart[j], tEnd = this.listEnd[j]; t < tEnd; t++) {
        const pos = pool[t];
        if (pos >= win) break;
        const f = flows[pos];
        if (removed[pos] !== 0 || !flowContains(f, w, proto, sport, dport, ping, info, pkt)) continue;
        if (f.target !== null) {
          win = pos;
          break;
        }
        hidden[nHidden++] = pos;
      }
    }
    // Flows added since the build, in rank order, up to the base's winner.
    const overlay = this.overlay;
    const overlayRank = this.overlayRank;
    const overlayHidden = this.overlayHidden;
    let winRank = win < flows.length ? win : Infinity;
    let overlayWin = -1;
    let nOverlayHidden = 0;
    for (let i = 0; i < overlay.length; i++) {
      const rank = overlayRank[i];
      if (rank >= winRank) break;
      const f = overlay[i];
      if (!flowContains(f, w, proto, sport, dport, ping, info, pkt)) continue;
      if (f.target !== null) {
        overlayWin = i;
        winRank = rank;
        break;
      }
      overlayHidden[nOverlayHidden++] = i;
    }
    let lastHidden: Flow<T> | null = null;
    let lastHiddenRank = -Infinity;
    for (let h = 0; h < nHidden; h++) {
      const pos = hidden[h];
      if (pos < winRank) {
        flows[pos].matches++;
        if (pos > lastHiddenRank) {
          lastHiddenRank = pos;
          lastHidden = flows[pos];
        }
      }
    }
    for (let h = 0; h < nOverlayHidden; h++) {
      const i = overlayHidden[h];
      overlay[i].matches++;
      if (overlayRank[i] > lastHiddenRank) {
        lastHiddenRank = overlayRank[i];
        lastHidden = overlay[i];
      }
    }
    const winner = overlayWin >= 0 ? overlay[overlayWin] : win < flows.length ? flows[win] : null;
    if (winner !== null) {
      winner.matches++;
      if (!ping) this.lastUdpencap = winner.udpencap;
      return winner;
    }
    if (!ping && lastHidden !== null) this.lastUdpencap = lastHidden.udpencap;
    return null;
  }

  /** The port dimension's lists for the packet; returns their total length. */
  private gatherPort(cls: number, dport: number): number {
    let n = DIM_PORT * MAX_LISTS;
    let total = this.addList(n, this.anyId[cls]);
    if (total > 0) n++;
    let levels = this.portLevels[cls];
    for (let k = 0; levels !== 0; k++, levels >>>= 1) {
      if ((levels & 1) === 0) continue;
      const probe = this.table.probe;
      probe[0] = TAG_PORT | (cls << 8) | k;
      probe[1] = dport >>> k;
      probe[2] = 0;
      probe[3] = 0;
      probe[4] = 0;
      const len = this.addList(n, this.table.find());
      if (len > 0) {
        n++;
        total += len;
      }
    }
    this.listCount[DIM_PORT] = n - DIM_PORT * MAX_LISTS;
    return total;
  }

  /** An address dimension's lists for the address at addr[at..at+4); returns their total length. */
  private gatherCidr(dim: number, tag: number, any: number, lens: Int32Array, masks: Int32Array, at: number): number {
    const w = this.addr;
    const w0 = w[at];
    const w1 = w[at + 1];
    const w2 = w[at + 2];
    const w3 = w[at + 3];
    const probe = this.table.probe;
    let n = dim * MAX_LISTS;
    let total = this.addList(n, this.anyId[any]);
    if (total > 0) n++;
    for (let i = 0; i < lens.length; i++) {
      const m = 4 * i;
      probe[0] = tag | lens[i];
      probe[1] = w0 & masks[m];
      probe[2] = w1 & masks[m + 1];
      probe[3] = w2 & masks[m + 2];
      probe[4] = w3 & masks[m + 3];
      const id = this.table.find();
      const len = this.addList(n, id);
      if (len > 0) {
        n++;
        total += len;
      }
    }
    this.listCount[dim] = n - dim * MAX_LISTS;
    return total;
  }

  /** Puts key id's run at scratch slot j (when id ≥ 0) and returns its length. */
  private addList(j: number, id: number): number {
    if (id < 0) return 0;
    const s = this.start[id];
    const e = this.start[id + 1];
    this.listStart[j] = s;
    this.listEnd[j] = e;
    return e - s;
  }
}

/** Words per key in flowKeys(): the 5 key words and their hashKey5(). */
const KEY_WORDS = 6;
const TAG_MASK = 0xff << 24;

/** The keys of each flow seen, made once: flows are immutable, a redefinition is a new Flow. */
const keysOfFlow = new WeakMap<object, Int32Array>();

/** The index keys flow f is filed under (KEY_WORDS each), one per list it belongs to. */
function flowKeys<T>(f: Flow<T>): Int32Array {
  let k = keysOfFlow.get(f);
  if (k !== undefined) return k;
  const out: number[] = [];
  const push = (a: number, b: number, c: number, d: number, e: number): void => {
    const k5 = Int32Array.of(a, b, c, d, e);
    out.push(k5[0], k5[1], k5[2], k5[3], k5[4], hashKey5(k5, 0, -1));
  };
  const blocks: number[] = [];
  const blocksOk = f.dports !== null && sortedRanges(f.dports) && portBlocks(f.dports, blocks);
  for (let cls = 0; cls < 4; cls++) {
    if (f.protoMask !== 0 && (f.protoMask & protoBit(CLASS_PROTO[cls])) === 0) continue;
    if (!blocksOk) push(TAG_ANY | cls, 0, 0, 0, 0);
    else for (let b = 0; b < blocks.length; b += 2) push(TAG_PORT | (cls << 8) | blocks[b], blocks[b + 1], 0, 0, 0);
  }
  for (const [c, tag, any] of [[f.dsts, TAG_DST, ANY_DST], [f.srcs, TAG_SRC, ANY_SRC]] as const) {
    if (c === null) {
      push(TAG_ANY | any, 0, 0, 0, 0);
      continue;
    }
    for (const base of outermostCidrs(c)) {
      push(tag | cidrPrefix(c, base), c[base] & c[base + 4], c[base + 1] & c[base + 5], c[base + 2] & c[base + 6], c[base + 3] & c[base + 7]);
    }
  }
  k = Int32Array.from(out);
  keysOfFlow.set(f, k);
  return k;
}

/** The 4 mask words of every prefix length 0..128. */
const PREFIX_MASKS = Int32Array.from({ length: 4 * 129 }, (_, i) => maskWord(i >> 2, i & 3));

/** The prefix lengths marked in `used` (longest first) and their mask words. */
function prefixTables(used: Uint8Array): [Int32Array, Int32Array] {
  const lens: number[] = [];
  for (let l = 128; l >= 0; l--) if (used[l] !== 0) lens.push(l);
  const masks = new Int32Array(4 * lens.length);
  lens.forEach((l, i) => masks.set(PREFIX_MASKS.subarray(4 * l, 4 * l + 4), 4 * i));
  return [Int32Array.from(lens), masks];
}
