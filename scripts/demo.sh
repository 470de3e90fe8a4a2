#!/usr/bin/env bash
# npm run demo: installs and builds everything (scripts/setup.sh), then runs
# the seed's traffic path in network namespaces with the nfqlb daemon,
# configured with Meridio's commands (scripts/demo.js, topology code shared
# with the e2e tests in testbed/testbed.ts). Needs root. Everything it creates
# (namespaces, processes, /dev/shm tables) is removed on exit, also on failure.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/testbed-run.sh
testbed_run demo

bash scripts/setup.sh

node scripts/demo.js
