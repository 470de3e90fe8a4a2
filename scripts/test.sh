#!/usr/bin/env bash
# The test command of the README: installs what is missing, builds, and runs
# every test (unit, parity against the nfqlb captures, addon, and end-to-end in
# network namespaces, which need root).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec npx --no-install jest --runInBand "$@"
