#!/usr/bin/env bash
# Records the real traces of the leak benchmark with mamori's own sampler:
# runs the programs of scripts/bench/leak_programs/ as services of a scratch
# agent (1 s samples, memory limits enforced, no restarts), waits, then exports
# each unit's samples with `mamori samples UNIT --csv` into
# traces/leak/UNIT.csv as `t_seconds,rss_bytes` (t from the first sample, which
# is taken within a second of the process start).
#
#   scripts/bench/leak_record.sh            # 15 minutes of real time
#   MINUTES=8 scripts/bench/leak_record.sh  # shorter
#   UNITS="java-sawtooth java-leak" scripts/bench/leak_record.sh  # only these
#
# The leaking programs start leaking 5.5 min (CPython) or 5 min (Java) after
# they start, once mamori's 5 min warm-up is over, and are killed at their
# limit some minutes later (compressed time: a real leak takes hours to
# days). Their traces.toml entries (leak_start_s, time_to_limit_s) are
# printed at the end. Needs python3 and OpenJDK 17 (javac, java).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
minutes=${MINUTES:-15}
units=${UNITS:-py-cache-clear py-leak java-sawtooth java-leak}
py_leak_after=330
java_leak_after=300
cargo build --quiet --release --bin mamori
work=$(mktemp -d)
agent=""
trap '[ -n "$agent" ] && kill "$agent" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
javac -d "$work" scripts/bench/leak_programs/JavaHeap.java

cat > "$work/leak.toml" <<EOF
[agent]
listen = "127.0.0.1:7897"
data_dir = "$work/data"
sample_interval = "1s"
sample_retention = "2h"
EOF
# service NAME LIMIT ARGV...: a service in the config, if NAME is in $units.
service() {
  local name=$1 limit=$2
  shift 2
  case " $units " in *" $name "*) ;; *) return 0 ;; esac
  local argv
  argv=$(printf '"%s", ' "$@")
  printf '\n[[service]]\nname = "%s"\ncommand = [%s]\nlimits = { memory = "%s" }\nrestart = "never"\n' \
    "$name" "${argv%, }" "$limit" >> "$work/leak.toml"
}
py=(python3 "$root/scripts/bench/leak_programs/py_cache.py")
java=(java -XX:+UseG1GC -Xmx1g -XX:MinHeapFreeRatio=5 -XX:MaxHeapFreeRatio=10
      -XX:G1PeriodicGCInterval=5000 -cp "$work" JavaHeap)
service py-cache-clear 384MiB "${py[@]}" --seed 1
service py-leak 384MiB "${py[@]}" --seed 2 --leak-after "$py_leak_after" --leak-mib-per-s 0.5
service java-sawtooth 768MiB "${java[@]}"
service java-leak 768MiB "${java[@]}" "$java_leak_after" 1000

./target/release/mamori -c "$work/leak.toml" agent > "$work/agent.log" 2>&1 &
agent=$!
echo "leak_record: recording $units for $minutes min"
sleep $((minutes * 60))
for unit in $units; do
  case $unit in py-*) leak_after=$py_leak_after ;; *) leak_after=$java_leak_after ;; esac
  ./target/release/mamori -c "$work/leak.toml" samples "$unit" --since 2h --csv > "$work/$unit.raw.csv"
  ./target/release/mamori -c "$work/leak.toml" events --unit "$unit" --limit 20 | tail -n 3 | sed "s/^/$unit: /"
  python3 - "$work/$unit.raw.csv" "traces/leak/$unit.csv" "$leak_after" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
t0 = int(rows[0]["ts_ms"])
with open(sys.argv[2], "w") as f:
    f.write("t_seconds,rss_bytes\n")
    for r in rows:
        f.write(f"{(int(r['ts_ms']) - t0) / 1000:.3f},{r['rss_bytes']}\n")
last = (int(rows[-1]["ts_ms"]) - t0) / 1000
print(f"  {sys.argv[2]}: {len(rows)} samples over {last:.0f} s; if it leaked and was killed: "
      f"leak_start_s = {sys.argv[3]}, time_to_limit_s = {last - float(sys.argv[3]):.0f}")
PY
done
