#!/usr/bin/env bash
# npm run bench: installs and builds everything (scripts/setup.sh), then runs
# the performance bench (bench/run.js) in network namespaces: trafgen →
# LB (the daemon behind NFQUEUE, or the kernel alone with HMARK) → 4 targets.
# Needs root. Arguments go to bench/run.js (--sweep, --profile); see
# docs/performance.md. NFQLB_BIN=/path/to/nfqlb measures another
# nfqlb-compatible binary; BENCH_QUICK=1 is a ~2 minute run.
# Everything it creates (namespaces, processes, /dev/shm tables) is removed on
# exit, also on failure or interrupt.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "bench: needs root (network namespaces, NFQUEUE); run: sudo npm run bench" >&2
  exit 1
fi

bash scripts/setup.sh

# Names the bench uses: namespaces nfqlbts-<pid>-bench-*, tables tshm-<pid>-bench-*.
export NFQLB_TESTBED_PREFIX="nfqlbts-$$-bench-"
existed=()
for f in nfqlb-trace ftshm; do [ -e "/dev/shm/$f" ] && existed+=("$f"); done

cleanup() {
  # run.js removes what it made; this catches what a killed run left.
  local ns f
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^${NFQLB_TESTBED_PREFIX}" || true); do
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
  done
  rm -f /dev/shm/tshm-$$-bench-*
  for f in nfqlb-trace ftshm; do
    [[ " ${existed[*]:-} " == *" $f "* ]] || rm -f "/dev/shm/$f"
  done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

node bench/run.js "$@"
