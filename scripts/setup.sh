#!/usr/bin/env bash
# Installs everything nfqlb-ts needs on a Debian machine, as root, and builds it:
# system packages (headers for the addon, the netfilter and namespace tools the
# tests and the demo use), npm packages from the lockfile, the addon and the
# TypeScript. Safe to run again: it skips what is already in place.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(libnetfilter-queue-dev libmnl-dev iptables nftables iproute2 tcpdump socat netsniff-ng iperf procps python3 make g++)
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
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# npm ci when node_modules is missing or older than the lockfile.
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
else
  npx --no-install node-gyp rebuild >/dev/null
fi
npx --no-install tsc -p .
npx --no-install tsc -p testbed
echo "setup: built ($(node -p 'require("./package.json").version'))"
