#!/usr/bin/env bash
# Leak benchmark: replays every memory trace of traces/leak/ through mamori's
# leak detector (default settings) and through the Prometheus rule
# `predict_linear(mem[1h], 4*3600) > limit`, with simulated time, and prints
# per trace the detection delay (share of the time to the limit) and the
# false alarms per 24 h, then the targets met. Results: docs/benchmarks.md ("Leak detection").
#
#   scripts/bench/leak.sh              # table for a terminal
#   scripts/bench/leak.sh --markdown   # the table of docs/benchmarks.md ("Leak detection")
#   scripts/bench/leak.sh --traces DIR # other traces (same traces.toml format)
#
# Rebuild the synthetic traces: python3 scripts/bench/gen_leak_traces.py
# Record a real one: scripts/bench/leak_record.sh (see its header).
set -euo pipefail
cd "$(dirname "$0")/../.."
exec cargo bench --quiet --bench leak_replay -- "$@"
