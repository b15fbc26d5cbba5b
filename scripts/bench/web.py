#!/usr/bin/env python3
"""Dashboard and status page response times at scale.

Builds a store with 30 days of history, then starts mamori with 500 services
(`sleep`), 1,000 tcp checks (interval 10 s; 950 against the agent's own API
port, 50 against a closed port, so they are down) and 50 status components,
and measures sequential GETs of `/`, `/status`, `/status.json`,
`/status/feed.atom` and one service's page with its 30-day memory chart.

History is written straight into the SQLite store (schema made by the agent
itself on a first short start) with Python's sqlite3:
- per-minute memory rollups (`samples_1m`) for every service over `--days`
  days: 500 × 1,440 × 30 = 21.6 million rows (a saw-tooth with noise);
- check outages: 200 checks each go down and up again every ~3 days
  (`check.down` / `check.up` events), for the 90-day uptime bars;
- 20 incidents with 3 updates each (the last 2 still open).

Prints p50 / p90 / p99 / max per page and the agent's RSS. Every process
started is stopped on all paths.

    python3 scripts/bench/web.py [--units 500] [--checks 1000] [--days 30] [--n 300]
"""
import argparse, json, os, random, shutil, signal, socket, sqlite3, subprocess, sys, tempfile, time, http.client

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DAY = 86_400_000


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


def pct(values, p):
    values = sorted(values)
    k = min(len(values) - 1, max(0, int(round(p / 100 * (len(values) - 1)))))
    return values[k]


def wait_http(port, path, deadline=120, proc=None, log=None):
    end = time.time() + deadline
    while time.time() < end:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"the agent exited: {open(log).read()[-3000:] if log else ''}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", path)
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the agent did not answer {path} within {deadline} s")


def config(api, units, checks, closed):
    out = [f'[agent]\nlisten = "127.0.0.1:{api}"\ndata_dir = "data"\nrollup_retention = "40d"\n'
           f'sample_interval = "5s"\n\n[status]\ntitle = "Bench status"\n']
    for i in range(units):
        out.append(f'[[service]]\nname = "svc-{i}"\ncommand = ["sleep", "1000000"]\n'
                   f'limits = {{ memory = "512MiB" }}\n')
    for i in range(checks):
        port = closed if i % 20 == 19 else api
        out.append(f'[[check]]\nname = "chk-{i}"\nkind = "tcp"\naddress = "127.0.0.1:{port}"\n'
                   f'interval = "10s"\n')
    comps = max(1, min(50, checks, units))
    for c in range(comps):
        cks = ", ".join(f'"chk-{i}"' for i in range(c, checks, comps))  # noqa
        uns = ", ".join(f'"svc-{i}"' for i in range(c, units, comps))
        out.append(f'[[component]]\nname = "Component {c}"\ndescription = "Part {c} of the service"\n'
                   f'checks = [{cks}]\nunits = [{uns}]\n')
    out.append('[[maintenance]]\nname = "Weekly"\ndays = ["sun"]\nfrom = "03:00"\nto = "04:00"\n')
    return "\n".join(out)


def fill(db, units, checks, days):
    now = int(time.time() * 1000)
    start = (now - days * DAY) // 60_000 * 60_000
    con = sqlite3.connect(db)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=OFF")
    t0 = time.time()
    minutes = (now - start) // 60_000
    rnd = random.Random(1)
    for u in range(units):
        base = 20 + rnd.random() * 200  # MiB
        def rows():
            for m in range(minutes):
                ts = start + m * 60_000
                saw = (m % 720) / 720 * 40  # a 12 h saw-tooth
                avg = int((base + saw) * 1048576)
                yield (f"svc-{u}", ts, 12, avg - 2_000_000, avg, avg + 2_000_000, 1.5, 4.0, 12, 3)
        con.executemany("INSERT OR IGNORE INTO samples_1m VALUES (?,?,?,?,?,?,?,?,?,?)", rows())
        if u % 50 == 49:
            con.commit()
            print(f"  samples: {u + 1}/{units} services ({time.time() - t0:.0f} s)", file=sys.stderr)
    con.commit()
    # Check outages, as events.
    ev = []
    for i in range(0, min(checks, 200)):
        t = now - days * DAY + rnd.randint(0, 3 * DAY)
        while t < now - DAY:
            down = rnd.randint(60_000, 3 * 3_600_000)
            ev.append((t, "check.down", f"chk-{i}", json.dumps({"kind": "check.down", "check": f"chk-{i}", "check_kind": "tcp", "unit": None, "reason": "connect: refused"})))
            ev.append((t + down, "check.up", f"chk-{i}", json.dumps({"kind": "check.up", "check": f"chk-{i}", "check_kind": "tcp", "unit": None})))
            t += rnd.randint(2 * DAY, 4 * DAY)
    ev.sort()
    con.executemany("INSERT INTO events (ts, kind, unit, data) VALUES (?,?,?,?)", ev)
    # Incidents.
    comps = max(1, min(50, checks, units))
    for k in range(20):
        opened = now - (20 - k) * DAY // 3
        resolved = None if k >= 18 else opened + 3_600_000
        cur = con.execute(
            "INSERT INTO incidents (title, state, impact, owner, opened_at, opened_by, last_update_at, resolved_at) VALUES (?,?,?,?,?,?,?,?)",
            (f"Incident {k}", "resolved" if resolved else "identified", "partial_outage", "ops", opened, "bench", opened + 1_800_000, resolved))
        iid = cur.lastrowid
        con.execute("INSERT INTO incident_components VALUES (?, ?)", (iid, f"Component {k % comps}"))
        for j, st in enumerate(["investigating", "identified", "resolved" if resolved else "monitoring"]):
            con.execute("INSERT INTO incident_updates (incident_id, ts, state, message, by) VALUES (?,?,?,?,?)",
                        (iid, opened + j * 1_800_000, st, f"Update {j} of incident {k}: what we know and what users should expect.", "bench"))
    con.commit()
    con.close()
    print(f"  history written in {time.time() - t0:.0f} s: {units * minutes:,} rollups, {len(ev):,} check events", file=sys.stderr)


