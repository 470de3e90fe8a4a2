#!/usr/bin/env bash
# npm run soak [-- --minutes=N ...]: the long run of traffic, configuration
# churn and hostile control clients against one daemon (bench/soak.ts, compiled
# to bench/dist/; see docs/reliability.md). Needs root. Builds the TypeScript
# (src, testbed and bench) first; the addon must be built (scripts/setup.sh).
# Everything it creates (namespaces, processes, /dev/shm tables) is removed on
# exit, also on failure or interrupt.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/testbed-run.sh
testbed_run soak

if [ ! -d node_modules ] || [ ! -f build/Release/nfqlb_native.node ]; then
  bash scripts/setup.sh
else
  npx tsc -p . && npx tsc -p testbed
fi
rm -rf bench/dist
npx --no-install tsc -p bench

node bench/dist/bench/soak.js "$@"
