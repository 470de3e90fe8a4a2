'use strict';
// Jest globalSetup: a file where suites note why they were skipped
// (test/helpers/skip.ts); test/global-teardown.js prints it once at the end.
// Also notes whether the machine-wide trace shm (/dev/shm/nfqlb-trace, which
// every daemon maps) was there, so the teardown removes it only if the
// suites' daemons created it.
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const TRACE_SHM = '/dev/shm/nfqlb-trace';

module.exports = async function globalSetup() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `nfqlbts-skips-${process.pid}-`));
  process.env.NFQLB_TEST_SKIPS = path.join(dir, 'skipped.tsv');
  process.env.NFQLB_TEST_TRACE_SHM_EXISTED = fs.existsSync(TRACE_SHM) ? '1' : '0';
};
