#!/usr/bin/env python3
"""M1: supervisor daemon RSS + CPU while supervising N `sleep 100000` children
(adapted from shared/anchors/m1_footprint/footprint.py; same procedure).

usage: footprint.py KIND [--trials 1] [--n 100] [--settle 10] [--window 60] [--out FILE]
Per trial: start, wait until all N children are up, wait --settle s, then a
--window s window: CPU = delta utime+stime of the daemon (/proc/PID/stat, all
threads), RSS = VmRSS at the end and once a second during the window.
Also recorded, beside the issue's VmRSS: PSS at the end (shared library
pages divided among the processes that map them).
Run under lib/reaper.py (PID 1 on this VM reaps orphans late).
"""
import argparse, json, os, sys, time
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'lib'))
import proc, supervisors

ap = argparse.ArgumentParser()
ap.add_argument('kind', choices=supervisors.KINDS)
ap.add_argument('--trials', type=int, default=1)
ap.add_argument('--n', type=int, default=100)
ap.add_argument('--settle', type=float, default=10)
ap.add_argument('--window', type=float, default=60)
ap.add_argument('--out')
ap.add_argument('--max-busy', type=float, default=0.15,
                help='a trial during which the whole machine was busier than this (0..1) is recorded as discarded and repeated')
ap.add_argument('--retries', type=int, default=0, help='at most this many repeats in all (default 0: the daemon\'s own CPU-seconds hardly change with other load; the busy fraction is recorded)')
a = ap.parse_args()
supervisors.install_sigterm_exit()

res = []
retries = 0
t = -1
while sum(1 for r in res if not r['discarded_busy']) < a.trials:
    t += 1
    s = supervisors.KINDS[a.kind](n=a.n, tag=f'm1-{a.kind}')
    t_start = time.monotonic()
    pid = s.start()
    try:
        t_ready = time.monotonic() - t_start
        time.sleep(a.settle)
        kids0 = sorted(s.children())
        rss0 = proc.status_kb(pid)
        c0, w0 = proc.cpu_ticks(pid), time.monotonic()
        j0 = proc.sys_jiffies()
        samples = []
        end = w0 + a.window
        while time.monotonic() < end:          # bounded: window seconds, 1 sample/s
            time.sleep(min(1.0, max(0, end - time.monotonic())))
            samples.append(proc.status_kb(pid))
        c1, w1 = proc.cpu_ticks(pid), time.monotonic()
        sys_busy = proc.busy_since(j0)
        rss1 = proc.status_kb(pid)
        hwm = proc.status_kb(pid, 'VmHWM')
        anon1, file1 = proc.status_kb(pid, 'RssAnon'), proc.status_kb(pid, 'RssFile')
        thr = proc.threads(pid)
        pss = proc.pss_kb(pid)
        kids1 = sorted(s.children())
    finally:
        left = s.stop()
    r = dict(kind=a.kind, trial=t + 1, daemon_pid=pid, n_children=len(kids0),
             children_unchanged=(kids0 == kids1), startup_s=round(t_ready, 2),
             rss_kb_start=rss0, rss_kb_end=rss1, rss_kb_max_window=max(samples),
             vmhwm_kb=hwm, rss_anon_kb_end=anon1, rss_file_kb_end=file1, threads=thr,
             pss_kb_end=pss,
             cpu_s=(c1 - c0) / proc.CLK, window_s=round(w1 - w0, 3),
             cpu_pct=round(100 * (c1 - c0) / proc.CLK / (w1 - w0), 3),
             machine_busy_frac=sys_busy, leftover_children_killed=left,
             discarded_busy=sys_busy > a.max_busy and retries < a.retries)
    if r['discarded_busy']:
        retries += 1
    print(json.dumps(r), flush=True)
    res.append(r)
    time.sleep(3)

if a.out:
    with open(a.out, 'w') as f:
        json.dump(res, f, indent=1)
