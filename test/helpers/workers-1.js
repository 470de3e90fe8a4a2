'use strict';
// Jest setupFiles of the `workers=1` project (jest.config.js): every daemon
// the suite starts gets --workers=1 (testbed/testbed.ts, daemonWorkerArgs);
// the suite skips, saying why once, while this build has no --workers.
process.env.NFQLB_TEST_WORKERS = '1';
