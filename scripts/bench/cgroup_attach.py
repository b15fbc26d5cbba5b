#!/usr/bin/env python3
"""Diagnostic: why mamori's restarted child needs longer from fork to exec
under enforcement cgroup1. Repeats mamori's sequence for one restart:
parent mkdir's a fresh v1 memory cgroup and writes memory.limit_in_bytes,
forks; the child writes "0" to the cgroup's cgroup.procs (spawn.rs pre-exec
hook) and execs /bin/sleep; the parent waits until the exec has happened (a
close-on-exec pipe reaches EOF), then kills/reaps the child and rmdir's the
cgroup. Variants: no cgroup / a cgroup reused every time / a fresh cgroup
each time (what mamori does: one cgroup per run).

usage: cgroup_attach.py [--n 30] [--pause 1.0]   (root, cgroup v1 memory hierarchy)
"spaced" variants wait --pause s before each restart, as restarts in M2 are
spaced: on cgroup v1 a migration takes cgroup_threadgroup_rwsem for writing,
and a percpu rwsem's writer waits for an RCU grace period unless another
writer went by within the last one.
"""
import argparse, os, signal, statistics, sys, time
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'lib'))
import supervisors

ap = argparse.ArgumentParser()
ap.add_argument('--n', type=int, default=30)
ap.add_argument('--pause', type=float, default=1.0, help='seconds between restarts in the spaced variants (M2 kills are 1.5–2.5 s apart)')
a = ap.parse_args()
base = supervisors.memory_cgroup_dir()
made = []


def mk(name):
    d = os.path.join(base, name)
    os.mkdir(d)
    made.append(d)
    with open(os.path.join(d, 'memory.limit_in_bytes'), 'w') as f:
        f.write(str(200 << 20))
    return d


def once(cg):
    r, w = os.pipe()          # both close-on-exec (PEP 446)
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            if cg:
                with open(os.path.join(cg, 'cgroup.procs'), 'w') as f:
                    f.write('0')
            os.write(w, b'x')
            os.execv('/bin/sleep', ['/bin/sleep', '100'])
        finally:
            os._exit(127)
    os.close(w)
    os.read(r, 1)
    t1 = time.perf_counter()   # child is about to exec
    os.read(r, 1)              # EOF: exec done
    t2 = time.perf_counter()
    os.close(r)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return (t1 - t0) * 1000, (t2 - t0) * 1000


try:
    reused = mk(f'bench-attach-{os.getpid()}-reused')
    for label in ('no cgroup', 'same cgroup every time', 'fresh cgroup each time (mamori)',
                  'no cgroup, spaced', 'fresh cgroup each time, spaced'):
        pre, ex = [], []
        for i in range(a.n):
            if label.startswith('fresh'):
                cg = mk(f'bench-attach-{os.getpid()}-{i}')
            else:
                cg = reused if label.startswith('same') else None
            if label.endswith('spaced'):
                time.sleep(a.pause)
            p, e = once(cg)
            pre.append(p); ex.append(e)
            if label.startswith('fresh'):
                os.rmdir(cg); made.remove(cg)
        print(f"{label:32s} fork→pre-exec median {statistics.median(pre):5.2f} ms | fork→exec'd median "
              f"{statistics.median(ex):5.2f} ms (min {min(ex):.2f}, max {max(ex):.2f}, n={a.n})", flush=True)
finally:
    for d in made:
        try:
            os.rmdir(d)
        except OSError as e:
            print('could not remove', d, e)
