#!/usr/bin/env python3
"""Generates the synthetic memory traces of the leak benchmark (traces/leak/).

Deterministic: every trace has its own fixed seed, so running this again
rebuilds byte-identical files. Writes one CSV per trace (`t_seconds,rss_bytes`)
and rewrites traces/leak/traces.toml: the synthetic entries are regenerated,
entries recorded from real programs (source != "synthetic") are kept as they are.

A trace that leaks ends at the first sample at or above its limit (that is when
a memory limit would have killed the process); its `time_to_limit_s` is the
time from the start of the leak to that sample.

    python3 scripts/bench/gen_leak_traces.py [OUT_DIR] [--seed-offset N]

--seed-offset draws other instances of the same traces (for checking that the
detector is not tuned to one draw); the shipped ones use offset 0.
"""
import math
import os
import random
import sys
import tomllib

MIB = 1 << 20
HOUR = 3600


def gauss_noise(rng, sigma):
    """Allocator jitter: mostly small, sometimes a short burst of temporary buffers."""
    v = rng.gauss(0.0, sigma)
    if rng.random() < 0.01:
        v += rng.uniform(5, 40) * MIB  # a request that briefly allocates a lot
    return v


class Sawtooth:
    """A garbage-collected heap: memory climbs while garbage piles up, then a
    collection drops it back to the live size. Period and height vary per cycle."""

    def __init__(self, rng, period=(90, 240), height=(150 * MIB, 250 * MIB)):
        self.rng = rng
        self.period_range = period
        self.height_range = height
        self.start = 0.0
        self._new_cycle(0.0)

    def _new_cycle(self, t):
        self.start = t
        self.period = self.rng.uniform(*self.period_range)
        self.height = self.rng.uniform(*self.height_range)

    def at(self, t):
        while t >= self.start + self.period:
            self._new_cycle(self.start + self.period)
        return self.height * (t - self.start) / self.period


SEED_OFFSET = 0


def trace(name, seed, duration, dt, limit, fn, leak_start=None, description=""):
    rng = random.Random(seed + 1000 * SEED_OFFSET)
    rows = []
    t = 0.0
    hit = None
    while t <= duration:
        v = max(0.0, fn(rng, t))
        b = int(v)
        rows.append((int(round(t)), b))
        if leak_start is not None and b >= limit:
            hit = t
            break
        t += dt
    entry = {
        "name": name,
        "file": f"{name}.csv",
        "source": "synthetic",
        "description": description,
        "leak": leak_start is not None,
        "limit": limit,
        "sample_interval_s": dt,
    }
    if leak_start is not None:
        if hit is None:
            raise SystemExit(f"{name}: the leak never reaches the limit; make the trace longer")
        entry["leak_start_s"] = leak_start
        entry["time_to_limit_s"] = int(round(hit - leak_start))
    return entry, rows


def linear_leak(name, seed, rate_per_s, base, limit, flat, dt, sigma, label):
    def fn(rng, t):
        leak = max(0.0, t - flat) * rate_per_s
        return base + leak + gauss_noise(rng, sigma)

    ttl = (limit - base) / rate_per_s
    return trace(
        name, seed, flat + ttl * 1.2, dt, limit, fn, leak_start=flat,
        description=f"Linear leak of {label} on a noisy flat floor of {base // MIB} MiB "
        f"(noise sd {sigma / MIB:g} MiB plus 1 % bursts), starting after {flat // 60} min; "
        f"sampled every {dt:g} s.",
    )


