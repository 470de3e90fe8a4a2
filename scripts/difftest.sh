#!/usr/bin/env bash
# npm run difftest -- [--count=N] [--seed=S] [--report=FILE]: the differential
# test against the original nfqlb (test/interop/difftest.ts) with other numbers
# than CI's. The original is $NFQLB_ORIGINAL (default ../shared/reference/nfqlb-1.2.0/nfqlb).
set -euo pipefail
cd "$(dirname "$0")/.."
for arg in "$@"; do
  case "$arg" in
    --count=*) export DIFFTEST_COUNT="${arg#--count=}" ;;
    --seed=*) export DIFFTEST_SEED="${arg#--seed=}" ;;
    --report=*) export DIFFTEST_REPORT="${arg#--report=}" ;;
    *) echo "difftest: unknown argument '$arg' (use --count=N --seed=S --report=FILE)" >&2; exit 2 ;;
  esac
done
exec npx --no-install jest --runInBand test/interop/difftest.test.ts
