/**
 * Network namespaces for end-to-end tests (root only). The implementation
 * lives in testbed/testbed.ts, shared with the demo (scripts/demo.js); see there
 * for the rules: everything inside namespaces this process created and
 * registered, cleanupAll() from afterAll, documentation addresses only,
 * nothing in the root namespace.
 */
export {
  NS_PREFIX,
  run,
  canUseNetns,
  createNetns,
  deleteNetns,
  nsExec,
  ipn,
  sysctl,
  addVethPair,
  addAddress,
  addRoute,
  addFwmarkRule,
  macOf,
  addNeighbour,
  installQueueRule,
  queueRuleCount,
  addMarkCounter,
  markCounters,
  markCount,
  spawnInNs,
  killProcess,
  cleanupAll,
  uniqueShmName,
  registerShm,
  noteTraceShm,
  sleep,
} from '../../testbed/testbed';
export type { RunResult, RunOptions, QueueRule } from '../../testbed/testbed';
