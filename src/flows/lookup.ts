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
 * request at a time O(n²)): change() notes them beside the built "base" in
 * a FlowOverlay (overlay.ts) — removed base flows are marked, new flows go
 * to a small overlay that lookup() walks after the base, both ordered by
 * rank. The base is rebuilt when the overlay and the marks exceed about √n
 * (O(√n) amortized per change) and REBUILD_AFTER_MS after a change
 * (buildschedule.ts, which holds the flows layer's timers), so that a
 * settled set is looked up through the index alone.
 *
 * Positions are indexes into the list, which is in priority order (ties in
 * FlowSet's order), so each candidate list is sorted and the first
 * containing flow with a target is the one the linear walk returns. Sets of
 * up to WALK_ALL_MAX_FLOWS flows are walked whole.
 *
 * The per-flow test and the compiled Flow come from match.ts, which
 * flowset.ts uses too: the index and the linear walk share one test. The
 * keys flows are filed under are made in indexkeys.ts (port blocks:
 * portblocks.ts, prefixes: prefixes.ts) and stored in keytable.ts.
 */
import { keyDport, keyProto, keySport } from '../packet/hashkey';
import type { PacketInfo } from '../packet/classify';
import { BuildSchedule } from './buildschedule';
import { ANY_DST, ANY_LISTS, ANY_SRC, flowKeys, KEY_WORDS, protoClass, TAG_ANY, TAG_DST, TAG_MASK, TAG_PORT, TAG_SRC } from './indexkeys';
import { KeyTable, PairList } from './keytable';
import { flowContains, isPromiscuousPing, loadAddressWords, type Flow } from './match';
import { FlowOverlay } from './overlay';
import { prefixTables } from './prefixes';

export { REBUILD_AFTER_MS } from './buildschedule';

/**
 * Sets of up to this many flows and SYNC_BUILD_MAX_KEYS keys (well under a
 * millisecond to build) are indexed at once on every change; bigger ones
 * after the current event-loop turn, so that loading thousands of flows in
 * one go builds the index once (the linear walk answers meanwhile).
 */
export const SYNC_BUILD_MAX_FLOWS = 128;
const SYNC_BUILD_MAX_KEYS = 4096;

/** The base is rebuilt when overlay flows plus removed base flows exceed max(this, √n). */
const MIN_CHANGES_BEFORE_REBUILD = 16;

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

export class FlowIndex<T> {
  /** After lookup(): what FlowSet.lastUdpencap must be (see FlowSet.lookup()). */
  lastUdpencap = 0;

  private flows_: readonly Flow<T>[] | null = null;
  /** The list the index was built from; positions in pool are into it. */
  private base: readonly Flow<T>[] = [];
  /** What changed since the build: removed base flows, added flows. */
  private readonly overlay = new FlowOverlay<T>();
  private readonly schedule = new BuildSchedule<readonly Flow<T>[]>(
    (list) => this.build(list),
    () => this.flows_,
  );
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
    this.schedule.cancelRebuild();
    let keys = 0;
    if (list.length <= SYNC_BUILD_MAX_FLOWS) for (const f of list) keys += flowKeys(f).length / KEY_WORDS;
    if (list.length <= SYNC_BUILD_MAX_FLOWS && keys <= SYNC_BUILD_MAX_KEYS) {
      this.schedule.takePending();
      this.build(list);
      return;
    }
    this.schedule.afterTurn(list);
  }

  /**
   * Follows one change from `prev` to `list` (control path): `removed` left
   * the set (or null), `added` (or null) is now at list[at]. O(log n + √n)
   * amortized for a big set; a small one, or one the index does not follow
   * yet, goes through update().
   */
  change(prev: readonly Flow<T>[], list: readonly Flow<T>[], removed: Flow<T> | null, added: Flow<T> | null, at: number): void {
    if (this.flows_ !== prev || this.schedule.pendingList !== null || list.length <= SYNC_BUILD_MAX_FLOWS) {
      this.update(list);
      return;
    }
    if (removed !== null && !this.overlay.remove(removed)) {
      this.update(list);
      return;
    }
    if (added !== null && !this.overlay.add(list, at, added)) {
      this.update(list);
      return;
    }
    this.flows_ = list;
    if (this.overlay.changes > Math.max(MIN_CHANGES_BEFORE_REBUILD, Math.sqrt(list.length))) {
      this.update(list);
      return;
    }
    if (this.overlay.changes > 0) this.schedule.rebuildLater();
  }

  /** Builds now what change() noted (tests, benchmarks). */
  settle(): void {
    const list = this.schedule.takePending() ?? this.flows_;
    if (list !== null) this.build(list);
  }

  /**
   * Builds the index over `list` (in priority order, as FlowSet keeps it).
   * The list and its flows' match parts must not change afterwards (FlowSet
   * replaces the list on every change). Allocates: control path only.
   */
  build(list: readonly Flow<T>[]): void {
    this.schedule.cancelRebuild();
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
    this.overlay.reset(list);
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
    const changes = this.overlay;
    const removed = changes.removed;
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
    const overlay = changes.flows;
    const overlayRank = changes.ranks;
    const overlayHidden = changes.hidden;
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
