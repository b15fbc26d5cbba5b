#!/bin/bash
# Side-by-side supervisor benchmark (issue 2): mamori vs supervisord, monit, pm2,
# on this machine, in one sequential run (~22 min). Prints the tables at the end.
#
#   scripts/bench/supervisors.sh            # as root (apt-get, npm -g, cgroup v1)
#
# Environment (all optional):
#   STEPS="m1 m2 m3"       which measurements
#   RESULTS=DIR            where the JSON, logs and tables.md go (default scripts/bench/results)
#   MAMORI=PATH            a mamori binary to measure (default: cargo build --release here)
#   MAMORI_COMMIT=SHA      what MAMORI was built from (recorded in versions.txt)
#   M1_TRIALS_MAMORI=2 M1_TRIALS_PEER=1 M1_EXTRA="mamori-cgroup1-1s mamori-poll-1s"
#   M2_TRIALS=20 M2_ROUNDS=1   M3_TRIALS=5   M3_PREFILL=150
#   BENCH_RUN=DIR          runtime state (default /tmp/mamori-bench-run)
#   QUIET_WAIT=300         before each step, wait up to this long for the machine to be idle
#
# Everything runs under lib/reaper.py (a child subreaper: PID 1 on these VMs
# reaps orphans late). Every daemon and child is stopped by PID in a finally.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PY=${PY:-python3}
if [ -z "${BENCH_UNDER_REAPER:-}" ]; then
  export BENCH_UNDER_REAPER=1
  exec "$PY" "$HERE/lib/reaper.py" bash "$0" "$@"
fi

R=${RESULTS:-$HERE/results}
export BENCH_RUN=${BENCH_RUN:-/tmp/mamori-bench-run}
STEPS=${STEPS:-m1 m2 m3}
M1_TRIALS_MAMORI=${M1_TRIALS_MAMORI:-2}
M1_TRIALS_PEER=${M1_TRIALS_PEER:-1}
M1_EXTRA=${M1_EXTRA-mamori-cgroup1-1s mamori-poll-1s}
M2_TRIALS=${M2_TRIALS:-20}
M2_ROUNDS=${M2_ROUNDS:-1}
M3_TRIALS=${M3_TRIALS:-5}
M3_PREFILL=${M3_PREFILL:-150}
mkdir -p "$R" "$BENCH_RUN"

child=
on_sig() {
  echo "interrupted: stopping $child" >&2
  [ -n "$child" ] && kill -TERM "$child" 2>/dev/null && wait "$child" 2>/dev/null
  exit 130
}
trap on_sig TERM INT
# Runs one step in the background and waits, so a TERM reaches it (its finally stops its daemons).
run() { "$PY" "$HERE/lib/quiet.py" --max "${QUIET_WAIT:-300}"; echo "+ $(date -u +%T) loadavg $(cut -d" " -f1-3 /proc/loadavg): $*"; "$@" & child=$!; wait "$child"; local rc=$?; child=; [ $rc -ne 0 ] && echo "step failed (rc=$rc): $*"; return 0; }

echo "=== peers $(date -u +%T)"
need=()
command -v supervisord >/dev/null || need+=(supervisor)
command -v monit >/dev/null || need+=(monit)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
  # The packages' init scripts may have started system-wide daemons (when no
  # policy-rc.d forbids it); they would share the CPUs with the measurements.
  for p in $(pgrep -x supervisord) $(pgrep -x monit); do
    [ "$(ps -o ppid= -p "$p" | tr -d ' ')" = 1 ] && echo "note: a system $(ps -o comm= -p "$p") (pid $p) is running; stop it for clean numbers"
  done
fi
HAVE_PM2=1
if ! command -v pm2 >/dev/null; then
  npm install -g pm2 >/dev/null 2>&1 || { echo "pm2 did not install; pm2 rows skipped"; HAVE_PM2=0; }
fi

echo "=== mamori $(date -u +%T)"
if [ -z "${MAMORI:-}" ]; then
  (cd "$ROOT" && cargo build --release) || { echo "cargo build failed"; exit 1; }
  MAMORI_COMMIT=${MAMORI_COMMIT:-$(git -C "$ROOT" rev-parse --short HEAD)$( [ -n "$(git -C "$ROOT" status --porcelain -- src Cargo.toml Cargo.lock)" ] && echo "+uncommitted")}
  MAMORI=$ROOT/target/release/mamori
fi
# A private copy: a rebuild during the run must not swap the binary under us.
mkdir -p "$BENCH_RUN/bin"
cp "$MAMORI" "$BENCH_RUN/bin/mamori"
export MAMORI="$BENCH_RUN/bin/mamori"
{ "$HERE/versions.sh" "$MAMORI"; echo "mamori built from: ${MAMORI_COMMIT:-unknown}"; } | tee "$R/versions.txt"

kinds_m1="supervisord monit"; kinds_m2="supervisord monit"; kinds_m3="monit"
if [ $HAVE_PM2 = 1 ]; then kinds_m1+=" pm2"; kinds_m2+=" pm2"; kinds_m3+=" pm2 pm2-wi1000"; fi

T0=$(date +%s)
for s in $STEPS; do
  echo "=== $s $(date -u +%T)"
  case $s in
    m1)
      for k in mamori-cgroup1 mamori-poll; do
        run "$PY" "$HERE/footprint.py" $k --trials "$M1_TRIALS_MAMORI" --out "$R/m1_$k.json"; done
      for k in $kinds_m1; do
        run "$PY" "$HERE/footprint.py" $k --trials "$M1_TRIALS_PEER" --out "$R/m1_$k.json"; done
      for k in $M1_EXTRA; do
        run "$PY" "$HERE/footprint.py" $k --trials 1 --out "$R/m1_$k.json"; done ;;
    m2)
      for k in mamori-cgroup1 mamori-poll $kinds_m2; do
        run "$PY" "$HERE/restart_latency.py" $k --rounds "$M2_ROUNDS" --trials "$M2_TRIALS" --out "$R/m2_$k.json"; done ;;
    m3)
      for k in mamori-cgroup1 mamori-poll $kinds_m3; do
        run "$PY" "$HERE/memlimit.py" $k --trials "$M3_TRIALS" --prefill "$M3_PREFILL" --out "$R/m3_$k.json"; done ;;
  esac
done
echo "=== done $(date -u +%T) ($(( $(date +%s) - T0 )) s)"
"$PY" "$HERE/summarize.py" "$R" > "$R/tables.md"
cat "$R/tables.md"
