#!/usr/bin/env python3
"""A CPython service for the leak benchmark's real traces.

Every 100 ms it "serves" --requests requests and caches their results
(values of 190-270 KiB, so ~2.2 MiB/s per request per tick); when the cache
passes a size drawn between --cache-mib MIN MAX it is cleared, as a periodic
cache purge would (so RSS saw-tooths: CPython hands these big blocks back to
the OS). No leak, unless:

    py_cache.py --leak-after SECONDS --leak-mib-per-s RATE

then from SECONDS on it also keeps 64 KiB of every request forever (a request
log nobody trims), RATE MiB per second. Compressed time: a real leak of this
kind takes hours; this one reaches a 512 MiB limit within minutes.
"""
import argparse
import os
import random
import signal
import time

for s in (signal.SIGINT, signal.SIGTERM):
    signal.signal(s, lambda *_: os._exit(0))

p = argparse.ArgumentParser()
p.add_argument("--leak-after", type=float, default=None)
p.add_argument("--leak-mib-per-s", type=float, default=0.0)
p.add_argument("--seed", type=int, default=1)
p.add_argument("--requests", type=int, default=8)
p.add_argument("--cache-mib", type=float, nargs=2, default=(40.0, 80.0))
a = p.parse_args()

rng = random.Random(a.seed)
cache = {}
cached = 0
cap = rng.uniform(*a.cache_mib) * (1 << 20)
kept = []  # the leak
t0 = time.monotonic()
tick = 0
leak_carry = 0.0
while True:
    tick += 1
    for _ in range(a.requests):
        n = rng.randint(12_000, 17_000)
        cache[(tick, _)] = os.urandom(16) * n
        cached += 16 * n
    if cached > cap:
        cache.clear()
        cached = 0
        cap = rng.uniform(*a.cache_mib) * (1 << 20)
    if a.leak_after is not None and time.monotonic() - t0 >= a.leak_after:
        leak_carry += a.leak_mib_per_s * 16  # 16 x 64 KiB per MiB, per 100 ms tick: / 10
        while leak_carry >= 10:
            kept.append(os.urandom(16) * 4096)  # 64 KiB, touched
            leak_carry -= 10
    time.sleep(max(0.0, t0 + tick * 0.1 - time.monotonic()))
