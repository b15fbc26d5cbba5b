#!/usr/bin/env bash
# Records the real traces of the leak benchmark with mamori's own sampler:
# runs the four programs of scripts/bench/leak_programs/ as services of a
# scratch agent (1 s samples, memory limits enforced, no restarts), waits,
# then exports each unit's samples with `mamori samples UNIT --csv` into
# traces/leak/UNIT.csv as `t_seconds,rss_bytes` (t from the first sample, which
# is taken within a second of the process start).
#
#   scripts/bench/leak_record.sh            # about 15 minutes of real time
#   MINUTES=8 scripts/bench/leak_record.sh  # shorter
#
# The leaking programs start leaking 5.5 min after they start (after mamori's
# 5 min warm-up) and are killed at their limit a few minutes later; their
# traces.toml entries (leak_start_s, time_to_limit_s) are printed at the end.
# Needs python3 and OpenJDK 17 (javac/java).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
minutes=${MINUTES:-15}
leak_after=330
cargo build --quiet --release --bin mamori
work=$(mktemp -d)
trap 'kill "$agent" 2>/dev/null || true; wait "$agent" 2>/dev/null || true; rm -rf "$work"' EXIT
javac -d "$work" scripts/bench/leak_programs/JavaHeap.java
java_opts='"-XX:+UseG1GC", "-Xmx1g", "-XX:MinHeapFreeRatio=5", "-XX:MaxHeapFreeRatio=10", "-XX:G1PeriodicGCInterval=5000"'
cat > "$work/leak.toml" <<EOF
[agent]
listen = "127.0.0.1:7897"
data_dir = "$work/data"
sample_interval = "1s"
sample_retention = "2h"

[[service]]
name = "py-cache-clear"
command = ["python3", "$root/scripts/bench/leak_programs/py_cache.py", "--seed", "1"]
limits = { memory = "384MiB" }
restart = "never"

[[service]]
name = "py-leak"
command = ["python3", "$root/scripts/bench/leak_programs/py_cache.py", "--seed", "2", "--leak-after", "$leak_after", "--leak-mib-per-s", "0.5"]
limits = { memory = "384MiB" }
restart = "never"

[[service]]
name = "java-sawtooth"
command = ["java", $java_opts, "-cp", "$work", "JavaHeap"]
limits = { memory = "768MiB" }
restart = "never"

[[service]]
name = "java-leak"
command = ["java", $java_opts, "-cp", "$work", "JavaHeap", "$leak_after", "1000"]
limits = { memory = "768MiB" }
restart = "never"
EOF
./target/release/mamori -c "$work/leak.toml" agent > "$work/agent.log" 2>&1 &
agent=$!
echo "leak_record: recording for $minutes min (agent log: $work/agent.log)"
sleep $((minutes * 60))
for unit in py-cache-clear py-leak java-sawtooth java-leak; do
  ./target/release/mamori -c "$work/leak.toml" samples "$unit" --since 2h --csv > "$work/$unit.raw.csv"
  ./target/release/mamori -c "$work/leak.toml" events --unit "$unit" --limit 20 | tail -n 4 | sed "s/^/$unit: /"
  python3 - "$work/$unit.raw.csv" "traces/leak/$unit.csv" "$leak_after" <<'EOF'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
t0 = int(rows[0]["ts_ms"])
with open(sys.argv[2], "w") as f:
    f.write("t_seconds,rss_bytes\n")
    for r in rows:
        f.write(f"{(int(r['ts_ms']) - t0) / 1000:.3f},{r['rss_bytes']}\n")
last = (int(rows[-1]["ts_ms"]) - t0) / 1000
print(f"  {sys.argv[2]}: {len(rows)} samples over {last:.0f} s; "
      f"leak_start_s = {sys.argv[3]}, time_to_limit_s = {last - float(sys.argv[3]):.0f} (if it leaks and was killed)")
EOF
done
