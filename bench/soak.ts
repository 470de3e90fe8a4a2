/**
 * The soak (npm run soak [-- --minutes=N]; root). A long run of everything at
 * once against one daemon, to find what only time and concurrency show:
 * crashes, leaks, lock-outs.
 *
 * Compiled to bench/dist/bench/soak.js (npx tsc -p bench, done by
 * scripts/soak.sh); the orchestrator is soak/run.ts, the agent soak/agent.ts.
 *
 * Topology: testbed/testbed.ts (gateway → LB → 4 targets, namespaces). For
 * the whole run:
 *  - traffic: trafgen UDP to both VIPs (many sources, --rate pps, IPv4 and
 *    IPv6 in turns), counted where it enters the LB and at the targets; TCP
 *    connections from the gateway every few seconds (their own flow and
 *    table, which does not churn), each must be answered;
 *  - a fragment flood: --frag pps of IPv4 fragments with random ids, half
 *    first fragments (UDP to port 5003, a flow of their own: stored in the
 *    fragment table, never completed) and half later fragments whose first
 *    fragment never comes (dropped as fragment_miss);
 *  - targets: one of t2..t4 of the UDP table activated or deactivated
 *    --churn times a second (through the table library), and through the
 *    CLI every 10 s;
 *  - control: an agent inside the LB namespace (soak/agent.ts: this
 *    program's `agent` mode)
 *    sets and deletes flows and trace-flows several times a second, lists
 *    them, attaches and detaches trace clients (some never read), scrapes
 *    the metrics endpoint every second, and keeps hostile control clients
 *    connected: idle ones, slow ones (one byte a second), and junk senders;
 *  - the daemon: watched every second; if it dies that is a crash (counted,
 *    its last output kept) and it is restarted so the run goes on.
 *
 * Report: crashes (must be 0), RSS after the warm-up and at the end (growth
 * must stay under 10%, counted without V8's young generation, which doubles
 * once or twice under load and keeps its size; see --warmup), the floors of
 * the old-space heap, packets handled and dropped by reason (the daemon's
 * metrics and the kernel's queue counters), control requests good and failed
 * with latency, and bench/results/<date>-soak.json.
 *
 * Options: --minutes=N (default 10), --rate=PPS (default 5000), --churn=N
 * activations per second (default 5), --idle=N --slow=N hostile clients held
 * (default 40, 10), --junk=N junk connections per second (default 5),
 * --frag=PPS fragment flood (default 1000, 0: none), --rate=0 no UDP load,
 * --tcp=0 no TCP checks, --only=flows,list,trace,metrics,cli,hostile,junk
 * the agent's activities to run (default all: to find which one costs memory),
 * --warmup=S seconds before RSS samples count (default 60, 10 per minute of
 * a shorter run). RSS is sampled every 5 s; growth compares the median of the
 * first third of the samples after the warm-up with that of the last third.
 */
import { agent } from './soak/agent';
import { soak } from './soak/run';

const argv = process.argv.slice(2);
if (argv[0] === 'agent') {
  agent(argv.slice(1)).catch((err: Error) => {
    process.stderr.write(`soak agent: ${err.stack}\n`);
    process.exit(1);
  });
} else {
  soak(argv).catch((err: Error) => {
    process.stderr.write(`soak: ${err.stack}\n`);
    process.exitCode = 1;
  });
}
