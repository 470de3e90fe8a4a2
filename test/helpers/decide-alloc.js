'use strict';
// Child process of test/unit/hot-path.test.ts: runs Pipeline.decide() over
// the packets of the reference decision captures, ITERATIONS times in all
// (after WARMUP calls, default 1M), and prints one JSON line saying how much
// the heap and its young generation grew and how many garbage collections
// ran during those calls.
//   node --expose-gc --min-semi-space-size=64 --max-semi-space-size=64 \
//        decide-alloc.js ITERATIONS SCENARIO... [--allocate]
// --allocate runs a copy of the loop that allocates one small object per
// call, to show that the measurement sees an allocation.
// Uses the compiled dist/ (npx tsc -p .).
const fs = require('node:fs');
const path = require('node:path');
const v8 = require('node:v8');
const { PerformanceObserver, performance } = require('node:perf_hooks');

const root = path.join(__dirname, '..', '..');
const dist = (m) => require(path.join(root, 'dist', m));
const { applyConfig } = dist('config');
const { readPcap } = dist('pcap');
const { fromConfig } = dist('cli/commands/replay');
const { findCommand, parseCommandLine } = dist('cli/main');

const args = process.argv.slice(2);
const allocate = args.includes('--allocate');
const [iterations, ...scenarios] = args.filter((a) => a !== '--allocate');
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

const run = allocate ? loopAllocating : loop;
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
