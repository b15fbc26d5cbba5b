#!/usr/bin/env python3
"""M3: memory-limit reaction (adapted from shared/anchors/m3_memlimit/memlimit.py;
same poller and definitions). A child grows RSS by 10 MiB/s; the supervisor is
set to act above 200 MiB:
  mamori-cgroup1 / mamori-poll : limits = { memory = "200MiB" } (restart always, stable_after 1s)
  monit  : 'if totalmem > 200 MB then restart', 'set daemon 1'
  pm2    : --max-memory-restart 200M (default worker interval 30 s)
  pm2-wi1000 : the same with PM2_WORKER_INTERVAL=1000 (non-default)
A 10 ms poller reads /proc/<pid>/status VmRSS; records peak RSS, the time it
first reached >= 200 MiB (204800 kB), and when the process vanished / became a
zombie / lost its mm. Under cgroup1 the kernel OOM-kills inside the cgroup, so
the poller normally never sees the crossing: then the overshoot is the peak
minus the limit (negative = stopped below it) and there is no delay.

usage: memlimit.py KIND [--trials 5] [--prefill 150] [--out FILE] [--seed 1]
Run under lib/reaper.py.
"""
import argparse, json, os, random, re, shutil, signal, subprocess, sys, time
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, 'lib'))
import proc, supervisors

ap = argparse.ArgumentParser()
ap.add_argument('kind', choices=['mamori-cgroup1', 'mamori-poll', 'monit', 'pm2', 'pm2-wi1000'])
ap.add_argument('--trials', type=int, default=5)
ap.add_argument('--seed', type=int, default=1)
ap.add_argument('--timeout', type=float, default=150)
ap.add_argument('--prefill', type=int, default=150, help='MiB the hog allocates at once before growing')
ap.add_argument('--out')
a = ap.parse_args()
random.seed(a.seed)
supervisors.install_sigterm_exit()
HOG = os.path.join(HERE, 'hog.py')
PY = '/usr/bin/python3'
LIMIT_KB = 200 * 1024
RUN = os.path.join(supervisors.RUN, 'm3-' + a.kind)
if os.path.exists(RUN):
    shutil.rmtree(RUN)
os.makedirs(RUN)
LOGDIR = os.path.dirname(os.path.abspath(a.out)) if a.out else RUN
os.makedirs(LOGDIR, exist_ok=True)


def is_hog(p):
    return any('hog.py' in x for x in (proc.cmdline(p) or []))


def status_kbs(pid):
    """VmRSS, RssAnon, RssFile (kB) from one read of /proc/PID/status."""
    out = {}
    with open(f'/proc/{pid}/status') as f:
        for line in f:
            k = line.split(':', 1)[0]
            if k in ('VmRSS', 'RssAnon', 'RssFile'):
                out[k] = int(line.split()[1])
    return out


def watch(pid, t_origin):
    """10 ms poller, bounded by --timeout."""
    peak = 0; peak_anon = 0; file_at_peak = None; t_cross = None; last_rss = None
    end = time.monotonic() + a.timeout
    while time.monotonic() < end:
        try:
            if not proc.alive(pid):
                break
            st = status_kbs(pid)
        except OSError:
            break
        r = st.get('VmRSS')
        if r is None:
            break
        now = time.monotonic()
        last_rss = r
        if r > peak:
            peak, file_at_peak = r, st.get('RssFile')
        peak_anon = max(peak_anon, st.get('RssAnon', 0))
        if t_cross is None and r >= LIMIT_KB:
            t_cross = now
        time.sleep(0.01)
    t_dead = time.monotonic()   # first poll where the process was gone, a zombie, or had no mm (exiting)
    dead = bool(proc.wait_for(lambda: not proc.alive(pid), 5, 0.01))
    return dict(pid=pid, killed=dead, peak_rss_kb=peak, peak_over_limit_mb=round((peak - LIMIT_KB) / 1024, 1),
                peak_rss_anon_kb=peak_anon, rss_file_at_peak_kb=file_at_peak,
                anon_over_limit_mb=round((peak_anon - LIMIT_KB) / 1024, 1),
                crossed=t_cross is not None,
                t_cross_s=round(t_cross - t_origin, 3) if t_cross else None,
                t_dead_s=round(t_dead - t_origin, 3),
                delay_cross_to_death_s=round(t_dead - t_cross, 3) if (t_cross and dead) else None,
                last_rss_kb=last_rss)


def strip_ansi(s):
    return re.sub(r'\x1b\[[0-9;]*m', '', s)


res = []
extra = {}
if a.kind.startswith('pm2'):
    env = dict(os.environ, PM2_HOME=RUN + '/home')
    wi = 1000 if a.kind == 'pm2-wi1000' else 30000
    if a.kind == 'pm2-wi1000':
        env['PM2_WORKER_INTERVAL'] = str(wi)
    god = None
    try:
        subprocess.run(['pm2', 'ping'], env=env, check=True, stdout=subprocess.DEVNULL, timeout=60)
        god = int(open(RUN + '/home/pm2.pid').read())
        for t in range(a.trials):
            # pm2 checks memory on a timer: start at a random phase of it
            d = random.uniform(0, wi / 1000)
            time.sleep(d)
            subprocess.run(['pm2', 'start', HOG, '--name', 'hog', '--interpreter', PY,
                            '--max-memory-restart', '200M', '--', '0', str(a.prefill)], env=env, check=True,
                           stdout=subprocess.DEVNULL, timeout=60)
            t_origin = time.monotonic()
            pid = proc.wait_for(lambda: next((p for p in proc.children(god) if is_hog(p)), None), 10, 0.01)
            r = watch(pid, t_origin)
            subprocess.run(['pm2', 'delete', 'hog'], env=env, stdout=subprocess.DEVNULL, timeout=60)
            r.update(kind=a.kind, trial=t + 1, start_delay_s=round(d, 2))
            print(json.dumps(r), flush=True)
            res.append(r)
            time.sleep(1)
    finally:
        subprocess.run(['pm2', 'kill'], env=env, stdout=subprocess.DEVNULL, timeout=60)
        if god:
            proc.wait_for(lambda: not proc.alive(god), 30, 0.2)
            if proc.alive(god):
                os.kill(god, signal.SIGKILL)
        for r in res:                      # hogs pm2 started, if any outlived `pm2 kill`
            if proc.alive(r['pid']) and is_hog(r['pid']):
                os.kill(r['pid'], signal.SIGKILL)
        if os.path.exists(RUN + '/home/pm2.log'):
            shutil.copy(RUN + '/home/pm2.log', os.path.join(LOGDIR, f'm3_{a.kind}_daemon.log'))
