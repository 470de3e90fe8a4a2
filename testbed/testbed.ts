/**
 * A test bed of network namespaces for the end-to-end tests, the demo and the
 * bench (root only). This file is its one entry: it re-exports the parts, and
 * run as a program (compiled: testbed/dist/testbed/testbed.js, TESTBED_JS) it
 * is the helper programs the test bed starts inside namespaces.
 *
 *  - netns.ts        namespaces, links, addresses, routes (nothing outside the test bed's own namespaces)
 *  - processes.ts    processes and shm objects, registered for cleanupAll(); where the programs are
 *  - daemon.ts       nfqlb's command line and its daemon (DaemonProcess), the worker mode of the tests
 *  - topology.ts     the seed's traffic path: gateway, LB, targets (class Testbed); connection results
 *  - rules.ts        NFQUEUE (nft, or iptables-nft), HMARK, and the counting rules
 *  - traffic.ts      UDP load from trafgen
 *  - measurement.ts  load counts, queue counters, CPU, memory, metrics
 *  - programs.ts     the helper programs (server, client, udp, raw)
 *  - seqload.ts      UDP load with sequence numbers (a program of its own)
 */
import { helperMain } from './programs';

export * from './netns';
export * from './processes';
export * from './daemon';
export * from './topology';
export * from './rules';
export * from './traffic';
export * from './measurement';

if (require.main === module) {
  helperMain(process.argv.slice(2)).catch((err: Error) => {
    process.stderr.write(`testbed: ${err.message}\n`);
    process.exitCode = 1;
  });
}
