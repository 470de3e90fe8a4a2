'use strict';
// Child process of test/unit/daemon/flowsfile-crash.test.ts: a Daemon (compiled
// dist/, no queues, no root) with --flows_file, killed by the test (kill -9)
// or by itself at a point NFQLB_TEST_FLOWS_FILE_CRASH names
// (src/daemon/flowsjournal.ts CrashHook).
//   node flows-daemon.js FLOWS_FILE FLOW_ADDRESS TRACE_ADDRESS COMPACT_BYTES
// Prints "ready" on stdout once it serves; pino logs go to stderr.
const path = require('node:path');

const dist = (m) => require(path.join(__dirname, '..', '..', 'dist', m));
const { Daemon } = dist('daemon/daemon');
const { createLogger } = dist('base/log');

const [flowsFile, flowAddress, traceAddress, compactBytes] = process.argv.slice(2);
const daemon = new Daemon(
  {
    mode: 'flowlb', queues: [], qlength: 1, mtu: 1500, batchSize: 1, failOpen: false, promiscuousPing: false,
    pipeline: {}, flowAddress, traceAddress, metricsAddress: null, tableCheckMs: 0,
    flowsFile, flowsFileCompactBytes: Number(compactBytes),
  },
  createLogger(undefined, process.stderr),
);
daemon.start().then(
  () => process.stdout.write('ready\n'),
  (err) => {
    process.stderr.write(`${err.message}\n`);
    process.exit(1);
  },
);
process.on('SIGTERM', () => daemon.stop().then(() => process.exit(0)));
