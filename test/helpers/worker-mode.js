'use strict';
// Jest setupFiles of the `workers=N` projects (jest.config.js): every daemon
// the suite starts gets --workers=N, N from the project's globals
// (testbed/testbed.ts, daemonWorkerArgs); the suite skips, saying why once,
// while this build has no --workers.
process.env.NFQLB_TEST_WORKERS = String(globalThis.NFQLB_TEST_WORKERS);
