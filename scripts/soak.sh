#!/usr/bin/env bash
# npm run soak [-- --minutes=N ...]: the long run of traffic, configuration
# churn and hostile control clients against one daemon (bench/soak.js; see
# docs/reliability.md). Needs root. Builds the TypeScript (src and testbed)
# first; the addon must be built (scripts/setup.sh).
# Everything it creates (namespaces, processes, /dev/shm tables) is removed on
# exit, also on failure or interrupt.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "soak: needs root (network namespaces, NFQUEUE); run: sudo npm run soak" >&2
  exit 1
fi
if [ ! -d node_modules ] || [ ! -f build/Release/nfqlb_native.node ]; then
  bash scripts/setup.sh
else
  npx tsc -p . && npx tsc -p testbed
fi

# Names the soak uses: namespaces nfqlbts-<pid>-soak-*, tables tshm-<pid>-soak-*.
export NFQLB_TESTBED_PREFIX="nfqlbts-$$-soak-"
cleanup() {
  # soak.js removes what it made; this catches what a killed run left.
  local ns
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^${NFQLB_TESTBED_PREFIX}" || true); do
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
  done
  rm -f /dev/shm/tshm-$$-soak-*
}
trap cleanup EXIT
trap 'exit 130' INT TERM

node bench/soak.js "$@"
