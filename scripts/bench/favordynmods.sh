#!/bin/bash
# M2 under cgroup1 with and without the cgroup2 `favordynmods` mount option,
# in one run (docs/benchmarks.md, "Restart under cgroup v1: favordynmods").
#
#   scripts/bench/favordynmods.sh        # as root, on a host with cgroup v1 memory and a cgroup2 mount
#
# Why: under cgroup v1 a restarted child joins its run's memory cgroup
# before exec, and every cgroup migration takes the host-wide
# cgroup_threadgroup_rwsem for writing, which waits for an RCU grace period
# (~10 ms here) unless the rwsem is kept in its "favour writers" mode. Any
# cgroup hierarchy mounted with `favordynmods` switches it for the whole
# host, including the v1 hierarchies. The cost is on the host's other side:
# every fork and exit takes the rwsem's slower reader path.
#
# The option is set on the cgroup2 mount (remount), the measurement runs,
# and the mount's previous state is restored on every path (trap). A host
# where favordynmods was already set is measured as it is and left so.
#
# Trap: on Linux 6.18 (this VM) clearing the option again removes it from
# /proc/mounts but the fast path stays until reboot. So the "plain" half is
# only a baseline on a boot where favordynmods was never set; after a first
# run, compare against an M2 from before it (supervisors.sh).
#
# Environment: RESULTS=DIR (default scripts/bench/results), MAMORI=PATH
# (default target/release/mamori), TRIALS=20.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
R=${RESULTS:-$HERE/results}
export MAMORI=${MAMORI:-$ROOT/target/release/mamori}
TRIALS=${TRIALS:-20}
mkdir -p "$R"

CG2=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/mounts)
if [ -z "$CG2" ]; then
  echo "no cgroup2 mount to set favordynmods on; nothing measured" >&2
  exit 1
fi
was_set() { awk -v m="$CG2" '$2 == m { print ($4 ~ /(^|,)favordynmods(,|$)/) ? 1 : 0 }' /proc/mounts; }
BEFORE=$(was_set)

# mount(8) keeps the options it finds in /proc/mounts on a remount, so the
# option is cleared with a bare remount through the system call.
remount() { # $1 = extra option string ("" clears favordynmods)
  python3 - "$CG2" "$1" <<'PY'
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.mount(None, sys.argv[1].encode(), None, 32, sys.argv[2].encode()) != 0:  # MS_REMOUNT
    sys.exit("remount %s: %s" % (sys.argv[1], os.strerror(ctypes.get_errno())))
PY
}
restore() {
  if [ "$BEFORE" = 0 ] && [ "$(was_set)" = 1 ]; then remount "" && echo "restored: $CG2 without favordynmods"; fi
}
trap restore EXIT
trap 'exit 130' INT TERM

m2() { # $1 = label
  python3 "$HERE/lib/reaper.py" python3 "$HERE/restart_latency.py" mamori-cgroup1 \
    --rounds 1 --trials "$TRIALS" --gap 1.5 --n 100 --out "$R/m2_mamori-cgroup1-$1.json"
  python3 "$HERE/cgroup_attach.py" --n 15 | tee "$R/cgroup_attach-$1.txt"
}

echo "=== $(date -u +%T) $CG2 favordynmods before: $BEFORE; mamori $("$MAMORI" --version)"
if [ "$BEFORE" = 0 ]; then
  m2 plain
  remount favordynmods || exit 1
fi
echo "=== $(date -u +%T) favordynmods now: $(was_set)"
m2 favordynmods
python3 - "$R" <<'PY'
import json, statistics, sys, os
for label in ('plain', 'favordynmods'):
    p = os.path.join(sys.argv[1], 'm2_mamori-cgroup1-%s.json' % label)
    if not os.path.exists(p):
        continue
    rows = [r for r in json.load(open(p))['trials'] if not r.get('discarded_busy') and r.get('exec_ms') is not None]
    f = sorted(r['fork_ms'] for r in rows); e = sorted(r['exec_ms'] for r in rows)
    p95 = lambda xs: xs[min(len(xs) - 1, int(round(0.95 * (len(xs) - 1))))]
    print('%-13s n=%d forked median %.1f ms p95 %.1f | exec\'d median %.1f ms p95 %.1f'
          % (label, len(rows), statistics.median(f), p95(f), statistics.median(e), p95(e)))
PY
