#!/usr/bin/env python3
"""1000 checks at a 1 s interval on 2 cores: does every check still run on
time, and what does it cost the agent?

Starts nginx (a `return 200` server on a free 127.0.0.1 port) and mamori with
N http (or tcp) checks against it at interval 1 s, waits for them to come up,
then watches a window: the agent's CPU seconds and RSS, and for every check
how long ago it last ran (its "age"; on time means age <= interval). Prints a
table. Every process started is stopped on all paths.

    python3 scripts/bench/checks.py [--n 1000] [--kind http|tcp] [--window 30]
"""
import argparse, json, os, shutil, signal, socket, statistics, subprocess, sys, tempfile, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def get(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return json.loads(r.read())


def pct(values, p):
    values = sorted(values)
    if not values:
        return float("nan")
    k = min(len(values) - 1, max(0, int(round(p / 100 * (len(values) - 1)))))
    return values[k]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--kind", choices=["http", "tcp"], default="http")
    ap.add_argument("--window", type=int, default=30)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/release/mamori"))
    args = ap.parse_args()

    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(nginx):
        subprocess.run(["apt-get", "update", "-qq"], check=False)
        subprocess.run(["apt-get", "install", "-y", "-qq", "nginx"], check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    work = tempfile.mkdtemp(prefix="mamori-bench-checks-")
    procs = []
    try:
        web_port = free_port()
        os.makedirs(f"{work}/nginx/logs", exist_ok=True)
        with open(f"{work}/nginx/nginx.conf", "w") as f:
            f.write(f"""worker_processes 1; daemon off; pid {work}/nginx/nginx.pid; error_log {work}/nginx/error.log;
events {{ worker_connections 4096; }}
http {{ access_log off; server {{ listen 127.0.0.1:{web_port}; location / {{ return 200 "ok\\n"; }} }} }}
""")
        procs.append(subprocess.Popen([nginx, "-p", f"{work}/nginx", "-c", f"{work}/nginx/nginx.conf"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        api = free_port()
        lines = [f'[agent]\nlisten = "127.0.0.1:{api}"\ndata_dir = "data"\n']
        for i in range(args.n):
            target = (f'url = "http://127.0.0.1:{web_port}/c{i}"' if args.kind == "http"
                      else f'address = "127.0.0.1:{web_port}"')
            lines.append(f'[[check]]\nname = "c{i}"\nkind = "{args.kind}"\n{target}\ninterval = "1s"\ntimeout = "1s"\nrise = 1\n')
        cfg = f"{work}/mamori.toml"
        with open(cfg, "w") as f:
            f.write("\n".join(lines))
        agent = subprocess.Popen([args.bin, "-c", cfg, "agent"], stdout=open(f"{work}/agent.log", "w"),
                                 stderr=subprocess.STDOUT)
        procs.append(agent)
        deadline = time.time() + 60
        while True:
            try:
                checks = get(api, "/api/v1/checks")
                if sum(c["status"] == "up" for c in checks) == args.n:
                    break
            except OSError:
                pass
            if time.time() > deadline:
                sys.exit("checks did not all come up within 60 s")
            time.sleep(0.5)
        time.sleep(5)
        cpu0, t0 = cpu_seconds(agent.pid), time.time()
        ages, down, rss = [], 0, []
        while time.time() - t0 < args.window:
            time.sleep(1)
            now_ms = time.time() * 1000
            for c in get(api, "/api/v1/checks"):
                ages.append((now_ms - c["last_checked_at"]) / 1000)
                down += c["status"] != "up"
            rss.append(rss_mib(agent.pid))
        cpu = cpu_seconds(agent.pid) - cpu0
        elapsed = time.time() - t0
        late = sum(a > 1.5 for a in ages)
        print(f"checks: {args.n} x {args.kind}, interval 1 s, window {elapsed:.0f} s, mamori {args.bin}")
        print("| checks | kind | agent CPU s per 60 s | agent CPU % of one core | agent RSS MiB (max) | age of last probe p50 / p99 / max, s | observations > 1.5 s | not up |")
        print("|---|---|---|---|---|---|---|---|")
        print(f"| {args.n} | {args.kind} | {cpu / elapsed * 60:.2f} | {cpu / elapsed * 100:.1f} | {max(rss):.1f} | "
              f"{pct(ages, 50):.2f} / {pct(ages, 99):.2f} / {max(ages):.2f} | {late} of {len(ages)} | {down} |")
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
