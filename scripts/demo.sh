#!/usr/bin/env bash
# npm run demo: installs and builds everything (scripts/setup.sh), then runs
# the seed's traffic path in network namespaces with the nfqlb daemon,
# configured with Meridio's commands (scripts/demo.js, topology code shared
# with the e2e tests in testbed/testbed.ts). Needs root. Everything it creates
# (namespaces, processes, /dev/shm tables) is removed on exit, also on failure.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "demo: needs root (network namespaces, NFQUEUE); run: sudo npm run demo" >&2
  exit 1
fi

bash scripts/setup.sh

# Names the demo uses: namespaces nfqlbts-<pid>-demo-*, tables tshm-<pid>-demo-*.
export NFQLB_TESTBED_PREFIX="nfqlbts-$$-demo-"
trace_existed=0
[ -e /dev/shm/nfqlb-trace ] && trace_existed=1

cleanup() {
  # demo.js removes what it made; this catches what a killed demo left.
  local ns
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^${NFQLB_TESTBED_PREFIX}" || true); do
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
  done
  rm -f /dev/shm/tshm-$$-demo-*
  if [ "$trace_existed" -eq 0 ]; then rm -f /dev/shm/nfqlb-trace; fi
}
trap cleanup EXIT

node scripts/demo.js
