#!/usr/bin/env bash
# Installs everything nfqlb-ts needs on a Debian machine, as root, and builds it:
# system packages (headers for the addon, the netfilter and namespace tools the
# tests and the demo use), npm packages from the lockfile, the addon and the
# TypeScript. Safe to run again: it skips what is already in place.
# Build chatter (apt, npm, node-gyp, tsc) goes to a log file that is shown only
# when a step fails; a good run prints one line.
set -euo pipefail
cd "$(dirname "$0")/.."

log=$(mktemp "${TMPDIR:-/tmp}/nfqlb-setup-XXXXXX.log")
# quietly <what> <command...>: runs the command with its output in the log; on
# failure prints the end of the log and where the whole of it is, and stops.
quietly() {
  local what=$1 from
  shift
  echo "+ $*" >>"$log"
  from=$(($(wc -l <"$log") + 1))
  if ! "$@" >>"$log" 2>&1; then
    echo "setup: $what failed; the end of its output (all of it: $log):" >&2
    tail -n "+$from" "$log" | tail -n 40 >&2
    echo "setup: $what failed (log: $log)" >&2
    exit 1
  fi
}

# prometheus: promtool and the server, for the metrics lint, the alert rule
# tests and the dashboard checks (test/unit/deploy.test.ts; they skip without it).
packages=(libnetfilter-queue-dev libmnl-dev iptables nftables iproute2 tcpdump socat netsniff-ng iperf procps strace python3 make g++ prometheus)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing Debian packages: ${missing[*]}; run this script as root (or apt-get install them)" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  quietly "apt-get update" apt-get update -qq
  quietly "installing ${missing[*]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  # Debian's package enables a Prometheus service on :9090; the tests run their own, in a namespace.
  # Only one this run installed is turned off: an existing Prometheus is left alone.
  # systemctl can answer is-enabled on a machine not booted with systemd (a container, a VM with
  # another init), but cannot stop anything there: then the service is stopped the SysV way if it runs.
  if [[ " ${missing[*]} " == *" prometheus "* ]]; then
    if [ -d /run/systemd/system ] && systemctl is-enabled prometheus >/dev/null 2>&1; then
      quietly "disabling the prometheus service the package started" systemctl disable --now prometheus
    elif pgrep -x prometheus >/dev/null && command -v service >/dev/null; then
      quietly "stopping the prometheus service the package started" service prometheus stop
    fi
  fi
fi

# npm ci when node_modules is missing or older than the lockfile.
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  quietly "npm ci (npm packages and the C++ addon)" npm ci --no-audit --no-fund
else
  quietly "building the C++ addon (node-gyp)" npx --no-install node-gyp rebuild
fi
# From clean output directories, so nothing stale (a moved module, the old
# test bed) is left in dist/ to be packed or copied into an image.
rm -rf dist testbed/dist
quietly "compiling src/ (tsc)" npx --no-install tsc -p .
quietly "compiling testbed/ (tsc)" npx --no-install tsc -p testbed
rm -f "$log"
echo "setup: built nfqlb-ts $(node -p 'require("./package.json").version') (bin/nfqlb)"
