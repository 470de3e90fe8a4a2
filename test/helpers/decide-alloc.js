'use strict';
// Child process of test/unit/datapath/hot-path.test.ts: runs Pipeline.decide() over
// the packets of the reference decision captures, ITERATIONS times in all
// (after WARMUP calls, default 1M), and prints one JSON line saying how much
// the heap and its young generation grew and how many garbage collections
// ran during those calls.
//   node --expose-gc --min-semi-space-size=64 --max-semi-space-size=64 \
//        decide-alloc.js ITERATIONS SCENARIO... [--allocate]
// --allocate runs a copy of the loop that allocates one small object per
// call, to show that the measurement sees an allocation.
// --batches runs the packet thread's batch handler (src/datapath/batch.ts
// makeBatchHandler, with its shared counters and the trace sink as it is with
// no trace client) over batches of 64 packets of each scenario instead; a
// "call" is then one packet of a batch.
// Uses the compiled dist/ (npx tsc -p .).
const fs = require('node:fs');
const path = require('node:path');
const v8 = require('node:v8');
const { PerformanceObserver, performance } = require('node:perf_hooks');

const root = path.join(__dirname, '..', '..');
const dist = (m) => require(path.join(root, 'dist', m));
const { applyConfig } = dist('replay/config');
const { readPcap } = dist('replay/pcap');
const { fromConfig } = dist('cli/commands/replay');
const { findCommand, parseCommandLine } = dist('cli/main');

const args = process.argv.slice(2);
const allocate = args.includes('--allocate');
const batches = args.includes('--batches');
const [iterations, ...scenarios] = args.filter((a) => a !== '--allocate' && a !== '--batches');
const total = Number(iterations);
const decisions = path.join(process.env.NFQLB_REFERENCE_DIR ?? path.join(root, 'test', 'fixtures', 'reference'), 'decisions');
const parser = { find: findCommand, parse: parseCommandLine };

// Every packet of every scenario, with the pipeline its config builds.
const pipelines = [];
const packets = [];
const owner = [];
// DECIDE_ALLOC_LBTIER=1: every scenario gets an LB tier (--lbshm) of two LBs, so fragments take that path too.
const lbtier = process.env.DECIDE_ALLOC_LBTIER === '1';
for (const s of scenarios) {
  const config = applyConfig(fs.readFileSync(path.join(decisions, `${s}.cmds`), 'utf8'), `${s}.cmds`, parser);
  if (lbtier) config.store.create('lbtier-hot', 31, 4, 101).activate([101, 102]);
  const { pipeline } = fromConfig(config, lbtier ? { _: [], lbshm: 'lbtier-hot' } : { _: [] });
  pipelines.push(pipeline);
  for (const rec of readPcap(path.join(decisions, `${s}.pcap`)).records) {
    if (rec.ip === null) continue;
    packets.push(rec.ip);
    owner.push(pipelines.length - 1);
  }
}
const count = packets.length;
const WARMUP = Number(process.env.WARMUP ?? 1000000);

// The clock moves 1 µs a call, so fragments expire as in a live daemon.
function loop(n, start) {
  let accepted = 0;
  for (let i = 0; i < n; i++) {
    const k = i % count;
    const pkt = packets[k];
    if (pipelines[owner[k]].decide(pkt, 0, pkt.length, ((start + i) / 1000) | 0) >= 0) accepted++;
  }
  return accepted;
}

let sink = null;
function loopAllocating(n, start) {
  let accepted = 0;
  for (let i = 0; i < n; i++) {
    const k = i % count;
    const pkt = packets[k];
    const fw = pipelines[owner[k]].decide(pkt, 0, pkt.length, ((start + i) / 1000) | 0);
    sink = { fw }; // the one difference: an object per call
    if (fw >= 0) accepted++;
  }
  return accepted;
}

// --batches: per scenario, batches of BATCH packets (its packets over and over) and a handler.
const BATCH = 64;
const batchRuns = [];
if (batches) {
  const { makeBatchHandler } = dist('datapath/batch');
  const { traceChannel, TRACE_STATE_WORDS } = dist('daemon/tracechannel');
  const { ThreadCounters } = dist('daemon/threadcounters');
  const { BatchSizeHistogram } = dist('base/counters');
  const counters = new ThreadCounters(1);
  const state = new Int32Array(new SharedArrayBuffer(4 * TRACE_STATE_WORDS));
  const sink = traceChannel({ postMessage() {} }, state, null, counters);
  pipelines.forEach((pipeline, p) => {
    const mine = packets.filter((_, k) => owner[k] === p);
    if (mine.length === 0) return;
    const chosen = Array.from({ length: BATCH }, (_, i) => mine[i % mine.length]);
    const bytes = new Uint8Array(chosen.reduce((n, x) => n + x.length, 0));
    const offsets = new Uint32Array(BATCH);
    const lengths = new Uint32Array(BATCH);
    let off = 0;
    chosen.forEach((x, i) => {
      bytes.set(x, off);
      offsets[i] = off;
      lengths[i] = x.length;
      off += x.length;
    });
    const batch = { count: BATCH, queueNum: 0, packets: bytes, offsets, lengths, origLengths: lengths, ids: new Uint32Array(BATCH), hwProtocol: new Uint16Array(BATCH), queueIndex: new Uint16Array(BATCH), verdicts: new Int32Array(BATCH) };
    batchRuns.push({ batch, handler: makeBatchHandler(pipeline, counters, new BatchSizeHistogram(), 0, sink, null, () => {}) });
  });
}

function loopBatches(n) {
  let done = 0;
  for (let b = 0; done < n; b++) {
    const r = batchRuns[b % batchRuns.length];
    r.handler(r.batch);
    done += BATCH;
  }
  return done;
}

const run = batches ? loopBatches : allocate ? loopAllocating : loop;
run(WARMUP, 0); // warm up: optimised code, fragment table in use

const gcs = [];
const observer = new PerformanceObserver((list) => gcs.push(...list.getEntries()));
observer.observe({ entryTypes: ['gc'] });
global.gc();
global.gc();
const newSpace = () => v8.getHeapSpaceStatistics().find((sp) => sp.space_name === 'new_space').space_used_size;
const before = v8.getHeapStatistics().used_heap_size;
const youngBefore = newSpace();
const t0 = performance.now();
const accepted = run(total, WARMUP);
const t1 = performance.now();
const after = v8.getHeapStatistics().used_heap_size;
const youngAfter = newSpace();
setTimeout(() => {
  observer.disconnect();
  const during = gcs.filter((e) => e.startTime >= t0 && e.startTime <= t1);
  // Allocation by JavaScript lands in the young generation and, when it fills, causes minor GCs (scavenges).
  const minor = during.filter((e) => (e.detail?.kind ?? e.kind) === 1).length;
  process.stdout.write(
    `${JSON.stringify({ calls: total, packets: count, accepted, heapGrowth: after - before, youngGrowth: youngAfter - youngBefore, minorGcs: minor, otherGcs: during.length - minor, sink: sink !== null })}\n`,
  );
}, 50);
