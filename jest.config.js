/** Unit, native and end-to-end tests all run from `npm test`; e2e tests need root. */
const common = {
  preset: 'ts-jest',
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  transform: { '^.+\\.ts$': ['ts-jest', { tsconfig: 'tsconfig.test.json' }] },
  // Suites skipped for want of root (and the like) are listed once, after the summary
  // (the same files for every project: jest runs them once).
  globalSetup: '<rootDir>/test/global-setup.js',
  globalTeardown: '<rootDir>/test/global-teardown.js',
};

/** The suites run once per worker mode. */
const TRAFFIC_SUITES = ['traffic', 'observability', 'activation', 'config-under-load', 'fragments-flood', 'fragments-tun', 'fragments-lbtier'];

module.exports = {
  testTimeout: 60000,
  projects: [
    // Everything, with the daemon in its default worker mode (or $NFQLB_TEST_WORKERS: testbed/testbed.ts).
    { ...common, displayName: 'default', testMatch: ['**/*.test.ts'] },
    // The traffic path (and the fragment paths: per-thread tables vs one) once more in the two other worker
    // modes: the packets on the main thread (--workers=1, the single loop), and split over two packet threads
    // (--workers=2; the default on these 2 CPUs is one packet thread).
    // One file in one project: `npx jest --runInBand test/e2e/x.test.ts --selectProjects default`.
    ...['1', '2'].map((n) => ({
      ...common,
      displayName: `workers=${n}`,
      testMatch: TRAFFIC_SUITES.map((f) => `<rootDir>/test/e2e/${f}.test.ts`),
      globals: { NFQLB_TEST_WORKERS: n },
      setupFiles: ['<rootDir>/test/helpers/worker-mode.js'],
    })),
  ],
};
