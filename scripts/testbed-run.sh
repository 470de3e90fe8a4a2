# Sourced by demo.sh, bench.sh and soak.sh: what a run in the test bed's
# network namespaces needs around it. Not a script of its own.
#
# testbed_run KIND: refuses to go on without root; names the run's namespaces
# nfqlbts-<pid>-KIND-* and tables tshm-<pid>-KIND-* (NFQLB_TESTBED_PREFIX);
# on exit, also on failure or interrupt, removes what a killed run may have
# left: those namespaces and their processes, those tables, and nfqlb-trace
# and ftshm when they did not exist before the run.
testbed_run() {
  local kind=$1
  if [ "$(id -u)" -ne 0 ]; then
    echo "${kind}: needs root (network namespaces, NFQUEUE); run: sudo npm run ${kind}" >&2
    exit 1
  fi
  export NFQLB_TESTBED_PREFIX="nfqlbts-$$-${kind}-"
  TESTBED_TABLES="tshm-$$-${kind}-"
  TESTBED_EXISTED=()
  local f
  for f in nfqlb-trace ftshm; do [ -e "/dev/shm/$f" ] && TESTBED_EXISTED+=("$f"); done
  trap testbed_cleanup EXIT
  trap 'exit 130' INT TERM
}

testbed_cleanup() {
  local ns f
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^${NFQLB_TESTBED_PREFIX}" || true); do
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
  done
  rm -f "/dev/shm/${TESTBED_TABLES}"*
  for f in nfqlb-trace ftshm; do
    [[ " ${TESTBED_EXISTED[*]:-} " == *" $f "* ]] || rm -f "/dev/shm/$f"
  done
}