def measure(port, path, n):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    times, size = [], 0
    for _ in range(n):
        t = time.perf_counter()
        c.request("GET", path)
        r = c.getresponse()
        body = r.read()
        times.append((time.perf_counter() - t) * 1000)
        if r.status != 200:
            raise SystemExit(f"GET {path} -> {r.status}")
        size = len(body)
    c.close()
    return times, size


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--units", type=int, default=500)
    ap.add_argument("--checks", type=int, default=1000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/release/mamori"))
    ap.add_argument("--keep", action="store_true", help="keep the work dir (for screenshots)")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="mamori-bench-web-")
    agent = None

    def stop():
        if agent and agent.poll() is None:
            agent.send_signal(signal.SIGTERM)
            try:
                agent.wait(timeout=120)
            except subprocess.TimeoutExpired:
                agent.kill()
                agent.wait()

    try:
        api, closed = free_port(), free_port()
        with open(f"{work}/mamori.toml", "w") as f:
            f.write(config(api, args.units, args.checks, closed))
        log = open(f"{work}/agent.log", "w")
        # First start: the agent creates the store (and its schema).
        agent = subprocess.Popen([args.bin, "-c", f"{work}/mamori.toml", "agent"], stdout=log, stderr=log)
        wait_http(api, "/healthz", proc=agent, log=f"{work}/agent.log")
        stop()
        print("writing history…", file=sys.stderr)
        fill(f"{work}/data/mamori.db", args.units, args.checks, args.days)
        agent = subprocess.Popen([args.bin, "-c", f"{work}/mamori.toml", "agent"], stdout=log, stderr=log)
        wait_http(api, "/healthz", proc=agent, log=f"{work}/agent.log")
        # Let every unit start and the checks settle.
        end = time.time() + 120
        while time.time() < end:
            c = http.client.HTTPConnection("127.0.0.1", api, timeout=10)
            c.request("GET", "/api/v1/units")
            units = json.loads(c.getresponse().read())
            if sum(1 for u in units if u["state"] == "running") == args.units:
                break
            time.sleep(1)
        time.sleep(15)
        print(f"agent RSS before: {rss_mib(agent.pid):.1f} MiB; db {os.path.getsize(f'{work}/data/mamori.db') / 2**20:.0f} MiB", file=sys.stderr)
        pages = [("/", args.n), ("/status", args.n), ("/status.json", args.n),
                 ("/status/feed.atom", args.n), ("/ui/units/svc-7?window=30d", max(20, args.n // 10)),
                 ("/ui/units/svc-7?window=1h", max(20, args.n // 10))]
        print(f"{'page':34} {'n':>5} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8} {'KiB':>7}")
        for path, n in pages:
            measure(api, path, 3)  # warm up
            t, size = measure(api, path, n)
            print(f"{path:34} {n:5} {pct(t, 50):8.1f} {pct(t, 90):8.1f} {pct(t, 99):8.1f} {max(t):8.1f} {size / 1024:7.0f}")
        print(f"agent RSS after: {rss_mib(agent.pid):.1f} MiB")
    finally:
        stop()
        if args.keep or os.environ.get("KEEP"):
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
