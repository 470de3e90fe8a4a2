#!/usr/bin/env bash
# npm run bench: installs and builds everything (scripts/setup.sh) and the
# bench (bench/run.ts, compiled to bench/dist/), then runs it in network
# namespaces: trafgen → LB (a daemon behind NFQUEUE, or the kernel alone with
# HMARK) → 4 targets.
# Needs root. By default it compares this project's daemon with the original
# nfqlb (NFQLB_ORIGINAL, default ../shared/reference/nfqlb-1.2.0/nfqlb; when
# absent, ours only, said in one line) and the floor (../shared/reference/nullq,
# built into /tmp; BENCH_FLOOR=off leaves it out) in one run, with steady
# pacing and trafgen's bursts, Meridio's own flowlb line, and the latency each
# daemon adds (bench/probe.py). NFQLB_BIN=/path/to/nfqlb puts another nfqlb-compatible
# binary on "our" side; BENCH_QUICK=1 is a short run (about 4 min; the full
# run about 27 min). This project's daemon runs in each variant of
# BENCH_WORKERS (default "default,1,2": the defaults, --workers=1 and 2; a variant
# whose option the daemon lacks is skipped with one line) or of
# --ours-args="--opt=v ..." (repeatable). Arguments go to bench/run.ts
# (--ours-args, --detail, --sweep, --profile, --queue-memory); see
# docs/performance.md.
# Everything it creates (namespaces, processes, /dev/shm tables) is removed on
# exit, also on failure or interrupt.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/testbed-run.sh
testbed_run bench

bash scripts/setup.sh
# The bench from a clean output directory, type-checked against src/ and testbed/.
rm -rf bench/dist
npx --no-install tsc -p bench

node bench/dist/bench/run.js "$@"
