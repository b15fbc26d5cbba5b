#!/usr/bin/env python3
"""Failover time of a mamori group on a real etcd: from kill -9 of the active
node (agent and its units, as a host dies) -- or from cutting it off etcd --
to the new active's unit answering its health check (HTTP 200).

Three agents (nodes a, b, c on 127.0.0.2-4), each reaching etcd through its
own TCP proxy in this script that can be cut (traffic swallowed, as in a
partition). The group runs `python3 -m http.server` on the active node, with
the standbys stopped (cold) -- a warm standby would skip the unit's start.

After each trial the killed node is restarted (or the cut healed) and the
next trial starts once every node is back as a qualified standby. At the end
the history checker reads every node's group.activated / group.deactivated
events and counts overlapping active intervals (the answer must be 0).

With --warm the standbys run the unit too (standby = "warm"): what is timed
is then the new active's on_promote hook having run (it writes a file, as a
hook that moves a virtual address would), the units being up already.

Usage: failover.py [--trials 50] [--mode kill|partition] [--ttl 2]
                   [--etcd-fast]   (etcd --election-timeout 500 --heartbeat-interval 100)
                   [--warm] [--poll 100ms]
                   [--hold 1.0]  (kill at a random moment up to this long after the
                                  group settled; 0 = at once, the worst case)
                   [--fast-takeover]  ([cluster] fast_takeover = true; the result
                                       counts the group.took_over events)
Env: MAMORI=path/to/mamori (default target/release/mamori); KEEP=1 keeps
the nodes' directories (configs, agent logs, stores) for a look afterwards.
Prints one JSON line with the figures; writes raw times to --out if given.
"""
import argparse, json, os, random, shutil, signal, socket, sqlite3, statistics
import subprocess, sys, tempfile, threading, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAMORI = os.environ.get('MAMORI', os.path.join(ROOT, 'target/release/mamori'))


def free_port():
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    p = s.getsockname()[1]
    s.close()
    return p


def now_ms():
    return int(time.time() * 1000)


def get(url, timeout=0.5):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except Exception:
        return None, None


def wait(what, cond, bound=60):
    start = time.time()
    while time.time() - start < bound:
        v = cond()
        if v:
            return v
        time.sleep(0.02)
    raise SystemExit(f'timed out waiting for {what}')


class Proxy:
    """A cuttable TCP proxy: when cut, bytes vanish (no answer, no reset)."""

    def __init__(self, upstream):
        self.upstream = upstream
        self.cut = False
        self.stop = False
        self.l = socket.socket()
        self.l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.l.bind(('127.0.0.1', 0))
        self.l.listen(64)
        self.l.settimeout(0.1)
        self.port = self.l.getsockname()[1]
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while not self.stop:
            try:
                down, _ = self.l.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                up = socket.create_connection(('127.0.0.1', self.upstream))
            except OSError:
                down.close()
                continue
            for a, b in ((down, up), (up, down)):
                threading.Thread(target=self.pump, args=(a, b), daemon=True).start()

    def pump(self, a, b):
        a.settimeout(0.1)
        while not self.stop:
            try:
                data = a.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                break
            if not data:
                break
            if not self.cut:
                try:
                    b.sendall(data)
                except OSError:
                    break
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        self.stop = True
        self.l.close()


