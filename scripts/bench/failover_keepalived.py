#!/usr/bin/env python3
"""The keepalived side of the failover benchmark (run as root): two network
namespaces (mkaA, mkaB) on a bridge, keepalived 2.x in each with default VRRP
timers (advert_int 1, priorities 100 and 90, state BACKUP + nopreempt, as the
seed blog post sets it up) holding a virtual address, and a web server in
each namespace that answers with its node's name.

kill:      kill -9 every process of the master's namespace and take its link
           down (a host dying), then time until the virtual address answers
           from the backup.
partition: stop the VRRP adverts between the two (the bridge stops flooding
           multicast to both ports; clients still reach both), then time until
           the backup also claims the address, and report whether the old
           master still holds it (split brain).

Usage: failover_keepalived.py [--trials 50] [--mode kill|partition] [--out F]
Prints one JSON line. Cleans up namespaces, links and processes on every path.
"""
import argparse, json, os, shutil, signal, statistics, subprocess, sys, tempfile, time, urllib.request

NS = {'A': 'mkaA', 'B': 'mkaB'}
IP = {'A': '10.213.0.1', 'B': '10.213.0.2'}
VIP = '10.213.0.100'
BR = 'mkabr0'


def sh(*cmd, check=True):
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


def nsx(n, *cmd, check=True):
    return sh('ip', 'netns', 'exec', NS[n], *cmd, check=check)


def get_vip():
    try:
        with urllib.request.urlopen(f'http://{VIP}:8080/', timeout=0.2) as r:
            return r.read().decode().strip()
    except Exception:
        return None


def holds_vip(n):
    return VIP in nsx(n, 'ip', '-4', 'addr', 'show', 'dev', 'eth0', check=False).stdout


def cleanup():
    for n in NS:
        pids = sh('ip', 'netns', 'pids', NS[n], check=False).stdout.split()
        for p in pids:
            try:
                os.kill(int(p), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        sh('ip', 'netns', 'del', NS[n], check=False)
        sh('ip', 'link', 'del', f'mka{n}-br', check=False)
    sh('ip', 'link', 'del', BR, check=False)


def setup(base):
    cleanup()
    sh('ip', 'link', 'add', BR, 'type', 'bridge')
    sh('ip', 'addr', 'add', '10.213.0.254/24', 'dev', BR)
    sh('ip', 'link', 'set', BR, 'up')
    for n in NS:
        sh('ip', 'netns', 'add', NS[n])
        sh('ip', 'link', 'add', f'mka{n}-br', 'type', 'veth', 'peer', 'name', f'mka{n}-in')
        sh('ip', 'link', 'set', f'mka{n}-in', 'netns', NS[n])
        sh('ip', 'link', 'set', f'mka{n}-br', 'master', BR)
        sh('ip', 'link', 'set', f'mka{n}-br', 'up')
        nsx(n, 'ip', 'link', 'set', f'mka{n}-in', 'name', 'eth0')
        nsx(n, 'ip', 'addr', 'add', f'{IP[n]}/24', 'dev', 'eth0')
        nsx(n, 'ip', 'link', 'set', 'eth0', 'up')
        nsx(n, 'ip', 'link', 'set', 'lo', 'up')
        d = os.path.join(base, n)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, 'index.html'), 'w') as f:
            f.write(n + '\n')
        with open(os.path.join(d, 'keepalived.conf'), 'w') as f:
            f.write(f'''global_defs {{
  router_id node{n}
}}
vrrp_instance VI_1 {{
  state BACKUP
  interface eth0
  virtual_router_id 51
  priority {100 if n == 'A' else 90}
  advert_int 1
  nopreempt
  virtual_ipaddress {{
    {VIP}/24
  }}
}}
''')


