#!/bin/bash
# Alternates mamori binaries in M1 (footprint.py, 100 children, 30 s windows) and
# prints RSS, anonymous RSS and CPU per trial: an A/B for one change on one VM.
# Run under scripts/bench/lib/reaper.py so nothing outlives it.
# usage: ab_footprint.sh KIND ROUNDS BIN...  (KIND: mamori-cgroup1, mamori-poll, …)
kind=$1; rounds=$2; shift 2
for r in $(seq 1 $rounds); do
  for b in "$@"; do
    MAMORI=$b python3 "$(dirname "$0")"/footprint.py $kind --trials 1 --settle 5 --window 30 2>/dev/null | python3 -c "
import sys, json
for l in sys.stdin:
    r = json.loads(l); print('$(basename $b)', r['kind'], 'rss', round(r['rss_kb_end']/1024,1), 'anon', round(r['rss_anon_kb_end']/1024,1), 'cpu/60s', round(r['cpu_s']*2,3), 'busy', r['machine_busy_frac'])"
  done
done
