#!/usr/bin/env python3
"""Alerts: event to first notification delivered to a local webhook, and a
burst of events with every notification accounted for.

  latency  One alert at a time is posted to mamori's Alertmanager ingest
           endpoint (the API handler emits an `ingest.firing` event; the
           built-in `alertmanager` rule raises the alert; the outbox POSTs it
           to a webhook receiver in this script). Measured: from just before
           the POST to the webhook request arriving, so the ingest HTTP round
           trip is included (an upper bound on event -> notification).
  burst    --burst alerts (distinct fingerprints) posted in chunks of 1,000 as
           fast as the API takes them; measured: time until the receiver has
           every one, duplicates, and the outbox's final states (read from
           the SQLite store).
  alertmanager (if /usr/bin/prometheus-alertmanager exists, Debian package
           prometheus-alertmanager): the same latency through Alertmanager's
           /api/v2/alerts to a webhook receiver, with its default route timing
           (group_wait 30s; --am-default-trials trials) and with group_wait
           0s (the best it can do).

usage: alerts.py [--bin target/release/mamori] [--trials 200] [--burst 10000]
                 [--am-trials 50] [--am-default-trials 3] [--out FILE]
Prints a JSON summary (and writes it to --out).
"""
import argparse, json, os, shutil, socket, sqlite3, statistics, subprocess, sys
import tempfile, threading, time, urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ap = argparse.ArgumentParser()
ap.add_argument('--bin', default=os.path.join(os.path.dirname(__file__), '../../target/release/mamori'))
ap.add_argument('--trials', type=int, default=200)
ap.add_argument('--burst', type=int, default=10000)
ap.add_argument('--am-trials', type=int, default=50)
ap.add_argument('--am-default-trials', type=int, default=3)
ap.add_argument('--am-bin', default='/usr/bin/prometheus-alertmanager')
ap.add_argument('--timeout', type=float, default=600)
ap.add_argument('--out')
a = ap.parse_args()


def free_port():
    s = socket.socket(); s.bind(('127.0.0.1', 0)); p = s.getsockname()[1]; s.close(); return p


class Receiver:
    """A webhook listener: records (arrival perf_counter, parsed JSON body)."""
    def __init__(self):
        self.lock = threading.Lock()
        self.got = []
        self.cond = threading.Condition(self.lock)
        rec = self

        class H(BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.1'
            def do_POST(self):
                t = time.perf_counter()
                n = int(self.headers.get('Content-Length') or 0)
                body = self.rfile.read(n)
                try:
                    v = json.loads(body)
                except ValueError:
                    v = None
                with rec.cond:
                    rec.got.append((t, v, self.headers.get('X-Mamori-Delivery')))
                    rec.cond.notify_all()
                self.send_response(200)
                self.send_header('Content-Length', '0')
                self.end_headers()
            def log_message(self, *args):
                pass

        self.port = free_port()
        self.server = ThreadingHTTPServer(('127.0.0.1', self.port), H)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, pred, timeout):
        """Waits until pred(got) is truthy; returns its value or None."""
        end = time.monotonic() + timeout
        with self.cond:
            while True:
                r = pred(self.got)
                if r:
                    return r
                left = end - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)


def http(method, url, body=None, token=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header('Content-Type', 'application/json')
    if token:
        req.add_header('Authorization', 'Bearer ' + token)
    with urllib.request.urlopen(req, timeout=120) as r:
        return r.status, r.read()


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, int(round(p / 100 * len(xs) + 0.5)) - 1))]


def summary(xs):
    return {'n': len(xs), 'median_ms': round(statistics.median(xs), 2),
            'p99_ms': round(pct(xs, 99), 2), 'min_ms': round(min(xs), 2), 'max_ms': round(max(xs), 2)}


def am_payload(fps):
    return {'version': '4', 'status': 'firing', 'receiver': 'bench', 'groupKey': 'bench',
            'alerts': [{'status': 'firing', 'fingerprint': f,
                        'labels': {'alertname': 'Bench', 'severity': 'warning', 'fp': f},
                        'annotations': {'summary': 'bench ' + f}} for f in fps]}