def start(n, base):
    d = os.path.join(base, n)
    # A killed keepalived leaves its pid files; a reused pid would make the
    # new one think it is already running.
    for f in ('k.pid', 'v.pid'):
        try:
            os.unlink(os.path.join(d, f))
        except FileNotFoundError:
            pass
    log = open(os.path.join(d, 'log'), 'a')
    subprocess.Popen(['ip', 'netns', 'exec', NS[n], 'python3', '-m', 'http.server', '8080', '--bind', '0.0.0.0', '--directory', d],
                     stdout=log, stderr=log)
    subprocess.Popen(['ip', 'netns', 'exec', NS[n], 'keepalived', '-n', '-l', '-P', '-f', os.path.join(d, 'keepalived.conf'),
                      '-p', os.path.join(d, 'k.pid'), '-r', os.path.join(d, 'v.pid')], stdout=log, stderr=log)


def kill_node(n):
    for p in sh('ip', 'netns', 'pids', NS[n], check=False).stdout.split():
        try:
            os.kill(int(p), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    nsx(n, 'ip', 'link', 'set', 'eth0', 'down', check=False)


def revive(n, base):
    nsx(n, 'ip', 'addr', 'del', f'{VIP}/24', 'dev', 'eth0', check=False)
    nsx(n, 'ip', 'link', 'set', 'eth0', 'up')
    start(n, base)


def wait(what, cond, bound=60):
    t = time.time()
    while time.time() - t < bound:
        v = cond()
        if v:
            return v
        time.sleep(0.01)
    raise SystemExit(f'timed out waiting for {what}')


def pct(xs, p):
    xs = sorted(xs)
    return xs[max(0, min(len(xs) - 1, int(round(p / 100 * len(xs) + 0.5)) - 1))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--trials', type=int, default=50)
    ap.add_argument('--mode', choices=['kill', 'partition'], default='kill')
    ap.add_argument('--out')
    a = ap.parse_args()
    base = tempfile.mkdtemp(prefix='mamori-ka-')
    times, split = [], 0
    try:
        setup(base)
        for n in NS:
            start(n, base)
        for t in range(a.trials):
            master = wait('a master', get_vip)
            other = 'B' if master == 'A' else 'A'
            time.sleep(1.5)  # the backup has seen adverts from this master
            t0 = time.time()
            if a.mode == 'kill':
                kill_node(master)
                wait('the backup answering', lambda: get_vip() == other)
            else:
                for n in NS:
                    sh('ip', 'link', 'set', f'mka{n}-br', 'type', 'bridge_slave', 'mcast_flood', 'off')
                wait('the backup claiming the address', lambda: holds_vip(other))
            dt = (time.time() - t0) * 1000
            times.append(dt)
            both = a.mode == "partition" and holds_vip(master) and holds_vip(other)
            split += both
            print(f'trial {t + 1}: {master} -> {other}: {dt:.0f} ms{" SPLIT BRAIN" if both else ""}', file=sys.stderr, flush=True)
            if a.mode == 'kill':
                revive(master, base)
                # A restarted backup that has not heard the master yet has its
                # master-down timer running already; give it one interval
                # (3.6 s) so the next trial times a backup in steady state.
                time.sleep(4)
            else:
                for n in NS:
                    sh('ip', 'link', 'set', f'mka{n}-br', 'type', 'bridge_slave', 'mcast_flood', 'on')
                # Heal: one of the two masters steps down; wait until only one holds it.
                wait('one master again', lambda: holds_vip('A') != holds_vip('B'), bound=30)
        res = {'peer': 'keepalived ' + sh('keepalived', '--version', check=False).stderr.split('\n')[0].split()[1],
               'mode': a.mode, 'trials': len(times), 'median_ms': round(statistics.median(times)),
               'p99_ms': round(pct(times, 99)), 'min_ms': round(min(times)), 'max_ms': round(max(times)),
               'split_brain_trials': split}
        print(json.dumps(res), flush=True)
        if a.out:
            with open(a.out, 'w') as f:
                json.dump({**res, 'times_ms': [round(x) for x in times]}, f, indent=1)
    finally:
        cleanup()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == '__main__':
    main()