elif a.kind == 'monit':
    pf = RUN + '/hog.pid'
    rc = RUN + '/monitrc'
    with open(rc, 'w') as f:
        f.write(f"""set daemon 1
set logfile {RUN}/monit.log
set pidfile {RUN}/monit.pid
set idfile {RUN}/monit.id
set statefile {RUN}/monit.state
set httpd unixsocket {RUN}/monit.sock
    allow admin:monit

check process hog with pidfile {pf}
  start program = "/bin/sh -c '{PY} {HOG} 1.0 {a.prefill} >/dev/null 2>&1 & echo $! > {pf}'"
  stop program = "/bin/sh -c 'kill $(cat {pf})'"
  if totalmem > 200 MB then restart
""")
    os.chmod(rc, 0o600)
    seen = set()

    def hogpid():
        try:
            p = int(open(pf).read().strip())
        except (OSError, ValueError):
            return None
        return p if (p not in seen and proc.alive(p) and is_hog(p)) else None
    m = subprocess.Popen(['monit', '-c', rc, '-I'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for t in range(a.trials):
            pid = proc.wait_for(hogpid, 30, 0.005)
            t_origin = time.monotonic()  # ~ time the hog appeared (5 ms poll)
            seen.add(pid)
            r = watch(pid, t_origin)
            r.update(kind='monit', trial=t + 1)
            print(json.dumps(r), flush=True)
            res.append(r)
    finally:
        os.kill(m.pid, signal.SIGTERM)
        m.wait(30)
        time.sleep(0.3)
        try:
            p = int(open(pf).read().strip())
            if proc.alive(p) and is_hog(p):
                os.kill(p, signal.SIGKILL)
        except (OSError, ValueError):
            pass
        shutil.copy(RUN + '/monit.log', os.path.join(LOGDIR, 'm3_monit_daemon.log'))
else:
    enf = a.kind.split('-', 1)[1]
    m = supervisors.Mamori(tag='m3-' + a.kind + '-agent', enforcement=enf,
                           services=[('hog', [PY, HOG, '1.0', str(a.prefill)])])
    agent = m.start_only()
    seen = set()

    def hogpid():
        for p in proc.children(agent):
            if p not in seen and proc.alive(p) and is_hog(p):
                return p
        return None
    try:
        for t in range(a.trials):
            pid = proc.wait_for(hogpid, 30, 0.005)
            if not pid:
                raise RuntimeError('no hog child appeared (see %s)' % m.log)
            t_origin = time.monotonic()
            seen.add(pid)
            r = watch(pid, t_origin)
            r.update(kind=a.kind, trial=t + 1)
            print(json.dumps(r), flush=True)
            res.append(r)
        time.sleep(0.5)
        st = m.status_json()
        extra['status_after'] = st
    finally:
        m.stop()
        log = strip_ansi(open(m.log).read())
        shutil.copy(m.log, os.path.join(LOGDIR, f'm3_{a.kind}_daemon.log'))
    # What mamori itself recorded for each run (value = bytes it saw; cgroup1: kernel max_usage)
    br = [dict(re.findall(r'(\w+)=("[^"]*"|\S+)', l)) for l in log.splitlines() if 'Limit breached' in l]
    ended = [l for l in log.splitlines() if 'Ended.' in l and 'unit=hog' in l]
    extra['breaches'] = br
    extra['ended_reasons'] = [re.search(r'reason=(\S+)', l).group(1) for l in ended]
    for r, b in zip(res, br):
        r['mamori_value_mib'] = round(int(b.get('value', 0)) / 1048576, 2)
        r['mamori_enforced_by'] = b.get('enforced_by', '').strip('"')

ok = [r for r in res if r['killed']]
summ = dict(kind=a.kind, n=len(ok), trials=len(res), crossed=sum(1 for r in ok if r['crossed']))
if ok:
    for k in ('peak_over_limit_mb', 'peak_rss_kb', 'peak_rss_anon_kb', 'anon_over_limit_mb'):
        v = [r[k] for r in ok]
        summ[k] = dict(median=proc.pctl(v, .5), min=min(v), max=max(v))
    d = [r['delay_cross_to_death_s'] for r in ok if r['delay_cross_to_death_s'] is not None]
    if d:
        summ['delay_cross_to_death_s'] = dict(median=proc.pctl(d, .5), min=min(d), max=max(d))
print('SUMMARY', json.dumps(summ), flush=True)
if a.out:
    with open(a.out, 'w') as f:
        json.dump(dict(trials=res, summary=summ, prefill_mib=a.prefill, **extra), f, indent=1)