def synthetic():
    out = []
    # Linear leaks, 1 MiB/h .. 10 MiB/s. Limits leave a headroom that makes the
    # slow ones take days and the fast ones a minute, as in production.
    out.append(linear_leak("linear-1mib-h", 101, MIB / HOUR, 180 * MIB, 336 * MIB,
                           2 * HOUR, 60, 1 * MIB, "1 MiB/h"))
    out.append(linear_leak("linear-10mib-h", 102, 10 * MIB / HOUR, 250 * MIB, 512 * MIB,
                           1 * HOUR, 10, 2 * MIB, "10 MiB/h"))
    out.append(linear_leak("linear-100mib-h", 103, 100 * MIB / HOUR, 300 * MIB, 1024 * MIB,
                           1 * HOUR, 5, 2 * MIB, "100 MiB/h"))
    out.append(linear_leak("linear-10mib-min", 104, 10 * MIB / 60, 300 * MIB, 1024 * MIB,
                           30 * 60, 1, 2 * MIB, "10 MiB/min"))
    out.append(linear_leak("linear-1mib-s", 105, 1 * MIB, 300 * MIB, 1024 * MIB,
                           20 * 60, 1, 2 * MIB, "1 MiB/s"))
    out.append(linear_leak("linear-10mib-s", 106, 10 * MIB, 300 * MIB, 1024 * MIB,
                           20 * 60, 1, 2 * MIB, "10 MiB/s"))

    # A GC sawtooth with no leak: 24 h.
    def saw(seed_floor):
        st = {}

        def fn(rng, t):
            if "s" not in st:
                st["s"] = Sawtooth(rng)
            return seed_floor + st["s"].at(t) + gauss_noise(rng, 2 * MIB)

        return fn

    out.append(trace(
        "gc-sawtooth", 201, 24 * HOUR, 10, 1024 * MIB, saw(400 * MIB),
        description="GC sawtooth, no leak: live size 400 MiB, climbs 150-250 MiB over "
        "90-240 s then drops back; 24 h sampled every 10 s.",
    ))

    # The same sawtooth hiding a slow leak of the live size: 20 MiB/h from 2 h on.
    st_leak = {}

    def saw_leak(rng, t):
        st = st_leak
        if "s" not in st:
            st["s"] = Sawtooth(rng)
        leak = max(0.0, t - 2 * HOUR) * 20 * MIB / HOUR
        return 400 * MIB + leak + st["s"].at(t) + gauss_noise(rng, 2 * MIB)

    out.append(trace(
        "sawtooth-slow-leak", 202, 30 * HOUR, 10, 1024 * MIB, saw_leak, leak_start=2 * HOUR,
        description="The GC sawtooth of gc-sawtooth (150-250 MiB every 90-240 s) on a live "
        "size that leaks 20 MiB/h from 2 h on; sampled every 10 s.",
    ))

    # Cache warm-up: fills fast after start and slows down as the hot set is in
    # (exponential saturation, time constant 15 min), then plateaus. 12 h.
    def cache(rng, t):
        return 150 * MIB + 350 * MIB * (1 - math.exp(-t / 900)) + gauss_noise(rng, 2 * MIB)

    out.append(trace(
        "cache-warmup", 301, 12 * HOUR, 5, 1024 * MIB, cache,
        description="Cache warm-up, no leak: 150 MiB at start, a cache fills 350 MiB with "
        "time constant 15 min (half full at 10 min, 95 % at 45 min), then plateaus; 12 h "
        "sampled every 5 s.",
    ))

    # A step up after a deploy (no restart): +120 MiB within 20 s at 6 h, flat after.
    def step(rng, t):
        s = min(1.0, max(0.0, (t - 6 * HOUR) / 20))
        return 300 * MIB + 120 * MIB * s + gauss_noise(rng, 2 * MIB)

    out.append(trace(
        "deploy-step", 401, 24 * HOUR, 10, 1024 * MIB, step,
        description="A step up after a deploy, no leak: flat 300 MiB, +120 MiB within 20 s "
        "at 6 h (new code loaded without a restart), flat after; 24 h sampled every 10 s.",
    ))

    # Noisy flat with a slow wander (an Ornstein-Uhlenbeck process: sd 6 MiB,
    # time constant 30 min) on top of allocator noise and bursts. 24 h.
    st_wander = {}

    def wander(rng, t):
        st = st_wander
        x = st.get("x", 0.0)
        theta, sd = 1 / 1800, 6 * MIB
        x += -theta * x * 10 + sd * math.sqrt(2 * theta * 10) * rng.gauss(0, 1)
        st["x"] = x
        return 350 * MIB + x + gauss_noise(rng, 3 * MIB)

    out.append(trace(
        "noisy-flat", 501, 24 * HOUR, 10, 1024 * MIB, wander,
        description="Noisy flat, no leak: 350 MiB with allocator noise (sd 3 MiB, 1 % bursts "
        "of 5-40 MiB) and a slow wander (sd 6 MiB, time constant 30 min); 24 h sampled "
        "every 10 s.",
    ))
    return out


def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int,)):
        return str(v)
    if isinstance(v, float):
        return repr(v) if not v.is_integer() else str(int(v))
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


KEYS = ["name", "file", "source", "description", "leak", "limit", "sample_interval_s",
        "leak_start_s", "time_to_limit_s", "note"]


def write_toml(path, entries):
    lines = [
        "# Memory traces of the leak benchmark (scripts/bench/leak.sh, tests/leak_traces.rs).",
        "# CSV files: `t_seconds,rss_bytes`, t from the start of the process.",
        "# leak_start_s / time_to_limit_s: when the leak starts, and how long from then until",
        "# the memory reached `limit` (bytes). Synthetic entries are rewritten by",
        "# scripts/bench/gen_leak_traces.py; the others were recorded from real programs.",
        "",
    ]
    for e in entries:
        lines.append("[[trace]]")
        for k in KEYS:
            if k in e:
                lines.append(f"{k} = {toml_value(e[k])}")
        for k in e:
            if k not in KEYS:
                lines.append(f"{k} = {toml_value(e[k])}")
        lines.append("")
    with open(path, "w") as f:
        f.write("\n".join(lines))


def main():
    global SEED_OFFSET
    args = sys.argv[1:]
    if "--seed-offset" in args:
        i = args.index("--seed-offset")
        SEED_OFFSET = int(args[i + 1])
        del args[i:i + 2]
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out_dir = args[0] if args else os.path.join(root, "traces", "leak")
    os.makedirs(out_dir, exist_ok=True)
    index = os.path.join(out_dir, "traces.toml")
    kept = []
    if os.path.exists(index):
        with open(index, "rb") as f:
            kept = [e for e in tomllib.load(f).get("trace", []) if e.get("source") != "synthetic"]
    entries = []
    for entry, rows in synthetic():
        with open(os.path.join(out_dir, entry["file"]), "w") as f:
            f.write("t_seconds,rss_bytes\n")
            f.writelines(f"{t},{b}\n" for t, b in rows)
        entries.append(entry)
        size = os.path.getsize(os.path.join(out_dir, entry["file"]))
        print(f"{entry['file']:28} {len(rows):6} rows {size / 1024:7.1f} KiB")
    write_toml(index, entries + kept)


if __name__ == "__main__":
    main()
