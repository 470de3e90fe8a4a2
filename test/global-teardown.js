'use strict';
// Jest globalTeardown: says once, after the summary, which suites were skipped
// and why (one line per reason), then removes the notes, and the trace shm
// if the suites' daemons created it (test/global-setup.js).
const fs = require('node:fs');
const path = require('node:path');

module.exports = async function globalTeardown() {
  if (process.env.NFQLB_TEST_TRACE_SHM_EXISTED === '0') fs.rmSync('/dev/shm/nfqlb-trace', { force: true });
  const log = process.env.NFQLB_TEST_SKIPS;
  if (log === undefined) return;
  const byReason = new Map();
  if (fs.existsSync(log)) {
    for (const line of fs.readFileSync(log, 'utf8').split('\n')) {
      const [reason, file] = line.split('\t');
      if (file === undefined) continue;
      if (!byReason.has(reason)) byReason.set(reason, new Set());
      byReason.get(reason).add(file);
    }
  }
  fs.rmSync(path.dirname(log), { recursive: true, force: true });
  for (const [reason, files] of byReason) {
    process.stderr.write(`\nSKIPPED tests in ${files.size} file${files.size === 1 ? '' : 's'} (${reason}): ${[...files].sort().join(', ')}\n`);
  }
};