class Node:
    def __init__(self, name, idx, endpoint, nodes, ttl, base, warm=False, poll='100ms', fast=False):
        self.name, self.host = name, f'127.0.0.{idx + 2}'
        self.port, self.web = free_port(), free_port()
        self.dir = os.path.join(base, name)
        os.makedirs(self.dir)
        self.proc = None
        self.kills = []
        nodes_s = ', '.join(f'"{n}"' for n in nodes)
        cfg = f'''
[agent]
listen = "{self.host}:{self.port}"
data_dir = "data"
shutdown_timeout = "10s"

[cluster]
node = "{name}"
backend = "etcd"
endpoints = ["{endpoint}"]
lease_ttl = "{ttl}s"
poll_interval = "{poll}"
fast_takeover = {'true' if fast else 'false'}

[[service]]
name = "web"
command = "exec python3 -m http.server {self.web} --bind {self.host} --directory {self.dir}"
stop_timeout = "{max(ttl / 4, 0.2)}s"
health = {{ kind = "http", url = "http://{self.host}:{self.web}/", interval = "100ms", timeout = "1s", fall = 2, rise = 1 }}

[[group]]
name = "g"
units = ["web"]
nodes = [{nodes_s}]
verify_every = "300ms"
standby = "{'warm' if warm else 'stopped'}"
on_promote = "date +%s%N > {self.dir}/promoted"
'''
        with open(os.path.join(self.dir, 'mamori.toml'), 'w') as f:
            f.write(cfg)

    def api(self, path):
        s, b = get(f'http://{self.host}:{self.port}{path}', timeout=2)
        return json.loads(b) if s == 200 else None

    def start(self):
        log = open(os.path.join(self.dir, 'agent.log'), 'a')
        self.proc = subprocess.Popen([MAMORI, '-c', os.path.join(self.dir, 'mamori.toml'), 'agent', '--log-format', 'json'],
                                     stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        wait(f'{self.name} up', lambda: get(f'http://{self.host}:{self.port}/healthz')[0] == 200)

    def pids_of_units(self):
        out = []
        for p in os.listdir('/proc'):
            if not p.isdigit():
                continue
            try:
                cmd = open(f'/proc/{p}/cmdline', 'rb').read().replace(b'\0', b' ').decode()
            except OSError:
                continue
            if self.dir in cmd and 'http.server' in cmd:
                out.append(int(p))
        return out

    def kill9(self):
        units = self.pids_of_units()
        if self.proc:
            self.proc.kill()
        for p in units:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc:
            self.proc.wait()
        self.proc = None
        self.kills.append(now_ms())

    def stop(self):
        if self.proc:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for p in self.pids_of_units():
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def takeovers(self):
        """Fast takeovers: leader keys this node deleted (group.took_over)."""
        db = sqlite3.connect(f'file:{os.path.join(self.dir, "data/mamori.db")}?mode=ro', uri=True)
        (n,) = db.execute("SELECT count(*) FROM events WHERE kind = 'group.took_over'").fetchone()
        db.close()
        return n

    def history(self):
        db = sqlite3.connect(f'file:{os.path.join(self.dir, "data/mamori.db")}?mode=ro', uri=True)
        rows = db.execute("SELECT ts, kind, data FROM events WHERE kind IN ('group.activated','group.deactivated') ORDER BY id").fetchall()
        db.close()
        return [(ts, kind, json.loads(d).get('token')) for ts, kind, d in rows]


def overlaps(nodes):
    """The history checker: active intervals from every node; count overlaps."""
    end = now_ms()
    iv = []
    for n in nodes:
        ev = n.history() + [(k, 'killed', None) for k in n.kills]
        ev.sort(key=lambda e: e[0])
        open_ = None
        for ts, kind, tok in ev:
            if kind == 'group.activated':
                if open_ is None:
                    open_ = (ts, tok)
            elif open_ is not None:
                iv.append((open_[0], ts, n.name, open_[1]))
                open_ = None
        if open_:
            iv.append((open_[0], end, n.name, open_[1]))
    iv.sort()
    bad = sum(1 for a, b in zip(iv, iv[1:]) if a[1] > b[0])
    tokens_ok = all(a[3] < b[3] for a, b in zip(iv, iv[1:]))
    return len(iv), bad, tokens_ok


def pct(xs, p):
    xs = sorted(xs)
    k = max(0, min(len(xs) - 1, int(round(p / 100 * len(xs) + 0.5)) - 1))
    return xs[k]


def main():
    # SIGTERM runs the finally below (agents, units, proxies and etcd stopped).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ap = argparse.ArgumentParser()
    ap.add_argument('--trials', type=int, default=50)
    ap.add_argument('--mode', choices=['kill', 'partition'], default='kill')
    ap.add_argument('--ttl', type=int, default=2)
    ap.add_argument('--etcd-fast', action='store_true')
    ap.add_argument('--warm', action='store_true')
    ap.add_argument('--poll', default='100ms')
    ap.add_argument('--fast-takeover', action='store_true')
    ap.add_argument('--hold', type=float, default=1.0,
                    help='kill (or cut) at a random moment up to this many seconds after the group settled '
                         '(a host fails at any point of its keep-alive cycle; 0: at once, right after the '
                         'new active took its lease, the worst case for lease expiry)')
    ap.add_argument('--out')
    a = ap.parse_args()
    base = tempfile.mkdtemp(prefix='mamori-failover-')
    cport, pport = free_port(), free_port()
    extra = ['--election-timeout', '500', '--heartbeat-interval', '100'] if a.etcd_fast else []
    etcd = subprocess.Popen(['etcd', '--name', 'b', '--data-dir', os.path.join(base, 'etcd'),
                             f'--listen-client-urls=http://127.0.0.1:{cport}', f'--advertise-client-urls=http://127.0.0.1:{cport}',
                             f'--listen-peer-urls=http://127.0.0.1:{pport}', f'--initial-advertise-peer-urls=http://127.0.0.1:{pport}',
                             f'--initial-cluster=b=http://127.0.0.1:{pport}'] + extra,
                            stdout=open(os.path.join(base, 'etcd.log'), 'w'), stderr=subprocess.STDOUT)
    names = ['a', 'b', 'c']
    proxies, nodes = [], []
    try:
        wait('etcd', lambda: get(f'http://127.0.0.1:{cport}/health')[0] == 200)
        for i, n in enumerate(names):
            p = Proxy(cport)
            proxies.append(p)
            nodes.append(Node(n, i, f'http://127.0.0.1:{p.port}', names, a.ttl, base, a.warm, a.poll, a.fast_takeover))
        for n in nodes:
            n.start()
        times, promoted = [], []

        def active():
            g = nodes[0].api('/api/v1/groups/g') if nodes[0].proc else nodes[1].api('/api/v1/groups/g')
            return g and g.get('active')

        def all_standbys_ready(act):
            for n in nodes:
                if n.name == act or not n.proc:
                    continue
                g = n.api('/api/v1/groups/g')
                if not g or g['here'].get('role') != 'standby' or not g['here'].get('qualified'):
                    return False
            return True

        for t in range(a.trials):
            act = wait('an active node', active)
            node = next(n for n in nodes if n.name == act)
            wait('active healthy', lambda: get(f'http://{node.host}:{node.web}/', 0.3)[0] == 200)
            wait('standbys ready', lambda: all_standbys_ready(act))
            others = [n for n in nodes if n is not node]
            for n in nodes:
                try:
                    os.unlink(os.path.join(n.dir, 'promoted'))
                except FileNotFoundError:
                    pass
            if a.hold > 0:
                time.sleep(random.uniform(0, a.hold))
            t0 = time.time()
            if a.mode == 'kill':
                node.kill9()
            else:
                proxies[nodes.index(node)].cut = True

            def answered():
                for n in others:
                    if a.warm:
                        if os.path.exists(os.path.join(n.dir, 'promoted')):
                            return n
                    elif get(f'http://{n.host}:{n.web}/', 0.2)[0] == 200:
                        return n
                return None
            new = wait('a new active answering', answered, bound=60)
            dt = (time.time() - t0) * 1000
            times.append(dt)
            print(f'trial {t + 1}: {node.name} -> {new.name}: {dt:.0f} ms', file=sys.stderr, flush=True)
            if a.mode == 'kill':
                node.start()
            else:
                proxies[nodes.index(node)].cut = False
        n_iv, bad, tokens_ok = overlaps(nodes)
        res = {
            'mode': a.mode, 'lease_ttl_s': a.ttl, 'etcd_fast': a.etcd_fast, 'warm': a.warm, 'poll': a.poll,
            'fast_takeover': a.fast_takeover, 'hold_s': a.hold, 'took_over': sum(n.takeovers() for n in nodes),
            'trials': len(times),
            'median_ms': round(statistics.median(times)), 'p99_ms': round(pct(times, 99)),
            'min_ms': round(min(times)), 'max_ms': round(max(times)),
            'active_intervals': n_iv, 'overlapping_intervals': bad, 'tokens_increase': tokens_ok,
        }
        print(json.dumps(res), flush=True)
        if a.out:
            with open(a.out, 'w') as f:
                json.dump({**res, 'times_ms': [round(x) for x in times]}, f, indent=1)
    finally:
        for n in nodes:
            n.stop()
        for p in proxies:
            p.close()
        etcd.kill()
        etcd.wait()
        if os.environ.get('KEEP'):
            print(f'kept {base}', file=sys.stderr)
        else:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == '__main__':
    main()