def bench_mamori(out):
    rec = Receiver()
    d = tempfile.mkdtemp(prefix='mamori-bench-alerts-')
    port = free_port()
    cfg = os.path.join(d, 'mamori.toml')
    with open(cfg, 'w') as f:
        f.write(f'''[agent]
listen = "127.0.0.1:{port}"
data_dir = "data"

[[channel]]
name = "hook"
kind = "webhook"
url = "http://127.0.0.1:{rec.port}/hook"
''')
    log = open(os.path.join(d, 'agent.log'), 'w')
    agent = subprocess.Popen([a.bin, '-c', cfg, 'agent', '--log-format', 'json'],
                             stdout=log, stderr=subprocess.STDOUT, env={**os.environ, 'MAMORI_LOG': 'warn'})
    base = f'http://127.0.0.1:{port}'
    try:
        for _ in range(600):
            try:
                http('GET', base + '/healthz'); break
            except OSError:
                time.sleep(0.05)
        token = open(os.path.join(d, 'data', 'token')).read().strip()
        ingest = base + '/api/v1/alerts/ingest/alertmanager'

        def has(key):
            return lambda got: next((t for t, v, _ in got if v and v.get('key') == key), None)

        lat = []
        for i in range(a.trials):
            t0 = time.perf_counter()
            http('POST', ingest, am_payload([f'lat-{i}']), token)
            t = rec.wait(has(f'alertmanager/lat-{i}'), 30)
            if t is None:
                print(f'trial {i}: no notification within 30 s', file=sys.stderr)
                continue
            lat.append((t - t0) * 1000)
        out['mamori_latency'] = summary(lat)
        print('mamori latency', out['mamori_latency'], flush=True)

        before = len(rec.got)
        n = a.burst
        t0 = time.perf_counter()
        for c in range(0, n, 1000):
            http('POST', ingest, am_payload([f'burst-{i}' for i in range(c, min(n, c + 1000))]), token)
        t_posted = time.perf_counter()

        def all_in(got):
            keys = {v.get('key') for _, v, _ in got[before:] if v}
            return len([k for k in keys if k and k.startswith('alertmanager/burst-')]) >= n
        ok = rec.wait(all_in, a.timeout)
        t_done = time.perf_counter()
        burst = [(t, v, dl) for t, v, dl in rec.got[before:] if v and v.get('key', '').startswith('alertmanager/burst-')]
        keys = [v['key'] for _, v, _ in burst]
        deliveries = [dl for _, _, dl in burst]
        db = sqlite3.connect(f'file:{os.path.join(d, "data", "mamori.db")}?mode=ro', uri=True)
        states = dict(db.execute("SELECT state, COUNT(*) FROM alert_deliveries GROUP BY state").fetchall())
        alerts = db.execute("SELECT COUNT(*) FROM alerts WHERE key LIKE 'alertmanager/burst-%'").fetchone()[0]
        db.close()
        out['mamori_burst'] = {
            'events': n, 'complete': bool(ok),
            'post_s': round(t_posted - t0, 2),
            'drain_s': round(t_done - t0, 2),
            'received': len(burst), 'distinct_alerts_received': len(set(keys)),
            'duplicate_deliveries': len(deliveries) - len(set(deliveries)),
            'alerts_in_store': alerts, 'outbox_states': states,
            'per_s': round(n / (t_done - t0), 1),
        }
        print('mamori burst', out['mamori_burst'], flush=True)
    finally:
        agent.terminate()
        try:
            agent.wait(30)
        except subprocess.TimeoutExpired:
            agent.kill(); agent.wait()
        rec.server.shutdown()
        shutil.rmtree(d, ignore_errors=True)


def bench_alertmanager(out, group_wait, trials, label):
    rec = Receiver()
    d = tempfile.mkdtemp(prefix='am-bench-')
    port, cport = free_port(), free_port()
    route = f'group_wait: {group_wait}\n  ' if group_wait is not None else ''
    with open(os.path.join(d, 'am.yml'), 'w') as f:
        f.write(f'''route:
  receiver: hook
  group_by: ['alertname']
  {route}
receivers:
  - name: hook
    webhook_configs:
      - url: http://127.0.0.1:{rec.port}/hook
''')
    log = open(os.path.join(d, 'am.log'), 'w')
    am = subprocess.Popen([a.am_bin, '--config.file', os.path.join(d, 'am.yml'),
                           '--storage.path', os.path.join(d, 'data'),
                           '--web.listen-address', f'127.0.0.1:{port}',
                           '--cluster.listen-address', ''],
                          stdout=log, stderr=subprocess.STDOUT)
    base = f'http://127.0.0.1:{port}'
    try:
        for _ in range(600):
            try:
                http('GET', base + '/-/ready'); break
            except OSError:
                time.sleep(0.05)
        lat = []
        for i in range(trials):
            name = f'{label}-{i}'
            t0 = time.perf_counter()
            http('POST', base + '/api/v2/alerts', [{'labels': {'alertname': name}}])
            def has(got):
                for t, v, _ in got:
                    if v and any(x.get('labels', {}).get('alertname') == name for x in v.get('alerts', [])):
                        return t
            t = rec.wait(has, 120)
            if t is not None:
                lat.append((t - t0) * 1000)
        out[f'alertmanager_{label}'] = summary(lat) if lat else None
        print(f'alertmanager {label}', out[f'alertmanager_{label}'], flush=True)
    finally:
        am.terminate()
        try:
            am.wait(30)
        except subprocess.TimeoutExpired:
            am.kill(); am.wait()
        rec.server.shutdown()
        shutil.rmtree(d, ignore_errors=True)


out = {'trials': a.trials}
bench_mamori(out)
if os.path.exists(a.am_bin):
    out['alertmanager_version'] = subprocess.run([a.am_bin, '--version'], capture_output=True, text=True).stdout.split('\n')[0] \
        or subprocess.run([a.am_bin, '--version'], capture_output=True, text=True).stderr.split('\n')[0]
    bench_alertmanager(out, '0s', a.am_trials, 'group_wait_0s')
    bench_alertmanager(out, None, a.am_default_trials, 'default')
else:
    out['alertmanager'] = f'not measured: {a.am_bin} not found (apt-get install prometheus-alertmanager)'
print(json.dumps(out, indent=2))
if a.out:
    with open(a.out, 'w') as f:
        json.dump(out, f, indent=2)
