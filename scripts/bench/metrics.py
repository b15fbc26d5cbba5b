#!/usr/bin/env python3
"""/metrics scrape time with many units and checks.

Starts mamori with N services (`sleep`), J jobs (each run once so the job
histograms have data), C tcp checks (most against the agent's own API port,
so they are up; some against a closed port, so they are down and raise
alerts that a `command` channel delivers). Waits until every service runs,
every check has a status and the jobs have finished, then:

- times the first scrape (it reads the store's event history once),
- times `--scrapes` more, one after another, each on a new connection,
- prints p50 / p99 / max in ms, the size of the answer and its series count,
  and the agent's RSS.

Every process started is stopped on all paths.

    python3 scripts/bench/metrics.py [--units 500] [--checks 1000] [--jobs 50] [--scrapes 200]
"""
import argparse, http.client, os, signal, socket, statistics, subprocess, sys, tempfile, time, json

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def request(port, path, method="GET", token=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    c.request(method, path, headers=headers)
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, body


def pct(values, p):
    values = sorted(values)
    k = min(len(values) - 1, max(0, int(round(p / 100 * (len(values) - 1)))))
    return values[k]


def wait(what, cond, timeout=300):
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        v = cond()
        if v:
            return v
        time.sleep(0.5)
    sys.exit(f"timed out waiting for {what}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--units", type=int, default=500)
    ap.add_argument("--checks", type=int, default=1000)
    ap.add_argument("--down", type=int, default=50, help="checks of the total that are down")
    ap.add_argument("--jobs", type=int, default=50)
    ap.add_argument("--scrapes", type=int, default=200)
    ap.add_argument("--history", type=int, default=0,
                    help="events to add to the store before the measured start (a long-lived data dir)")
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/release/mamori"))
    args = ap.parse_args()
    args.bin = os.path.abspath(args.bin)

    work = tempfile.mkdtemp(prefix="mamori-bench-metrics-")
    agent = None
    try:
        api = free_port()
        closed = free_port()  # nothing listens here
        lines = [
            f'[agent]\nlisten = "127.0.0.1:{api}"\ndata_dir = "data"\n',
            '[alerts]\npolicy = { critical = "page", warning = "page", info = "page" }\n',
            '[[channel]]\nname = "log"\nkind = "command"\ncommand = ["true"]\n',
            '[[policy]]\nname = "page"\n[[policy.step]]\nafter = "0s"\nchannels = ["log"]\n',
        ]
        for i in range(args.units):
            lines.append(f'[[service]]\nname = "svc{i}"\ncommand = ["sleep", "100000"]\nlimits = {{ memory = "256MiB" }}\n')
        for i in range(args.jobs):
            lines.append(f'[[job]]\nname = "job{i}"\ncommand = "true"\n')
        for i in range(args.checks):
            port = closed if i < args.down else api
            lines.append(f'[[check]]\nname = "chk{i}"\nkind = "tcp"\naddress = "127.0.0.1:{port}"\ninterval = "5s"\nfall = 1\n')
        with open(f"{work}/mamori.toml", "w") as f:
            f.write("\n".join(lines))
        log = open(f"{work}/agent.log", "w")
        start = lambda: subprocess.Popen([args.bin, "-c", f"{work}/mamori.toml", "agent", "--log-format", "json"],
                                         stdout=log, stderr=log, cwd=work)
        agent = start()
        wait("the agent", lambda: _ok(api, "/healthz"))
        if args.history:
            # A long-lived data dir: stop, append job runs' events as the
            # agent writes them, start again.
            agent.send_signal(signal.SIGTERM)
            agent.wait(timeout=120)
            agent = None
            import sqlite3
            db = sqlite3.connect(f"{work}/data/mamori.db")
            now = int(time.time() * 1000)
            rows = ((now - args.history + i, "unit.exited", f"job{i % max(1, args.jobs)}",
                     json.dumps({"kind": "unit.exited", "unit": f"job{i % max(1, args.jobs)}", "run_id": i,
                                 "state": "succeeded" if i % 7 else "failed", "reason": "exit:0",
                                 "exit_code": 0, "signal": None, "ran_ms": i % 5000}))
                    for i in range(args.history))
            db.executemany("INSERT INTO events (ts, kind, unit, data) VALUES (?, ?, ?, ?)", rows)
            db.commit()
            db.close()
            agent = start()
            wait("the agent again", lambda: _ok(api, "/healthz"))
        token = open(f"{work}/data/token").read().strip()
        for i in range(args.jobs):
            status, body = request(api, f"/api/v1/jobs/job{i}/run", "POST", token)
            assert status == 202, body

        def ready():
            units = json.loads(request(api, "/api/v1/units")[1])
            checks = json.loads(request(api, "/api/v1/checks")[1])
            running = sum(u["state"] == "running" for u in units)
            done = sum(u["state"] == "exited" for u in units)
            known = sum(c["status"] != "unknown" for c in checks)
            return running == args.units and done == args.jobs and known == args.checks
        wait("every unit running, every job done, every check known", ready)
        time.sleep(3)  # samples for every unit

        t0 = time.perf_counter()
        status, body = request(api, "/metrics")
        first_ms = (time.perf_counter() - t0) * 1000
        assert status == 200, body[:200]
        times = []
        for _ in range(args.scrapes):
            t0 = time.perf_counter()
            status, body = request(api, "/metrics")
            times.append((time.perf_counter() - t0) * 1000)
            assert status == 200
        text = body.decode()
        series = sum(1 for l in text.splitlines() if l and not l.startswith("#"))
        last = json.loads(request(api, "/api/v1/events?limit=1")[1])
        events = last[0]["id"] if last else 0
        print(f"units={args.units} checks={args.checks} (down {args.down}) jobs={args.jobs} events in the store={events}")
        print(f"first scrape (reads the event history): {first_ms:.1f} ms")
        print(f"{args.scrapes} scrapes: p50 {statistics.median(times):.2f} ms, p99 {pct(times, 99):.2f} ms, max {max(times):.2f} ms")
        print(f"answer: {len(body) / 1024:.0f} KiB, {series} series; agent RSS {rss_mib(agent.pid):.1f} MiB")
    finally:
        if agent is not None:
            agent.send_signal(signal.SIGTERM)
            try:
                agent.wait(timeout=120)
            except subprocess.TimeoutExpired:
                agent.kill()
                agent.wait()
        subprocess.run(["rm", "-rf", work], check=False)


def _ok(port, path):
    try:
        return request(port, path)[0] == 200
    except OSError:
        return False


if __name__ == "__main__":
    main()
