#!/usr/bin/env python3
"""Wait until the machine is quiet: all-CPU busy fraction over 3 s below
--threshold (default 0.15), for at most --max seconds (default 300). Prints
what it saw; exits 0 either way (the step then runs, and the log says so)."""
import argparse, os, sys, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import proc
ap = argparse.ArgumentParser()
ap.add_argument('--threshold', type=float, default=0.15)
ap.add_argument('--max', type=float, default=300)
a = ap.parse_args()
end = time.monotonic() + a.max
waited = 0
while True:
    j = proc.sys_jiffies(); time.sleep(3); b = proc.busy_since(j)
    if b < a.threshold:
        print(f'quiet: busy {b:.0%} of 2 CPUs' + (f' after waiting {waited} s' if waited else ''), flush=True)
        break
    if time.monotonic() > end:
        print(f'NOT quiet: busy {b:.0%} after waiting {waited} s; running anyway', flush=True)
        break
    waited += 3
