'use strict';
// Jest globalSetup: a file where suites note why they were skipped
// (test/helpers/skip.ts); test/global-teardown.js prints it once at the end.
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

module.exports = async function globalSetup() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `nfqlbts-skips-${process.pid}-`));
  process.env.NFQLB_TEST_SKIPS = path.join(dir, 'skipped.tsv');
};
