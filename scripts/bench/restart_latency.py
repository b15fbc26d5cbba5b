#!/usr/bin/env python3
"""M2: crash-restart latency (adapted from shared/anchors/m2_restart/restart_latency.py;
same procedure). SIGKILL a supervised `sleep`, time until the supervisor has
forked a new child (new PID whose PPID is the supervisor), polling every 1 ms
via /proc/sys/kernel/ns_last_pid + /proc/<pid>/stat. Also records when that
new child has exec'd `sleep` (exec_ms).

usage: restart_latency.py KIND [--rounds 1] [--trials 20] [--gap 1.5] [--n 100] [--out FILE]
Gap between kills = gap + U(0,1) s (seeded) so kills land at random loop phases.
Each round = fresh supervisor instance with N children. Run under lib/reaper.py.
For monit the forked child is the `/bin/sh -c` start program (monit does not parent the sleep).
"""
import argparse, json, os, random, signal, sys, time
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'lib'))
import proc, supervisors

ap = argparse.ArgumentParser()
ap.add_argument('kind', choices=supervisors.KINDS)
ap.add_argument('--rounds', type=int, default=1)
ap.add_argument('--trials', type=int, default=20)
ap.add_argument('--gap', type=float, default=1.5)
ap.add_argument('--n', type=int, default=100)
ap.add_argument('--timeout', type=float, default=10)
ap.add_argument('--out')
ap.add_argument('--seed', type=int, default=1)
a = ap.parse_args()
random.seed(a.seed)
supervisors.install_sigterm_exit()


def is_sleep(p):
    c = proc.cmdline(p)
    return bool(c) and os.path.basename(c[0]) == 'sleep'


def one_trial(sup_pid, victim, known):
    last = proc.last_pid()
    t0 = time.perf_counter()
    os.kill(victim, signal.SIGKILL)
    end = t0 + a.timeout
    new = t_fork = None
    while time.perf_counter() < end:           # bounded by --timeout
        cur = proc.last_pid()
        cand = range(last + 1, cur + 1) if cur >= last else proc.pids()
        for p in cand:
            if p not in known and proc.ppid(p) == sup_pid:
                new, t_fork = p, time.perf_counter()
                break
        last = cur
        if new:
            break
        time.sleep(0.001)
    if not new:
        return None
    t_exec = None
    while time.perf_counter() < end:
        if a.kind == 'monit':                  # sh -c forks the sleep; look for any new sleep
            cur = proc.last_pid()
            if any(is_sleep(p) for p in range(new, cur + 1)):
                t_exec = time.perf_counter(); break
        elif is_sleep(new):
            t_exec = time.perf_counter(); break
        time.sleep(0.001)
    return dict(victim=victim, new_pid=new, fork_ms=round((t_fork - t0) * 1000, 3),
                exec_ms=round((t_exec - t0) * 1000, 3) if t_exec else None)


allres = []
busy_all = []
for r in range(a.rounds):
    s = supervisors.KINDS[a.kind](n=a.n, tag=f'm2-{a.kind}')
    pid = s.start()
    try:
        time.sleep(3)
        victims = sorted(s.children())
        known = set(proc.pids())
        j0 = proc.sys_jiffies()
        for t in range(a.trials):
            v = victims[t % len(victims)]
            res = one_trial(pid, v, known)
            known = set(proc.pids())
            rec = dict(kind=a.kind, round=r + 1, trial=t + 1, **(res or {'victim': v, 'fork_ms': None}))
            print(json.dumps(rec), flush=True)
            allres.append(rec)
            time.sleep(a.gap + random.random())   # jitter so kills land at random phase of poll loops
        n_after = len(s.children())
        busy = proc.busy_since(j0)
    finally:
        s.stop()
    print(json.dumps(dict(kind=a.kind, round=r + 1, children_at_end=n_after, machine_busy_frac=busy)), flush=True)
    busy_all.append(busy)
    time.sleep(2)

vals = [x['fork_ms'] for x in allres if x['fork_ms'] is not None]
summ = dict(kind=a.kind, n=len(vals), missed=len(allres) - len(vals))
if vals:
    summ.update(median_ms=proc.pctl(vals, .5), p95_ms=proc.pctl(vals, .95), min_ms=min(vals), max_ms=max(vals))
    ex = [x['exec_ms'] for x in allres if x.get('exec_ms') is not None]
    if ex:
        summ.update(exec_median_ms=proc.pctl(ex, .5), exec_p95_ms=proc.pctl(ex, .95))
    for r in range(a.rounds):
        v = [x['fork_ms'] for x in allres if x['round'] == r + 1 and x['fork_ms'] is not None]
        if v:
            summ[f'round{r+1}'] = dict(median_ms=proc.pctl(v, .5), p95_ms=proc.pctl(v, .95), min_ms=min(v), max_ms=max(v))
summ['machine_busy_frac'] = busy_all
print('SUMMARY', json.dumps(summ), flush=True)
if a.out:
    with open(a.out, 'w') as f:
        json.dump(dict(trials=allres, summary=summ), f, indent=1)
