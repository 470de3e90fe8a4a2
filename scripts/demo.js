#!/usr/bin/env node
'use strict';
/**
 * The demo run by scripts/demo.sh (root): the seed's traffic path in network
 * namespaces (testbed/testbed.ts, the same code the e2e tests use), configured
 * with Meridio's commands, with TCP traffic from a gateway to both VIPs and
 * the distribution over the targets printed the way mconnect prints it.
 * Everything it creates is removed when it ends, also on failure or Ctrl-C.
 */
const path = require('node:path');

let tb;
try {
  tb = require(path.join(__dirname, '..', 'testbed', 'dist', 'testbed', 'testbed.js'));
} catch (err) {
  process.stderr.write(`demo: dist/ is not built (${err.message.split('\n')[0]}); run bash scripts/setup.sh\n`);
  process.exit(1);
}

const CONNECTIONS = Number(process.env.NFQLB_DEMO_CONNECTIONS || 200);
const say = (text = '') => process.stdout.write(`${text}\n`);
const indent = (text) => text.split('\n').map((l) => `    ${l}`).join('\n');
const section = (title) => say(`\n=== ${title} ===`);

function traffic(bed, label) {
  const names = bed.targets.map((t) => t.name);
  const all = {};
  for (const [family, vip] of [['IPv4', bed.vip4], ['IPv6', bed.vip6]]) {
    const t0 = Date.now();
    const results = bed.connect(vip, tb.ports(20000, CONNECTIONS));
    say(`${label}: ${CONNECTIONS} TCP connections from the gateway to ${vip}:${bed.port} (${family}), ${Date.now() - t0} ms`);
    say(indent(tb.formatDistribution(results, names)));
    all[family] = tb.targetsByPort(results);
  }
  return all;
}

/** How many source ports kept their target; ports that were on `gone` are counted apart. */
function moved(before, after, gone) {
  const lines = [];
  for (const family of Object.keys(before)) {
    let same = 0;
    let others = 0;
    let fromGone = 0;
    let backOnGone = 0;
    for (const [port, name] of before[family]) {
      if (name === gone) {
        fromGone++;
        if (after[family].get(port) === gone) backOnGone++;
        continue;
      }
      others++;
      if (after[family].get(port) === name) same++;
    }
    lines.push(
      `${family}: ${same} of the ${others} connections that were not on ${gone} reach the same target as before` +
        (backOnGone > 0 ? `; ${backOnGone} of the ${fromGone} that were on ${gone} are back on it` : `; the ${fromGone} on ${gone} moved to the others`),
    );
  }
  return lines.join('\n');
}

async function demo() {
  section('Topology (network namespaces)');
  const bed = tb.Testbed.build({ echo: (line) => say(indent(line)) });
  say(`  gw  client ${bed.client4}, ${bed.client6}; routes the VIPs ${bed.vip4} and ${bed.vip6} to lb`);
  say('  lb  NFQUEUE --queue-balance 0:3 for both VIPs; per target: ip rule fwmark F table F, default via the target');
  for (const t of bed.targets) {
    say(`  ${t.name}  ${t.addr4}, ${t.addr6}; VIPs on lo; TCP :${bed.port} answers "${t.name}"; fwmark ${t.fwmark}`);
  }
  say(`  (namespaces ${bed.gw.replace(/\d+-gw$/, '*')})`);
  await bed.startServers();

  section("Configure the stream with Meridio's commands (run in the lb namespace)");
  const shm = tb.uniqueShmName('stream-a');
  bed.initTable(shm);

  section('Start the load balancer as Meridio does');
  await bed.startDaemon();
  const flow = `${shm}-flow-a`;
  bed.setFlow(flow, shm);
  bed.nfqlb(['show', `--shm=${shm}`]);

  section('Traffic');
  const before = traffic(bed, 'All 4 targets active');

  section('Ping the VIPs (--promiscuous_ping: echo requests follow the flow on addresses alone)');
  for (const vip of [bed.vip4, bed.vip6]) {
    const p = bed.ping(vip, 3);
    say(`    ping ${vip}: ${p.sent} sent, ${p.received} received`);
  }

  section('Deactivate target t4 (Meridio: the target left)');
  const t4 = bed.targets[3];
  bed.deactivate(shm, t4);
  bed.nfqlb(['show', `--shm=${shm}`]);
  const after = traffic(bed, 't4 deactivated');
  say(indent(moved(before, after, t4.name)));

  section('Activate t4 again');
  bed.activate(shm, t4);
  const back = traffic(bed, 't4 back');
  say(indent(moved(before, back, t4.name)));

  section('Flows, with their match counters');
  bed.nfqlb(['flow-list']);

  section('Stop the load balancer (SIGTERM)');
  const st = await bed.stopDaemon();
  say(`    exit ${st && st.code} after ${st && st.ms} ms`);
}

let cleaning = null;
function cleanup() {
  if (cleaning === null) {
    cleaning = (async () => {
      section('Tear down');
      await tb.cleanupAll();
      say('    namespaces, processes and shm tables removed');
    })();
  }
  return cleaning;
}

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    cleanup().finally(() => process.exit(130));
  });
}

demo()
  .then(
    () => 0,
    (err) => {
      process.stderr.write(`demo failed: ${err && err.stack ? err.stack : err}\n`);
      return 1;
    },
  )
  .then(async (code) => {
    await cleanup();
    process.exit(code);
  });
