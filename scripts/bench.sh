#!/usr/bin/env bash
# npm run bench: installs and builds everything (scripts/setup.sh), then runs
# the performance bench (bench/run.js) in network namespaces: trafgen →
# LB (a daemon behind NFQUEUE, or the kernel alone with HMARK) → 4 targets.
# Needs root. By default it compares this project's daemon with the original
# nfqlb (NFQLB_ORIGINAL, default ../shared/reference/nfqlb-1.2.0/nfqlb; when
# absent, ours only, said in one line) in one run, with steady pacing and
# trafgen's bursts. NFQLB_BIN=/path/to/nfqlb puts another nfqlb-compatible
# binary on "our" side; BENCH_QUICK=1 is a short run. Arguments go to
# bench/run.js (--detail, --sweep, --profile, --queue-memory); see
# docs/performance.md.
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
