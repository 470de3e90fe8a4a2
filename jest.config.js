/** Unit, native and end-to-end tests all run from `npm test`; e2e tests need root. */
const common = {
  preset: 'ts-jest',
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  transform: { '^.+\\.ts$': ['ts-jest', { tsconfig: 'tsconfig.test.json' }] },
  // Suites skipped for want of root (and the like) are listed once, after the summary
  // (the same files for both projects: jest runs them once).
  globalSetup: '<rootDir>/test/global-setup.js',
  globalTeardown: '<rootDir>/test/global-teardown.js',
};

module.exports = {
  testTimeout: 60000,
  projects: [
    // Everything, with the daemon in its default worker mode (or $NFQLB_TEST_WORKERS: testbed/testbed.ts).
    { ...common, displayName: 'default', testMatch: ['**/*.test.ts'] },
    // The traffic path (and the fragment paths: per-thread tables vs one) once more with the packets on the main thread (--workers=1).
    // One file in one project: `npx jest --runInBand test/e2e/x.test.ts --selectProjects default`.
    {
      ...common,
      displayName: 'workers=1',
      testMatch: ['traffic', 'observability', 'activation', 'config-under-load', 'fragments-flood', 'fragments-tun', 'fragments-lbtier'].map((f) => `<rootDir>/test/e2e/${f}.test.ts`),
      setupFiles: ['<rootDir>/test/helpers/workers-1.js'],
    },
  ],
};
